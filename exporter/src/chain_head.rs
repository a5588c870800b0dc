//! The chain head from the providers' effective heads, decided on block numbers *and* their
//! timestamps. Counting numbers alone, a majority that froze together (two nodes behind one dead
//! consensus client) is the head, and in a pool of two nothing tells the stalled provider from the
//! one that moves on. Timestamps tell: a frozen head's block grows old while the chain's newest
//! block stays fresh, so a provider whose block is several block times older than the newest one
//! seen has no vote, however many share its block. A liar cannot use this against an honest
//! provider: claiming a higher block with a fresh (or future) timestamp makes the newest block no
//! newer than now, and an advancing honest head is never more than a block time or two old.
//!
//! Among the providers that keep a vote, no one is behind on the word of one other alone:
//! - three or more: the second highest, so one far ahead cannot make all the others look behind;
//! - two: their block if they agree; otherwise the lower (both keep moving, so either may be the
//!   one that is wrong), under which neither lags;
//! - one: its block (the others have stopped: they lag behind it).
//!
//! The block time is learned from each provider's own answers ([`BlockPace`]); the slowest pace
//! any provider shows is used, so that a provider claiming blocks faster than the chain makes
//! them cannot shorten the time an honest head may take.

use std::collections::VecDeque;

/// A provider's vote: the number and timestamp (Unix seconds) of its effective head, answered at
/// `answered` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vote {
    pub number: u64,
    pub timestamp: u64,
    pub answered: f64,
}

impl Vote {
    /// The vote as of `now`: a provider probed less often than the rounds answered some time ago,
    /// when it was where its block says; since then the chain made blocks at its pace, which
    /// that provider is assumed to have followed, so that its old answer neither drags the head
    /// down between its probes nor loses its vote for age it did not have when it answered.
    /// Without a known pace it counts as it was answered. Returns (number, time), the time no
    /// later than now.
    fn as_of(&self, now: f64, seconds_per_block: Option<f64>) -> (u64, f64) {
        let since = (now - self.answered).max(0.0);
        let made = seconds_per_block.map_or(0, |pace| (since / pace) as u64);
        let time = if made > 0 {
            self.timestamp as f64 + since
        } else {
            self.timestamp as f64
        };
        (self.number.saturating_add(made), time.min(now))
    }
}

/// A round's chain head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Head {
    pub number: u64,
    /// Whether the voters agree on it; only such a head becomes the plausibility reference, so
    /// that a head chosen in a dispute cannot get honest answers rejected.
    pub agreed: bool,
    /// The head block's timestamp, no later than now.
    pub timestamp: f64,
}

/// A provider whose block is more than this many block times older than the newest block seen has
/// stopped: it loses its vote. Three tolerate a missed slot or two and a provider a block behind.
pub const STALE_BLOCKS: f64 = 3.0;

/// Block timestamps are whole seconds: on sub-second chains, honest providers a block apart can
/// differ by a second, so a vote is never lost for less than this.
pub const MIN_STALE_SECONDS: f64 = 2.0;

/// While no provider has shown the chain's pace, a vote is lost only for a block this old
/// relative to the newest: a frozen majority is out-voted from the first round when it froze long
/// ago, while no honest provider of any chain in wide use is this far behind a live one.
pub const UNKNOWN_PACE_STALE_SECONDS: f64 = 60.0;

/// How much older than the newest block a vote's block may be, given the chain's block time.
pub fn stale_after(seconds_per_block: Option<f64>) -> f64 {
    match seconds_per_block {
        Some(pace) => (STALE_BLOCKS * pace).max(MIN_STALE_SECONDS),
        None => UNKNOWN_PACE_STALE_SECONDS,
    }
}

/// The head of `votes` at `now` (Unix seconds), the chain making a block every
/// `seconds_per_block` (`None`: not known yet). `None` without votes.
pub fn chain_head(votes: &[Vote], seconds_per_block: Option<f64>, now: f64) -> Option<Head> {
    // A timestamp from the future is no fresher than now: it cannot out-vote an honest head.
    let votes: Vec<(u64, f64)> = votes
        .iter()
        .map(|v| v.as_of(now, seconds_per_block))
        .collect();
    let newest = votes.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
    let limit = stale_after(seconds_per_block);
    let mut voters: Vec<(u64, f64)> = votes
        .into_iter()
        .filter(|(_, time)| newest - time <= limit)
        .collect();
    voters.sort_unstable_by_key(|v| std::cmp::Reverse(v.0));
    let (number, agreed) = match voters[..] {
        [] => return None,
        [(only, _)] => (only, true),
        [(high, _), (low, _)] => (low, high == low),
        [_, (second, _), ..] => (second, true),
    };
    let timestamp = voters
        .iter()
        .filter(|v| v.0 == number)
        .map(|v| v.1)
        .fold(f64::NEG_INFINITY, f64::max);
    Some(Head {
        number,
        agreed,
        timestamp,
    })
}

/// Advances kept at most per provider.
const PACE_SAMPLES: usize = 16;

/// Chain time the pace is measured over at most: long enough to average out whole-second
/// timestamps, short enough to follow a chain that changed its block time.
const PACE_SPAN_SECONDS: u64 = 120;

/// One provider's pace: the seconds per block its own answers show, from the blocks its
/// effective head advanced to.
#[derive(Debug, Clone, Default)]
pub struct BlockPace {
    advances: VecDeque<Vote>,
}

impl BlockPace {
    /// Records the provider's effective head; only an advance (a higher number, a timestamp not
    /// earlier) is kept.
    pub fn record(&mut self, head: Vote) {
        if self
            .advances
            .back()
            .is_some_and(|last| head.number <= last.number || head.timestamp < last.timestamp)
        {
            return;
        }
        self.advances.push_back(head);
        while self.advances.len() > PACE_SAMPLES
            || self.advances.len() > 2
                && self.advances.front().is_some_and(|first| {
                    head.timestamp.saturating_sub(first.timestamp) > PACE_SPAN_SECONDS
                })
        {
            self.advances.pop_front();
        }
    }

    /// Seconds per block over the kept advances; `None` until they span at least a second.
    pub fn seconds_per_block(&self) -> Option<f64> {
        let (first, last) = (self.advances.front()?, self.advances.back()?);
        let seconds = last.timestamp.checked_sub(first.timestamp)?;
        let blocks = last.number.checked_sub(first.number)?;
        (seconds > 0 && blocks > 0).then(|| seconds as f64 / blocks as f64)
    }
}

/// The chain's block time: the slowest pace any provider shows (see the module's doc).
pub fn chain_pace<'a>(paces: impl IntoIterator<Item = &'a BlockPace>) -> Option<f64> {
    paces
        .into_iter()
        .filter_map(BlockPace::seconds_per_block)
        .reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_750_000_000.0;

    /// A vote for `number` whose block is `age` seconds old, answered now.
    fn vote(number: u64, age: f64) -> Vote {
        Vote {
            number,
            timestamp: (NOW - age) as u64,
            answered: NOW,
        }
    }

    /// A vote answered `ago` seconds before now, its block then `age` seconds old.
    fn earlier(number: u64, age: f64, ago: f64) -> Vote {
        Vote {
            answered: NOW - ago,
            ..vote(number, age + ago)
        }
    }

    fn head(votes: &[Vote], pace: Option<f64>) -> Option<(u64, bool)> {
        chain_head(votes, pace, NOW).map(|h| (h.number, h.agreed))
    }

    const ONE_SECOND: Option<f64> = Some(1.0);

    #[test]
    fn counting_as_before_while_every_head_is_fresh() {
        assert_eq!(head(&[], ONE_SECOND), None);
        assert_eq!(head(&[vote(7, 0.0)], ONE_SECOND), Some((7, true)));
        assert_eq!(
            head(&[vote(9, 0.0), vote(9, 1.0)], ONE_SECOND),
            Some((9, true))
        );
        assert_eq!(
            head(
                &[vote(100, 0.0), vote(1_000_000, 0.0), vote(99, 1.0)],
                ONE_SECOND
            ),
            Some((100, true)),
            "three or more: the second highest"
        );
    }

    #[test]
    fn a_pool_of_two_where_one_stalls_follows_the_one_that_moves() {
        // The stalled provider stopped at 100 five seconds ago; the other is at 105, fresh.
        let votes = [vote(100, 5.0), vote(105, 0.0)];
        assert_eq!(head(&votes, ONE_SECOND), Some((105, true)));
        // Not yet three block times old: both keep their vote, the lower is the head.
        let votes = [vote(100, 2.0), vote(102, 0.0)];
        assert_eq!(head(&votes, ONE_SECOND), Some((100, false)));
    }

    #[test]
    fn a_liar_ahead_with_fresh_or_future_timestamps_drains_nobody() {
        // The honest head moves a block a second; its block is up to a second old.
        for honest_age in [0.0, 1.0] {
            for liar_age in [0.0, -1.0, -600.0] {
                let votes = [vote(100, honest_age), vote(150, liar_age)];
                assert_eq!(
                    head(&votes, ONE_SECOND),
                    Some((100, false)),
                    "{honest_age} {liar_age}"
                );
            }
        }
        // Mainnet: an honest block 30 s old (two missed slots) still keeps its vote.
        let votes = [vote(100, 30.0), vote(150, 0.0)];
        assert_eq!(head(&votes, Some(12.0)), Some((100, false)));
    }

    #[test]
    fn a_frozen_majority_loses_to_the_advancing_provider() {
        let frozen = |age| [vote(500, age), vote(500, age), vote(740, 0.0)];
        // 0.25 s blocks, frozen for a minute: 240 blocks behind.
        assert_eq!(head(&frozen(60.0), Some(0.25)), Some((740, true)));
        // 12 s blocks, frozen an hour, from the exporter's first round (pace unknown).
        assert_eq!(head(&frozen(3600.0), None), Some((740, true)));
        // Just frozen: not yet distinguishable, the second highest as before.
        assert_eq!(head(&frozen(1.0), Some(0.25)), Some((500, true)));
    }

    #[test]
    fn three_where_one_stalls_beside_one_excluded() {
        // The third was left out (implausible): the two left are a pool of two.
        let votes = [vote(200, 10.0), vote(210, 0.0)];
        assert_eq!(head(&votes, ONE_SECOND), Some((210, true)));
    }

    #[test]
    fn a_primary_constantly_behind_loses_its_vote() {
        // Five blocks (seconds) behind the other primary, a reserve's older answer aside.
        let votes = [vote(995, 5.0), vote(1000, 0.0)];
        assert_eq!(head(&votes, ONE_SECOND), Some((1000, true)));
    }

    #[test]
    fn a_provider_probed_less_often_votes_as_if_it_kept_up() {
        // A reserve answered 1000 (fresh then) 30 s ago; the primaries are at 1030 and 1025.
        let votes = [vote(1030, 0.0), vote(1025, 5.0), earlier(1000, 0.0, 30.0)];
        let h = chain_head(&votes, ONE_SECOND, NOW).unwrap();
        assert_eq!(
            (h.number, h.agreed),
            (1030, true),
            "the lagging primary is out-voted"
        );
        // Beside one primary, it neither drags the head down nor loses its vote for its age.
        let votes = [vote(1030, 0.0), earlier(1027, 0.0, 3.0)];
        assert_eq!(head(&votes, ONE_SECOND), Some((1030, true)));
        // While the pace is unknown it counts as it answered.
        assert_eq!(head(&votes, None), Some((1027, false)));
    }

    #[test]
    fn a_whole_chain_that_stops_keeps_its_head() {
        let votes = [vote(100, 600.0), vote(100, 600.0)];
        assert_eq!(head(&votes, ONE_SECOND), Some((100, true)));
    }

    #[test]
    fn the_head_timestamp_is_never_in_the_future() {
        let h = chain_head(&[vote(5, -100.0)], ONE_SECOND, NOW).unwrap();
        assert_eq!(h.timestamp, NOW);
    }

    #[test]
    fn stale_after_has_a_floor_and_a_default() {
        assert_eq!(stale_after(Some(12.0)), 36.0);
        assert_eq!(stale_after(Some(0.25)), MIN_STALE_SECONDS);
        assert_eq!(stale_after(None), UNKNOWN_PACE_STALE_SECONDS);
    }

    /// Block `number` made at `timestamp`, as answered.
    fn at(number: u64, timestamp: u64) -> Vote {
        Vote {
            number,
            timestamp,
            answered: timestamp as f64,
        }
    }

    #[test]
    fn pace_is_learned_from_advances_only() {
        let mut pace = BlockPace::default();
        assert_eq!(pace.seconds_per_block(), None);
        pace.record(at(100, 1000));
        // Same second (sub-second blocks): no pace yet.
        pace.record(at(103, 1000));
        assert_eq!(pace.seconds_per_block(), None);
        // Backwards and repeated answers are not advances.
        for (number, timestamp) in [(99, 1001), (103, 1000)] {
            pace.record(at(number, timestamp));
        }
        pace.record(at(108, 1002));
        assert_eq!(pace.seconds_per_block(), Some(0.25));
    }

    #[test]
    fn pace_follows_the_recent_span_and_stays_bounded() {
        let mut pace = BlockPace::default();
        for n in 0..1000u64 {
            pace.record(at(n, n * 12));
            assert!(pace.advances.len() <= PACE_SAMPLES);
        }
        assert_eq!(pace.seconds_per_block(), Some(12.0));
        for n in 1000..1100u64 {
            pace.record(at(n, 12_000 + (n - 1000) * 2));
        }
        assert_eq!(pace.seconds_per_block(), Some(2.0), "the new block time");
    }

    #[test]
    fn the_chain_pace_is_the_slowest_shown() {
        let mut honest = BlockPace::default();
        let mut fast_liar = BlockPace::default();
        for n in 0..5u64 {
            honest.record(at(n, n));
            fast_liar.record(at(n * 50, n));
        }
        assert_eq!(chain_pace([&honest, &fast_liar]), Some(1.0));
        assert_eq!(chain_pace([&BlockPace::default()]), None);
    }
}
