//! The policy, rule by rule, and its invariants over random observations.

mod support;

use std::time::Duration;

use actuator::decision::{EjectReason, Memory, Observation, ServerInput, Verdict};
use actuator::ejection::EjectionMemory;
use actuator::gates::breach;
use actuator::haproxy_write::{weight_to_write, WeightCommand};
use actuator::latency_weight::SmoothedLatency;
use actuator::policy::decide;
use common::config::{PolicyConfig, Tier, Weighting};
use proptest::prelude::*;
use support::healthy;

fn policy() -> PolicyConfig {
    PolicyConfig::default()
}

fn input(observation: Option<Observation>) -> ServerInput {
    ServerInput {
        observation,
        current_weight: Some(100),
        haproxy_up: true,
        memory: Memory::default(),
        tier: Tier::PRIMARY,
        max_rps: None,
        clients: None,
        limits_apply: true,
    }
}

#[test]
fn each_gate_ejects_with_its_reason() {
    let p = policy();
    let cases = [
        (
            Observation {
                chain_id_ok: Some(false),
                ..healthy()
            },
            EjectReason::WrongChain,
        ),
        (
            Observation {
                up: false,
                ..healthy()
            },
            EjectReason::Down,
        ),
        (
            Observation {
                block_age: Some(61.0),
                ..healthy()
            },
            EjectReason::Stale,
        ),
        (
            Observation {
                block_lag: Some(4.0),
                ..healthy()
            },
            EjectReason::Lagging,
        ),
        (
            Observation {
                latency: Some(1.6),
                ..healthy()
            },
            EjectReason::Slow,
        ),
        (
            Observation {
                error_ratio: Some(0.6),
                ..healthy()
            },
            EjectReason::Erroring,
        ),
    ];
    for (o, reason) in cases {
        assert_eq!(breach(&p, &o), Some(reason));
        let d = decide(&p, &[input(Some(o)), input(Some(healthy()))], 0.0);
        assert_eq!(d.servers[0].verdict, Verdict::Ejected(reason));
        assert_eq!(d.servers[0].desired, Some(0));
        assert_eq!(d.servers[0].memory.ejected, Some(reason));
    }
}

#[test]
fn limits_are_exclusive_and_missing_signals_are_no_evidence() {
    let p = policy();
    let at_limits = Observation {
        block_lag: Some(3.0),
        block_age: Some(60.0),
        latency: Some(1.5),
        error_ratio: Some(0.5),
        ..healthy()
    };
    assert_eq!(breach(&p, &at_limits), None);
    let unknown = Observation {
        chain_id_ok: None,
        block_lag: None,
        block_age: None,
        latency: None,
        error_ratio: None,
        up: true,
    };
    assert_eq!(breach(&p, &unknown), None);
}

#[test]
fn wrong_chain_outranks_down() {
    let o = Observation {
        up: false,
        chain_id_ok: Some(false),
        ..healthy()
    };
    assert_eq!(breach(&policy(), &o), Some(EjectReason::WrongChain));
}

#[test]
fn readmission_waits_for_consecutive_healthy_cycles_then_ramps() {
    let p = PolicyConfig {
        slow_start: Duration::from_secs(10),
        ..policy()
    };
    let other = input(Some(healthy()));
    let mut memory = Memory {
        ejected: Some(EjectReason::Lagging),
        ..Memory::default()
    };
    for streak in 1..3 {
        let s = ServerInput {
            memory,
            ..input(Some(healthy()))
        };
        let d = decide(&p, &[s, other], f64::from(streak));
        assert_eq!(
            d.servers[0].verdict,
            Verdict::Readmitting {
                reason: EjectReason::Lagging,
                streak
            }
        );
        assert_eq!(d.servers[0].desired, Some(0));
        memory = d.servers[0].memory;
    }
    // A relapse resets the streak.
    let relapse = ServerInput {
        memory,
        ..input(Some(Observation {
            block_lag: Some(9.0),
            ..healthy()
        }))
    };
    assert_eq!(
        decide(&p, &[relapse, other], 2.5).servers[0]
            .memory
            .healthy_streak,
        0
    );

    let s = ServerInput {
        memory,
        ..input(Some(healthy()))
    };
    let d = decide(&p, &[s, other], 100.0);
    assert_eq!(d.servers[0].verdict, Verdict::SlowStart);
    assert_eq!(
        d.servers[0].desired,
        Some(10),
        "a tenth of full weight at the start"
    );
    let mut memory = d.servers[0].memory;
    let mut last = 10;
    for t in [102.0, 105.0, 108.0] {
        let d = decide(
            &p,
            &[
                ServerInput {
                    memory,
                    ..input(Some(healthy()))
                },
                other,
            ],
            t,
        );
        let w = d.servers[0].desired.unwrap();
        assert!(w > last, "the ramp rises: {w} after {last}");
        last = w;
        memory = d.servers[0].memory;
    }
    let d = decide(
        &p,
        &[
            ServerInput {
                memory,
                ..input(Some(healthy()))
            },
            other,
        ],
        110.0,
    );
    assert_eq!(d.servers[0].verdict, Verdict::Healthy);
    assert_eq!(d.servers[0].desired, Some(100));
    assert_eq!(d.servers[0].memory.ramp_started, None);
}

/// Runs `decide` once a second for `seconds`, the first server following `bad(t)`, the second
/// always healthy; returns the first server's weight after every cycle (HAProxy applying every
/// write), and the memory at the end.
fn run(p: &PolicyConfig, seconds: u32, bad: impl Fn(u32) -> bool) -> (Vec<u32>, Memory) {
    let mut weight = 100;
    let mut memory = Memory::default();
    let mut other = input(Some(healthy()));
    let mut weights = Vec::new();
    for t in 0..seconds {
        let o = Observation {
            up: !bad(t),
            ..healthy()
        };
        let s = ServerInput {
            current_weight: Some(weight),
            memory,
            ..input(Some(o))
        };
        let d = decide(p, &[s, other], f64::from(t));
        if let Some(WeightCommand::Absolute(w)) =
            weight_to_write(d.servers[0].desired, Some(weight), p.deadband, false)
        {
            weight = w;
        }
        memory = d.servers[0].memory;
        other.memory = d.servers[1].memory;
        weights.push(weight);
    }
    (weights, memory)
}

fn writes(weights: &[u32]) -> usize {
    std::iter::once(&100)
        .chain(weights)
        .zip(weights)
        .filter(|(a, b)| a != b)
        .count()
}

#[test]
fn a_provider_flapping_faster_than_its_hold_is_ejected_once_and_stays_out() {
    // 5 s failing, 5 s fine, for two minutes: the default 10 s hold is never served.
    let (weights, memory) = run(&policy(), 120, |t| (t / 5) % 2 == 0);
    assert_eq!(weights[0], 0, "out at the first failure");
    assert!(weights.iter().all(|w| *w == 0), "{weights:?}");
    assert_eq!(writes(&weights), 1);
    assert_eq!(memory.ejection.count, 1);
}

#[test]
fn one_outage_returns_after_the_base_hold_and_a_relapse_doubles_it() {
    let p = policy(); // readmit_after 3, base_ejection 10 s, slow start 10 s
                      // Down for 5 s, then fine: back (ramping) once healthy for 10 s.
    let (weights, _) = run(&p, 40, |t| t < 5);
    let back = weights.iter().position(|w| *w > 0).unwrap();
    assert_eq!(back, 14, "last breach at 4 s + 10 s hold: {weights:?}");
    assert_eq!(*weights.last().unwrap(), 100);
    let (_, memory) = run(&p, 20, |t| t < 5);
    assert_eq!(memory.ejection.count, 1, "not yet decayed 5 s after return");
    // A relapse 2 s after it came back: held out twice as long.
    let (weights, memory) = run(&p, 40, |t| t < 5 || t == 16);
    let back = weights.iter().skip(17).position(|w| *w > 0).unwrap() + 17;
    assert_eq!(back, 36, "last breach at 16 s + 2 x 10 s: {weights:?}");
    assert_eq!(memory.ejection.count, 2);
}

#[test]
fn the_ejection_count_decays_while_the_server_stays_healthy() {
    let p = policy();
    let (_, memory) = run(&p, 200, |t| t < 2 || t == 20);
    assert_eq!(memory.ejection.count, 0, "{memory:?}");
    // So a relapse long after a recovery is held for the base time again.
    let (weights, _) = run(&p, 260, |t| t < 2 || t == 20 || t == 200);
    let back = weights.iter().skip(201).position(|w| *w > 0).unwrap() + 201;
    assert_eq!(back, 210);
}

#[test]
fn explain_knows_when_an_ejected_server_may_return() {
    let p = policy();
    let (_, memory) = run(&p, 8, |t| t < 5);
    assert_eq!(memory.earliest_return(&p), Some(14.0));
    let (_, memory) = run(&p, 40, |t| t < 5);
    assert_eq!(memory.earliest_return(&p), None, "back in the pool");
}

#[test]
fn a_noisy_latency_near_a_bucket_edge_barely_moves_the_weight() {
    // A provider whose latency median wanders ±40 % around 85 ms (across the 100 ms bucket
    // edge), against one at 30 ms: once settled, its weight does not change.
    let p = policy();
    let mut memories = [Memory::default(); 2];
    let mut weights = [100u32; 2];
    let mut writes = 0;
    let mut rng = 7u64;
    for t in 0..600 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wobble = ((rng >> 33) as f64 / f64::from(1u32 << 31)) * 0.8 - 0.4;
        let latencies = [0.030, 0.085 * (1.0 + wobble)];
        let servers: Vec<ServerInput> = (0..2)
            .map(|i| ServerInput {
                observation: Some(Observation {
                    latency: Some(latencies[i]),
                    ..healthy()
                }),
                current_weight: Some(weights[i]),
                memory: memories[i],
                ..input(None)
            })
            .collect();
        let d = decide(&p, &servers, f64::from(t));
        for i in 0..2 {
            memories[i] = d.servers[i].memory;
            if let Some(WeightCommand::Absolute(w)) =
                weight_to_write(d.servers[i].desired, Some(weights[i]), p.deadband, false)
            {
                weights[i] = w;
                if t >= 60 {
                    writes += 1;
                }
            }
        }
    }
    assert_eq!(writes, 0, "weights {weights:?}");
    assert_eq!(weights, [100, 50], "the faster provider still weighs more");
}

#[test]
fn latency_weighting_uses_coarse_buckets() {
    let p = PolicyConfig {
        latency_bucket: Duration::from_millis(100),
        ..policy()
    };
    let at = |l: f64| {
        input(Some(Observation {
            latency: Some(l),
            ..healthy()
        }))
    };
    let d = decide(&p, &[at(0.020), at(0.090), at(0.150), at(0.390)], 0.0);
    let w: Vec<_> = d.servers.iter().map(|s| s.desired.unwrap()).collect();
    assert_eq!(
        w,
        vec![100, 100, 50, 25],
        "jitter inside a bucket changes nothing"
    );
    let equal = PolicyConfig {
        weighting: Weighting::Equal,
        ..p
    };
    let d = decide(&equal, &[at(0.020), at(0.390)], 0.0);
    assert!(d.servers.iter().all(|s| s.desired == Some(100)));
}

#[test]
fn a_very_slow_healthy_server_still_gets_weight_one() {
    let p = PolicyConfig {
        max_latency: Duration::from_secs(100),
        ..policy()
    };
    let at = |l: f64| {
        input(Some(Observation {
            latency: Some(l),
            ..healthy()
        }))
    };
    let d = decide(&p, &[at(0.01), at(90.0)], 0.0);
    assert_eq!(d.servers[1].desired, Some(1));
}

#[test]
fn all_bad_fails_open_with_equal_weights() {
    let p = policy();
    let down = input(Some(Observation {
        up: false,
        ..healthy()
    }));
    let lagging = input(Some(Observation {
        block_lag: Some(50.0),
        ..healthy()
    }));
    let d = decide(&p, &[down, lagging], 0.0);
    assert!(d.fail_open);
    assert_eq!(d.servers[0].verdict, Verdict::FailOpen(EjectReason::Down));
    assert_eq!(
        d.servers[1].verdict,
        Verdict::FailOpen(EjectReason::Lagging)
    );
    assert!(d.servers.iter().all(|s| s.desired == Some(100)));
    assert_eq!(
        d.servers[0].memory.ejected,
        Some(EjectReason::Down),
        "still remembered as bad"
    );
}

#[test]
fn a_healthy_server_haproxy_holds_down_does_not_keep_the_backend_open() {
    // p1 is healthy by its probes but DOWN in HAProxy (its health check fails); p2 lags. Taking
    // p2 out would leave HAProxy nothing: fail open instead.
    let p = policy();
    let down_in_haproxy = ServerInput {
        haproxy_up: false,
        ..input(Some(healthy()))
    };
    let lagging = input(Some(Observation {
        block_lag: Some(50.0),
        ..healthy()
    }));
    let d = decide(&p, &[down_in_haproxy, lagging], 0.0);
    assert!(d.fail_open);
    assert_eq!(d.servers[1].desired, Some(100));
    assert_eq!(
        d.servers[1].memory.ejection.count, 0,
        "no escalation while failing open"
    );
    // With p1 UP in HAProxy, p2 is simply ejected.
    let d = decide(&p, &[input(Some(healthy())), lagging], 0.0);
    assert!(!d.fail_open);
    assert_eq!(d.servers[1].desired, Some(0));
    assert_eq!(d.servers[1].memory.ejection.count, 1);
}

#[test]
fn a_holding_server_with_weight_keeps_the_backend_open() {
    let p = policy();
    let down = input(Some(Observation {
        up: false,
        ..healthy()
    }));
    let d = decide(&p, &[down, input(None)], 0.0);
    assert!(
        !d.fail_open,
        "the server without data still carries traffic"
    );
    assert_eq!(d.servers[1].verdict, Verdict::NoData);
    assert_eq!(d.servers[1].desired, None);
    let zero = ServerInput {
        current_weight: Some(0),
        ..input(None)
    };
    assert!(decide(&p, &[down, zero], 0.0).fail_open);
}

#[test]
fn missing_data_holds_and_keeps_memory() {
    let memory = Memory {
        ejected: Some(EjectReason::Slow),
        healthy_streak: 2,
        ..Memory::default()
    };
    let s = ServerInput {
        memory,
        ..input(None)
    };
    let d = decide(&policy(), &[s], 0.0);
    assert_eq!(d.servers[0].verdict, Verdict::NoData);
    assert_eq!(d.servers[0].desired, None);
    assert_eq!(d.servers[0].memory, memory);
    assert!(!d.fail_open);
}

#[test]
fn writes_respect_deadband_and_static_algorithms() {
    use WeightCommand::*;
    assert_eq!(weight_to_write(None, Some(50), 5, false), None);
    assert_eq!(weight_to_write(Some(50), Some(50), 5, false), None);
    assert_eq!(
        weight_to_write(Some(53), Some(50), 5, false),
        None,
        "inside the deadband"
    );
    assert_eq!(
        weight_to_write(Some(55), Some(50), 5, false),
        Some(Absolute(55))
    );
    assert_eq!(
        weight_to_write(Some(0), Some(3), 5, false),
        Some(Absolute(0)),
        "ejection always"
    );
    assert_eq!(
        weight_to_write(Some(2), Some(0), 5, false),
        Some(Absolute(2)),
        "readmission always"
    );
    assert_eq!(weight_to_write(Some(7), None, 5, false), Some(Absolute(7)));
    assert_eq!(
        weight_to_write(Some(40), Some(0), 5, true),
        Some(FullPercent)
    );
    assert_eq!(weight_to_write(Some(40), Some(100), 5, true), None);
    assert_eq!(
        weight_to_write(Some(0), Some(100), 5, true),
        Some(Absolute(0))
    );
    assert_eq!(weight_to_write(Some(0), Some(0), 5, true), None);
}

fn observation() -> impl Strategy<Value = Option<Observation>> {
    let opt = |s: std::ops::Range<f64>| proptest::option::of(s);
    proptest::option::of(
        (
            any::<bool>(),
            proptest::option::of(any::<bool>()),
            opt(0.0..10.0),
            opt(0.0..120.0),
            opt(0.0..3.0),
            opt(0.0..1.0),
        )
            .prop_map(
                |(up, chain_id_ok, block_lag, block_age, latency, error_ratio)| Observation {
                    up,
                    chain_id_ok,
                    block_lag,
                    block_age,
                    latency,
                    error_ratio,
                },
            ),
    )
}

fn server() -> impl Strategy<Value = ServerInput> {
    (
        observation(),
        proptest::option::of(0u32..=256),
        proptest::option::of(proptest::sample::select(EjectReason::ALL.to_vec())),
        0u32..5,
        proptest::option::of(0.0f64..30.0),
        (0u32..40, proptest::option::of(0.0f64..60.0)),
        proptest::option::of((-9.0f64..1.0, 0.0f64..60.0, 1u64..60)),
    )
        .prop_map(
            |(
                observation,
                current_weight,
                ejected,
                healthy_streak,
                ramp_started,
                (count, last_breach),
                latency,
            )| ServerInput {
                observation,
                current_weight,
                memory: Memory {
                    ejected,
                    healthy_streak,
                    ramp_started,
                    ejection: EjectionMemory {
                        count,
                        last_breach,
                        decay_from: last_breach,
                    },
                    latency: latency.map(|(log_mean, at, bucket)| SmoothedLatency {
                        log_mean,
                        at,
                        since: 0.0,
                        bucket,
                    }),
                    ..Memory::default()
                },
                ..input(None)
            },
        )
}

fn any_policy() -> impl Strategy<Value = PolicyConfig> {
    (
        1u32..=256,
        any::<bool>(),
        1u32..5,
        0u64..20,
        0u64..30,
        0u64..60,
    )
        .prop_map(
            |(full_weight, latency, readmit_after, slow, base, smoothing)| PolicyConfig {
                base_ejection: Duration::from_secs(base),
                max_ejection: Duration::from_secs(base * 10),
                latency_smoothing: Duration::from_secs(smoothing),
                full_weight,
                deadband: full_weight / 10,
                weighting: if latency {
                    Weighting::Latency
                } else {
                    Weighting::Equal
                },
                readmit_after,
                slow_start: Duration::from_secs(slow),
                ..PolicyConfig::default()
            },
        )
}

/// The weight a server has after this cycle's writes.
fn final_weight(p: &PolicyConfig, s: &ServerInput, desired: Option<u32>) -> Option<u32> {
    match weight_to_write(desired, s.current_weight, p.deadband, false) {
        Some(WeightCommand::Absolute(w)) => Some(w),
        Some(WeightCommand::FullPercent) => Some(p.full_weight),
        None => s.current_weight,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn weights_stay_in_range(p in any_policy(), servers in prop::collection::vec(server(), 1..8), now in 0.0f64..60.0) {
        for d in decide(&p, &servers, now).servers {
            if let Some(w) = d.desired {
                prop_assert!(w <= 256 && w <= p.full_weight);
            }
        }
    }

    #[test]
    fn a_backend_with_data_never_ends_all_zero(p in any_policy(), servers in prop::collection::vec(server(), 1..8), now in 0.0f64..60.0) {
        prop_assume!(servers.iter().any(|s| s.observation.is_some()));
        let d = decide(&p, &servers, now);
        let carrying = servers.iter().zip(&d.servers).any(|(s, d)| final_weight(&p, s, d.desired).is_none_or(|w| w > 0));
        prop_assert!(carrying, "{:?}", d);
    }

    #[test]
    fn admitted_servers_never_get_zero(p in any_policy(), servers in prop::collection::vec(server(), 1..8), now in 0.0f64..60.0) {
        for d in decide(&p, &servers, now).servers {
            if matches!(d.verdict, Verdict::Healthy | Verdict::SlowStart | Verdict::FailOpen(_)) {
                prop_assert!(d.desired.unwrap_or(0) >= 1, "{:?}", d);
            }
        }
    }

    #[test]
    fn missing_data_never_changes_a_weight(p in any_policy(), servers in prop::collection::vec(server(), 1..8), now in 0.0f64..60.0) {
        let d = decide(&p, &servers, now);
        for (s, d) in servers.iter().zip(&d.servers) {
            if s.observation.is_none() {
                prop_assert_eq!(d.desired, None);
                prop_assert_eq!(d.memory, s.memory);
            }
        }
    }

    #[test]
    fn faster_never_weighs_less(p in any_policy(), latencies in prop::collection::vec(0.0f64..1.4, 2..8)) {
        let p = PolicyConfig { weighting: Weighting::Latency, ..p };
        let servers: Vec<_> = latencies.iter().map(|l| input(Some(Observation { latency: Some(*l), ..healthy() }))).collect();
        let d = decide(&p, &servers, 0.0);
        for (i, a) in latencies.iter().enumerate() {
            for (j, b) in latencies.iter().enumerate() {
                if a < b {
                    prop_assert!(d.servers[i].desired >= d.servers[j].desired, "{a} vs {b}: {:?}", d);
                }
            }
        }
        prop_assert!(d.servers.iter().any(|s| s.desired == Some(p.full_weight)), "the best gets full weight");
    }

    #[test]
    fn an_ejected_server_never_returns_before_its_hold(p in any_policy(), servers in prop::collection::vec(server(), 1..8), now in 0.0f64..120.0) {
        let d = decide(&p, &servers, now);
        for (s, d) in servers.iter().zip(&d.servers) {
            if s.memory.ejected.is_some() && d.verdict == Verdict::SlowStart {
                let at = s.memory.earliest_return(&p).unwrap_or(f64::NEG_INFINITY);
                prop_assert!(now >= at, "returned at {now} before {at}: {:?}", d);
                prop_assert!(s.memory.healthy_streak + 1 >= p.readmit_after);
            }
        }
    }

    #[test]
    fn the_ejection_count_grows_only_on_a_new_ejection(p in any_policy(), servers in prop::collection::vec(server(), 1..8), now in 0.0f64..120.0) {
        let decision = decide(&p, &servers, now);
        for (s, d) in servers.iter().zip(&decision.servers) {
            let (before, after) = (s.memory.ejection.count, d.memory.ejection.count);
            let newly = s.observation.is_some() && s.memory.ejected.is_none() && d.memory.ejected.is_some();
            if newly && !decision.fail_open {
                prop_assert!(after >= 1 && after <= before + 1);
            } else {
                prop_assert!(after <= before, "{before} -> {after}: {:?}", d);
            }
        }
    }

    #[test]
    fn latency_inside_the_hysteresis_band_never_moves_a_weight(
        buckets in prop::collection::vec(1u64..8, 2..5),
        wobble in prop::collection::vec(-0.19f64..0.19, 1..60),
    ) {
        // Each server's latency wanders up to 19 % beyond its bucket's edges.
        let p = PolicyConfig { latency_bucket: Duration::from_millis(50), latency_smoothing: Duration::ZERO, ..policy() };
        let at = |b: u64, w: f64| {
            let size = 0.05;
            let latency = if w >= 0.0 { b as f64 * size * (1.0 + w) } else { (b as f64 - 1.0) * size * (1.0 + w) };
            input(Some(Observation { latency: Some(latency.max(0.001)), ..healthy() }))
        };
        let mut memories: Vec<Memory> = Vec::new();
        let mut first: Option<Vec<Option<u32>>> = None;
        for (t, w) in wobble.iter().enumerate() {
            let mid = |b: u64| input(Some(Observation { latency: Some((b as f64 - 0.5) * 0.05), ..healthy() }));
            let servers: Vec<ServerInput> = buckets.iter().enumerate().map(|(i, b)| {
                let base = if t == 0 { mid(*b) } else { at(*b, *w) };
                ServerInput { memory: memories.get(i).copied().unwrap_or_default(), ..base }
            }).collect();
            let d = decide(&p, &servers, t as f64);
            memories = d.servers.iter().map(|s| s.memory).collect();
            let weights: Vec<Option<u32>> = d.servers.iter().map(|s| s.desired).collect();
            match &first {
                None => first = Some(weights),
                Some(f) => prop_assert_eq!(f, &weights),
            }
        }
    }
}
