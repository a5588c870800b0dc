//! Warm restart on the real `plan()`: memory rebuilt from the actuator's published history (as
//! Prometheus answers it) or, without history, the careful cold start. Cycles run one a second
//! on the policy's clock from 0, as after a restart.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

#[path = "support/show_stat.rs"]
mod show_stat;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use actuator::decision::{EjectReason, Observation, Verdict};
use actuator::gates::breach;
use actuator::haproxy::{BackendStat, WeightWrite};
use actuator::haproxy_write::WeightCommand;
use actuator::observe::{Observations, ProviderKey};
use actuator::plan::{plan, MemoryBook, Plan, PlanInput};
use actuator::prometheus_api::Series;
use actuator::warm_start::{history_query, rebuild, History, Origin, RebuildInput};
use common::config::{ChainConfig, Config};
use proptest::prelude::*;
use show_stat::backend;
use support::healthy;

/// The Unix time "now" at the restart.
const UNIX_NOW: f64 = 1_800_000_000.0;

/// Chain `dev` on backend `rpc`: p1, p2, p3 in tier 1 with `extra` lines under `[policy]` and
/// `providers` lines appended (more providers, limits).
fn chains(policy: &str, providers: &str) -> Vec<ChainConfig> {
    // Defaults for these tests, unless `policy` sets them.
    let defaults: String = ["readmit_after = 2", "slow_start = \"10s\""]
        .iter()
        .filter(|line| !policy.contains(line.split(' ').next().unwrap()))
        .map(|line| format!("{line}\n"))
        .collect();
    let text = format!(
        "[policy]\n{defaults}{policy}\n\
         [[chain]]\nname = \"dev\"\nchain_id = 1\nbackend = \"rpc\"\n\
         [[chain.provider]]\nname = \"p1\"\nurl = \"http://127.0.0.1:1\"\n\
         [[chain.provider]]\nname = \"p2\"\nurl = \"http://127.0.0.1:2\"\n\
         [[chain.provider]]\nname = \"p3\"\nurl = \"http://127.0.0.1:3\"\n{providers}"
    );
    Config::parse(Path::new("t.toml"), &text, |_| None)
        .unwrap()
        .chains
}

fn haproxy(servers: &[(&str, u32)]) -> BTreeMap<String, BackendStat> {
    BTreeMap::from([("rpc".to_owned(), backend("roundrobin", servers))])
}

/// One series as a range query returns it: `name{backend="rpc",server,extra labels}` with
/// points at `times` (Unix seconds) of `value`.
fn series(name: &str, server: &str, extra: &[(&str, &str)], times: &[f64], value: f64) -> Series {
    let mut labels = BTreeMap::from([
        ("__name__".to_owned(), name.to_owned()),
        ("backend".to_owned(), "rpc".to_owned()),
        ("server".to_owned(), server.to_owned()),
        ("job".to_owned(), "ethrpc-actuator".to_owned()),
    ]);
    for (k, v) in extra {
        labels.insert(k.to_string(), v.to_string());
    }
    Series {
        labels,
        points: times.iter().map(|t| (*t, value)).collect(),
    }
}

/// What an actuator last published of `server` at `at`: weight, ejections, ejected reason (or
/// none), standby; `more` adds series ending at `at` too.
fn published(
    server: &str,
    at: f64,
    weight: f64,
    ejections: f64,
    ejected: Option<EjectReason>,
    more: &[(&str, f64)],
) -> Vec<Series> {
    let t = [at - 2.0, at - 1.0, at];
    let mut out = vec![
        series("ethrpc_actuator_weight", server, &[], &t, weight),
        series(
            "ethrpc_actuator_recent_ejections",
            server,
            &[],
            &t,
            ejections,
        ),
        series("ethrpc_actuator_standby", server, &[], &t, 0.0),
    ];
    for reason in EjectReason::ALL {
        let on = f64::from(u8::from(ejected == Some(reason)));
        let labels = [("reason", reason.as_str())];
        out.push(series("ethrpc_actuator_ejected", server, &labels, &t, on));
    }
    for (name, value) in more {
        out.push(series(name, server, &[], &t, *value));
    }
    out
}

/// Runs cycles of one second from the restart's memory; `observe(t)` gives each provider's
/// observation at `t`. Returns the writes of each cycle, HAProxy updated as they are applied.
struct Run {
    chains: Vec<ChainConfig>,
    haproxy: BTreeMap<String, BackendStat>,
    memory: MemoryBook,
}

impl Run {
    fn start(
        chains: Vec<ChainConfig>,
        haproxy: BTreeMap<String, BackendStat>,
        history: Option<&History>,
    ) -> (Self, BTreeMap<(String, String), Origin>) {
        let rebuilt = rebuild(&RebuildInput {
            chains: &chains,
            haproxy: &haproxy,
            history,
            now: 0.0,
            unix_now: UNIX_NOW,
            ceiling_for: 10.0,
        });
        let run = Self {
            chains,
            haproxy,
            memory: rebuilt.memory,
        };
        (run, rebuilt.origins)
    }

    fn cycle(&mut self, now: f64, observe: impl Fn(&str) -> Option<Observation>) -> Plan {
        let mut observations = Observations::default();
        for p in &self.chains[0].providers {
            if let Some(o) = observe(p.name.as_str()) {
                observations.insert(ProviderKey::new("dev", p.name.as_str()), o);
            }
        }
        let p = plan(&PlanInput {
            chains: &self.chains,
            observations: &observations,
            haproxy: &self.haproxy,
            memory: &self.memory,
            static_backends: &HashSet::new(),
            now,
            signal_window: 3.0,
        });
        for WeightWrite { server, weight, .. } in &p.writes {
            let WeightCommand::Absolute(w) = weight else {
                panic!("roundrobin takes absolute weights")
            };
            let stat = self.haproxy.get_mut("rpc").unwrap();
            stat.servers.get_mut(server).unwrap().weight = *w;
        }
        self.memory = p.memory.clone();
        p
    }

    fn weight(&self, server: &str) -> u32 {
        self.haproxy["rpc"].servers[server].weight
    }
}

fn erroring() -> Observation {
    Observation {
        error_ratio: Some(1.0),
        ..healthy()
    }
}

/// The history of p2 ejected as erroring (`ejections`, back `returns_in` seconds after the
/// restart at the earliest), p1 and p3 in the pool, as scraped a second before the restart.
fn p2_held_out(ejections: f64, returns_in: f64) -> History {
    let last_scrape = UNIX_NOW - 1.0;
    let mut answer = published("p1", last_scrape, 100.0, 0.0, None, &[]);
    answer.extend(published("p3", last_scrape, 100.0, 0.0, None, &[]));
    answer.extend(published(
        "p2",
        last_scrape,
        0.0,
        ejections,
        Some(EjectReason::Erroring),
        &[(
            "ethrpc_actuator_earliest_return_timestamp_seconds",
            UNIX_NOW + returns_in,
        )],
    ));
    History::from_series(&answer)
}

/// p2 ejected 11 s before the restart with a 30 s hold: out until the hold ends, then
/// readmitted (two healthy cycles) and back through slow start.
#[test]
fn a_restart_during_a_hold_keeps_the_server_out_until_it_ends() {
    let history = p2_held_out(1.0, 19.0);
    let (mut run, origins) = Run::start(
        chains("base_ejection = \"30s\"", ""),
        haproxy(&[("p1", 100), ("p2", 0), ("p3", 100)]),
        Some(&history),
    );
    assert!(origins.values().all(|o| *o == Origin::History));
    let mut seen = vec![(0.0, 0)];
    for t in 0..40 {
        let t = f64::from(t);
        let p = run.cycle(t, |_| Some(healthy()));
        if run.weight("p2") != seen.last().unwrap().1 {
            seen.push((t, run.weight("p2")));
        }
        if t < 19.0 {
            let p2 = &p.report.backends[0].servers[1];
            assert!(p2.returns_in.is_some_and(|r| (r - (19.0 - t)).abs() < 1e-6));
        }
    }
    eprintln!("p2 after the restart (second, weight): {seen:?}");
    assert_eq!(seen[1].0, 19.0, "out until the hold ends: {seen:?}");
    assert_eq!(seen[1].1, 10, "slow start from a tenth: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "{seen:?}");
    assert_eq!(seen.last().unwrap().1, 100);
}

/// The flapper held out across the restart: its weight does not move while it flaps.
#[test]
fn a_restart_mid_flap_keeps_the_flapper_out() {
    let history = p2_held_out(3.0, 14.0);
    let (mut run, _) = Run::start(
        chains("base_ejection = \"5s\"\nmax_ejection = \"60s\"", ""),
        haproxy(&[("p1", 100), ("p2", 0), ("p3", 100)]),
        Some(&history),
    );
    let mut changes = 0;
    for t in 0..120 {
        // 5 s on, 5 s off, from the restart on.
        let bad = (t / 5) % 2 == 0;
        let p = run.cycle(f64::from(t), |name| {
            Some(if name == "p2" && bad {
                erroring()
            } else {
                healthy()
            })
        });
        changes += p.writes.iter().filter(|w| w.server == "p2").count();
    }
    eprintln!("flapper's weight changes over 120 s after the restart: {changes}");
    assert_eq!(changes, 0);
    assert_eq!(run.weight("p2"), 0);
}

/// Without history (Prometheus down, or a first start), a server at 0 is taken as just ejected.
#[test]
fn a_cold_server_at_zero_returns_through_readmission_and_slow_start() {
    let (mut run, origins) = Run::start(
        chains("", ""),
        haproxy(&[("p1", 100), ("p2", 0), ("p3", 100)]),
        None,
    );
    assert!(origins.values().all(|o| *o == Origin::Cold));
    let mut weights = Vec::new();
    for t in 0..15 {
        let p = run.cycle(f64::from(t), |_| Some(healthy()));
        if t == 0 {
            let p2 = &p.report.backends[0].servers[1];
            assert_eq!(
                p2.verdict,
                Verdict::Readmitting {
                    reason: EjectReason::Restart,
                    streak: 1
                }
            );
        }
        weights.push(run.weight("p2"));
    }
    eprintln!("cold p2 at 0, healthy: {weights:?}");
    assert_eq!(&weights[..2], [0, 10], "readmit_after 2, then slow start");
    assert!(weights.windows(2).all(|w| w[0] <= w[1]), "{weights:?}");
    assert_eq!(weights.last(), Some(&100));
}

/// History from before the last write: HAProxy has the server at 0, the history in the pool.
#[test]
fn a_server_at_zero_that_history_has_in_the_pool_is_readmitted() {
    let history = History::from_series(&published("p2", UNIX_NOW - 1.0, 100.0, 0.0, None, &[]));
    let (mut run, _) = Run::start(
        chains("", ""),
        haproxy(&[("p1", 100), ("p2", 0), ("p3", 100)]),
        Some(&history),
    );
    run.cycle(0.0, |_| Some(healthy()));
    assert_eq!(run.weight("p2"), 0);
    run.cycle(1.0, |_| Some(healthy()));
    assert_eq!(run.weight("p2"), 10);
}

const RESERVE: &str = "[[chain.provider]]\nname = \"r1\"\nurl = \"http://127.0.0.1:9\"\ntier = 2\n";

/// [`chains`] with the reserve, tier 1 limited to 50 requests per second each: without a
/// measured demand, tier 1 cannot be shown to cover it.
fn limited_with_reserve() -> Vec<ChainConfig> {
    chains("", RESERVE)
        .into_iter()
        .map(|mut c| {
            for p in c.providers.iter_mut().filter(|p| p.tier.get() == 1) {
                p.max_rps = Some(50.0);
            }
            c
        })
        .collect()
}

/// A cold start keeps the tier HAProxy shows: a reserve at 0 stands by.
#[test]
fn a_cold_start_does_not_bring_a_reserve_in() {
    let (mut run, _) = Run::start(
        limited_with_reserve(),
        haproxy(&[("p1", 100), ("p2", 100), ("p3", 100), ("r1", 0)]),
        None,
    );
    for t in 0..5 {
        let p = run.cycle(f64::from(t), |_| Some(healthy()));
        let b = &p.report.backends[0];
        assert_eq!(b.tier.map(|t| t.get()), Some(1));
        assert_eq!(b.servers[3].verdict, Verdict::Standby);
        assert!(p.writes.is_empty(), "{:?}", p.writes);
    }
    // Without the rebuild (the old cold start), the reserve came in at once.
    let chains = limited_with_reserve();
    let stat = haproxy(&[("p1", 100), ("p2", 100), ("p3", 100), ("r1", 0)]);
    let mut observations = Observations::default();
    for p in ["p1", "p2", "p3", "r1"] {
        observations.insert(ProviderKey::new("dev", p), healthy());
    }
    let old = plan(&PlanInput {
        chains: &chains,
        observations: &observations,
        haproxy: &stat,
        memory: &MemoryBook::new(),
        static_backends: &HashSet::new(),
        now: 0.0,
        signal_window: 3.0,
    });
    assert_eq!(old.report.backends[0].tier.map(|t| t.get()), Some(2));
}

/// A cold start keeps a reserve that carries traffic (the tier HAProxy shows is in use).
#[test]
fn a_cold_start_keeps_a_reserve_in_use() {
    let (mut run, _) = Run::start(
        limited_with_reserve(),
        haproxy(&[("p1", 0), ("p2", 0), ("p3", 100), ("r1", 100)]),
        None,
    );
    let p = run.cycle(0.0, |_| Some(healthy()));
    let b = &p.report.backends[0];
    assert_eq!(b.tier.map(|t| t.get()), Some(2));
    assert_eq!(run.weight("r1"), 100);
    assert_eq!((run.weight("p1"), run.weight("p2")), (0, 0), "readmitting");
}

/// A server capped at 27 by its plan is not lifted before the demand is measured.
#[test]
fn a_cap_is_not_lifted_without_a_demand() {
    let limited = chains("", "")
        .into_iter()
        .map(|mut c| {
            c.providers[0].max_rps = Some(4.0);
            c
        })
        .collect();
    let (mut run, _) = Run::start(
        limited,
        haproxy(&[("p1", 27), ("p2", 100), ("p3", 100)]),
        None,
    );
    for t in 0..9 {
        run.cycle(f64::from(t), |_| Some(healthy()));
        assert_eq!(run.weight("p1"), 27, "at {t}s");
    }
    // The ceiling waits `ceiling_for` at most (here no counters ever measure a demand).
    run.cycle(11.0, |_| Some(healthy()));
    assert_eq!(run.weight("p1"), 100);
}

/// Latency weights, slow start and learned limits come back as they were published.
#[test]
fn latency_slow_start_and_learned_limits_are_rebuilt() {
    let at = UNIX_NOW - 1.0;
    let mut answer = published(
        "p1",
        at,
        100.0,
        0.0,
        None,
        &[
            ("ethrpc_actuator_weighed_latency_seconds", 0.04),
            ("ethrpc_actuator_latency_bucket", 1.0),
        ],
    );
    // p2 at 50 in its bucket 2, though its average (0.055) is near bucket 1: hysteresis kept.
    answer.extend(published(
        "p2",
        at,
        50.0,
        0.0,
        None,
        &[
            ("ethrpc_actuator_weighed_latency_seconds", 0.055),
            ("ethrpc_actuator_latency_bucket", 2.0),
        ],
    ));
    // p3 ramping for 5 s of its 10 s slow start, and limited to 3 req/s learned from 429s.
    answer.extend(published(
        "p3",
        at,
        50.0,
        0.0,
        None,
        &[
            ("ethrpc_actuator_weighed_latency_seconds", 0.04),
            ("ethrpc_actuator_latency_bucket", 1.0),
            (
                "ethrpc_actuator_slow_start_started_timestamp_seconds",
                UNIX_NOW - 5.0,
            ),
            ("ethrpc_actuator_limit_requests_per_second", 3.0),
        ],
    ));
    let history = History::from_series(&answer);
    let (mut run, _) = Run::start(
        chains("weighting = \"latency\"\nlatency_bucket = \"50ms\"", ""),
        haproxy(&[("p1", 100), ("p2", 50), ("p3", 50)]),
        Some(&history),
    );
    let m = |s: &str| {
        run.memory.servers[&actuator::plan::ServerKey {
            backend: common::config::Name::parse("rpc").unwrap(),
            server: common::config::Name::parse(s).unwrap(),
        }]
    };
    let p3 = m("p3");
    assert_eq!(p3.ramp_started, Some(-5.0));
    assert_eq!(
        p3.learned_limit.map(|l| (l.rps, l.since)),
        Some((Some(3.0), -1.0))
    );
    assert!(
        p3.ceiling.is_some(),
        "a learned limit keeps the weight until a demand"
    );
    assert_eq!(m("p2").latency.map(|l| l.bucket), Some(2));
    let p = run.cycle(0.0, |name| {
        let latency = if name == "p2" { 0.055 } else { 0.04 };
        Some(Observation {
            latency: Some(latency),
            ..healthy()
        })
    });
    let desired: Vec<Option<u32>> = p.report.backends[0]
        .servers
        .iter()
        .map(|s| s.desired)
        .collect();
    assert_eq!(desired, [Some(100), Some(50), Some(50)], "nothing moves");
    assert!(p.writes.is_empty(), "{:?}", p.writes);
}

/// Only what was present in the actuator's last scrape counts; of two actuators (two HAProxy
/// instances), the one whose last weight is HAProxy's.
#[test]
fn history_keeps_the_last_scrape_and_the_matching_actuator() {
    let mut answer = published("p2", UNIX_NOW - 1.0, 100.0, 2.0, None, &[]);
    // A return time from an ejection that ended: not in the last scrape.
    answer.push(series(
        "ethrpc_actuator_earliest_return_timestamp_seconds",
        "p2",
        &[],
        &[UNIX_NOW - 60.0],
        UNIX_NOW + 100.0,
    ));
    let mut other = published("p2", UNIX_NOW - 0.5, 0.0, 1.0, Some(EjectReason::Down), &[]);
    for s in &mut other {
        s.labels.insert("instance".into(), "haproxy-b:9788".into());
    }
    answer.extend(other);
    let history = History::from_series(&answer);
    let a = history.server("rpc", "p2", 100).unwrap();
    assert_eq!(
        (a.weight, a.earliest_return, a.ejected),
        (Some(100.0), None, None)
    );
    let b = history.server("rpc", "p2", 0).unwrap();
    assert_eq!(b.ejected, Some(EjectReason::Down));
    assert_eq!(
        history.server("rpc", "p2", 37).unwrap().at,
        UNIX_NOW - 0.5,
        "no match: the latest"
    );
    assert!(history.server("rpc", "p1", 100).is_none());
}

#[test]
fn the_history_query_selects_the_backends_by_exact_name() {
    let q = history_query(["rpc", "a.b"]);
    assert!(
        q.starts_with("{__name__=~\"ethrpc_actuator_(weight|"),
        "{q}"
    );
    assert!(q.ends_with(",backend=~\"rpc|a\\\\.b\"}"), "{q}");
}

fn observation() -> impl Strategy<Value = Option<Observation>> {
    proptest::option::of(
        (any::<bool>(), 0.0..20.0f64, 0.0..3.0f64, 0.0..1.0f64).prop_map(
            |(up, lag, latency, errors)| Observation {
                up,
                block_lag: Some(lag),
                latency: Some(latency),
                error_ratio: Some(errors),
                ..healthy()
            },
        ),
    )
}

proptest! {
    /// Cold, any observations, any weights: a server at 0 never gets more than a tenth of its
    /// full weight in the first cycle, a reserve at 0 never comes in while a healthy tier-1
    /// server carries,
    /// and a limited server never goes above its weight (failing open aside: then all share).
    #[test]
    fn a_cold_first_cycle_is_careful(
        weights in proptest::collection::vec(prop_oneof![Just(0u32), 1u32..=100], 4),
        observations in proptest::collection::vec(observation(), 4),
        readmit_after in 1u32..4,
        limited in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let policy = format!("readmit_after = {readmit_after}");
        let chains: Vec<ChainConfig> = chains(&policy, RESERVE)
            .into_iter()
            .map(|mut c| {
                for (p, l) in c.providers.iter_mut().zip(&limited) {
                    p.max_rps = l.then_some(5.0);
                }
                c
            })
            .collect();
        let names = ["p1", "p2", "p3", "r1"];
        let servers: Vec<(&str, u32)> = names.iter().copied().zip(weights.iter().copied()).collect();
        let policy = chains[0].policy.clone();
        let (mut run, _) = Run::start(chains, haproxy(&servers), None);
        // A tier-1 server carries traffic and passes every gate: tier 1 serves. (One without
        // data, or bad, is not available, and the reserve comes in, cold or not.)
        let lower_carries = (0..3).any(|i| {
            weights[i] > 0 && observations[i].is_some_and(|o| breach(&policy, &o).is_none())
        });
        let p = run.cycle(0.0, |name| {
            let i = names.iter().position(|n| *n == name).unwrap();
            observations[i]
        });
        let b = &p.report.backends[0];
        for (i, s) in b.servers.iter().enumerate() {
            let after = run.weight(names[i]);
            if b.fail_open && matches!(s.verdict, Verdict::FailOpen(_)) {
                continue;
            }
            // The reserve at 0 while tier 1 carries stands by (it is not taken for ejected):
            // should tier 1 fall short, it comes in as a standby server does, at its weight.
            let standing_by = i == 3 && weights[..3].iter().any(|w| *w > 0);
            if weights[i] == 0 && !standing_by {
                prop_assert!(after <= 10, "{} from 0 to {after}: {:?}", names[i], s.verdict);
            }
            if i == 3 && weights[3] == 0 && lower_carries {
                prop_assert_eq!(after, 0, "reserve brought in: {:?}", s.verdict);
            }
            if limited[i] {
                prop_assert!(after <= weights[i], "{} lifted from {} to {after}", names[i], weights[i]);
            }
        }
    }
}

fn any_series() -> impl Strategy<Value = Series> {
    let names = prop_oneof![
        Just("ethrpc_actuator_weight"),
        Just("ethrpc_actuator_recent_ejections"),
        Just("ethrpc_actuator_earliest_return_timestamp_seconds"),
        Just("ethrpc_actuator_ejected"),
        Just("ethrpc_actuator_standby"),
        Just("ethrpc_actuator_limit_requests_per_second"),
        Just("ethrpc_actuator_weighed_latency_seconds"),
        Just("ethrpc_actuator_latency_bucket"),
        Just("ethrpc_actuator_slow_start_started_timestamp_seconds"),
        Just("other"),
    ];
    let value = prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        -1e12..1e12f64
    ];
    (
        names,
        prop_oneof![Just("p1"), Just("p2"), Just("r1")],
        proptest::option::of(prop_oneof![Just("down"), Just("restart"), Just("nonsense")]),
        any::<bool>(),
        proptest::collection::vec((UNIX_NOW - 900.0..UNIX_NOW + 10.0, value), 0..4),
    )
        .prop_map(|(name, server, reason, labelled, points)| {
            let mut labels = BTreeMap::from([("__name__".to_owned(), name.to_owned())]);
            if labelled {
                labels.insert("backend".into(), "rpc".into());
                labels.insert("server".into(), server.into());
            }
            if let Some(r) = reason {
                labels.insert("reason".into(), r.into());
            }
            Series { labels, points }
        })
}

proptest! {
    /// Whatever Prometheus answers, the rebuild neither panics nor yields an unusable memory:
    /// the first cycle still decides a weight within 0..=full for every server it judges.
    #[test]
    fn any_history_rebuilds_without_panic(
        answer in proptest::collection::vec(any_series(), 0..40),
        weights in proptest::collection::vec(0u32..=256, 4),
    ) {
        let history = History::from_series(&answer);
        let names = ["p1", "p2", "p3", "r1"];
        let servers: Vec<(&str, u32)> = names.iter().copied().zip(weights).collect();
        let (mut run, _) = Run::start(chains("", RESERVE), haproxy(&servers), Some(&history));
        let p = run.cycle(0.0, |_| Some(healthy()));
        for s in &p.report.backends[0].servers {
            prop_assert!(s.desired.is_none_or(|w| w <= 100), "{s:?}");
        }
    }
}
