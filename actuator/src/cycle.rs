//! One actuator cycle: observe (Prometheus), read HAProxy, decide (policy), reconcile and write.
//! HAProxy is re-read every cycle and only what differs is written, so a reload or restart of
//! HAProxy (which resets weights to the config's) is repaired within one cycle.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::config::Config;
use thiserror::Error;

use crate::haproxy::{Haproxy, HaproxyError, WeightWrite, WriteOutcome};
use crate::metrics::ActuatorMetrics;
use crate::observe::observe;
use crate::policy::{
    decide, weight_to_write, EjectReason, Memory, Observation, ServerInput, Verdict, WeightCommand,
};
use crate::prometheus_api::{PrometheusClient, PrometheusError};

/// Whether a cycle writes to HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    /// Decide and report only.
    DryRun,
}

/// Why a cycle decided nothing.
#[derive(Debug, Error)]
pub enum CycleError {
    #[error("Prometheus query failed, weights left as they are: {0}")]
    Prometheus(#[from] PrometheusError),
    #[error("HAProxy failed: {0}")]
    Haproxy(#[from] HaproxyError),
}

/// What a cycle saw and did, per backend.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    pub backends: Vec<BackendReport>,
}

impl CycleReport {
    /// True when every write that was due succeeded.
    pub fn all_written(&self) -> bool {
        self.backends
            .iter()
            .flat_map(|b| &b.servers)
            .all(|s| !matches!(s.outcome, Some(WriteOutcome::Failed(_))))
    }
}

#[derive(Debug, Clone)]
pub struct BackendReport {
    pub backend: String,
    /// The chain policy's `full_weight` (what `100%` means on a static backend).
    pub full_weight: u32,
    pub chain: String,
    pub algorithm: String,
    pub static_algorithm: bool,
    pub fail_open: bool,
    pub servers: Vec<ServerReport>,
    /// HAProxy servers of this backend that no provider names (left alone).
    pub not_configured: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerReport {
    pub provider: String,
    pub server: String,
    /// False when HAProxy has no such server (left alone).
    pub in_haproxy: bool,
    pub observation: Option<Observation>,
    pub verdict: Verdict,
    /// HAProxy's weight at the start of the cycle.
    pub current: Option<u32>,
    pub desired: Option<u32>,
    /// What was (or, in a dry run, would be) written.
    pub write: Option<WeightCommand>,
    pub outcome: Option<WriteOutcome>,
}

impl ServerReport {
    /// The weight HAProxy should have after this cycle: what is written, else what it has (a
    /// change inside the deadband is not written, so it is not a disagreement either).
    pub fn target(&self, full_weight: u32) -> Option<u32> {
        match self.write {
            Some(WeightCommand::Absolute(w)) => Some(w),
            Some(WeightCommand::FullPercent) => Some(full_weight),
            None => self.current,
        }
    }
}

#[derive(Default)]
struct State {
    memory: HashMap<(String, String), Memory>,
    static_backends: HashSet<String>,
    failing_open: HashSet<String>,
    reported_mismatches: HashSet<(String, String)>,
    last_report: Option<CycleReport>,
    succeeded: bool,
}

/// The actuator: clients, metrics and what it remembers between cycles.
pub struct Actuator {
    config: Config,
    prometheus: PrometheusClient,
    haproxy: Haproxy,
    pub metrics: ActuatorMetrics,
    state: Mutex<State>,
    epoch: Instant,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Actuator {
    pub fn new(config: Config) -> Result<Self, reqwest::Error> {
        let a = &config.actuator;
        Ok(Self {
            prometheus: PrometheusClient::new(&a.prometheus_url, a.query_timeout)?,
            haproxy: Haproxy::new(a.haproxy.clone(), a.haproxy_timeout),
            metrics: ActuatorMetrics::new(),
            state: Mutex::new(State::default()),
            epoch: Instant::now(),
            config,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True once a cycle has succeeded.
    pub fn ready(&self) -> bool {
        self.lock().succeeded
    }

    /// The last cycle's report, for the status page.
    pub fn last_report(&self) -> Option<CycleReport> {
        self.lock().last_report.clone()
    }

    /// Runs one cycle. On a Prometheus or HAProxy read failure nothing is written.
    pub async fn cycle(&self, mode: Mode) -> Result<CycleReport, CycleError> {
        let started = Instant::now();
        let result = self.try_cycle(mode, started).await;
        let m = &self.metrics;
        m.cycle_duration.observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(report) if report.all_written() => "ok",
            Ok(_) | Err(CycleError::Haproxy(_)) => "haproxy_error",
            Err(CycleError::Prometheus(_)) => "prometheus_error",
        };
        m.cycles.with_label_values(&[outcome]).inc();
        match &result {
            Ok(report) => {
                if outcome == "ok" {
                    m.last_success.set(unix_now());
                }
                let mut state = self.lock();
                state.succeeded = true;
                state.last_report = Some(report.clone());
            }
            Err(e) => {
                let stage = match e {
                    CycleError::Prometheus(_) => "prometheus",
                    CycleError::Haproxy(_) => "haproxy",
                };
                m.errors.with_label_values(&[stage]).inc();
                tracing::warn!(error = %e, "cycle failed; weights left as they are");
            }
        }
        result
    }

    async fn try_cycle(&self, mode: Mode, started: Instant) -> Result<CycleReport, CycleError> {
        let a = &self.config.actuator;
        let stage = |name: &str, since: Instant| {
            self.metrics
                .stage_duration
                .with_label_values(&[name])
                .set(since.elapsed().as_secs_f64());
            Instant::now()
        };
        let observations = observe(&self.prometheus, &a.queries, a.max_data_age).await?;
        let t = stage("prometheus", started);
        let stat = self.haproxy.show_stat().await?;
        let t = stage("haproxy_read", t);
        let now = self.epoch.elapsed().as_secs_f64();
        let mut report = CycleReport::default();
        let mut writes = Vec::new();
        {
            let mut state = self.lock();
            for chain in &self.config.chains {
                let backend = chain.backend.as_str();
                let hstat = stat.get(backend).cloned().unwrap_or_default();
                let static_algorithm =
                    hstat.algorithm == "static-rr" || state.static_backends.contains(backend);
                let mut servers = Vec::new();
                let mut inputs = Vec::new();
                for p in &chain.providers {
                    let key = (chain.name.as_str().to_owned(), p.name.as_str().to_owned());
                    let current = hstat.servers.get(p.server.as_str()).map(|s| s.weight);
                    let memory_key = (backend.to_owned(), p.server.as_str().to_owned());
                    let observation = observations.get(&key).copied();
                    servers.push(ServerReport {
                        provider: p.name.to_string(),
                        server: p.server.to_string(),
                        in_haproxy: current.is_some(),
                        observation,
                        verdict: Verdict::NoData,
                        current,
                        desired: None,
                        write: None,
                        outcome: None,
                    });
                    if current.is_some() {
                        inputs.push(ServerInput {
                            observation,
                            current_weight: current,
                            memory: state.memory.get(&memory_key).copied().unwrap_or_default(),
                        });
                    }
                }
                let decision = decide(&chain.policy, &inputs, now);
                let mut decided = decision.servers.iter();
                for s in servers.iter_mut().filter(|s| s.in_haproxy) {
                    let Some(d) = decided.next() else { break };
                    s.verdict = d.verdict;
                    s.desired = d.desired;
                    s.write = weight_to_write(
                        d.desired,
                        s.current,
                        chain.policy.deadband,
                        static_algorithm,
                    );
                    state
                        .memory
                        .insert((backend.to_owned(), s.server.clone()), d.memory);
                    if let Some(weight) = s.write {
                        writes.push(WeightWrite {
                            backend: backend.to_owned(),
                            server: s.server.clone(),
                            weight,
                        });
                    }
                }
                let configured: HashSet<&str> =
                    chain.providers.iter().map(|p| p.server.as_str()).collect();
                report.backends.push(BackendReport {
                    backend: backend.to_owned(),
                    full_weight: chain.policy.full_weight,
                    chain: chain.name.to_string(),
                    algorithm: hstat.algorithm.clone(),
                    static_algorithm,
                    fail_open: decision.fail_open,
                    not_configured: hstat
                        .servers
                        .keys()
                        .filter(|s| !configured.contains(s.as_str()))
                        .cloned()
                        .collect(),
                    servers,
                });
            }
        }
        let t = stage("policy", t);
        if mode == Mode::Apply && !writes.is_empty() {
            self.write(&mut report, writes).await?;
        }
        stage("haproxy_write", t);
        self.publish(&report, mode);
        Ok(report)
    }

    /// Writes, then retries as on/off any backend HAProxy says has a static algorithm.
    async fn write(
        &self,
        report: &mut CycleReport,
        writes: Vec<WeightWrite>,
    ) -> Result<(), HaproxyError> {
        let outcomes = self.haproxy.set_weights(&writes).await?;
        let mut retries = Vec::new();
        for (write, outcome) in writes.iter().zip(outcomes) {
            let Some((b, i)) = locate(report, write) else {
                continue;
            };
            if outcome == WriteOutcome::StaticAlgorithm {
                report.backends[b].static_algorithm = true;
                let server = &mut report.backends[b].servers[i];
                server.write = weight_to_write(server.desired, server.current, 0, true);
                if let Some(weight) = server.write {
                    retries.push(WeightWrite {
                        weight,
                        ..write.clone()
                    });
                }
            }
            report.backends[b].servers[i].outcome = Some(outcome);
        }
        if !retries.is_empty() {
            {
                let mut state = self.lock();
                for w in &retries {
                    if state.static_backends.insert(w.backend.clone()) {
                        tracing::info!(backend = %w.backend, "backend uses a static algorithm: weights are now on (100%) or off (0)");
                    }
                }
            }
            let outcomes = self.haproxy.set_weights(&retries).await?;
            for (write, outcome) in retries.iter().zip(outcomes) {
                if let Some((b, i)) = locate(report, write) {
                    report.backends[b].servers[i].outcome = Some(outcome);
                }
            }
        }
        Ok(())
    }

    /// Metrics and logs of a cycle: weight changes, fail-open and mismatches (each logged once).
    fn publish(&self, report: &CycleReport, mode: Mode) {
        let m = &self.metrics;
        let mut state = self.lock();
        for b in &report.backends {
            let backend = b.backend.as_str();
            m.fail_open
                .with_label_values(&[backend])
                .set(f64::from(u8::from(b.fail_open)));
            if b.fail_open && state.failing_open.insert(b.backend.clone()) {
                tracing::warn!(
                    backend,
                    "every server is bad: failing open, all share the traffic equally"
                );
            } else if !b.fail_open && state.failing_open.remove(backend) {
                tracing::info!(
                    backend,
                    "fail-open over: healthy servers carry the traffic again"
                );
            }
            for server in &b.not_configured {
                m.server_mismatch
                    .with_label_values(&[backend, server, "not_configured"])
                    .set(1.0);
                if state
                    .reported_mismatches
                    .insert((b.backend.clone(), server.clone()))
                {
                    tracing::warn!(backend, server = %server, "HAProxy server is not configured as a provider; left alone");
                }
            }
            for s in &b.servers {
                let server = s.server.as_str();
                if !s.in_haproxy {
                    m.server_mismatch
                        .with_label_values(&[backend, server, "missing_in_haproxy"])
                        .set(1.0);
                    if state
                        .reported_mismatches
                        .insert((b.backend.clone(), s.server.clone()))
                    {
                        tracing::warn!(backend, server, provider = %s.provider, "provider's server does not exist in HAProxy; skipped");
                    }
                    continue;
                }
                if let Some(w) = s.current {
                    m.haproxy_weight
                        .with_label_values(&[backend, server])
                        .set(f64::from(w));
                }
                if let Some(w) = s.target(b.full_weight) {
                    m.weight
                        .with_label_values(&[backend, server])
                        .set(f64::from(w));
                }
                for reason in EjectReason::ALL {
                    let on = s.verdict.reason() == Some(reason);
                    m.ejected
                        .with_label_values(&[backend, server, reason.as_str()])
                        .set(f64::from(u8::from(on)));
                }
                let Some(weight) = s.write else { continue };
                let from = s.current.map_or("unknown".to_owned(), |w| w.to_string());
                let why = s.verdict.reason().map_or("healthy", EjectReason::as_str);
                match (&s.outcome, mode) {
                    (_, Mode::DryRun) => {
                        tracing::info!(backend, server, from, to = %weight, reason = why, "dry run: would set weight")
                    }
                    (Some(WriteOutcome::Done), _) => {
                        m.weight_writes.with_label_values(&[backend, server]).inc();
                        tracing::info!(backend, server, from, to = %weight, reason = why, verdict = ?s.verdict, "weight set");
                    }
                    (Some(WriteOutcome::Failed(reply)), _) => {
                        m.errors.with_label_values(&["haproxy"]).inc();
                        tracing::warn!(backend, server, to = %weight, reply = %reply, "HAProxy refused the weight");
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Where a write's server sits in the report: (backend index, server index).
fn locate(report: &CycleReport, write: &WeightWrite) -> Option<(usize, usize)> {
    let b = report
        .backends
        .iter()
        .position(|b| b.backend == write.backend)?;
    let s = report.backends[b]
        .servers
        .iter()
        .position(|s| s.server == write.server)?;
    Some((b, s))
}
