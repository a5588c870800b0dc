//! Peak memory of one Prometheus query whose answer is just under the client's 16 MiB limit.
//! These tests measure, so they are ignored by default; run each alone (the peak, `VmHWM`, is
//! the whole process's):
//!
//! ```text
//! cargo test --release -p ethrpc-actuator --test prometheus_memory -- --ignored --exact --nocapture small_samples
//! ```
//!
//! (likewise `samples_at_the_cap`, `one_huge_label` and `many_labels_per_sample`). Each asserts the query's peak stays
//! far below the actuator's 64 MiB Kubernetes limit. `backtest_over_foreign_series` replays a
//! day from a Prometheus shared with 1 000 series of other chains and providers.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::Duration;

use actuator::backtest::{self, Request};
use actuator::prometheus_api::{PrometheusClient, PrometheusError, QueryResult, MAX_SAMPLES};
use common::config::Config;

/// Just under the client's limit on an answer.
const ANSWER_BYTES: usize = (16 << 20) - 1024;
/// Peak growth allowed for one query: the 16 MiB answer plus what is kept of it.
const PEAK_GROWTH_LIMIT: u64 = 40 << 20;

const PREFIX: &str = r#"{"status":"success","data":{"resultType":"vector","result":["#;
const SUFFIX: &str = "]}}";

/// The pieces of one answer body, generated as they are written so the server adds next to
/// nothing to the peak.
type Pieces = Box<dyn Iterator<Item = String> + Send>;

/// Serves one answer made of `pieces()`; returns its URL and the body's length.
fn serve_once(pieces: impl Fn() -> Pieces + Send + 'static) -> (String, usize) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let length: usize = pieces().map(|p| p.len()).sum();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 64 << 10];
        let _ = stream.read(&mut request);
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
        );
        let mut chunk = String::new();
        for piece in pieces() {
            chunk.push_str(&piece);
            if chunk.len() > 64 << 10 {
                let _ = stream.write_all(chunk.as_bytes());
                chunk.clear();
            }
        }
        let _ = stream.write_all(chunk.as_bytes());
    });
    (format!("http://{address}/"), length)
}

/// As many samples made by `sample` (all the same length) as fill [`ANSWER_BYTES`].
fn filling(sample: fn(usize) -> String) -> usize {
    (ANSWER_BYTES - PREFIX.len() - SUFFIX.len()) / (sample(0).len() + 1)
}

/// A vector answer of `count` samples made by `sample`.
fn vector_of(sample: fn(usize) -> String, count: usize) -> impl Fn() -> Pieces {
    move || {
        let samples = (0..count).map(move |i| {
            if i == 0 {
                sample(i)
            } else {
                format!(",{}", sample(i))
            }
        });
        Box::new(
            std::iter::once(PREFIX.to_owned())
                .chain(samples)
                .chain(std::iter::once(SUFFIX.to_owned())),
        )
    }
}

/// The process's peak resident set so far, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        << 10
}

/// Queries a server answering `pieces` and reports the peak before and after.
async fn measure(what: &str, pieces: impl Fn() -> Pieces + Send + 'static) {
    let (url, length) = serve_once(pieces);
    let client = PrometheusClient::new(&url.parse().unwrap(), Duration::from_secs(60)).unwrap();
    let before = peak_rss();
    let result = client.query("up").await;
    let after = peak_rss();
    let outcome = match &result {
        Ok(QueryResult::Vector(v)) => format!("{} samples kept", v.len()),
        Ok(QueryResult::Scalar { .. }) => "a scalar".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    eprintln!(
        "{what}: a {:.1} MiB answer; peak RSS {:.1} MiB before the query, {:.1} MiB after; {outcome}",
        mib(length as u64),
        mib(before),
        mib(after),
    );
    assert!(
        !matches!(result, Err(PrometheusError::TooLarge)),
        "the answer fits MAX_BODY"
    );
    assert!(
        after - before < PEAK_GROWTH_LIMIT,
        "{what}: the query grew the peak by {:.1} MiB",
        mib(after - before)
    );
}

fn small_sample(i: usize) -> String {
    format!(r#"{{"metric":{{"chain":"c","provider":"p{i:08}"}},"value":[1795487401.414,"1"]}}"#)
}

#[tokio::test]
#[ignore = "measures peak memory; run alone"]
async fn small_samples() {
    measure(
        "small samples",
        vector_of(small_sample, filling(small_sample)),
    )
    .await;
}

#[tokio::test]
#[ignore = "measures peak memory; run alone"]
async fn samples_at_the_cap() {
    measure("samples at the cap", vector_of(small_sample, MAX_SAMPLES)).await;
}

#[tokio::test]
#[ignore = "measures peak memory; run alone"]
async fn one_huge_label() {
    let pieces = || -> Pieces {
        let filler = (ANSWER_BYTES - 200) >> 10;
        Box::new(
            std::iter::once(format!(r#"{PREFIX}{{"metric":{{"provider":""#))
                .chain((0..filler).map(|_| "x".repeat(1 << 10)))
                .chain(std::iter::once(format!(r#""}},"value":[1,"1"]}}{SUFFIX}"#))),
        )
    };
    measure("one huge label", pieces).await;
}

#[tokio::test]
#[ignore = "measures peak memory; run alone"]
async fn many_labels_per_sample() {
    let sample = |i: usize| {
        let labels: Vec<String> = (0..100).map(|l| format!(r#""l{l:03}":"v""#)).collect();
        format!(
            r#"{{"metric":{{"i":"{i:08}",{}}},"value":[1,"1"]}}"#,
            labels.join(",")
        )
    };
    measure("many labels per sample", vector_of(sample, filling(sample))).await;
}

/// Serves every request, for ever, with a range answer of `foreign` series of other chains and
/// providers (one point each) and one point of the configured provider `p1`; returns its URL.
fn serve_shared_prometheus(foreign: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let mut series: Vec<String> = (0..foreign)
        .map(|i| {
            format!(
                r#"{{"metric":{{"chain":"other{}","provider":"q{i:05}"}},"values":[[1795487400,"1"]]}}"#,
                i % 7
            )
        })
        .collect();
    series.push(r#"{"metric":{"chain":"dev","provider":"p1"},"values":[[1795487400,"1"]]}"#.into());
    let body = format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
        series.join(",")
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 64 << 10];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{address}/")
}

#[tokio::test]
#[ignore = "measures peak memory; run alone"]
async fn backtest_over_foreign_series() {
    let url = serve_shared_prometheus(1_000);
    let text = format!(
        "[actuator]\nprometheus_url = \"{url}\"\nhaproxy = \"unix:/nonexistent.sock\"\n\
         [[chain]]\nname = \"dev\"\nchain_id = 1\nbackend = \"rpc\"\n\
         [[chain.provider]]\nname = \"p1\"\nurl = \"http://127.0.0.1:1\"\n\
         [[chain.provider]]\nname = \"p2\"\nurl = \"http://127.0.0.1:2\"\n\
         [[chain.provider]]\nname = \"p3\"\nurl = \"http://127.0.0.1:3\"\n"
    );
    let config = Config::parse(std::path::Path::new("t.toml"), &text, |_| None).unwrap();
    let request = Request {
        from: 1_795_487_400.0,
        to: 1_795_487_400.0 + 86_400.0,
        step: Duration::from_secs(2),
        set: Vec::new(),
        compare: Vec::new(),
    };
    let before = peak_rss();
    let result = backtest::run(&config, &request, |_| ()).await;
    let after = peak_rss();
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    eprintln!(
        "backtest of a day at 2 s, 3 providers, 1 000 foreign series per answer: peak RSS {:.1} MiB \
         before, {:.1} MiB after ({})",
        mib(before),
        mib(after),
        if result.is_ok() { "replayed" } else { "failed" }
    );
    assert!(result.is_ok(), "{:?}", result.err());
    assert!(
        after - before < 100 << 20,
        "the backtest grew the peak by {:.1} MiB",
        mib(after - before)
    );
}
