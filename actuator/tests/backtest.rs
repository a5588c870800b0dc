//! `ethrpc-actuator backtest` against a real recorded run: three anvil nodes, the exporter, a
//! real Prometheus and HAProxy, and the live actuator every second. One provider stalls and
//! recovers, another flaps; the live actuator's ejections, reasons and readmissions (its
//! `weight set` log lines) are then replayed by the `backtest` binary over the same range from
//! Prometheus, and must match within one step.
//! Then: `--set`/`--compare` change what they should, bad input is a clear error, a range
//! without data says so, and HAProxy is never touched.
//!
//! `ETHRPC_BACKTEST_DOCS=DIR` keeps the run's text output and timeline in DIR (how
//! `docs/backtest.svg` is made).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

#[path = "support/live.rs"]
mod live;
#[path = "support/log.rs"]
mod log;
#[path = "support/replay.rs"]
mod replay;
#[path = "support/three_nodes.rs"]
mod three_nodes;

use std::path::Path;
use std::time::{Duration, Instant};

use common::clock::unix_now;
use replay::{backtest, range, replayed};
use serde_json::Value;
use testkit::fault_proxy::Fault;
use testkit::metrics_engine::Engine;
use testkit::{get_text, wait_for, TempDir};

const WAIT: Duration = Duration::from_secs(60);
/// The live loop's interval and the backtest's step.
const STEP: f64 = 1.0;
/// How long after its tick the live cycle may log a write: its queries, its HAProxy read and
/// write. The replay's steps fall on the ticks (both start at `from`), the log comes after.
const CYCLE_LATENCY: f64 = 0.5;

fn first_ejection(run: &Value, server: &str) -> f64 {
    run["backends"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server"] == server)
        .unwrap()["ejections"][0]["start"]
        .as_f64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn backtest_replays_a_recorded_run() {
    let clock = Instant::now();
    let progress = |what: &str| eprintln!("[{:>5.1}s] {what}", clock.elapsed().as_secs_f64());
    let parts = three_nodes::ThreeNodes::start_with(Engine::Prometheus).await;
    // Equal weights: a healthy server is back at 100 whatever its probe latency on a busy
    // machine, so the waits below have a fixed target.
    let text = parts.config_text(
        "weighting = \"equal\"\nreadmit_after = 2\nslow_start = \"3s\"\nbase_ejection = \"5s\"\nmax_ejection = \"60s\"",
    );
    let three_nodes::ThreeNodes {
        nodes,
        proxy,
        haproxy,
        prometheus,
        exporter_listener,
    } = parts;
    let dir = TempDir::new("backtest");
    let config_path = dir.path().join("ethrpc.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = live::parse(&text);
    let _stop_exporter = live::spawn_exporter(&config, exporter_listener);
    let log = log::Log::capture();
    // The replay starts cold where the live actuator did: its first cycle is at once.
    let from = unix_now();
    let live::LiveActuator {
        base,
        stop: stop_actuator,
        handle: live,
    } = live::spawn_actuator(config, None).await;
    progress(&format!("live actuator at {base}"));
    wait_for("the exporter's first samples", WAIT, || async {
        let up = get_text(&format!(
            "{}/api/v1/query?query=ethrpc_up",
            prometheus.url()
        ))
        .await?;
        (up.matches("\"provider\"").count() == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    progress("stack up, all healthy");

    // p1 stalls: ejected as lagging; resumes: back after the hold and readmission.
    nodes[0].set_interval_mining(0).await;
    haproxy.wait_weight("rpc/p1", 0, WAIT).await;
    let gap = nodes[2].block_number().await - nodes[0].block_number().await;
    nodes[0].mine(gap + 1).await;
    nodes[0].set_interval_mining(1).await;
    haproxy.wait_weight("rpc/p1", 100, WAIT).await;
    progress("p1 stalled, ejected, resumed and readmitted");

    // p2 flaps (errors 2 s, fine 2 s, three times): out once, back only after the whole hold.
    for _ in 0..3 {
        proxy.set_fault(Fault::Error);
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.set_fault(Fault::Pass);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    haproxy.wait_weight("rpc/p2", 100, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = unix_now();
    stop_actuator.send(()).unwrap();
    assert!(live.await.unwrap().is_ok());
    let live_events = log.events();
    progress(&format!("p2 flapped and returned; live: {live_events:?}"));
    for server in ["p1", "p2"] {
        assert!(
            live_events
                .iter()
                .any(|e| e.server == server && e.out.is_some()),
            "the run must have ejected {server}: {live_events:?}"
        );
    }

    // Never touched: a weight the replay would change stays as set.
    haproxy.admin("set weight rpc/p3 37").await;

    // The replay matches the live actuator within one step.
    let svg = dir.path().join("backtest.svg");
    let mut args = range(from, to);
    args.extend(["--json".into(), "--svg".into(), svg.display().to_string()]);
    let (ok, stdout, stderr) = backtest(&config_path, &args).await;
    assert!(ok, "{stderr}");
    let result: Value = serde_json::from_str(&stdout).unwrap();
    let replay = replayed(&result["runs"][0]);
    eprintln!("[backtest] {replay:?}");
    assert_eq!(
        replay.len(),
        live_events.len(),
        "live {live_events:?}\nreplay {replay:?}"
    );
    for (live, replayed) in live_events.iter().zip(&replay) {
        let off = replayed.at - live.at;
        eprintln!(
            "{} {:?}: replay {off:+.2} s from live",
            live.server, live.out
        );
        assert_eq!((&live.server, &live.out), (&replayed.server, &replayed.out));
        assert!(
            (-STEP - CYCLE_LATENCY..=STEP).contains(&off),
            "{live:?} vs {replayed:?}"
        );
    }
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.trim_end().ends_with("</svg>"));
    assert!(
        picture.contains("lagging") && picture.contains(">p2<"),
        "{picture}"
    );
    let (ok, text, stderr) = backtest(&config_path, &range(from, to)).await;
    assert!(ok, "{stderr}");
    eprintln!("{text}");
    assert!(
        text.contains("backend rpc (chain dev)") && text.contains("lagging"),
        "{text}"
    );
    // A lower lag limit ejects earlier on the same data; --compare shows both side by side.
    let mut args = range(from, to);
    args.extend(["--set".into(), "max_block_lag=1".into(), "--json".into()]);
    let (ok, stdout, stderr) = backtest(&config_path, &args).await;
    assert!(ok, "{stderr}");
    let lower: Value = serde_json::from_str(&stdout).unwrap();
    let (base, strict) = (
        first_ejection(&result["runs"][0], "p1"),
        first_ejection(&lower["runs"][0], "p1"),
    );
    assert!(
        strict < base - STEP,
        "max_block_lag=1 ejects p1 at {strict}, default at {base}"
    );
    let compared = dir.path().join("compare.svg");
    let mut args = range(from, to);
    args.extend(["--svg".into(), compared.display().to_string()]);
    args.extend(["--compare".into(), "max_block_lag=1".into()]);
    let (ok, text, stderr) = backtest(&config_path, &args).await;
    assert!(ok, "{stderr}");
    eprintln!("{text}");
    let picture = std::fs::read_to_string(&compared).unwrap();
    assert!(picture.contains("stroke-dasharray"), "B is drawn dashed");
    if let Ok(docs) = std::env::var("ETHRPC_BACKTEST_DOCS") {
        std::fs::write(Path::new(&docs).join("backtest.svg"), &picture).unwrap();
        std::fs::write(Path::new(&docs).join("backtest.txt"), &text).unwrap();
    }
    assert!(
        text.contains("A = as configured; B = --compare max_block_lag=1")
            && text.contains("ejections, A:")
            && text.contains("ejections, B:"),
        "{text}"
    );

    // Bad input and empty ranges are clear errors.
    let mut args = range(from, to);
    args.extend(["--set".into(), "max_lag=1".into()]);
    let (ok, _, stderr) = backtest(&config_path, &args).await;
    assert!(
        !ok && stderr.contains("max_lag") && stderr.contains("max_block_lag"),
        "{stderr}"
    );
    let (ok, _, stderr) = backtest(&config_path, &["--from".into(), "yesterday".into()]).await;
    assert!(
        !ok && stderr.contains("yesterday") && stderr.contains("RFC 3339"),
        "{stderr}"
    );
    let (ok, _, stderr) = backtest(&config_path, &range(to, from)).await;
    assert!(!ok && stderr.contains("must be before"), "{stderr}");
    let (ok, _, stderr) = backtest(&config_path, &range(from - 7200.0, from - 3600.0)).await;
    assert!(!ok && stderr.contains("no data"), "{stderr}");
    assert_eq!(
        haproxy.weight("rpc/p3").await,
        Some(37),
        "backtest never writes"
    );
}
