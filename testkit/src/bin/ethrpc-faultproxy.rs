//! A fault-injecting proxy for the local demo and the benchmark: forwards LISTEN to UPSTREAM and
//! takes commands on CONTROL: `GET /pass`, `/delay/MILLISECONDS`, `/error`, `/refuse`, and in
//! HTTP mode `/noisy`, `/noisy/MEDIAN_MS`, `/quiet`, `/method-errors/METHOD/PERCENT` and `/stats`
//! (see testkit/NOISE.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use common::http_server::{serve, Reply, StatusCode};
use testkit::fault_proxy::{Fault, FaultProxy, MethodErrors, Noise, NoiseStats};

/// The median latency `/noisy` sets.
const DEFAULT_MEDIAN: Duration = Duration::from_millis(60);

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Forwards bytes; faults only.
    Tcp,
    /// Reads each JSON-RPC request; faults and a paid provider's noise.
    Http,
}

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
    #[arg(
        long,
        value_enum,
        default_value = "tcp",
        env = "ETHRPC_FAULTPROXY_MODE"
    )]
    mode: Mode,
    /// A second node (HTTP mode) kept a few blocks behind UPSTREAM, answering a share of reads.
    #[arg(long, env = "ETHRPC_FAULTPROXY_REPLICA")]
    replica: Option<String>,
}

/// A command on the control endpoint.
#[derive(Debug, PartialEq)]
enum Command {
    Fault(Fault),
    Noise(Noise),
    /// Answers other than the node's to one method; `None` (a share of 0 %) clears them.
    MethodErrors(Option<MethodErrors>),
    Stats,
}

/// Parses a control path: `/pass`, `/delay/MS`, `/error`, `/refuse`, `/noisy`, `/noisy/MEDIAN_MS`,
/// `/quiet`, `/method-errors/METHOD/PERCENT` (HTTP 502), `/rpc-errors/METHOD/PERCENT` (`header
/// not found` inside a 200), `/pruned/METHOD/PERCENT` (`missing trie node` inside a 200),
/// `/stats`.
fn parse_route(path: &str) -> Option<Command> {
    let path = path.trim_start_matches('/');
    match path {
        "noisy" => Some(Command::Noise(Noise::paid_provider(DEFAULT_MEDIAN))),
        "quiet" => Some(Command::Noise(Noise::none())),
        "stats" => Some(Command::Stats),
        _ => {
            if let Some(ms) = path.strip_prefix("noisy/") {
                let median = Duration::from_millis(ms.parse().ok()?);
                Some(Command::Noise(Noise::paid_provider(median)))
            } else if let Some(rest) = path.strip_prefix("method-errors/") {
                parse_method_errors(rest, MethodErrors::bad_gateway).map(Command::MethodErrors)
            } else if let Some(rest) = path.strip_prefix("rpc-errors/") {
                parse_method_errors(rest, MethodErrors::header_not_found).map(Command::MethodErrors)
            } else if let Some(rest) = path.strip_prefix("pruned/") {
                parse_method_errors(rest, MethodErrors::pruned).map(Command::MethodErrors)
            } else {
                Fault::parse(path).map(Command::Fault)
            }
        }
    }
}

/// `METHOD/PERCENT`, the percent from 0 (clears) to 100, answered as `answer` makes them.
fn parse_method_errors(
    text: &str,
    answer: fn(&str, f64) -> MethodErrors,
) -> Option<Option<MethodErrors>> {
    let (method, percent) = text.split_once('/')?;
    let percent: f64 = percent.parse().ok()?;
    if method.is_empty() || !(0.0..=100.0).contains(&percent) {
        return None;
    }
    Some((percent > 0.0).then(|| answer(method, percent / 100.0)))
}

fn stats_text(stats: NoiseStats) -> String {
    let NoiseStats {
        requests,
        replica,
        errors_502,
        hangs,
        rate_limited,
        flap_errors,
        method_errors,
    } = stats;
    format!(
        "requests {requests}\nreplica {replica}\nerrors_502 {errors_502}\nhangs {hangs}\n\
         rate_limited {rate_limited}\nflap_errors {flap_errors}\nmethod_errors {method_errors}\n"
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.control.ip().is_loopback(),
        "--control must be a loopback address"
    );
    let proxy = match cli.mode {
        Mode::Tcp => {
            anyhow::ensure!(cli.replica.is_none(), "--replica needs --mode http");
            FaultProxy::bind(cli.listen, cli.upstream).await?
        }
        Mode::Http => {
            FaultProxy::bind_noisy(cli.listen, cli.upstream, cli.replica, Noise::none()).await?
        }
    };
    let proxy = Arc::new(proxy);
    let control = tokio::net::TcpListener::bind(cli.control).await?;
    let route = move |path: &str| match parse_route(path) {
        Some(Command::Fault(fault)) => {
            proxy.set_fault(fault);
            Reply::text(StatusCode::OK, format!("{fault:?}\n"))
        }
        Some(Command::Noise(noise)) => {
            proxy.set_noise(noise.clone());
            Reply::text(StatusCode::OK, format!("{noise:?}\n"))
        }
        Some(Command::MethodErrors(errors)) => {
            proxy.set_method_errors(errors.clone());
            Reply::text(StatusCode::OK, format!("{errors:?}\n"))
        }
        Some(Command::Stats) => Reply::text(StatusCode::OK, stats_text(proxy.stats())),
        None => Reply::text(
            StatusCode::NOT_FOUND,
            "use /pass, /delay/MILLISECONDS, /error, /refuse, /noisy, /noisy/MEDIAN_MS, /quiet, \
             /method-errors/METHOD/PERCENT, /rpc-errors/METHOD/PERCENT, /pruned/METHOD/PERCENT \
             or /stats\n",
        ),
    };
    serve(control, route, common::process::shutdown_signal()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        assert_eq!(parse_route("/pass"), Some(Command::Fault(Fault::Pass)));
        assert_eq!(
            parse_route("/delay/1800"),
            Some(Command::Fault(Fault::Delay(Duration::from_millis(1800))))
        );
        assert_eq!(parse_route("/refuse"), Some(Command::Fault(Fault::Refuse)));
        assert_eq!(
            parse_route("/noisy"),
            Some(Command::Noise(Noise::paid_provider(Duration::from_millis(
                60
            ))))
        );
        assert_eq!(
            parse_route("/noisy/120"),
            Some(Command::Noise(Noise::paid_provider(Duration::from_millis(
                120
            ))))
        );
        assert_eq!(parse_route("/quiet"), Some(Command::Noise(Noise::none())));
        assert_eq!(parse_route("/stats"), Some(Command::Stats));
        assert_eq!(parse_route("/noisy/fast"), None);
        assert_eq!(parse_route("/noisy/"), None);
        assert_eq!(parse_route("/loud"), None);
        assert_eq!(
            parse_route("/method-errors/eth_blockNumber/30"),
            Some(Command::MethodErrors(Some(MethodErrors::bad_gateway(
                "eth_blockNumber",
                0.3
            ))))
        );
        assert_eq!(
            parse_route("/method-errors/eth_call/0"),
            Some(Command::MethodErrors(None))
        );
        assert_eq!(
            parse_route("/rpc-errors/eth_gasPrice/30"),
            Some(Command::MethodErrors(Some(MethodErrors::header_not_found(
                "eth_gasPrice",
                0.3
            ))))
        );
        assert_eq!(
            parse_route("/pruned/eth_getBalance/100"),
            Some(Command::MethodErrors(Some(MethodErrors::pruned(
                "eth_getBalance",
                1.0
            ))))
        );
        for bad in [
            "/method-errors/eth_call/101",
            "/method-errors/eth_call/-1",
            "/method-errors//30",
            "/method-errors/eth_call",
            "/method-errors/eth_call/x",
        ] {
            assert_eq!(parse_route(bad), None, "{bad}");
        }
    }

    #[test]
    fn stats_read_as_lines() {
        let stats = NoiseStats {
            requests: 10,
            errors_502: 2,
            ..NoiseStats::default()
        };
        let text = stats_text(stats);
        assert!(
            text.starts_with("requests 10\nreplica 0\nerrors_502 2\n"),
            "{text}"
        );
        assert!(text.ends_with("flap_errors 0\nmethod_errors 0\n"), "{text}");
    }
}
