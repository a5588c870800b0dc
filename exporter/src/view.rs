//! What the exporter knows of one chain, and how a probe's result and a round's end change it:
//! pure steps (the view, the results and the time in; the new view and what changed out), so that
//! lag, age, the head and the plausibility reference are decided without the network, the
//! metrics or the logs. [`crate::chain`] runs the probes and publishes what these steps return.

use std::time::{Duration, Instant};

use crate::chain_head::{chain_head, chain_pace, BlockPace, Vote};
use crate::plausible::{check_number, Reference, FUTURE_TOLERANCE_SECONDS};
use crate::reason::Reason;
use crate::rpc::{Block, ProbeError};

/// What one provider's probe got: its block and latency, or why not.
pub type ProbeResult = Result<(Block, Duration), ProbeError>;

/// One provider's part in a round in which it was probed.
#[derive(Debug, Clone)]
pub struct Probed {
    /// Whether this probe got a block.
    pub answered: bool,
    /// Its effective head; kept while it is down, so that its lag keeps growing.
    pub head: Option<Block>,
}

/// What is known of one provider (for the status page and state-change logs).
#[derive(Debug, Clone, Default)]
pub struct ProviderView {
    /// `None` until the first probe finishes.
    pub up: Option<bool>,
    pub last_error: Option<ProbeError>,
    pub latency: Option<Duration>,
    /// Last block seen, as it came; kept while the provider is down.
    pub block: Option<Block>,
    /// The highest block answered within `head_window`, which lag and age are judged on.
    pub effective_head: Option<u64>,
    pub lag: Option<u64>,
    pub age_seconds: Option<f64>,
    /// Confirmed failed probes in a row.
    pub consecutive_failures: u64,
    /// Whether its effective head's timestamp is more than [`FUTURE_TOLERANCE_SECONDS`] ahead of
    /// this host's clock (its age is then negative, published as it is).
    pub clock_skewed: bool,
    /// Its effective head at its last probe, the round that probed it and when, while that
    /// probe answered: its vote for the chain head.
    vote: Option<Ballot>,
    /// The newest round that judged its lag and age: a round that finishes late (a slow probe of
    /// another provider in it) must not overwrite them with its older answer.
    judged_round: u64,
    /// The chain's pace as its own answers show it.
    pace: BlockPace,
}

/// A vote and when it was cast.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ballot {
    round: u64,
    at: Instant,
    vote: Vote,
}

/// What is known of one chain.
#[derive(Debug, Clone, Default)]
pub struct ChainView {
    pub head: Option<u64>,
    pub providers: Vec<ProviderView>,
    pub rounds_done: u64,
    applied_round: u64,
    /// The last head the providers agreed on, which answers are judged plausible against.
    reference: Option<Reference>,
}

/// A change worth a log line.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Up after being down or unknown.
    Up {
        block: u64,
    },
    /// Down after being up or unknown, or down for another reason.
    Down {
        error: ProbeError,
    },
    /// Its block went backwards (a replica behind; only worth a debug line).
    Backwards {
        block: u64,
    },
    /// Its block timestamp is ahead of this host's clock by this many seconds.
    SkewStarted {
        ahead_seconds: f64,
    },
    SkewEnded,
}

/// How a round's end judged one provider probed in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub provider: usize,
    /// Seconds; negative when its block is from this host's future.
    pub age: f64,
    /// `None` while no head is known.
    pub lag: Option<u64>,
    pub change: Option<Change>,
}

/// What a round's end decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoundOutcome {
    /// The head to publish, when this round is the newest to finish and had one.
    pub head: Option<u64>,
    pub judged: Vec<Judged>,
}

/// The time a step runs at: this host's Unix clock and its monotonic one.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub unix: f64,
    pub at: Instant,
}

impl ChainView {
    pub fn new(providers: usize) -> Self {
        Self {
            providers: vec![ProviderView::default(); providers],
            ..Self::default()
        }
    }

    /// Whether the chain can have reached `block` yet, judged against the last agreed head.
    pub fn plausible(&self, block: &Block, now: Now) -> Result<(), ProbeError> {
        check_number(block.number, self.reference, now.at, now.unix)
            .map_err(|why| ProbeError::new(Reason::ImplausibleBlock, why))
    }

    /// Records provider `i`'s probe result; the changes worth a log line.
    pub fn record(&mut self, i: usize, result: &ProbeResult) -> Vec<Change> {
        let pv = &mut self.providers[i];
        let mut changes = Vec::new();
        match result {
            Ok((block, latency)) => {
                if pv.up != Some(true) {
                    changes.push(Change::Up {
                        block: block.number,
                    });
                }
                if pv.block.as_ref().is_some_and(|b| b.number > block.number) {
                    changes.push(Change::Backwards {
                        block: block.number,
                    });
                }
                pv.up = Some(true);
                pv.consecutive_failures = 0;
                pv.last_error = None;
                pv.latency = Some(*latency);
                pv.block = Some(block.clone());
            }
            Err(e) => {
                let same = pv.up == Some(false)
                    && pv
                        .last_error
                        .as_ref()
                        .is_some_and(|old| old.reason == e.reason);
                if !same {
                    changes.push(Change::Down { error: e.clone() });
                }
                pv.up = Some(false);
                pv.consecutive_failures += 1;
                pv.last_error = Some(e.clone());
            }
        }
        changes
    }

    /// Ends round `id`: derives its head from every recent vote (a provider probed in it votes
    /// with its effective head if it answered, one that failed does not vote, one not probed
    /// keeps its last vote for its `vote_lifetimes`), and the lag and age of every provider
    /// probed in it, all from effective heads. A provider's lag is measured against the head of
    /// the round that probed it: a slow answer is judged against the blocks of its own moment,
    /// not against rounds that ran meanwhile; a provider a newer round already judged is not
    /// judged again by a late one, since its answer in it is older (one slow provider must not
    /// make the fast ones in its round look seconds old and lagging). The published head only moves forward in round
    /// order; only an agreed head higher than the plausibility reference replaces it, so a frozen
    /// majority never renews the time it is judged from.
    pub fn finish_round(
        &mut self,
        id: u64,
        results: &[(usize, Option<Probed>)],
        vote_lifetimes: &[Duration],
        now: Now,
    ) -> RoundOutcome {
        self.rounds_done += 1;
        // This round's own answers vote; a provider not probed in it votes with its last answer
        // from an earlier round while that is recent enough, never with a later round's: a round
        // that finishes late (a slow probe in it) is judged by the blocks of its own moment.
        let mut own: Vec<Option<Option<Vote>>> = vec![None; self.providers.len()];
        for (i, probed) in results {
            let Some(probed) = probed else { continue };
            let pv = &mut self.providers[*i];
            let vote = probed
                .head
                .as_ref()
                .filter(|_| probed.answered)
                .map(|b| Vote {
                    number: b.number,
                    timestamp: b.timestamp,
                    answered: now.unix,
                });
            if let Some(vote) = vote {
                pv.pace.record(vote);
            }
            if pv.vote.is_none_or(|b| b.round <= id) {
                pv.vote = vote.map(|vote| Ballot {
                    round: id,
                    at: now.at,
                    vote,
                });
            }
            own[*i] = Some(vote);
        }
        let votes: Vec<Vote> = self
            .providers
            .iter()
            .zip(vote_lifetimes)
            .zip(own)
            .filter_map(|((pv, lifetime), own)| match own {
                Some(vote) => vote,
                None => {
                    let b = pv.vote.filter(|b| b.round < id)?;
                    (now.at.saturating_duration_since(b.at) <= *lifetime).then_some(b.vote)
                }
            })
            .collect();
        let pace = chain_pace(self.providers.iter().map(|pv| &pv.pace));
        let round_head = chain_head(&votes, pace, now.unix);
        let mut outcome = RoundOutcome::default();
        if id > self.applied_round {
            self.applied_round = id;
            if let Some(head) = round_head {
                self.head = Some(head.number);
                outcome.head = Some(head.number);
                if head.agreed && self.reference.is_none_or(|r| head.number > r.number) {
                    self.reference = Some(Reference {
                        number: head.number,
                        timestamp: head.timestamp,
                        seen: now.at,
                    });
                }
            }
        }
        let head = round_head.map(|h| h.number).or(self.head);
        for (i, probed) in results {
            let Some(Probed {
                head: Some(block), ..
            }) = probed
            else {
                continue;
            };
            let pv = &mut self.providers[*i];
            if pv.judged_round > id {
                continue;
            }
            pv.judged_round = id;
            pv.effective_head = Some(block.number);
            // Negative when the timestamp is ahead of this host's clock: published as it is,
            // since a clamped 0 would make the provider look perfectly fresh for ever.
            let age = now.unix - block.timestamp as f64;
            pv.age_seconds = Some(age);
            let skewed = age < -FUTURE_TOLERANCE_SECONDS;
            let change = match (pv.clock_skewed, skewed) {
                (false, true) => Some(Change::SkewStarted {
                    ahead_seconds: -age,
                }),
                (true, false) => Some(Change::SkewEnded),
                _ => None,
            };
            pv.clock_skewed = skewed;
            let lag = head.map(|head| head.saturating_sub(block.number));
            if lag.is_some() {
                pv.lag = lag;
            }
            outcome.judged.push(Judged {
                provider: *i,
                age,
                lag,
                change,
            });
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_750_000_000.0;
    const LIFETIME: Duration = Duration::from_secs(5);

    fn block(number: u64, age: f64) -> Block {
        Block {
            number,
            timestamp: (NOW - age) as u64,
            hash: format!("0x{number:064x}"),
        }
    }

    fn answered(number: u64, age: f64) -> Option<Probed> {
        Some(Probed {
            answered: true,
            head: Some(block(number, age)),
        })
    }

    fn failed(last: u64, age: f64) -> Option<Probed> {
        Some(Probed {
            answered: false,
            head: Some(block(last, age)),
        })
    }

    /// Ends round `id` of `view` at `secs` after `t0`.
    fn finish(
        view: &mut ChainView,
        id: u64,
        t0: Instant,
        secs: u64,
        results: Vec<Option<Probed>>,
    ) -> RoundOutcome {
        let n = results.len();
        let results: Vec<_> = results.into_iter().enumerate().collect();
        let now = Now {
            unix: NOW + secs as f64,
            at: t0 + Duration::from_secs(secs),
        };
        view.finish_round(id, &results, &vec![LIFETIME; n], now)
    }

    fn lags(outcome: &RoundOutcome) -> Vec<Option<u64>> {
        outcome.judged.iter().map(|j| j.lag).collect()
    }

    #[test]
    fn lag_and_age_come_from_the_round_head_and_effective_heads() {
        let t0 = Instant::now();
        let mut view = ChainView::new(3);
        let outcome = finish(
            &mut view,
            1,
            t0,
            0,
            vec![answered(100, 0.0), answered(99, 1.0), answered(95, 2.0)],
        );
        assert_eq!(outcome.head, Some(99), "three: the second highest");
        assert_eq!(lags(&outcome), vec![Some(0), Some(0), Some(4)]);
        assert_eq!(outcome.judged[2].age, 2.0);
        assert_eq!(view.providers[2].effective_head, Some(95));
    }

    #[test]
    fn a_failed_provider_does_not_vote_but_its_lag_keeps_growing() {
        let t0 = Instant::now();
        let mut view = ChainView::new(2);
        finish(
            &mut view,
            1,
            t0,
            0,
            vec![answered(100, 0.0), answered(100, 0.0)],
        );
        let outcome = finish(
            &mut view,
            2,
            t0,
            1,
            vec![answered(101, 0.0), failed(100, 1.0)],
        );
        assert_eq!(outcome.head, Some(101), "only the one that answered votes");
        assert_eq!(lags(&outcome), vec![Some(0), Some(1)]);
    }

    #[test]
    fn a_skipped_provider_votes_until_its_vote_expires() {
        let t0 = Instant::now();
        let mut view = ChainView::new(2);
        finish(
            &mut view,
            1,
            t0,
            0,
            vec![answered(100, 0.0), answered(90, 0.0)],
        );
        let outcome = finish(&mut view, 2, t0, 1, vec![answered(101, 0.0), None]);
        assert_eq!(outcome.head, Some(90), "its vote holds (no pace known yet)");
        assert_eq!(outcome.judged.len(), 1, "only the probed are judged");
        let outcome = finish(&mut view, 3, t0, 6, vec![answered(106, 0.0), None]);
        assert_eq!(outcome.head, Some(106), "expired after its lifetime");
    }

    #[test]
    fn a_late_round_does_not_move_the_published_head_back() {
        let t0 = Instant::now();
        let mut view = ChainView::new(1);
        finish(&mut view, 2, t0, 1, vec![answered(101, 0.0)]);
        let late = finish(&mut view, 1, t0, 1, vec![answered(100, 1.0)]);
        assert_eq!(late.head, None);
        assert_eq!(view.head, Some(101));
    }

    /// Round 2 probes a fast and a slow provider; rounds 3 to 5 probe the fast one alone (the
    /// slow one is still in flight) and finish first. When round 2 ends, 4 s in, its answer of
    /// the fast provider is 4 s old: judging it again would publish it lagging and stale.
    #[test]
    fn a_late_round_judges_only_the_providers_no_newer_round_judged() {
        let t0 = Instant::now();
        let mut view = ChainView::new(2);
        finish(
            &mut view,
            1,
            t0,
            0,
            vec![answered(100, 0.0), answered(100, 0.0)],
        );
        for (id, secs) in [(3, 1), (4, 2), (5, 3)] {
            let fresh = finish(
                &mut view,
                id,
                t0,
                secs,
                vec![answered(100 + secs, -(secs as f64)), None],
            );
            assert_eq!(lags(&fresh), vec![Some(0)]);
        }
        let late = finish(
            &mut view,
            2,
            t0,
            4,
            vec![answered(100, 0.0), answered(104, -4.0)],
        );
        assert_eq!(late.judged.len(), 1, "only the slow provider");
        assert_eq!(late.judged[0].provider, 1);
        assert_eq!(late.judged[0].lag, Some(0), "judged against its own round");
        let fast = &view.providers[0];
        assert_eq!(
            (fast.effective_head, fast.lag, fast.age_seconds),
            (Some(103), Some(0), Some(0.0))
        );
    }

    #[test]
    fn the_reference_follows_agreed_heads_and_is_never_renewed_at_a_frozen_number() {
        let t0 = Instant::now();
        let mut view = ChainView::new(2);
        finish(
            &mut view,
            1,
            t0,
            0,
            vec![answered(100, 0.0), answered(100, 0.0)],
        );
        let reference = view.reference.unwrap();
        assert_eq!(reference.number, 100);
        // The same number again, later: not renewed.
        finish(
            &mut view,
            2,
            t0,
            30,
            vec![answered(100, 30.0), answered(100, 30.0)],
        );
        assert_eq!(view.reference, Some(reference));
        let now = Now {
            unix: NOW + 30.0,
            at: t0 + Duration::from_secs(30),
        };
        // 30 s after block 100 was made, 4 blocks a second and 10 of slack are plausible.
        assert!(view.plausible(&block(230, 0.0), now).is_ok());
        let err = view.plausible(&block(231, 0.0), now).unwrap_err();
        assert_eq!(err.reason, Reason::ImplausibleBlock);
        // Two that disagree do not move it.
        finish(
            &mut view,
            3,
            t0,
            31,
            vec![answered(131, 0.0), answered(105, 0.0)],
        );
        assert_eq!(view.reference.unwrap().number, 100);
    }

    #[test]
    fn skew_is_a_change_once_each_way() {
        let t0 = Instant::now();
        let mut view = ChainView::new(1);
        let first = finish(&mut view, 1, t0, 0, vec![answered(100, -600.0)]);
        assert_eq!(
            first.judged[0].change,
            Some(Change::SkewStarted {
                ahead_seconds: 600.0
            })
        );
        assert_eq!(first.judged[0].age, -600.0, "published as it is");
        let again = finish(&mut view, 2, t0, 1, vec![answered(101, -599.0)]);
        assert_eq!(again.judged[0].change, None);
        let over = finish(&mut view, 3, t0, 2, vec![answered(102, 0.0)]);
        assert_eq!(over.judged[0].change, Some(Change::SkewEnded));
    }

    #[test]
    fn record_reports_state_changes_only() {
        let mut view = ChainView::new(1);
        let ok = |n| Ok((block(n, 0.0), Duration::from_millis(50)));
        let down = |reason| Err(ProbeError::new(reason, "x"));
        assert_eq!(view.record(0, &ok(100)), vec![Change::Up { block: 100 }]);
        assert_eq!(view.record(0, &ok(101)), vec![]);
        assert_eq!(
            view.record(0, &ok(99)),
            vec![Change::Backwards { block: 99 }]
        );
        assert!(matches!(
            view.record(0, &down(Reason::Timeout))[..],
            [Change::Down { .. }]
        ));
        assert_eq!(view.record(0, &down(Reason::Timeout)), vec![]);
        assert!(matches!(
            view.record(0, &down(Reason::Connect))[..],
            [Change::Down { .. }]
        ));
        assert_eq!(view.providers[0].consecutive_failures, 3);
        assert_eq!(
            view.providers[0].block.as_ref().unwrap().number,
            99,
            "kept while down"
        );
    }
}
