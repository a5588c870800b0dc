//! Planning a cycle, without I/O: joins what Prometheus says of each provider with what HAProxy
//! says of each server, runs the policy per backend with what it remembered, and lists the weights
//! to write. Everything it needs comes in as arguments, so the join and the policy can be tested
//! table by table without a Prometheus or an HAProxy running.

use std::collections::{BTreeMap, HashMap, HashSet};

use common::config::{ChainConfig, Name};

use crate::haproxy::{BackendStat, WeightWrite};
use crate::observe::{Observations, ProviderKey};
use crate::policy::{decide, weight_to_write, Memory, ServerInput, Verdict};
use crate::report::{BackendReport, CycleReport, ServerReport};

/// A server of a backend, as named by the validated config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub backend: Name,
    pub server: Name,
}

/// What the policy remembers of every server between cycles.
pub type MemoryBook = HashMap<ServerKey, Memory>;

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
fn haproxy_up(status: &str) -> bool {
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
        if current.is_some() {
            inputs.push(ServerInput {
                observation,
                current_weight: current,
                haproxy_up: server.is_some_and(|s| haproxy_up(&s.status)),
                memory: memory.get(&key(p)).copied().unwrap_or_default(),
            });
        }
        servers.push(ServerReport {
            provider: p.name.to_string(),
            server: p.server.to_string(),
            in_haproxy: current.is_some(),
            observation,
            verdict: Verdict::NoData,
            weighed_latency: None,
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
        s.weighed_latency = d.memory.latency.map(|l| l.seconds());
        s.returns_in = d
            .memory
            .earliest_return(&chain.policy)
            .map(|at| (at - input.now).max(0.0));
        s.write = weight_to_write(
            d.desired,
            s.current,
            chain.policy.deadband,
            static_algorithm,
        );
        memory.insert(key(p), d.memory);
    }
    let configured: HashSet<&str> = chain.providers.iter().map(|p| p.server.as_str()).collect();
    BackendReport {
        backend: backend.to_owned(),
        full_weight: chain.policy.full_weight,
        chain: chain.name.to_string(),
        algorithm: stat.map(|s| s.algorithm.clone()).unwrap_or_default(),
        static_algorithm,
        fail_open: decision.fail_open,
        not_configured: stat
            .map(|s| {
                s.servers
                    .keys()
                    .filter(|s| !configured.contains(s.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
        servers,
    }
}
