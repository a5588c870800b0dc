//! `tiers`: n1 and n2 are primaries (tier 1), n3 a reserve (tier 2). Both primaries go down at
//! once (their proxies close every connection), then recover. The actuator alone needs a few
//! seconds (probe, scrape, cycle) to bring the reserve in, and a reserve at weight 0 is no server
//! to HAProxy, so clients fail meanwhile. The second arm adds what HAProxy offers: the reserve is
//! also a `backup` server at full weight the actuator does not manage (HAProxy uses backups when no
//! active server is usable, and an active server at weight 0 is not usable: checked on 2.6.12), and
//! every server is watched on live traffic (`observe layer7`, `error-limit`, `on-error
//! mark-down`), so HAProxy marks a primary DOWN after a few failed client requests instead of two
//! health checks.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use testkit::fault_proxy::Fault;

use super::{arm, log_explain, present, Timing};
use crate::arm::{Arm, ArmSpec};
use crate::load::ClientSummary;
use crate::recorder::{ServerSample, Snapshot, Track};
use crate::stack::Stack;
use crate::stats::{met, table};

const PRIMARIES: [usize; 2] = [0, 1];
const RESERVE: usize = 2;
const ACTUATOR_ALONE: &str = "tiers-actuator";
const WITH_HAPROXY: &str = "tiers-backup";
/// The lines the second arm adds to the shipped backend.
const OBSERVE: &str = "default-server observe layer7 error-limit 3 on-error mark-down";
/// The targets.
const TO_RESERVE_TARGET: Duration = Duration::from_secs(3);
const CLIENT_ERROR_TARGET: f64 = 0.005;
/// The reserve stands by again once it got no request for this long.
const QUIET: Duration = Duration::from_secs(10);

fn tiered(name: &'static str, with_haproxy: bool) -> ArmSpec {
    let mut spec = arm(Arm::Ethrpc, name);
    let reserve = &mut spec.providers[RESERVE];
    reserve.tier = 2;
    reserve.backup_twin = with_haproxy;
    if with_haproxy {
        spec.backend_options = OBSERVE;
    }
    spec
}

/// The arms; a short run keeps the one with HAProxy's help.
pub(super) fn arms(short: bool) -> Vec<ArmSpec> {
    let with_haproxy = tiered(WITH_HAPROXY, true);
    if short {
        return vec![with_haproxy];
    }
    vec![tiered(ACTUATOR_ALONE, false), with_haproxy]
}

/// Requests HAProxy sent the reserve (it and its backup twin) in `snapshots`.
fn reserve_requests(snapshots: &[Snapshot], arm: usize) -> u64 {
    Track {
        snapshots,
        arm,
        server: RESERVE,
    }
    .selected()
}

/// When the reserve was first sent a request after `snapshots`' first instant.
fn first_reserve_request(snapshots: &[Snapshot], arm: usize) -> Option<Instant> {
    let base = snapshots.first()?.arms[arm][RESERVE].selected;
    Track {
        snapshots,
        arm,
        server: RESERVE,
    }
    .first(|s| s.selected > base)
}

/// When the reserve was last sent a request in `snapshots` (`None`: never).
fn last_reserve_request(snapshots: &[Snapshot], arm: usize) -> Option<Instant> {
    snapshots
        .windows(2)
        .rfind(|w| w[1].arms[arm][RESERVE].selected > w[0].arms[arm][RESERVE].selected)
        .map(|w| w[1].at)
}

/// When both primaries were first in rotation again.
fn primaries_back(snapshots: &[Snapshot], arm: usize) -> Option<Instant> {
    snapshots
        .iter()
        .find(|s| PRIMARIES.iter().all(|&p| s.arms[arm][p].in_rotation()))
        .map(|s| s.at)
}

fn seconds_since(t: Option<Instant>, from: Instant) -> String {
    t.map_or("never".into(), |t| {
        format!("{:.1} s", (t - from).as_secs_f64())
    })
}

fn set_primaries(stack: &Stack, arms: &[usize], fault: Fault) {
    for &i in arms {
        for p in PRIMARIES {
            stack.arms[i].proxies[p].set_fault(fault);
        }
    }
}

pub(super) async fn run(stack: &Stack, timing: &Timing) -> String {
    let arms = present(stack, &[ACTUATOR_ALONE, WITH_HAPROXY]);
    let healthy_from = Instant::now();
    tokio::time::sleep(timing.healthy).await;
    let injected = Instant::now();
    set_primaries(stack, &arms, Fault::Refuse);
    tokio::time::sleep(timing.down).await;
    log_explain(stack, &arms, "with both primaries down").await;
    let recovered = Instant::now();
    set_primaries(stack, &arms, Fault::Pass);
    // Until every arm's reserve has been quiet for a while, or the wait is over.
    loop {
        let after = stack.recorder.between(recovered, Instant::now());
        let quiet = arms.iter().all(|&i| {
            let last = last_reserve_request(&after, i).unwrap_or(recovered);
            after.last().is_some_and(|s| s.at - last >= QUIET)
        });
        if quiet || recovered.elapsed() >= timing.recovery + QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let end = Instant::now();
    log_explain(stack, &arms, "after the primaries recovered").await;
    let healthy = stack.recorder.between(healthy_from, injected);
    let down = stack.recorder.between(injected, recovered);
    let after = stack.recorder.between(recovered, end);

    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for &i in &arms {
        let a = &stack.arms[i];
        let healthy_reserve = reserve_requests(&healthy, i);
        let healthy_client = stack.loads[i].summary(healthy_from, injected);
        let to_reserve = first_reserve_request(&down, i);
        let down_client: ClientSummary = stack.loads[i].summary(injected, recovered);
        let marked_down = PRIMARIES
            .iter()
            .filter_map(|&p| {
                Track {
                    snapshots: &down,
                    arm: i,
                    server: p,
                }
                .first(|s: &ServerSample| s.down)
            })
            .max();
        let last_failure = stack.loads[i]
            .between(injected, recovered)
            .iter()
            .filter(|s| !s.ok)
            .map(|s| s.started)
            .max();
        let back = primaries_back(&after, i);
        let last = last_reserve_request(&after, i);
        let quiet = after
            .last()
            .is_some_and(|s| s.at - last.unwrap_or(recovered) >= QUIET);
        rows.push(vec![
            a.name().into(),
            format!("{healthy_reserve} of {}", healthy_client.requests()),
            seconds_since(to_reserve, injected),
            seconds_since(marked_down, injected),
            down_client.failed_text(),
            seconds_since(last_failure, injected),
            down_client.latency_text(),
            seconds_since(back, recovered),
            if quiet {
                seconds_since(last.or(Some(recovered)), recovered)
            } else {
                format!("not within {:.0} s", (end - recovered).as_secs_f64())
            },
        ]);
        let within = to_reserve.is_some_and(|t| t - injected <= TO_RESERVE_TARGET);
        targets.push(vec![
            a.name().into(),
            format!("{healthy_reserve} {}", met(healthy_reserve == 0)),
            format!("{} {}", seconds_since(to_reserve, injected), met(within)),
            format!(
                "{:.2} % {}",
                100.0 * down_client.failed_share(),
                met(down_client.failed_share() <= CLIENT_ERROR_TARGET)
            ),
            format!("{} {}", if quiet { "yes" } else { "no" }, met(quiet)),
        ]);
    }
    let mut report = format!(
        "### `tiers`: a reserve behind two primaries that go down\n\nn1 and n2 are tier 1, n3 tier 2. {:.0} s \
         healthy, then n1's and n2's proxies close every connection for {:.0} s, then pass again. \
         `{ACTUATOR_ALONE}`: the shipped backend, n3 an ordinary server the actuator keeps at weight 0 while it stands by. \
         `{WITH_HAPROXY}`: the same, plus n3 again as `server n3-backup … backup` (full weight, not in the actuator's \
         config) and `{OBSERVE}` in the backend. Requests to n3 count both of its HAProxy servers.\n\n",
        timing.healthy.as_secs_f64(),
        timing.down.as_secs_f64()
    );
    let _ = writeln!(
        report,
        "{}",
        table(
            &[
                "arm",
                "requests to n3 while tier 1 is healthy",
                "primaries down → first request to n3",
                "→ both primaries marked DOWN by HAProxy",
                "failed client requests while down",
                "→ last failed request",
                "client p50 / p99 while down",
                "recovery → both primaries in rotation",
                "recovery → last request to n3"
            ],
            &rows
        )
    );
    let _ = writeln!(
        report,
        "{}",
        table(
            &[
                "arm",
                "n3's requests while tier 1 is healthy: 0",
                "n3 carries traffic ≤ 3 s after both primaries go down",
                "failed client requests in the minute after: ≤ 0.5 %",
                "n3 back to no traffic after readmission"
            ],
            &targets
        )
    );
    report
}
