//! `reverts`: every provider answers 30 % of the clients' calls with HTTP 200 and `execution
//! reverted` (code 3), as a contract call that reverts does on every node alike. That is the
//! client's own error: the shipped backend's counting leaves it out, and the actuator must eject
//! nobody and barely write (issue 18: nobody ejected, ≤ 2 extra weight writes). The clients call
//! `eth_gasPrice`, which the nodes answer without params, so that every other answer is a result.

use std::fmt::Write as _;
use std::time::Instant;

use testkit::fault_proxy::MethodErrors;

use super::{arm, log_explain, present, Timing};
use crate::arm::{Arm, ArmSpec};
use crate::recorder::{Snapshot, Track};
use crate::stack::Stack;
use crate::stats::{met, table};

const METHOD: &str = "eth_gasPrice";
const SHARE: f64 = 0.3;
const NAME: &str = "reverts-ethrpc";

/// The actuator's arm only: HAProxy alone has no weights to move.
pub(super) fn arms() -> Vec<ArmSpec> {
    vec![ArmSpec {
        client_method: METHOD,
        ..arm(Arm::Ethrpc, NAME)
    }]
}

/// How many times server `server`'s weight in HAProxy changed between snapshots.
fn weight_changes(snapshots: &[Snapshot], arm: usize, server: usize) -> usize {
    snapshots
        .windows(2)
        .filter(|w| w[0].arms[arm][server].weight != w[1].arms[arm][server].weight)
        .count()
}

pub(super) async fn run(stack: &Stack, timing: &Timing) -> String {
    let arms = present(stack, &[NAME]);
    let before_from = Instant::now();
    tokio::time::sleep(timing.passive_before).await;
    let injected = Instant::now();
    for &i in &arms {
        for proxy in &stack.arms[i].proxies {
            proxy.set_method_errors(Some(MethodErrors::reverted(METHOD, SHARE)));
        }
    }
    tokio::time::sleep(timing.passive_after).await;
    let ended = Instant::now();
    log_explain(stack, &arms, "at the end of reverts").await;
    for &i in &arms {
        for proxy in &stack.arms[i].proxies {
            proxy.set_method_errors(None);
        }
    }
    let before = stack.recorder.between(before_from, injected);
    let during = stack.recorder.between(injected, ended);
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for &i in &arms {
        let a = &stack.arms[i];
        let servers = 0..a.proxies.len().min(3);
        let entries: usize = servers
            .clone()
            .map(|server| {
                Track {
                    snapshots: &during,
                    arm: i,
                    server,
                }
                .entries(|s| s.weight == 0)
            })
            .sum();
        let changes = |snapshots: &[Snapshot]| -> usize {
            servers
                .clone()
                .map(|server| weight_changes(snapshots, i, server))
                .sum()
        };
        let (changes_before, changes_during) = (changes(&before), changes(&during));
        let load = stack.loads[i].summary(injected, ended);
        rows.push(vec![
            a.name().into(),
            entries.to_string(),
            changes_before.to_string(),
            changes_during.to_string(),
            format!(
                "{:.1} % · {}",
                100.0 * load.failed_share(),
                load.latency_text()
            ),
        ]);
        targets.push(vec![
            a.name().into(),
            format!("{entries} {}", met(entries == 0)),
            format!(
                "{} {}",
                changes_during.saturating_sub(changes_before),
                met(changes_during <= changes_before + 2)
            ),
        ]);
    }
    let mut report = format!(
        "### `reverts`: every provider answering `execution reverted` inside HTTP 200\n\nEvery provider answers \
         HTTP 200 with `{{\"code\":3,\"message\":\"execution reverted\"}}` to {:.0} % of `{METHOD}` calls ({:.0} s \
         before, then {:.0} s): the client's own error, on every node alike. Client column: failed share (an \
         answer without a JSON-RPC result: the reverts themselves) · p50 / p99 latency.\n\n",
        100.0 * SHARE,
        timing.passive_before.as_secs_f64(),
        timing.passive_after.as_secs_f64(),
    );
    let _ = writeln!(
        report,
        "{}",
        table(
            &[
                "arm",
                "entries into weight 0",
                "weight changes before",
                "weight changes during",
                "clients during"
            ],
            &rows
        )
    );
    let _ = writeln!(
        report,
        "{}",
        table(
            &["arm", "nobody ejected", "≤ 2 extra weight changes"],
            &targets
        )
    );
    report
}
