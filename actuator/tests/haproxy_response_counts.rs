//! Per-server response counters ([`RESPONSE_COUNTING`], read by `Haproxy::response_counts`) on
//! the real HAProxy 2.6 with the shipped defaults, retries included: every HTTP 429 a client gets
//! is counted once, on the server that answered it; a 400 never; an attempt that was retried
//! never. JSON-RPC errors inside a 200 by class: rate limits with the 429s, the provider's own
//! errors apart, the client's own nowhere. A backend without the lines reads as `None`.
//! (`haproxy_retries.rs` checks that both shipped configs carry the lines.)

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use actuator::haproxy::{Haproxy, ResponseCounts, RESPONSE_COUNTING};
use common::config::HaproxyAddress;
use testkit::free_port;
use testkit::haproxy::{backend, HaproxyProcess};
use testkit::status_cycle::StatusCycle;

/// A roundrobin backend over `servers` that counts responses as the shipped configs do.
fn counting_backend(name: &str, servers: &[(&str, String)]) -> String {
    let mut text = backend(name, "roundrobin", servers);
    for line in RESPONSE_COUNTING {
        text.push_str(&format!("  {line}\n"));
    }
    text
}

/// A frontend on a free port sending everything to `backend`, and the port.
fn frontend(backend: &str) -> (String, u16) {
    let port = free_port();
    (
        format!("frontend fe-{backend}\n  bind 127.0.0.1:{port}\n  default_backend {backend}\n"),
        port,
    )
}

fn client(h: &HaproxyProcess) -> Haproxy {
    Haproxy::new(
        HaproxyAddress::Unix(h.admin_socket.clone()),
        Duration::from_secs(2),
    )
}

/// POSTs a JSON-RPC call to the frontend on `port` `n` times: the statuses clients got.
async fn post(port: u16, n: usize) -> Vec<u16> {
    let http = reqwest::Client::new();
    let mut statuses = Vec::with_capacity(n);
    for id in 0..n {
        let response = http
            .post(format!("http://127.0.0.1:{port}/"))
            .header("Content-Type", "application/json")
            .body(format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_chainId","params":[]}}"#
            ))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("HAProxy answers");
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn only_429s_are_counted_once_each_on_the_server_that_answered() {
    const REQUESTS: usize = 60;
    // A provider over its plan now and then, one whose clients send malformed calls, and one
    // whose every other attempt fails with a 502 (retried on another server) and the rest 429.
    let limited = StatusCycle::start(&[429, 400, 200]).await;
    let clumsy = StatusCycle::start(&[400]).await;
    let flaky = StatusCycle::start(&[502, 429]).await;
    let alone = StatusCycle::start(&[429]).await;
    let (rpc, port) = frontend("rpc");
    let (other, other_port) = frontend("other");
    let sections =
        rpc + &counting_backend(
            "rpc",
            &[
                ("limited", limited.address()),
                ("clumsy", clumsy.address()),
                ("flaky", flaky.address()),
            ],
        ) + &other
            + &counting_backend("other", &[("alone", alone.address())]);
    let h = HaproxyProcess::start_shipped(&sections).await;

    let statuses = post(port, REQUESTS).await;
    let counts = client(&h).response_counts("rpc").await.unwrap().unwrap();

    assert!(flaky.answered(502) > 0, "no attempt was retried");
    assert!(limited.answered(429) > 0 && flaky.answered(429) > 0);
    assert_eq!(
        counts["limited"],
        ResponseCounts {
            rate_limited: limited.answered(429) as u64,
            rpc_errors: Some(0),
            answers: Some(limited.requests() as u64),
        }
    );
    assert_eq!(
        counts["clumsy"],
        ResponseCounts {
            rate_limited: 0,
            rpc_errors: Some(0),
            answers: Some(clumsy.requests() as u64),
        },
        "a 400 is no rate limit"
    );
    assert_eq!(
        counts["flaky"],
        ResponseCounts {
            rate_limited: flaky.answered(429) as u64,
            rpc_errors: Some(0),
            answers: Some(flaky.answered(429) as u64),
        },
        "its retried 502s are in neither counter"
    );
    let counted_429s: u64 = counts.values().map(|c| c.rate_limited).sum();
    let client_429s = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert_eq!(counted_429s, client_429s);
    let answers: u64 = counts.values().filter_map(|c| c.answers).sum();
    assert_eq!(answers, REQUESTS as u64, "one count per client request");
    // What `show stat` offered before: 4xx for the server that never rate-limits.
    let stats = h.server_stats("rpc").await;
    let clumsy_4xx = stats
        .iter()
        .find(|row| row.get("svname").map(String::as_str) == Some("clumsy"))
        .and_then(|row| row.get("hrsp_4xx")?.parse::<usize>().ok());
    assert_eq!(clumsy_4xx, Some(clumsy.requests()));

    // Each backend has its own table, named after it, as the bench's arms have.
    post(other_port, 3).await;
    let other = client(&h).response_counts("other").await.unwrap().unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(
        other["alone"],
        ResponseCounts {
            rate_limited: 3,
            rpc_errors: Some(0),
            answers: Some(3),
        }
    );
    let rpc = client(&h).response_counts("rpc").await.unwrap().unwrap();
    assert_eq!(
        rpc, counts,
        "the other backend's answers are not in rpc's table"
    );
}

/// A JSON-RPC error answer with `code` and `message`.
fn rpc_error(code: i64, message: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":{code},"message":"{message}"}}}}"#)
}

#[tokio::test]
async fn json_rpc_errors_inside_200s_are_counted_by_class() {
    // One provider's cycle of answers, all but one HTTP 200: what each is counted as.
    let big_result = format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":"0x{}"}}"#,
        "ab".repeat(100_000)
    );
    let cycle = [
        // The provider's own errors (gpc1), a range limit among them: it says -32005 too.
        (200, rpc_error(-32000, "header not found")),
        (
            200,
            rpc_error(
                -32000,
                "missing trie node 1234 (path ) state is not available",
            ),
        ),
        (200, rpc_error(-32603, "internal error")),
        (
            200,
            rpc_error(-32601, "the method eth_foo does not exist/is not available"),
        ),
        (
            200,
            rpc_error(-32005, "query returned more than 10000 results"),
        ),
        // Rate limits (gpc0, with the 429s).
        (
            200,
            rpc_error(-32005, "daily request count exceeded, request rate limited"),
        ),
        (200, rpc_error(-32000, "Too Many Requests")),
        (
            200,
            rpc_error(
                -32007,
                "100/second request limit reached - reduce calls per second",
            ),
        ),
        (429, rpc_error(-32005, "rate limit exceeded")),
        // The client's own: nowhere, whatever words a revert reason holds.
        (200, rpc_error(3, "execution reverted")),
        (
            200,
            rpc_error(-32000, "execution reverted: rate limit exceeded"),
        ),
        (
            200,
            rpc_error(-32602, "invalid argument 0: hex string without 0x prefix"),
        ),
        (200, rpc_error(-32000, "nonce too low")),
        (
            200,
            rpc_error(-32000, "insufficient funds for gas * price + value"),
        ),
        (200, rpc_error(-32000, "transaction underpriced")),
        // Answers: a result, a batch's array, a result larger than HAProxy's buffer that holds
        // the word "error" (never parsed as one).
        (200, r#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#.to_owned()),
        (
            200,
            format!(
                "[{},{}]",
                rpc_error(-32000, "header not found"),
                r#"{"id":2,"result":"0x1"}"#
            ),
        ),
        (200, big_result.replace("abab", "\\\"error\\\"")),
        (200, big_result.clone()),
    ];
    let provider = StatusCycle::start_answers(&cycle).await;
    let (rpc, port) = frontend("rpc");
    let h = HaproxyProcess::start_shipped(
        &(rpc + &counting_backend("rpc", &[("provider", provider.address())])),
    )
    .await;
    let rounds = 3;
    let http = reqwest::Client::new();
    let mut big_sizes = Vec::new();
    for _ in 0..rounds * cycle.len() {
        let response = http
            .post(format!("http://127.0.0.1:{port}/"))
            .header("Content-Type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[]}"#)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("HAProxy answers");
        let body = response.bytes().await.expect("a whole body");
        if body.len() > 100_000 {
            big_sizes.push(body.len());
        }
    }
    assert_eq!(big_sizes.len(), 2 * rounds, "both large answers each round");
    assert!(
        big_sizes.iter().all(|n| *n >= big_result.len()),
        "large answers pass whole: {big_sizes:?}"
    );
    let counts = client(&h).response_counts("rpc").await.unwrap().unwrap();
    let at = |positions: std::ops::Range<usize>| -> u64 {
        positions.map(|p| provider.answered_at(p) as u64).sum()
    };
    assert_eq!(
        counts["provider"],
        ResponseCounts {
            rate_limited: at(5..9),
            rpc_errors: Some(at(0..5)),
            answers: Some((rounds * cycle.len()) as u64),
        },
        "provider errors 0..5, rate limits 5..9, the client's own and answers none"
    );
    assert_eq!(at(0..5), 5 * rounds as u64);
}

#[tokio::test]
async fn a_backend_without_the_counting_lines_reads_as_none() {
    let plain = backend("plain", "roundrobin", &[("p", "127.0.0.1:9".into())]);
    // A user's own table, keyed by client address: it counts no server's answers.
    let by_ip = "backend by-ip\n  stick-table type ip size 1k store http_req_rate(10s)\n  \
                 http-request track-sc0 src\n  server q 127.0.0.1:9\n";
    let h = HaproxyProcess::start_shipped(&(plain + by_ip)).await;
    let c = client(&h);
    assert_eq!(h.admin("show table plain").await, "No such table\n\n");
    for name in ["plain", "by-ip", "no-such-backend"] {
        assert_eq!(c.response_counts(name).await.unwrap(), None, "{name}");
    }
}
