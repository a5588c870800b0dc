//! Tiers, plan limits and what clients see, through the policy: properties over random pools
//! (a capped server's expected rate stays under its limit when the pool can carry the demand,
//! tiers never leave a backend without a carrying server, missing HAProxy counters never lower a
//! weight) and the passive gates on chosen cases.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use actuator::capacity::{expected_rates, route, Slot, PLAN_HEADROOM, RELEASE_BACKOFF};
use actuator::client_signal::ClientSignal;
use actuator::decision::{EjectReason, Memory, Observation, ServerInput, Verdict};
use actuator::policy::decide;
use common::config::{PolicyConfig, Tier};
use proptest::prelude::*;
use support::healthy;

fn server(tier: u8, max_rps: Option<f64>, clients: Option<ClientSignal>) -> ServerInput {
    ServerInput {
        observation: Some(healthy()),
        current_weight: Some(100),
        haproxy_up: true,
        memory: Memory::default(),
        tier: Tier::new(tier).unwrap(),
        max_rps,
        clients,
        limits_apply: true,
    }
}

fn clients(requests: f64, failed: f64, rate_limited: f64) -> Option<ClientSignal> {
    Some(ClientSignal {
        requests,
        failed,
        rpc_errors: 0.0,
        rate_limited,
        seconds: 5.0,
    })
}

fn slot_strategy() -> impl Strategy<Value = Slot> {
    (
        1u8..=3,
        proptest::option::of(1.0f64..200.0),
        any::<bool>(),
        proptest::option::of(0u32..=100),
    )
        .prop_map(|(tier, limit, available, desired)| Slot {
            tier: Tier::new(tier).unwrap(),
            limit,
            available,
            ramping: false,
            // An admitted server always has a weight; one that is not has 0, or none (no data).
            desired: if available {
                Some(desired.unwrap_or(100).max(1))
            } else {
                desired.map(|_| 0)
            },
        })
}

proptest! {
    #[test]
    fn a_capped_server_stays_under_its_limit_when_the_pool_can_carry_the_demand(
        slots in proptest::collection::vec(slot_strategy(), 1..6),
        demand in 1.0f64..500.0,
    ) {
        let policy = PolicyConfig::default();
        let r = route(&policy, &slots, Some(demand), None, false);
        prop_assume!(!r.overloaded);
        let rates = expected_rates(&slots, &r.desired, demand);
        for (i, s) in slots.iter().enumerate() {
            if let (Some(limit), true) = (s.limit, s.available) {
                // Weights are integers: allow what one step of rounding moves.
                let total: f64 = slots.iter().zip(&r.desired)
                    .filter(|(s, _)| s.available)
                    .map(|(_, d)| f64::from(d.unwrap_or(0))).sum();
                let rounding = if total > 0.0 { demand / total } else { 0.0 };
                prop_assert!(
                    rates[i] <= limit * PLAN_HEADROOM + rounding + 1e-9,
                    "server {i}: {} req/s over its limit {limit}: {slots:?} -> {r:?}", rates[i]
                );
            }
        }
    }

    #[test]
    fn tiers_never_leave_a_backend_without_a_carrying_server(
        slots in proptest::collection::vec(slot_strategy(), 1..6),
        demand in proptest::option::of(0.0f64..500.0),
        previous in proptest::option::of(1u8..=3),
    ) {
        let policy = PolicyConfig::default();
        let r = route(&policy, &slots, demand, previous.and_then(Tier::new), false);
        let carried_before = slots.iter().any(|s| s.available && s.desired.is_some_and(|w| w > 0));
        let carried_after = slots.iter().zip(&r.desired)
            .any(|(s, d)| s.available && d.is_some_and(|w| w > 0));
        prop_assert!(!carried_before || carried_after, "{slots:?} -> {r:?}");
        // Standing by only ever sets 0 on a server with data, never on one the policy holds.
        for (s, d) in slots.iter().zip(&r.desired) {
            prop_assert!(s.desired.is_some() || d.is_none());
        }
    }

    #[test]
    fn missing_haproxy_counters_never_lower_a_weight(
        servers in proptest::collection::vec(
            (proptest::option::of(1.0f64..50.0), proptest::option::of((0.0f64..500.0, 0.0f64..1.0))),
            1..5,
        ),
        missing in 0usize..5,
    ) {
        // Some servers with counters (healthy clients, a few failures), one without.
        let policy = PolicyConfig::default();
        let missing = missing % servers.len();
        let inputs: Vec<ServerInput> = servers
            .iter()
            .enumerate()
            .map(|(i, (limit, c))| {
                let clients = c
                    .filter(|_| i != missing)
                    .and_then(|(requests, share)| clients(requests, requests * share * 0.05, 0.0));
                server(1, *limit, clients)
            })
            .collect();
        let d = decide(&policy, &inputs, 0.0);
        // The server without counters: capped only by its plan, never by another's counters.
        let m = &d.servers[missing];
        prop_assert_eq!(m.verdict, Verdict::Healthy);
        prop_assert!(m.desired.is_some_and(|w| w > 0));
        if servers.iter().all(|(_, c)| c.is_none()) || d.demand.is_none() {
            // No demand measured: nothing is capped at all.
            prop_assert!(d.servers.iter().all(|s| s.desired == Some(100)));
        }
    }
}

#[test]
fn a_reserve_kept_for_capacity_is_released_only_with_room_to_spare_across_cycles() {
    let policy = PolicyConfig::default();
    // Two 30 req/s primaries (they carry 54) and a reserve; the policy remembers which tier
    // served last cycle through each server's memory.
    let mut memory = vec![Memory::default(); 3];
    let mut tiers = Vec::new();
    for demand in [40.0, 60.0, 50.0, 48.0, 40.0] {
        let share = demand / 3.0 * 5.0;
        let inputs: Vec<ServerInput> = (0..3)
            .map(|i| ServerInput {
                memory: memory[i],
                ..server(
                    if i == 2 { 2 } else { 1 },
                    if i == 2 { None } else { Some(30.0) },
                    clients(share, 0.0, 0.0),
                )
            })
            .collect();
        let d = decide(&policy, &inputs, 0.0);
        memory = d.servers.iter().map(|s| s.memory).collect();
        tiers.push(d.tier.map(|t| t.get()));
    }
    // 60 needs the reserve; 50 and 48 are under 54 but not a quarter under; 40 is.
    assert_eq!(tiers, [Some(1), Some(2), Some(2), Some(2), Some(1)]);
}

/// Runs `cycles` 1 s cycles over a 5 s window: primaries that really allow `allow` req/s each
/// (429s above), a reserve without a limit, `demand` req/s, no `max_rps` set: the limits are
/// learned. Returns the tier of each cycle and the share of requests answered 429 after `from`.
fn learned_limits_run(allow: f64, demand: f64, cycles: usize, from: usize) -> (Vec<u8>, f64) {
    let policy = PolicyConfig::default();
    let mut memory = vec![Memory::default(); 3];
    let mut weights: Vec<u32> = vec![100, 100, 0];
    let (mut tiers, mut rejected, mut sent) = (Vec::new(), 0.0, 0.0);
    for cycle in 0..cycles {
        let total: f64 = weights.iter().map(|w| f64::from(*w)).sum();
        let rates: Vec<f64> = weights
            .iter()
            .map(|w| demand * f64::from(*w) / total.max(1.0))
            .collect();
        let inputs: Vec<ServerInput> = (0..3)
            .map(|i| {
                let limited = (rates[i] - allow).max(0.0);
                let over = if i == 2 { 0.0 } else { limited };
                ServerInput {
                    memory: memory[i],
                    current_weight: Some(weights[i]),
                    ..server(
                        if i == 2 { 2 } else { 1 },
                        None,
                        clients(rates[i] * 5.0, 0.0, over * 5.0),
                    )
                }
            })
            .collect();
        if cycle >= from {
            rejected += rates[..2].iter().map(|r| (r - allow).max(0.0)).sum::<f64>();
            sent += rates.iter().sum::<f64>();
        }
        let d = decide(&policy, &inputs, cycle as f64);
        memory = d.servers.iter().map(|s| s.memory).collect();
        for (w, s) in weights.iter_mut().zip(&d.servers) {
            if let Some(desired) = s.desired {
                *w = desired;
            }
        }
        tiers.push(d.tier.map_or(0, |t| t.get()));
    }
    (tiers, rejected / sent.max(1.0))
}

#[test]
fn learned_limits_bring_the_reserve_in_once_and_keep_it_without_flapping() {
    // Two primaries allowing 20 req/s each, 60 req/s of demand: 15 minutes of cycles.
    let (tiers, rejected) = learned_limits_run(20.0, 60.0, 900, 60);
    let changes = tiers.windows(2).filter(|w| w[0] != w[1]).count();
    let after_first_minute = tiers[60..].windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        after_first_minute <= 1,
        "tier changes after the first minute: {after_first_minute}"
    );
    assert_eq!(
        tiers.last(),
        Some(&2),
        "the reserve carries what the primaries cannot"
    );
    assert!(
        rejected <= 0.005,
        "429s after the first minute: {:.3} %",
        100.0 * rejected
    );
    println!(
        "tier changes {changes}, after the first minute {after_first_minute}, 429s {:.3} %",
        100.0 * rejected
    );
}

#[test]
fn a_failed_release_holds_the_reserve_in_before_the_next_release() {
    // Two primaries and a reserve; both primaries die at t = 10, return, and die again 5 s after
    // their tier was released: the reserve then stays in for at least RELEASE_BACKOFF.
    let policy = PolicyConfig::default();
    let mut memory = vec![Memory::default(); 3];
    let down = |t: usize, released: Option<usize>| t == 10 || released.is_some_and(|r| t == r + 5);
    let (mut released, mut failed, mut back) = (None, None, None);
    for t in 0..900 {
        let inputs: Vec<ServerInput> = (0..3)
            .map(|i| {
                let primary = i < 2;
                let mut input = server(if primary { 1 } else { 2 }, None, None);
                input.memory = memory[i];
                if primary && down(t, released) {
                    input.observation = Some(Observation {
                        up: false,
                        ..healthy()
                    });
                }
                input
            })
            .collect();
        let d = decide(&policy, &inputs, t as f64);
        memory = d.servers.iter().map(|s| s.memory).collect();
        let tier = d.tier.map_or(0, |t| t.get());
        match (released, failed) {
            (None, _) if t > 10 && tier == 1 => released = Some(t),
            (Some(r), None) if t == r + 5 => {
                assert_eq!(tier, 2, "the reserve comes in when the primaries die again");
                assert_eq!(d.release_held_for, Some(RELEASE_BACKOFF));
                failed = Some(t);
            }
            (Some(_), Some(f)) if tier == 1 && back.is_none() => back = Some(t - f),
            _ => {}
        }
    }
    let back = back.expect("the tier is released once the hold is over");
    assert!(
        back as f64 >= RELEASE_BACKOFF,
        "released again {back} s after the failed release"
    );
}

#[test]
fn stray_429s_keep_a_provider_near_its_share() {
    // p1 answers 3 % 429s whatever its rate (a per-method limit), 90 req/s over three primaries.
    let policy = PolicyConfig::default();
    let mut memory = vec![Memory::default(); 3];
    let mut weights: Vec<u32> = vec![100; 3];
    let mut low = 0;
    for cycle in 0..300 {
        let total: f64 = weights.iter().map(|w| f64::from(*w)).sum();
        let inputs: Vec<ServerInput> = (0..3)
            .map(|i| {
                let rate = 90.0 * f64::from(weights[i]) / total.max(1.0);
                let stray = if i == 0 { rate * 0.03 } else { 0.0 };
                ServerInput {
                    memory: memory[i],
                    current_weight: Some(weights[i]),
                    ..server(1, None, clients(rate * 5.0, 0.0, stray * 5.0))
                }
            })
            .collect();
        let d = decide(&policy, &inputs, f64::from(cycle));
        memory = d.servers.iter().map(|s| s.memory).collect();
        for (w, s) in weights.iter_mut().zip(&d.servers) {
            if let Some(desired) = s.desired {
                *w = desired;
            }
        }
        if cycle >= 60 && weights[0] < 50 {
            low += 1;
        }
    }
    assert!(
        low * 10 <= 240,
        "p1 below weight 50 in {low} of 240 cycles (weights now {weights:?})"
    );
}

#[test]
fn plan_limits_are_not_applied_where_weights_do_not_spread_traffic() {
    let policy = PolicyConfig::default();
    let mut capped = server(1, Some(5.0), clients(500.0, 0.0, 0.0));
    capped.limits_apply = false;
    let d = decide(
        &policy,
        &[capped, server(1, None, clients(500.0, 0.0, 0.0))],
        0.0,
    );
    assert_eq!(d.servers[0].desired, Some(100));
    assert_eq!(d.servers[0].limit, None, "no limit where it cannot be kept");
    assert!(!d.overloaded);
}

#[test]
fn the_decision_carries_the_limit_and_writes_a_capped_weight_going_down_whatever_the_deadband() {
    let policy = PolicyConfig::default();
    let servers = [
        server(1, Some(15.0), clients(170.0, 0.0, 0.0)),
        server(1, None, clients(165.0, 0.0, 0.0)),
    ];
    let d = decide(&policy, &servers, 0.0);
    assert_eq!(d.servers[0].limit, Some(15.0));
    assert!(
        d.servers[0].desired < Some(100),
        "capped: {:?}",
        d.servers[0]
    );
    assert_eq!(d.servers[0].deadband, 0, "capped and going down");
    assert_eq!(d.servers[1].limit, None);
    assert_eq!(d.servers[1].deadband, policy.deadband);
    // Going up (or staying) keeps the deadband.
    let mut low = servers;
    low[0].current_weight = Some(1);
    let d = decide(&policy, &low, 0.0);
    assert_eq!(d.servers[0].deadband, policy.deadband);
}

#[test]
fn a_server_failing_clients_while_its_probes_pass_is_ejected() {
    let policy = PolicyConfig::default();
    let servers = [
        server(1, None, clients(100.0, 30.0, 0.0)),
        server(1, None, clients(100.0, 1.0, 0.0)),
    ];
    let d = decide(&policy, &servers, 0.0);
    assert_eq!(
        d.servers[0].verdict,
        Verdict::Ejected(EjectReason::ClientErrors)
    );
    assert_eq!(d.servers[0].desired, Some(0));
    assert_eq!(
        d.servers[1].verdict,
        Verdict::Healthy,
        "noise is not failure"
    );
}

#[test]
fn a_window_with_too_few_requests_is_no_evidence() {
    let policy = PolicyConfig::default();
    let few = [
        server(1, None, clients(10.0, 10.0, 0.0)),
        server(1, None, None),
    ];
    assert_eq!(
        decide(&policy, &few, 0.0).servers[0].verdict,
        Verdict::Healthy
    );
    let off = PolicyConfig {
        max_client_error_ratio: 1.0,
        ..PolicyConfig::default()
    };
    let many = [server(1, None, clients(1000.0, 999.0, 0.0))];
    assert_eq!(
        decide(&off, &many, 0.0).servers[0].verdict,
        Verdict::Healthy,
        "1 turns it off"
    );
}

#[test]
fn a_rate_limited_server_is_capped_not_ejected() {
    let policy = PolicyConfig::default();
    // 40 req/s each over 5 s; the first answered 429 to half of them: it carries 20 req/s.
    let servers = [
        server(1, None, clients(200.0, 0.0, 100.0)),
        server(1, None, clients(200.0, 0.0, 0.0)),
        server(1, None, clients(200.0, 0.0, 0.0)),
    ];
    let d = decide(&policy, &servers, 0.0);
    assert_eq!(d.servers[0].verdict, Verdict::Healthy);
    assert_eq!(d.servers[0].memory.limit(None), Some(20.0));
    assert_eq!(d.demand, Some(120.0));
    let weights: Vec<u32> = d.servers.iter().map(|s| s.desired.unwrap()).collect();
    let share = f64::from(weights[0]) / f64::from(weights.iter().sum::<u32>());
    assert!(
        share * 120.0 <= 20.0 * PLAN_HEADROOM + 1.0,
        "{weights:?}: {} req/s",
        share * 120.0
    );
}

#[test]
fn a_plan_limit_caps_the_weight_and_the_reserve_stands_by() {
    let policy = PolicyConfig::default();
    let servers = [
        server(1, Some(15.0), clients(170.0, 0.0, 0.0)),
        server(1, None, clients(165.0, 0.0, 0.0)),
        server(1, None, clients(165.0, 0.0, 0.0)),
        server(2, None, clients(0.0, 0.0, 0.0)),
    ];
    let d = decide(&policy, &servers, 0.0);
    assert_eq!(d.tier, Tier::new(1));
    assert_eq!(d.servers[3].verdict, Verdict::Standby);
    assert_eq!(d.servers[3].desired, Some(0));
    assert!(d.servers[3].memory.standby);
    let rates = expected_rates(
        &servers
            .iter()
            .map(|s| Slot {
                tier: s.tier,
                limit: s.max_rps,
                available: true,
                ramping: false,
                desired: None,
            })
            .collect::<Vec<_>>(),
        &d.servers.iter().map(|s| s.desired).collect::<Vec<_>>(),
        d.demand.unwrap(),
    );
    assert!(rates[0] <= 15.0 * PLAN_HEADROOM + 1.0, "{rates:?}");
}

#[test]
fn the_reserve_serves_when_both_primaries_are_down_and_stands_by_again_after_readmission() {
    let policy = PolicyConfig::default();
    let down = actuator::decision::Observation {
        up: false,
        ..healthy()
    };
    let mut servers = [
        server(1, None, None),
        server(1, None, None),
        server(2, None, None),
    ];
    for s in &mut servers[..2] {
        s.observation = Some(down);
    }
    let d = decide(&policy, &servers, 0.0);
    assert_eq!(d.tier, Tier::new(2));
    assert!(!d.fail_open);
    assert_eq!(d.servers[2].desired, Some(100));
    // Healthy again: once readmitted (after the hold and readmit_after cycles), tier 1 serves.
    let mut memory: Vec<Memory> = d.servers.iter().map(|s| s.memory).collect();
    let mut t = 0.0;
    loop {
        t += 1.0;
        let inputs: Vec<ServerInput> = (0..3)
            .map(|i| ServerInput {
                memory: memory[i],
                ..server(if i == 2 { 2 } else { 1 }, None, None)
            })
            .collect();
        let d = decide(&policy, &inputs, t);
        memory = d.servers.iter().map(|s| s.memory).collect();
        if d.tier == Tier::new(1) {
            assert_eq!(d.servers[2].verdict, Verdict::Standby);
            assert!(d.servers[..2].iter().all(|s| s.desired.unwrap() > 0));
            break;
        }
        assert_eq!(d.servers[2].desired, Some(100), "the reserve serves at {t}");
        assert!(t < 60.0, "tier 1 never came back");
    }
}
