//! `ethrpc-bench`: how ethrpc, the seed's design and HAProxy alone fare on noisy providers (no
//! fault, a flapping provider, four faults), and the cost of the exporter and the actuator.
//! Prints Markdown tables and, with `--out`, writes them to a file (bench/RESULTS.md) and the
//! timelines next to it.

mod arm;
mod backtest;
mod body_inspection;
mod cost;
mod failover;
mod flap;
mod load;
mod local_server;
mod metrics_library;
mod noisy;
mod recorder;
mod restart;
mod routing;
mod shapes;
mod stack;
mod stats;
mod timeline;
mod trial;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::arm::{Arm, MEDIANS_MS};
use crate::shapes::Shape;
use crate::stack::Stack;
use crate::stats::{met, table};
use crate::trial::Scenario;

#[derive(Parser)]
#[command(about)]
struct Cli {
    /// Trials per failover scenario.
    #[arg(long, env = "ETHRPC_BENCH_TRIALS", default_value_t = 3)]
    trials: usize,
    /// Window after injection over which traffic to the faulty provider is counted.
    #[arg(long, env = "ETHRPC_BENCH_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Client requests per second through each arm's HAProxy frontend.
    #[arg(long, env = "ETHRPC_BENCH_RATE", default_value_t = 200)]
    rate: u32,
    /// Length of the `noisy` part (healthy noisy providers, no fault).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    noisy: Duration,
    /// Length of the flap run.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    flap: Duration,
    /// Smoke test: the ethrpc arm only, a 20 s `noisy` part, one `stall` trial with a 15 s
    /// window, a 2 h backtest, and the routing scenarios side by side on one stack (about 45 s).
    #[arg(long)]
    short: bool,
    /// Parts to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "noisy,failover,flap,exporter,actuator,backtest,routing,capacity,rpc-errors,body-inspection,pool-of-two,engines,restart"
    )]
    parts: Vec<Part>,
    /// Also write the report here (and the timelines next to it).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A part of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Noisy,
    Failover,
    Flap,
    Exporter,
    Actuator,
    /// `ethrpc-actuator backtest` over a day of backfilled history (two hours with `--short`).
    Backtest,
    /// Tiers, plan limits and passive signals: the `ratelimit`, `tiers` and `passive` scenarios.
    Routing,
    /// Learned limits on stray 429s, clients' 400s and plans too tight for the demand.
    Capacity,
    /// A provider answering JSON-RPC errors inside HTTP 200 to clients' calls (not in `--short`).
    RpcErrors,
    /// The exporter's `/metrics` by its own writer and by `prometheus-client`, side by side.
    MetricsLibrary,
    /// Two providers, the default policy: `stall` trials.
    PoolOfTwo,
    /// The ethrpc arm over Prometheus and over VictoriaMetrics: `stall` and `down` trials.
    Engines,
    /// The actuator restarted during a hold and mid-flap.
    Restart,
    /// What reading answer bodies in HAProxy (the JSON-RPC error counting) costs clients.
    BodyInspection,
}

impl Cli {
    fn wants(&self, part: Part) -> bool {
        self.parts.contains(&part)
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or("?".into(), |kib| {
            format!("{:.0} GiB", kib / 1024.0 / 1024.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {memory} memory")
}

/// The stack every stack part runs on.
fn setup(cli: &Cli) -> String {
    let defaults: Vec<&str> = testkit::haproxy::SHIPPED_DEFAULTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!(
        "## Setup\n\nPer arm, three anvil nodes (1 s blocks), n1, n2 and n3, each behind a noisy HTTP proxy modelling a \
         healthy paid provider (`Noise::paid_provider`, see `testkit/NOISE.md`): log-normal latency with medians \
         {} / {} / {} ms (p99 about 16 times the median, capped at 3 s), 10 % of reads answered by a replica node kept \
         2 blocks behind (one per arm), 0.3 % HTTP 502s, 0.1 % hangs of 3 s, a 250 requests/s token bucket. n2 is the \
         one faults hit. HAProxy 2.6 runs the shipped `defaults` (`{}`) and the shipped backend's options (roundrobin, \
         HTTP health check every 2 s, fall 3, rise 2). One exporter probes every provider every 1 s (timeout 2 s), \
         Prometheus scrapes every 1 s, {} client requests/s per arm go through HAProxy.\n\n\
         - **ethrpc**: the actuator every 1 s, the default policy with `max_block_lag = 2`, `max_block_age = \"5s\"` \
         (1 s blocks).\n\
         - **seed**: the actuator as the seed's design: equal weights, ejection only on block age ≥ 150 s or latency \
         ≥ 3 s, every 60 s.\n\
         - **haproxy-only**: no actuator; HAProxy's health check alone.\n\n",
        MEDIANS_MS[0],
        MEDIANS_MS[1],
        MEDIANS_MS[2],
        defaults.join("; "),
        cli.rate
    )
}

/// The noisy, failover and flap parts on one stack; returns each part's text.
async fn stack_parts(cli: &Cli, stamp: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let arms: &[Arm] = if cli.short {
        &[Arm::Ethrpc]
    } else {
        &[Arm::Ethrpc, Arm::Seed, Arm::HaproxyOnly]
    };
    eprintln!("starting {} arm(s)…", arms.len());
    let mut stack = Stack::start(arms, cli.rate).await?;
    let mut parts = vec![("setup", format!("{stamp}{}", setup(cli)))];
    if cli.short || cli.wants(Part::Noisy) {
        let length = if cli.short {
            Duration::from_secs(20)
        } else {
            cli.noisy
        };
        eprintln!("noisy: {} s", length.as_secs());
        parts.push((
            "noisy",
            format!("{stamp}{}", noisy::run(&stack, length).await),
        ));
    }
    if cli.short || cli.wants(Part::Failover) {
        let options = failover::Options {
            title: "Failover",
            intro: "",
            share_target: failover::SHARE_TARGET,
            scenarios: if cli.short {
                vec![Scenario::Stall]
            } else {
                Scenario::ALL.to_vec()
            },
            trials: if cli.short { 1 } else { cli.trials },
            window: if cli.short {
                Duration::from_secs(15)
            } else {
                cli.window
            },
            out: cli.out.clone(),
            timeline: Some((Scenario::Down, "timeline-down")),
        };
        let text = failover::run(&mut stack, &options).await;
        parts.push(("failover", format!("{stamp}{text}")));
    }
    if !cli.short && cli.wants(Part::Flap) {
        eprintln!("flap: {} s", cli.flap.as_secs());
        let text = flap::run(&mut stack, cli.flap, cli.out.as_deref()).await;
        parts.push(("flap", format!("{stamp}{text}")));
    }
    Ok(parts)
}

async fn costs(report: &mut String) -> anyhow::Result<()> {
    let mut exporter_rows = Vec::new();
    let mut actuator_rows = Vec::new();
    let mut notes = String::new();
    for n in [10, 100, 1000] {
        eprintln!("cost: {n} providers");
        let (e, a) = cost::measure(n, Duration::from_secs(30)).await?;
        exporter_rows.push(vec![
            n.to_string(),
            format!("{:.1} %", e.cpu_percent),
            format!(
                "{:.1} MiB ({:.1} before any scrape)",
                e.peak_rss_mib, e.rss_before_scrape_mib
            ),
            format!(
                "{:.1} / {:.1} ms ({} series, {:.0} KiB)",
                e.render_ms_p50, e.render_ms_max, e.series, e.body_kib
            ),
            format!("{:.1} ms", e.jitter_ms_p99),
            format!("{:.0}", e.probes_per_second),
        ]);
        let stage = |name: &str| {
            a.stages
                .iter()
                .find(|s| s.0 == name)
                .map_or((0.0, 0.0), |s| (s.1, s.2))
        };
        let fmt = |name: &str| {
            let (first, steady) = stage(name);
            format!("{first:.1} / {steady:.1} ms")
        };
        let (pf, ps) = stage("prometheus");
        let excluding_first: f64 = a.stages.iter().map(|s| s.1).sum::<f64>() - pf;
        let excluding_steady: f64 = a.stages.iter().map(|s| s.2).sum::<f64>() - ps;
        actuator_rows.push(vec![
            n.to_string(),
            fmt("prometheus"),
            fmt("policy"),
            fmt("haproxy_read"),
            fmt("haproxy_write"),
            format!("{excluding_first:.1} / {excluding_steady:.1} ms"),
            format!("{:.1} MiB", a.peak_rss_mib),
        ]);
        match n {
            100 => {
                let _ = writeln!(
                    notes,
                    "- exporter at 100: ≤ 20 MiB {} ({:.1} MiB), ≤ 5 % CPU {} ({:.1} %)",
                    met(e.peak_rss_mib <= 20.0),
                    e.peak_rss_mib,
                    met(e.cpu_percent <= 5.0),
                    e.cpu_percent
                );
            }
            1000 => {
                let _ = writeln!(notes, "- exporter at 1000: ≤ 30 MiB {} ({:.1} MiB), ≤ 25 % CPU {} ({:.1} %), `/metrics` ≤ 5 ms {} ({:.1} ms p50)", met(e.peak_rss_mib <= 30.0), e.peak_rss_mib, met(e.cpu_percent <= 25.0), e.cpu_percent, met(e.render_ms_p50 <= 5.0), e.render_ms_p50);
                if e.peak_rss_mib > 30.0 || e.render_ms_p50 > 5.0 {
                    let _ = writeln!(
                        notes,
                        "  - where it goes: probing alone peaks at {:.1} MiB (before any scrape); the rest of the peak and \
                         the render time are the `/metrics` render of {} series into a {:.0} KiB body.",
                        e.rss_before_scrape_mib, e.series, e.body_kib
                    );
                }
                let _ = writeln!(notes, "- actuator at 1000: cycle ≤ 50 ms excluding Prometheus {} ({excluding_first:.1} ms first cycle with 1000 writes, {excluding_steady:.1} ms steady)", met(excluding_first.max(excluding_steady) <= 50.0));
            }
            _ => {}
        }
    }
    let _ = writeln!(
        report,
        "## Exporter cost\n\nProbing a fast local JSON-RPC responder every 1 s (chains of 100 providers), measured over 30 s. \
         Render time is a client GET of `/metrics` (p50 / max of 20). Jitter is how late each probe reaches the responder \
         against its chain's 1 s round schedule (p99).\n\n{}",
        table(&["providers", "CPU (one core)", "peak RSS", "`/metrics` p50 / max", "probe-start jitter p99", "probes/s"], &exporter_rows)
    );
    let _ = writeln!(
        report,
        "## Actuator cost\n\nA real Prometheus scraping that exporter, a real HAProxy with every server at weight 50 (so the first \
         cycle writes them all), the actuator's cycle run in-process; first cycle / steady median of 10. RSS from the binary.\n\n{}",
        table(&["servers", "Prometheus query", "policy", "HAProxy read", "HAProxy write", "cycle excl. Prometheus", "peak RSS"], &actuator_rows)
    );
    let _ = writeln!(report, "### Targets\n\n{notes}");
    Ok(())
}

/// Where the notes written by hand begin: they are kept as they are, after the parts.
const HAND_NOTES: &str = "<!-- notes by hand -->\n";

/// The report file: this run's parts, and the other parts as the file had them, so one part can
/// be measured again without the others; notes written by hand after [`HAND_NOTES`] are kept.
fn merge(previous: &str, parts: &[(&str, String)]) -> String {
    let mut report = format!(
        "# Benchmark results\n\nGenerated by `bench/run`; do not edit by hand. Each part says when and with \
         which command it was measured (`--parts` re-measures some parts and keeps the others).\n\n\
         - Machine: {}\n\n",
        machine()
    );
    for name in [
        "setup",
        "noisy",
        "failover",
        "pool-of-two",
        "engines",
        "restart",
        "flap",
        "cost",
        "backtest",
        "routing",
        "capacity",
        "rpc-errors",
        "body-inspection",
        "metrics-library",
    ] {
        let (open, close) = (
            format!("<!-- part:{name} -->\n"),
            format!("<!-- /part:{name} -->\n"),
        );
        let kept = previous
            .split_once(&open)
            .and_then(|(_, rest)| rest.split_once(&close))
            .map(|(text, _)| text.to_owned());
        let text = parts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.clone())
            .or(kept);
        if let Some(text) = text {
            report.push_str(&format!("{open}{text}{close}\n"));
        }
    }
    if let Some((_, notes)) = previous.split_once(HAND_NOTES) {
        report.push_str(HAND_NOTES);
        report.push_str(notes);
    }
    report
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command: Vec<String> = std::env::args().collect();
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let stamp = format!("_Measured {date} with `{}`._\n\n", command.join(" "));
    let mut parts: Vec<(&str, String)> = Vec::new();
    if cli.short
        || [Part::Noisy, Part::Failover, Part::Flap]
            .into_iter()
            .any(|p| cli.wants(p))
    {
        parts.extend(stack_parts(&cli, &stamp).await?);
    }
    if !cli.short && (cli.wants(Part::Exporter) || cli.wants(Part::Actuator)) {
        let mut text = stamp.clone();
        costs(&mut text).await?;
        parts.push(("cost", text));
    }
    if cli.short || cli.wants(Part::Backtest) {
        let text = backtest::run(cli.short).await?;
        parts.push(("backtest", format!("{stamp}{text}")));
    }
    for (part, shape) in [
        (Part::PoolOfTwo, Shape::PoolOfTwo),
        (Part::Engines, Shape::Engines),
    ] {
        if !cli.short && cli.wants(part) {
            let text =
                shapes::run(shape, cli.trials, cli.window, cli.rate, cli.out.clone()).await?;
            parts.push((shape.part(), format!("{stamp}{text}")));
        }
    }
    if !cli.short && cli.wants(Part::Restart) {
        let text = restart::run(cli.rate).await?;
        parts.push(("restart", format!("{stamp}{text}")));
    }
    if cli.wants(Part::Routing) {
        let heading = "Tiers, plan limits and passive signals";
        let text = routing::run(cli.short, &routing::Scenario::ROUTING, heading).await?;
        parts.push(("routing", format!("{stamp}{text}")));
    }
    if cli.wants(Part::Capacity) {
        let heading = "Learned limits on paid providers' 4xx";
        let text = routing::run(cli.short, &[routing::Scenario::Capacity], heading).await?;
        parts.push(("capacity", format!("{stamp}{text}")));
    }
    if !cli.short && cli.wants(Part::MetricsLibrary) {
        parts.push((
            "metrics-library",
            format!("{stamp}{}", metrics_library::run()?),
        ));
    }
    if !cli.short && cli.wants(Part::BodyInspection) {
        let text = body_inspection::run().await?;
        parts.push(("body-inspection", format!("{stamp}{text}")));
    }
    if !cli.short && cli.wants(Part::RpcErrors) {
        let heading = "JSON-RPC errors inside HTTP 200";
        let scenarios = [routing::Scenario::RpcErrors, routing::Scenario::Reverts];
        let text = routing::run(false, &scenarios, heading).await?;
        parts.push(("rpc-errors", format!("{stamp}{text}")));
    }
    for (_, text) in &parts {
        print!("{text}");
    }
    if let Some(out) = &cli.out {
        let previous = std::fs::read_to_string(out).unwrap_or_default();
        std::fs::write(out, merge(&previous, &parts))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_replaces_measured_parts_and_keeps_the_others_and_the_notes() {
        let previous = "<!-- part:noisy -->\nold noisy\n<!-- /part:noisy -->\n\n\
                        <!-- part:flap -->\nold flap\n<!-- /part:flap -->\n\n\
                        <!-- notes by hand -->\n## Notes\nkept\n";
        let merged = merge(previous, &[("noisy", "new noisy\n".to_owned())]);
        assert!(
            merged.contains("<!-- part:noisy -->\nnew noisy\n"),
            "{merged}"
        );
        assert!(!merged.contains("old noisy"), "{merged}");
        assert!(merged.contains("old flap"), "{merged}");
        assert!(
            merged.ends_with("<!-- notes by hand -->\n## Notes\nkept\n"),
            "{merged}"
        );
    }
}
