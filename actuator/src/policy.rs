//! The weighting policy: a pure function from what is observed of a backend's servers (and what
//! the policy remembered from the last cycle) to a verdict and a desired weight per server. No I/O
//! and no clock: the caller passes the time, so every rule can be tested exhaustively.

use common::config::{PolicyConfig, Tier, Weighting};

use crate::capacity::{route, Slot};
use crate::client_signal::{client_breach, peer_failed_ratios, ClientSignal, LearnedLimit};
use crate::ejection::EjectionMemory;
use crate::latency_weight::{smooth, weight, SmoothedLatency};

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

/// Why a server is ejected, in the order the gates are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EjectReason {
    WrongChain,
    Down,
    Stale,
    Lagging,
    Slow,
    Erroring,
    /// Clients see failures (HAProxy's counters) that the probes may not.
    ClientErrors,
}

impl EjectReason {
    pub const ALL: [EjectReason; 7] = [
        EjectReason::WrongChain,
        EjectReason::Down,
        EjectReason::Stale,
        EjectReason::Lagging,
        EjectReason::Slow,
        EjectReason::Erroring,
        EjectReason::ClientErrors,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EjectReason::WrongChain => "wrong_chain",
            EjectReason::Down => "down",
            EjectReason::Stale => "stale",
            EjectReason::Lagging => "lagging",
            EjectReason::Slow => "slow",
            EjectReason::Erroring => "erroring",
            EjectReason::ClientErrors => "client_errors",
        }
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
    /// The request rate the server was seen to carry before answering 429s: its weight is
    /// capped to it (with `max_rps`, the lower wins), and it grows back with time.
    pub learned_limit: Option<LearnedLimit>,
    /// It stood by last cycle (its tier was not in use).
    pub standby: bool,
}

impl Memory {
    /// The request rate the server's weight is capped to at `now`: the lower of the plan's
    /// limit and the one learned from its 429s; `None`: unlimited.
    pub fn limit(&self, max_rps: Option<f64>, now: f64) -> Option<f64> {
        match (max_rps, self.learned_limit.map(|l| l.at(now))) {
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

/// The decision for one server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerDecision {
    pub verdict: Verdict,
    /// The weight wanted; `None` to leave HAProxy's as it is.
    pub desired: Option<u32>,
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
}

/// The first gate `o` breaches. Each signal arrives already confirmed: `up` is 0 only when the
/// exporter's second attempt failed too, lag is judged on the provider's best recent answer, and
/// latency and error ratio are taken over a window by their queries. So one breach ejects.
pub fn breach(policy: &PolicyConfig, o: &Observation) -> Option<EjectReason> {
    let over = |value: Option<f64>, limit: f64| value.is_some_and(|v| v > limit);
    if o.chain_id_ok == Some(false) {
        Some(EjectReason::WrongChain)
    } else if !o.up {
        Some(EjectReason::Down)
    } else if over(o.block_age, policy.max_block_age.as_secs_f64()) {
        Some(EjectReason::Stale)
    } else if over(o.block_lag, policy.max_block_lag as f64) {
        Some(EjectReason::Lagging)
    } else if over(o.latency, policy.max_latency.as_secs_f64()) {
        Some(EjectReason::Slow)
    } else if over(o.error_ratio, policy.max_error_ratio) {
        Some(EjectReason::Erroring)
    } else {
        None
    }
}

/// The weight of an admitted server before slow start: `full_weight` in `equal` mode; in
/// `latency` mode inversely proportional to its smoothed latency bucket, relative to the fastest
/// admitted server's.
fn base_weight(policy: &PolicyConfig, latency: Option<SmoothedLatency>, best: Option<u64>) -> u32 {
    match (policy.weighting, latency, best) {
        (Weighting::Latency, Some(l), Some(best)) => weight(policy, l.bucket, best),
        _ => policy.full_weight,
    }
}

/// Decides every server of one backend at time `now` (seconds, caller's clock).
pub fn decide(policy: &PolicyConfig, servers: &[ServerInput], now: f64) -> BackendDecision {
    // 1. Verdicts and memory; clients' failures are judged against the server's peers'.
    let peers = peer_failed_ratios(policy, servers.iter().map(|s| s.clients));
    let mut decisions: Vec<ServerDecision> = servers
        .iter()
        .zip(peers)
        .map(|(s, peers)| judge(policy, s, peers, now))
        .collect();
    // 2. Weights of admitted servers.
    let admitted = |d: &ServerDecision| matches!(d.verdict, Verdict::Healthy | Verdict::SlowStart);
    let best_bucket = decisions
        .iter()
        .filter(|d| admitted(d))
        .filter_map(|d| d.memory.latency.map(|l| l.bucket))
        .min();
    for d in decisions.iter_mut() {
        d.desired = match d.verdict {
            Verdict::Healthy | Verdict::SlowStart => {
                let base = base_weight(policy, d.memory.latency, best_bucket);
                Some(ramp(policy, base, &mut d.memory, now))
            }
            Verdict::Ejected(_) | Verdict::Readmitting { .. } | Verdict::Standby => Some(0),
            Verdict::NoData | Verdict::FailOpen(_) => None,
        };
        if d.verdict == Verdict::SlowStart && d.memory.ramp_started.is_none() {
            d.verdict = Verdict::Healthy;
        }
    }
    // 3. Tiers and plan limits.
    let demand = servers
        .iter()
        .filter_map(|s| s.clients.map(|c| c.rate()))
        .reduce(|a, b| a + b);
    for (s, d) in servers.iter().zip(decisions.iter_mut()) {
        d.memory.learned_limit =
            LearnedLimit::learn(d.memory.learned_limit, s.clients, demand, now);
    }
    let slots: Vec<Slot> = servers
        .iter()
        .zip(&decisions)
        .map(|(s, d)| Slot {
            tier: s.tier,
            limit: d.memory.limit(s.max_rps, now).filter(|_| s.limits_apply),
            available: admitted(d) && s.haproxy_up,
            ramping: d.memory.ramp_started.is_some(),
            desired: d.desired,
        })
        .collect();
    let previous = servers
        .iter()
        .filter(|s| s.observation.is_some() && !s.memory.standby)
        .map(|s| s.tier)
        .max();
    let routing = route(policy, &slots, demand, previous);
    for ((d, standby), desired) in decisions
        .iter_mut()
        .zip(&routing.standby)
        .zip(&routing.desired)
    {
        d.desired = *desired;
        d.memory.standby = *standby;
        if *standby {
            d.verdict = Verdict::Standby;
        }
    }
    // 4. Fail open: some server is bad and none would carry traffic (HAProxy's own DOWN
    //    counts: a healthy server HAProxy will not use keeps no one else in the pool).
    let carries = |s: &ServerInput, d: &ServerDecision| {
        s.haproxy_up
            && match d.desired {
                Some(w) => w > 0,
                None => s.current_weight.is_some_and(|w| w > 0),
            }
    };
    let any_bad = decisions.iter().any(|d| d.verdict.reason().is_some());
    let fail_open = any_bad && !servers.iter().zip(&decisions).any(|(s, d)| carries(s, d));
    if fail_open {
        for (s, d) in servers.iter().zip(decisions.iter_mut()) {
            if let Some(reason) = d.verdict.reason() {
                d.verdict = Verdict::FailOpen(reason);
                d.desired = Some(policy.full_weight);
            }
            // What hits every server at once (the exporter's own network, say) is not a
            // relapse of any one of them: no escalation while failing open.
            d.memory.ejection.count = d.memory.ejection.count.min(s.memory.ejection.count);
        }
    }
    BackendDecision {
        servers: decisions,
        fail_open,
        tier: routing.tier,
        demand,
        capacity: routing.capacity,
        overloaded: routing.overloaded,
    }
}

fn judge(policy: &PolicyConfig, s: &ServerInput, peers: f64, now: f64) -> ServerDecision {
    let Some(o) = s.observation else {
        return ServerDecision {
            verdict: Verdict::NoData,
            desired: None,
            memory: s.memory,
        };
    };
    let mut memory = s.memory;
    if let Some(latency) = o.latency {
        memory.latency = Some(smooth(policy, memory.latency, latency, now));
    }
    if let Some(reason) = breach(policy, &o).or_else(|| client_breach(policy, s.clients, peers)) {
        let newly = memory.ejected.is_none();
        return ServerDecision {
            verdict: Verdict::Ejected(reason),
            desired: Some(0),
            memory: Memory {
                ejected: Some(reason),
                healthy_streak: 0,
                ramp_started: None,
                ejection: memory.ejection.breached(policy, now, newly),
                ..memory
            },
        };
    }
    let Some(reason) = memory.ejected else {
        let verdict = if memory.ramp_started.is_some() {
            Verdict::SlowStart
        } else {
            Verdict::Healthy
        };
        memory.ejection = memory.ejection.decayed(policy, now);
        return ServerDecision {
            verdict,
            desired: None,
            memory,
        };
    };
    let streak = memory.healthy_streak.saturating_add(1);
    if streak >= policy.readmit_after && memory.ejection.hold_served(policy, now) {
        ServerDecision {
            verdict: Verdict::SlowStart,
            desired: None,
            memory: Memory {
                ejected: None,
                healthy_streak: 0,
                ramp_started: Some(now),
                ejection: memory.ejection.decayed(policy, now),
                ..memory
            },
        }
    } else {
        ServerDecision {
            verdict: Verdict::Readmitting { reason, streak },
            desired: Some(0),
            memory: Memory {
                healthy_streak: streak,
                ..memory
            },
        }
    }
}

/// Slow start: from a tenth of `base` up to `base` over `slow_start`; ends the ramp when done.
fn ramp(policy: &PolicyConfig, base: u32, memory: &mut Memory, now: f64) -> u32 {
    let Some(started) = memory.ramp_started else {
        return base;
    };
    let length = policy.slow_start.as_secs_f64();
    let elapsed = (now - started).max(0.0);
    if length <= 0.0 || elapsed >= length {
        memory.ramp_started = None;
        return base;
    }
    let share = (elapsed / length).max(0.1);
    ((f64::from(base) * share).round() as u32).clamp(1, base)
}

/// What to write to HAProxy, if anything: `None` when `desired` is `None`, when HAProxy already
/// has it, or when a non-zero weight would move by less than `deadband`. Backends with a static
/// algorithm only take 0 and 100%: there any desired weight above 0 means "100%".
pub fn weight_to_write(
    desired: Option<u32>,
    current: Option<u32>,
    deadband: u32,
    static_algorithm: bool,
) -> Option<WeightCommand> {
    let desired = desired?;
    if static_algorithm {
        let on = desired > 0;
        return match current {
            Some(c) if (c > 0) == on => None,
            _ if on => Some(WeightCommand::FullPercent),
            _ => Some(WeightCommand::Absolute(0)),
        };
    }
    match current {
        Some(c) if c == desired => None,
        Some(c) if c > 0 && desired > 0 && c.abs_diff(desired) < deadband => None,
        _ => Some(WeightCommand::Absolute(desired)),
    }
}

/// A weight as written in `set weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightCommand {
    Absolute(u32),
    /// `100%`: the server's configured weight (static algorithms).
    FullPercent,
}

impl std::fmt::Display for WeightCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightCommand::Absolute(w) => write!(f, "{w}"),
            WeightCommand::FullPercent => f.write_str("100%"),
        }
    }
}
