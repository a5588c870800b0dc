//! `ethrpc-actuator backtest`: what the policy would have done over a stretch of history. The
//! live loop's signals are read over the range from Prometheus (`history`), turned into
//! observations by the live loop's own `observe::assemble`, and planned step by step by its own
//! `plan::plan` from a cold start against a simulated HAProxy (`replay`); nothing is written
//! anywhere. `--set` overrides policy keys for the run, `--compare` replays a second policy on
//! the same data (`overrides`). The result is tallied per backend and server (`summary`) and
//! shown as text, JSON or an SVG timeline.

mod history;
mod overrides;
mod replay;
mod summary;
mod svg;
mod text;
mod time;

use std::time::Duration;

use common::config::{ChainConfig, Config};
use serde::Serialize;
use thiserror::Error;

use crate::observe::{assemble, Freshness};
use crate::prometheus_api::{PrometheusClient, PrometheusError};
use history::{Chunk, Grid, Wanted};
use replay::Replay;

pub use overrides::{Override, OverrideError};
pub use summary::{BackendSummary, Ejection, Period, RunSummary, ServerSummary, WeightChange};
pub use svg::render as render_svg;
pub use text::render as render_text;
pub use time::{format_time, parse_time};

/// Deadline of one range query: a chunk is thousands of evaluations, not one.
const RANGE_QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to replay.
#[derive(Debug, Clone)]
pub struct Request {
    /// Unix seconds.
    pub from: f64,
    pub to: f64,
    /// Evaluation step: the live loop's `interval` to replay it faithfully.
    pub step: Duration,
    /// Policy keys set for the run.
    pub set: Vec<Override>,
    /// Policy keys set, on top of `set`, for a second run on the same data; none: no second run.
    pub compare: Vec<Override>,
}

/// Where the replay is: about to fetch chunk `chunk` of `chunks` (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub chunk: usize,
    pub chunks: usize,
}

/// What the backtest found: one run per policy.
#[derive(Debug, Clone, Serialize)]
pub struct Backtest {
    /// Unix seconds of the first step, and of the end of the last one.
    pub start: f64,
    pub end: f64,
    pub step_seconds: f64,
    pub steps: usize,
    pub runs: Vec<RunSummary>,
}

/// Why no backtest could be made.
#[derive(Debug, Error)]
pub enum BacktestError {
    #[error("{0}")]
    Range(String),
    #[error(transparent)]
    Override(#[from] OverrideError),
    #[error("cannot build the Prometheus client: {0}")]
    Client(reqwest::Error),
    #[error("Prometheus query failed: {0}")]
    Prometheus(PrometheusError),
    #[error("Prometheus has no data for the `up` query from {from} to {to}: nothing to replay (check the range, and that this Prometheus scrapes the exporter)")]
    NoData { from: String, to: String },
}

/// The policies to replay: a label and the chains with their policies.
fn policies(
    config: &Config,
    request: &Request,
) -> Result<Vec<(String, Vec<ChainConfig>)>, OverrideError> {
    let describe = |overrides: &[Override]| {
        overrides
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let base = if request.set.is_empty() {
        "as configured".to_owned()
    } else {
        format!("--set {}", describe(&request.set))
    };
    let mut runs = vec![(base.clone(), overrides::apply(config, &request.set)?)];
    if !request.compare.is_empty() {
        let both: Vec<Override> = request
            .set
            .iter()
            .chain(&request.compare)
            .cloned()
            .collect();
        let label = if request.set.is_empty() {
            format!("--compare {}", describe(&request.compare))
        } else {
            format!("{base} --compare {}", describe(&request.compare))
        };
        runs.push((label, overrides::apply(config, &both)?));
    }
    Ok(runs)
}

/// The evaluation times of the request.
fn grid(request: &Request) -> Result<Grid, BacktestError> {
    let step_ms = i64::try_from(request.step.as_millis()).unwrap_or(i64::MAX);
    if step_ms < 1 || request.step.subsec_nanos() % 1_000_000 != 0 {
        return Err(BacktestError::Range(format!(
            "--step {} must be a whole number of milliseconds, at least 1ms, e.g. 2s",
            humantime::format_duration(request.step)
        )));
    }
    // NaN never comes from the parser, but is refused here all the same.
    if request.from.partial_cmp(&request.to) != Some(std::cmp::Ordering::Less) {
        return Err(BacktestError::Range(format!(
            "--from ({}) must be before --to ({})",
            format_time(request.from),
            format_time(request.to)
        )));
    }
    let start_ms = (request.from * 1000.0).round() as i64;
    let end_ms = (request.to * 1000.0).round() as i64;
    let steps = usize::try_from((end_ms - start_ms) / step_ms).unwrap_or(0);
    if steps == 0 {
        return Err(BacktestError::Range(format!(
            "the range is shorter than one --step ({})",
            humantime::format_duration(request.step)
        )));
    }
    Ok(Grid {
        start_ms,
        step_ms,
        steps,
    })
}

/// Replays `request` against the Prometheus and the queries of `config`, calling `progress`
/// before each chunk of the range is fetched. Never touches HAProxy.
pub async fn run(
    config: &Config,
    request: &Request,
    mut progress: impl FnMut(Progress),
) -> Result<Backtest, BacktestError> {
    let grid = grid(request)?;
    let policies = policies(config, request)?;
    let a = &config.actuator;
    let client = PrometheusClient::new(
        a.prometheus_url.expose(),
        a.query_timeout.max(RANGE_QUERY_TIMEOUT),
    )
    .map_err(BacktestError::Client)?;
    let start = grid.time(0);
    let end = grid.time(grid.steps);
    let signal_window = a.signal_window.as_secs_f64();
    let mut replays: Vec<Replay<'_>> = policies
        .iter()
        .map(|(_, chains)| Replay::new(chains, signal_window, start, grid.step_seconds()))
        .collect();
    let freshness = Freshness::new(config);
    let wanted = Wanted::new(config);
    let chunks = grid.chunks(wanted.len());
    let mut seen_data = false;
    for (k, &chunk) in chunks.iter().enumerate() {
        progress(Progress {
            chunk: k + 1,
            chunks: chunks.len(),
        });
        let chunk = Chunk::fetch(&client, &a.queries, &wanted, grid, chunk)
            .await
            .map_err(BacktestError::Prometheus)?;
        seen_data |= chunk.has_data();
        for step in chunk.steps() {
            let observations = assemble(&chunk.signals_at(step), &freshness);
            for replay in &mut replays {
                replay.step(&observations, grid.time(step));
            }
        }
    }
    if !seen_data {
        return Err(BacktestError::NoData {
            from: format_time(start),
            to: format_time(end),
        });
    }
    Ok(Backtest {
        start,
        end,
        step_seconds: grid.step_seconds(),
        steps: grid.steps,
        runs: replays
            .into_iter()
            .zip(policies.iter())
            .map(|(replay, (label, _))| replay.finish(label.clone(), end))
            .collect(),
    })
}
