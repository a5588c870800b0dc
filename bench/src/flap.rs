//! The `flap` part: n2 answers HTTP 500 for 5 s, then normally (with its noise) for 5 s, over and
//! over. Per arm: the weights written for it, its share of client traffic, what clients saw, and a
//! timeline.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use testkit::fault_proxy::Fault;

use crate::arm::FAULTY;
use crate::recorder::shares;
use crate::stack::Stack;
use crate::stats::{met, table};
use crate::timeline::{save, Timeline};

const PHASE: Duration = Duration::from_secs(5);
const WRITES_TARGET: f64 = 4.0;
const SHARE_TARGET: f64 = 0.02;
/// After the run, how long the timeline goes on (the return).
const TAIL: Duration = Duration::from_secs(20);

/// Runs the flap for `length` and returns the report section; with `out`, also its timeline.
pub async fn run(stack: &mut Stack, length: Duration, out: Option<&Path>) -> String {
    stack.wait_healthy(Duration::from_secs(180)).await;
    let mut writes_before = Vec::new();
    for a in &stack.arms {
        writes_before.push(stack.weight_writes(a.arm).await);
    }
    let started = Instant::now();
    let mut bad_phases = Vec::new();
    while started.elapsed() < length {
        let bad_from = Instant::now();
        for a in &stack.arms {
            a.proxies[FAULTY].set_fault(Fault::Error);
        }
        tokio::time::sleep(PHASE).await;
        for a in &stack.arms {
            a.proxies[FAULTY].set_fault(Fault::Pass);
        }
        bad_phases.push((bad_from, Instant::now()));
        tokio::time::sleep(PHASE).await;
    }
    let ended = Instant::now();
    let during = stack.recorder.between(started, ended);
    let mut rows = Vec::new();
    for (i, a) in stack.arms.iter().enumerate() {
        let share = shares(&during, i)[FAULTY];
        let writes = match (stack.weight_writes(a.arm).await, writes_before[i]) {
            (Some(after), Some(before)) => Some(after[FAULTY] - before[FAULTY]),
            _ => None,
        };
        let client = stack.loads[i].summary(started, ended);
        rows.push(vec![
            a.arm.name().into(),
            writes.map_or("-".into(), |w| format!("{w:.0}")),
            writes.map_or("-".into(), |w| met(w <= WRITES_TARGET).into()),
            format!("{:.1} %", 100.0 * share),
            met(share <= SHARE_TARGET).into(),
            client.latency_text(),
            client.failed_text(),
        ]);
    }
    let mut report = format!(
        "## Flap damping\n\nn2 answers HTTP 500 for 5 s, then normally (with its noise) for 5 s, for {} s.\n\n{}",
        length.as_secs(),
        table(
            &[
                "arm",
                "weight writes for n2",
                "≤ 4",
                "n2's share of client traffic",
                "≤ 2 %",
                "client p50 / p99",
                "failed client requests"
            ],
            &rows
        )
    );
    if let Some(out) = out {
        tokio::time::sleep(TAIL).await;
        let from = started.checked_sub(PHASE * 2).unwrap_or(started);
        let snapshots = stack.recorder.between(from, ended + TAIL);
        let svg = Timeline {
            title: format!(
                "`flap`: n2 answers HTTP 500 5 s of every 10 s, for {} s",
                length.as_secs()
            ),
            arms: stack.arms.iter().map(|a| a.arm.name()).collect(),
            snapshots: &snapshots,
            zero: started,
            marks: vec![(started, "flap starts".into()), (ended, "flap ends".into())],
            shaded: bad_phases,
            shaded_label: "n2 answering HTTP 500".into(),
        }
        .svg();
        match save(out, "timeline-flap.svg", &svg, "`flap` timeline") {
            Ok(reference) => {
                let _ = write!(report, "\n{reference}");
            }
            Err(e) => eprintln!("could not write timeline-flap.svg: {e}"),
        }
    }
    report
}
