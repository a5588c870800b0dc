use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use actuator::backtest::{self, Override};
use actuator::cycle::{Actuator, Mode};
use actuator::RunOptions;
use anyhow::Context;
use clap::{Parser, Subcommand};
use common::config::{Config, HaproxyAddress};
use common::process::{init_logging, shutdown_signal, LogFormat};

/// Sets HAProxy server weights from provider health in Prometheus.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The ethrpc config file (TOML).
    #[arg(
        long,
        env = "ETHRPC_CONFIG",
        default_value = "ethrpc.toml",
        global = true
    )]
    config: PathBuf,
    /// Overrides `[actuator] listen`.
    #[arg(long, env = "ETHRPC_LISTEN")]
    listen: Option<SocketAddr>,
    /// Overrides `[actuator] prometheus_url`.
    #[arg(long, env = "ETHRPC_PROMETHEUS_URL", global = true)]
    prometheus_url: Option<url::Url>,
    /// Overrides `[actuator] haproxy`: `unix:/path` or `tcp:127.0.0.1:PORT`.
    #[arg(long, env = "ETHRPC_HAPROXY", global = true, value_parser = HaproxyAddress::from_str)]
    haproxy: Option<HaproxyAddress>,
    /// Overrides `[actuator] interval`, e.g. `1s`.
    #[arg(long, env = "ETHRPC_INTERVAL", value_parser = humantime_parse)]
    interval: Option<Duration>,
    /// Decide and report, write nothing.
    #[arg(long, env = "ETHRPC_DRY_RUN")]
    dry_run: bool,
    /// One cycle, then exit: 0 if it read everything and applied every write, 1 if not.
    #[arg(long, env = "ETHRPC_ONCE")]
    once: bool,
    /// `text` or `json`.
    #[arg(long, env = "ETHRPC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The running actuator's last decision, as a table per backend: observations, verdict,
    /// reason, weight now in HAProxy and the weight set. When the running actuator cannot be
    /// reached, one dry-run cycle computed here with the memory rebuilt from its history in
    /// Prometheus, as a restart would. The first line says which of the two it is.
    Explain {
        /// The running actuator's status page [default: http://`[actuator] listen`/].
        #[arg(long, value_name = "URL")]
        from: Option<url::Url>,
    },
    /// What the policy would have done over a stretch of Prometheus history: ejections, weight
    /// writes, time at 0, fail open and each server's share of the traffic. Never touches HAProxy.
    Backtest(BacktestArgs),
}

#[derive(clap::Args)]
struct BacktestArgs {
    /// Start: RFC 3339 (2025-05-01T12:00:00Z), Unix seconds, `now` or relative (-24h, now-90m).
    #[arg(long, value_parser = time_arg, allow_hyphen_values = true)]
    from: f64,
    /// End, written like --from.
    #[arg(long, default_value = "now", value_parser = time_arg, allow_hyphen_values = true)]
    to: f64,
    /// Evaluation step [default: `[actuator] interval`, which replays the live loop's cycles].
    #[arg(long, value_parser = humantime_parse)]
    step: Option<Duration>,
    /// Sets a `[policy]` key for the run, in every chain; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<Override>,
    /// Also replays a second policy (these keys on top of --set) on the same data.
    #[arg(long, value_name = "KEY=VALUE", num_args = 1..)]
    compare: Vec<Override>,
    /// Also draws the timeline into this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Prints the full result as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The status page of an actuator listening on `listen` (an unspecified address is reached on
/// loopback).
fn status_page(listen: SocketAddr) -> url::Url {
    let ip = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let address = SocketAddr::new(ip, listen.port());
    url::Url::parse(&format!("http://{address}/"))
        .unwrap_or_else(|_| url::Url::parse("http://127.0.0.1:9788/").expect("a valid literal URL"))
}

/// The running actuator's decision from its status page, or why there is none.
async fn running_decision(url: &url::Url, timeout: Duration) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| format!("not reachable: {}", e.without_url()))?;
    let status = response.status();
    let page = response
        .text()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if !status.is_success() {
        return Err(format!("answered HTTP {status}"));
    }
    if page.starts_with(actuator::NO_CYCLE_YET) {
        return Err("no cycle has completed there yet".into());
    }
    Ok(page)
}

fn time_arg(s: &str) -> Result<f64, String> {
    backtest::parse_time(s, std::time::SystemTime::now())
}

fn humantime_parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write it like \"2s\""))
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let mut config = Config::load(&cli.config)?;
    let a = &mut config.actuator;
    if let Some(url) = cli.prometheus_url {
        a.prometheus_url = common::secret::SecretUrl::new(url);
    }
    if let Some(haproxy) = cli.haproxy {
        a.haproxy = haproxy;
    }
    if let Some(interval) = cli.interval.filter(|d| !d.is_zero()) {
        a.interval = interval;
    }
    match cli.command {
        Some(Command::Explain { from }) => {
            let url = from.unwrap_or_else(|| status_page(cli.listen.unwrap_or(a.listen)));
            match running_decision(&url, a.query_timeout).await {
                Ok(page) => {
                    print!("source: the running actuator at {url} (its last cycle)\n{page}")
                }
                Err(why) => {
                    let actuator = Actuator::new(config)?;
                    let report = actuator.cycle(Mode::DryRun).await?;
                    let memory = actuator.memory_source().unwrap_or_default();
                    println!("source: computed here, not by the running actuator ({url}: {why}); memory {memory}\n");
                    print!("{}", actuator::explain::render(&report));
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Backtest(args)) => {
            run_backtest(&config, args).await?;
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let address = cli.listen.unwrap_or(a.listen);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let options = RunOptions {
        mode: if cli.dry_run {
            Mode::DryRun
        } else {
            Mode::Apply
        },
        once: cli.once,
    };
    let ok = actuator::run(config, options, listener, shutdown_signal()).await?;
    Ok(if ok || !cli.once {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_backtest(config: &Config, args: BacktestArgs) -> anyhow::Result<()> {
    let request = backtest::Request {
        from: args.from,
        to: args.to,
        step: args.step.unwrap_or(config.actuator.interval),
        set: args.set,
        compare: args.compare,
    };
    let result = backtest::run(config, &request, |p| {
        if p.chunks > 1 {
            eprintln!("backtest: chunk {} of {}", p.chunk, p.chunks);
        }
    })
    .await?;
    if let Some(path) = &args.svg {
        std::fs::write(path, backtest::render_svg(&result))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", backtest::render_text(&result));
    }
    Ok(())
}
