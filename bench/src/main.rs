//! `ethrpc-bench`: failover speed and traffic sent to bad providers (ethrpc vs the seed's design
//! vs HAProxy alone), flap damping, and the cost of the exporter and the actuator. Prints Markdown
//! tables and, with `--out`, writes them to a file (bench/RESULTS.md).

mod cost;
mod failover;
mod load;
mod stack;
mod stats;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::failover::{Scenario, Trial};
use crate::load::Load;
use crate::stack::{Arm, Stack};
use crate::stats::{quantile, summary_percent, summary_seconds, table};

#[derive(Parser)]
#[command(about)]
struct Cli {
    /// Trials per failover scenario.
    #[arg(long, env = "ETHRPC_BENCH_TRIALS", default_value_t = 5)]
    trials: usize,
    /// Window after injection over which traffic to the faulty provider is counted.
    #[arg(long, env = "ETHRPC_BENCH_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Client requests per second through each arm's HAProxy frontend.
    #[arg(long, env = "ETHRPC_BENCH_RATE", default_value_t = 200)]
    rate: u32,
    /// Length of the flap run.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    flap: Duration,
    /// Smoke test: one `stall` trial with the ethrpc arm and a 15 s window, nothing else.
    #[arg(long)]
    short: bool,
    /// Parts to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "failover,flap,exporter,actuator"
    )]
    parts: Vec<String>,
    /// Also write the report here.
    #[arg(long)]
    out: Option<PathBuf>,
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

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn p95(values: &[Option<Duration>]) -> Option<f64> {
    let hits: Vec<f64> = values.iter().flatten().map(Duration::as_secs_f64).collect();
    if hits.len() < values.len() {
        return None; // a trial that never got there fails any target
    }
    quantile(&hits, 0.95)
}

async fn failover(cli: &Cli, report: &mut String) -> anyhow::Result<()> {
    let arms: &[Arm] = if cli.short {
        &[Arm::Ethrpc]
    } else {
        &[Arm::Ethrpc, Arm::Seed, Arm::HaproxyOnly]
    };
    let scenarios: &[Scenario] = if cli.short {
        &[Scenario::Stall]
    } else {
        &Scenario::ALL
    };
    let trials = if cli.short { 1 } else { cli.trials };
    let window = if cli.short {
        Duration::from_secs(15)
    } else {
        cli.window
    };
    eprintln!("failover: starting {} arm(s)…", arms.len());
    let mut stack = Stack::start(arms).await?;
    let loads: Vec<Load> = stack
        .arms
        .iter()
        .map(|a| Load::start(a.frontend_port, cli.rate))
        .collect();
    let _ = writeln!(
        report,
        "## Failover\n\n3 anvil providers per arm (1 s blocks), probe, scrape and actuator intervals 1 s, \
         {} client requests/s per arm through HAProxy (roundrobin, HTTP health checks every 2 s, fall 2), \
         {trials} trial(s) per scenario, traffic counted over {}s after injection. ethrpc arm: default \
         policy with `max_block_lag = 2`, `max_block_age = \"5s\"`. seed arm: the actuator as the seed \
         (equal weights, only block age ≥ 150 s and latency ≥ 3 s, every 60 s). Times are p50 / p95 / max; \
         \"out of rotation\" is weight 0 or marked DOWN by HAProxy's own health check.\n",
        cli.rate,
        window.as_secs()
    );
    let mut targets = String::new();
    for &scenario in scenarios {
        let mut results: Vec<Vec<Trial>> = vec![Vec::new(); arms.len()];
        for t in 0..trials {
            eprintln!("failover: {} trial {}/{trials}", scenario.name(), t + 1);
            for (i, trial) in failover::trial(&mut stack, &loads, scenario, window)
                .await
                .into_iter()
                .enumerate()
            {
                results[i].push(trial);
            }
        }
        let mut rows = Vec::new();
        for (arm, r) in arms.iter().zip(&results) {
            let zero: Vec<_> = r.iter().map(|t| t.to_weight_zero).collect();
            let out: Vec<_> = r.iter().map(|t| t.to_out).collect();
            let full: Vec<_> = r.iter().map(|t| t.to_full).collect();
            let shares: Vec<f64> = r.iter().map(|t| t.faulty_share).collect();
            let latencies: Vec<f64> = r.iter().flat_map(|t| t.latencies.iter().copied()).collect();
            let failed: usize = r.iter().map(|t| t.failed_requests).sum();
            let requests: usize = r.iter().map(|t| t.latencies.len()).sum();
            let ms =
                |q| quantile(&latencies, q).map_or("-".into(), |v| format!("{:.0}", v * 1000.0));
            rows.push(vec![
                arm.name().into(),
                summary_seconds(&zero),
                summary_seconds(&out),
                summary_seconds(&full),
                summary_percent(&shares),
                format!("{} / {} ms", ms(0.5), ms(0.99)),
                format!("{failed} of {requests}"),
            ]);
        }
        let _ = writeln!(
            report,
            "### `{}`\n\n{}",
            scenario.name(),
            table(
                &[
                    "arm",
                    "injection → weight 0",
                    "injection → out of rotation",
                    "recovery → full weight",
                    "faulty provider's share",
                    "client p50 / p99",
                    "failed client requests"
                ],
                &rows
            )
        );
        let ethrpc = &results[0];
        let zero: Vec<_> = ethrpc.iter().map(|t| t.to_weight_zero).collect();
        let shares: Vec<f64> = ethrpc.iter().map(|t| t.faulty_share).collect();
        let target = scenario.target().as_secs_f64();
        let p95_zero = p95(&zero);
        let max_share = quantile(&shares, 1.0).unwrap_or(1.0);
        let _ = writeln!(
            targets,
            "| `{}` | ≤ {target:.0} s | {} | {} | ≤ 3 % | {:.1} % | {} |",
            scenario.name(),
            p95_zero.map_or("never".into(), |v| format!("{v:.1} s")),
            met(p95_zero.is_some_and(|v| v <= target)),
            100.0 * max_share,
            if window == Duration::from_secs(60) {
                met(max_share <= 0.03)
            } else {
                "n/a: the target is for a 60 s window"
            },
        );
        if let Some(seed) = arms.iter().position(|a| *a == Arm::Seed) {
            let seed_zero: Vec<_> = results[seed].iter().map(|t| t.to_weight_zero).collect();
            let seed_share = quantile(
                &results[seed]
                    .iter()
                    .map(|t| t.faulty_share)
                    .collect::<Vec<_>>(),
                0.5,
            )
            .unwrap_or(0.0);
            let ours_share = quantile(&shares, 0.5).unwrap_or(0.0);
            let ratio_time = match (p95_zero, p95(&seed_zero)) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                (Some(_), None) => "seed never ejected".into(),
                _ => "-".into(),
            };
            let ratio_share = if seed_share > 0.0 {
                format!("{:.2}", ours_share / seed_share)
            } else {
                "-".into()
            };
            let _ = writeln!(report, "ethrpc / seed: p95 time to weight 0 {ratio_time}; median faulty share {ratio_share}.\n");
        }
    }
    let _ = writeln!(
        report,
        "### Targets (ethrpc arm)\n\n| scenario | weight-0 target (p95) | measured p95 | | share target | worst share | |\n| --- | --- | --- | --- | --- | --- | --- |\n{targets}"
    );
    if !cli.short && cli.parts.iter().any(|p| p == "flap") {
        eprintln!("flap: {}s", cli.flap.as_secs());
        let rows: Vec<Vec<String>> = failover::flap(&mut stack, cli.flap)
            .await
            .into_iter()
            .map(|(arm, writes, share)| {
                let writes = if arm == Arm::HaproxyOnly {
                    "-".into()
                } else {
                    format!("{writes:.0}")
                };
                vec![arm.name().into(), writes, format!("{:.1} %", 100.0 * share)]
            })
            .collect();
        let _ = writeln!(
            report,
            "## Flap damping\n\nThe provider answers HTTP 500 for 5 s, then normally for 5 s, for {} s.\n\n{}",
            cli.flap.as_secs(),
            table(&["arm", "weight writes for it", "its share of client traffic"], &rows)
        );
    }
    Ok(())
}

async fn costs(cli: &Cli, report: &mut String) -> anyhow::Result<()> {
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
                let _ = writeln!(notes, "- exporter at 1000: ≤ 30 MiB {} ({:.1} MiB), ≤ 25 % CPU {} ({:.1} %), `/metrics` ≤ 10 ms {} ({:.1} ms p50)", met(e.peak_rss_mib <= 30.0), e.peak_rss_mib, met(e.cpu_percent <= 25.0), e.cpu_percent, met(e.render_ms_p50 <= 10.0), e.render_ms_p50);
                if e.peak_rss_mib > 30.0 || e.render_ms_p50 > 10.0 {
                    let _ = writeln!(
                        notes,
                        "  - where it goes: probing alone peaks at {:.1} MiB (before any scrape); the rest of the peak and \
                         the render time are the `/metrics` render itself: the prometheus crate's `gather()` copies all \
                         {} series (a 14-line histogram and 9 pre-created error counters per provider are most of them) and \
                         the text encoder builds a {:.0} KiB body on every scrape.",
                        e.rss_before_scrape_mib, e.series, e.body_kib
                    );
                }
                let _ = writeln!(notes, "- actuator at 1000: cycle ≤ 50 ms excluding Prometheus {} ({excluding_first:.1} ms first cycle with 1000 writes, {excluding_steady:.1} ms steady)", met(excluding_first.max(excluding_steady) <= 50.0));
            }
            _ => {}
        }
    }
    let _ = cli;
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

/// The report file: this run's parts, and the other parts as the file had them, so one part can
/// be measured again without the others.
fn merge(previous: &str, parts: &[(&str, String)]) -> String {
    let mut report = format!(
        "# Benchmark results\n\nGenerated by `bench/run`; do not edit by hand. Each part says when and with \
         which command it was measured (`--parts` re-measures some parts and keeps the others).\n\n\
         - Machine: {}\n\n",
        machine()
    );
    for name in ["failover", "cost"] {
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
    if cli.short || cli.parts.iter().any(|p| p == "failover") {
        let mut text = stamp.clone();
        failover(&cli, &mut text).await?;
        parts.push(("failover", text));
    }
    if !cli.short && cli.parts.iter().any(|p| p == "exporter" || p == "actuator") {
        let mut text = stamp.clone();
        costs(&cli, &mut text).await?;
        parts.push(("cost", text));
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
