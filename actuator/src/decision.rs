//! What the policy decides about, and what a decision says: the observation of a provider, the
//! memory kept of a server between cycles, a server's input, its verdict and weight, a backend's
//! decision. The rules that make decisions from these live in [`crate::policy`] and its helpers;
//! everything else (the join, the HAProxy client, reporting, metrics, the backtest) speaks these
//! types without depending on the rules.

use common::config::{PolicyConfig, Tier};

use crate::capacity::ReleaseBackoff;
use crate::client_signal::{ClientSignal, LearnedLimit};
use crate::ejection::EjectionMemory;
use crate::latency_weight::SmoothedLatency;

/// What Prometheus says of one server's provider. Present only when the exporter's data is
/// fresh; `None` fields are signals without data (never evidence either way).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Observation {
    pub up: bool,
    pub chain_id_ok: Option<bool>,
    pub block_lag: Option<f64>,
    pub block_age: Option<f64>,
    pub latency: Option<f64>,
    pub error_ratio: Option<f64>,
}

common::label_enum! {
    /// Why a server is ejected, in the order the gates are checked.
    pub enum EjectReason {
        WrongChain => "wrong_chain",
        Down => "down",
        Stale => "stale",
        Lagging => "lagging",
        Slow => "slow",
        Erroring => "erroring",
        /// Clients see failures (HAProxy's counters) that the probes may not.
        ClientErrors => "client_errors",
        /// Found at weight 0 when the actuator started, with no history saying why: readmitted
        /// like a server just ejected (`readmit_after`, then slow start), never straight to full
        /// weight.
        Restart => "restart",
    }
}

/// What the policy remembers of a server between cycles.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Memory {
    /// Out of the pool, and why.
    pub ejected: Option<EjectReason>,
    /// Consecutive healthy cycles while ejected.
    pub healthy_streak: u32,
    /// When slow start began (caller's clock, seconds); `None` when not ramping.
    pub ramp_started: Option<f64>,
    /// Escalation: recent ejections and the hold they impose.
    pub ejection: EjectionMemory,
    /// The latency that weights follow; `None` until one was observed.
    pub latency: Option<SmoothedLatency>,
    /// The request rate the server was seen to carry before answering rate limits: its weight is
    /// capped to it (with `max_rps`, the lower wins); it moves only on evidence.
    pub learned_limit: Option<LearnedLimit>,
    /// It stood by last cycle (its tier was not in use).
    pub standby: bool,
    /// Its tier's releases: a failed one holds the next back.
    pub release: ReleaseBackoff,
    /// After a restart: a weight not to exceed until the demand is measured, since HAProxy's
    /// weight may be a cap the policy cannot justify (or lift) without it.
    pub ceiling: Option<Ceiling>,
}

/// A weight HAProxy had when the actuator started, kept as a cap until the backend's demand is
/// measured (or `until`, should it never be: a backend without HAProxy counters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceiling {
    pub weight: u32,
    /// Policy clock, seconds.
    pub until: f64,
}

impl Memory {
    /// The request rate the server's weight is capped to: the lower of the plan's limit and the
    /// one learned from its rate-limit answers; `None`: unlimited.
    pub fn limit(&self, max_rps: Option<f64>) -> Option<f64> {
        match (max_rps, self.learned_limit.and_then(|l| l.rps)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When an ejected server may return at the earliest (it also needs `readmit_after`
    /// healthy cycles); `None` when it is not ejected.
    pub fn earliest_return(&self, policy: &PolicyConfig) -> Option<f64> {
        self.ejected?;
        self.ejection.earliest_return(policy)
    }
}

/// One server as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerInput {
    /// `None`: the data is missing or stale.
    pub observation: Option<Observation>,
    /// HAProxy's weight now; `None` when not known.
    pub current_weight: Option<u32>,
    /// HAProxy can send it traffic: its status is `UP` (or it has no check). A server HAProxy
    /// holds DOWN, in maintenance or draining carries nothing, whatever its weight.
    pub haproxy_up: bool,
    pub memory: Memory,
    pub tier: Tier,
    /// The plan's request rate limit; `None`: unlimited.
    pub max_rps: Option<f64>,
    /// What clients saw over the signal window; `None` without HAProxy counters.
    pub clients: Option<ClientSignal>,
    /// HAProxy spreads this backend's traffic by weight (not a static, `leastconn` or `first`
    /// algorithm), so plan limits can be kept through weights.
    pub limits_apply: bool,
}

/// The policy's judgement of a server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// In the pool at its weight.
    Healthy,
    /// Readmitted and ramping up.
    SlowStart,
    /// Out of the pool.
    Ejected(EjectReason),
    /// Healthy again, waiting for `readmit_after` healthy cycles.
    Readmitting { reason: EjectReason, streak: u32 },
    /// Would be out, but every server of the backend would be: all share the traffic.
    FailOpen(EjectReason),
    /// No fresh data: HAProxy's weight stays as it is.
    NoData,
    /// Healthy, but its tier is not in use: weight 0 until the lower tiers fall short.
    Standby,
}

impl Verdict {
    /// The ejection reason, if the policy judges the server bad.
    pub fn reason(self) -> Option<EjectReason> {
        match self {
            Verdict::Ejected(r) | Verdict::FailOpen(r) | Verdict::Readmitting { reason: r, .. } => {
                Some(r)
            }
            Verdict::Healthy | Verdict::SlowStart | Verdict::NoData | Verdict::Standby => None,
        }
    }
}

/// The decision for one server: everything its weight needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerDecision {
    pub verdict: Verdict,
    /// The weight wanted; `None` to leave HAProxy's as it is.
    pub desired: Option<u32>,
    /// The request rate its weight is capped to (the plan's or a learned limit, where the
    /// backend spreads traffic by weight); `None`: uncapped.
    pub limit: Option<f64>,
    /// Weight changes smaller than this are not written: the policy's `deadband`, or 0 for a
    /// capped weight going down (a few points of weight can be the plan's limit).
    pub deadband: u32,
    /// To remember for the next cycle.
    pub memory: Memory,
}

/// The decision for a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendDecision {
    pub servers: Vec<ServerDecision>,
    /// Every server with data would have been ejected.
    pub fail_open: bool,
    /// The highest tier in use; `None` when no server is available.
    pub tier: Option<Tier>,
    /// Client requests per second over the signal window; `None` until measured.
    pub demand: Option<f64>,
    /// What the servers of the tiers in use can carry; `None`: unlimited.
    pub capacity: Option<f64>,
    /// The demand exceeds every plan limit in use: traffic is shared by limit.
    pub overloaded: bool,
    /// Seconds the tiers in use are still held after a failed release; `None`: not held.
    pub release_held_for: Option<f64>,
}
