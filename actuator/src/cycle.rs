//! One actuator cycle: gather (Prometheus, then HAProxy), plan (pure), apply the writes, publish.
//! HAProxy is re-read every cycle and only what differs is written, so a reload or restart of
//! HAProxy (which resets weights to the config's) is repaired within one cycle.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use common::clock::unix_now;
use common::config::Config;

pub use crate::error::{ActuatorError, CycleError};
use crate::haproxy::{
    BackendStat, Haproxy, HaproxyError, WeightWrite, WriteOutcome, RESPONSE_COUNTING,
};
use crate::haproxy_write::weight_to_write;
use crate::metrics::{ActuatorMetrics, CycleResult, ErrorSource, Stage};
use crate::observe::{observe, Freshness};
use crate::plan::{plan, MemoryBook, PlanInput};
use crate::prometheus_api::{PrometheusClient, PrometheusError, Range};
use crate::publish::Published;
pub use crate::report::{BackendReport, CycleReport, Mode, ServerReport};
use crate::warm_start::{self, History, RebuildInput};

#[derive(Default)]
struct State {
    memory: MemoryBook,
    static_backends: HashSet<String>,
    published: Published,
    last_report: Option<CycleReport>,
    succeeded: bool,
    failures: crate::failure_log::FailureLog,
    /// How the memory was rebuilt at start; `None` until it was (before the first plan).
    memory_source: Option<String>,
    /// Backends found without a counting table, or one without `gpc1`, as `backend: what is
    /// missing` (said once each).
    uncounted_backends: HashSet<String>,
    /// Reserves found without a `backup` twin in HAProxy, as `backend/server` (said once each).
    unbridged_reserves: HashSet<String>,
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

    /// How the policy's memory was rebuilt at start (from the actuator's history in Prometheus,
    /// or cold); `None` before the first cycle that read HAProxy.
    pub fn memory_source(&self) -> Option<String> {
        self.lock().memory_source.clone()
    }

    /// The actuator's own series over the lookback window (see [`warm_start`]).
    async fn history(&self) -> Result<History, PrometheusError> {
        let end = unix_now();
        let range = Range {
            start: end - warm_start::LOOKBACK_SECONDS,
            end,
            step: warm_start::STEP_SECONDS,
        };
        let backends = self.config.chains.iter().map(|c| c.backend.as_str());
        let series = self
            .prometheus
            // The query selects this actuator's backends itself: every series answered is wanted.
            .query_range(
                &warm_start::history_query(backends),
                range,
                std::sync::Arc::new(|_| true),
            )
            .await?;
        Ok(History::from_series(&series))
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
                state.failures.succeeded();
                state.last_report = Some(report.clone());
            }
            Err(e) => {
                let source = match e {
                    CycleError::Prometheus(_) => ErrorSource::Prometheus,
                    CycleError::Haproxy(_) => ErrorSource::Haproxy,
                };
                m.errors(source).inc();
                let url = &self.config.actuator.prometheus_url;
                self.lock().failures.failed(e, url);
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
        let mut haproxy = self.haproxy.show_stat().await?;
        self.count_answers(&mut haproxy).await?;
        let t = stage(Stage::HaproxyRead, t);
        // Before the first plan (so before the first write): the memory of the last run.
        let restored = self.lock().memory_source.is_some();
        let history = if restored {
            None
        } else {
            Some(self.history().await)
        };
        let planned = {
            let mut state = self.lock();
            if let Some(history) = history {
                let now = self.epoch.elapsed().as_secs_f64();
                let window = a.signal_window.as_secs_f64() + a.interval.as_secs_f64();
                let rebuilt = warm_start::rebuild(&RebuildInput {
                    chains: &self.config.chains,
                    haproxy: &haproxy,
                    history: history.as_ref().ok(),
                    now,
                    unix_now: unix_now(),
                    ceiling_for: 2.0 * window,
                });
                let (warm, cold) = rebuilt.counts();
                let source = match &history {
                    Ok(_) => format!("rebuilt at start: {warm} server(s) from the actuator's history in Prometheus, {cold} cold"),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the actuator's history from Prometheus: cold start (servers at 0 return through readmission and slow start, reserve tiers stay out, caps stay until the demand is measured)");
                        format!("rebuilt at start: cold, the history could not be read ({e})")
                    }
                };
                tracing::info!(warm, cold, "{source}");
                state.memory = rebuilt.memory;
                state.memory_source = Some(source);
            }
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
        self.say_reserves_without_backup(&report);
        report.engine_lag = observations.engine_lag;
        if mode == Mode::Apply && !planned.writes.is_empty() {
            self.apply(&mut report, planned.writes).await?;
        }
        stage(Stage::HaproxyWrite, t);
        self.lock()
            .published
            .publish(&self.metrics, &report, mode, unix_now());
        Ok(report)
    }

    /// Adds each configured backend's rate-limit answers and JSON-RPC errors from its counting
    /// table. A backend without one gives no rate-limit evidence (learned limits are off there),
    /// one whose table lacks `gpc1` no JSON-RPC errors: each said once, with the recipe.
    async fn count_answers(
        &self,
        haproxy: &mut BTreeMap<String, BackendStat>,
    ) -> Result<(), HaproxyError> {
        for chain in &self.config.chains {
            let backend = chain.backend.as_str();
            let Some(stat) = haproxy.get_mut(backend) else {
                continue;
            };
            let table = self.haproxy.response_counts(backend).await?;
            let missing = match &table {
                None => Some(
                    "the backend does not count rate-limit answers per server: learned rate limits are off \
                     there (max_rps still caps), and JSON-RPC errors inside a 200 are not seen",
                ),
                Some(t) if t.values().any(|c| c.rpc_errors.is_none()) => Some(
                    "the backend's table does not count JSON-RPC errors (no gpc1): errors \
                     inside a 200 are not seen",
                ),
                Some(_) => None,
            };
            if let Some(table) = &table {
                stat.count_answers(table);
            }
            if let Some(missing) = missing {
                let said = format!("{backend}: {missing}");
                if self.lock().uncounted_backends.insert(said) {
                    tracing::warn!(
                        backend,
                        recipe = RESPONSE_COUNTING.join("; "),
                        "{missing}; add the recipe's lines to the backend (deploy/README.md, \
                         \"Counting what clients got\")"
                    );
                }
            }
        }
        Ok(())
    }

    /// Warns, once per server, of each reserve HAProxy has no `backup` twin for.
    fn say_reserves_without_backup(&self, report: &CycleReport) {
        let mut state = self.lock();
        for b in &report.backends {
            for server in &b.reserves_without_backup {
                if state
                    .unbridged_reserves
                    .insert(format!("{}/{server}", b.backend))
                {
                    tracing::warn!(
                        backend = b.backend,
                        "{}",
                        crate::explain::reserve_without_backup(server)
                    );
                }
            }
        }
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
