//! The actuator's own Prometheus metrics.

use common::metrics::{counter_vec, gauge_vec};
use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, Registry};

/// Every series the actuator publishes.
pub struct ActuatorMetrics {
    registry: Registry,
    pub weight: GaugeVec,
    pub haproxy_weight: GaugeVec,
    pub ejected: GaugeVec,
    pub fail_open: GaugeVec,
    pub cycles: IntCounterVec,
    pub errors: IntCounterVec,
    pub weight_writes: IntCounterVec,
    pub cycle_duration: Histogram,
    pub stage_duration: GaugeVec,
    pub last_success: Gauge,
    pub server_mismatch: GaugeVec,
    pub ejections: GaugeVec,
    pub returns_at: GaugeVec,
    pub servers_without_data: GaugeVec,
}

impl ActuatorMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge =
            |name: &str, help: &str, labels: &[&str]| gauge_vec(&registry, name, help, labels);
        let counter =
            |name: &str, help: &str, labels: &[&str]| counter_vec(&registry, name, help, labels);
        let cycle_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ethrpc_actuator_cycle_duration_seconds",
                "Duration of whole cycles (query, decide, read and write HAProxy).",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(cycle_duration.clone()))
            .expect("unique metric");
        let last_success = Gauge::new(
            "ethrpc_actuator_last_success_timestamp_seconds",
            "Unix time of the last cycle that read Prometheus and HAProxy and applied its decisions.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(last_success.clone()))
            .expect("unique metric");
        gauge(
            "ethrpc_actuator_build_info",
            "Always 1; the version label says which actuator runs.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1.0);
        let bs = &["backend", "server"];
        let cycles = counter(
            "ethrpc_actuator_cycles_total",
            "Cycles by result: ok, prometheus_error, haproxy_error.",
            &["result"],
        );
        let errors = counter(
            "ethrpc_actuator_errors_total",
            "Errors by stage: prometheus, haproxy.",
            &["stage"],
        );
        for result in ["ok", "prometheus_error", "haproxy_error"] {
            cycles.with_label_values(&[result]);
        }
        for stage in ["prometheus", "haproxy"] {
            errors.with_label_values(&[stage]);
        }
        Self {
            weight: gauge("ethrpc_actuator_weight", "Weight HAProxy should have after the last cycle: what was written, else what it had (a change inside the deadband or missing data writes nothing).", bs),
            haproxy_weight: gauge("ethrpc_actuator_haproxy_weight", "Weight HAProxy reported for the server at the start of the last cycle.", bs),
            ejected: gauge("ethrpc_actuator_ejected", "1 if the policy judges the server bad for this reason (ejected, readmitting or failed open), else 0.", &["backend", "server", "reason"]),
            fail_open: gauge("ethrpc_actuator_fail_open", "1 while every server of the backend is bad and all share the traffic.", &["backend"]),
            cycles,
            errors,
            weight_writes: counter("ethrpc_actuator_weight_writes_total", "Weights written to HAProxy.", bs),
            cycle_duration,
            stage_duration: gauge("ethrpc_actuator_stage_duration_seconds", "Duration of each stage of the last cycle: prometheus, policy, haproxy_read, haproxy_write.", &["stage"]),
            last_success,
            server_mismatch: gauge("ethrpc_actuator_server_mismatch", "1 for a configured provider whose server HAProxy lacks (kind missing_in_haproxy) or an HAProxy server no provider names (kind not_configured); left alone.", &["backend", "server", "kind"]),
            ejections: gauge("ethrpc_actuator_recent_ejections", "The server's recent ejection count: an ejected server must stay healthy for base_ejection times this (at most max_ejection) before it returns; decays while it stays in the pool.", bs),
            returns_at: gauge("ethrpc_actuator_earliest_return_timestamp_seconds", "Unix time an ejected server may return at the earliest (it also needs readmit_after healthy cycles); absent while it is in the pool.", bs),
            servers_without_data: gauge("ethrpc_actuator_servers_without_data", "Servers of the backend whose weight is held because Prometheus has no fresh data for their provider (missing, stale or clock-skewed).", &["backend"]),
            registry,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        common::metrics::render(&self.registry)
    }
}

impl Default for ActuatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}
