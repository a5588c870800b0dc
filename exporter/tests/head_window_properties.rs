//! The effective head against a brute-force model, over random answer sequences: replica jitter
//! never lowers it, a frozen head stays frozen, and an answer older than the window stops counting.

use std::time::{Duration, Instant};

use exporter::head::RecentHeads;
use exporter::rpc::Block;
use proptest::prelude::*;

const WINDOW_MS: u64 = 5_000;

fn block(number: u64) -> Block {
    Block {
        number,
        timestamp: 1_700_000_000 + number,
        hash: format!("0x{number:064x}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_effective_head_is_the_best_recent_answer(
        answers in prop::collection::vec((1u64..2_000, 0u64..40), 1..40),
        look_after in 0u64..8_000,
    ) {
        let t0 = Instant::now();
        let mut heads = RecentHeads::new(Duration::from_millis(WINDOW_MS));
        let mut at = 0u64;
        let mut seen = Vec::new();
        for (gap, number) in &answers {
            at += gap;
            heads.record(t0 + Duration::from_millis(at), block(*number));
            seen.push((at, *number));
        }
        let now = at + look_after;
        let effective = heads.effective(t0 + Duration::from_millis(now)).unwrap().number;
        let last = seen.last().unwrap().1;
        let recent: Vec<u64> = seen.iter().filter(|(t, _)| now - t <= WINDOW_MS).map(|(_, n)| *n).collect();
        prop_assert!(effective >= last, "never below the last answer");
        match recent.iter().max() {
            // At most 8 answers are kept, so the model holds while the window has no more.
            Some(best) if recent.len() <= 8 => prop_assert_eq!(effective, *best),
            Some(best) => prop_assert!(effective <= *best),
            None => prop_assert_eq!(effective, last, "nothing recent: the last answer"),
        }
    }

    #[test]
    fn replica_jitter_never_shows_as_lag_while_a_frozen_head_does(
        jitter in prop::collection::vec(0u64..=2, 10..60),
        freeze_at in 5usize..10,
    ) {
        // One answer a second from a head that grows a block a second; some answers come from a
        // replica up to 2 blocks behind, but never the first and never more than two in a row.
        let t0 = Instant::now();
        let mut heads = RecentHeads::new(Duration::from_millis(WINDOW_MS));
        let mut behind_in_a_row = 0;
        for (s, j) in jitter.iter().enumerate() {
            let j = if s == 0 || behind_in_a_row >= 2 { 0 } else { *j };
            behind_in_a_row = if j > 0 { behind_in_a_row + 1 } else { 0 };
            let head = 100 + s as u64;
            let at = t0 + Duration::from_secs(s as u64);
            heads.record(at, block(head - j));
            let lag = head - heads.effective(at).unwrap().number;
            // Judged on the raw answer the lag would be `j`; here it is at most the seconds since
            // the last fresh answer.
            prop_assert!(lag <= j.min(behind_in_a_row), "lag {lag} after a replica answer {j} behind");
        }
        // The same provider frozen at `freeze_at`: its lag grows every block.
        let mut frozen = RecentHeads::new(Duration::from_millis(WINDOW_MS));
        for s in 0..jitter.len() {
            let head = 100 + s as u64;
            let answered = head.min(100 + freeze_at as u64);
            let at = t0 + Duration::from_secs(s as u64);
            frozen.record(at, block(answered));
            let lag = head - frozen.effective(at).unwrap().number;
            prop_assert_eq!(lag, s.saturating_sub(freeze_at) as u64);
        }
    }
}
