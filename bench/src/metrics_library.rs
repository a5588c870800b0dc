//! `metrics-library`: the exporter's `/metrics` written by its own writer (`common::metrics`)
//! beside the same series through `prometheus-client` (the official Rust client: a registry,
//! `Family` per metric, derived label sets) in both its formats, the text format 0.0.4 that
//! `promtool` reads and OpenMetrics, in this process, at 100 and 1 000 providers (issue 19: a
//! library again, if one can keep `/metrics` ≤ 5 ms p50 at 1 000 providers). Every series holds
//! a value, as after a probe round; each writer renders the same families.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use common::config::Config;
use exporter::metrics::{Metrics, PROVIDER_GAUGES};
use exporter::reason::Reason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::stats::{quantile, table};

const PER_CHAIN: usize = 100;
const RENDERS: usize = 200;
const BUCKETS: [f64; 8] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    chain: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    chain: String,
    provider: String,
    reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The exporter's own writer over `n` providers, every series set.
fn ours(n: usize) -> anyhow::Result<Metrics> {
    let mut text = String::from("[exporter]\nlisten = \"127.0.0.1:1\"\n");
    for c in 0..n.div_ceil(PER_CHAIN) {
        let _ = writeln!(
            text,
            "[[chain]]\nname = \"c{c}\"\nchain_id = 1\nbackend = \"b{c}\""
        );
        for p in (c * PER_CHAIN)..n.min((c + 1) * PER_CHAIN) {
            let _ = writeln!(
                text,
                "[[chain.provider]]\nname = \"p{p}\"\nurl = \"http://127.0.0.1:1/p{p}\""
            );
        }
    }
    let config = Config::parse(Path::new("bench.toml"), &text, |_| None)?;
    let metrics = Metrics::new();
    for chain in &config.chains {
        let m = metrics.register_chain(chain);
        m.head.set(21_000_000.0);
        for (i, p) in m.providers.iter().enumerate() {
            for (_, _, gauge) in PROVIDER_GAUGES {
                gauge(p).set(i as f64 + 0.125);
            }
            p.request_duration.observe(0.04);
            p.probes.inc_by(1000);
            p.retries.inc();
        }
    }
    Ok(metrics)
}

/// The same families through `prometheus-client`.
fn library(n: usize) -> Registry {
    let mut registry = Registry::default();
    let gauges: Vec<Family<ProviderLabels, FloatGauge>> =
        PROVIDER_GAUGES.iter().map(|_| Family::default()).collect();
    let probes = Family::<ProviderLabels, Counter>::default();
    let retries = Family::<ProviderLabels, Counter>::default();
    let errors = Family::<ReasonLabels, Counter>::default();
    let durations =
        Family::<ProviderLabels, Histogram>::new_with_constructor(|| Histogram::new(BUCKETS));
    let head = Family::<Vec<(String, String)>, FloatGauge>::default();
    for p in 0..n {
        let labels = ProviderLabels {
            chain: format!("c{}", p / PER_CHAIN),
            provider: format!("p{p}"),
        };
        for family in &gauges {
            family
                .get_or_create(&labels)
                .set((p % PER_CHAIN) as f64 + 0.125);
        }
        probes.get_or_create(&labels).inc_by(1000);
        retries.get_or_create(&labels).inc();
        durations.get_or_create(&labels).observe(0.04);
        for reason in Reason::ALL {
            // Created at 0, as the exporter's are from the start.
            let _ = errors.get_or_create(&ReasonLabels {
                chain: labels.chain.clone(),
                provider: labels.provider.clone(),
                reason: reason.as_str().to_owned(),
            });
        }
    }
    for c in 0..n.div_ceil(PER_CHAIN) {
        head.get_or_create(&vec![("chain".to_owned(), format!("c{c}"))])
            .set(21_000_000.0);
    }
    for ((name, help, _), family) in PROVIDER_GAUGES.into_iter().zip(gauges) {
        registry.register(name, help, family);
    }
    registry.register("ethrpc_probes", "help text", probes);
    registry.register("ethrpc_probe_retries", "help text", retries);
    registry.register("ethrpc_probe_errors", "help text", errors);
    registry.register("ethrpc_request_duration_seconds", "help text", durations);
    registry.register("ethrpc_chain_head_block", "help text", head);
    registry
}

/// What `promtool check metrics` (the linter the tests hold every exposition to) says of `text`.
fn promtool_verdict(text: &str) -> String {
    let said = testkit::metrics_text::promtool_check_metrics(text);
    let problems: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match problems.as_slice() {
        [] => "clean".into(),
        [first, ..] => format!("{} problem line(s), e.g. `{first}`", problems.len()),
    }
}

/// Renders `RENDERS` times: p50 and p99 in ms, and the exposition's size in bytes.
fn time(render: impl Fn() -> String) -> (f64, f64, usize) {
    let mut took = Vec::with_capacity(RENDERS);
    let mut bytes = 0;
    for _ in 0..RENDERS {
        let start = Instant::now();
        let text = render();
        took.push(start.elapsed().as_secs_f64() * 1000.0);
        bytes = text.len();
    }
    let q = |p| quantile(&took, p).unwrap_or(f64::NAN);
    (q(0.5), q(0.99), bytes)
}

pub fn run() -> anyhow::Result<String> {
    let mut rows = Vec::new();
    let mut verdicts = String::new();
    for n in [100, 1000] {
        let metrics = ours(n)?;
        let (p50, p99, bytes) = time(|| metrics.render());
        rows.push(vec![
            n.to_string(),
            "own writer (`common::metrics`)".into(),
            format!("{p50:.2} / {p99:.2} ms"),
            format!("{:.0} KiB", bytes as f64 / 1024.0),
        ]);
        let registry = library(n);
        // Writing into a String cannot fail.
        let text_format = || {
            let mut text = String::new();
            let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
            text
        };
        let openmetrics = || {
            let mut text = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
            text
        };
        if verdicts.is_empty() {
            let _ = writeln!(
                verdicts,
                "`promtool check metrics` (Prometheus 2.42, the text-format linter every test holds the \
                 exposition to), at {n} providers: own writer {}; `prometheus-client`'s text format {}; its \
                 OpenMetrics {} (a counter's `# TYPE` line names it without its `_total`, which the \
                 text-format linter reads as a family without help: right for OpenMetrics, which \
                 Prometheus asks for first).",
                promtool_verdict(&metrics.render()),
                promtool_verdict(&text_format()),
                promtool_verdict(&openmetrics()),
            );
        }
        for (name, render) in [
            (
                "`prometheus-client` 0.26, text 0.0.4",
                &text_format as &dyn Fn() -> String,
            ),
            ("`prometheus-client` 0.26, OpenMetrics", &openmetrics),
        ] {
            let (p50, p99, bytes) = time(render);
            rows.push(vec![
                n.to_string(),
                name.into(),
                format!("{p50:.2} / {p99:.2} ms"),
                format!("{:.0} KiB", bytes as f64 / 1024.0),
            ]);
        }
    }
    let mut report = format!(
        "## Metrics library\n\nThe exporter's `/metrics` body rendered in this process {RENDERS} times by its own \
         writer and by `prometheus-client` holding the same families ({} gauges, 2 counters, errors by reason, \
         a request-duration histogram per provider; every series set, label values as the exporter's), \
         target ≤ 5 ms p50 at 1 000 providers. No HTTP: the writers alone.\n\n",
        PROVIDER_GAUGES.len()
    );
    let _ = writeln!(
        report,
        "{}",
        table(
            &["providers", "writer", "render p50 / p99", "exposition"],
            &rows
        )
    );
    report.push_str(&verdicts);
    Ok(report)
}
