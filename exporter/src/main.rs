use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::config::{Config, HaproxyNeeds};
use common::process::{init_logging, shutdown_signal, LogFormat};
use exporter::budget::Budget;

/// Probes Ethereum JSON-RPC providers and serves what it finds as Prometheus metrics.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The ethrpc config file (TOML).
    #[arg(long, env = "ETHRPC_CONFIG", default_value = "ethrpc.toml")]
    config: PathBuf,
    /// Overrides `[exporter] listen`.
    #[arg(long, env = "ETHRPC_LISTEN")]
    listen: Option<SocketAddr>,
    /// `text` or `json`.
    #[arg(long, env = "ETHRPC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validates FILE and prints it as understood, with secrets redacted, followed by its probe
    /// budget (calls per provider per day and month) and what HAProxy needs for it (a `backup`
    /// twin per reserve), as TOML comments.
    CheckConfig { file: PathBuf },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { file }) = cli.command {
        let config = Config::load(&file)?;
        print!("{config}\n{}{}", Budget::of(&config), HaproxyNeeds(&config));
        return Ok(());
    }
    init_logging(cli.log_format);
    let config = Config::load(&cli.config)?;
    let address = cli.listen.unwrap_or(config.exporter.listen);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    exporter::run(config, listener, shutdown_signal()).await?;
    Ok(())
}
