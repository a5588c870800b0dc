//! The most common setup on real parts: two providers (anvil nodes mining together), the exporter,
//! a real Prometheus, a real HAProxy and the actuator with the default policy (no `max_block_age`
//! tuning). When one provider's head stops, it must lag behind the other and be ejected as
//! `lagging` within seconds, not held until its block is a minute old.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

#[path = "support/live.rs"]
mod live;

use std::time::{Duration, Instant};

use testkit::anvil::Anvil;
use testkit::haproxy::{backend, HaproxyProcess};
use testkit::metrics_text::sample;
use testkit::prometheus::PrometheusProcess;
use testkit::{get_text, wait_for};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_provider_of_two_is_ejected_as_lagging_within_seconds() {
    let nodes = Anvil::start_mining_together(2, 31337).await;
    let servers: Vec<(&str, String)> = ["p1", "p2"]
        .into_iter()
        .zip(&nodes)
        .map(|(s, n)| (s, format!("127.0.0.1:{}", n.port)))
        .collect();
    let haproxy = HaproxyProcess::start(&backend("rpc", "roundrobin", &servers)).await;
    let exporter_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let exporter_address = exporter_listener.local_addr().unwrap().to_string();
    let prometheus = PrometheusProcess::start(&[("ethrpc-exporter", exporter_address)], &[]).await;
    let text = live::config_text(
        &prometheus.url(),
        &haproxy.admin_socket,
        "",
        &[("p1", nodes[0].url(), ""), ("p2", nodes[1].url(), "")],
    );
    let config = live::parse(&text);
    let _stop_exporter = live::spawn_exporter(&config, exporter_listener);
    let actuator = live::spawn_actuator(config, None).await;
    let page_url = format!("{}/", actuator.base);
    wait_for("both judged healthy", WAIT, || async {
        let page = get_text(&page_url).await?;
        (page.matches(" healthy ").count() == 2).then_some(())
    })
    .await;

    nodes[1].set_interval_mining(0).await;
    let stalled = Instant::now();
    let metrics_url = format!("{}/metrics", actuator.base);
    wait_for("p2 ejected", WAIT, || async {
        (haproxy.weight("rpc/p2").await == Some(0)).then_some(())
    })
    .await;
    let took = stalled.elapsed();
    println!(
        "pool of two, default policy, 1 s blocks: stall -> weight 0 in {:.1} s",
        took.as_secs_f64()
    );
    let metrics = get_text(&metrics_url).await.unwrap();
    let ejected = |reason| {
        sample(
            &metrics,
            "ethrpc_actuator_ejected",
            &[("server", "p2"), ("reason", reason)],
        )
    };
    // Caught by lag: the block-age gate (60 s by default) would say `stale`.
    assert_eq!(ejected("lagging"), Some(1.0), "{metrics}");
    assert_eq!(haproxy.weight("rpc/p1").await, Some(100));
    let _ = actuator.stop.send(());
    let _ = actuator.handle.await;
}
