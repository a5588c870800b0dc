//! The fault proxy's HTTP mode in front of real anvil nodes: the noise's shares, the token bucket,
//! the replica's lag, the flap, and the faults overriding the noise.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::anvil::Anvil;
use testkit::fault_proxy::{Fault, FaultProxy, Flap, MethodErrors, Noise, RateLimit};
use testkit::{json_rpc, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHAIN_ID: u64 = 31337;

/// One JSON-RPC call through `url`: the status and the body.
async fn call(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    params: Value,
) -> (StatusCode, String) {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    let response = client
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the proxy answers");
    let status = response.status();
    (status, response.text().await.expect("a body"))
}

fn head_of(body: &str) -> u64 {
    let reply: Value = serde_json::from_str(body).expect("JSON");
    json_rpc::quantity(&reply["result"]).expect("a block number")
}

async fn block_number(client: &reqwest::Client, url: &str) -> u64 {
    let (status, body) = call(client, url, "eth_blockNumber", json!([])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    head_of(&body)
}

/// A fast noise for counting: milliseconds of latency, nothing else unless a test sets it.
fn quick() -> Noise {
    Noise {
        median: Duration::from_micros(200),
        spread: 1.2,
        max_latency: Duration::from_millis(5),
        ..Noise::none()
    }
}

#[tokio::test]
async fn no_noise_passes_answers_through() {
    let node = Anvil::start(CHAIN_ID).await;
    node.mine(3).await;
    let proxy =
        FaultProxy::start_noisy(format!("127.0.0.1:{}", node.port), None, Noise::none()).await;
    let client = reqwest::Client::new();
    assert_eq!(block_number(&client, &proxy.url()).await, 3);
    let (status, body) = call(&client, &proxy.url(), "eth_chainId", json!([])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#""result":"0x7a69""#), "{body}");
    // A write goes to the node.
    call(&client, &proxy.url(), "anvil_mine", json!(["0x2"])).await;
    assert_eq!(node.block_number().await, 5);
    let huge = vec![b' '; (1 << 20) + 1];
    let response = client
        .post(proxy.url())
        .body(huge)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(proxy.stats().requests, 4);
}

#[tokio::test]
async fn errors_and_hangs_take_their_share() {
    let node = Anvil::start(CHAIN_ID).await;
    let noise = Noise {
        error_share: 0.1,
        hang_share: 0.05,
        hang: Duration::from_millis(20),
        ..quick()
    };
    let proxy = FaultProxy::start_noisy(format!("127.0.0.1:{}", node.port), None, noise).await;
    proxy.seed(7);
    let client = reqwest::Client::new();
    let (mut ok, mut bad_gateway) = (0, 0);
    for _ in 0..400 {
        let (status, body) = call(&client, &proxy.url(), "eth_chainId", json!([])).await;
        match status {
            StatusCode::OK => {
                assert!(body.contains("0x7a69"), "{body}");
                ok += 1;
            }
            StatusCode::BAD_GATEWAY => {
                assert!(body.contains("<title>502 Bad Gateway</title>"), "{body}");
                bad_gateway += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let stats = proxy.stats();
    assert_eq!(stats.requests, 400);
    assert_eq!(stats.errors_502, bad_gateway);
    assert_eq!(ok + bad_gateway, 400);
    assert!(
        (20..=65).contains(&bad_gateway),
        "{bad_gateway} 502s of 400 at 10 %"
    );
    assert!(
        (6..=40).contains(&stats.hangs),
        "{} hangs of ~360 at 5 %",
        stats.hangs
    );
    assert_eq!(stats.rate_limited + stats.flap_errors + stats.replica, 0);
}

#[tokio::test]
async fn method_errors_fail_only_their_method_at_their_share() {
    let node = Anvil::start(CHAIN_ID).await;
    let proxy = FaultProxy::start_noisy(format!("127.0.0.1:{}", node.port), None, quick()).await;
    proxy.seed(11);
    proxy.set_method_errors(Some(MethodErrors::bad_gateway("eth_blockNumber", 0.3)));
    let client = reqwest::Client::new();
    let mut bad_gateway = 0;
    for _ in 0..300 {
        let (status, body) = call(&client, &proxy.url(), "eth_blockNumber", json!([])).await;
        match status {
            StatusCode::OK => assert!(body.contains("\"result\""), "{body}"),
            StatusCode::BAD_GATEWAY => {
                assert!(body.contains("<title>502 Bad Gateway</title>"), "{body}");
                bad_gateway += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
        // The prober's methods never fail.
        for method in ["eth_chainId", "eth_getBlockByNumber"] {
            let params = if method == "eth_chainId" {
                json!([])
            } else {
                json!(["latest", false])
            };
            let (status, body) = call(&client, &proxy.url(), method, params).await;
            assert_eq!(status, StatusCode::OK, "{method}: {body}");
        }
    }
    assert!(
        (60..=120).contains(&bad_gateway),
        "{bad_gateway} 502s of 300 at 30 %"
    );
    let stats = proxy.stats();
    assert_eq!(stats.method_errors, bad_gateway);
    assert_eq!(stats.requests, 900);
    assert_eq!(stats.errors_502, 0);

    // A batch calling the method is hit too; clearing the knob stops the 502s.
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []},
    ]);
    let mut batch_errors = 0;
    for _ in 0..100 {
        let response = client
            .post(proxy.url())
            .json(&batch)
            .send()
            .await
            .expect("the proxy answers");
        if response.status() == StatusCode::BAD_GATEWAY {
            batch_errors += 1;
        }
    }
    assert!((10..=50).contains(&batch_errors), "{batch_errors} of 100");
    proxy.set_method_errors(None);
    for _ in 0..50 {
        block_number(&client, &proxy.url()).await;
    }
}

#[tokio::test]
async fn the_token_bucket_answers_429_above_its_rate() {
    let node = Anvil::start(CHAIN_ID).await;
    let noise = Noise {
        rate_limit: Some(RateLimit {
            per_second: 20.0,
            burst: 10.0,
        }),
        ..Noise::none()
    };
    let proxy = FaultProxy::start_noisy(format!("127.0.0.1:{}", node.port), None, noise).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    let start = Instant::now();
    for _ in 0..30 {
        let (status, body) = call(&client, &proxy.url(), "eth_chainId", json!([])).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            let reply: Value = serde_json::from_str(&body).expect("a JSON-RPC body");
            assert_eq!(reply["id"], 7, "{body}");
            assert_eq!(reply["error"]["code"], -32005, "{body}");
        }
        statuses.push(status);
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        statuses[..10].iter().all(|s| *s == StatusCode::OK),
        "the burst: {statuses:?}"
    );
    let passed = statuses.iter().filter(|s| **s == StatusCode::OK).count() as f64;
    assert!(
        passed <= 10.0 + 20.0 * elapsed + 1.0,
        "{passed} passed in {elapsed} s"
    );
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(proxy.stats().rate_limited as f64, 30.0 - passed);

    // Steady: paced well above the rate, about the rate gets through.
    let start = Instant::now();
    let mut passed = 0.0;
    for _ in 0..60 {
        let (status, _) = call(&client, &proxy.url(), "eth_chainId", json!([])).await;
        if status == StatusCode::OK {
            passed += 1.0;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        passed <= 20.0 * elapsed + 2.0,
        "{passed} passed in {elapsed} s"
    );
    assert!(
        passed >= 20.0 * elapsed * 0.5,
        "{passed} passed in {elapsed} s"
    );
}

#[tokio::test]
async fn the_replica_answers_a_few_blocks_behind_and_writes_go_to_the_primary() {
    let primary = Anvil::start(CHAIN_ID).await;
    let replica = Anvil::start(CHAIN_ID).await;
    primary.mine(20).await;
    let noise = Noise {
        replica_share: 1.0,
        replica_lag: 2,
        ..quick()
    };
    let proxy = FaultProxy::start_noisy(
        format!("127.0.0.1:{}", primary.port),
        Some(format!("127.0.0.1:{}", replica.port)),
        noise,
    )
    .await;
    let client = reqwest::Client::new();
    for target in [18, 21, 29] {
        wait_for("the replica to follow", Duration::from_secs(10), || async {
            (replica.block_number().await == target).then_some(())
        })
        .await;
        let head = primary.block_number().await;
        let before = proxy.stats().replica;
        for _ in 0..10 {
            let answer = block_number(&client, &proxy.url()).await;
            assert!(
                answer < head && head - answer <= 3,
                "{answer} against head {head}"
            );
        }
        assert_eq!(proxy.stats().replica - before, 10);
        // A write through the proxy reaches the primary, never the replica.
        let before = proxy.stats().replica;
        let blocks = if target == 18 { "0x3" } else { "0x8" };
        call(&client, &proxy.url(), "anvil_mine", json!([blocks])).await;
        assert_eq!(proxy.stats().replica, before);
        assert!(primary.block_number().await > head);
    }
}

#[tokio::test]
async fn a_stalled_primary_never_looks_fresher_through_a_shared_replica() {
    let stalled = Anvil::start(CHAIN_ID).await;
    let moving = Anvil::start(CHAIN_ID).await;
    let replica = Anvil::start(CHAIN_ID).await;
    let noise = Noise {
        replica_share: 1.0,
        ..quick()
    };
    let replica_addr = format!("127.0.0.1:{}", replica.port);
    let stalled_proxy = FaultProxy::start_noisy(
        format!("127.0.0.1:{}", stalled.port),
        Some(replica_addr.clone()),
        noise.clone(),
    )
    .await;
    let moving_proxy = FaultProxy::start_noisy(
        format!("127.0.0.1:{}", moving.port),
        Some(replica_addr),
        noise,
    )
    .await;
    stalled.set_interval_mining(1).await;
    wait_for("two blocks", Duration::from_secs(10), || async {
        (stalled.block_number().await >= 2).then_some(())
    })
    .await;
    stalled.set_interval_mining(0).await;
    let head = stalled.block_number().await;
    // The other provider sharing the replica mines it past the stalled head.
    moving.mine(head + 10).await;
    wait_for(
        "the shared replica to pass the stalled head",
        Duration::from_secs(10),
        || async { (replica.block_number().await >= head + 8).then_some(()) },
    )
    .await;
    let client = reqwest::Client::new();
    let before = stalled_proxy.stats().replica;
    for _ in 0..30 {
        assert_eq!(block_number(&client, &stalled_proxy.url()).await, head);
    }
    assert_eq!(
        stalled_proxy.stats().replica,
        before,
        "the replica answered"
    );
    // The same replica does answer for the provider it is behind.
    let answer = block_number(&client, &moving_proxy.url()).await;
    assert_eq!(answer, head + 8);
    assert!(moving_proxy.stats().replica >= 1);
}

#[tokio::test]
async fn a_flap_alternates_between_500s_and_answers() {
    let node = Anvil::start(CHAIN_ID).await;
    let proxy =
        FaultProxy::start_noisy(format!("127.0.0.1:{}", node.port), None, Noise::none()).await;
    let phase = Duration::from_millis(200);
    proxy.set_noise(Noise {
        flap: Some(Flap {
            bad: phase,
            good: phase,
        }),
        ..Noise::none()
    });
    let client = reqwest::Client::new();
    let mut bad = Vec::new();
    let start = Instant::now();
    while start.elapsed() < 6 * phase {
        let (status, body) = call(&client, &proxy.url(), "eth_chainId", json!([])).await;
        match status {
            StatusCode::INTERNAL_SERVER_ERROR => {
                assert!(body.contains("injected fault"), "{body}");
                bad.push(true);
            }
            StatusCode::OK => bad.push(false),
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(bad[0], "a flap starts bad");
    let switches = bad.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches >= 3, "{switches} switches in {bad:?}");
    let errors = bad.iter().filter(|b| **b).count() as u64;
    assert_eq!(proxy.stats().flap_errors, errors);
}

/// Sends one raw HTTP/1.1 request on `stream` and reads until the reply's end or EOF.
async fn raw_call(stream: &mut TcpStream) -> String {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                reply.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&reply).contains("0x7a69") {
                    break;
                }
            }
            Err(_) => panic!("no answer and no close within 5 s"),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn faults_override_the_noise_in_http_mode() {
    let node = Anvil::start(CHAIN_ID).await;
    let noise = Noise {
        error_share: 1.0,
        ..quick()
    };
    let proxy = FaultProxy::start_noisy(format!("127.0.0.1:{}", node.port), None, noise).await;
    let client = reqwest::Client::new();
    let (status, _) = call(&client, &proxy.url(), "eth_chainId", json!([])).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "the noise");

    proxy.set_fault(Fault::Error);
    let (status, body) = call(&client, &proxy.url(), "eth_chainId", json!([])).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains(r#""message":"injected fault""#), "{body}");

    proxy.set_fault(Fault::Delay(Duration::from_millis(300)));
    let start = Instant::now();
    let (status, _) = call(&client, &proxy.url(), "eth_chainId", json!([])).await;
    assert_eq!(status, StatusCode::OK, "a delay forwards, without noise");
    assert!(start.elapsed() >= Duration::from_millis(300));

    // Refuse closes an open keep-alive connection at its next request, and new ones at once.
    proxy.set_fault(Fault::Pass);
    proxy.set_noise(Noise::none());
    let mut open = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("connect");
    assert!(raw_call(&mut open).await.starts_with("HTTP/1.1 200"));
    proxy.set_fault(Fault::Refuse);
    assert_eq!(
        raw_call(&mut open).await,
        "",
        "the open connection closes unanswered"
    );
    let mut fresh = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("connect");
    assert_eq!(
        raw_call(&mut fresh).await,
        "",
        "a new connection closes unanswered"
    );
    assert!(client.post(proxy.url()).body("{}").send().await.is_err());

    proxy.set_fault(Fault::Pass);
    assert_eq!(block_number(&client, &proxy.url()).await, 0);
}
