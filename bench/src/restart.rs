//! The `restart` part: the ethrpc arm's actuator is killed and started again mid-incident (a
//! rollout, an OOM kill), and must carry on from what it remembered (rebuilt from its own series
//! in Prometheus), not from nothing:
//! - during a hold: n2 answers HTTP 500 for 5 s, recovers, and the actuator restarts 3 s later,
//!   inside n2's hold: n2 must stay out until the hold ends and return through slow start;
//! - mid-flap: n2 flaps (5 s HTTP 500, 5 s fine) until it is held out, and the actuator restarts
//!   2 s into a good phase, when n2 looks healthy: n2's weight may change at most once after
//!   the restart, and its share of client traffic stay ≤ 2 %.

use std::time::{Duration, Instant};

use testkit::fault_proxy::Fault;
use testkit::get_text;
use testkit::metrics_text::sample;

use crate::arm::{Arm, FAULTY, SERVERS};
use crate::recorder::{shares, Snapshot};
use crate::stack::Stack;
use crate::stats::{met, table};

const PHASE: Duration = Duration::from_secs(5);
const CHANGES_TARGET: usize = 1;
const SHARE_TARGET: f64 = 0.02;

/// n2's weight in the ethrpc arm (index 0) in each snapshot.
fn weights(snapshots: &[Snapshot]) -> Vec<(Instant, u32)> {
    snapshots
        .iter()
        .map(|s| (s.at, s.arms[0][FAULTY].weight))
        .collect()
}

/// How many times the weight changed, and the weights it went through, as `+S s:W` from `zero`.
fn changes(weights: &[(Instant, u32)], zero: Instant) -> (usize, String) {
    let mut seen = String::new();
    let mut count = 0;
    let mut last = None;
    for &(at, w) in weights {
        if last != Some(w) {
            if last.is_some() {
                count += 1;
            }
            seen.push_str(&format!(
                " {:.1}s:{w}",
                at.saturating_duration_since(zero).as_secs_f64()
            ));
            last = Some(w);
        }
    }
    (count, seen.trim().to_owned())
}

/// The ethrpc actuator's earliest-return time for n2 (Unix seconds), if it holds n2 out.
async fn earliest_return(stack: &Stack) -> Option<f64> {
    let port = stack.arms.first()?.actuator_port?;
    let text = get_text(&format!("http://127.0.0.1:{port}/metrics")).await?;
    sample(
        &text,
        "ethrpc_actuator_earliest_return_timestamp_seconds",
        &[("server", SERVERS[FAULTY])],
    )
}

/// Sets n2's fault in the ethrpc arm.
fn set(stack: &Stack, fault: Fault) {
    stack.arms[0].proxies[FAULTY].set_fault(fault);
}

/// Runs both scenarios on a stack of the ethrpc arm alone; returns the report section.
pub async fn run(rate: u32) -> anyhow::Result<String> {
    eprintln!("restart: starting the ethrpc arm…");
    let mut stack = Stack::start(&[Arm::Ethrpc], rate).await?;
    stack.wait_healthy(Duration::from_secs(120)).await;

    // During a hold.
    eprintln!("restart: during a hold");
    set(&stack, Fault::Error);
    tokio::time::sleep(PHASE).await;
    set(&stack, Fault::Pass);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hold_ends = earliest_return(&stack).await;
    let restarted = Instant::now();
    let hold_left = hold_ends.map(|t| t - common::clock::unix_now());
    stack.restart_actuator(Arm::Ethrpc).await?;
    stack.wait_healthy(Duration::from_secs(120)).await;
    let after = weights(&stack.recorder.between(restarted, Instant::now()));
    let back = after
        .iter()
        .find(|(_, w)| *w > 0)
        .map(|(at, w)| (at.saturating_duration_since(restarted).as_secs_f64(), *w));
    let (_, hold_weights) = changes(&after, restarted);
    let full = 100;
    let hold_row = vec![
        "during a hold".to_owned(),
        hold_left.map_or("-".into(), |s| format!("{s:.1} s")),
        back.map_or("never".into(), |(s, _)| format!("{s:.1} s")),
        back.map_or("-".into(), |(_, w)| {
            format!(
                "{w} ({})",
                if w < full {
                    "slow start"
                } else {
                    "full at once"
                }
            )
        }),
        met(back.is_some_and(|(s, w)| hold_left.is_none_or(|h| s + 1.0 >= h) && w < full))
            .to_owned(),
        hold_weights,
    ];

    // Mid-flap.
    eprintln!("restart: mid-flap");
    for _ in 0..6 {
        set(&stack, Fault::Error);
        tokio::time::sleep(PHASE).await;
        set(&stack, Fault::Pass);
        tokio::time::sleep(PHASE).await;
    }
    set(&stack, Fault::Error);
    tokio::time::sleep(PHASE).await;
    set(&stack, Fault::Pass);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    stack.restart_actuator(Arm::Ethrpc).await?;
    tokio::time::sleep(PHASE - Duration::from_secs(2)).await;
    for _ in 0..5 {
        set(&stack, Fault::Error);
        tokio::time::sleep(PHASE).await;
        set(&stack, Fault::Pass);
        tokio::time::sleep(PHASE).await;
    }
    let ended = Instant::now();
    let during = stack.recorder.between(restarted, ended);
    let (count, flap_weights) = changes(&weights(&during), restarted);
    let share = shares(&during, 0)[FAULTY];
    let client = stack.loads[0].summary(restarted, ended);
    let flap_rows = vec![vec![
        "mid-flap".to_owned(),
        count.to_string(),
        met(count <= CHANGES_TARGET).to_owned(),
        format!("{:.2} %", 100.0 * share),
        met(share <= SHARE_TARGET).to_owned(),
        client.failed_text(),
        flap_weights,
    ]];
    Ok(format!(
        "## Restarts\n\nThe ethrpc arm alone; its actuator is killed and started again with the same \
         config, Prometheus keeping its series. Weights of n2 are `seconds after the restart:weight`.\n\n\
         ### During a hold\n\nn2 answers HTTP 500 for 5 s, then recovers; the actuator restarts 3 s \
         later. The target: n2 stays at 0 until its hold ends, then returns through slow start.\n\n{}\n\
         ### Mid-flap\n\nn2 flaps (5 s HTTP 500, 5 s fine) for 65 s; the actuator restarts 2 s into a \
         good phase, then n2 flaps 50 s more.\n\n{}",
        table(
            &[
                "scenario",
                "hold left at the restart",
                "restart → n2 back",
                "first weight",
                "target",
                "n2's weights"
            ],
            &[hold_row]
        ),
        table(
            &[
                "scenario",
                "n2 weight changes after the restart",
                "≤ 1",
                "n2's share after the restart",
                "≤ 2 %",
                "failed client requests",
                "n2's weights"
            ],
            &flap_rows
        )
    ))
}
