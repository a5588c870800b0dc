//! What the tests that drive rounds directly share: a scripted JSON-RPC server's request reading
//! and replies, an exporter built from a few providers, and reading its metrics.
// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::config::Config;
use exporter::Exporter;
use serde_json::{json, Value};
use testkit::metrics_text::sample;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A server on a free port of 127.0.0.1 that hands each connection to `serve` in a task of its
/// own: the port, and the task to abort when done.
pub async fn listen<F, Fut>(serve: F) -> (u16, JoinHandle<()>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(("127.0.0.1", testkit::free_port()))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    (port, task)
}

/// One HTTP request as a scripted server sees it.
pub struct Request {
    /// With the query.
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

/// The next request on `stream`, or `None` if it is not a complete HTTP request with a JSON body.
pub async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        match line.trim_end().split_once(':') {
            None => break,
            Some((name, value)) => {
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()))
            }
        }
    }
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some(Request {
        path,
        headers,
        body: serde_json::from_slice(&body).ok()?,
    })
}

/// Answers `200 OK` with the JSON-RPC response `{"result": result}` or, if `error` is given,
/// `{"error": error}`, and closes.
pub async fn reply(stream: &mut TcpStream, result: Value, error: Option<Value>) {
    let body = match error {
        Some(error) => json!({"jsonrpc": "2.0", "id": 1, "error": error}),
        None => json!({"jsonrpc": "2.0", "id": 1, "result": result}),
    }
    .to_string();
    let reply = format!(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
}

/// A block as `eth_getBlockByNumber` returns it.
pub fn block(number: u64, timestamp: u64) -> Value {
    json!({"number": format!("{number:#x}"), "timestamp": format!("{timestamp:#x}"),
           "hash": format!("0x{number:064x}")})
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An exporter (not serving, no timer) for chain `dev` (chain id 1) with `providers`
/// (name, URL), its probe timeout `timeout`.
pub fn exporter(timeout: &str, providers: &[(&str, String)]) -> Exporter {
    let with_no_headers: Vec<_> = providers
        .iter()
        .map(|(name, url)| (*name, url.clone(), ""))
        .collect();
    exporter_with_headers(timeout, &with_no_headers)
}

/// As [`exporter`], each provider with `headers`, a TOML inline table or empty.
pub fn exporter_with_headers(timeout: &str, providers: &[(&str, String, &str)]) -> Exporter {
    let mut text = format!(
        "[exporter]\nprobe_interval = \"1s\"\nprobe_timeout = \"{timeout}\"\n\
         [[chain]]\nname = \"dev\"\nchain_id = 1\nbackend = \"rpc\"\n"
    );
    for (name, url, headers) in providers {
        text.push_str(&format!(
            "[[chain.provider]]\nname = \"{name}\"\nurl = \"{url}\"\n"
        ));
        if !headers.is_empty() {
            text.push_str(&format!("headers = {headers}\n"));
        }
    }
    let config = Config::parse(Path::new("test.toml"), &text, |_| None).expect("valid config");
    Exporter::new(&config).expect("exporter")
}

/// Runs round `id` and returns the metrics after it.
pub async fn round(exporter: &Exporter, id: u64) -> String {
    exporter.chains[0].clone().round(id).await;
    exporter.metrics.render()
}

pub fn value(text: &str, name: &str, provider: &str) -> Option<f64> {
    sample(text, name, &[("chain", "dev"), ("provider", provider)])
}

pub fn errors(text: &str, provider: &str, reason: &str) -> Option<f64> {
    sample(
        text,
        "ethrpc_probe_errors_total",
        &[("provider", provider), ("reason", reason)],
    )
}
