//! The `noisy` part: three healthy noisy providers and no fault, from a fresh stack. A good arm
//! leaves them all in rotation, writes few weights once the first minute has settled them, loses
//! no client requests to the noise, and gives the fastest provider the most traffic.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use testkit::fault_proxy::NoiseStats;

use crate::arm::{MEDIANS_MS, SERVERS};
use crate::recorder::{shares, ServerSample, Track};
use crate::stack::Stack;
use crate::stats::{met, table};

/// Writes in this first stretch settle the weights and are counted apart.
const SETTLING: Duration = Duration::from_secs(60);
const WRITES_TARGET: f64 = 10.0;
const CLIENT_ERROR_TARGET: f64 = 0.0001;
/// n1 "gets the largest share" only by this much: equal weights leave the shares a rounding
/// apart.
const LEAD: f64 = 0.01;

fn out_of_rotation(s: &ServerSample) -> bool {
    !s.in_rotation()
}

fn noise_text(before: NoiseStats, after: NoiseStats) -> String {
    format!(
        "{} requests: {} answered by the replica, {} 502s, {} hangs, {} rate-limited",
        after.requests - before.requests,
        after.replica - before.replica,
        after.errors_502 - before.errors_502,
        after.hangs - before.hangs,
        after.rate_limited - before.rate_limited
    )
}

/// Runs for `length` and returns the report section.
pub async fn run(stack: &Stack, length: Duration) -> String {
    let started = Instant::now();
    let noise_before: Vec<NoiseStats> = stack.arms.iter().map(|a| a.noise()).collect();
    let mut writes_start = Vec::new();
    for a in &stack.arms {
        writes_start.push(stack.weight_writes(a.arm).await);
    }
    let mut writes_settled = vec![None; stack.arms.len()];
    if length > SETTLING {
        tokio::time::sleep(SETTLING).await;
        for (w, a) in writes_settled.iter_mut().zip(&stack.arms) {
            *w = stack.weight_writes(a.arm).await;
        }
    }
    tokio::time::sleep_until((started + length).into()).await;
    let ended = Instant::now();
    let snapshots = stack.recorder.between(started, ended);

    let mut servers = Vec::new();
    let mut arms = Vec::new();
    let mut targets = Vec::new();
    for (i, a) in stack.arms.iter().enumerate() {
        let writes_end = stack.weight_writes(a.arm).await;
        let share = shares(&snapshots, i);
        let mut ejections = 0;
        for (s, name) in SERVERS.iter().enumerate() {
            let track = Track {
                snapshots: &snapshots,
                arm: i,
                server: s,
            };
            ejections += track.entries(out_of_rotation);
            let usual = track.usual_weight().unwrap_or(0);
            let writes = match (writes_start[i], writes_settled[i], writes_end) {
                (Some(start), Some(settled), Some(end)) => {
                    format!("{:.0} / {:.0}", end[s] - start[s], end[s] - settled[s])
                }
                (Some(start), None, Some(end)) => format!("{:.0} / -", end[s] - start[s]),
                _ => "-".into(),
            };
            servers.push(vec![
                a.arm.name().into(),
                format!("{name} ({} ms)", MEDIANS_MS[s]),
                track.entries(|s| s.weight == 0).to_string(),
                track.entries(|s| s.down).to_string(),
                writes,
                format!("{:.1}", track.seconds(out_of_rotation)),
                format!("{:.1} ({usual})", track.seconds(|s| s.weight < usual)),
                format!("{:.1} %", 100.0 * share[s]),
            ]);
        }
        let client = stack.loads[i].summary(started, ended);
        arms.push(vec![
            a.arm.name().into(),
            client.latency_text(),
            client.failed_text(),
            noise_text(noise_before[i], a.noise()),
        ]);
        let settled_writes = match (writes_settled[i], writes_end) {
            (Some(settled), Some(end)) => {
                let total: f64 = end.iter().zip(settled).map(|(e, s)| e - s).sum();
                format!("{total:.0} {}", met(total <= WRITES_TARGET))
            }
            _ => "-".into(),
        };
        let fastest = share[0] >= share[1].max(share[2]) + LEAD;
        targets.push(vec![
            a.arm.name().into(),
            format!("{ejections} {}", met(ejections == 0)),
            settled_writes,
            format!(
                "{:.3} % {}",
                100.0 * client.failed_share(),
                met(client.failed_share() <= CLIENT_ERROR_TARGET)
            ),
            format!("{:.1} % {}", 100.0 * share[0], met(fastest)),
        ]);
    }
    let mut report = format!(
        "## Noisy providers, no fault\n\n{} s from a fresh stack (the first minute settles the weights; writes \
         after it are counted apart). \"Ejections\" count entries into weight 0 and into DOWN (by HAProxy's \
         health check); \"below usual weight\" is time below the weight the server held longest (in \
         brackets).\n\n",
        length.as_secs()
    );
    let _ = writeln!(
        report,
        "{}",
        table(
            &[
                "arm",
                "provider (median)",
                "ejections to weight 0",
                "marked DOWN",
                "weight writes (all / after the first minute)",
                "s at weight 0 or DOWN",
                "s below usual weight",
                "traffic share"
            ],
            &servers
        )
    );
    let _ = writeln!(
        report,
        "{}",
        table(
            &[
                "arm",
                "client p50 / p99",
                "failed client requests",
                "noise injected (the arm's three providers)"
            ],
            &arms
        )
    );
    let _ = writeln!(
        report,
        "### Targets\n\n{}",
        table(
            &[
                "arm",
                "ejections: 0",
                "weight writes after the first minute: ≤ 10",
                "failed client requests: ≤ 0.01 %",
                "n1 (fastest) gets the largest share (by ≥ 1 point)"
            ],
            &targets
        )
    );
    report
}
