//! The failover benchmark: inject a fault into one provider of every arm at once, measure how
//! fast each arm takes it out of HAProxy's rotation, how much client traffic it still got over the
//! window, and how fast it returns after recovery. Also the flap-damping run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use testkit::fault_proxy::Fault;

use crate::load::Load;
use crate::stack::{Arm, ArmStack, Stack, FAULTY, SERVERS};

/// What goes wrong with the faulty provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Its head stops moving.
    Stall,
    /// Its answers are held 4 s.
    Slow,
    /// Its process is killed.
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

    /// The p95 target for injection → weight 0.
    pub fn target(self) -> Duration {
        Duration::from_secs(match self {
            Scenario::Stall => 6,
            Scenario::Slow => 5,
            Scenario::Down | Scenario::Errors => 3,
        })
    }
}

/// One trial of one arm.
#[derive(Debug, Clone, Default)]
pub struct Trial {
    /// Injection → the faulty server's weight is 0.
    pub to_weight_zero: Option<Duration>,
    /// Injection → out of rotation: weight 0 or marked DOWN by HAProxy's health check.
    pub to_out: Option<Duration>,
    /// Recovery → full weight and UP again.
    pub to_full: Option<Duration>,
    /// Share of the window's requests HAProxy sent to the faulty server.
    pub faulty_share: f64,
    /// Client latencies in the window (seconds).
    pub latencies: Vec<f64>,
    pub failed_requests: usize,
}

async fn inject(a: &mut ArmStack, s: Scenario) {
    match s {
        Scenario::Stall => a.nodes[FAULTY].set_interval_mining(0).await,
        Scenario::Slow => a.proxies[FAULTY].set_fault(Fault::Delay(Duration::from_secs(4))),
        Scenario::Down => a.nodes[FAULTY].kill().await,
        Scenario::Errors => a.proxies[FAULTY].set_fault(Fault::Error),
    }
}

async fn recover(a: &mut ArmStack, s: Scenario) {
    a.proxies[FAULTY].set_fault(Fault::Pass);
    if s == Scenario::Down {
        a.nodes[FAULTY].restart().await;
    }
    if matches!(s, Scenario::Stall | Scenario::Down) {
        let head = a.nodes[(FAULTY + 1) % 3].block_number().await;
        let own = a.nodes[FAULTY].block_number().await;
        if head > own {
            a.nodes[FAULTY].mine(head - own).await;
        }
        a.nodes[FAULTY].set_interval_mining(1).await;
    }
}

/// How many requests HAProxy has sent to each server so far, per arm.
async fn selections(stack: &Stack) -> Vec<HashMap<String, u64>> {
    stack
        .backends()
        .await
        .into_iter()
        .map(|(_, b)| {
            b.servers
                .iter()
                .map(|(s, st)| (s.clone(), st.selected_total))
                .collect()
        })
        .collect()
}

/// The faulty server's share of the requests sent between two [`selections`], per arm.
fn faulty_shares(before: &[HashMap<String, u64>], after: &[HashMap<String, u64>]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(before, after)| {
            let delta = |s: &str| {
                let count = |m: &HashMap<String, u64>| m.get(s).copied().unwrap_or(0);
                count(after).saturating_sub(count(before))
            };
            let total: u64 = SERVERS.iter().map(|s| delta(s)).sum();
            if total == 0 {
                0.0
            } else {
                delta(SERVERS[FAULTY]) as f64 / total as f64
            }
        })
        .collect()
}

/// One trial: every arm faulted together. Returns one [`Trial`] per arm.
pub async fn trial(stack: &mut Stack, loads: &[Load], s: Scenario, window: Duration) -> Vec<Trial> {
    stack.wait_healthy(Duration::from_secs(180)).await;
    let before = selections(stack).await;
    let injected = Instant::now();
    for a in stack.arms.iter_mut() {
        inject(a, s).await;
    }
    let n = stack.arms.len();
    let mut trials = vec![Trial::default(); n];
    let faulty = SERVERS[FAULTY];
    while injected.elapsed() < window {
        for (t, (_, b)) in trials.iter_mut().zip(stack.backends().await) {
            let Some(st) = b.servers.get(faulty) else {
                continue;
            };
            if st.weight == 0 && t.to_weight_zero.is_none() {
                t.to_weight_zero = Some(injected.elapsed());
            }
            let out =
                st.weight == 0 || st.status.starts_with("DOWN") || st.status.starts_with("MAINT");
            if out && t.to_out.is_none() {
                t.to_out = Some(injected.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window_end = Instant::now();
    let after = selections(stack).await;
    let shares = faulty_shares(&before, &after);
    for (i, t) in trials.iter_mut().enumerate() {
        t.faulty_share = shares[i];
        let samples = loads[i].between(injected, window_end);
        t.latencies = samples.iter().map(|s| s.latency.as_secs_f64()).collect();
        t.failed_requests = samples.iter().filter(|s| !s.ok).count();
    }
    let recovered = Instant::now();
    for a in stack.arms.iter_mut() {
        recover(a, s).await;
    }
    let deadline = recovered + Duration::from_secs(180);
    while trials.iter().any(|t| t.to_full.is_none()) && Instant::now() < deadline {
        for (t, (_, b)) in trials.iter_mut().zip(stack.backends().await) {
            let full = b
                .servers
                .get(faulty)
                .is_some_and(|st| st.weight == 100 && st.status.starts_with("UP"));
            if full && t.to_full.is_none() {
                t.to_full = Some(recovered.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    trials
}

/// The flap run: the faulty provider answers errors for 5 s, then normally for 5 s, for
/// `length`. Per arm: weights written for it (actuated arms) and its share of client traffic.
pub async fn flap(stack: &mut Stack, length: Duration) -> Vec<(Arm, f64, f64)> {
    stack.wait_healthy(Duration::from_secs(180)).await;
    let mut writes_before = Vec::new();
    for a in &stack.arms {
        writes_before.push(stack.weight_writes(a.arm).await);
    }
    let before = selections(stack).await;
    let started = Instant::now();
    let mut bad = false;
    while started.elapsed() < length {
        bad = !bad;
        let fault = if bad { Fault::Error } else { Fault::Pass };
        for a in &stack.arms {
            a.proxies[FAULTY].set_fault(fault);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    for a in &stack.arms {
        a.proxies[FAULTY].set_fault(Fault::Pass);
    }
    let after = selections(stack).await;
    let shares = faulty_shares(&before, &after);
    let mut out = Vec::new();
    for (i, a) in stack.arms.iter().enumerate() {
        let share = shares[i];
        let writes = stack.weight_writes(a.arm).await - writes_before[i];
        out.push((a.arm, writes, share));
    }
    out
}
