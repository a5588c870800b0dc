//! `passive` and `rpc-errors`: n2 starts failing 30 % of the clients' calls while answering every
//! probe well: only HAProxy's counters show it. The clients call `eth_gasPrice`, a method neither
//! the exporter's probes (`eth_chainId`, `eth_getBlockByNumber`) nor HAProxy's health check
//! (`eth_blockNumber`) call, so no probe sees the errors.
//! - `passive`: HTTP 502. HAProxy retries a 502 on another server, so clients mostly see the
//!   errors as latency; the actuator sees them in `hrsp_5xx`.
//! - `rpc-errors`: HTTP 200 with `header not found` (issue 18). No status shows it and HAProxy
//!   retries nothing, so clients get every one; the actuator sees them in the backend's counting
//!   table (`gpc1`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use testkit::fault_proxy::MethodErrors;

use super::{arm, log_explain, present, Timing};
use crate::arm::{Arm, ArmSpec, FAULTY};
use crate::recorder::{shares, ServerSample, Snapshot, Track};
use crate::stack::Stack;
use crate::stats::{met, table};

const METHOD: &str = "eth_gasPrice";
const SHARE: f64 = 0.3;
/// The target: the failing server at weight 0 within this.
const TARGET: Duration = Duration::from_secs(10);

/// How n2 fails its clients.
#[derive(Debug, Clone, Copy)]
pub(super) enum Failure {
    /// HTTP 502 (`passive`).
    BadGateway,
    /// HTTP 200 with a JSON-RPC `header not found` (`rpc-errors`).
    HeaderNotFound,
}

impl Failure {
    /// The actuator's arm and HAProxy's alone.
    fn arm_names(self) -> [&'static str; 2] {
        match self {
            Failure::BadGateway => ["passive-ethrpc", "passive-haproxy-only"],
            Failure::HeaderNotFound => ["rpc-errors-ethrpc", "rpc-errors-haproxy-only"],
        }
    }

    fn errors(self) -> MethodErrors {
        match self {
            Failure::BadGateway => MethodErrors::bad_gateway(METHOD, SHARE),
            Failure::HeaderNotFound => MethodErrors::header_not_found(METHOD, SHARE),
        }
    }

    fn heading(self) -> String {
        match self {
            Failure::BadGateway => format!(
                "### `passive`: a provider failing clients' calls, not the probes\n\nn2 answers 502 to {:.0} % of \
                 `{METHOD}` calls",
                100.0 * SHARE
            ),
            Failure::HeaderNotFound => format!(
                "### `rpc-errors`: a provider answering JSON-RPC errors inside HTTP 200\n\nn2 answers HTTP 200 \
                 with `{{\"code\":-32000,\"message\":\"header not found\"}}` to {:.0} % of `{METHOD}` calls (no \
                 status shows it, HAProxy retries nothing; the shipped backend counts it per server)",
                100.0 * SHARE
            ),
        }
    }
}

fn passive(kind: Arm, name: &'static str) -> ArmSpec {
    ArmSpec {
        client_method: METHOD,
        ..arm(kind, name)
    }
}

/// The arms; a short run keeps the actuator's.
pub(super) fn arms(failure: Failure, short: bool) -> Vec<ArmSpec> {
    let [ethrpc, haproxy_only] = failure.arm_names();
    let ethrpc = passive(Arm::Ethrpc, ethrpc);
    if short {
        return vec![ethrpc];
    }
    vec![ethrpc, passive(Arm::HaproxyOnly, haproxy_only)]
}

fn at_weight_zero(s: &ServerSample) -> bool {
    s.weight == 0
}

pub(super) async fn run(failure: Failure, stack: &Stack, timing: &Timing) -> String {
    let arms = present(stack, &failure.arm_names());
    let before_from = Instant::now();
    tokio::time::sleep(timing.passive_before).await;
    let injected = Instant::now();
    for &i in &arms {
        stack.arms[i].proxies[FAULTY].set_method_errors(Some(failure.errors()));
    }
    let mut logged = false;
    while injected.elapsed() < timing.passive_after {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let during = stack.recorder.between(injected, Instant::now());
        if !logged && arms.iter().any(|&i| first_zero(&during, i).is_some()) {
            log_explain(stack, &arms, "as n2 went to weight 0").await;
            logged = true;
        }
    }
    let ended = Instant::now();
    if !logged {
        log_explain(stack, &arms, "at the end of passive").await;
    }
    for &i in &arms {
        stack.arms[i].proxies[FAULTY].set_method_errors(None);
    }
    let during = stack.recorder.between(injected, ended);

    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for &i in &arms {
        let a = &stack.arms[i];
        let track = Track {
            snapshots: &during,
            arm: i,
            server: FAULTY,
        };
        let zero = first_zero(&during, i);
        let load = &stack.loads[i];
        let before = load.summary(before_from, injected);
        let until_zero = load.summary(injected, zero.unwrap_or(ended));
        let after_zero = zero.map(|z| load.summary(z, ended));
        rows.push(vec![
            a.name().into(),
            zero.map_or("never".into(), |z| {
                format!("{:.1} s", (z - injected).as_secs_f64())
            }),
            track.entries(at_weight_zero).to_string(),
            format!("{:.1}", track.seconds(|s| !s.in_rotation())),
            format!("{:.1} %", 100.0 * shares(&during, i)[FAULTY]),
            format!(
                "{:.3} % · {}",
                100.0 * before.failed_share(),
                before.latency_text()
            ),
            format!(
                "{:.3} % · {}",
                100.0 * until_zero.failed_share(),
                until_zero.latency_text()
            ),
            after_zero.map_or("-".into(), |c| {
                format!("{:.3} % · {}", 100.0 * c.failed_share(), c.latency_text())
            }),
        ]);
        if a.arm == Arm::Ethrpc {
            let within = zero.is_some_and(|z| z - injected <= TARGET);
            targets.push(vec![
                a.name().into(),
                format!(
                    "{} {}",
                    zero.map_or("never".into(), |z| format!(
                        "{:.1} s",
                        (z - injected).as_secs_f64()
                    )),
                    met(within)
                ),
            ]);
        }
    }
    let mut report = format!(
        "{} ({:.0} s before, then {:.0} s; the clients' method: the probes and HAProxy's health check call \
         others). Client columns: failed share (an answer without a JSON-RPC result) · p50 / p99 latency. \
         \"Entries\" count the times n2 went to weight 0 (an ejected server is readmitted on healthy probes, \
         then ejected again on its client errors, each time for longer).\n\n",
        failure.heading(),
        timing.passive_before.as_secs_f64(),
        timing.passive_after.as_secs_f64(),
    );
    let _ = writeln!(
        report,
        "{}",
        table(
            &[
                "arm",
                "fault → n2 at weight 0",
                "entries into weight 0",
                "s out of rotation",
                "n2's traffic share",
                "clients before the fault",
                "fault → weight 0",
                "after weight 0"
            ],
            &rows
        )
    );
    let _ = writeln!(
        report,
        "{}",
        table(&["arm", "n2 at weight 0 within 10 s"], &targets)
    );
    report
}

/// When n2 first went to weight 0 in `snapshots`.
fn first_zero(snapshots: &[Snapshot], arm: usize) -> Option<Instant> {
    Track {
        snapshots,
        arm,
        server: FAULTY,
    }
    .first(at_weight_zero)
}
