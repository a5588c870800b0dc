//! The weighting policy: a pure function from what is observed of a backend's servers (and what
//! the policy remembered from the last cycle) to a verdict and a desired weight per server. No I/O
//! and no clock: the caller passes the time, so every rule can be tested exhaustively.

use common::config::{PolicyConfig, Weighting};

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
}

impl EjectReason {
    pub const ALL: [EjectReason; 6] = [
        EjectReason::WrongChain,
        EjectReason::Down,
        EjectReason::Stale,
        EjectReason::Lagging,
        EjectReason::Slow,
        EjectReason::Erroring,
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
}

/// One server as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerInput {
    /// `None`: the data is missing or stale.
    pub observation: Option<Observation>,
    /// HAProxy's weight now; `None` when not known.
    pub current_weight: Option<u32>,
    pub memory: Memory,
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
}

impl Verdict {
    /// The ejection reason, if the policy judges the server bad.
    pub fn reason(self) -> Option<EjectReason> {
        match self {
            Verdict::Ejected(r) | Verdict::FailOpen(r) | Verdict::Readmitting { reason: r, .. } => {
                Some(r)
            }
            Verdict::Healthy | Verdict::SlowStart | Verdict::NoData => None,
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
}

/// The first gate `o` breaches. A failed probe, lag and age eject at once; latency and error
/// ratio arrive already smoothed over a window by their queries.
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
/// `latency` mode inversely proportional to its latency rounded up to `latency_bucket`s, relative
/// to the fastest bucket among `admitted_latencies`. Never below 1.
fn base_weight(policy: &PolicyConfig, latency: Option<f64>, best_bucket: Option<u64>) -> u32 {
    let full = policy.full_weight;
    match (policy.weighting, latency, best_bucket) {
        (Weighting::Latency, Some(l), Some(best)) => {
            let bucket = latency_bucket(policy, l);
            let w = (f64::from(full) * best as f64 / bucket as f64).round() as u32;
            w.clamp(1, full)
        }
        _ => full,
    }
}

fn latency_bucket(policy: &PolicyConfig, latency: f64) -> u64 {
    let size = policy.latency_bucket.as_secs_f64();
    ((latency.max(0.0) / size).ceil() as u64).max(1)
}

/// Decides every server of one backend at time `now` (seconds, caller's clock).
pub fn decide(policy: &PolicyConfig, servers: &[ServerInput], now: f64) -> BackendDecision {
    // 1. Verdicts and memory.
    let mut decisions: Vec<ServerDecision> =
        servers.iter().map(|s| judge(policy, s, now)).collect();
    // 2. Weights of admitted servers.
    let admitted = |d: &ServerDecision| matches!(d.verdict, Verdict::Healthy | Verdict::SlowStart);
    let best_bucket = servers
        .iter()
        .zip(&decisions)
        .filter(|(_, d)| admitted(d))
        .filter_map(|(s, _)| s.observation.and_then(|o| o.latency))
        .map(|l| latency_bucket(policy, l))
        .min();
    for (s, d) in servers.iter().zip(decisions.iter_mut()) {
        d.desired = match d.verdict {
            Verdict::Healthy | Verdict::SlowStart => {
                let base = base_weight(policy, s.observation.and_then(|o| o.latency), best_bucket);
                Some(ramp(policy, base, &mut d.memory, now))
            }
            Verdict::Ejected(_) | Verdict::Readmitting { .. } => Some(0),
            Verdict::NoData | Verdict::FailOpen(_) => None,
        };
        if d.verdict == Verdict::SlowStart && d.memory.ramp_started.is_none() {
            d.verdict = Verdict::Healthy;
        }
    }
    // 3. Fail open: no server would carry traffic, yet some have data.
    let carries = |s: &ServerInput, d: &ServerDecision| match d.desired {
        Some(w) => w > 0,
        None => s.current_weight.is_some_and(|w| w > 0),
    };
    let any_data = decisions.iter().any(|d| d.verdict != Verdict::NoData);
    let fail_open = any_data && !servers.iter().zip(&decisions).any(|(s, d)| carries(s, d));
    if fail_open {
        for d in decisions.iter_mut() {
            if let Some(reason) = d.verdict.reason() {
                d.verdict = Verdict::FailOpen(reason);
                d.desired = Some(policy.full_weight);
            }
        }
    }
    BackendDecision {
        servers: decisions,
        fail_open,
    }
}

fn judge(policy: &PolicyConfig, s: &ServerInput, now: f64) -> ServerDecision {
    let hold = ServerDecision {
        verdict: Verdict::NoData,
        desired: None,
        memory: s.memory,
    };
    let Some(o) = s.observation else { return hold };
    if let Some(reason) = breach(policy, &o) {
        return ServerDecision {
            verdict: Verdict::Ejected(reason),
            desired: Some(0),
            memory: Memory {
                ejected: Some(reason),
                healthy_streak: 0,
                ramp_started: None,
            },
        };
    }
    let Some(reason) = s.memory.ejected else {
        let verdict = if s.memory.ramp_started.is_some() {
            Verdict::SlowStart
        } else {
            Verdict::Healthy
        };
        return ServerDecision {
            verdict,
            desired: None,
            memory: s.memory,
        };
    };
    let streak = s.memory.healthy_streak + 1;
    if streak >= policy.readmit_after {
        ServerDecision {
            verdict: Verdict::SlowStart,
            desired: None,
            memory: Memory {
                ejected: None,
                healthy_streak: 0,
                ramp_started: Some(now),
            },
        }
    } else {
        ServerDecision {
            verdict: Verdict::Readmitting { reason, streak },
            desired: Some(0),
            memory: Memory {
                ejected: Some(reason),
                healthy_streak: streak,
                ramp_started: None,
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
