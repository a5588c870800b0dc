//! A provider's effective head: the highest block it answered within a recent window. Paid
//! providers answer from load-balanced replicas a block or two apart, so one answer can go
//! backwards while the provider is not behind; a frozen head answers nothing newer, so its
//! effective head stops with it and its lag still grows each block.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rpc::Block;

/// Answers kept at most, whatever the window and probe interval.
const MAX_KEPT: usize = 8;

/// The answers of one provider that may still be its effective head, oldest first. Each is
/// higher than every later one: an answer is dropped once a newer one at least as high comes,
/// since it can never again be the highest within the window. The last answer is always kept,
/// so a provider that stopped answering is judged on what it last said.
#[derive(Debug)]
pub struct RecentHeads {
    window: Duration,
    answers: VecDeque<(Instant, Block)>,
}

impl RecentHeads {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            answers: VecDeque::new(),
        }
    }

    /// Records `block`, answered at `at` (not earlier than the previous answer), and forgets the
    /// answers that can no longer count.
    pub fn record(&mut self, at: Instant, block: Block) {
        while self
            .answers
            .back()
            .is_some_and(|(_, kept)| kept.number <= block.number)
        {
            self.answers.pop_back();
        }
        self.answers.push_back((at, block));
        while self.answers.len() > MAX_KEPT
            || self
                .answers
                .front()
                .is_some_and(|(then, _)| at.saturating_duration_since(*then) > self.window)
        {
            self.answers.pop_front();
        }
    }

    /// The highest block answered within the window before `now`; the last answer if none was.
    pub fn effective(&self, now: Instant) -> Option<&Block> {
        self.answers
            .iter()
            .find(|(then, _)| now.saturating_duration_since(*then) <= self.window)
            .or(self.answers.back())
            .map(|(_, block)| block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(5);

    fn block(number: u64) -> Block {
        Block {
            number,
            timestamp: 1_700_000_000 + number * 12,
            hash: format!("0x{number:064x}"),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn nothing_answered_means_no_head() {
        assert_eq!(RecentHeads::new(WINDOW).effective(Instant::now()), None);
    }

    /// A window that got `answers` (seconds after the returned start, block number).
    fn answered(answers: &[(u64, u64)]) -> (Instant, RecentHeads) {
        let t0 = Instant::now();
        let mut heads = RecentHeads::new(WINDOW);
        for &(s, number) in answers {
            heads.record(t0 + secs(s), block(number));
        }
        (t0, heads)
    }

    #[test]
    fn a_replica_answer_behind_does_not_lower_the_head() {
        let (t0, mut heads) = answered(&[(0, 100), (1, 98)]);
        let head = heads.effective(t0 + secs(1)).unwrap();
        assert_eq!(head, &block(100), "number and timestamp of the best answer");
        heads.record(t0 + secs(2), block(101));
        assert_eq!(heads.effective(t0 + secs(2)), Some(&block(101)));
    }

    #[test]
    fn a_higher_answer_counts_only_within_the_window() {
        let (t0, mut heads) = answered(&[(0, 100), (3, 97)]);
        assert_eq!(heads.effective(t0 + secs(5)).unwrap().number, 100);
        assert_eq!(heads.effective(t0 + secs(6)).unwrap().number, 97);
        heads.record(t0 + secs(7), block(96));
        assert_eq!(heads.effective(t0 + secs(7)).unwrap().number, 97);
    }

    #[test]
    fn a_silent_provider_keeps_its_last_answer() {
        let (t0, heads) = answered(&[(0, 100), (1, 99)]);
        assert_eq!(heads.effective(t0 + secs(60)).unwrap().number, 99);
    }

    #[test]
    fn a_frozen_head_stays_where_it_stopped() {
        let t0 = Instant::now();
        let mut heads = RecentHeads::new(WINDOW);
        for s in 0..20 {
            heads.record(t0 + secs(s), block(100));
            assert_eq!(heads.answers.len(), 1);
        }
        assert_eq!(heads.effective(t0 + secs(19)).unwrap().number, 100);
    }

    #[test]
    fn memory_stays_bounded() {
        let t0 = Instant::now();
        let mut heads = RecentHeads::new(Duration::from_secs(3600));
        for n in 0..1000u64 {
            heads.record(t0 + Duration::from_millis(n), block(10_000 - n));
            assert!(heads.answers.len() <= MAX_KEPT);
        }
        let mut heads = RecentHeads::new(WINDOW);
        for s in 0..100u64 {
            heads.record(t0 + secs(s), block(10_000 - s));
            assert!(heads.answers.len() <= 6, "pruned by time");
        }
    }
}
