//! The exporter against real anvil nodes: freshness, lag, stalls, kills, wrong chains.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use common::config::Config;
use testkit::anvil::Anvil;
use testkit::metrics_text::{promtool_check_metrics, sample};
use testkit::{free_port, get_text, wait_for};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(30);

/// An exporter running in this process until dropped.
struct Running {
    metrics_url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_exporter(chain_id: u64, urls: &[String]) -> Running {
    let mut text = format!(
        "[exporter]\nprobe_interval = \"500ms\"\nprobe_timeout = \"2s\"\n\
         [[chain]]\nname = \"dev\"\nchain_id = {chain_id}\nbackend = \"rpc\"\n"
    );
    for (i, url) in urls.iter().enumerate() {
        text.push_str(&format!(
            "[[chain.provider]]\nname = \"p{}\"\nurl = \"{url}\"\n",
            i + 1
        ));
    }
    let config = Config::parse(Path::new("test.toml"), &text, |_| None).expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(exporter::run(config, listener, async {
        let _ = stopped.await;
    }));
    Running {
        metrics_url,
        stop: Some(stop),
    }
}

fn value(text: &str, name: &str, provider: &str) -> Option<f64> {
    sample(text, name, &[("chain", "dev"), ("provider", provider)])
}

/// A series that must be present.
fn must(text: &str, name: &str, provider: &str) -> f64 {
    value(text, name, provider).unwrap_or_else(|| panic!("{name} of {provider} is absent"))
}

async fn wait_metrics(exporter: &Running, what: &str, check: impl Fn(&str) -> bool) -> String {
    wait_for(what, WAIT, || async {
        let text = get_text(&exporter.metrics_url).await?;
        check(&text).then_some(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_node_lags_and_ages_while_the_others_stay_fresh() {
    let nodes = Anvil::start_mining_together(3, 31337).await;
    let exporter = start_exporter(31337, &nodes.iter().map(Anvil::url).collect::<Vec<_>>()).await;
    let text = wait_metrics(&exporter, "all three up with a block", |t| {
        ["p1", "p2", "p3"].iter().all(|p| {
            value(t, "ethrpc_up", p) == Some(1.0)
                && value(t, "ethrpc_block_number", p) >= Some(1.0)
                && value(t, "ethrpc_block_lag", p).is_some()
        })
    })
    .await;
    assert_eq!(
        promtool_check_metrics(&text),
        "",
        "promtool must print nothing"
    );
    for p in ["p1", "p2", "p3"] {
        assert!(
            must(&text, "ethrpc_block_lag", p) <= 1.0,
            "{p} lags at start"
        );
        assert!(must(&text, "ethrpc_block_age_seconds", p) < 3.0);
        assert!(value(&text, "ethrpc_probe_duration_seconds", p) > Some(0.0));
        assert!(value(&text, "ethrpc_block_timestamp_seconds", p) > Some(1.7e9));
        assert!(value(&text, "ethrpc_last_probe_timestamp_seconds", p) > Some(1.7e9));
        assert_eq!(value(&text, "ethrpc_chain_id_match", p), Some(1.0));
    }
    assert!(sample(&text, "ethrpc_chain_head_block_number", &[("chain", "dev")]) >= Some(1.0));
    assert!(sample(&text, "ethrpc_exporter_build_info", &[]).is_some());

    nodes[1].set_interval_mining(0).await;
    let text = wait_metrics(&exporter, "p2 to lag 3 blocks and age 3 s", |t| {
        value(t, "ethrpc_block_lag", "p2") >= Some(3.0)
            && value(t, "ethrpc_block_age_seconds", "p2") >= Some(3.0)
    })
    .await;
    assert_eq!(
        value(&text, "ethrpc_up", "p2"),
        Some(1.0),
        "a stalled node still answers"
    );
    for p in ["p1", "p3"] {
        assert!(
            must(&text, "ethrpc_block_lag", p) <= 1.0,
            "{p} must stay fresh"
        );
        assert!(
            must(&text, "ethrpc_block_age_seconds", p) < 3.0,
            "{p} must stay fresh"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_node_is_down_with_reason_connect() {
    let mut nodes = Anvil::start_mining_together(2, 31337).await;
    let exporter = start_exporter(31337, &nodes.iter().map(Anvil::url).collect::<Vec<_>>()).await;
    wait_metrics(&exporter, "both up", |t| {
        value(t, "ethrpc_up", "p1") == Some(1.0) && value(t, "ethrpc_up", "p2") == Some(1.0)
    })
    .await;
    nodes[1].kill().await;
    let text = wait_metrics(&exporter, "p2 down with connect errors", |t| {
        value(t, "ethrpc_up", "p2") == Some(0.0)
            && sample(
                t,
                "ethrpc_probe_errors_total",
                &[("provider", "p2"), ("reason", "connect")],
            ) >= Some(1.0)
    })
    .await;
    assert_eq!(value(&text, "ethrpc_up", "p1"), Some(1.0));
    assert!(
        value(&text, "ethrpc_block_number", "p2").is_some(),
        "last known block stays"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_node_far_ahead_does_not_make_the_others_lag() {
    let nodes = Anvil::start_mining_together(3, 31337).await;
    nodes[0].mine(1000).await;
    let exporter = start_exporter(31337, &nodes.iter().map(Anvil::url).collect::<Vec<_>>()).await;
    let text = wait_metrics(&exporter, "all three with a lag", |t| {
        ["p1", "p2", "p3"]
            .iter()
            .all(|p| value(t, "ethrpc_block_lag", p).is_some())
    })
    .await;
    assert_eq!(value(&text, "ethrpc_block_lag", "p1"), Some(0.0));
    for p in ["p2", "p3"] {
        assert!(
            must(&text, "ethrpc_block_lag", p) <= 1.0,
            "{p} judged against p1"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_chain_is_down_until_the_chain_id_matches() {
    let node = Anvil::start(5).await;
    node.set_interval_mining(1).await;
    let exporter = start_exporter(1, &[node.url()]).await;
    let text = wait_metrics(&exporter, "wrong_chain errors", |t| {
        sample(
            t,
            "ethrpc_probe_errors_total",
            &[("provider", "p1"), ("reason", "wrong_chain")],
        ) >= Some(1.0)
    })
    .await;
    assert_eq!(value(&text, "ethrpc_up", "p1"), Some(0.0));
    assert_eq!(value(&text, "ethrpc_chain_id_match", "p1"), Some(0.0));
    assert_eq!(
        value(&text, "ethrpc_block_number", "p1"),
        None,
        "no block read from a wrong chain"
    );

    node.set_chain_id(1).await;
    wait_metrics(&exporter, "p1 up after the chain id matches", |t| {
        value(t, "ethrpc_up", "p1") == Some(1.0)
            && value(t, "ethrpc_chain_id_match", "p1") == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_never_answered_has_no_lag_or_block_series() {
    let node = Anvil::start(31337).await;
    node.set_interval_mining(1).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let exporter = start_exporter(31337, &[node.url(), dead]).await;
    let text = wait_metrics(&exporter, "p1 with a lag and p2 with an error", |t| {
        value(t, "ethrpc_block_lag", "p1").is_some()
            && sample(
                t,
                "ethrpc_probe_errors_total",
                &[("provider", "p2"), ("reason", "connect")],
            ) >= Some(1.0)
    })
    .await;
    assert_eq!(value(&text, "ethrpc_up", "p2"), Some(0.0));
    for absent in [
        "ethrpc_block_lag",
        "ethrpc_block_number",
        "ethrpc_block_age_seconds",
        "ethrpc_block_timestamp_seconds",
        "ethrpc_probe_duration_seconds",
    ] {
        assert_eq!(
            value(&text, absent, "p2"),
            None,
            "{absent} must be absent for p2"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_in_front_of_a_real_node_get_their_reasons() {
    use testkit::fault_proxy::{Fault, FaultProxy};
    let node = Anvil::start(31337).await;
    node.set_interval_mining(1).await;
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", node.port)).await;
    let exporter = start_exporter(31337, &[proxy.url()]).await;
    wait_metrics(&exporter, "p1 up through the proxy", |t| {
        value(t, "ethrpc_up", "p1") == Some(1.0)
    })
    .await;
    for (fault, reason) in [(Fault::Error, "http_status"), (Fault::Refuse, "connect")] {
        proxy.set_fault(fault);
        wait_metrics(&exporter, reason, |t| {
            value(t, "ethrpc_up", "p1") == Some(0.0)
                && sample(
                    t,
                    "ethrpc_probe_errors_total",
                    &[("provider", "p1"), ("reason", reason)],
                ) >= Some(1.0)
        })
        .await;
        proxy.set_fault(Fault::Pass);
        wait_metrics(&exporter, "p1 up again", |t| {
            value(t, "ethrpc_up", "p1") == Some(1.0)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_node_is_judged_against_the_head_of_its_own_round() {
    use testkit::fault_proxy::{Fault, FaultProxy};
    let nodes = Anvil::start_mining_together(3, 31337).await;
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", nodes[2].port)).await;
    let urls = vec![nodes[0].url(), nodes[1].url(), proxy.url()];
    let exporter = start_exporter(31337, &urls).await;
    wait_metrics(&exporter, "p3 with a lag", |t| {
        value(t, "ethrpc_block_lag", "p3").is_some()
    })
    .await;
    // Answers held 1.8 s while rounds run every 0.5 s: later rounds skip p3 (still in flight)
    // and move the head on. p3's own answers are still only ever a block or so behind, and the
    // round p3 finishes late must not publish its older answers of p1 and p2 over newer ones.
    proxy.set_fault(Fault::Delay(std::time::Duration::from_millis(1800)));
    let mut worst = 0.0f64;
    let (mut worst_fast_lag, mut worst_fast_age) = (0.0f64, 0.0f64);
    let mut slow_seen = 0;
    while slow_seen < 6 {
        let text = get_text(&exporter.metrics_url).await.unwrap();
        if value(&text, "ethrpc_probe_duration_seconds", "p3") >= Some(1.8) {
            slow_seen += 1;
            worst = worst.max(must(&text, "ethrpc_block_lag", "p3"));
        }
        for fast in ["p1", "p2"] {
            worst_fast_lag = worst_fast_lag.max(must(&text, "ethrpc_block_lag", fast));
            worst_fast_age = worst_fast_age.max(must(&text, "ethrpc_block_age_seconds", fast));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        worst_fast_lag <= 1.0 && worst_fast_age < 2.5,
        "a slow provider must not make the fast ones look lagging or stale: \
         lag {worst_fast_lag}, age {worst_fast_age} s"
    );
    assert!(
        worst <= 1.0,
        "a slow provider must not look lagging: lag {worst}"
    );
}
