//! A JSON-RPC server that misbehaves on cue: the first path segment of the request chooses how
//! (`/garbage/...`, `/hang/...`), so one server plays many providers and the rest of the path can
//! carry a secret marker. It counts the requests of each mode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The chain id the fake reports (except in `wrong-chain` mode).
pub const FAKE_CHAIN_ID: u64 = 1;

/// Modes, by first path segment:
/// - `ok`: a valid chain id and a fresh block;
/// - `garbage`: a non-JSON body; `no-result`: JSON without `result`; `rpc-error`: an `error` object;
/// - `bad-hex`: a block whose number is not hex; `huge`: a 2 MiB body;
/// - `hang`: reads the request and never answers; `429`: rate limited with `Retry-After: 3600`;
/// - `500`: HTTP 500; `wrong-chain`: chain id 2;
/// - `echo`: HTTP 404 in plain text quoting the request path, as a proxy's error page may.
pub struct FakeRpc {
    pub port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: JoinHandle<()>,
}

impl FakeRpc {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Default::default();
        let counted = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, counted.clone()));
            }
        });
        Self { port, hits, task }
    }

    /// `http://127.0.0.1:PORT/MODE/rest`.
    pub fn url(&self, mode: &str, rest: &str) -> String {
        format!("http://127.0.0.1:{}/{mode}/{rest}", self.port)
    }

    /// Requests served in `mode` so far.
    pub fn hits(&self, mode: &str) -> usize {
        self.hits
            .lock()
            .map(|h| h.get(mode).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for FakeRpc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, hits: Arc<Mutex<HashMap<String, usize>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf[0] == 0x16 {
            // A TLS handshake to a plain-HTTP server: answer in plain text, as a misconfigured
            // endpoint would.
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            return;
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let mode = path
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .unwrap_or("")
        .to_owned();
    if let Ok(mut h) = hits.lock() {
        *h.entry(mode.clone()).or_default() += 1;
    }
    let request: Value = serde_json::from_slice(&buf[header_end..]).unwrap_or(Value::Null);
    let method = request["method"].as_str().unwrap_or("");
    let (status, body) = match mode.as_str() {
        "echo" => ("404 Not Found", format!("no route for {path}")),
        _ => answer(&mode, method),
    };
    if mode == "hang" {
        std::future::pending::<()>().await;
    }
    let mut reply =
        format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/json\r\n");
    if mode == "429" {
        reply.push_str("Retry-After: 3600\r\n");
    }
    if mode != "huge" {
        reply.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    reply.push_str("\r\n");
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn answer(mode: &str, method: &str) -> (&'static str, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ok = |result: Value| json!({"jsonrpc": "2.0", "id": 1, "result": result}).to_string();
    let block = |number: &str| {
        ok(json!({"number": number, "timestamp": format!("{now:#x}"),
                  "hash": format!("0x{}", "ab".repeat(32))}))
    };
    let chain_id = |id: u64| ok(json!(format!("{id:#x}")));
    match (mode, method) {
        ("ok" | "bad-hex", "eth_chainId") => ("200 OK", chain_id(FAKE_CHAIN_ID)),
        ("wrong-chain", "eth_chainId") => ("200 OK", chain_id(2)),
        ("ok" | "wrong-chain", _) => ("200 OK", block("0x10")),
        ("bad-hex", _) => ("200 OK", block("0xZZ")),
        ("garbage", _) => ("200 OK", "<html>surprise</html>".to_owned()),
        ("no-result", _) => ("200 OK", r#"{"jsonrpc":"2.0","id":1}"#.to_owned()),
        ("rpc-error", _) => (
            "200 OK",
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"limit exceeded"}}"#
                .to_owned(),
        ),
        ("huge", _) => (
            "200 OK",
            format!("{{\"result\":\"{}\"}}", "x".repeat(2 << 20)),
        ),
        ("429", _) => ("429 Too Many Requests", "{}".to_owned()),
        ("500", _) => ("500 Internal Server Error", "oops".to_owned()),
        _ => ("404 Not Found", "unknown mode".to_owned()),
    }
}
