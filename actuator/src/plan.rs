//! Planning a cycle, without I/O: joins what Prometheus says of each provider with what HAProxy
//! says of each server, runs the policy per backend with what it remembered, and lists the weights
//! to write. Everything it needs comes in as arguments, so the join and the policy can be tested
//! table by table without a Prometheus or an HAProxy running.

use std::collections::{BTreeMap, HashMap, HashSet};

use common::config::{ChainConfig, Name, Tier};

use crate::client_signal::CounterHistory;
use crate::decision::{Memory, ServerInput, Verdict};
use crate::haproxy::{BackendStat, ServerStat, WeightWrite};
use crate::haproxy_write::weight_to_write;
use crate::observe::{Observations, ProviderKey};
use crate::policy::decide;
use crate::report::{BackendReport, CycleReport, ServerReport};

/// A server of a backend, as named by the validated config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub backend: Name,
    pub server: Name,
}

/// What planning remembers between cycles: the policy's memory of every server, and the
/// counters of the client requests HAProxy sent each over the signal window.
#[derive(Debug, Clone, Default)]
pub struct MemoryBook {
    pub servers: HashMap<ServerKey, Memory>,
    pub counters: HashMap<ServerKey, CounterHistory>,
}

impl MemoryBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Servers remembered.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

/// Everything a plan is made from.
pub struct PlanInput<'a> {
    pub chains: &'a [ChainConfig],
    pub observations: &'a Observations,
    /// `show stat` by backend name.
    pub haproxy: &'a BTreeMap<String, BackendStat>,
    pub memory: &'a MemoryBook,
    /// Backends HAProxy has told us take only 0 and 100%.
    pub static_backends: &'a HashSet<String>,
    /// The policy's clock (seconds, monotonic).
    pub now: f64,
    /// The span client counters are judged over (`actuator.signal_window`), seconds.
    pub signal_window: f64,
}

/// The decisions of a cycle, the writes they need, and the memory for the next cycle.
#[derive(Debug, Clone)]
pub struct Plan {
    pub report: CycleReport,
    pub writes: Vec<WeightWrite>,
    pub memory: MemoryBook,
}

/// Whether HAProxy sends traffic to a server with this `show stat` status: `UP` (with or
/// without a ` 1/2` transition suffix) or `no check`; not `DOWN`, `MAINT`, `DRAIN` or `NOLB`.
pub fn haproxy_up(status: &str) -> bool {
    status.starts_with("UP") || status == "no check"
}

/// Plans every chain's backend.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut memory = input.memory.clone();
    let mut report = CycleReport::default();
    let mut writes = Vec::new();
    for chain in input.chains {
        let backend = plan_backend(input, chain, &mut memory);
        writes.extend(backend.servers.iter().filter_map(|s| {
            Some(WeightWrite {
                backend: backend.backend.clone(),
                server: s.server.clone(),
                weight: s.write?,
            })
        }));
        report.backends.push(backend);
    }
    Plan {
        report,
        writes,
        memory,
    }
}

fn plan_backend(
    input: &PlanInput<'_>,
    chain: &ChainConfig,
    memory: &mut MemoryBook,
) -> BackendReport {
    let backend = chain.backend.as_str();
    let stat = input.haproxy.get(backend);
    let static_algorithm =
        stat.is_some_and(|s| s.algorithm == "static-rr") || input.static_backends.contains(backend);
    // Plan limits are kept through weights: not where HAProxy does not spread by them.
    let limits_apply = !static_algorithm
        && !stat.is_some_and(|s| ["leastconn", "first"].contains(&s.algorithm.as_str()));
    let key = |p: &common::config::ProviderConfig| ServerKey {
        backend: chain.backend.clone(),
        server: p.server.clone(),
    };
    // The join: one report row per configured provider; the policy sees those HAProxy has.
    let mut servers: Vec<ServerReport> = Vec::with_capacity(chain.providers.len());
    let mut inputs = Vec::new();
    for p in &chain.providers {
        let server = stat.and_then(|s| s.servers.get(p.server.as_str()));
        let current = server.map(|s| s.weight);
        let observation = input
            .observations
            .get(&ProviderKey::new(chain.name.as_str(), p.name.as_str()))
            .copied();
        let clients = server.and_then(|s| {
            let counters = s.counters?;
            memory.counters.entry(key(p)).or_default().record(
                input.now,
                counters,
                input.signal_window,
            )
        });
        if current.is_some() {
            inputs.push(ServerInput {
                observation,
                current_weight: current,
                haproxy_up: server.is_some_and(|s| haproxy_up(&s.status)),
                memory: memory.servers.get(&key(p)).copied().unwrap_or_default(),
                tier: p.tier,
                max_rps: p.max_rps,
                clients,
                limits_apply,
            });
        }
        servers.push(ServerReport {
            provider: p.name.to_string(),
            server: p.server.to_string(),
            in_haproxy: current.is_some(),
            tier: p.tier,
            clients,
            limit: None,
            observation,
            verdict: Verdict::NoData,
            weighed_latency: None,
            latency_bucket: None,
            ramping_for: None,
            ejections: 0,
            returns_in: None,
            current,
            desired: None,
            write: None,
            outcome: None,
        });
    }
    let decision = decide(&chain.policy, &inputs, input.now);
    let in_haproxy = chain
        .providers
        .iter()
        .zip(servers.iter_mut())
        .filter(|(_, s)| s.in_haproxy);
    for ((p, s), d) in in_haproxy.zip(&decision.servers) {
        s.verdict = d.verdict;
        s.desired = d.desired;
        s.ejections = d.memory.ejection.count;
        s.limit = d.limit;
        s.weighed_latency = d.memory.latency.map(|l| l.seconds());
        s.latency_bucket = d.memory.latency.map(|l| l.bucket);
        s.ramping_for = d.memory.ramp_started.map(|t| (input.now - t).max(0.0));
        s.returns_in = d
            .memory
            .earliest_return(&chain.policy)
            .map(|at| (at - input.now).max(0.0));
        s.write = weight_to_write(d.desired, s.current, d.deadband, static_algorithm);
        memory.servers.insert(key(p), d.memory);
    }
    let configured: HashSet<&str> = chain.providers.iter().map(|p| p.server.as_str()).collect();
    let unconfigured = |backup: bool| -> Vec<String> {
        stat.map(|s| {
            s.servers
                .iter()
                .filter(|(name, st)| !configured.contains(name.as_str()) && st.backup == backup)
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
    };
    let reserves_without_backup = stat
        .map(|s| reserves_without_backup(chain, s, &configured))
        .unwrap_or_default();
    BackendReport {
        backend: backend.to_owned(),
        full_weight: chain.policy.full_weight,
        chain: chain.name.to_string(),
        algorithm: stat.map(|s| s.algorithm.clone()).unwrap_or_default(),
        static_algorithm,
        fail_open: decision.fail_open,
        tier: decision.tier,
        demand: decision.demand,
        capacity: decision.capacity,
        overloaded: decision.overloaded,
        release_held_for: decision.release_held_for,
        not_configured: unconfigured(false),
        backups: unconfigured(true),
        reserves_without_backup,
        servers,
    }
}

/// The reserves (tier 2 and up) with no `backup` entry at their address in HAProxy: when every
/// primary dies at once, their clients' requests fail until the next cycle brings the reserve in,
/// where a `backup` twin would have taken them at once. Without addresses any backup counts.
fn reserves_without_backup(
    chain: &ChainConfig,
    stat: &BackendStat,
    configured: &HashSet<&str>,
) -> Vec<String> {
    let backups: Vec<&ServerStat> = stat
        .servers
        .iter()
        .filter(|(name, s)| s.backup && !configured.contains(name.as_str()))
        .map(|(_, s)| s)
        .collect();
    chain
        .providers
        .iter()
        .filter(|p| p.tier > Tier::PRIMARY)
        .filter_map(|p| {
            let own = stat.servers.get(p.server.as_str())?;
            let twin = backups.iter().any(|b| match (&b.address, &own.address) {
                (Some(theirs), Some(ours)) => theirs == ours,
                _ => true,
            });
            (!twin).then(|| p.server.to_string())
        })
        .collect()
}
