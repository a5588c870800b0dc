//! The exporter's Prometheus metrics: per provider a struct of live values whose label text is
//! rendered once when its chain registers, and `/metrics` written straight from them. Labels are
//! config names and the fixed [`Reason`] set only.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use common::config::ChainConfig;
use common::metric_names as names;
use common::metrics::{Counter, Exposition, Gauge, Histogram, Kind, Labels};

use crate::capability::{Capability, Finding};
use crate::reason::Reason;

/// Upper bounds of `ethrpc_request_duration_seconds`, in seconds. The dashboard's p50 and p95
/// panels interpolate within them, so they cover where providers answer (tens of milliseconds to
/// the default 2 s probe timeout), and the `EthrpcProviderSlow` alert (p95 over 1.5 s) needs 1.5
/// as a bound. Dropped from the first set, as no dashboard or alert reads them: 0.01 (below a
/// remote provider's round trip; the panels show anything under 25 ms as fast either way) and 5
/// and 10 (beyond the default probe timeout, which bounds a successful request; the alert only
/// asks whether p95 is over 1.5).
const REQUEST_DURATION_BUCKETS: [f64; 8] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5];

const BUILD_INFO: &str = "ethrpc_exporter_build_info";
const CHAIN_HEAD: &str = "ethrpc_chain_head_block_number";
const REQUEST_DURATION: &str = "ethrpc_request_duration_seconds";
const ERRORS: &str = names::PROBE_ERRORS;
const CAPABILITY: &str = "ethrpc_capability";
const CAPABILITY_PROBES: &str = "ethrpc_capability_probes_total";
const CAPABILITY_FAILURES: &str = "ethrpc_capability_probe_failures_total";

/// One provider's series (labels `chain`, `provider`).
#[derive(Debug)]
pub struct ProviderMetrics {
    labels: Labels,
    pub up: Gauge,
    pub chain_id_match: Gauge,
    pub probe_duration: Gauge,
    pub request_duration: Histogram,
    pub block_number: Gauge,
    pub block_timestamp: Gauge,
    pub block_age: Gauge,
    pub block_lag: Gauge,
    pub probes: Counter,
    /// Indexed by `Reason as usize` (the order of [`Reason::ALL`]).
    errors: [Counter; Reason::ALL.len()],
    pub retries: Counter,
    pub consecutive_failures: Gauge,
    pub last_probe: Gauge,
    /// Blocks its finalized block is behind the highest its peers answered.
    pub finalized_lag: Gauge,
    /// Blocks its safe block is behind the highest its peers answered.
    pub safe_lag: Gauge,
    /// One per capability its chain probes, in the order of [`Capability::ALL`].
    pub capabilities: Vec<CapabilityMetrics>,
}

/// One provider's series of one capability (labels `chain`, `provider`, `capability`).
#[derive(Debug)]
pub struct CapabilityMetrics {
    pub capability: Capability,
    labels: Labels,
    /// The last finding: 0 for none yet, else its index in [`Finding::ALL`] plus one.
    finding: AtomicUsize,
    pub probes: Counter,
    /// Probes that failed without a deliberate answer (timeouts, 5xx, rate limits).
    pub failures: Counter,
}

impl CapabilityMetrics {
    fn new(chain: &str, provider: &str, capability: Capability) -> Self {
        Self {
            capability,
            labels: Labels::new(&[
                ("chain", chain),
                ("provider", provider),
                ("capability", capability.as_str()),
            ]),
            finding: AtomicUsize::new(0),
            probes: Counter::default(),
            failures: Counter::default(),
        }
    }

    /// The last finding; `None` until the first deliberate answer.
    pub fn finding(&self) -> Option<Finding> {
        let index = self.finding.load(Relaxed).checked_sub(1)?;
        Finding::ALL.get(index).copied()
    }

    /// Records `finding`, returning the one before.
    pub fn set_finding(&self, finding: Finding) -> Option<Finding> {
        let before = self.finding();
        self.finding.store(finding as usize + 1, Relaxed);
        before
    }
}

impl ProviderMetrics {
    /// The series that exist from the start: `up` at 0, no failures yet, counters at zero so
    /// that `rate()` works from the first probe; the rest appear once known.
    fn new(chain: &str, provider: &str, capabilities: &[Capability]) -> Self {
        Self {
            labels: Labels::new(&[("chain", chain), ("provider", provider)]),
            up: Gauge::new(0.0),
            chain_id_match: Gauge::absent(),
            probe_duration: Gauge::absent(),
            request_duration: Histogram::new(&REQUEST_DURATION_BUCKETS),
            block_number: Gauge::absent(),
            block_timestamp: Gauge::absent(),
            block_age: Gauge::absent(),
            block_lag: Gauge::absent(),
            probes: Counter::default(),
            errors: Default::default(),
            retries: Counter::default(),
            consecutive_failures: Gauge::new(0.0),
            last_probe: Gauge::absent(),
            finalized_lag: Gauge::absent(),
            safe_lag: Gauge::absent(),
            capabilities: capabilities
                .iter()
                .map(|c| CapabilityMetrics::new(chain, provider, *c))
                .collect(),
        }
    }

    /// The series of `capability`, if its chain probes it.
    pub fn capability(&self, capability: Capability) -> Option<&CapabilityMetrics> {
        self.capabilities
            .iter()
            .find(|c| c.capability == capability)
    }

    /// The lag gauge of a block-tag capability (`finalized`, `safe`); `None` for the others.
    pub fn tag_lag(&self, capability: Capability) -> Option<&Gauge> {
        match capability {
            Capability::Finalized => Some(&self.finalized_lag),
            Capability::Safe => Some(&self.safe_lag),
            Capability::Archive | Capability::Logs | Capability::Trace => None,
        }
    }

    /// `ethrpc_probe_errors_total` for `reason`.
    pub fn errors(&self, reason: Reason) -> &Counter {
        &self.errors[reason as usize]
    }
}

/// One chain's series: its head (label `chain`) and its providers', in config order.
#[derive(Debug)]
pub struct ChainMetrics {
    labels: Labels,
    pub head: Gauge,
    pub providers: Vec<ProviderMetrics>,
}

pub type ProviderGauge = (&'static str, &'static str, fn(&ProviderMetrics) -> &Gauge);
type ProviderCounter = (&'static str, &'static str, fn(&ProviderMetrics) -> &Counter);

/// Each per-provider gauge: its name, its help and its field (the bench renders the same families
/// through another writer).
pub const PROVIDER_GAUGES: [ProviderGauge; 11] = [
    (names::UP, "1 if the last probe succeeded and the chain id matches, else 0. A probe fails only when a second attempt confirms the failure.", |p| &p.up),
    (names::CHAIN_ID_MATCH, "1 if the provider's eth_chainId matches the config, 0 if not; absent until checked.", |p| &p.chain_id_match),
    (names::PROBE_DURATION, "Time from the start of the last successful head request to its winning answer.", |p| &p.probe_duration),
    ("ethrpc_block_number", "Block number of the provider's last answer, as it came (it may jitter a block or two between the provider's replicas; lag and age use the effective head instead); absent until it answers.", |p| &p.block_number),
    ("ethrpc_block_timestamp_seconds", "Unix timestamp of the block of the provider's last answer, as it came.", |p| &p.block_timestamp),
    (names::BLOCK_AGE, "Time of the last probe round minus the timestamp of the provider's effective head: the highest block it answered within the exporter's head_window. Negative, as it is, when the timestamp is ahead of the exporter's clock (skew on one side; logged when over 15 s).", |p| &p.block_age),
    (names::BLOCK_LAG, "Blocks the provider's effective head (the highest block it answered within the exporter's head_window) is behind the chain head (0 or more).", |p| &p.block_lag),
    ("ethrpc_probe_consecutive_failures", "Confirmed failed probes in a row; 0 after a success.", |p| &p.consecutive_failures),
    (names::LAST_PROBE, "Unix time the last probe of this provider finished, successful or not.", |p| &p.last_probe),
    ("ethrpc_finalized_block_lag", "Blocks the provider's finalized block is behind the highest finalized block its chain's providers answered in the last capability round ([chain.capabilities] finalized); absent unless probed.", |p| &p.finalized_lag),
    ("ethrpc_safe_block_lag", "Blocks the provider's safe block is behind the highest safe block its chain's providers answered in the last capability round ([chain.capabilities] safe); absent unless probed.", |p| &p.safe_lag),
];

const PROVIDER_COUNTERS: [ProviderCounter; 2] = [
    (names::PROBES, "Probes made (chain id check, head block request and their retries count as one).", |p| &p.probes),
    ("ethrpc_probe_retries_total", "Attempts that failed or hung and were retried or hedged within a probe: provider noise absorbed, or the first half of a confirmed failure.", |p| &p.retries),
];

/// Every series the exporter publishes.
#[derive(Debug)]
pub struct Metrics {
    /// `ethrpc_exporter_build_info`: always 1, labelled with the version.
    build_info: (Labels, Gauge),
    chains: Mutex<Vec<Arc<ChainMetrics>>>,
    /// Bytes of the last exposition, to size the next at once.
    last_len: AtomicUsize,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            build_info: (
                Labels::new(&[("version", env!("CARGO_PKG_VERSION"))]),
                Gauge::new(1.0),
            ),
            chains: Mutex::default(),
            last_len: AtomicUsize::new(0),
        }
    }

    /// Creates `chain`'s series and returns them for its prober to write.
    pub fn register_chain(&self, chain: &ChainConfig) -> Arc<ChainMetrics> {
        let name = chain.name.as_str();
        let capabilities = chain
            .capabilities
            .as_ref()
            .map(Capability::enabled)
            .unwrap_or_default();
        let metrics = Arc::new(ChainMetrics {
            labels: Labels::new(&[("chain", name)]),
            head: Gauge::absent(),
            providers: chain
                .providers
                .iter()
                .map(|p| ProviderMetrics::new(name, p.name.as_str(), &capabilities))
                .collect(),
        });
        self.lock_chains().push(metrics.clone());
        metrics
    }

    fn lock_chains(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ChainMetrics>>> {
        self.chains.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Prometheus text exposition, written from the live values.
    pub fn render(&self) -> String {
        let chains = self.lock_chains().clone();
        let providers = || chains.iter().flat_map(|c| &c.providers);
        let mut out = Exposition::with_capacity(self.last_len.load(Relaxed));
        out.family(
            BUILD_INFO,
            Kind::Gauge,
            "Always 1; the version label says which exporter runs.",
        );
        out.gauge(BUILD_INFO, &self.build_info.0, &self.build_info.1);
        out.family(CHAIN_HEAD, Kind::Gauge, "Chain head: of the effective heads of the providers that answered in the last round, the second highest when three or more answered; of two, the higher only if the lower one's own block age shows it behind, else the lower; never a block beyond what the chain can have made since the last agreed head (such an answer is an implausible_block error).");
        for chain in &chains {
            out.gauge(CHAIN_HEAD, &chain.labels, &chain.head);
        }
        for (name, help, gauge) in PROVIDER_GAUGES {
            out.family(name, Kind::Gauge, help);
            for p in providers() {
                out.gauge(name, &p.labels, gauge(p));
            }
        }
        for (name, help, counter) in PROVIDER_COUNTERS {
            out.family(name, Kind::Counter, help);
            for p in providers() {
                out.counter(name, &p.labels, counter(p));
            }
        }
        out.family(ERRORS, Kind::Counter, "Failed probes by reason, each confirmed by a second attempt unless the provider answered deliberately (a 429, a 4xx, a wrong chain id).");
        for p in providers() {
            for reason in Reason::ALL {
                out.counter_with(
                    ERRORS,
                    &p.labels,
                    ("reason", reason.as_str()),
                    p.errors(reason),
                );
            }
        }
        out.family(REQUEST_DURATION, Kind::Histogram, "Time from the start of a successful head request (eth_getBlockByNumber latest) to its winning answer, a retry or hedge included.");
        for p in providers() {
            out.histogram(REQUEST_DURATION, &p.labels, &p.request_duration);
        }
        let capabilities = || providers().flat_map(|p| &p.capabilities);
        out.family(CAPABILITY, Kind::Gauge, "1 if the provider served the capability's probe at its last deliberate answer, 0 if it refused (the reason label says why: method_unavailable, missing_state, over_limit, missing_logs); absent until one. Probes that fail without an answer (timeouts, 5xx, rate limits) leave it as it was.");
        for c in capabilities() {
            if let Some(finding) = c.finding() {
                let served = Gauge::new(if finding == Finding::Capable {
                    1.0
                } else {
                    0.0
                });
                out.gauge_with(CAPABILITY, &c.labels, ("reason", finding.as_str()), &served);
            }
        }
        out.family(
            CAPABILITY_PROBES,
            Kind::Counter,
            "Capability probes sent ([chain.capabilities]), one per capability per round.",
        );
        for c in capabilities() {
            out.counter(CAPABILITY_PROBES, &c.labels, &c.probes);
        }
        out.family(CAPABILITY_FAILURES, Kind::Counter, "Capability probes that failed without a deliberate answer (timeouts, 5xx, rate limits): no evidence either way.");
        for c in capabilities() {
            out.counter(CAPABILITY_FAILURES, &c.labels, &c.failures);
        }
        let text = out.finish();
        self.last_len.store(text.len(), Relaxed);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use common::config::Config;
    use proptest::prelude::*;
    use testkit::metrics_text::promtool_check_metrics;

    use super::*;

    /// Chain `dev` with providers `a` and `b`, registered.
    fn two_providers() -> (Metrics, Arc<ChainMetrics>) {
        let text = "[[chain]]\nname = \"dev\"\nchain_id = 1\nbackend = \"rpc\"\n\
                    [[chain.provider]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                    [[chain.provider]]\nname = \"b\"\nurl = \"http://127.0.0.1:2\"\n";
        let config = Config::parse(Path::new("t.toml"), text, |_| None).expect("valid config");
        let metrics = Metrics::new();
        let chain = metrics.register_chain(&config.chains[0]);
        (metrics, chain)
    }

    #[test]
    fn errors_are_indexed_in_the_order_of_all_reasons() {
        for (i, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "{reason}");
        }
    }

    #[test]
    fn two_providers_render_as_the_expected_exposition() {
        let (metrics, chain) = two_providers();
        let [a, b] = &chain.providers[..] else {
            panic!("two providers")
        };
        chain.head.set(100.0);
        a.up.set(1.0);
        a.chain_id_match.set(1.0);
        a.probe_duration.set(0.25);
        a.request_duration.observe(0.25);
        a.block_number.set(100.0);
        a.block_timestamp.set(1_700_000_000.0);
        a.block_age.set(-2.5);
        a.block_lag.set(0.0);
        a.probes.inc();
        a.retries.inc_by(2);
        a.last_probe.set(1_700_000_002.5);
        b.probes.inc();
        b.errors(Reason::Timeout).inc();
        b.consecutive_failures.set(1.0);
        b.request_duration.observe(7.0);
        let version = env!("CARGO_PKG_VERSION");
        let expected = format!(
            r#"# HELP ethrpc_exporter_build_info Always 1; the version label says which exporter runs.
# TYPE ethrpc_exporter_build_info gauge
ethrpc_exporter_build_info{{version="{version}"}} 1
# HELP ethrpc_chain_head_block_number Chain head: of the effective heads of the providers that answered in the last round, the second highest when three or more answered; of two, the higher only if the lower one's own block age shows it behind, else the lower; never a block beyond what the chain can have made since the last agreed head (such an answer is an implausible_block error).
# TYPE ethrpc_chain_head_block_number gauge
ethrpc_chain_head_block_number{{chain="dev"}} 100
# HELP ethrpc_up 1 if the last probe succeeded and the chain id matches, else 0. A probe fails only when a second attempt confirms the failure.
# TYPE ethrpc_up gauge
ethrpc_up{{chain="dev",provider="a"}} 1
ethrpc_up{{chain="dev",provider="b"}} 0
# HELP ethrpc_chain_id_match 1 if the provider's eth_chainId matches the config, 0 if not; absent until checked.
# TYPE ethrpc_chain_id_match gauge
ethrpc_chain_id_match{{chain="dev",provider="a"}} 1
# HELP ethrpc_probe_duration_seconds Time from the start of the last successful head request to its winning answer.
# TYPE ethrpc_probe_duration_seconds gauge
ethrpc_probe_duration_seconds{{chain="dev",provider="a"}} 0.25
# HELP ethrpc_block_number Block number of the provider's last answer, as it came (it may jitter a block or two between the provider's replicas; lag and age use the effective head instead); absent until it answers.
# TYPE ethrpc_block_number gauge
ethrpc_block_number{{chain="dev",provider="a"}} 100
# HELP ethrpc_block_timestamp_seconds Unix timestamp of the block of the provider's last answer, as it came.
# TYPE ethrpc_block_timestamp_seconds gauge
ethrpc_block_timestamp_seconds{{chain="dev",provider="a"}} 1700000000
# HELP ethrpc_block_age_seconds Time of the last probe round minus the timestamp of the provider's effective head: the highest block it answered within the exporter's head_window. Negative, as it is, when the timestamp is ahead of the exporter's clock (skew on one side; logged when over 15 s).
# TYPE ethrpc_block_age_seconds gauge
ethrpc_block_age_seconds{{chain="dev",provider="a"}} -2.5
# HELP ethrpc_block_lag Blocks the provider's effective head (the highest block it answered within the exporter's head_window) is behind the chain head (0 or more).
# TYPE ethrpc_block_lag gauge
ethrpc_block_lag{{chain="dev",provider="a"}} 0
# HELP ethrpc_probe_consecutive_failures Confirmed failed probes in a row; 0 after a success.
# TYPE ethrpc_probe_consecutive_failures gauge
ethrpc_probe_consecutive_failures{{chain="dev",provider="a"}} 0
ethrpc_probe_consecutive_failures{{chain="dev",provider="b"}} 1
# HELP ethrpc_last_probe_timestamp_seconds Unix time the last probe of this provider finished, successful or not.
# TYPE ethrpc_last_probe_timestamp_seconds gauge
ethrpc_last_probe_timestamp_seconds{{chain="dev",provider="a"}} 1700000002.5
# HELP ethrpc_probes_total Probes made (chain id check, head block request and their retries count as one).
# TYPE ethrpc_probes_total counter
ethrpc_probes_total{{chain="dev",provider="a"}} 1
ethrpc_probes_total{{chain="dev",provider="b"}} 1
# HELP ethrpc_probe_retries_total Attempts that failed or hung and were retried or hedged within a probe: provider noise absorbed, or the first half of a confirmed failure.
# TYPE ethrpc_probe_retries_total counter
ethrpc_probe_retries_total{{chain="dev",provider="a"}} 2
ethrpc_probe_retries_total{{chain="dev",provider="b"}} 0
# HELP ethrpc_probe_errors_total Failed probes by reason, each confirmed by a second attempt unless the provider answered deliberately (a 429, a 4xx, a wrong chain id).
# TYPE ethrpc_probe_errors_total counter
{errors}# HELP ethrpc_request_duration_seconds Time from the start of a successful head request (eth_getBlockByNumber latest) to its winning answer, a retry or hedge included.
# TYPE ethrpc_request_duration_seconds histogram
{histograms}"#,
            errors = ["a", "b"]
                .into_iter()
                .flat_map(|p| Reason::ALL.map(|r| (p, r)))
                .map(|(p, r)| {
                    let n = u8::from(p == "b" && r == Reason::Timeout);
                    format!("ethrpc_probe_errors_total{{chain=\"dev\",provider=\"{p}\",reason=\"{r}\"}} {n}\n")
                })
                .collect::<String>(),
            histograms = [("a", 0.25, [0, 0, 0, 1, 1, 1, 1, 1, 1]), ("b", 7.0, [0, 0, 0, 0, 0, 0, 0, 0, 1])]
                .into_iter()
                .map(|(p, sum, counts)| {
                    let labels = format!("chain=\"dev\",provider=\"{p}\"");
                    let le = ["0.025", "0.05", "0.1", "0.25", "0.5", "1", "1.5", "2.5", "+Inf"];
                    let buckets: String = le
                        .iter()
                        .zip(counts)
                        .map(|(le, n)| format!("ethrpc_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n"))
                        .collect();
                    format!("{buckets}ethrpc_request_duration_seconds_sum{{{labels}}} {sum}\nethrpc_request_duration_seconds_count{{{labels}}} 1\n")
                })
                .collect::<String>(),
        );
        let text = metrics.render();
        assert_eq!(text, expected);
        assert_eq!(
            promtool_check_metrics(&text),
            "",
            "promtool must print nothing"
        );
    }

    /// One write to a provider's (or the chain's) series.
    #[derive(Debug, Clone)]
    enum Update {
        Gauge(usize, usize, f64),
        Counter(usize, usize, u64),
        Error(usize, usize, u64),
        Observe(usize, f64),
        Head(f64),
    }

    fn update() -> impl Strategy<Value = Update> {
        prop_oneof![
            (0..2usize, 0..PROVIDER_GAUGES.len(), any::<f64>())
                .prop_map(|(p, g, v)| Update::Gauge(p, g, v)),
            (0..2usize, 0..PROVIDER_COUNTERS.len(), 0..u64::MAX / 4)
                .prop_map(|(p, c, n)| Update::Counter(p, c, n)),
            (0..2usize, 0..Reason::ALL.len(), 0..u64::MAX / 4)
                .prop_map(|(p, r, n)| Update::Error(p, r, n)),
            (0..2usize, any::<f64>()).prop_map(|(p, v)| Update::Observe(p, v)),
            any::<f64>().prop_map(Update::Head),
        ]
    }

    /// Whether `line` is `name{label="value",…} value`, its name one of `family`'s.
    fn is_sample_of(line: &str, family: &str, kind: &str) -> bool {
        let Some((series, value)) = line.rsplit_once(' ') else {
            return false;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => match rest.strip_suffix('}') {
                Some(labels) => (name, labels),
                None => return false,
            },
            None => (series, ""),
        };
        let name_ok = name == family
            || (kind == "histogram"
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family)));
        let labels_ok = labels.is_empty()
            || labels.split(',').all(|pair| {
                pair.split_once('=').is_some_and(|(k, v)| {
                    !k.is_empty()
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && v.len() >= 2
                        && v.starts_with('"')
                        && v.ends_with('"')
                        && !v[1..v.len() - 1].contains(['"', '\\'])
                })
            });
        let value_ok = matches!(value, "NaN" | "+Inf" | "-Inf")
            || (value
                .chars()
                .all(|c| c.is_ascii_digit() || ".-+e".contains(c))
                && value.parse::<f64>().is_ok());
        name_ok && labels_ok && value_ok
    }

    proptest! {
        #[test]
        fn any_updates_render_parseable_lines(updates in prop::collection::vec(update(), 0..60)) {
            let (metrics, chain) = two_providers();
            for u in updates {
                match u {
                    Update::Gauge(p, g, v) => (PROVIDER_GAUGES[g].2)(&chain.providers[p]).set(v),
                    Update::Counter(p, c, n) => (PROVIDER_COUNTERS[c].2)(&chain.providers[p]).inc_by(n),
                    Update::Error(p, r, n) => chain.providers[p].errors(Reason::ALL[r]).inc_by(n),
                    Update::Observe(p, v) => chain.providers[p].request_duration.observe(v),
                    Update::Head(v) => chain.head.set(v),
                }
            }
            let text = metrics.render();
            prop_assert!(text.ends_with('\n'));
            let mut family: Option<(&str, &str)> = None;
            let mut seen = std::collections::HashSet::new();
            let mut lines = text.lines();
            while let Some(line) = lines.next() {
                if let Some(rest) = line.strip_prefix("# HELP ") {
                    let (name, _) = rest.split_once(' ').unwrap_or((rest, ""));
                    let typed = lines.next().and_then(|l| l.strip_prefix("# TYPE "));
                    let (typed_name, kind) = typed.and_then(|t| t.split_once(' ')).unwrap_or_default();
                    prop_assert_eq!(typed_name, name, "TYPE follows HELP: {}", line);
                    prop_assert!(matches!(kind, "gauge" | "counter" | "histogram"), "{}", kind);
                    prop_assert!(seen.insert(name), "one header per family: {}", name);
                    family = Some((name, kind));
                } else {
                    let (name, kind) = family.unwrap_or_default();
                    prop_assert!(is_sample_of(line, name, kind), "not a sample of {}: {}", name, line);
                }
            }
        }
    }
}
