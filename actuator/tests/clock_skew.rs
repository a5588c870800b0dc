//! Data from the future is clock skew, not freshness: a real Prometheus scrapes a stand-in
//! exporter whose last probe is ahead of Prometheus' clock for one provider (no observation: its
//! weight is held) and whose head block is ahead of the exporter's clock for another (judged
//! without a block age, so it can never look fresh, yet still on the clock-free gates); both are
//! reported.

use std::time::Duration;

use actuator::observe::{observe, Freshness, ProviderKey, Skew};
use actuator::prometheus_api::PrometheusClient;
use common::clock::unix_now;
use common::config::Queries;
use common::http_server::{serve, Reply};
use testkit::prometheus::PrometheusProcess;
use testkit::wait_for;
use tokio::net::TcpListener;

/// The exporter's series for three providers of chain `c`: `ok` is fresh, `ahead` probed 600 s
/// in Prometheus' future, `future_block` has a head block 600 s in the future.
fn exposition() -> String {
    let now = unix_now();
    let mut text = String::new();
    for (provider, probed, age) in [
        ("ok", now, 1.0),
        ("ahead", now + 600.0, 1.0),
        ("future_block", now, -600.0),
    ] {
        let l = format!("{{chain=\"c\",provider=\"{provider}\"}}");
        text.push_str(&format!(
            "ethrpc_up{l} 1\nethrpc_chain_id_match{l} 1\nethrpc_block_lag{l} 0\n\
             ethrpc_block_age_seconds{l} {age}\nethrpc_probe_duration_seconds{l} 0.05\n\
             ethrpc_probes_total{l} 10\nethrpc_probe_errors_total{l} 0\n\
             ethrpc_last_probe_timestamp_seconds{l} {probed}\n"
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn data_from_the_future_is_reported_and_never_taken_as_fresh() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(serve(
        listener,
        |_: &str| Reply::metrics(exposition()),
        std::future::pending(),
    ));
    let prometheus = PrometheusProcess::start(&[("ethrpc-exporter", target)], &[]).await;
    let client =
        PrometheusClient::new(&prometheus.url().parse().unwrap(), Duration::from_secs(2)).unwrap();
    let queries = Queries::defaults(Duration::from_secs(3));
    let observations = wait_for(
        "the stand-in exporter scraped",
        Duration::from_secs(30),
        || async {
            let o = observe(
                &client,
                &queries,
                &Freshness::uniform(Duration::from_secs(10)),
            )
            .await
            .ok()?;
            o.get(&ProviderKey::new("c", "ok")).is_some().then_some(o)
        },
    )
    .await;
    assert!(observations.get(&ProviderKey::new("c", "ahead")).is_none());
    let future_block = observations
        .get(&ProviderKey::new("c", "future_block"))
        .expect("the clock-free signals still count");
    assert_eq!(
        future_block.block_age, None,
        "a block from the future is not fresh"
    );
    assert!(future_block.up);
    let mut skewed: Vec<(String, Skew)> = observations
        .clock_skewed
        .iter()
        .map(|(k, skew, ahead)| {
            assert!(*ahead > 500.0, "{ahead}");
            (k.provider.clone(), *skew)
        })
        .collect();
    skewed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        skewed,
        vec![
            ("ahead".to_owned(), Skew::LastProbe),
            ("future_block".to_owned(), Skew::BlockTimestamp)
        ]
    );
    server.abort();
}
