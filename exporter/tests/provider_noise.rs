//! Healthy providers' noise against real failure, with rounds driven directly: a blip or a single
//! hang is absorbed (and counted as a retry), a provider really down or erroring is down after
//! one round, and replica jitter does not raise lag while a frozen head's lag grows each block.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{block, errors, exporter, listen, read_request, reply, round, unix_now, value};
use testkit::fake_rpc::FakeRpc;
use testkit::free_port;
use testkit::metrics_text::{promtool_check_metrics, sample};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The block `frozen` answers, and the chain head before the first round.
const START: u64 = 100;

/// A JSON-RPC server whose answers follow a script per mode (the first path segment), for the
/// noise `testkit::fake_rpc` cannot make: answers that change from one request to the next.
/// - `flaky`: every second request (of any method) is an HTTP 502;
/// - `hang-once`: the first head request never answers, the rest do;
/// - `steady`: the head; `jitter`: the head and head - 2 in turn; `frozen`: always [`START`].
struct ScriptedRpc {
    port: u16,
    /// The chain head `steady` answers; tests move it.
    head: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

/// Requests per mode, and head requests per mode.
#[derive(Default)]
struct Counts {
    requests: HashMap<String, u64>,
    head_requests: HashMap<String, u64>,
}

impl ScriptedRpc {
    async fn start() -> Self {
        let head = Arc::new(AtomicU64::new(START));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = head.clone();
        let (port, task) =
            listen(move |stream| serve(stream, shared.clone(), counts.clone())).await;
        Self { port, head, task }
    }

    fn url(&self, mode: &str, name: &str) -> String {
        format!("http://127.0.0.1:{}/{mode}/{name}", self.port)
    }
}

impl Drop for ScriptedRpc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, head: Arc<AtomicU64>, counts: Arc<Mutex<Counts>>) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let mode = request.path.split('/').nth(1).unwrap_or("").to_owned();
    let asks_head = request.body["method"] == "eth_getBlockByNumber";
    let (request_no, head_no) = {
        let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let request_no = bump(&mut counts.requests, &mode);
        let head_no = if asks_head {
            bump(&mut counts.head_requests, &mode)
        } else {
            0
        };
        (request_no, head_no)
    };
    if mode == "flaky" && request_no % 2 == 0 {
        let _ = stream
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            )
            .await;
        return;
    }
    if mode == "hang-once" && head_no == 1 {
        return std::future::pending().await;
    }
    let head = head.load(Ordering::SeqCst);
    let number = match mode.as_str() {
        "frozen" => START,
        "jitter" if head_no % 2 == 0 => head - 2,
        _ => head,
    };
    let result = if asks_head {
        block(number, unix_now())
    } else {
        json!("0x1")
    };
    reply(&mut stream, result, None).await;
}

/// Counts one more for `mode` and returns the count.
fn bump(counts: &mut HashMap<String, u64>, mode: &str) -> u64 {
    let n = counts.entry(mode.to_owned()).or_default();
    *n += 1;
    *n
}

#[tokio::test]
async fn a_provider_failing_every_other_request_stays_up_and_its_retries_show() {
    let rpc = ScriptedRpc::start().await;
    let exporter = exporter("2s", &[("flaky", rpc.url("flaky", "p"))]);
    let before = exporter.metrics.render();
    assert_eq!(
        value(&before, "ethrpc_probe_retries_total", "flaky"),
        Some(0.0)
    );
    assert_eq!(
        value(&before, "ethrpc_probe_consecutive_failures", "flaky"),
        Some(0.0)
    );
    assert_eq!(
        promtool_check_metrics(&before),
        "",
        "promtool must print nothing"
    );
    for id in 1..=5 {
        let text = round(&exporter, id).await;
        assert_eq!(value(&text, "ethrpc_up", "flaky"), Some(1.0), "round {id}");
        // Every head request is an even-numbered request: one 502 absorbed per round.
        assert_eq!(
            value(&text, "ethrpc_probe_retries_total", "flaky"),
            Some(id as f64)
        );
        assert_eq!(errors(&text, "flaky", "http_status"), Some(0.0));
        assert_eq!(
            value(&text, "ethrpc_probe_consecutive_failures", "flaky"),
            Some(0.0)
        );
    }
    assert_eq!(promtool_check_metrics(&exporter.metrics.render()), "");
}

#[tokio::test]
async fn a_provider_down_or_erroring_is_down_after_one_round() {
    let fake = FakeRpc::start().await;
    let refused = format!("http://127.0.0.1:{}/", free_port());
    let exporter = exporter(
        "2s",
        &[
            ("status500", fake.url("500", "p")),
            ("refused", refused),
            ("notfound", fake.url("no-such-mode", "p")),
            ("wrongchain", fake.url("wrong-chain", "p")),
        ],
    );
    let text = round(&exporter, 1).await;
    for (provider, reason, retries) in [
        ("status500", "http_status", 1.0),
        ("refused", "connect", 1.0),
        ("notfound", "http_status", 0.0), // a 404 is deliberate: not retried
        ("wrongchain", "wrong_chain", 0.0),
    ] {
        assert_eq!(value(&text, "ethrpc_up", provider), Some(0.0), "{provider}");
        assert_eq!(errors(&text, provider, reason), Some(1.0), "{provider}");
        assert_eq!(
            value(&text, "ethrpc_probe_retries_total", provider),
            Some(retries),
            "{provider}"
        );
        assert_eq!(
            value(&text, "ethrpc_probe_consecutive_failures", provider),
            Some(1.0),
            "{provider}"
        );
    }
    assert_eq!(
        fake.hits("500"),
        2,
        "the failure was confirmed by a second try"
    );
    assert_eq!(fake.hits("no-such-mode"), 1);
    assert_eq!(fake.hits("wrong-chain"), 1);

    let text = round(&exporter, 2).await;
    assert_eq!(errors(&text, "status500", "http_status"), Some(2.0));
    assert_eq!(
        value(&text, "ethrpc_probe_consecutive_failures", "status500"),
        Some(2.0)
    );
}

#[tokio::test]
async fn a_provider_that_hangs_once_stays_up() {
    let rpc = ScriptedRpc::start().await;
    let exporter = exporter("1s", &[("hangonce", rpc.url("hang-once", "p"))]);
    let text = round(&exporter, 1).await;
    assert_eq!(value(&text, "ethrpc_up", "hangonce"), Some(1.0));
    assert_eq!(
        value(&text, "ethrpc_probe_retries_total", "hangonce"),
        Some(1.0)
    );
    assert!(
        value(&text, "ethrpc_probe_duration_seconds", "hangonce") >= Some(0.5),
        "latency runs from the probe's start to the hedge's answer"
    );
    let text = round(&exporter, 2).await;
    assert_eq!(value(&text, "ethrpc_up", "hangonce"), Some(1.0));
    assert_eq!(
        value(&text, "ethrpc_probe_retries_total", "hangonce"),
        Some(1.0),
        "no hang, no retry"
    );
}

#[tokio::test]
async fn a_provider_that_always_hangs_is_down_after_three_attempts_at_one_and_a_half_timeouts() {
    let fake = FakeRpc::start().await;
    let exporter = exporter("1s", &[("hang", fake.url("hang", "p"))]);
    let started = Instant::now();
    let text = round(&exporter, 1).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(2),
        "down at 1.5 times the probe timeout, hedge and third attempt included: {took:?}"
    );
    assert_eq!(value(&text, "ethrpc_up", "hang"), Some(0.0));
    assert_eq!(errors(&text, "hang", "timeout"), Some(1.0));
    assert_eq!(
        fake.hits("hang"),
        3,
        "the hang was hedged, then corroborated"
    );
}

#[tokio::test]
async fn replica_jitter_does_not_raise_lag_but_a_frozen_head_does() {
    let rpc = ScriptedRpc::start().await;
    let exporter = exporter(
        "2s",
        &[
            ("steady1", rpc.url("steady", "a")),
            ("steady2", rpc.url("steady", "b")),
            ("jitter", rpc.url("jitter", "c")),
            ("frozen", rpc.url("frozen", "d")),
        ],
    );
    let mut jittered = false;
    for id in 1..=8u64 {
        let head = rpc.head.fetch_add(1, Ordering::SeqCst) + 1;
        let text = round(&exporter, id).await;
        let lag = |p| value(&text, "ethrpc_block_lag", p);
        assert_eq!(
            sample(&text, "ethrpc_chain_head_block_number", &[("chain", "dev")]),
            Some(head as f64)
        );
        assert!(
            lag("jitter") <= Some(1.0),
            "round {id}: {:?}",
            lag("jitter")
        );
        assert_eq!(lag("steady1"), Some(0.0));
        assert_eq!(
            lag("frozen"),
            Some(id as f64),
            "a frozen head lags more each block"
        );
        // The raw answer stays raw.
        jittered |= value(&text, "ethrpc_block_number", "jitter") == Some((head - 2) as f64);
    }
    assert!(
        jittered,
        "the jittering provider did answer 2 blocks behind"
    );
}
