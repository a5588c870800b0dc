//! L7 retries as the shipped HAProxy configs set them, on the real HAProxy and a real anvil: a
//! request one provider fails (HTTP 502, a refused connection, a hang) is answered by another.
//! Also: the testkit's `SHIPPED_DEFAULTS` (what tests and the bench run) are exactly the shipped
//! configs' lines, both configs' `rpc-backend` has the same options, among them the 429 counting
//! (`haproxy::RESPONSE_COUNTING`), and `haproxy -c` accepts both configs.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use actuator::haproxy::RESPONSE_COUNTING;
use testkit::anvil::Anvil;
use testkit::haproxy::{backend, HaproxyProcess, SHIPPED_DEFAULTS};
use testkit::{free_port, workspace_root, TempDir};

const CHAIN_ID: u64 = 31337;
const LOCAL_CONFIG: &str = "deploy/local/haproxy.cfg";
const KUBERNETES_CONFIG: &str = "deploy/kubernetes/base/haproxy.cfg";
/// The example Secret's values, which the Kubernetes config reads from the environment.
const KUBERNETES_ENV: &str = "deploy/kubernetes/overlays/example/providers.env.example";
/// `defaults` lines about the deployment (logging, the weights' state file, DNS), not about how a
/// request fares: the testkit does not copy them.
const DEPLOYMENT_ONLY: [&str; 4] = [
    "log ",
    "option httplog",
    "load-server-state-from-file ",
    "default-server ",
];
/// The backend every test balances over, behind the frontend `clients`.
const BACKEND: &str = "rpc";

fn read_shipped(path: &str) -> String {
    let path = workspace_root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The directives of `config`'s section `header` (e.g. `defaults`), trimmed, comments dropped.
fn section<'a>(config: &'a str, header: &'a str) -> impl Iterator<Item = &'a str> {
    config
        .lines()
        .skip_while(move |l| l.trim_end() != header)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with([' ', '\t', '#']))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The directives of `config`'s `defaults` section that decide how a request fares.
fn request_directives(config: &str) -> Vec<&str> {
    section(config, "defaults")
        .filter(|l| !DEPLOYMENT_ONLY.iter().any(|d| l.starts_with(d)))
        .collect()
}

#[test]
fn the_testkit_runs_the_shipped_defaults() {
    let expected: Vec<&str> = SHIPPED_DEFAULTS.lines().map(str::trim).collect();
    for path in [LOCAL_CONFIG, KUBERNETES_CONFIG] {
        assert_eq!(
            request_directives(&read_shipped(path)),
            expected,
            "{path}'s defaults differ from testkit::haproxy::SHIPPED_DEFAULTS"
        );
    }
}

/// The options of `config`'s `backend rpc-backend` but its servers and the health checks' pace
/// (`default-server`, which each deployment sets to its own), comments dropped.
fn rpc_backend_options(config: &str) -> Vec<&str> {
    section(config, "backend rpc-backend")
        .filter(|l| !l.starts_with("server ") && !l.starts_with("default-server "))
        .collect()
}

#[test]
fn the_shipped_backends_have_the_same_options_and_count_429s() {
    let local = read_shipped(LOCAL_CONFIG);
    let kubernetes = read_shipped(KUBERNETES_CONFIG);
    let options = rpc_backend_options(&local);
    assert_eq!(
        options,
        rpc_backend_options(&kubernetes),
        "{LOCAL_CONFIG} and {KUBERNETES_CONFIG} differ in rpc-backend"
    );
    assert!(
        options
            .windows(RESPONSE_COUNTING.len())
            .any(|w| w == RESPONSE_COUNTING),
        "rpc-backend lacks haproxy::RESPONSE_COUNTING's lines: {options:#?}"
    );
}

fn haproxy_check(config: &std::path::Path, env: &[(String, String)]) {
    let output = Command::new("haproxy")
        .args(["-c", "-q", "-f"])
        .arg(config)
        .envs(env.iter().cloned())
        .output()
        .expect("haproxy is not installed; run ./scripts/setup");
    assert!(
        output.status.success(),
        "haproxy -c rejects {}: {}",
        config.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn haproxy_accepts_the_shipped_configs() {
    let dir = TempDir::new("shipped-haproxy");
    let local = dir.path().join("local.cfg");
    let run_dir = dir.path().to_string_lossy();
    std::fs::write(
        &local,
        read_shipped(LOCAL_CONFIG).replace("@RUN@", &run_dir),
    )
    .expect("write the local config");
    haproxy_check(&local, &[]);

    let env: Vec<(String, String)> = read_shipped(KUBERNETES_ENV)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    haproxy_check(&workspace_root().join(KUBERNETES_CONFIG), &env);
}

/// How a [`FailingServer`] fails every request.
#[derive(Clone, Copy)]
enum Failure {
    /// `502 Bad Gateway`, as a provider's own proxy answers when its node is gone.
    BadGateway,
    /// Reads the request and never answers (until the peer closes).
    Hang,
}

/// A provider that fails every request the same way, counting the requests it read.
struct FailingServer {
    port: u16,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FailingServer {
    async fn start(failure: Failure) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", free_port()))
            .await
            .expect("bind a free port");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(fail(stream, failure, counted.clone()));
            }
        });
        Self {
            port,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FailingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fail(mut stream: TcpStream, failure: Failure, requests: Arc<AtomicUsize>) {
    if !read_request(&mut stream).await {
        return;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    match failure {
        Failure::BadGateway => {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
        Failure::Hang => {
            let mut rest = [0u8; 1024];
            while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
        }
    }
}

/// Reads one HTTP request with its `Content-Length` body; false when the peer closed first.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return true;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
}

fn address(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// HAProxy with the shipped defaults: a frontend on a free port and [`BACKEND`] over `servers`,
/// without health checks, so that only retries stand between a failing server and the client.
async fn start_haproxy(servers: &[(&str, String)]) -> (HaproxyProcess, u16) {
    let port = free_port();
    let sections =
        format!("frontend clients\n  bind 127.0.0.1:{port}\n  default_backend {BACKEND}\n")
            + &backend(BACKEND, "roundrobin", servers);
    (HaproxyProcess::start_shipped(&sections).await, port)
}

/// POSTs `body` to the frontend: the HTTP status and the body.
async fn post(client: &reqwest::Client, port: u16, body: &str) -> (u16, String) {
    let response = client
        .post(format!("http://127.0.0.1:{port}/"))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("HAProxy answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn chain_id_request(id: usize) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "eth_chainId", "params": []})
}

/// Asserts a 200 whose JSON-RPC result is `expected`.
fn assert_answered(status: u16, body: &str, expected: &Value) {
    assert_eq!(status, 200, "client got {status}: {body}");
    let reply: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    assert_eq!(&reply["result"], expected, "reply: {body}");
}

/// A counter of `show stat` for `server`, 0 when absent.
fn counter(stats: &[HashMap<String, String>], server: &str, field: &str) -> usize {
    stats
        .iter()
        .find(|row| row.get("svname").map(String::as_str) == Some(server))
        .and_then(|row| row.get(field)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn requests_a_provider_fails_are_answered_by_another() {
    const REQUESTS: usize = 30;
    let anvil = Anvil::start(CHAIN_ID).await;
    let bad_gateway = FailingServer::start(Failure::BadGateway).await;
    // Nothing listens there: connections are refused.
    let refused = free_port();
    let (haproxy, port) = start_haproxy(&[
        ("anvil", address(anvil.port)),
        ("bad-gateway", address(bad_gateway.port)),
        ("refused", address(refused)),
    ])
    .await;
    let expected = anvil.rpc("eth_chainId", json!([])).await;

    let client = reqwest::Client::new();
    for id in 0..REQUESTS {
        let (status, body) = post(&client, port, &chain_id_request(id).to_string()).await;
        assert_answered(status, &body, &expected);
    }

    let stats = haproxy.server_stats(BACKEND).await;
    // Round robin sends most requests to a failing server first; each such attempt was
    // redispatched (`wredis`) to another server, and anvil answered every request once.
    assert!(
        bad_gateway.requests() > 0,
        "no request reached the 502 server"
    );
    assert_eq!(
        counter(&stats, "bad-gateway", "wredis"),
        bad_gateway.requests()
    );
    assert!(counter(&stats, "bad-gateway", "wretr") > 0);
    assert!(counter(&stats, "refused", "lbtot") > 0);
    assert_eq!(
        counter(&stats, "refused", "wredis"),
        counter(&stats, "refused", "lbtot")
    );
    assert_eq!(counter(&stats, "anvil", "hrsp_2xx"), REQUESTS);
    assert_eq!(counter(&stats, "anvil", "wretr"), 0);
    assert_eq!(counter(&stats, "anvil", "wredis"), 0);
}

/// `timeout server` in [`SHIPPED_DEFAULTS`].
fn shipped_server_timeout() -> Duration {
    SHIPPED_DEFAULTS
        .lines()
        .find_map(|l| l.trim().strip_prefix("timeout server "))
        .and_then(|v| humantime::parse_duration(v).ok())
        .expect("SHIPPED_DEFAULTS sets `timeout server`")
}

#[tokio::test]
async fn a_hung_provider_is_retried_after_the_server_timeout() {
    let anvil = Anvil::start(CHAIN_ID).await;
    let hung = FailingServer::start(Failure::Hang).await;
    let (haproxy, port) =
        start_haproxy(&[("anvil", address(anvil.port)), ("hung", address(hung.port))]).await;
    let expected = anvil.rpc("eth_chainId", json!([])).await;

    // Round robin: of two requests in a row, at least one goes to the hung server first.
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for id in 0..2 {
        let start = Instant::now();
        let (status, body) = post(&client, port, &chain_id_request(id).to_string()).await;
        slowest = slowest.max(start.elapsed());
        assert_answered(status, &body, &expected);
    }

    assert!(hung.requests() > 0, "no request reached the hung server");
    let stats = haproxy.server_stats(BACKEND).await;
    assert_eq!(counter(&stats, "hung", "wredis"), hung.requests());
    // The retry came after the server timeout, not before.
    assert!(
        slowest >= shipped_server_timeout(),
        "a request that met the hung server took only {slowest:?}"
    );
}

#[tokio::test]
async fn a_request_larger_than_the_buffer_is_not_retried() {
    let anvil = Anvil::start(CHAIN_ID).await;
    let bad_gateway = FailingServer::start(Failure::BadGateway).await;
    let (_haproxy, port) = start_haproxy(&[
        ("anvil", address(anvil.port)),
        ("bad-gateway", address(bad_gateway.port)),
    ])
    .await;
    let client = reqwest::Client::new();
    let small = chain_id_request(0).to_string();
    // A batch of 400 calls, about 28 KB: over the default 16 KiB `tune.bufsize`.
    let batch = Value::Array((0..400).map(chain_id_request).collect()).to_string();
    assert!(batch.len() > 16 << 10);

    for _ in 0..2 {
        assert_eq!(post(&client, port, &small).await.0, 200);
    }
    // Two in a row go to different servers: the one sent to the 502 server gets its 502.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(post(&client, port, &batch).await.0);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 502]);
}
