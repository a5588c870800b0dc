//! What a provider can serve besides its head, judged from one round of capability probes
//! (`[chain.capabilities]`): the pure part. A provider that answers its head fine can still fail
//! the calls clients make: a pruned node has no state at an old block, a plan may not include
//! `debug_*`, a replica may answer `eth_getLogs` with `[]` for blocks it does not hold. Only a
//! deliberate answer is evidence; a probe that timed out or was rate limited says nothing, so
//! the last finding stands.

use common::config::CapabilitiesConfig;

use crate::rpc::Refusal;

/// Blocks behind the chain head where the logs range ends, so that `[]` there is not
/// propagation. A provider whose own head is short of the range's end is not asked: lag is the
/// head probe's business.
pub const LOGS_MARGIN: u64 = 10;

common::label_enum! {
    /// What a capability probe asks of a provider (the `capability` label).
    pub enum Capability {
        /// State at an old block: `eth_getBalance` there.
        Archive => "archive",
        /// `eth_getLogs` over recent blocks, compared with the peers' answers.
        Logs => "logs",
        /// `debug_traceCall`.
        Trace => "trace",
        /// The `finalized` block tag.
        Finalized => "finalized",
        /// The `safe` block tag.
        Safe => "safe",
    }
}

common::label_enum! {
    /// What a provider's answer says about one capability (the `reason` label).
    pub enum Finding {
        /// It served the call.
        Capable => "ok",
        /// The method is not served on this node or plan.
        MethodUnavailable => "method_unavailable",
        /// The state or block asked for is not held (pruned).
        MissingState => "missing_state",
        /// The range asked for is over its limit.
        OverLimit => "over_limit",
        /// `[]` to `eth_getLogs` over a range where a peer returned logs.
        MissingLogs => "missing_logs",
    }
}

/// One provider's answer to one capability probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It served the call (state at the block, a trace).
    Served,
    /// `eth_getLogs` returned this many logs.
    Logs(usize),
    /// `eth_getLogs` returned more than `max_response_bytes`: logs, many of them.
    ManyLogs,
    /// The number of the block a tag (`finalized`, `safe`) names.
    Tagged(u64),
    /// It answered that it will not serve the call.
    Refused(Refusal),
}

impl Capability {
    /// The capabilities `config` enables, in declaration order.
    pub fn enabled(config: &CapabilitiesConfig) -> Vec<Capability> {
        Capability::ALL
            .into_iter()
            .filter(|c| match c {
                Capability::Archive => config.archive_block.is_some(),
                Capability::Logs => config.logs.is_some(),
                Capability::Trace => config.trace,
                Capability::Finalized => config.finalized,
                Capability::Safe => config.safe,
            })
            .collect()
    }
}

impl Capability {
    /// Whether `refusal`, in answer to this capability's call, is evidence about it. Others are
    /// an error of the moment (an `over_limit` to a balance query says nothing of its state).
    pub fn accepts(self, refusal: Refusal) -> bool {
        match self {
            Capability::Archive => {
                matches!(refusal, Refusal::MissingState | Refusal::MethodUnavailable)
            }
            Capability::Logs => matches!(refusal, Refusal::OverLimit | Refusal::MethodUnavailable),
            Capability::Trace => refusal == Refusal::MethodUnavailable,
            Capability::Finalized | Capability::Safe => {
                matches!(refusal, Refusal::MissingState | Refusal::MethodUnavailable)
            }
        }
    }
}

impl From<Refusal> for Finding {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::MethodUnavailable => Finding::MethodUnavailable,
            Refusal::MissingState => Finding::MissingState,
            Refusal::OverLimit => Finding::OverLimit,
        }
    }
}

/// The blocks the logs probe asks for: `blocks` of them ending [`LOGS_MARGIN`] behind `head`.
pub fn logs_range(head: u64, blocks: u64) -> (u64, u64) {
    let to = head.saturating_sub(LOGS_MARGIN);
    (to.saturating_sub(blocks.saturating_sub(1)), to)
}

/// Each provider's finding from one round's answers (`None`: not asked, or its probe failed:
/// no evidence). Logs are judged against the peers: `[]` where a peer returned logs over the
/// same range is [`Finding::MissingLogs`]; `[]` is a quiet range only where a peer answered
/// `[]` too, and no evidence where no peer answered at all.
pub fn judge(answers: &[Option<Answer>]) -> Vec<Option<Finding>> {
    answers
        .iter()
        .enumerate()
        .map(|(i, answer)| match (*answer)? {
            Answer::Refused(refusal) => Some(refusal.into()),
            Answer::Logs(0) => {
                let peers = || answers.iter().enumerate().filter(move |(j, _)| *j != i);
                if peers().any(|(_, a)| matches!(a, Some(Answer::Logs(1..) | Answer::ManyLogs))) {
                    Some(Finding::MissingLogs)
                } else if peers().any(|(_, a)| matches!(a, Some(Answer::Logs(0)))) {
                    Some(Finding::Capable)
                } else {
                    None
                }
            }
            Answer::Served | Answer::Logs(_) | Answer::ManyLogs | Answer::Tagged(_) => {
                Some(Finding::Capable)
            }
        })
        .collect()
}

/// How many blocks each provider's tagged block (`finalized`, `safe`) is behind the highest any
/// provider answered in the round (`None` for those that did not answer one).
pub fn tag_lags(answers: &[Option<Answer>]) -> Vec<Option<u64>> {
    let number = |a: &Option<Answer>| match a {
        Some(Answer::Tagged(n)) => Some(*n),
        _ => None,
    };
    let highest = answers.iter().filter_map(number).max();
    answers
        .iter()
        .map(|a| Some(highest? - number(a)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use Answer::*;
    use Finding::*;

    #[test]
    fn deliberate_answers_are_findings_and_failures_are_none() {
        let answers = [
            Some(Served),
            Some(Refused(Refusal::MissingState)),
            None,
            Some(Refused(Refusal::MethodUnavailable)),
            Some(Refused(Refusal::OverLimit)),
            Some(Tagged(7)),
        ];
        assert_eq!(
            judge(&answers),
            [
                Some(Capable),
                Some(MissingState),
                None,
                Some(MethodUnavailable),
                Some(OverLimit),
                Some(Capable)
            ]
        );
    }

    /// A round's answers and the findings they must give.
    type Case<'a> = (&'a [Option<Answer>], &'a [Option<Finding>]);

    #[test]
    fn empty_logs_are_missing_only_where_a_peer_has_logs() {
        let table: [Case<'_>; 6] = [
            (
                &[Some(Logs(3)), Some(Logs(0)), Some(Logs(3))],
                &[Some(Capable), Some(MissingLogs), Some(Capable)],
            ),
            (
                &[Some(Logs(0)), Some(Logs(0))],
                &[Some(Capable), Some(Capable)],
            ),
            (&[Some(Logs(0))], &[None]),
            (
                &[Some(Logs(0)), None, Some(Refused(Refusal::OverLimit))],
                &[None, None, Some(OverLimit)],
            ),
            (
                &[Some(ManyLogs), Some(Logs(0)), Some(Logs(0))],
                &[Some(Capable), Some(MissingLogs), Some(MissingLogs)],
            ),
            (
                &[Some(Logs(2)), Some(Logs(0))],
                &[Some(Capable), Some(MissingLogs)],
            ),
        ];
        for (answers, expected) in table {
            assert_eq!(judge(answers), expected, "{answers:?}");
        }
    }

    #[test]
    fn each_capability_takes_only_the_refusals_that_speak_of_it() {
        let (state, method, limit) = (
            Refusal::MissingState,
            Refusal::MethodUnavailable,
            Refusal::OverLimit,
        );
        assert!(Capability::Archive.accepts(state));
        assert!(!Capability::Archive.accepts(limit));
        assert!(Capability::Logs.accepts(limit));
        assert!(!Capability::Logs.accepts(state), "the range is recent");
        assert!(!Capability::Trace.accepts(state));
        for c in Capability::ALL {
            assert!(c.accepts(method), "{c}");
        }
    }

    #[test]
    fn a_tagged_block_lag_is_behind_the_highest_answer() {
        let answers = [Some(Tagged(100)), Some(Tagged(90)), None, Some(Served)];
        assert_eq!(tag_lags(&answers), [Some(0), Some(10), None, None]);
        assert_eq!(tag_lags(&[None, None]), [None, None]);
    }

    #[test]
    fn the_logs_range_ends_behind_the_head_and_never_below_genesis() {
        assert_eq!(logs_range(1000, 100), (891, 990));
        assert_eq!(logs_range(1000, 1), (990, 990));
        assert_eq!(logs_range(5, 100), (0, 0));
        assert_eq!(logs_range(50, 100), (0, 40));
    }
}
