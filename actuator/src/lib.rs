//! `ethrpc-actuator`: reads provider health from Prometheus, decides a weight per HAProxy server
//! and writes it through HAProxy's runtime API.

pub mod backtest;
pub mod capacity;
pub mod client_signal;
pub mod cycle;
pub mod decision;
pub mod ejection;
pub mod engine_lag;
pub mod error;
pub mod explain;
pub mod failure_log;
pub mod gates;
pub mod haproxy;
pub mod haproxy_write;
pub mod latency_weight;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod prometheus_api;
pub mod publish;
pub mod report;
pub mod warm_start;

use std::future::Future;
use std::sync::Arc;

use common::config::Config;
use common::http_server::{Reply, StatusCode};
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;

use crate::cycle::Actuator;
use crate::error::ActuatorError;
use crate::report::Mode;

/// How `run` behaves.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub mode: Mode,
    /// One cycle, then return.
    pub once: bool,
}

/// Runs cycles every `actuator.interval` (or one, with `once`), serving `/metrics`, `/healthz`,
/// `/readyz` and `/` on `listener`, until `shutdown` completes. A cycle in progress is finished
/// first, so a stop never leaves a half-written batch; HAProxy keeps its weights.
/// Returns whether the last cycle read everything and applied every write it wanted.
pub async fn run(
    config: Config,
    options: RunOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<bool, ActuatorError> {
    let interval = config.actuator.interval;
    let actuator = Arc::new(Actuator::new(config)?);
    let served = actuator.clone();
    let server = tokio::spawn(common::http_server::serve(
        listener,
        move |path| route(&served, path),
        std::future::pending(),
    ));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut last_ok = false;
    tracing::info!(interval = ?interval, mode = ?options.mode, "actuator started");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        last_ok = matches!(actuator.cycle(options.mode).await, Ok(r) if r.all_written());
        if options.once {
            break;
        }
    }
    server.abort();
    tracing::info!("actuator stopped; HAProxy keeps its weights");
    Ok(last_ok)
}

/// The status page before the first cycle.
pub const NO_CYCLE_YET: &str = "no cycle has completed yet\n";

/// The actuator's HTTP endpoints.
fn route(actuator: &Actuator, path: &str) -> Reply {
    match path {
        "/metrics" => Reply::metrics(actuator.metrics.render()),
        "/healthz" => Reply::text(StatusCode::OK, "ok\n"),
        "/readyz" if actuator.ready() => Reply::text(StatusCode::OK, "ready\n"),
        "/readyz" => Reply::text(StatusCode::SERVICE_UNAVAILABLE, "no successful cycle yet\n"),
        "/" => match actuator.last_report() {
            Some(report) => {
                let memory = actuator.memory_source().unwrap_or_default();
                let page = format!(
                    "decided by this running actuator; memory {memory}\n\n{}",
                    explain::render(&report)
                );
                Reply::text(StatusCode::OK, page)
            }
            None => Reply::text(StatusCode::OK, NO_CYCLE_YET),
        },
        _ => Reply::text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz, /readyz or /\n",
        ),
    }
}
