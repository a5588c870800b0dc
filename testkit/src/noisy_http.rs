//! The fault proxy's HTTP mode: reads each HTTP/1.1 request, applies the fault or else the noise,
//! and forwards the JSON-RPC body to the primary node or its replica.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::fault_control::{Control, Fault, ERROR_BODY};
use crate::noise::{Counters, MethodAnswer, Verdict};
use crate::replica::Replica;

/// Larger request bodies are answered 413.
const MAX_BODY: usize = 1 << 20;
/// How long a node may take to answer a forwarded request.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// A load balancer's page for a failed backend, like nginx's.
const BAD_GATEWAY_PAGE: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n\
    <body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n";

/// Methods that only read the chain: the only ones a replica may answer.
const READ_METHODS: &[&str] = &[
    "eth_blockNumber",
    "eth_getBlockByNumber",
    "eth_getBlockByHash",
    "eth_chainId",
    "net_version",
    "eth_call",
    "eth_estimateGas",
    "eth_getBalance",
    "eth_getCode",
    "eth_getStorageAt",
    "eth_getTransactionCount",
    "eth_getTransactionByHash",
    "eth_getTransactionReceipt",
    "eth_getLogs",
    "eth_gasPrice",
    "eth_feeHistory",
    "eth_maxPriorityFeePerGas",
    "eth_syncing",
    "web3_clientVersion",
];

/// Where a proxy in HTTP mode sends requests.
pub(crate) struct Upstreams {
    primary: String,
    replica: Option<Arc<Replica>>,
    client: reqwest::Client,
}

impl Upstreams {
    pub(crate) fn new(
        primary: String,
        replica: Option<Arc<Replica>>,
        client: reqwest::Client,
    ) -> Self {
        Self {
            primary,
            replica,
            client,
        }
    }
}

/// The connection was closed without an answer (a refusing proxy, or a node that did not answer).
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed without an answer")
    }
}

impl std::error::Error for Closed {}

type Answer = Result<Response<Full<Bytes>>, Closed>;

/// Serves one client connection (keep-alive) until it closes or the proxy refuses.
pub(crate) async fn serve(stream: TcpStream, control: Arc<Control>, upstreams: Arc<Upstreams>) {
    let service = service_fn(move |request| answer(control.clone(), upstreams.clone(), request));
    let _ = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn answer(
    control: Arc<Control>,
    upstreams: Arc<Upstreams>,
    request: Request<Incoming>,
) -> Answer {
    Counters::count(&control.counters.requests);
    let (parts, body) = request.into_parts();
    let Ok(body) = Limited::new(body, MAX_BODY).collect().await else {
        return Ok(reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain",
            "request body too large\n".into(),
        ));
    };
    let forward = Forward {
        method: parts.method,
        path: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        content_type: parts.headers.get(CONTENT_TYPE).cloned(),
        body: body.to_bytes(),
    };
    match control.fault() {
        Fault::Refuse => return Err(Closed),
        Fault::Error => return Ok(internal_error()),
        Fault::Delay(hold) => {
            tokio::time::sleep(hold).await;
            return forward.to(&upstreams, &upstreams.primary).await;
        }
        Fault::Pass => {}
    }
    let methods = methods(&forward.body);
    let (verdict, lag) = control.draw(Instant::now(), &methods);
    match verdict {
        Verdict::FlapError => {
            Counters::count(&control.counters.flap_errors);
            Ok(internal_error())
        }
        Verdict::RateLimited => {
            Counters::count(&control.counters.rate_limited);
            Ok(rate_limited(&forward.body))
        }
        Verdict::BadGateway { after } => {
            tokio::time::sleep(after).await;
            Counters::count(&control.counters.errors_502);
            Ok(bad_gateway())
        }
        Verdict::MethodError { after, answer } => {
            tokio::time::sleep(after).await;
            Counters::count(&control.counters.method_errors);
            Ok(match answer {
                MethodAnswer::Status(429) => rate_limited(&forward.body),
                MethodAnswer::Status(status) => StatusCode::from_u16(status)
                    .ok()
                    .filter(|s| *s != StatusCode::BAD_GATEWAY)
                    .map_or_else(bad_gateway, |s| {
                        reply(s, "application/json", ERROR_BODY.into())
                    }),
                MethodAnswer::RpcError { code, message } => reply(
                    StatusCode::OK,
                    "application/json",
                    rpc_error(&forward.body, code, &message),
                ),
                MethodAnswer::Result(result) => reply(
                    StatusCode::OK,
                    "application/json",
                    json!({"jsonrpc": "2.0", "id": request_id(&forward.body), "result": result})
                        .to_string(),
                ),
            })
        }
        Verdict::Forward {
            after,
            hang,
            replica,
        } => {
            if hang {
                Counters::count(&control.counters.hangs);
            }
            tokio::time::sleep(after).await;
            let target = match &upstreams.replica {
                Some(node) if replica && reads_only(&methods) && node.usable(lag).await => {
                    Counters::count(&control.counters.replica);
                    node.addr()
                }
                _ => &upstreams.primary,
            };
            forward.to(&upstreams, target).await
        }
    }
}

/// A client's request, read in full, to pass on.
struct Forward {
    method: hyper::Method,
    path: String,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl Forward {
    /// Sends the request to `node` and answers with its status and body; a node that does not
    /// answer closes the client's connection, as the TCP mode does.
    async fn to(self, upstreams: &Upstreams, node: &str) -> Answer {
        let mut request = upstreams
            .client
            .request(self.method, format!("http://{node}{}", self.path))
            .timeout(UPSTREAM_TIMEOUT)
            .body(self.body);
        if let Some(content_type) = self.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let response = request.send().await.map_err(|_| Closed)?;
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let body = response.bytes().await.map_err(|_| Closed)?;
        let mut answer = Response::new(Full::new(body));
        *answer.status_mut() = status;
        if let Some(content_type) = content_type {
            answer.headers_mut().insert(CONTENT_TYPE, content_type);
        }
        Ok(answer)
    }
}

/// The method of every call in a JSON-RPC request (or batch), `""` for a call without one; none
/// when the body is not JSON.
fn methods(body: &[u8]) -> Vec<String> {
    let method = |call: &Value| {
        call.get("method")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(calls)) => calls.iter().map(method).collect(),
        Ok(call) => vec![method(&call)],
        Err(_) => Vec::new(),
    }
}

/// Whether every call of a request (its [`methods`]) only reads the chain.
fn reads_only(methods: &[String]) -> bool {
    !methods.is_empty() && methods.iter().all(|m| READ_METHODS.contains(&m.as_str()))
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    answer
}

fn bad_gateway() -> Response<Full<Bytes>> {
    reply(
        StatusCode::BAD_GATEWAY,
        "text/html",
        BAD_GATEWAY_PAGE.into(),
    )
}

fn internal_error() -> Response<Full<Bytes>> {
    reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        "application/json",
        ERROR_BODY.into(),
    )
}

/// HTTP 429 with a JSON-RPC error carrying the request's id, as paid providers answer.
fn rate_limited(request: &[u8]) -> Response<Full<Bytes>> {
    reply(
        StatusCode::TOO_MANY_REQUESTS,
        "application/json",
        rpc_error(request, -32005, "rate limit exceeded"),
    )
}

/// A JSON-RPC error answer to `request`, carrying its id.
fn rpc_error(request: &[u8], code: i64, message: &str) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": request_id(request),
        "error": {"code": code, "message": message},
    })
    .to_string()
}

/// The id of a single call (`null` for a batch or garbage).
fn request_id(request: &[u8]) -> Value {
    serde_json::from_slice::<Value>(request)
        .ok()
        .and_then(|call| call.get("id").cloned())
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_may_go_to_the_replica() {
        let reads = |body: &[u8]| reads_only(&methods(body));
        assert!(reads(
            br#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#
        ));
        assert!(reads(
            br#"[{"method":"eth_chainId"},{"method":"eth_call","params":[]}]"#
        ));
        assert!(!reads(br#"{"method":"anvil_mine","params":["0x1"]}"#));
        assert!(!reads(
            br#"{"method":"evm_setIntervalMining","params":[0]}"#
        ));
        assert!(!reads(
            br#"{"method":"eth_sendRawTransaction","params":["0x"]}"#
        ));
        assert!(!reads(
            br#"[{"method":"eth_chainId"},{"method":"evm_mine"}]"#
        ));
        assert!(!reads(br#"[{"method":"eth_chainId"},{"id":2}]"#));
        assert!(!reads(b"[]"));
        assert!(!reads(b"not json"));
    }

    #[test]
    fn methods_name_every_call() {
        assert_eq!(
            methods(br#"[{"method":"eth_chainId"},{"id":2},{"method":7}]"#),
            ["eth_chainId", "", ""]
        );
        assert_eq!(methods(br#"{"method":"eth_call"}"#), ["eth_call"]);
        assert!(methods(b"{").is_empty());
    }
}
