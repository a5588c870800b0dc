//! The weighting policy: a pure function from what is observed of a backend's servers (and what
//! the policy remembered from the last cycle) to a verdict and a desired weight per server. No I/O
//! and no clock: the caller passes the time, so every rule can be tested exhaustively.

use common::config::{PolicyConfig, Tier, Weighting};

use crate::capacity::{route, Slot};
use crate::client_signal::LearnedLimit;
use crate::decision::{BackendDecision, Memory, ServerDecision, ServerInput, Verdict};
use crate::gates::{breach, client_breach, peer_failed_ratios};
use crate::latency_weight::{smooth, weight, SmoothedLatency};

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
        // Plan limits are kept through weights: not where HAProxy does not spread by them.
        d.limit = d.memory.limit(s.max_rps).filter(|_| s.limits_apply);
    }
    let slots: Vec<Slot> = servers
        .iter()
        .zip(&decisions)
        .map(|(s, d)| Slot {
            tier: s.tier,
            limit: d.limit,
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
    let hold_of = |decisions: &[ServerDecision]| {
        decisions
            .iter()
            .filter_map(|d| d.memory.release.held_for(now))
            .reduce(f64::max)
    };
    let held = hold_of(&decisions).is_some();
    let routing = route(policy, &slots, demand, previous, held);
    let in_use = |t: Tier| routing.tier.is_some_and(|top| t <= top);
    for (((s, d), standby), desired) in servers
        .iter()
        .zip(decisions.iter_mut())
        .zip(&routing.standby)
        .zip(&routing.desired)
    {
        d.desired = *desired;
        let serving = in_use(s.tier) && !*standby && desired.is_some_and(|w| w > 0);
        d.memory.release = d.memory.release.next(*standby, serving, now);
        d.memory.standby = *standby;
        if *standby {
            d.verdict = Verdict::Standby;
        }
        // A restart's ceiling holds until capping can be done on a measured demand.
        d.memory.ceiling = d
            .memory
            .ceiling
            .filter(|c| demand.is_none() && now < c.until);
        if let Some(c) = d.memory.ceiling {
            d.desired = d.desired.map(|w| w.min(c.weight));
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
    // 5. A capped weight going down is written whatever the deadband.
    for (s, d) in servers.iter().zip(decisions.iter_mut()) {
        if d.limit.is_some() && d.desired.zip(s.current_weight).is_some_and(|(w, c)| w < c) {
            d.deadband = 0;
        }
    }
    // As this cycle leaves it: a release that failed now holds from now.
    let release_held_for = hold_of(&decisions).filter(|_| routing.tier > Some(Tier::PRIMARY));
    BackendDecision {
        servers: decisions,
        fail_open,
        tier: routing.tier,
        demand,
        capacity: routing.capacity,
        overloaded: routing.overloaded,
        release_held_for,
    }
}

fn judge(policy: &PolicyConfig, s: &ServerInput, peers: Option<f64>, now: f64) -> ServerDecision {
    let Some(o) = s.observation else {
        return ServerDecision {
            verdict: Verdict::NoData,
            desired: None,
            limit: None,
            deadband: policy.deadband,
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
            limit: None,
            deadband: policy.deadband,
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
            limit: None,
            deadband: policy.deadband,
            memory,
        };
    };
    let streak = memory.healthy_streak.saturating_add(1);
    if streak >= policy.readmit_after && memory.ejection.hold_served(policy, now) {
        ServerDecision {
            verdict: Verdict::SlowStart,
            desired: None,
            limit: None,
            deadband: policy.deadband,
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
            limit: None,
            deadband: policy.deadband,
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
