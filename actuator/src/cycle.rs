//! One actuator cycle: gather (Prometheus, then HAProxy), plan (pure), apply the writes, publish.
//! HAProxy is re-read every cycle and only what differs is written, so a reload or restart of
//! HAProxy (which resets weights to the config's) is repaired within one cycle.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use common::clock::unix_now;
use common::config::Config;
use thiserror::Error;

use crate::haproxy::{Haproxy, HaproxyError, WeightWrite, WriteOutcome};
use crate::metrics::{ActuatorMetrics, CycleResult, ErrorSource, Stage};
use crate::observe::{observe, Freshness};
use crate::plan::{plan, MemoryBook, PlanInput};
use crate::policy::weight_to_write;
use crate::prometheus_api::{PrometheusClient, PrometheusError};
use crate::publish::Published;
pub use crate::report::{BackendReport, CycleReport, ServerReport};

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

/// Why the actuator cannot start.
#[derive(Debug, Error)]
pub enum ActuatorError {
    #[error("cannot build the Prometheus client: {0}")]
    PrometheusClient(#[from] reqwest::Error),
}

#[derive(Default)]
struct State {
    memory: MemoryBook,
    static_backends: HashSet<String>,
    published: Published,
    last_report: Option<CycleReport>,
    succeeded: bool,
}

/// The actuator: clients, metrics and what it remembers between cycles.
pub struct Actuator {
    config: Config,
    prometheus: PrometheusClient,
    haproxy: Haproxy,
    freshness: Freshness,
    pub metrics: ActuatorMetrics,
    state: Mutex<State>,
    epoch: Instant,
}

impl Actuator {
    pub fn new(config: Config) -> Result<Self, ActuatorError> {
        let a = &config.actuator;
        Ok(Self {
            prometheus: PrometheusClient::new(a.prometheus_url.expose(), a.query_timeout)?,
            haproxy: Haproxy::new(a.haproxy.clone(), a.haproxy_timeout),
            freshness: Freshness::new(&config),
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
            Ok(report) if report.all_written() => CycleResult::Ok,
            Ok(_) | Err(CycleError::Haproxy(_)) => CycleResult::HaproxyError,
            Err(CycleError::Prometheus(_)) => CycleResult::PrometheusError,
        };
        m.cycles(outcome).inc();
        match &result {
            Ok(report) => {
                if outcome == CycleResult::Ok {
                    m.last_success.set(unix_now());
                }
                let mut state = self.lock();
                state.succeeded = true;
                state.last_report = Some(report.clone());
            }
            Err(e) => {
                let source = match e {
                    CycleError::Prometheus(_) => ErrorSource::Prometheus,
                    CycleError::Haproxy(_) => ErrorSource::Haproxy,
                };
                m.errors(source).inc();
                tracing::warn!(error = %e, "cycle failed; weights left as they are");
            }
        }
        result
    }

    async fn try_cycle(&self, mode: Mode, started: Instant) -> Result<CycleReport, CycleError> {
        let a = &self.config.actuator;
        let stage = |stage: Stage, since: Instant| {
            self.metrics
                .stage_duration(stage)
                .set(since.elapsed().as_secs_f64());
            Instant::now()
        };
        let observations = observe(&self.prometheus, &a.queries, &self.freshness).await?;
        let t = stage(Stage::Prometheus, started);
        let haproxy = self.haproxy.show_stat().await?;
        let t = stage(Stage::HaproxyRead, t);
        let planned = {
            let mut state = self.lock();
            state.published.clock_skew(&observations.clock_skewed);
            let mut planned = plan(&PlanInput {
                chains: &self.config.chains,
                observations: &observations,
                haproxy: &haproxy,
                memory: &state.memory,
                static_backends: &state.static_backends,
                now: self.epoch.elapsed().as_secs_f64(),
                signal_window: a.signal_window.as_secs_f64(),
            });
            // The plan's memory is the next cycle's: moved, not copied.
            state.memory = std::mem::take(&mut planned.memory);
            planned
        };
        let t = stage(Stage::Policy, t);
        let mut report = planned.report;
        if mode == Mode::Apply && !planned.writes.is_empty() {
            self.apply(&mut report, planned.writes).await?;
        }
        stage(Stage::HaproxyWrite, t);
        self.lock()
            .published
            .publish(&self.metrics, &report, mode, unix_now());
        Ok(report)
    }

    /// Writes, then retries as on/off any backend HAProxy says has a static algorithm.
    async fn apply(
        &self,
        report: &mut CycleReport,
        writes: Vec<WeightWrite>,
    ) -> Result<(), HaproxyError> {
        let outcomes = self.haproxy.set_weights(&writes).await?;
        let mut retries = Vec::new();
        for (write, outcome) in writes.iter().zip(outcomes) {
            let Some((b, i)) = report.locate(&write.backend, &write.server) else {
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
        if retries.is_empty() {
            return Ok(());
        }
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
            if let Some((b, i)) = report.locate(&write.backend, &write.server) {
                report.backends[b].servers[i].outcome = Some(outcome);
            }
        }
        Ok(())
    }
}
