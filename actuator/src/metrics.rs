//! The actuator's own Prometheus metrics, as typed live values (the exporter's way, see
//! `common::metrics`): label sets are enums or a server's names, never slices kept in order by
//! hand, and `/metrics` is written straight from the values.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use common::metrics::{Counter, Exposition, Gauge, Histogram, Kind, Labels};

use crate::decision::EjectReason;

/// Names of the series a restart reads back (see `warm_start`), shared so a rename cannot
/// break it silently.
pub mod names {
    pub const WEIGHT: &str = "ethrpc_actuator_weight";
    pub const RECENT_EJECTIONS: &str = "ethrpc_actuator_recent_ejections";
    pub const EARLIEST_RETURN: &str = "ethrpc_actuator_earliest_return_timestamp_seconds";
    pub const EJECTED: &str = "ethrpc_actuator_ejected";
    pub const STANDBY: &str = "ethrpc_actuator_standby";
    pub const LIMIT: &str = "ethrpc_actuator_limit_requests_per_second";
    pub const WEIGHED_LATENCY: &str = "ethrpc_actuator_weighed_latency_seconds";
    pub const LATENCY_BUCKET: &str = "ethrpc_actuator_latency_bucket";
    pub const SLOW_START: &str = "ethrpc_actuator_slow_start_started_timestamp_seconds";
}

/// Upper bounds of `ethrpc_actuator_cycle_duration_seconds`, in seconds: a cycle is a few
/// milliseconds of planning around two round trips, and the query timeout bounds it.
const CYCLE_DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

common::label_enum! {
    /// `ethrpc_actuator_cycles_total{result}`.
    pub enum CycleResult {
        Ok => "ok",
        PrometheusError => "prometheus_error",
        HaproxyError => "haproxy_error",
    }
}

common::label_enum! {
    /// `ethrpc_actuator_errors_total{stage}`: what failed.
    pub enum ErrorSource {
        Prometheus => "prometheus",
        Haproxy => "haproxy",
    }
}

common::label_enum! {
    /// `ethrpc_actuator_stage_duration_seconds{stage}`: the steps of a cycle.
    pub enum Stage {
        Prometheus => "prometheus",
        HaproxyRead => "haproxy_read",
        Policy => "policy",
        HaproxyWrite => "haproxy_write",
    }
}

common::label_enum! {
    /// `ethrpc_actuator_server_mismatch{kind}`: how HAProxy and the config disagree.
    pub enum Mismatch {
        MissingInHaproxy => "missing_in_haproxy",
        NotConfigured => "not_configured",
    }
}

/// One HAProxy server's series (labels `backend`, `server`). A new gauge is a field here and a
/// line in [`SERVER_GAUGES`] (its name and help); it starts absent.
#[derive(Debug, Default)]
pub struct ServerSeries {
    labels: Labels,
    pub weight: Gauge,
    pub haproxy_weight: Gauge,
    /// Indexed by the position in [`EjectReason::ALL`].
    ejected: [Gauge; EjectReason::ALL.len()],
    pub recent_ejections: Gauge,
    pub returns_at: Gauge,
    pub weight_writes: Counter,
    pub standby: Gauge,
    pub client_rate: Gauge,
    pub client_error_ratio: Gauge,
    pub client_rpc_error_ratio: Gauge,
    pub client_rate_limited_ratio: Gauge,
    pub limit: Gauge,
    pub weighed_latency: Gauge,
    pub latency_bucket: Gauge,
    pub slow_start_since: Gauge,
}

impl ServerSeries {
    fn new(backend: &str, server: &str) -> Self {
        Self {
            labels: Labels::new(&[("backend", backend), ("server", server)]),
            ..Self::default()
        }
    }

    pub fn ejected(&self, reason: EjectReason) -> &Gauge {
        let index = EjectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        &self.ejected[index]
    }

    /// Takes its gauges out of the exposition (the server is gone from HAProxy), so that no
    /// alert stays on them; the write counter stays, as counters do.
    pub fn clear(&self) {
        for (_, _, pick) in SERVER_GAUGES {
            pick(self).clear();
        }
        for gauge in &self.ejected {
            gauge.clear();
        }
    }
}

type ServerGauge = (&'static str, &'static str, fn(&ServerSeries) -> &Gauge);
type BackendGauge = (&'static str, &'static str, fn(&BackendSeries) -> &Gauge);

/// Each per-server gauge: its name, its help and its field.
#[rustfmt::skip]
const SERVER_GAUGES: [ServerGauge; 13] = [
    (names::WEIGHT, "Weight HAProxy should have after the last cycle: what was written, else what it had (a change inside the deadband or missing data writes nothing).", |s| &s.weight),
    ("ethrpc_actuator_haproxy_weight", "Weight HAProxy reported for the server at the start of the last cycle.", |s| &s.haproxy_weight),
    (names::RECENT_EJECTIONS, "The server's recent ejection count: an ejected server must stay healthy for base_ejection times this (at most max_ejection) before it returns; decays while it stays in the pool.", |s| &s.recent_ejections),
    (names::EARLIEST_RETURN, "Unix time an ejected server may return at the earliest (it also needs readmit_after healthy cycles); absent while it is in the pool.", |s| &s.returns_at),
    (names::STANDBY, "1 while the server is healthy but its tier is not in use (weight 0), else 0.", |s| &s.standby),
    ("ethrpc_actuator_client_requests_per_second", "Client requests HAProxy sent the server, per second over the signal window (lbtot).", |s| &s.client_rate),
    ("ethrpc_actuator_client_error_ratio", "Share of the server's client requests over the signal window that failed: 5xx, connection and response errors (HAProxy's counters) and the provider's JSON-RPC errors inside a 200 (the backend's counting table).", |s| &s.client_error_ratio),
    ("ethrpc_actuator_client_rpc_error_ratio", "Share of the server's client requests over the signal window answered HTTP 200 with the provider's JSON-RPC error (header not found, pruned state, internal; not rate limits, not the client's own reverts or invalid params), from the backend's counting table.", |s| &s.client_rpc_error_ratio),
    ("ethrpc_actuator_client_rate_limited_ratio", "Share of the server's client requests over the signal window answered as rate limited (HTTP 429, or a JSON-RPC rate-limit error inside a 200), from the backend's counting table.", |s| &s.client_rate_limited_ratio),
    (names::LIMIT, "The request rate the server's weight is capped to: its plan's max_rps, or what it carried before answering rate limits (HTTP 429 or JSON-RPC); absent when unlimited.", |s| &s.limit),
    (names::WEIGHED_LATENCY, "The smoothed latency the server's weight follows (geometric mean); absent until one was observed. Read back at a restart.", |s| &s.weighed_latency),
    (names::LATENCY_BUCKET, "The latency bucket the server's weight is computed from (1 = the fastest, kept with hysteresis). Read back at a restart.", |s| &s.latency_bucket),
    (names::SLOW_START, "Unix time the server's slow start began; absent when it is not ramping up. Read back at a restart.", |s| &s.slow_start_since),
];

/// Each per-backend gauge: its name, its help and its field.
#[rustfmt::skip]
const BACKEND_GAUGES: [BackendGauge; 6] = [
    ("ethrpc_actuator_fail_open", "1 while every server of the backend is bad and all share the traffic.", |b| &b.fail_open),
    ("ethrpc_actuator_servers_without_data", "Servers of the backend whose weight is held because Prometheus has no fresh data for their provider (missing, stale or clock-skewed).", |b| &b.servers_without_data),
    ("ethrpc_actuator_tier_in_use", "The highest tier serving the backend; higher tiers stand by. Absent while no server is available.", |b| &b.tier_in_use),
    ("ethrpc_actuator_demand_requests_per_second", "Client requests per second to the backend over the signal window, from HAProxy's counters.", |b| &b.demand),
    ("ethrpc_actuator_capacity_requests_per_second", "Sum of the plan limits of the available servers of the tiers in use; absent when one of them is unlimited.", |b| &b.capacity),
    ("ethrpc_actuator_overloaded", "1 while the demand exceeds every plan limit in use and traffic is shared by limit, else 0.", |b| &b.overloaded),
];

/// One backend's series (label `backend`). A new gauge is a field here and a line in
/// [`BACKEND_GAUGES`]; it starts absent.
#[derive(Debug, Default)]
pub struct BackendSeries {
    labels: Labels,
    pub fail_open: Gauge,
    pub servers_without_data: Gauge,
    pub tier_in_use: Gauge,
    pub demand: Gauge,
    pub capacity: Gauge,
    pub overloaded: Gauge,
}

/// (backend, server, kind) of a mismatch.
type MismatchKey = (String, String, Mismatch);

/// Every series the actuator publishes.
#[derive(Debug)]
pub struct ActuatorMetrics {
    build_info: (Labels, Gauge),
    cycles: [(Labels, Counter); CycleResult::ALL.len()],
    errors: [(Labels, Counter); ErrorSource::ALL.len()],
    stage_durations: [(Labels, Gauge); Stage::ALL.len()],
    pub cycle_duration: Histogram,
    pub last_success: Gauge,
    /// How far the metrics engine's newest sample is behind its evaluation time.
    pub engine_lag: Gauge,
    pub engine_lagging: Gauge,
    servers: Mutex<BTreeMap<(String, String), Arc<ServerSeries>>>,
    backends: Mutex<BTreeMap<String, Arc<BackendSeries>>>,
    /// By (backend, server, kind); set to 0, not removed, when resolved.
    mismatches: Mutex<BTreeMap<MismatchKey, (Labels, Gauge)>>,
}

fn labelled<const N: usize, T: Default>(name: &str, values: [&'static str; N]) -> [(Labels, T); N] {
    values.map(|value| (Labels::new(&[(name, value)]), T::default()))
}

/// A gauge family and its series.
fn gauge_family(
    out: &mut Exposition,
    name: &'static str,
    help: &'static str,
    series: &[(&Labels, &Gauge)],
) {
    out.family(name, Kind::Gauge, help);
    for (labels, gauge) in series {
        out.gauge(name, labels, gauge);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ActuatorMetrics {
    pub fn new() -> Self {
        Self {
            build_info: (
                Labels::new(&[("version", env!("CARGO_PKG_VERSION"))]),
                Gauge::new(1.0),
            ),
            cycles: labelled("result", CycleResult::ALL.map(CycleResult::as_str)),
            errors: labelled("stage", ErrorSource::ALL.map(ErrorSource::as_str)),
            stage_durations: labelled("stage", Stage::ALL.map(Stage::as_str)),
            cycle_duration: Histogram::new(&CYCLE_DURATION_BUCKETS),
            last_success: Gauge::absent(),
            engine_lag: Gauge::absent(),
            engine_lagging: Gauge::absent(),
            servers: Mutex::default(),
            backends: Mutex::default(),
            mismatches: Mutex::default(),
        }
    }

    pub fn cycles(&self, result: CycleResult) -> &Counter {
        &self.cycles[result as usize].1
    }

    pub fn errors(&self, source: ErrorSource) -> &Counter {
        &self.errors[source as usize].1
    }

    pub fn stage_duration(&self, stage: Stage) -> &Gauge {
        &self.stage_durations[stage as usize].1
    }

    /// The series of `backend`/`server`, created on first use.
    pub fn server(&self, backend: &str, server: &str) -> Arc<ServerSeries> {
        lock(&self.servers)
            .entry((backend.to_owned(), server.to_owned()))
            .or_insert_with(|| Arc::new(ServerSeries::new(backend, server)))
            .clone()
    }

    /// The series of `backend`/`server` if it was ever published.
    pub fn existing_server(&self, backend: &str, server: &str) -> Option<Arc<ServerSeries>> {
        lock(&self.servers)
            .get(&(backend.to_owned(), server.to_owned()))
            .cloned()
    }

    /// The series of `backend`, created on first use.
    pub fn backend(&self, backend: &str) -> Arc<BackendSeries> {
        lock(&self.backends)
            .entry(backend.to_owned())
            .or_insert_with(|| {
                Arc::new(BackendSeries {
                    labels: Labels::new(&[("backend", backend)]),
                    ..BackendSeries::default()
                })
            })
            .clone()
    }

    /// Sets `ethrpc_actuator_server_mismatch` of `backend`/`server`/`kind`.
    pub fn set_mismatch(&self, backend: &str, server: &str, kind: Mismatch, value: f64) {
        lock(&self.mismatches)
            .entry((backend.to_owned(), server.to_owned(), kind))
            .or_insert_with(|| {
                let labels = [
                    ("backend", backend),
                    ("server", server),
                    ("kind", kind.as_str()),
                ];
                (Labels::new(&labels), Gauge::absent())
            })
            .1
            .set(value);
    }

    /// The Prometheus text exposition, written from the live values.
    pub fn render(&self) -> String {
        let servers: Vec<Arc<ServerSeries>> = lock(&self.servers).values().cloned().collect();
        let backends: Vec<Arc<BackendSeries>> = lock(&self.backends).values().cloned().collect();
        let mut out = Exposition::with_capacity(4096 + servers.len() * 1024);
        let per_server = |pick: fn(&ServerSeries) -> &Gauge| -> Vec<(&Labels, &Gauge)> {
            servers.iter().map(|s| (&s.labels, pick(s))).collect()
        };
        let per_backend = |pick: fn(&BackendSeries) -> &Gauge| -> Vec<(&Labels, &Gauge)> {
            backends.iter().map(|b| (&b.labels, pick(b))).collect()
        };
        gauge_family(
            &mut out,
            "ethrpc_actuator_build_info",
            "Always 1; the version label says which actuator runs.",
            &[(&self.build_info.0, &self.build_info.1)],
        );
        for (name, help, pick) in SERVER_GAUGES {
            gauge_family(&mut out, name, help, &per_server(pick));
        }
        for (name, help, pick) in BACKEND_GAUGES {
            gauge_family(&mut out, name, help, &per_backend(pick));
        }
        let stages: Vec<(&Labels, &Gauge)> =
            self.stage_durations.iter().map(|(l, g)| (l, g)).collect();
        gauge_family(&mut out, "ethrpc_actuator_stage_duration_seconds", "Duration of each stage of the last cycle: prometheus, policy, haproxy_read, haproxy_write.", &stages);
        gauge_family(&mut out, "ethrpc_actuator_last_success_timestamp_seconds", "Unix time of the last cycle that read Prometheus and HAProxy and applied its decisions.", &[(&Labels::new(&[]), &self.last_success)]);
        gauge_family(&mut out, "ethrpc_actuator_metrics_engine_lag_seconds", "How far the metrics engine's newest sample of the exporter is behind the engine's evaluation time (its own clock): a scrape interval on Prometheus, plus -search.latencyOffset on VictoriaMetrics. Absent while the engine has no sample of the exporter.", &[(&Labels::new(&[]), &self.engine_lag)]);
        gauge_family(&mut out, "ethrpc_actuator_metrics_engine_lagging", "1 while the metrics engine's lag is over half of max_data_age (fresh data looks stale and weights are held), else 0.", &[(&Labels::new(&[]), &self.engine_lagging)]);
        let name = names::EJECTED;
        out.family(name, Kind::Gauge, "1 if the policy judges the server bad for this reason (ejected, readmitting or failed open), else 0.");
        for s in &servers {
            for reason in EjectReason::ALL {
                out.gauge_with(
                    name,
                    &s.labels,
                    ("reason", reason.as_str()),
                    s.ejected(reason),
                );
            }
        }
        let name = "ethrpc_actuator_server_mismatch";
        out.family(name, Kind::Gauge, "1 for a configured provider whose server HAProxy lacks (kind missing_in_haproxy) or an HAProxy server no provider names (kind not_configured); left alone.");
        for (labels, gauge) in lock(&self.mismatches).values() {
            out.gauge(name, labels, gauge);
        }
        let counters = [
            (
                "ethrpc_actuator_cycles_total",
                "Cycles by result: ok, prometheus_error, haproxy_error.",
                &self.cycles[..],
            ),
            (
                "ethrpc_actuator_errors_total",
                "Errors by stage: prometheus, haproxy.",
                &self.errors[..],
            ),
        ];
        for (name, help, series) in counters {
            out.family(name, Kind::Counter, help);
            for (labels, counter) in series {
                out.counter(name, labels, counter);
            }
        }
        let name = "ethrpc_actuator_weight_writes_total";
        out.family(name, Kind::Counter, "Weights written to HAProxy.");
        for s in &servers {
            out.counter(name, &s.labels, &s.weight_writes);
        }
        let name = "ethrpc_actuator_cycle_duration_seconds";
        out.family(
            name,
            Kind::Histogram,
            "Duration of whole cycles (query, decide, read and write HAProxy).",
        );
        out.histogram(name, &Labels::new(&[]), &self.cycle_duration);
        out.finish()
    }
}

impl Default for ActuatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_gone_from_haproxy_leaves_only_its_write_counter() {
        let m = ActuatorMetrics::new();
        let s = m.server("b", "s1");
        s.weight.set(100.0);
        s.ejected(EjectReason::Slow).set(1.0);
        s.weight_writes.inc();
        let text = m.render();
        assert!(text.contains("ethrpc_actuator_weight{backend=\"b\",server=\"s1\"} 100\n"));
        assert!(text
            .contains("ethrpc_actuator_ejected{backend=\"b\",server=\"s1\",reason=\"slow\"} 1\n"));
        m.existing_server("b", "s1").unwrap().clear();
        let text = m.render();
        assert!(!text.contains("ethrpc_actuator_weight{"), "{text}");
        assert!(!text.contains("ethrpc_actuator_ejected{"), "{text}");
        assert!(
            text.contains("ethrpc_actuator_weight_writes_total{backend=\"b\",server=\"s1\"} 1\n")
        );
        assert!(m.existing_server("b", "other").is_none());
    }

    #[test]
    fn fixed_label_sets_are_published_from_the_start() {
        let text = ActuatorMetrics::new().render();
        for line in [
            "ethrpc_actuator_cycles_total{result=\"prometheus_error\"} 0\n",
            "ethrpc_actuator_errors_total{stage=\"haproxy\"} 0\n",
            "ethrpc_actuator_build_info{version=\"",
            "ethrpc_actuator_cycle_duration_seconds_count 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            !text.contains("ethrpc_actuator_last_success"),
            "unset: absent"
        );
    }

    #[test]
    fn every_series_set_passes_promtool() {
        let m = ActuatorMetrics::new();
        let s = m.server("b", "s\"1");
        for gauge in [
            &s.weight,
            &s.haproxy_weight,
            &s.recent_ejections,
            &s.returns_at,
        ] {
            gauge.set(1.0);
        }
        s.ejected(EjectReason::Down).set(0.0);
        s.weight_writes.inc();
        m.backend("b").fail_open.set(0.0);
        m.backend("b").servers_without_data.set(0.0);
        m.set_mismatch("b", "x", Mismatch::MissingInHaproxy, 1.0);
        m.stage_duration(Stage::Policy).set(0.001);
        m.last_success.set(1.7e9);
        m.engine_lag.set(0.5);
        m.engine_lagging.set(0.0);
        m.cycle_duration.observe(0.02);
        m.cycles(CycleResult::Ok).inc();
        let text = m.render();
        assert_eq!(
            testkit::metrics_text::promtool_check_metrics(&text),
            "",
            "{text}"
        );
    }

    #[test]
    fn a_resolved_mismatch_reads_zero() {
        let m = ActuatorMetrics::new();
        m.set_mismatch("b", "x", Mismatch::NotConfigured, 1.0);
        m.set_mismatch("b", "x", Mismatch::NotConfigured, 0.0);
        assert!(m.render().contains(
            "ethrpc_actuator_server_mismatch{backend=\"b\",server=\"x\",kind=\"not_configured\"} 0\n"
        ));
    }
}
