//! The planning step without Prometheus or HAProxy: the join of providers and servers, static
//! backends, fail open per backend, and memory carried between cycles.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

#[path = "support/show_stat.rs"]
mod show_stat;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use actuator::client_signal::ClientCounters;
use actuator::decision::{EjectReason, Observation, Verdict};
use actuator::haproxy::{BackendStat, WeightWrite};
use actuator::haproxy_write::WeightCommand;
use actuator::observe::{Observations, ProviderKey};
use actuator::plan::{plan, MemoryBook, Plan, PlanInput};
use common::config::{ChainConfig, Config};
use show_stat::backend;
use support::healthy;

/// Two chains: `a` (backend `ba`, providers p1 p2 p3) and `b` (backend `bb`, provider q1 on
/// server `sq`).
fn chains() -> Vec<ChainConfig> {
    let text = "[[chain]]\nname = \"a\"\nchain_id = 1\nbackend = \"ba\"\nweighting = \"equal\"\n\
        [[chain.provider]]\nname = \"p1\"\nurl = \"http://127.0.0.1:1\"\n\
        [[chain.provider]]\nname = \"p2\"\nurl = \"http://127.0.0.1:2\"\n\
        [[chain.provider]]\nname = \"p3\"\nurl = \"http://127.0.0.1:3\"\n\
        [[chain]]\nname = \"b\"\nchain_id = 2\nbackend = \"bb\"\n\
        [[chain.provider]]\nname = \"q1\"\nserver = \"sq\"\nurl = \"http://127.0.0.1:4\"\n";
    Config::parse(Path::new("t.toml"), text, |_| None)
        .unwrap()
        .chains
}

fn down() -> Observation {
    Observation {
        up: false,
        ..healthy()
    }
}

struct Case {
    observations: Vec<(&'static str, &'static str, Observation)>,
    haproxy: Vec<(&'static str, BackendStat)>,
    static_backends: Vec<&'static str>,
}

fn run(case: &Case, memory: &MemoryBook, now: f64) -> Plan {
    let chains = chains();
    let mut observations = Observations::default();
    for (chain, provider, o) in &case.observations {
        observations.insert(ProviderKey::new(chain, provider), *o);
    }
    let haproxy: BTreeMap<String, BackendStat> = case
        .haproxy
        .iter()
        .map(|(name, stat)| (name.to_string(), stat.clone()))
        .collect();
    let static_backends: HashSet<String> =
        case.static_backends.iter().map(|s| s.to_string()).collect();
    plan(&PlanInput {
        chains: &chains,
        observations: &observations,
        haproxy: &haproxy,
        memory,
        static_backends: &static_backends,
        now,
        signal_window: 3.0,
    })
}

fn write(backend: &str, server: &str, weight: WeightCommand) -> WeightWrite {
    WeightWrite {
        backend: backend.into(),
        server: server.into(),
        weight,
    }
}

#[test]
fn each_provider_meets_its_own_server_and_only_changes_are_written() {
    let case = Case {
        observations: vec![
            ("a", "p1", healthy()),
            ("a", "p2", down()),
            ("a", "p3", healthy()),
            ("b", "q1", healthy()),
        ],
        haproxy: vec![
            (
                "ba",
                backend("roundrobin", &[("p1", 100), ("p2", 100), ("p3", 40)]),
            ),
            ("bb", backend("roundrobin", &[("sq", 100)])),
        ],
        static_backends: vec![],
    };
    let p = run(&case, &MemoryBook::new(), 0.0);
    assert_eq!(
        p.writes,
        vec![
            write("ba", "p2", WeightCommand::Absolute(0)),
            write("ba", "p3", WeightCommand::Absolute(100)),
        ]
    );
    let a = &p.report.backends[0];
    assert_eq!(a.servers[1].verdict, Verdict::Ejected(EjectReason::Down));
    assert_eq!(a.servers[1].ejections, 1);
    assert!(a.servers[1].returns_in.is_some());
    let b = &p.report.backends[1];
    assert_eq!(
        (b.servers[0].provider.as_str(), b.servers[0].server.as_str()),
        ("q1", "sq")
    );
    assert_eq!(b.servers[0].verdict, Verdict::Healthy);
    assert_eq!(p.memory.len(), 4);
}

#[test]
fn servers_missing_on_either_side_are_reported_and_left_alone() {
    let mut stat = backend(
        "roundrobin",
        &[("p1", 100), ("p2", 100), ("extra", 100), ("p2-backup", 100)],
    );
    if let Some(s) = stat.servers.get_mut("p2-backup") {
        s.backup = true;
    }
    let case = Case {
        observations: vec![("a", "p1", down()), ("a", "p2", healthy())],
        haproxy: vec![("ba", stat)],
        static_backends: vec![],
    };
    let p = run(&case, &MemoryBook::new(), 0.0);
    let a = &p.report.backends[0];
    assert_eq!(a.not_configured, vec!["extra".to_owned()]);
    assert_eq!(
        a.backups,
        vec!["p2-backup".to_owned()],
        "an HAProxy backup entry is its own last resort, not a mismatch"
    );
    assert!(!p.writes.iter().any(|w| w.server == "p2-backup"));
    assert!(!a.servers[2].in_haproxy, "p3 has no server");
    assert_eq!(a.servers[2].verdict, Verdict::NoData);
    assert_eq!(
        p.writes,
        vec![write("ba", "p1", WeightCommand::Absolute(0))]
    );
    // Backend `bb` is not in HAProxy at all: reported, nothing written.
    let b = &p.report.backends[1];
    assert!(b.algorithm.is_empty() && !b.servers[0].in_haproxy);
    assert_eq!(
        b.without_data(),
        0,
        "a server HAProxy lacks is not a held server"
    );
}

#[test]
fn a_reserve_without_a_backup_twin_at_its_address_is_warned_of() {
    // p1 primary, p2 and p3 reserves; HAProxy has a backup entry at p2's address only.
    let text = "[[chain]]\nname = \"a\"\nchain_id = 1\nbackend = \"ba\"\n\
        [[chain.provider]]\nname = \"p1\"\nurl = \"http://127.0.0.1:1\"\n\
        [[chain.provider]]\nname = \"p2\"\nurl = \"http://127.0.0.1:2\"\ntier = 2\n\
        [[chain.provider]]\nname = \"p3\"\nurl = \"http://127.0.0.1:3\"\ntier = 3\n";
    let chains = Config::parse(Path::new("t.toml"), text, |_| None)
        .unwrap()
        .chains;
    let servers = [
        ("p1", "10.0.0.1:1", false),
        ("p2", "10.0.0.2:2", false),
        ("p3", "10.0.0.3:3", false),
        ("p2-backup", "10.0.0.2:2", true),
        ("elsewhere", "10.0.0.9:9", true),
    ];
    let reserves_without_backup = |addresses: bool, backups: bool| {
        let mut stat = backend(
            "roundrobin",
            &servers.map(|(name, _, backup)| (name, if backup { 100 } else { 0 })),
        );
        for (name, address, backup) in servers {
            let s = stat.servers.get_mut(name).unwrap();
            s.backup = backup;
            s.address = addresses.then(|| address.to_owned());
        }
        if !backups {
            stat.servers.retain(|_, s| !s.backup);
        }
        let haproxy = BTreeMap::from([("ba".to_owned(), stat)]);
        let p = plan(&PlanInput {
            chains: &chains,
            observations: &Observations::default(),
            haproxy: &haproxy,
            memory: &MemoryBook::new(),
            static_backends: &HashSet::new(),
            now: 0.0,
            signal_window: 3.0,
        });
        p.report.backends[0].reserves_without_backup.clone()
    };
    assert_eq!(
        reserves_without_backup(true, true),
        vec!["p3".to_owned()],
        "p2's twin is at its address; the other backup is not p3's"
    );
    assert_eq!(
        reserves_without_backup(true, false),
        vec!["p2".to_owned(), "p3".to_owned()]
    );
    assert!(
        reserves_without_backup(false, true).is_empty(),
        "without addresses any backup entry counts"
    );
}

#[test]
fn missing_data_holds_and_is_counted() {
    let case = Case {
        observations: vec![("a", "p1", healthy())],
        haproxy: vec![(
            "ba",
            backend("roundrobin", &[("p1", 100), ("p2", 7), ("p3", 0)]),
        )],
        static_backends: vec![],
    };
    let p = run(&case, &MemoryBook::new(), 0.0);
    assert!(p.writes.is_empty(), "{:?}", p.writes);
    assert_eq!(p.report.backends[0].without_data(), 2);
}

#[test]
fn static_backends_take_only_on_and_off() {
    let case = Case {
        observations: vec![
            ("a", "p1", down()),
            ("a", "p2", healthy()),
            ("a", "p3", healthy()),
        ],
        haproxy: vec![(
            "ba",
            backend("static-rr", &[("p1", 100), ("p2", 0), ("p3", 100)]),
        )],
        static_backends: vec![],
    };
    let p = run(&case, &MemoryBook::new(), 0.0);
    assert!(p.report.backends[0].static_algorithm);
    assert_eq!(
        p.writes,
        vec![
            write("ba", "p1", WeightCommand::Absolute(0)),
            write("ba", "p2", WeightCommand::FullPercent),
        ]
    );
    // A backend HAProxy refused a weight for earlier (e.g. `source` hashing) is treated alike.
    let learned = Case {
        haproxy: vec![(
            "ba",
            backend("source", &[("p1", 100), ("p2", 0), ("p3", 100)]),
        )],
        static_backends: vec!["ba"],
        ..case
    };
    assert_eq!(run(&learned, &MemoryBook::new(), 0.0).writes.len(), 2);
}

#[test]
fn fail_open_is_decided_per_backend() {
    let case = Case {
        observations: vec![
            ("a", "p1", down()),
            ("a", "p2", down()),
            ("a", "p3", down()),
            ("b", "q1", healthy()),
        ],
        haproxy: vec![
            (
                "ba",
                backend("roundrobin", &[("p1", 100), ("p2", 100), ("p3", 100)]),
            ),
            ("bb", backend("roundrobin", &[("sq", 100)])),
        ],
        static_backends: vec![],
    };
    let p = run(&case, &MemoryBook::new(), 0.0);
    assert!(p.report.backends[0].fail_open);
    assert!(!p.report.backends[1].fail_open);
    assert!(p.writes.is_empty(), "all keep full weight: {:?}", p.writes);
}

#[test]
fn memory_carries_an_ejection_into_the_next_cycle() {
    let mut case = Case {
        observations: vec![
            ("a", "p1", down()),
            ("a", "p2", healthy()),
            ("a", "p3", healthy()),
        ],
        haproxy: vec![(
            "ba",
            backend("roundrobin", &[("p1", 100), ("p2", 100), ("p3", 100)]),
        )],
        static_backends: vec![],
    };
    let first = run(&case, &MemoryBook::new(), 0.0);
    case.observations[0].2 = healthy();
    case.haproxy = vec![(
        "ba",
        backend("roundrobin", &[("p1", 0), ("p2", 100), ("p3", 100)]),
    )];
    let second = run(&case, &first.memory, 1.0);
    let p1 = &second.report.backends[0].servers[0];
    assert!(
        matches!(p1.verdict, Verdict::Readmitting { streak: 1, .. }),
        "{:?}",
        p1.verdict
    );
    assert!(second.writes.is_empty(), "stays at 0 while readmitting");
    // Without the memory the same observation would put it straight back.
    let forgetful = run(&case, &MemoryBook::new(), 1.0);
    assert_eq!(
        forgetful.report.backends[0].servers[0].verdict,
        Verdict::Healthy
    );
}

/// Backend `ba` with every server at weight 100 and `lbtot` = `selected`, `hrsp_5xx` = `failed`.
fn with_counters(selected: [u64; 3], failed: [u64; 3]) -> Case {
    let mut stat = backend("roundrobin", &[("p1", 100), ("p2", 100), ("p3", 100)]);
    for ((server, selected), failed) in ["p1", "p2", "p3"].iter().zip(selected).zip(failed) {
        if let Some(s) = stat.servers.get_mut(*server) {
            s.counters = Some(ClientCounters {
                selected,
                server_errors: failed,
                ..Default::default()
            });
        }
    }
    Case {
        observations: vec![
            ("a", "p1", healthy()),
            ("a", "p2", healthy()),
            ("a", "p3", healthy()),
        ],
        haproxy: vec![("ba", stat)],
        static_backends: vec![],
    }
}

#[test]
fn haproxy_counters_carried_between_cycles_give_the_demand_and_what_clients_see() {
    let first = run(
        &with_counters([100, 100, 100], [0, 0, 0]),
        &MemoryBook::new(),
        0.0,
    );
    assert_eq!(
        first.report.backends[0].demand, None,
        "one snapshot is no rate"
    );
    // Two seconds later: 20 requests each, p2 failed 10 of its 20.
    let second = run(
        &with_counters([120, 120, 120], [0, 10, 0]),
        &first.memory,
        2.0,
    );
    let b = &second.report.backends[0];
    assert_eq!(b.demand, Some(30.0));
    assert_eq!(
        b.servers[1].clients.and_then(|c| c.failed_ratio()),
        Some(0.5)
    );
    assert_eq!(
        b.servers[1].verdict,
        Verdict::Ejected(EjectReason::ClientErrors),
        "half its clients fail while its probes pass"
    );
    assert!(second
        .writes
        .contains(&write("ba", "p2", WeightCommand::Absolute(0))));
    // HAProxy restarted (counters back near zero): no evidence, and nobody else is ejected.
    let third = run(&with_counters([3, 3, 3], [0, 0, 0]), &second.memory, 3.0);
    let b = &third.report.backends[0];
    assert_eq!(b.demand, None);
    assert!(b.servers.iter().all(|s| s.clients.is_none()), "no evidence");
    assert_eq!(b.servers[0].verdict, Verdict::Healthy);
    assert_eq!(
        b.servers[1].verdict,
        Verdict::Readmitting {
            reason: EjectReason::ClientErrors,
            streak: 1
        },
        "p2 stays out for its hold, on its probes' health"
    );
}
