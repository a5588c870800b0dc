//! `body-inspection`: what the shipped backend's counting of JSON-RPC errors inside HTTP 200
//! (`wait-for-body` and `json_query` on every answer, deploy/README.md "Counting what clients
//! got") costs clients and HAProxy, against the same backend without those lines: client
//! latency p50 / p99 on short answers, the time to read a 10 MiB `eth_getLogs` answer sent with
//! a `Content-Length` and sent chunked, and HAProxy's peak memory. Each arm is its own HAProxy 2.6
//! (the shipped `defaults`) in front of one local JSON-RPC responder (a fake is right here: the
//! measure is HAProxy's own work), so that each peak is its arm's alone.

use std::convert::Infallible;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Request, Response};
use testkit::free_port;
use testkit::haproxy::HaproxyProcess;

use crate::cost::peak_rss_mib;
use crate::local_server::{request_body, LocalServer};
use crate::stack::shipped_backend_options;
use crate::stats::{quantile, table};

/// Short calls per arm, sent 8 at a time.
const SHORT_CALLS: usize = 20_000;
const CONCURRENCY: usize = 8;
/// Large answers per arm and per framing, one at a time.
const LARGE_CALLS: usize = 20;
const LARGE_BYTES: usize = 10 * 1024 * 1024;
/// A chunked answer is sent in pieces of this size.
const CHUNK_BYTES: usize = 64 * 1024;

/// The answer to `eth_getLogs`: one log repeated up to [`LARGE_BYTES`].
fn large_answer() -> Bytes {
    let log = format!(
        r#"{{"address":"0x{a}","topics":["0x{t}"],"data":"0x{d}","blockNumber":"0x1","logIndex":"0x0"}}"#,
        a = "11".repeat(20),
        t = "22".repeat(32),
        d = "33".repeat(64)
    );
    let mut text = String::from(r#"{"jsonrpc":"2.0","id":1,"result":["#);
    while text.len() + log.len() + 3 < LARGE_BYTES {
        if !text.ends_with('[') {
            text.push(',');
        }
        text.push_str(&log);
    }
    text.push_str("]}");
    Bytes::from(text)
}

/// The responder's answer: to `eth_getLogs` the large answer, with a `Content-Length`, or
/// chunked when its params say `"chunked"`; to anything else a short result.
async fn answer(
    req: Request<hyper::body::Incoming>,
    large: Bytes,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let body = request_body(req).await;
    let has = |word: &[u8]| body.windows(word.len()).any(|w| w == word);
    let reply = if !has(b"eth_getLogs") {
        Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":"0x1234"}"#,
        ))
        .boxed()
    } else if has(b"chunked") {
        let pieces: Vec<Result<Frame<Bytes>, Infallible>> = (0..large.len())
            .step_by(CHUNK_BYTES)
            .map(|at| {
                Ok(Frame::data(
                    large.slice(at..large.len().min(at + CHUNK_BYTES)),
                ))
            })
            .collect();
        BodyExt::boxed(StreamBody::new(stream::iter(pieces)))
    } else {
        Full::new(large).boxed()
    };
    Ok(Response::new(reply))
}

/// The shipped backend's options without the lines that read answer bodies and count them.
fn without_counting(options: &str) -> String {
    options
        .lines()
        .filter(|l| {
            let l = l.trim();
            !(l.starts_with("stick-table")
                || l.starts_with("http-response")
                || l.starts_with("acl ethrpc_")
                || l == "http-request del-header accept-encoding")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// What one arm measured.
struct Measured {
    short_ms: Vec<f64>,
    large_ms: Vec<f64>,
    chunked_ms: Vec<f64>,
    peak_rss_mib: f64,
}

async fn call(client: &reqwest::Client, url: &str, body: &'static str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let response = client.post(url).body(body).send().await?;
    anyhow::ensure!(response.status().is_success(), "HTTP {}", response.status());
    let bytes = response.bytes().await?;
    anyhow::ensure!(bytes.ends_with(b"}"), "a cut answer");
    Ok(1000.0 * started.elapsed().as_secs_f64())
}

async fn measure(options: &str, upstream: u16) -> anyhow::Result<Measured> {
    let port = free_port();
    let haproxy = HaproxyProcess::start_shipped(&format!(
        "frontend rpc\n  bind 127.0.0.1:{port}\n  default_backend rpc-backend\n\
         backend rpc-backend\n{options}  server s1 127.0.0.1:{upstream}\n"
    ))
    .await;
    let url = format!("http://127.0.0.1:{port}/");
    let client = reqwest::Client::new();
    const SHORT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x0000000000000000000000000000000000000000","latest"]}"#;
    const LARGE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{}]}"#;
    const CHUNKED: &str =
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{"chunked":true}]}"#;
    // Warm the connections up first, as a client's pool would be.
    for _ in 0..CONCURRENCY {
        call(&client, &url, SHORT).await?;
    }
    let short_ms: Vec<f64> = stream::iter(0..SHORT_CALLS)
        .map(|_| call(&client, &url, SHORT))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let mut large_ms = Vec::new();
    let mut chunked_ms = Vec::new();
    for _ in 0..LARGE_CALLS {
        large_ms.push(call(&client, &url, LARGE).await?);
        chunked_ms.push(call(&client, &url, CHUNKED).await?);
    }
    let peak_rss_mib = haproxy.pid().and_then(peak_rss_mib).unwrap_or(f64::NAN);
    Ok(Measured {
        short_ms,
        large_ms,
        chunked_ms,
        peak_rss_mib,
    })
}

pub async fn run() -> anyhow::Result<String> {
    let large = large_answer();
    let responder = LocalServer::start(move |req| answer(req, large.clone())).await?;
    let shipped = shipped_backend_options()?;
    let plain = without_counting(&shipped);
    anyhow::ensure!(
        shipped.contains("wait-for-body") && !plain.contains("wait-for-body"),
        "the shipped backend no longer reads bodies the way this part expects"
    );
    let mut rows = Vec::new();
    let mut p50s = Vec::new();
    for (name, options) in [
        ("shipped (counting JSON-RPC errors)", &shipped),
        ("without the counting lines", &plain),
        ("shipped, again", &shipped),
    ] {
        eprintln!("body-inspection: {name}");
        let m = measure(options, responder.port).await?;
        let q = |v: &[f64], p| quantile(v, p).unwrap_or(f64::NAN);
        p50s.push(q(&m.short_ms, 0.5));
        rows.push(vec![
            name.to_owned(),
            format!(
                "{:.2} / {:.2} ms",
                q(&m.short_ms, 0.5),
                q(&m.short_ms, 0.99)
            ),
            format!("{:.1} ms", q(&m.large_ms, 0.5)),
            format!("{:.1} ms", q(&m.chunked_ms, 0.5)),
            format!("{:.1} MiB", m.peak_rss_mib),
        ]);
    }
    let cost = (p50s[0] + p50s[2]) / 2.0 - p50s[1];
    Ok(format!(
        "## Body inspection\n\nThe shipped backend (its JSON-RPC error counting reads every 2xx answer of up to \
         16 KiB: `wait-for-body`, `json_query`) against the same backend without those lines, each its own HAProxy \
         2.6 in front of one local responder: {SHORT_CALLS} short calls ({CONCURRENCY} at a time), then \
         {LARGE_CALLS} `eth_getLogs` answers of {} MiB sent with a `Content-Length` and {LARGE_CALLS} sent chunked. \
         The shipped arm runs twice, before and after, to show the noise.\n\n{}\n\
         Target: ≤ 1 ms at the client's p50, bounded memory on a 10 MiB answer. Measured cost at p50: {cost:.2} ms \
         (the shipped arms' mean minus the arm without).\n",
        LARGE_BYTES / (1024 * 1024),
        table(
            &["backend", "short calls p50 / p99", "10 MiB, Content-Length, p50", "10 MiB, chunked, p50", "HAProxy peak RSS"],
            &rows
        )
    ))
}
