//! One failover trial: inject a fault into one provider of every arm at once, on top of the
//! providers' noise; measure how fast each arm takes it out of HAProxy's rotation, how much client
//! traffic it still got over the window, what clients saw, and how fast it returns after recovery.

use std::time::{Duration, Instant};

use testkit::fault_proxy::Fault;

use crate::arm::FAULTY;
use crate::load::ClientSummary;
use crate::recorder::{shares, Track};
use crate::stack::{ArmStack, Stack};

/// What goes wrong with the faulty provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Its head stops moving.
    Stall,
    /// Its answers are held 4 s.
    Slow,
    /// Its node is killed.
    Down,
    /// It answers HTTP 500 with a JSON-RPC error.
    Errors,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Stall,
        Scenario::Slow,
        Scenario::Down,
        Scenario::Errors,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Stall => "stall",
            Scenario::Slow => "slow",
            Scenario::Down => "down",
            Scenario::Errors => "errors",
        }
    }

    /// What happens, for a timeline's title.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Stall => "n2's head stops",
            Scenario::Slow => "n2's answers are held 4 s",
            Scenario::Down => "n2's node is killed",
            Scenario::Errors => "n2 answers HTTP 500",
        }
    }

    /// The p95 target for injection → weight 0.
    pub fn target(self) -> Duration {
        Duration::from_secs(match self {
            Scenario::Stall => 6,
            Scenario::Slow => 5,
            Scenario::Down | Scenario::Errors => 3,
        })
    }

    /// The target for failed client requests over the window, as a share, where there is one.
    pub fn client_error_target(self) -> Option<f64> {
        matches!(self, Scenario::Down | Scenario::Errors).then_some(0.0005)
    }
}

/// One trial of one arm.
#[derive(Debug, Clone, Default)]
pub struct Trial {
    /// Injection → the faulty server's weight is 0.
    pub to_weight_zero: Option<Duration>,
    /// Injection → out of rotation: weight 0 or marked DOWN by HAProxy's health check.
    pub to_out: Option<Duration>,
    /// Recovery → back: the start of its first 5 s in rotation at one weight.
    pub to_back: Option<Duration>,
    /// Share of the window's requests HAProxy sent to the faulty server.
    pub faulty_share: f64,
    /// What clients saw in the window.
    pub client: ClientSummary,
}

/// When one trial began and ended, for its timeline.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub injected: Instant,
    pub recovered: Instant,
    pub end: Instant,
}

async fn inject(a: &mut ArmStack, s: Scenario) {
    match s {
        Scenario::Stall => a.nodes[FAULTY].set_interval_mining(0).await,
        Scenario::Slow => a.proxies[FAULTY].set_fault(Fault::Delay(Duration::from_secs(4))),
        Scenario::Down => a.nodes[FAULTY].kill().await,
        Scenario::Errors => a.proxies[FAULTY].set_fault(Fault::Error),
    }
}

/// Most catch-up rounds after a stall or a restart (each mines the gap the last one left).
const CATCH_UP_ROUNDS: usize = 5;

async fn recover(a: &mut ArmStack, s: Scenario) {
    a.proxies[FAULTY].set_fault(Fault::Pass);
    if s == Scenario::Down {
        a.nodes[FAULTY].restart().await;
    }
    if matches!(s, Scenario::Stall | Scenario::Down) {
        // Mining a long gap takes seconds, while the others go on mining: catch up until at
        // most a block behind, or the faulty node would stay that many blocks behind for good
        // (seen: 6 blocks after a restart, lagging for the rest of the run).
        for _ in 0..CATCH_UP_ROUNDS {
            let head = a.nodes[(FAULTY + 1) % 3].block_number().await;
            let own = a.nodes[FAULTY].block_number().await;
            if head <= own + 1 {
                break;
            }
            a.nodes[FAULTY].mine(head - own).await;
        }
        a.nodes[FAULTY].set_interval_mining(1).await;
    }
}

/// How long a faulty server may take to return before the trial gives up on it.
const RETURN_LIMIT: Duration = Duration::from_secs(180);
/// A server is back once it holds one weight in rotation this long.
const STEADY: Duration = Duration::from_secs(5);

/// One trial: every arm faulted together. Returns one [`Trial`] per arm, and its span.
pub async fn trial(stack: &mut Stack, s: Scenario, window: Duration) -> (Vec<Trial>, Span) {
    stack.wait_healthy(RETURN_LIMIT).await;
    let injected = Instant::now();
    for a in stack.arms.iter_mut() {
        inject(a, s).await;
    }
    tokio::time::sleep_until((injected + window).into()).await;
    let window_end = Instant::now();
    for a in stack.arms.iter_mut() {
        recover(a, s).await;
    }
    let recovered = Instant::now();
    while recovered.elapsed() < RETURN_LIMIT {
        let after = stack.recorder.between(recovered, Instant::now());
        let all_back = (0..stack.arms.len()).all(|arm| {
            let track = Track {
                snapshots: &after,
                arm,
                server: FAULTY,
            };
            track.first_steady(STEADY).is_some()
        });
        if all_back {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let end = Instant::now();
    let during = stack.recorder.between(injected, window_end);
    let after = stack.recorder.between(recovered, end);
    let trials = (0..stack.arms.len())
        .map(|arm| {
            let faulty = |snapshots| Track {
                snapshots,
                arm,
                server: FAULTY,
            };
            let since = |t: Option<Instant>, from: Instant| t.map(|t| t - from);
            Trial {
                to_weight_zero: since(faulty(&during).first(|s| s.weight == 0), injected),
                to_out: since(faulty(&during).first(|s| !s.in_rotation()), injected),
                to_back: since(faulty(&after).first_steady(STEADY), recovered),
                faulty_share: shares(&during, arm)[FAULTY],
                client: stack.loads[arm].summary(injected, window_end),
            }
        })
        .collect();
    (
        trials,
        Span {
            injected,
            recovered,
            end,
        },
    )
}
