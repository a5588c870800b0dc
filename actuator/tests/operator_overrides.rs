//! What an operator's hand on HAProxy does, on real parts (three anvil nodes, the exporter,
//! Prometheus, HAProxy and the actuator): `set server … state maint` (or `drain`) takes a
//! provider out and the actuator leaves that state alone, cycle after cycle, until the operator
//! sets `state ready`; a hand-set `set weight` is the actuator's to write, so it is overwritten
//! within a cycle or two. The runbook (`alerts/RUNBOOK.md`, "Taking a provider out by hand")
//! says which lever to use.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

#[path = "support/live.rs"]
mod live;
#[path = "support/three_nodes.rs"]
mod three_nodes;

use std::time::Duration;

use testkit::metrics_engine::Engine;
use testkit::metrics_text::sample;
use testkit::{get_text, wait_for};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_set_by_hand_is_respected_and_a_hand_set_weight_is_overwritten() {
    let parts = three_nodes::ThreeNodes::start_with(Engine::Prometheus).await;
    let config = live::parse(&parts.config_text(""));
    // Bound, not `..`: the nodes, the proxy and Prometheus must live as long as the test.
    let three_nodes::ThreeNodes {
        nodes: _nodes,
        proxy: _proxy,
        haproxy,
        prometheus: _prometheus,
        exporter_listener,
    } = parts;
    let haproxy = &haproxy;
    let _stop_exporter = live::spawn_exporter(&config, exporter_listener);
    let actuator = live::spawn_actuator(config, None).await;
    let metrics_url = format!("{}/metrics", actuator.base);
    let cycles = || async {
        let text = get_text(&metrics_url).await?;
        sample(&text, "ethrpc_actuator_cycles_total", &[("result", "ok")])
    };
    let page_url = format!("{}/", actuator.base);
    wait_for("all three judged healthy", WAIT, || async {
        let page = get_text(&page_url).await?;
        (page.matches(" healthy ").count() == 3).then_some(())
    })
    .await;
    let status = |server: &'static str| async move {
        haproxy
            .server_stats("rpc")
            .await
            .into_iter()
            .find(|s| s.get("svname").map(String::as_str) == Some(server))
            .and_then(|s| s.get("status").cloned())
            .unwrap_or_default()
    };

    // Maintenance by hand: it stays, however many cycles run.
    assert_eq!(
        haproxy.admin("set server rpc/p2 state maint").await.trim(),
        ""
    );
    let before = cycles().await.unwrap();
    wait_for("five more cycles", WAIT, || async {
        (cycles().await? >= before + 5.0).then_some(())
    })
    .await;
    assert!(
        status("p2").await.starts_with("MAINT"),
        "{}",
        status("p2").await
    );
    for server in ["p1", "p3"] {
        assert_eq!(haproxy.weight(&format!("rpc/{server}")).await, Some(100));
    }
    // Draining likewise.
    assert_eq!(
        haproxy.admin("set server rpc/p2 state drain").await.trim(),
        ""
    );
    let before = cycles().await.unwrap();
    wait_for("three more cycles", WAIT, || async {
        (cycles().await? >= before + 3.0).then_some(())
    })
    .await;
    assert!(
        status("p2").await.starts_with("DRAIN"),
        "{}",
        status("p2").await
    );
    assert_eq!(
        haproxy.admin("set server rpc/p2 state ready").await.trim(),
        ""
    );
    wait_for("p2 out of drain", WAIT, || async {
        let now = status("p2").await;
        (!now.starts_with("MAINT") && !now.starts_with("DRAIN")).then_some(())
    })
    .await;

    // A weight set by hand is the actuator's to write: it is put back.
    assert_eq!(haproxy.admin("set weight rpc/p3 0").await.trim(), "");
    haproxy.wait_weight("rpc/p3", 100, WAIT).await;

    let _ = actuator.stop.send(());
    let _ = actuator.handle.await;
}
