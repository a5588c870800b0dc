//! The whole loop on real parts: three anvil nodes, the exporter, a real Prometheus scraping every
//! second, a real HAProxy (roundrobin), and the actuator every second.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

#[path = "support/live.rs"]
mod live;
#[path = "support/three_nodes.rs"]
mod three_nodes;

use common::clock::unix_now;
use std::time::{Duration, Instant};

use testkit::anvil::Anvil;
use testkit::fault_proxy::{Fault, FaultProxy};
use testkit::haproxy::HaproxyProcess;
use testkit::metrics_engine::Engine;
use testkit::metrics_text::sample;
use testkit::prometheus::PrometheusProcess;
use testkit::{get_text, wait_for, TempDir};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(90);

struct Clock(Instant);

impl Clock {
    fn log(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.0.elapsed().as_secs_f64());
    }
}

async fn weights(h: &HaproxyProcess) -> Vec<Option<u32>> {
    let mut out = Vec::new();
    for s in three_nodes::SERVERS {
        out.push(h.weight(&format!("rpc/{s}")).await);
    }
    out
}

async fn metric(url: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    sample(&get_text(url).await?, name, labels)
}

/// The whole stack, with `policy` lines in `[policy]`; p2 sits behind a fault proxy.
struct Stack {
    clock: Clock,
    nodes: Vec<Anvil>,
    proxy: FaultProxy,
    haproxy: HaproxyProcess,
    prometheus: PrometheusProcess,
    config_path: std::path::PathBuf,
    actuator_base: String,
    metrics_url: String,
    stop_actuator: oneshot::Sender<()>,
    actuator: tokio::task::JoinHandle<Result<bool, actuator::cycle::ActuatorError>>,
    _stop_exporter: oneshot::Sender<()>,
    _dir: TempDir,
}

async fn start(policy: &str) -> Stack {
    let clock = Clock(Instant::now());
    let parts = three_nodes::ThreeNodes::start_with(Engine::Prometheus).await;
    let text = parts.config_text(policy);
    let three_nodes::ThreeNodes {
        nodes,
        proxy,
        haproxy,
        prometheus,
        exporter_listener,
    } = parts;
    let dir = TempDir::new("e2e");
    let config_path = dir.path().join("ethrpc.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = live::parse(&text);
    let stop_exporter = live::spawn_exporter(&config, exporter_listener);
    let live::LiveActuator {
        base: actuator_base,
        stop: stop_actuator,
        handle: actuator,
    } = live::spawn_actuator(config, None).await;
    clock.log("stack up: 3 anvil nodes, exporter, Prometheus, HAProxy, actuator");
    let page_url = format!("{actuator_base}/");
    wait_for("the actuator to judge all three healthy", WAIT, || async {
        let page = get_text(&page_url).await?;
        (page.matches(" healthy ").count() == 3).then_some(())
    })
    .await;
    assert_eq!(weights(&haproxy).await, vec![Some(100); 3]);
    clock.log("all healthy, weights [100, 100, 100]");
    // Prometheus shows the newest scrape at once: its lag is within a scrape interval or so.
    let metrics_url = format!("{actuator_base}/metrics");
    let lag = metric(
        &metrics_url,
        "ethrpc_actuator_metrics_engine_lag_seconds",
        &[],
    )
    .await;
    let lagging = metric(&metrics_url, "ethrpc_actuator_metrics_engine_lagging", &[]).await;
    clock.log(&format!(
        "Prometheus' lag as the actuator measures it: {lag:?} s"
    ));
    assert_eq!(lagging, Some(0.0), "Prometheus does not lag ({lag:?} s)");
    Stack {
        clock,
        nodes,
        proxy,
        haproxy,
        prometheus,
        config_path,
        metrics_url,
        actuator_base,
        stop_actuator,
        actuator,
        _stop_exporter: stop_exporter,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stall_slow_outage_restart_and_dry_run() {
    let Stack {
        clock,
        nodes,
        proxy,
        mut haproxy,
        mut prometheus,
        config_path,
        metrics_url,
        stop_actuator,
        actuator,
        // Bound, not `..`: the exporter and the temp dir must live as long as the test.
        _stop_exporter: _exporter,
        _dir,
        ..
    } = start("max_block_lag = 5\nreadmit_after = 2\nslow_start = \"5s\"").await;

    // Stall p1: ejected as lagging.
    nodes[0].set_interval_mining(0).await;
    clock.log("p1 stalled (evm_setIntervalMining 0)");
    wait_for("p1 ejected as lagging", WAIT, || async {
        let lagging = metric(
            &metrics_url,
            "ethrpc_actuator_ejected",
            &[("server", "p1"), ("reason", "lagging")],
        )
        .await;
        (haproxy.weight("rpc/p1").await == Some(0) && lagging == Some(1.0)).then_some(())
    })
    .await;
    clock.log(&format!(
        "p1 ejected (lagging), weights {:?}",
        weights(&haproxy).await
    ));

    // Resume p1: catch up, then it comes back through readmission and slow start.
    let gap = nodes[2]
        .block_number()
        .await
        .saturating_sub(nodes[0].block_number().await);
    nodes[0].mine(gap + 1).await;
    nodes[0].set_interval_mining(1).await;
    clock.log(&format!(
        "p1 resumed (mined {} blocks to catch up)",
        gap + 1
    ));
    let mut seen: Vec<u32> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while seen.last() != Some(&100) {
        assert!(
            Instant::now() < deadline,
            "p1 never returned to full weight: {seen:?}"
        );
        if let Some(w) = haproxy.weight("rpc/p1").await {
            if seen.last() != Some(&w) {
                seen.push(w);
                clock.log(&format!("p1 weight {w}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter().any(|w| (1..100).contains(w)),
        "p1 must ramp up through slow start, saw {seen:?}"
    );

    // Slow p2: ejected as slow.
    proxy.set_fault(Fault::Delay(Duration::from_millis(2000)));
    clock.log("p2 slowed: 2 s delay in front of it");
    wait_for("p2 ejected as slow", WAIT, || async {
        let slow = metric(
            &metrics_url,
            "ethrpc_actuator_ejected",
            &[("server", "p2"), ("reason", "slow")],
        )
        .await;
        (haproxy.weight("rpc/p2").await == Some(0) && slow == Some(1.0)).then_some(())
    })
    .await;
    clock.log(&format!(
        "p2 ejected (slow), weights {:?}",
        weights(&haproxy).await
    ));
    proxy.set_fault(Fault::Pass);

    // Prometheus down: weights stay as they are; back: the loop resumes.
    let before = weights(&haproxy).await;
    prometheus.kill().await;
    clock.log(&format!("Prometheus killed, weights {before:?}"));
    let errors = |n: f64| {
        let url = metrics_url.clone();
        async move {
            let e = metric(
                &url,
                "ethrpc_actuator_cycles_total",
                &[("result", "prometheus_error")],
            )
            .await?;
            (e >= n).then_some(e)
        }
    };
    wait_for("three failed cycles", WAIT, || errors(3.0)).await;
    assert_eq!(
        weights(&haproxy).await,
        before,
        "missing data never changes a weight"
    );
    clock.log("3 cycles without Prometheus: weights unchanged");
    let ok_before = metric(
        &metrics_url,
        "ethrpc_actuator_cycles_total",
        &[("result", "ok")],
    )
    .await
    .unwrap();
    prometheus.restart().await;
    wait_for("successful cycles again", WAIT, || async {
        let ok = metric(
            &metrics_url,
            "ethrpc_actuator_cycles_total",
            &[("result", "ok")],
        )
        .await?;
        (ok >= ok_before + 2.0).then_some(())
    })
    .await;
    clock.log("Prometheus back: cycles succeed again");

    // HAProxy restart resets weights to the config's; the actuator re-applies them.
    nodes[2].set_interval_mining(0).await;
    wait_for("p3 ejected", WAIT, || async {
        (haproxy.weight("rpc/p3").await == Some(0)).then_some(())
    })
    .await;
    clock.log("p3 stalled and ejected");
    haproxy.restart().await;
    let restarted = Instant::now();
    assert_eq!(
        haproxy.weight("rpc/p3").await,
        Some(100),
        "a restart resets the weight"
    );
    wait_for("p3 re-ejected after the restart", WAIT, || async {
        (haproxy.weight("rpc/p3").await == Some(0)).then_some(())
    })
    .await;
    clock.log(&format!(
        "HAProxy restarted: p3 back to 0 after {:.1}s",
        restarted.elapsed().as_secs_f64()
    ));

    // Stop the loop; HAProxy keeps its weights.
    let kept = weights(&haproxy).await;
    stop_actuator.send(()).unwrap();
    assert!(actuator.await.unwrap().is_ok());
    assert_eq!(weights(&haproxy).await, kept, "stopping leaves the weights");

    // The binary: a dry run writes nothing, explain prints the table, --once applies.
    haproxy.admin("set weight rpc/p1 37").await;
    let binary = env!("CARGO_BIN_EXE_ethrpc-actuator");
    let run = |args: &[&str]| {
        std::process::Command::new(binary)
            .args([
                "--config",
                config_path.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let dry = run(&["--dry-run", "--once"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(String::from_utf8_lossy(&dry.stderr).contains("dry run: would set weight"));
    assert_eq!(
        haproxy.weight("rpc/p1").await,
        Some(37),
        "a dry run writes nothing"
    );
    let explain = run(&["explain"]);
    let table = String::from_utf8_lossy(&explain.stdout).to_string();
    eprintln!("{table}");
    assert!(
        table.contains("backend rpc (chain dev, roundrobin)"),
        "{table}"
    );
    assert!(table.contains("lagging") && table.contains("37"), "{table}");
    let once = run(&["--once"]);
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    assert_eq!(haproxy.weight("rpc/p1").await, Some(100), "--once applies");
}

/// Sets p2's fault to errors for `bad`, then to pass for `good`, `times` times; returns when
/// the last bad phase began (the hold counts from a breach seen in it, so never earlier).
async fn flap(proxy: &FaultProxy, bad: Duration, good: Duration, times: usize) -> Instant {
    let mut last_bad = Instant::now();
    for _ in 0..times {
        last_bad = Instant::now();
        proxy.set_fault(Fault::Error);
        tokio::time::sleep(bad).await;
        proxy.set_fault(Fault::Pass);
        tokio::time::sleep(good).await;
    }
    last_bad
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flapping_provider_is_held_out_longer_each_relapse() {
    let s = start(
        "readmit_after = 2\nslow_start = \"3s\"\nbase_ejection = \"5s\"\nmax_ejection = \"60s\"",
    )
    .await;
    let m = |name: &'static str| {
        let url = s.metrics_url.clone();
        async move { metric(&url, name, &[("server", "p2")]).await }
    };
    let writes_before = m("ethrpc_actuator_weight_writes_total")
        .await
        .unwrap_or(0.0);

    // Errors 2 s, fine 2 s, five times: out at the first bad phase, and never back while it
    // flaps, since each good phase is shorter than the 5 s hold.
    let mut seen = Vec::new();
    let watch = async {
        loop {
            if let Some(w) = s.haproxy.weight("rpc/p2").await {
                if seen.last() != Some(&w) {
                    seen.push(w);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let last_bad = tokio::select! {
        last_bad = flap(&s.proxy, Duration::from_secs(2), Duration::from_secs(2), 5) => last_bad,
        _ = watch => unreachable!("the watch loop never ends"),
    };
    s.clock.log(&format!(
        "p2 flapped 2 s / 2 s five times; its weights: {seen:?}"
    ));
    assert_eq!(
        seen,
        vec![100, 0],
        "ejected once, never readmitted while flapping"
    );
    let writes = m("ethrpc_actuator_weight_writes_total").await.unwrap() - writes_before;
    assert_eq!(writes, 1.0, "one weight write for the whole flap");
    assert_eq!(m("ethrpc_actuator_recent_ejections").await, Some(1.0));
    assert!(m("ethrpc_actuator_earliest_return_timestamp_seconds")
        .await
        .is_some());

    // Stable again: back only after a whole hold of health, then slow start.
    wait_for("p2 readmitted", WAIT, || async {
        (s.haproxy.weight("rpc/p2").await > Some(0)).then_some(())
    })
    .await;
    // The hold counts from the last breach, which is no earlier than the last bad phase's start.
    let first_out = last_bad.elapsed();
    s.clock.log(&format!(
        "p2 stable: back {:.1}s after its last bad phase began",
        first_out.as_secs_f64()
    ));
    assert!(
        first_out >= Duration::from_secs(5),
        "served the 5 s hold: {first_out:?}"
    );
    assert_eq!(
        m("ethrpc_actuator_earliest_return_timestamp_seconds").await,
        None,
        "no return time once back"
    );

    // A relapse soon after its return: out again, held for two base ejections. The hold
    // counts from the last breach, which comes after the relapse began.
    let relapse = Instant::now();
    s.proxy.set_fault(Fault::Error);
    wait_for("p2 ejected again", WAIT, || async {
        (s.haproxy.weight("rpc/p2").await == Some(0)).then_some(())
    })
    .await;
    s.proxy.set_fault(Fault::Pass);
    assert_eq!(m("ethrpc_actuator_recent_ejections").await, Some(2.0));
    let promised = m("ethrpc_actuator_earliest_return_timestamp_seconds")
        .await
        .map(|at| at - unix_now());
    assert!(
        promised.is_some_and(|left| left > 5.0),
        "a second ejection promises more than one base hold: {promised:?} s left"
    );
    wait_for("p2 readmitted after its relapse", WAIT, || async {
        (s.haproxy.weight("rpc/p2").await > Some(0)).then_some(())
    })
    .await;
    let second_out = relapse.elapsed();
    s.clock.log(&format!(
        "p2 relapsed: ejection count 2, back {:.1}s after the relapse began",
        second_out.as_secs_f64()
    ));
    assert!(
        second_out >= Duration::from_secs(10),
        "served 2 x 5 s: {second_out:?}"
    );
    let page = get_text(&format!("{}/", s.actuator_base)).await.unwrap();
    assert!(page.contains("ejections"), "{page}");
    s.stop_actuator.send(()).unwrap();
    assert!(s.actuator.await.unwrap().is_ok());
}
