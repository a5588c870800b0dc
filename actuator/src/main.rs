use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

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
    /// One dry-run cycle, printed as a table per backend: observations, verdict, reason, weight
    /// now in HAProxy and the weight it would set.
    Explain,
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
    if let Some(Command::Explain) = cli.command {
        let actuator = Actuator::new(config)?;
        let report = actuator.cycle(Mode::DryRun).await?;
        print!("{}", actuator::explain::render(&report));
        return Ok(ExitCode::SUCCESS);
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
