//! The exporter's Prometheus metrics. Labels are config names and the fixed [`Reason`] set only.

use common::metrics::{counter_vec, gauge_vec};
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Registry};

use crate::reason::Reason;

/// Every series the exporter publishes, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    pub up: GaugeVec,
    pub chain_id_match: GaugeVec,
    pub probe_duration: GaugeVec,
    pub request_duration: HistogramVec,
    pub block_number: GaugeVec,
    pub block_timestamp: GaugeVec,
    pub block_age: GaugeVec,
    pub block_lag: GaugeVec,
    pub chain_head: GaugeVec,
    pub probes: IntCounterVec,
    pub errors: IntCounterVec,
    pub retries: IntCounterVec,
    pub consecutive_failures: GaugeVec,
    pub last_probe: GaugeVec,
}

const PROVIDER: &[&str] = &["chain", "provider"];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge =
            |name: &str, help: &str, labels: &[&str]| gauge_vec(&registry, name, help, labels);
        let counter =
            |name: &str, help: &str, labels: &[&str]| counter_vec(&registry, name, help, labels);
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "ethrpc_request_duration_seconds",
                "Time from the start of a successful head request (eth_getBlockByNumber latest) to its winning answer, a retry or hedge included.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0,
            ]),
            PROVIDER,
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_duration.clone()))
            .expect("unique metric");
        let build_info = gauge(
            "ethrpc_exporter_build_info",
            "Always 1; the version label says which exporter runs.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        Self {
            up: gauge("ethrpc_up", "1 if the last probe succeeded and the chain id matches, else 0. A probe fails only when a second attempt confirms the failure.", PROVIDER),
            chain_id_match: gauge("ethrpc_chain_id_match", "1 if the provider's eth_chainId matches the config, 0 if not; absent until checked.", PROVIDER),
            probe_duration: gauge("ethrpc_probe_duration_seconds", "Time from the start of the last successful head request to its winning answer.", PROVIDER),
            request_duration,
            block_number: gauge("ethrpc_block_number", "Block number of the provider's last answer, as it came (it may jitter a block or two between the provider's replicas; lag and age use the effective head instead); absent until it answers.", PROVIDER),
            block_timestamp: gauge("ethrpc_block_timestamp_seconds", "Unix timestamp of the block of the provider's last answer, as it came.", PROVIDER),
            block_age: gauge("ethrpc_block_age_seconds", "Time of the last probe round minus the timestamp of the provider's effective head: the highest block it answered within the exporter's head_window. Negative, as it is, when the timestamp is ahead of the exporter's clock (skew on one side; logged when over 15 s).", PROVIDER),
            block_lag: gauge("ethrpc_block_lag", "Blocks the provider's effective head (the highest block it answered within the exporter's head_window) is behind the chain head (0 or more).", PROVIDER),
            chain_head: gauge("ethrpc_chain_head_block_number", "Chain head: of the effective heads of the providers that answered in the last round, the second highest when three or more answered; of two, the higher only if the lower one's own block age shows it behind, else the lower; never a block beyond what the chain can have made since the last agreed head (such an answer is an implausible_block error).", &["chain"]),
            probes: counter("ethrpc_probes_total", "Probes made (chain id check, head block request and their retries count as one).", PROVIDER),
            errors: counter("ethrpc_probe_errors_total", "Failed probes by reason, each confirmed by a second attempt unless the provider answered deliberately (a 429, a 4xx, a wrong chain id).", &["chain", "provider", "reason"]),
            retries: counter("ethrpc_probe_retries_total", "Attempts that failed or hung and were retried or hedged within a probe: provider noise absorbed, or the first half of a confirmed failure.", PROVIDER),
            consecutive_failures: gauge("ethrpc_probe_consecutive_failures", "Confirmed failed probes in a row; 0 after a success.", PROVIDER),
            last_probe: gauge("ethrpc_last_probe_timestamp_seconds", "Unix time the last probe of this provider finished, successful or not.", PROVIDER),
            registry,
        }
    }

    /// Creates the series that exist from the start: `up` at 0, no failures yet and zeroed
    /// counters.
    pub fn register_provider(&self, chain: &str, provider: &str) {
        let labels = [chain, provider];
        self.up.with_label_values(&labels).set(0.0);
        self.consecutive_failures
            .with_label_values(&labels)
            .set(0.0);
        self.probes.with_label_values(&labels);
        self.retries.with_label_values(&labels);
        self.request_duration.with_label_values(&labels);
        for reason in Reason::ALL {
            self.errors
                .with_label_values(&[chain, provider, reason.as_str()]);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        common::metrics::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
