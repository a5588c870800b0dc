//! Capability probes (`[chain.capabilities]`) against real anvil nodes: providers that all answer
//! their head; behind fault proxies one is pruned and has no tracing, another answers `[]` to
//! `eth_getLogs` where its peers hold logs. Each is found out with its reason, the others are
//! found capable, and the head probes do not notice. A fourth, stalled, also answers `[]`: its
//! head is short of the logs range, so it is not judged on logs against peers that hold them.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use common::config::Config;
use serde_json::json;
use testkit::anvil::Anvil;
use testkit::fault_proxy::{FaultProxy, MethodErrors, Noise};
use testkit::metrics_text::{promtool_check_metrics, sample};
use testkit::{get_text, wait_for};
use tokio::sync::oneshot;

/// anvil's first unlocked account.
const SENDER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// Init code that emits one log (`LOG0` of no data) and deploys nothing.
const LOG_ONCE: &str = "0x60006000a0";

/// The value of `ethrpc_capability` for `provider`'s `capability` with `reason`.
fn capability(text: &str, provider: &str, capability: &str, reason: &str) -> Option<f64> {
    sample(
        text,
        "ethrpc_capability",
        &[
            ("provider", provider),
            ("capability", capability),
            ("reason", reason),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn pruned_traceless_and_logless_providers_are_found_out_with_their_reasons() {
    let nodes = [
        Anvil::start(31337).await,
        Anvil::start(31337).await,
        Anvil::start(31337).await,
        Anvil::start(31337).await,
    ];
    // The same log-emitting transaction in block 1 of every chain, then a block a second (blocks
    // mined at once would carry timestamps from the future): the logs range, which ends 10 blocks
    // behind the head, holds that log from the first capability round after block 11.
    for node in &nodes {
        node.rpc(
            "eth_sendTransaction",
            json!([{"from": SENDER, "data": LOG_ONCE}]),
        )
        .await;
        node.mine(1).await;
    }
    for node in &nodes[..3] {
        node.set_interval_mining(1).await;
    }
    let upstream = |node: &Anvil| format!("127.0.0.1:{}", node.port);
    let pruned = FaultProxy::start_noisy(upstream(&nodes[1]), None, Noise::none()).await;
    pruned.set_method_errors([
        MethodErrors::pruned("eth_getBalance", 1.0),
        MethodErrors::rpc_error(
            "debug_traceCall",
            1.0,
            -32601,
            "the method debug_traceCall does not exist/is not available",
        ),
    ]);
    let logless = FaultProxy::start_noisy(upstream(&nodes[2]), None, Noise::none()).await;
    logless.set_method_errors([MethodErrors::no_logs(1.0)]);
    let stalled = FaultProxy::start_noisy(upstream(&nodes[3]), None, Noise::none()).await;
    stalled.set_method_errors([MethodErrors::no_logs(1.0)]);

    let text = format!(
        "[exporter]\nprobe_interval = \"500ms\"\nprobe_timeout = \"2s\"\n\
         [[chain]]\nname = \"dev\"\nchain_id = 31337\nbackend = \"rpc\"\n\
         [chain.capabilities]\ninterval = \"10s\"\narchive_block = 1\nlogs_blocks = 1000\n\
         trace = true\nfinalized = true\nsafe = true\n\
         [[chain.provider]]\nname = \"p1\"\nurl = \"{}\"\n\
         [[chain.provider]]\nname = \"p2\"\nurl = \"{}\"\n\
         [[chain.provider]]\nname = \"p3\"\nurl = \"{}\"\n\
         [[chain.provider]]\nname = \"p4\"\nurl = \"{}\"\n",
        nodes[0].url(),
        pruned.url(),
        logless.url(),
        stalled.url()
    );
    let config = Config::parse(Path::new("test.toml"), &text, |_| None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let exporter = tokio::spawn(exporter::run(config, listener, async {
        let _ = stopped.await;
    }));

    let text = wait_for(
        "every capability of every provider judged, p3's logs found missing",
        Duration::from_secs(60),
        || async {
            let text = get_text(&metrics_url).await?;
            let logs_judged = capability(&text, "p3", "logs", "missing_logs").is_some();
            let judged = logs_judged
                && ["p1", "p2", "p3"].iter().all(|p| {
                    ["archive", "logs", "trace", "finalized", "safe"]
                        .iter()
                        .all(|c| {
                            sample(
                                &text,
                                "ethrpc_capability",
                                &[("provider", p), ("capability", c)],
                            )
                            .is_some()
                        })
                });
            judged.then_some(text)
        },
    )
    .await;
    for (provider, cap, reason, value) in [
        ("p1", "archive", "ok", 1.0),
        ("p1", "logs", "ok", 1.0),
        ("p1", "trace", "ok", 1.0),
        ("p1", "finalized", "ok", 1.0),
        ("p1", "safe", "ok", 1.0),
        ("p2", "archive", "missing_state", 0.0),
        ("p2", "logs", "ok", 1.0),
        ("p2", "trace", "method_unavailable", 0.0),
        ("p2", "finalized", "ok", 1.0),
        ("p2", "safe", "ok", 1.0),
        ("p3", "archive", "ok", 1.0),
        ("p3", "logs", "missing_logs", 0.0),
        ("p3", "trace", "ok", 1.0),
        ("p3", "finalized", "ok", 1.0),
        ("p3", "safe", "ok", 1.0),
        ("p4", "archive", "ok", 1.0),
    ] {
        assert_eq!(
            capability(&text, provider, cap, reason),
            Some(value),
            "{provider} {cap} {reason}:\n{text}"
        );
    }
    assert_eq!(
        capability(&text, "p4", "logs", "missing_logs"),
        None,
        "p4's head is short of the logs range: not judged on it"
    );
    for p in ["p1", "p2", "p3"] {
        let labels = [("provider", p)];
        assert_eq!(
            sample(&text, "ethrpc_up", &labels),
            Some(1.0),
            "{p}: the head is fine"
        );
        for lag in ["ethrpc_finalized_block_lag", "ethrpc_safe_block_lag"] {
            assert!(
                sample(&text, lag, &labels).is_some_and(|lag| lag <= 2.0),
                "{p}: the nodes finalize together ({lag})"
            );
        }
        for c in ["archive", "logs", "trace", "finalized", "safe"] {
            let series = [("provider", p), ("capability", c)];
            assert_eq!(
                sample(&text, "ethrpc_capability_probe_failures_total", &series),
                Some(0.0),
                "{p} {c}: a refusal is an answer, not a failure"
            );
            assert!(sample(&text, "ethrpc_capability_probes_total", &series) >= Some(1.0));
        }
    }
    assert_eq!(
        promtool_check_metrics(&text),
        "",
        "promtool must print nothing"
    );

    let _ = stop.send(());
    exporter.await.unwrap().unwrap();
}
