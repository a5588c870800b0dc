//! `ratelimit`: n1, the fastest provider (so latency weighting sends it the most), has a plan of
//! 15 requests/s (a token bucket answering 429 above it). Three arms side by side: HAProxy alone
//! (today's figure), the actuator told `max_rps = 15`, and the actuator without it (only the 429s
//! in HAProxy's counters tell it). 429s are not retried by HAProxy: each one reaches a client.

use std::fmt::Write as _;
use std::time::Instant;

use testkit::fault_proxy::RateLimit;

use super::{arm, index, log_explain, present, Timing};
use crate::arm::{Arm, ArmSpec};
use crate::load::ClientSummary;
use crate::recorder::shares;
use crate::stack::Stack;
use crate::stats::{met, table};

const LIMITED: usize = 0;
/// The plan: 15 requests/s, a second's worth at once.
const PLAN: RateLimit = RateLimit {
    per_second: 15.0,
    burst: 15.0,
};
const HAPROXY_ONLY: &str = "limit-haproxy-only";
const KNOWN: &str = "limit-known";
const LEARNED: &str = "limit-learned";
/// The targets: 429s with the limit configured, and how many times fewer the passive
/// signal alone makes them than today.
const KNOWN_TARGET: f64 = 0.005;
const LEARNED_CUT: f64 = 5.0;

/// Client requests answered HTTP 429 as a share of all (0 without requests).
fn rate_limited_share(client: &ClientSummary) -> f64 {
    client.rate_limited as f64 / client.requests().max(1) as f64
}

fn limited(kind: Arm, name: &'static str, max_rps: Option<f64>) -> ArmSpec {
    let mut spec = arm(kind, name);
    let provider = &mut spec.providers[LIMITED];
    provider.noise.rate_limit = Some(PLAN);
    provider.max_rps = max_rps;
    spec
}

/// The arms; a short run keeps the actuator with the limit configured.
pub(super) fn arms(short: bool) -> Vec<ArmSpec> {
    let known = limited(Arm::Ethrpc, KNOWN, Some(PLAN.per_second));
    if short {
        return vec![known];
    }
    vec![
        limited(Arm::HaproxyOnly, HAPROXY_ONLY, None),
        known,
        limited(Arm::Ethrpc, LEARNED, None),
    ]
}

pub(super) async fn run(stack: &Stack, timing: &Timing) -> String {
    let arms = present(stack, &[HAPROXY_ONLY, KNOWN, LEARNED]);
    let started = Instant::now();
    let noise_before: Vec<u64> = arms
        .iter()
        .map(|&i| stack.arms[i].proxies[LIMITED].stats().rate_limited)
        .collect();
    tokio::time::sleep(timing.ratelimit).await;
    let ended = Instant::now();
    log_explain(stack, &arms, "at the end of ratelimit").await;
    let snapshots = stack.recorder.between(started, ended);
    let seconds = (ended - started).as_secs_f64();
    let today = index(stack, HAPROXY_ONLY)
        .map(|i| rate_limited_share(&stack.loads[i].summary(started, ended)));
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (&i, before) in arms.iter().zip(noise_before) {
        let a = &stack.arms[i];
        let client = stack.loads[i].summary(started, ended);
        let share = shares(&snapshots, i)[LIMITED];
        let sent = client.requests() as f64 * share / seconds;
        let rejected = a.proxies[LIMITED].stats().rate_limited - before;
        rows.push(vec![
            a.name().into(),
            client.requests().to_string(),
            format!(
                "{} ({:.2} %)",
                client.rate_limited,
                100.0 * rate_limited_share(&client)
            ),
            format!("{:.3} %", 100.0 * client.failed_share()),
            format!("{:.1} % ({sent:.1}/s)", 100.0 * share),
            rejected.to_string(),
            client.latency_text(),
        ]);
        let target = match a.name() {
            KNOWN => Some(format!(
                "≤ {:.1} %: {:.2} % {}",
                100.0 * KNOWN_TARGET,
                100.0 * rate_limited_share(&client),
                met(rate_limited_share(&client) <= KNOWN_TARGET)
            )),
            LEARNED => today.map(|today| {
                let cut = today / rate_limited_share(&client);
                format!(
                    "≥ {LEARNED_CUT:.0}× fewer than HAProxy alone: {cut:.1}× {}",
                    met(cut >= LEARNED_CUT)
                )
            }),
            _ => None,
        };
        if let Some(target) = target {
            targets.push(vec![a.name().into(), target]);
        }
    }
    let mut report = format!(
        "### `ratelimit`: a provider with a 15 requests/s plan\n\n{:.0} s. n1 (the fastest) answers 429 above 15 \
         requests/s (token bucket, burst 15); the exporter's probes count against the same bucket. Arms: \
         `{HAPROXY_ONLY}` (no actuator: today's figure), `{KNOWN}` (n1 `max_rps = 15`), `{LEARNED}` (no \
         `max_rps`: the 429s in HAProxy's counters are the only signal).\n\n",
        seconds
    );
    let _ = writeln!(
        report,
        "{}",
        table(
            &[
                "arm",
                "client requests",
                "answered 429",
                "failed (any)",
                "n1's traffic share (rate)",
                "429s n1 gave (clients and probes)",
                "client p50 / p99"
            ],
            &rows
        )
    );
    let _ = writeln!(report, "{}", table(&["arm", "target"], &targets));
    report
}
