//! Metrics and logs of a cycle's report. Conditions that last (fail open, held servers, servers
//! HAProxy and the config disagree on, clock skew) are logged once when they start and once when
//! they end, and their gauges go back to 0 when they end.

use std::collections::{BTreeSet, HashMap};

use crate::cycle::Mode;
use crate::haproxy::WriteOutcome;
use crate::metrics::ActuatorMetrics;
use crate::observe::{ProviderKey, Skew};
use crate::policy::EjectReason;
use crate::report::{BackendReport, CycleReport};

/// What was already logged, so lasting conditions are logged once per change.
#[derive(Debug, Default)]
pub struct Published {
    failing_open: BTreeSet<String>,
    /// (backend, server, kind) of the last cycle.
    mismatches: BTreeSet<(String, String, &'static str)>,
    /// Held servers per backend in the last cycle.
    without_data: HashMap<String, usize>,
    clock_skewed: BTreeSet<ProviderKey>,
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
        let mut mismatches = BTreeSet::new();
        for b in &report.backends {
            self.fail_open(m, b);
            self.without_data(m, b);
            for server in &b.not_configured {
                mismatches.insert((b.backend.clone(), server.clone(), "not_configured"));
            }
            for s in b.servers.iter().filter(|s| !s.in_haproxy) {
                mismatches.insert((b.backend.clone(), s.server.clone(), "missing_in_haproxy"));
            }
            servers(m, b, mode, unix_now);
        }
        self.mismatches(m, mismatches);
    }

    fn fail_open(&mut self, m: &ActuatorMetrics, b: &BackendReport) {
        let backend = b.backend.as_str();
        m.fail_open
            .with_label_values(&[backend])
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

    fn without_data(&mut self, m: &ActuatorMetrics, b: &BackendReport) {
        let held = b.without_data();
        m.servers_without_data
            .with_label_values(&[b.backend.as_str()])
            .set(held as f64);
        let before = self
            .without_data
            .insert(b.backend.clone(), held)
            .unwrap_or(0);
        if held != before {
            let servers = b.servers.len();
            if held > 0 {
                tracing::warn!(backend = %b.backend, held, servers, "no fresh data from Prometheus for some servers: their weights are held as they are (is the exporter up and scraped, and are the clocks in sync?)");
            } else {
                tracing::info!(backend = %b.backend, "every server has fresh data again");
            }
        }
    }

    fn mismatches(&mut self, m: &ActuatorMetrics, now: BTreeSet<(String, String, &'static str)>) {
        for (backend, server, kind) in now.difference(&self.mismatches) {
            match *kind {
                "not_configured" => {
                    tracing::warn!(%backend, %server, "HAProxy server is not configured as a provider; left alone")
                }
                _ => {
                    tracing::warn!(%backend, %server, "provider's server does not exist in HAProxy; skipped")
                }
            }
        }
        for (backend, server, kind) in self.mismatches.difference(&now) {
            tracing::info!(%backend, %server, kind, "server mismatch resolved");
            m.server_mismatch
                .with_label_values(&[backend.as_str(), server.as_str(), kind])
                .set(0.0);
        }
        for (backend, server, kind) in &now {
            m.server_mismatch
                .with_label_values(&[backend.as_str(), server.as_str(), kind])
                .set(1.0);
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

/// Per-server gauges, and a log line per weight written.
fn servers(m: &ActuatorMetrics, b: &BackendReport, mode: Mode, unix_now: f64) {
    let backend = b.backend.as_str();
    for s in b.servers.iter().filter(|s| !s.in_haproxy) {
        // Gone from HAProxy (a reload, a rename): its series go too, so no alert stays on them.
        let labels = [backend, s.server.as_str()];
        for gauge in [&m.haproxy_weight, &m.weight, &m.ejections, &m.returns_at] {
            let _ = gauge.remove_label_values(&labels);
        }
        for reason in EjectReason::ALL {
            let _ = m
                .ejected
                .remove_label_values(&[backend, s.server.as_str(), reason.as_str()]);
        }
    }
    for s in b.servers.iter().filter(|s| s.in_haproxy) {
        let server = s.server.as_str();
        let labels = [backend, server];
        if let Some(w) = s.current {
            m.haproxy_weight
                .with_label_values(&labels)
                .set(f64::from(w));
        }
        // A dry run writes nothing, so HAProxy keeps what it has.
        let target = match mode {
            Mode::Apply => s.target(b.full_weight),
            Mode::DryRun => s.current,
        };
        if let Some(w) = target {
            m.weight.with_label_values(&labels).set(f64::from(w));
        }
        for reason in EjectReason::ALL {
            let on = s.verdict.reason() == Some(reason);
            m.ejected
                .with_label_values(&[backend, server, reason.as_str()])
                .set(f64::from(u8::from(on)));
        }
        m.ejections
            .with_label_values(&labels)
            .set(f64::from(s.ejections));
        match s.returns_in {
            Some(wait) => m.returns_at.with_label_values(&labels).set(unix_now + wait),
            None => {
                let _ = m.returns_at.remove_label_values(&labels);
            }
        }
        let Some(weight) = s.write else { continue };
        let from = s.current.map_or("unknown".to_owned(), |w| w.to_string());
        let why = s.verdict.reason().map_or("healthy", EjectReason::as_str);
        match (&s.outcome, mode) {
            (_, Mode::DryRun) => {
                tracing::info!(backend, server, from, to = %weight, reason = why, "dry run: would set weight")
            }
            (Some(WriteOutcome::Done), _) => {
                m.weight_writes.with_label_values(&labels).inc();
                tracing::info!(backend, server, from, to = %weight, reason = why, verdict = ?s.verdict, ejections = s.ejections, "weight set");
            }
            (Some(WriteOutcome::Failed(reply)), _) => {
                m.errors.with_label_values(&["haproxy"]).inc();
                tracing::warn!(backend, server, to = %weight, reply = %reply, "HAProxy refused the weight");
            }
            _ => {}
        }
    }
}
