//! Providers whose words cannot be trusted, with rounds driven directly: one that echoes its
//! secrets (the key in its path and query, its user and password, its headers) with newlines and
//! terminal escapes in errors and results; one that claims a block ahead of what the chain can
//! have made; one whose block timestamps are in the future.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use common::process::{log_subscriber, LogFormat};
use exporter::routes::route;
use exporter::Exporter;
use serde_json::{json, Value};
use support::{
    block, errors, exporter, exporter_with_headers, listen, read_request, reply, round, unix_now,
    value,
};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const PATH_KEY: &str = "PATHKEY7c1e";
const QUERY_KEY: &str = "QUERYKEY93ab";
const PASSWORD: &str = "PASSWORDsecret9";
/// base64 of `user:PASSWORDsecret9`, the Basic credential reqwest makes of the URL's user info.
const USERINFO_BASIC: &str = "dXNlcjpQQVNTV09SRHNlY3JldDk=";
const HEADER_KEY: &str = "HEADERKEY55d0";
const HEADER_PASSWORD: &str = "BASICpw5secret";
/// base64 of `u2:BASICpw5secret`, sent as an `Authorization: Basic` header from the config.
const HEADER_BASIC: &str = "dTI6QkFTSUNwdzVzZWNyZXQ=";

/// Every secret, and the unpadded Basic credentials (what a provider may quote of them).
const SECRETS: [&str; 8] = [
    PATH_KEY,
    QUERY_KEY,
    PASSWORD,
    USERINFO_BASIC,
    "dXNlcjpQQVNTV09SRHNlY3JldDk",
    HEADER_KEY,
    HEADER_PASSWORD,
    HEADER_BASIC,
];

/// A JSON-RPC server whose answers follow the first path segment:
/// - `echo-error`: every call fails with an error quoting the request path, its `Authorization`
///   and `X-Api-Key` headers, a newline with a forged log line, and a terminal escape;
/// - `echo-result`: a valid chain id, and the same text as the block;
/// - `honest`: the head with the time now; `future`: the same, ten minutes ahead;
/// - `liar`: the head plus [`Fake::lie`] (`u64::MAX` itself if the lie is `u64::MAX`).
struct Fake {
    port: u16,
    head: Arc<AtomicU64>,
    lie: Arc<AtomicU64>,
    /// `Authorization` headers received.
    authorizations: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Fake {
    async fn start() -> Self {
        let head = Arc::new(AtomicU64::new(1000));
        let lie = Arc::new(AtomicU64::new(0));
        let authorizations: Arc<Mutex<Vec<String>>> = Arc::default();
        let (served_head, served_lie, seen) = (head.clone(), lie.clone(), authorizations.clone());
        let (port, task) = listen(move |stream| {
            serve(
                stream,
                served_head.clone(),
                served_lie.clone(),
                seen.clone(),
            )
        })
        .await;
        Self {
            port,
            head,
            lie,
            authorizations,
            task,
        }
    }

    /// A URL of `mode` carrying the path key, the query key and user info.
    fn secret_url(&self, mode: &str) -> String {
        format!(
            "http://user:{PASSWORD}@127.0.0.1:{}/{mode}/v2/{PATH_KEY}?key={QUERY_KEY}",
            self.port
        )
    }

    fn url(&self, mode: &str, name: &str) -> String {
        format!("http://127.0.0.1:{}/{mode}/{name}", self.port)
    }

    fn authorizations(&self) -> Vec<String> {
        self.authorizations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    head: Arc<AtomicU64>,
    lie: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or(String::new(), |(_, v)| v.clone())
    };
    let authorization = header("authorization");
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(authorization.clone());
    let echo = format!(
        "invalid API key in {} (authorization {authorization}, x-api-key {})\nFORGED log \
         line\x1b[31m",
        request.path,
        header("x-api-key")
    );
    let mode = request.path.split('/').nth(1).unwrap_or("");
    let asks_head = request.body["method"] == "eth_getBlockByNumber";
    let now = unix_now();
    let head = head.load(Ordering::SeqCst);
    let result: Value = match (mode, asks_head) {
        ("echo-error", _) => {
            let error = json!({"code": -32001, "message": echo});
            return reply(&mut stream, Value::Null, Some(error)).await;
        }
        (_, false) => json!("0x1"),
        ("echo-result", true) => json!(echo),
        ("future", true) => block(head, now + 600),
        ("liar", true) => {
            let lie = lie.load(Ordering::SeqCst);
            let claim = if lie == u64::MAX { lie } else { head + lie };
            block(claim, now)
        }
        _ => block(head, now),
    };
    reply(&mut stream, result, None).await;
}

/// Log output in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures what this thread logs, at every level, in `format`, through the binaries' own
    /// logger, until the guard is dropped. (Tests run on one thread: `#[tokio::test]`.)
    fn capture(format: LogFormat) -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = log_subscriber(format, "trace", false, move || writer.clone());
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn status_page(exporter: &Exporter) -> String {
    route(exporter, "/").body
}

#[tokio::test]
async fn a_provider_echoing_its_secrets_leaks_them_nowhere() {
    let fake = Fake::start().await;
    let api_key = format!(r#"{{ X-Api-Key = "Bearer {HEADER_KEY}" }}"#);
    let basic = format!(r#"{{ Authorization = "Basic {HEADER_BASIC}" }}"#);
    for format in [LogFormat::Text, LogFormat::Json] {
        let (logs, _guard) = Logs::capture(format);
        let exporter = exporter_with_headers(
            "2s",
            &[
                ("echoerror", fake.secret_url("echo-error"), &api_key),
                ("echoresult", fake.secret_url("echo-result"), &api_key),
                ("echobasic", fake.url("echo-error", PATH_KEY), &basic),
            ],
        );
        let mut metrics = String::new();
        for id in 1..=2 {
            metrics = round(&exporter, id).await;
        }
        let page = status_page(&exporter);
        let logs = logs.text();
        for (provider, reason) in [
            ("echoerror", "rpc_error"),
            ("echoresult", "invalid_response"),
            ("echobasic", "rpc_error"),
        ] {
            assert_eq!(errors(&metrics, provider, reason), Some(2.0), "{provider}");
        }
        // The echoes did arrive, redacted: the test is not passing on silence.
        assert_eq!(logs.matches("provider is down").count(), 3, "{logs}");
        let echoed = "invalid API key in /[redacted]/v2/[redacted]?key=[redacted] \
                      (authorization Basic [redacted], x-api-key [redacted])";
        assert_eq!(
            logs.matches(echoed).count(),
            2,
            "in an error and a result: {logs}"
        );
        assert!(logs.contains("unexpected result (invalid type: string"));
        assert!(logs.contains("FORGED log line"), "escaped, not dropped");
        assert!(page.contains("authorization Basic [redacted]"), "{page}");
        assert!(page.contains("x-api-key [redacted])"), "{page}");
        for secret in SECRETS {
            for (what, output) in [("logs", &logs), ("/", &page), ("/metrics", &metrics)] {
                assert!(
                    !output.contains(secret),
                    "{secret} leaked into {what} ({format:?})"
                );
            }
        }
        for (what, output) in [("logs", &logs), ("/", &page)] {
            assert!(!output.contains('\x1b'), "an escape reached {what}");
        }
        for line in logs.lines() {
            assert!(!line.starts_with("FORGED"), "a forged log line: {line}");
            if format == LogFormat::Json {
                let parsed: Value = serde_json::from_str(line).expect("each line is JSON");
                assert!(parsed.is_object(), "{line}");
            }
        }
    }
    let sent = fake.authorizations();
    for credential in [USERINFO_BASIC, HEADER_BASIC] {
        let header = format!("Basic {credential}");
        assert!(sent.contains(&header), "{header} not among {sent:?}");
    }
}

/// Runs rounds 1 to 6 with an honest provider and a liar that starts lying by `lie` in round
/// `lying_from`, the head moving a block a round, and checks each round that the head is the
/// honest one's and the honest one does not lag. Returns the metrics after the last round.
async fn against_a_liar(lie: u64, lying_from: u64) -> String {
    let fake = Fake::start().await;
    let exporter = exporter(
        "2s",
        &[
            ("honest", fake.url("honest", "a")),
            ("liar", fake.url("liar", "b")),
        ],
    );
    let mut text = String::new();
    for id in 1..=6 {
        if id == lying_from {
            fake.lie.store(lie, Ordering::SeqCst);
        }
        let head = fake.head.fetch_add(1, Ordering::SeqCst) + 1;
        text = round(&exporter, id).await;
        let chain_head = testkit::metrics_text::sample(
            &text,
            "ethrpc_chain_head_block_number",
            &[("chain", "dev")],
        );
        assert_eq!(
            chain_head,
            Some(head as f64),
            "round {id}: the head is the truth"
        );
        assert_eq!(
            value(&text, "ethrpc_block_lag", "honest"),
            Some(0.0),
            "round {id}"
        );
        assert_eq!(value(&text, "ethrpc_up", "honest"), Some(1.0), "round {id}");
        if id >= lying_from && (lying_from > 1 || lie == u64::MAX) {
            assert_eq!(value(&text, "ethrpc_up", "liar"), Some(0.0), "round {id}");
        }
    }
    text
}

#[tokio::test]
async fn a_provider_jumping_ahead_of_the_agreed_head_is_flagged_and_never_the_head() {
    for lie in [50, u64::MAX] {
        let text = against_a_liar(lie, 3).await;
        assert_eq!(
            errors(&text, "liar", "implausible_block"),
            Some(4.0),
            "{lie}"
        );
        assert_eq!(errors(&text, "honest", "implausible_block"), Some(0.0));
    }
}

#[tokio::test]
async fn a_provider_claiming_u64_max_from_the_first_round_is_flagged_at_once() {
    let text = against_a_liar(u64::MAX, 1).await;
    assert_eq!(errors(&text, "liar", "implausible_block"), Some(6.0));
}

/// Two providers 50 blocks apart with equally fresh timestamps from the first answer: nothing
/// tells which is wrong, so neither is flagged, the lower is the head and neither lags.
#[tokio::test]
async fn two_providers_disagreeing_from_the_first_round_drain_neither() {
    let text = against_a_liar(50, 1).await;
    assert_eq!(errors(&text, "liar", "implausible_block"), Some(0.0));
    assert_eq!(value(&text, "ethrpc_block_lag", "liar"), Some(0.0));
}

#[tokio::test]
async fn a_block_from_the_future_gets_a_negative_age_and_one_warning() {
    let fake = Fake::start().await;
    let (logs, _guard) = Logs::capture(LogFormat::Text);
    let exporter = exporter(
        "2s",
        &[
            ("honest", fake.url("honest", "a")),
            ("future", fake.url("future", "b")),
        ],
    );
    for id in 1..=3 {
        let text = round(&exporter, id).await;
        let age = value(&text, "ethrpc_block_age_seconds", "future").expect("an age");
        assert!((-601.0..=-598.0).contains(&age), "round {id}: age {age}");
        assert_eq!(value(&text, "ethrpc_up", "future"), Some(1.0));
        assert_eq!(value(&text, "ethrpc_block_lag", "honest"), Some(0.0));
    }
    let page = status_page(&exporter);
    assert!(
        page.contains("<td>-600 s</td>") || page.contains("<td>-599 s</td>"),
        "{page}"
    );
    let logs = logs.text();
    assert_eq!(
        logs.matches("block timestamp is ahead of this host's clock")
            .count(),
        1,
        "{logs}"
    );
    assert!(logs.contains("provider=\"future\"") || logs.contains("provider=future"));
}
