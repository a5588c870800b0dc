//! The policy, rule by rule, and its invariants over random observations.

use std::time::Duration;

use actuator::policy::{
    breach, decide, weight_to_write, EjectReason, Memory, Observation, ServerInput, Verdict,
    WeightCommand,
};
use common::config::{PolicyConfig, Weighting};
use proptest::prelude::*;

fn policy() -> PolicyConfig {
    PolicyConfig::default()
}

fn healthy() -> Observation {
    Observation {
        up: true,
        chain_id_ok: Some(true),
        block_lag: Some(0.0),
        block_age: Some(1.0),
        latency: Some(0.05),
        error_ratio: Some(0.0),
    }
}

fn input(observation: Option<Observation>) -> ServerInput {
    ServerInput {
        observation,
        current_weight: Some(100),
        memory: Memory::default(),
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

#[test]
fn latency_weighting_uses_coarse_buckets() {
    let p = policy(); // 100 ms buckets
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
        ..policy()
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
        ramp_started: None,
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
    )
        .prop_map(
            |(observation, current_weight, ejected, healthy_streak, ramp_started)| ServerInput {
                observation,
                current_weight,
                memory: Memory {
                    ejected,
                    healthy_streak,
                    ramp_started,
                },
            },
        )
}

fn any_policy() -> impl Strategy<Value = PolicyConfig> {
    (1u32..=256, any::<bool>(), 1u32..5, 0u64..20).prop_map(
        |(full_weight, latency, readmit_after, slow)| PolicyConfig {
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
}
