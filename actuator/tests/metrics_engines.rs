//! The actuator over metrics engines other than Prometheus, on real parts: VictoriaMetrics
//! single-node (Debian's `victoria-metrics`, started here) in front of three anvil nodes, the
//! exporter and a real HAProxy.
//! - With `-search.latencyOffset=1s`: a stall fails over (the time it took is printed), and
//!   `ethrpc-actuator backtest` over VictoriaMetrics' `query_range` replays the same ejection.
//! - With its defaults (30 s hidden): the actuator holds every weight and names the engine's lag
//!   as the cause, with the fix, once (the time it took is printed), never the clocks guess.
//! - An engine answering with another API's shape, or not at all: weights held, the reply logged
//!   once, redacted, and the actuator's pages keep serving.
//!
//! The tests share the process's log, so they run one at a time.

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

use std::time::{Duration, Instant};

use actuator::cycle::{Actuator, Mode};
use common::clock::unix_now;
use log::Log;
use replay::{backtest, range, replayed};
use serde_json::Value;
use testkit::fake_rpc::FakeRpc;
use testkit::haproxy::HaproxyProcess;
use testkit::metrics_engine::Engine;
use testkit::metrics_text::sample;
use testkit::{get_text, wait_for, TempDir};
use tokio::sync::Mutex;

const WAIT: Duration = Duration::from_secs(90);

/// One test at a time: they read the one log of the process.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Equal weights: a healthy server is back at 100 whatever its probe latency.
const POLICY: &str = "weighting = \"equal\"\nreadmit_after = 2\nslow_start = \"3s\"\nbase_ejection = \"5s\"\nmax_ejection = \"60s\"";

/// Cycles the live actuator at `base` counted with `result` so far.
async fn cycles(base: &str, result: &str) -> Option<f64> {
    let metrics = get_text(&format!("{base}/metrics")).await?;
    sample(
        &metrics,
        "ethrpc_actuator_cycles_total",
        &[("result", result)],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn victoria_metrics_fails_over_and_its_query_range_replays() {
    let _serial = SERIAL.lock().await;
    let log = Log::capture();
    let engine = Engine::VictoriaMetrics {
        latency_offset: Some(Duration::from_secs(1)),
    };
    let parts = three_nodes::ThreeNodes::start_with(engine).await;
    let text = parts.config_text(POLICY);
    let three_nodes::ThreeNodes {
        nodes,
        haproxy,
        prometheus: victoria_metrics,
        exporter_listener,
        ..
    } = parts;
    let dir = TempDir::new("engines");
    let config_path = dir.path().join("ethrpc.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = live::parse(&text);
    let _stop_exporter = live::spawn_exporter(&config, exporter_listener);
    let from = unix_now();
    let actuator = live::spawn_actuator(config, None).await;
    wait_for("the actuator to judge all three healthy", WAIT, || async {
        let page = get_text(&format!("{}/", actuator.base)).await?;
        (page.matches(" healthy ").count() == 3).then_some(())
    })
    .await;
    // History before the stall, for the replay to start from healthy.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let page = get_text(&format!("{}/", actuator.base)).await.unwrap();
    eprintln!("{page}");
    assert!(page.contains("metrics engine: "), "{page}");

    let stalled = Instant::now();
    nodes[0].set_interval_mining(0).await;
    haproxy.wait_weight("rpc/p1", 0, WAIT).await;
    eprintln!(
        "[measured] stall -> weight 0 through VictoriaMetrics (-search.latencyOffset=1s): {:.1} s",
        stalled.elapsed().as_secs_f64()
    );
    let gap = nodes[2].block_number().await - nodes[0].block_number().await;
    nodes[0].mine(gap + 1).await;
    nodes[0].set_interval_mining(1).await;
    haproxy.wait_weight("rpc/p1", 100, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = unix_now();
    actuator.stop.send(()).unwrap();
    assert!(actuator.handle.await.unwrap().is_ok());
    let live: Vec<_> = log
        .events()
        .into_iter()
        .filter(|e| e.at >= from && e.server == "p1")
        .collect();
    assert!(
        live.iter().any(|e| e.out.is_some()),
        "p1 was ejected: {live:?}"
    );

    // The same run replayed from VictoriaMetrics' query_range.
    let mut args = range(from, to);
    args.push("--json".into());
    let (ok, stdout, stderr) = backtest(&config_path, &args).await;
    assert!(ok, "{stderr}");
    let result: Value = serde_json::from_str(&stdout).unwrap();
    let replay: Vec<_> = replayed(&result["runs"][0])
        .into_iter()
        .filter(|e| e.server == "p1")
        .collect();
    eprintln!("[backtest over VictoriaMetrics] live {live:?}\nreplay {replay:?}");
    assert_eq!(
        live.iter().map(|e| &e.out).collect::<Vec<_>>(),
        replay.iter().map(|e| &e.out).collect::<Vec<_>>(),
        "the replay ejects and readmits p1 as the live loop did"
    );
    for (l, r) in live.iter().zip(&replay) {
        eprintln!(
            "[measured] p1 {:?}: replay {:+.2} s from live",
            l.out,
            r.at - l.at
        );
    }
    drop(victoria_metrics);
}

#[tokio::test(flavor = "multi_thread")]
async fn victoria_metrics_default_offset_is_named_as_the_cause_once() {
    let _serial = SERIAL.lock().await;
    let log = Log::capture();
    let engine = Engine::VictoriaMetrics {
        latency_offset: None,
    };
    let parts = three_nodes::ThreeNodes::start_with(engine).await;
    let text = parts.config_text(POLICY);
    let three_nodes::ThreeNodes {
        haproxy,
        prometheus: victoria_metrics,
        exporter_listener,
        ..
    } = parts;
    let config = live::parse(&text);
    let _stop_exporter = live::spawn_exporter(&config, exporter_listener);
    let from = unix_now();
    let actuator = live::spawn_actuator(config, None).await;
    let (at, fields) = wait_for("the engine's lag named in the log", WAIT, || async {
        log.lines("the metrics engine lags:")
            .into_iter()
            .find(|(at, _)| *at >= from)
    })
    .await;
    eprintln!(
        "[measured] VictoriaMetrics defaults: cause named {:.1} s after the actuator started (target <= 30 s): {fields}",
        at - from
    );
    let message = fields["message"].as_str().unwrap();
    assert!(message.contains("-search.latencyOffset=1s"), "{message}");
    assert!(message.contains("/select/0/prometheus"), "{message}");
    let lag = fields["lag_seconds"].as_f64().unwrap();
    assert!(lag > 20.0, "VictoriaMetrics hides 30 s: {lag}");

    // Ten more cycles: still held, still lagging, said once.
    let done = cycles(&actuator.base, "ok").await.unwrap_or(0.0);
    wait_for("ten more cycles", WAIT, || async {
        (cycles(&actuator.base, "ok").await? >= done + 10.0).then_some(())
    })
    .await;
    let metrics = get_text(&format!("{}/metrics", actuator.base))
        .await
        .unwrap();
    assert_eq!(
        sample(&metrics, "ethrpc_actuator_metrics_engine_lagging", &[]),
        Some(1.0)
    );
    let page = get_text(&format!("{}/", actuator.base)).await.unwrap();
    eprintln!("{page}");
    assert!(page.contains("metrics engine: LAGGING"), "{page}");
    let since = |text: &str| -> Vec<Value> {
        log.lines(text)
            .into_iter()
            .filter(|(at, _)| *at >= from)
            .map(|(_, f)| f)
            .collect()
    };
    assert_eq!(since("the metrics engine lags:").len(), 1, "logged once");
    let held = since("no fresh data");
    assert!(!held.is_empty(), "weights are held");
    for line in &held {
        let text = line["message"].as_str().unwrap();
        assert!(
            text.contains("metrics engine lags") && !text.contains("clocks"),
            "{text}"
        );
    }
    for server in three_nodes::SERVERS {
        assert_eq!(haproxy.weight(&format!("rpc/{server}")).await, Some(100));
    }
    actuator.stop.send(()).unwrap();
    assert!(actuator.handle.await.unwrap().is_ok());
    drop(victoria_metrics);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_with_another_api_or_none_holds_and_says_so_once() {
    let _serial = SERIAL.lock().await;
    let log = Log::capture();
    let haproxy = HaproxyProcess::one_server_at(37).await;
    let fake = FakeRpc::start().await;
    let secret = "s3cr3t-token";
    let config = |mode: &str| {
        live::parse(&live::config_text(
            &fake.url(mode, &format!("{secret}/")),
            &haproxy.admin_socket,
            "",
            &[("p1", "http://127.0.0.1:9".into(), "")],
        ))
    };
    // An HTML page, JSON without `status`, a proxy's 404 quoting the path, no answer at all.
    for (mode, expected) in [
        ("garbage", "<html>surprise</html>"),
        ("no-result", "jsonrpc"),
        ("echo", "no route for /[redacted]/[redacted]/api/v1/query"),
        ("hang", "did not answer within"),
    ] {
        let actuator = Actuator::new(config(mode)).unwrap();
        let before = log.lines("cycle failed").len();
        for _ in 0..3 {
            assert!(actuator.cycle(Mode::Apply).await.is_err(), "{mode}");
        }
        let lines = log.lines("cycle failed");
        assert_eq!(lines.len() - before, 1, "{mode}: logged once");
        let error = lines.last().unwrap().1["error"]
            .as_str()
            .unwrap()
            .to_owned();
        eprintln!("{mode}: {error}");
        assert!(error.contains(expected), "{mode}: {error}");
        assert!(!error.contains(secret), "{mode}: {error}");
        assert_eq!(haproxy.weight("rpc/p1").await, Some(37), "{mode}: held");
    }

    // The live loop keeps serving its pages meanwhile.
    let actuator = live::spawn_actuator(config("echo"), None).await;
    wait_for("three failed cycles", WAIT, || async {
        (cycles(&actuator.base, "prometheus_error").await? >= 3.0).then_some(())
    })
    .await;
    let page = get_text(&format!("{}/", actuator.base)).await.unwrap();
    assert!(page.contains("no cycle has completed yet"), "{page}");
    assert_eq!(haproxy.weight("rpc/p1").await, Some(37));
    actuator.stop.send(()).unwrap();
    assert!(actuator.handle.await.unwrap().is_ok());
}
