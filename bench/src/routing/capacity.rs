//! `capacity`: learned limits on the evidence paid providers really give (issue 20). Three arms
//! side by side, each the actuator with its own shape of 4xx, clients calling `eth_gasPrice` (a
//! method neither the probes nor HAProxy's health check call, so only client traffic meets the
//! answers):
//! - `stray-429`: n1, the fastest, answers 429 to 3 % of the calls whatever the rate (a
//!   per-method limit on a heavy call). No plan limit binds: its weight must stay up.
//! - `client-400`: every provider answers 400 to 2 % of the calls (a client's malformed requests),
//!   n3 a tier-2 reserve. A 400 is no rate limit: the reserve stays out, nothing is overloaded.
//! - `tight-plans`: n1 and n2 allow 33 requests/s each (token buckets) under 100 requests/s of
//!   demand, n3 a tier-2 reserve: the reserve comes in once and stays, rather than leaving each
//!   time a limit would have grown back by the clock.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use testkit::fault_proxy::{MethodAnswer, MethodErrors, RateLimit};
use testkit::get_text;

use super::{arm, log_explain, present, Timing};
use crate::arm::{Arm, ArmSpec};
use crate::recorder::{ServerSample, Snapshot, Track};
use crate::stack::Stack;
use crate::stats::{met, table};

const METHOD: &str = "eth_gasPrice";
const STRAY: &str = "stray-429";
const CLIENT_400: &str = "client-400";
const TIGHT: &str = "tight-plans";
const FASTEST: usize = 0;
const RESERVE: usize = 2;
const STRAY_SHARE: f64 = 0.03;
const BAD_REQUEST_SHARE: f64 = 0.02;
/// Each primary's plan in `tight-plans`: two of them carry two thirds of the demand.
const TIGHT_PLAN: RateLimit = RateLimit {
    per_second: 33.0,
    burst: 33.0,
};
/// The targets, judged after the first minute (a full run; a short run has no minute).
const SETTLE: Duration = Duration::from_secs(60);
const LOW_WEIGHT: u32 = 50;
const LOW_WEIGHT_TARGET: f64 = 0.10;
const RESERVE_OUT_TARGET: f64 = 0.95;
const TIER_CHANGES_TARGET: usize = 1;
const CLIENT_429_TARGET: f64 = 0.005;

fn shaped(name: &'static str, shape: impl Fn(&mut ArmSpec)) -> ArmSpec {
    let mut spec = ArmSpec {
        client_method: METHOD,
        ..arm(Arm::Ethrpc, name)
    };
    shape(&mut spec);
    spec
}

fn answering(status: u16, share: f64) -> Vec<MethodErrors> {
    vec![MethodErrors::new(
        METHOD,
        share,
        MethodAnswer::Status(status),
    )]
}

/// The arms; a short run keeps the tight plans.
pub(super) fn arms(short: bool) -> Vec<ArmSpec> {
    let tight = shaped(TIGHT, |spec| {
        for p in &mut spec.providers[..RESERVE] {
            p.noise.rate_limit = Some(TIGHT_PLAN);
        }
        spec.providers[RESERVE].tier = 2;
    });
    if short {
        return vec![tight];
    }
    let stray = shaped(STRAY, |spec| {
        spec.providers[FASTEST].noise.method_errors = answering(429, STRAY_SHARE);
    });
    let client_400 = shaped(CLIENT_400, |spec| {
        for p in &mut spec.providers {
            p.noise.method_errors = answering(400, BAD_REQUEST_SHARE);
        }
        spec.providers[RESERVE].tier = 2;
    });
    vec![stray, client_400, tight]
}

/// Whether the arm's actuator says its backend is overloaded (`None`: no answer).
async fn overloaded(stack: &Stack, arm: usize) -> Option<bool> {
    let a = &stack.arms[arm];
    let text = get_text(&format!("http://127.0.0.1:{}/metrics", a.actuator_port?)).await?;
    testkit::metrics_text::sample(
        &text,
        "ethrpc_actuator_overloaded",
        &[("backend", &a.backend())],
    )
    .map(|v| v > 0.0)
}

/// Share of `snapshots` in which `server` of `arm` satisfies `state`.
fn share_of_samples(
    snapshots: &[Snapshot],
    arm: usize,
    server: usize,
    state: impl Fn(&ServerSample) -> bool,
) -> f64 {
    let held = snapshots
        .iter()
        .filter(|s| state(&s.arms[arm][server]))
        .count();
    held as f64 / snapshots.len().max(1) as f64
}

pub(super) async fn run(stack: &Stack, timing: &Timing) -> String {
    let arms = present(stack, &[STRAY, CLIENT_400, TIGHT]);
    let started = Instant::now();
    let mut overload_samples = vec![(0usize, 0usize); arms.len()];
    while started.elapsed() < timing.capacity {
        for (k, &i) in arms.iter().enumerate() {
            if let Some(o) = overloaded(stack, i).await {
                overload_samples[k].0 += 1;
                overload_samples[k].1 += usize::from(o);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ended = Instant::now();
    log_explain(stack, &arms, "at the end of capacity").await;
    let settled = (started + SETTLE).min(ended);
    let after = stack.recorder.between(settled, ended);
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (&i, (samples, overloaded)) in arms.iter().zip(overload_samples) {
        let a = &stack.arms[i];
        let client = stack.loads[i].summary(settled, ended);
        let reserve = Track {
            snapshots: &after,
            arm: i,
            server: RESERVE,
        };
        let reserve_out = share_of_samples(&after, i, RESERVE, |s| !s.in_rotation());
        let tier_changes =
            reserve.entries(ServerSample::in_rotation) + reserve.entries(|s| !s.in_rotation());
        let low = share_of_samples(&after, i, FASTEST, |s| s.weight < LOW_WEIGHT);
        let client_429 = client.rate_limited as f64 / client.requests().max(1) as f64;
        rows.push(vec![
            a.name().into(),
            format!("{:.1} %", 100.0 * low),
            format!("{:.1} %", 100.0 * reserve_out),
            tier_changes.to_string(),
            format!("{overloaded} of {samples}"),
            format!(
                "{} of {} ({:.2} %)",
                client.rate_limited,
                client.requests(),
                100.0 * client_429
            ),
            client.latency_text(),
        ]);
        let target = match a.name() {
            STRAY => format!(
                "n1 below weight {LOW_WEIGHT} in ≤ {:.0} % of samples: {:.1} % {}",
                100.0 * LOW_WEIGHT_TARGET,
                100.0 * low,
                met(low <= LOW_WEIGHT_TARGET)
            ),
            CLIENT_400 => format!(
                "n3 out ≥ {:.0} % of the time, overloaded 0: {:.1} %, {overloaded} {}",
                100.0 * RESERVE_OUT_TARGET,
                100.0 * reserve_out,
                met(reserve_out >= RESERVE_OUT_TARGET && overloaded == 0)
            ),
            _ => format!(
                "n3 in/out ≤ {TIER_CHANGES_TARGET}, client 429s ≤ {:.1} %: {tier_changes}, {:.2} % {}",
                100.0 * CLIENT_429_TARGET,
                100.0 * client_429,
                met(tier_changes <= TIER_CHANGES_TARGET && client_429 <= CLIENT_429_TARGET)
            ),
        };
        targets.push(vec![a.name().into(), target]);
    }
    let mut report = format!(
        "### `capacity`: learned limits on paid providers' 4xx\n\n{:.0} s, figures after the first {:.0} s. \
         Clients call `{METHOD}` (no probe or health check does). `{STRAY}`: n1 (the fastest) answers 429 to \
         {:.0} % of those calls whatever the rate. `{CLIENT_400}`: every provider answers 400 to {:.0} % of them; \
         n3 is a tier-2 reserve. `{TIGHT}`: n1 and n2 answer 429 above {:.0} requests/s each (token buckets; \
         probes count too) under the clients' 100 requests/s; n3 is a tier-2 reserve. \"Tier changes\" count \
         n3 entering or leaving the rotation.\n\n",
        (ended - started).as_secs_f64(),
        (settled - started).as_secs_f64(),
        100.0 * STRAY_SHARE,
        100.0 * BAD_REQUEST_SHARE,
        TIGHT_PLAN.per_second,
    );
    let _ = writeln!(
        report,
        "{}",
        table(
            &[
                "arm",
                "n1 below weight 50 (samples)",
                "n3 out of rotation (samples)",
                "tier changes",
                "overloaded (1 s samples, whole run)",
                "client requests answered 429",
                "client p50 / p99"
            ],
            &rows
        )
    );
    let _ = writeln!(report, "{}", table(&["arm", "target"], &targets));
    report
}
