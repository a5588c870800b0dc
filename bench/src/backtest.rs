//! How fast `backtest` replays a long range: a day (two hours with `--short`) of the exporter's
//! series for ten providers, with stalls, outages, slow spells and an exporter gap in it, is
//! written as OpenMetrics, backfilled with `promtool tsdb create-blocks-from openmetrics` into a
//! real Prometheus, and replayed at a 2 s step by the library's `backtest::run`, the command's
//! own code. Times are printed, never asserted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actuator::backtest::{self, Request};
use anyhow::Context;
use common::config::Config;
use common::metric_names::{
    BLOCK_AGE, BLOCK_LAG, CHAIN_ID_MATCH, LAST_PROBE, PROBES, PROBE_DURATION, PROBE_ERRORS, UP,
};
use testkit::prometheus::PrometheusProcess;
use testkit::TempDir;

const PROVIDERS: usize = 10;
/// The exporter's scrape interval in the history.
const SCRAPE: u64 = 5;
const STEP: Duration = Duration::from_secs(2);
/// Faults last this long.
const FAULT: u64 = 300;

/// What happens to a provider at one scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Healthy,
    /// Its head stopped `since` seconds ago.
    Stalled {
        since: u64,
    },
    Down,
    Slow,
    /// The exporter published nothing for it.
    Missing,
}

/// The history's faults: every provider has one of a stall, an outage or a slow spell at its
/// own time, and the last one also drops out of the exporter for three minutes.
fn state(provider: usize, t: u64, span: u64) -> State {
    let at = |share: f64| (span as f64 * share) as u64;
    let p = provider as f64;
    let start = match provider % 3 {
        0 => at(0.15 + 0.07 * p),
        1 => at(0.35 + 0.05 * p),
        _ => at(0.55 + 0.03 * p),
    };
    if provider == PROVIDERS - 1 && (at(0.9)..at(0.9) + 180).contains(&t) {
        return State::Missing;
    }
    if !(start..start + FAULT).contains(&t) {
        return State::Healthy;
    }
    match provider % 3 {
        0 => State::Stalled { since: t - start },
        1 => State::Down,
        _ => State::Slow,
    }
}

/// A small deterministic noise in `[0, 1)`.
fn noise(seed: u64) -> f64 {
    let x = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Writes the exporter's series (those the default queries read) for `span` seconds ending at
/// `end` as OpenMetrics: family by family, series by series, in time order.
fn write_history(path: &Path, end: u64, span: u64) -> anyhow::Result<usize> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    let start = end - span;
    let times = || (start..end).step_by(SCRAPE as usize);
    let labels = |p: usize| format!("chain=\"main\",provider=\"p{p}\"");
    let mut samples = 0;
    type Value = fn(State, u64, u64) -> f64;
    let gauges: [(&str, Value); 6] = [
        (UP, |s, _, _| f64::from(u8::from(s != State::Down))),
        (CHAIN_ID_MATCH, |_, _, _| 1.0),
        (BLOCK_LAG, |s, _, _| match s {
            State::Stalled { since } => (since / 12) as f64,
            _ => 0.0,
        }),
        (BLOCK_AGE, |s, t, _| match s {
            State::Stalled { since } => (t % 12 + since) as f64,
            _ => (t % 12) as f64,
        }),
        (PROBE_DURATION, |s, t, p| match s {
            State::Slow => 2.5,
            _ => 0.04 + 0.2 * noise(t * 31 + p),
        }),
        (LAST_PROBE, |_, t, p| t as f64 - 1.5 * noise(t + p)),
    ];
    for (name, value) in gauges {
        writeln!(out, "# TYPE {name} gauge")?;
        for p in 0..PROVIDERS {
            for t in times() {
                let s = state(p, t - start, span);
                if s != State::Missing {
                    writeln!(out, "{name}{{{}}} {} {t}", labels(p), value(s, t, p as u64))?;
                    samples += 1;
                }
            }
        }
    }
    // Counters: a probe every 2 s, each failing while the provider is down.
    for (name, errors) in [(PROBES, false), (PROBE_ERRORS, true)] {
        let family = name.strip_suffix("_total").unwrap_or(name);
        writeln!(out, "# TYPE {family} counter")?;
        for p in 0..PROVIDERS {
            let mut count = 0.0;
            let extra = if errors { ",reason=\"timeout\"" } else { "" };
            for t in times() {
                let s = state(p, t - start, span);
                if !errors || s == State::Down {
                    count += SCRAPE as f64 / 2.0;
                }
                if s != State::Missing {
                    writeln!(out, "{name}{{{}{extra}}} {count} {t}", labels(p))?;
                    samples += 1;
                }
            }
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    Ok(samples)
}

fn config(prometheus: &str) -> anyhow::Result<Config> {
    let mut text = format!(
        "[exporter]\nprobe_interval = \"2s\"\n\
         [actuator]\nprometheus_url = \"{prometheus}\"\ninterval = \"2s\"\nsignal_window = \"15s\"\nmax_data_age = \"15s\"\n\
         [[chain]]\nname = \"main\"\nchain_id = 1\nbackend = \"rpc\"\n"
    );
    for p in 0..PROVIDERS {
        let _ = write!(
            text,
            "[[chain.provider]]\nname = \"p{p}\"\nurl = \"http://127.0.0.1:1/\"\n"
        );
    }
    Ok(Config::parse(
        Path::new("bench-backtest.toml"),
        &text,
        |_| None,
    )?)
}

/// Runs the part and returns its report section.
pub async fn run(short: bool) -> anyhow::Result<String> {
    let span: u64 = if short { 2 * 3600 } else { 24 * 3600 };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    // Whole minutes, ending a little before now: the backfilled blocks stay out of the head.
    let end = (now - 600) / 60 * 60;
    let dir = TempDir::new("bench-backtest");
    let file = dir.path().join("history.om");
    let started = Instant::now();
    let samples = write_history(&file, end, span)?;
    let written = started.elapsed();
    eprintln!("backtest: {samples} samples written in {written:.1?}");

    let mut prometheus = PrometheusProcess::start(&[], &[]).await;
    prometheus.kill().await;
    let started = Instant::now();
    let promtool = tokio::process::Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
        .arg(&file)
        .arg(prometheus.dir.path().join("data"))
        .output()
        .await
        .context("promtool is not installed; run ./scripts/setup")?;
    anyhow::ensure!(
        promtool.status.success(),
        "promtool failed: {}",
        String::from_utf8_lossy(&promtool.stderr)
    );
    let backfilled = started.elapsed();
    eprintln!("backtest: backfilled in {backfilled:.1?}");
    prometheus.restart().await;

    let config = config(&prometheus.url())?;
    let request = Request {
        from: (end - span) as f64,
        to: end as f64,
        step: STEP,
        set: Vec::new(),
        compare: Vec::new(),
    };
    let mut chunks = 0;
    let started = Instant::now();
    let result = backtest::run(&config, &request, |p| {
        chunks = p.chunks;
        eprintln!("backtest: chunk {} of {}", p.chunk, p.chunks);
    })
    .await?;
    let replayed = started.elapsed();
    let servers = result.runs[0].backends.iter().flat_map(|b| &b.servers);
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for e in servers.clone().flat_map(|s| &s.ejections) {
        *reasons.entry(e.reason).or_default() += 1;
    }
    let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let no_data: f64 = servers.map(|s| s.seconds_without_data).sum();
    eprintln!(
        "backtest: {} steps replayed in {replayed:.1?}",
        result.steps
    );
    let hours = span / 3600;
    Ok(format!(
        "## Backtest\n\n{hours} h of history for {PROVIDERS} providers (the exporter's series scraped every {SCRAPE} s, \
         {samples} samples, each provider with one {} min stall, outage or slow spell, and one of them missing from the exporter for 3 min), \
         backfilled with `promtool tsdb create-blocks-from openmetrics` into a local Prometheus 2.42, replayed by \
         `backtest::run` at a {} s step.\n\n\
         | range | steps | chunks | replay (fetch + plan) | target | history written | promtool |\n\
         |---|---|---|---|---|---|---|\n\
         | {hours} h | {} | {chunks} | **{:.1} s** | ≤ 30 s for 24 h | {:.1} s | {:.1} s |\n\n\
         The replay found the faults put in: ejections {}; {:.0} s without data (the gap, less `max_data_age`).\n\n",
        FAULT / 60,
        STEP.as_secs(),
        result.steps,
        replayed.as_secs_f64(),
        written.as_secs_f64(),
        backfilled.as_secs_f64(),
        reasons.join(", "),
        no_data,
    ))
}
