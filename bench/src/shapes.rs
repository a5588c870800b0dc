//! The failover trials again, on the shapes users run that the standard stack is not:
//! - `pool-of-two`: two healthy noisy paid providers and the default policy (no `max_block_age`
//!   tuning), HAProxy alone beside it. n2's head stops: the chain head, decided on block numbers
//!   and timestamps, must make it lag behind n1 within seconds, where counting numbers alone left
//!   it in rotation until its block was a minute old. n2's answers take 4 s: a timeout, confirmed
//!   by a third attempt, must still take it out within 5 s.
//! - `engines`: the same ethrpc arm twice, its actuator querying Prometheus in one and
//!   VictoriaMetrics (with `-search.latencyOffset=1s`, as `deploy/README.md` says to set) in the
//!   other, both engines scraping the same exporter.

use std::path::PathBuf;
use std::time::Duration;

use testkit::metrics_engine::Engine;

use crate::arm::{Arm, ArmSpec};
use crate::failover::{self, Options, SHARE_TARGET};
use crate::stack::Stack;
use crate::trial::Scenario;

/// A shape of deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    PoolOfTwo,
    Engines,
}

impl Shape {
    /// The report part it writes.
    pub fn part(self) -> &'static str {
        match self {
            Shape::PoolOfTwo => "pool-of-two",
            Shape::Engines => "engines",
        }
    }

    fn arms(self) -> Vec<ArmSpec> {
        match self {
            Shape::PoolOfTwo => vec![
                ArmSpec::pool_of_two(Arm::Ethrpc),
                ArmSpec::pool_of_two(Arm::HaproxyOnly),
            ],
            Shape::Engines => vec![
                ArmSpec::on_engine("ethrpc-prometheus", Engine::Prometheus),
                ArmSpec::on_engine(
                    "ethrpc-victoriametrics",
                    Engine::VictoriaMetrics {
                        latency_offset: Some(Duration::from_secs(1)),
                    },
                ),
            ],
        }
    }

    fn options(self, trials: usize, window: Duration, out: Option<PathBuf>) -> Options {
        let (title, intro, share_target, scenarios, timeline) = match self {
            Shape::PoolOfTwo => (
                "Pool of two",
                "Each arm's chain has only n1 and n2 (n3 stands `disabled` in HAProxy); the ethrpc \
                 arm runs the default policy (`max_block_age` 60 s, `max_block_lag` 3), not the \
                 bench's tuned one. ",
                // The target for the stalled provider's share of the next minute.
                0.05,
                vec![Scenario::Stall, Scenario::Slow],
                Some((Scenario::Stall, "timeline-pool-of-two-stall")),
            ),
            Shape::Engines => (
                "Metrics engines",
                "Two ethrpc arms, the first querying Prometheus 2.42, the second VictoriaMetrics \
                 1.79 single-node with `-search.latencyOffset=1s`; both scrape the same exporter \
                 every second. The targets are the Prometheus arm's. ",
                SHARE_TARGET,
                vec![Scenario::Stall, Scenario::Down],
                None,
            ),
        };
        Options {
            title,
            intro,
            share_target,
            scenarios,
            trials,
            window,
            out,
            timeline,
        }
    }
}

/// Runs `shape`'s trials (`trials` per scenario over `window`, `rate` client requests/s per
/// arm) on a stack of its own; returns the report section (and its timeline next to `out`).
pub async fn run(
    shape: Shape,
    trials: usize,
    window: Duration,
    rate: u32,
    out: Option<PathBuf>,
) -> anyhow::Result<String> {
    let arms = shape.arms();
    eprintln!("{}: starting {} arms…", shape.part(), arms.len());
    let mut stack = Stack::start_specs(arms, rate).await?;
    Ok(failover::run(&mut stack, &shape.options(trials, window, out)).await)
}
