//! Metrics and logs of a cycle's report. Conditions that last (fail open, held servers, servers
//! HAProxy and the config disagree on, clock skew, a lagging metrics engine) are logged once when
//! they start and once when they end, and their gauges go back to 0 when they end.

use std::collections::{BTreeSet, HashMap};

use crate::decision::{EjectReason, Verdict};
use crate::engine_lag::EngineLagLog;
use crate::haproxy::WriteOutcome;
use crate::metrics::{ActuatorMetrics, ErrorSource, Mismatch};
use crate::observe::{ProviderKey, Skew};
use crate::report::Mode;
use crate::report::{BackendReport, CycleReport};

/// What was already logged, so lasting conditions are logged once per change.
#[derive(Debug, Default)]
pub struct Published {
    failing_open: BTreeSet<String>,
    /// (backend, server, kind) of the last cycle.
    mismatches: BTreeSet<(String, String, Mismatch)>,
    /// Held servers per backend in the last cycle, and whether the engine's lag was why.
    without_data: HashMap<String, (usize, bool)>,
    clock_skewed: BTreeSet<ProviderKey>,
    /// Backends whose demand exceeds their plans.
    overloaded: BTreeSet<String>,
    /// The highest tier in use per backend.
    tiers: HashMap<String, Option<common::config::Tier>>,
    engine: EngineLagLog,
}

impl Published {
    /// Publishes `report` (made at unix time `unix_now`).
    pub fn publish(
        &mut self,
        m: &ActuatorMetrics,
        report: &CycleReport,
        mode: Mode,
        unix_now: f64,
    ) {
        self.engine.publish(m, report.engine_lag);
        let mut mismatches = BTreeSet::new();
        for b in &report.backends {
            self.fail_open(m, b);
            self.without_data(m, b);
            self.capacity(m, b);
            for server in &b.not_configured {
                mismatches.insert((b.backend.clone(), server.clone(), Mismatch::NotConfigured));
            }
            for s in b.servers.iter().filter(|s| !s.in_haproxy) {
                mismatches.insert((
                    b.backend.clone(),
                    s.server.clone(),
                    Mismatch::MissingInHaproxy,
                ));
            }
            servers(m, b, mode, unix_now);
        }
        self.mismatches(m, mismatches);
    }

    fn fail_open(&mut self, m: &ActuatorMetrics, b: &BackendReport) {
        let backend = b.backend.as_str();
        m.backend(backend)
            .fail_open
            .set(f64::from(u8::from(b.fail_open)));
        if b.fail_open && self.failing_open.insert(b.backend.clone()) {
            tracing::warn!(
                backend,
                "every server is bad: failing open, all share the traffic equally"
            );
        } else if !b.fail_open && self.failing_open.remove(backend) {
            tracing::info!(
                backend,
                "fail-open over: healthy servers carry the traffic again"
            );
        }
    }

    /// Tiers, demand and capacity; the overload is logged when it starts and ends.
    fn capacity(&mut self, m: &ActuatorMetrics, b: &BackendReport) {
        let series = m.backend(&b.backend);
        set_or_clear(&series.tier_in_use, b.tier.map(|t| f64::from(t.get())));
        set_or_clear(&series.demand, b.demand);
        set_or_clear(&series.capacity, b.capacity);
        series.overloaded.set(f64::from(u8::from(b.overloaded)));
        let backend = b.backend.as_str();
        if b.overloaded && self.overloaded.insert(b.backend.clone()) {
            tracing::warn!(backend, demand = b.demand, capacity = b.capacity, "demand above every plan limit in use: traffic is shared by limit and clients will see 429s (raise a plan, add a provider or a tier)");
        } else if !b.overloaded && self.overloaded.remove(backend) {
            tracing::info!(backend, "overload over: the plans in use carry the demand");
        }
        if self.tiers.insert(b.backend.clone(), b.tier) != Some(b.tier) {
            tracing::info!(
                backend,
                tier = b.tier.map(|t| t.get()),
                "tiers in use changed (higher tiers stand by)"
            );
        }
    }

    /// Logged again when the count changes, or when the engine's lag starts or stops being the
    /// reason.
    fn without_data(&mut self, m: &ActuatorMetrics, b: &BackendReport) {
        let held = b.without_data();
        m.backend(&b.backend).servers_without_data.set(held as f64);
        let now = (held, held > 0 && self.engine.lagging());
        let before = self
            .without_data
            .insert(b.backend.clone(), now)
            .unwrap_or((0, false));
        if now != before {
            let servers = b.servers.len();
            if held > 0 && self.engine.lagging() {
                tracing::warn!(backend = %b.backend, held, servers, "no fresh data from Prometheus for some servers: their weights are held as they are, because the metrics engine lags (see its warning)");
            } else if held > 0 {
                tracing::warn!(backend = %b.backend, held, servers, "no fresh data from Prometheus for some servers: their weights are held as they are (is the exporter up and scraped, and are the clocks in sync?)");
            } else {
                tracing::info!(backend = %b.backend, "every server has fresh data again");
            }
        }
    }

    fn mismatches(&mut self, m: &ActuatorMetrics, now: BTreeSet<(String, String, Mismatch)>) {
        for (backend, server, kind) in now.difference(&self.mismatches) {
            match kind {
                Mismatch::NotConfigured => {
                    tracing::warn!(%backend, %server, "HAProxy server is not configured as a provider; left alone")
                }
                Mismatch::MissingInHaproxy => {
                    tracing::warn!(%backend, %server, "provider's server does not exist in HAProxy; skipped")
                }
            }
        }
        for (backend, server, kind) in self.mismatches.difference(&now) {
            tracing::info!(%backend, %server, kind = kind.as_str(), "server mismatch resolved");
            m.set_mismatch(backend, server, *kind, 0.0);
        }
        for (backend, server, kind) in &now {
            m.set_mismatch(backend, server, *kind, 1.0);
        }
        self.mismatches = now;
    }

    /// Logs providers with data from the future (their data counts as missing).
    pub fn clock_skew(&mut self, skewed: &[(ProviderKey, Skew, f64)]) {
        let now: BTreeSet<ProviderKey> = skewed.iter().map(|(k, _, _)| k.clone()).collect();
        let new = skewed
            .iter()
            .filter(|(k, _, _)| !self.clock_skewed.contains(k));
        for (key, skew, ahead) in new {
            tracing::warn!(chain = %key.chain, provider = %key.provider, timestamp = skew.as_str(), ahead_seconds = ahead, "data from the future: clock skew (last_probe: the exporter's clock is ahead of Prometheus'; block_timestamp: the provider's clock is ahead of the exporter's, or the exporter's is behind); its data is treated as missing until the clocks agree");
        }
        for key in self.clock_skewed.difference(&now) {
            tracing::info!(chain = %key.chain, provider = %key.provider, "clock skew over");
        }
        self.clock_skewed = now;
    }
}

/// A gauge that is absent while there is no value.
fn set_or_clear(gauge: &common::metrics::Gauge, value: Option<f64>) {
    match value {
        Some(v) => gauge.set(v),
        None => gauge.clear(),
    }
}

/// Per-server gauges, and a log line per weight written.
fn servers(m: &ActuatorMetrics, b: &BackendReport, mode: Mode, unix_now: f64) {
    let backend = b.backend.as_str();
    for s in b.servers.iter().filter(|s| !s.in_haproxy) {
        // Gone from HAProxy (a reload, a rename): its series go too, so no alert stays on them.
        if let Some(series) = m.existing_server(backend, &s.server) {
            series.clear();
        }
    }
    for s in b.servers.iter().filter(|s| s.in_haproxy) {
        let server = s.server.as_str();
        let series = m.server(backend, server);
        if let Some(w) = s.current {
            series.haproxy_weight.set(f64::from(w));
        }
        // A dry run writes nothing, so HAProxy keeps what it has.
        let target = match mode {
            Mode::Apply => s.target(b.full_weight),
            Mode::DryRun => s.current,
        };
        if let Some(w) = target {
            series.weight.set(f64::from(w));
        }
        for reason in EjectReason::ALL {
            let on = s.verdict.reason() == Some(reason);
            series.ejected(reason).set(f64::from(u8::from(on)));
        }
        series.recent_ejections.set(f64::from(s.ejections));
        series
            .standby
            .set(f64::from(u8::from(s.verdict == Verdict::Standby)));
        set_or_clear(&series.limit, s.limit);
        set_or_clear(&series.client_rate, s.clients.map(|c| c.rate()));
        set_or_clear(
            &series.client_error_ratio,
            s.clients.and_then(|c| c.failed_ratio()),
        );
        set_or_clear(
            &series.client_rpc_error_ratio,
            s.clients.and_then(|c| c.rpc_error_ratio()),
        );
        set_or_clear(
            &series.client_rate_limited_ratio,
            s.clients.and_then(|c| c.rate_limited_ratio()),
        );
        match s.returns_in {
            Some(wait) => series.returns_at.set(unix_now + wait),
            None => series.returns_at.clear(),
        }
        set_or_clear(&series.weighed_latency, s.weighed_latency);
        set_or_clear(&series.latency_bucket, s.latency_bucket.map(|b| b as f64));
        set_or_clear(
            &series.slow_start_since,
            s.ramping_for.map(|r| unix_now - r),
        );
        let Some(weight) = s.write else { continue };
        let from = s.current.map_or("unknown".to_owned(), |w| w.to_string());
        let why = s.verdict.reason().map_or("healthy", EjectReason::as_str);
        match (&s.outcome, mode) {
            (_, Mode::DryRun) => {
                tracing::info!(backend, server, from, to = %weight, reason = why, "dry run: would set weight")
            }
            (Some(WriteOutcome::Done), _) => {
                series.weight_writes.inc();
                tracing::info!(backend, server, from, to = %weight, reason = why, verdict = ?s.verdict, ejections = s.ejections, "weight set");
            }
            (Some(WriteOutcome::Failed(reply)), _) => {
                m.errors(ErrorSource::Haproxy).inc();
                tracing::warn!(backend, server, to = %weight, reply = %reply, "HAProxy refused the weight");
            }
            _ => {}
        }
    }
}
