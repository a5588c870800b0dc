//! A fault-injecting TCP proxy for the local demo and the benchmark: forwards LISTEN to UPSTREAM,
//! and takes commands on CONTROL: `GET /pass`, `/delay/MILLISECONDS`, `/error`, `/refuse`.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use common::http_server::{serve, Reply};
use testkit::fault_proxy::{Fault, FaultProxy};

#[derive(Parser)]
#[command(about)]
struct Cli {
    /// Where clients connect, e.g. 127.0.0.1:18546.
    #[arg(long, env = "ETHRPC_FAULTPROXY_LISTEN")]
    listen: SocketAddr,
    /// The real node, e.g. 127.0.0.1:8546.
    #[arg(long, env = "ETHRPC_FAULTPROXY_UPSTREAM")]
    upstream: String,
    /// The control endpoint, loopback only.
    #[arg(long, env = "ETHRPC_FAULTPROXY_CONTROL")]
    control: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.control.ip().is_loopback(),
        "--control must be a loopback address"
    );
    let proxy = Arc::new(FaultProxy::bind(cli.listen, cli.upstream).await?);
    let control = tokio::net::TcpListener::bind(cli.control).await?;
    let route = move |path: &str| match Fault::parse(path.trim_start_matches('/')) {
        Some(fault) => {
            proxy.set_fault(fault);
            Reply::text(200, format!("{fault:?}\n"))
        }
        None => Reply::text(404, "use /pass, /delay/MILLISECONDS, /error or /refuse\n"),
    };
    serve(control, route, common::process::shutdown_signal()).await;
    Ok(())
}
