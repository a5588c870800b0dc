//! The `routing` part (issues 11 and 20): what the actuator does with tiers, plan limits and
//! HAProxy's counters, on the bench's real parts. Four scenarios, each in its own submodule:
//! [`ratelimit`] (a provider with a plan limit), [`tiers`] (a reserve behind two primaries that
//! go down), [`passive`] (a provider failing clients' calls but not the probes, with 502s or, as
//! the `rpc-errors` part, with JSON-RPC errors inside a 200, beside [`reverts`], every provider
//! answering the client's own errors) and [`capacity`] (stray 429s,
//! clients' 400s and plans too tight for the demand). A full run
//! gives each scenario its own stack, one after the other; the short run puts one arm of each on
//! one stack and runs them side by side.

mod capacity;
mod passive;
mod ratelimit;
mod reverts;
mod tiers;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::arm::{Arm, ArmSpec, ETHRPC_POLICY};
use crate::stack::Stack;

/// Client requests per second through each arm's frontend.
const RATE: u32 = 100;

/// The actuator's passive signal over 5 s with its 1 s cycle: short enough to react within a few
/// cycles, long enough to hold a few hundred requests per server.
const ACTUATOR: &str = "signal_window = \"5s\"\n";

/// An arm of a routing scenario: the standard arm of that kind, renamed, with the routing
/// actuator settings.
fn arm(kind: Arm, name: &'static str) -> ArmSpec {
    ArmSpec {
        name,
        policy: ETHRPC_POLICY.to_owned(),
        actuator: ACTUATOR,
        ..ArmSpec::standard(kind)
    }
}

/// The index of the arm named `name` in `stack`.
fn index(stack: &Stack, name: &str) -> Option<usize> {
    stack.arms.iter().position(|a| a.name() == name)
}

/// The indices of the arms of `names` that `stack` runs (a short run has fewer), in that order.
fn present(stack: &Stack, names: &[&str]) -> Vec<usize> {
    names.iter().filter_map(|name| index(stack, name)).collect()
}

/// Prints the actuators' pages of `arms` to stderr: what the actuator saw when a number came out
/// as it did.
async fn log_explain(stack: &Stack, arms: &[usize], when: &str) {
    for &i in arms {
        if let Some(page) = stack.arms[i].explain().await {
            eprintln!("--- {} {when}:\n{page}", stack.arms[i].name());
        }
    }
}

/// Runs `scenarios` and returns the report section under `heading`. `short`: one arm each on one
/// stack, tens of seconds.
pub async fn run(short: bool, scenarios: &[Scenario], heading: &str) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut report = format!(
        "## {heading}\n\n{RATE} client requests/s per arm through HAProxy (shipped \
         `defaults` and backend options) to three noisy paid providers (`Noise::paid_provider`, medians 30 / 60 / \
         120 ms); the exporter probes every 1 s, Prometheus scrapes every 1 s, each `ethrpc` arm's actuator runs every \
         1 s with `signal_window = \"5s\"` and the bench's policy (`max_block_lag = 2`, `max_block_age = \"5s\"`, \
         the defaults otherwise: `max_client_error_ratio = 0.25`, `min_client_requests = 20`).\n\n"
    );
    if short {
        let specs: Vec<ArmSpec> = scenarios.iter().flat_map(|s| s.arms(true)).collect();
        eprintln!("routing (short): {} arms on one stack", specs.len());
        let stack = Stack::start_specs(specs, RATE).await?;
        let texts =
            futures::future::join_all(scenarios.iter().map(|s| s.run(&stack, &Timing::SHORT)))
                .await;
        report.extend(texts);
    } else {
        for &scenario in scenarios {
            let specs = scenario.arms(false);
            eprintln!("routing: {scenario:?}, {} arms", specs.len());
            let stack = Stack::start_specs(specs, RATE).await?;
            report.push_str(&scenario.run(&stack, &Timing::FULL).await);
        }
    }
    let _ = writeln!(
        report,
        "_This part took {:.0} s._\n",
        started.elapsed().as_secs_f64()
    );
    Ok(report)
}

/// One of the part's scenarios.
#[derive(Debug, Clone, Copy)]
pub enum Scenario {
    Ratelimit,
    Tiers,
    Passive,
    Capacity,
    RpcErrors,
    Reverts,
}

impl Scenario {
    /// The `routing` part's.
    pub const ROUTING: [Scenario; 3] = [Scenario::Ratelimit, Scenario::Tiers, Scenario::Passive];

    /// Its arms; a short run keeps one.
    fn arms(self, short: bool) -> Vec<ArmSpec> {
        match self {
            Scenario::Ratelimit => ratelimit::arms(short),
            Scenario::Tiers => tiers::arms(short),
            Scenario::Passive => passive::arms(passive::Failure::BadGateway, short),
            Scenario::Capacity => capacity::arms(short),
            Scenario::RpcErrors => passive::arms(passive::Failure::HeaderNotFound, short),
            Scenario::Reverts => reverts::arms(),
        }
    }

    /// Runs it on `stack` (which runs its arms) and returns its report section.
    async fn run(self, stack: &Stack, timing: &Timing) -> String {
        match self {
            Scenario::Ratelimit => ratelimit::run(stack, timing).await,
            Scenario::Tiers => tiers::run(stack, timing).await,
            Scenario::Passive => passive::run(passive::Failure::BadGateway, stack, timing).await,
            Scenario::Capacity => capacity::run(stack, timing).await,
            Scenario::RpcErrors => {
                passive::run(passive::Failure::HeaderNotFound, stack, timing).await
            }
            Scenario::Reverts => reverts::run(stack, timing).await,
        }
    }
}

/// How long each scenario's phases last.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// The rate-limited run.
    ratelimit: Duration,
    /// Tier 1 healthy, before it goes down.
    healthy: Duration,
    /// Tier 1 down.
    down: Duration,
    /// Longest wait for tier 2 to stand by again after tier 1 recovers.
    recovery: Duration,
    /// Before and after the passive fault starts.
    passive_before: Duration,
    passive_after: Duration,
    /// The capacity arms' run, its first minute settling.
    capacity: Duration,
}

impl Timing {
    const FULL: Timing = Timing {
        ratelimit: Duration::from_secs(180),
        healthy: Duration::from_secs(60),
        down: Duration::from_secs(60),
        recovery: Duration::from_secs(120),
        passive_before: Duration::from_secs(30),
        passive_after: Duration::from_secs(60),
        capacity: Duration::from_secs(240),
    };
    const SHORT: Timing = Timing {
        ratelimit: Duration::from_secs(25),
        healthy: Duration::from_secs(5),
        down: Duration::from_secs(10),
        recovery: Duration::from_secs(10),
        passive_before: Duration::from_secs(5),
        passive_after: Duration::from_secs(20),
        capacity: Duration::from_secs(25),
    };
}
