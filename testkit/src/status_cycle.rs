//! An HTTP server that answers each request with the next answer of a fixed cycle (statuses
//! `[429, 400, 200]`: 429, 400, 200, 429, …; or statuses with bodies, such as JSON-RPC errors
//! inside a 200) and counts what it answered: a provider whose answers are known exactly, to
//! check counters kept by HAProxy against.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the server answered so far: the position in the cycle, the count per status and per
/// position in the cycle.
#[derive(Default)]
struct Answered {
    next: usize,
    by_status: BTreeMap<u16, usize>,
    by_position: BTreeMap<usize, usize>,
}

/// The server, on 127.0.0.1; stopped on drop.
pub struct StatusCycle {
    pub port: u16,
    answered: Arc<Mutex<Answered>>,
    task: JoinHandle<()>,
}

impl StatusCycle {
    /// Starts a server answering `statuses` in turn (each a valid status code), with a small
    /// JSON body.
    pub async fn start(statuses: &[u16]) -> Self {
        let answers: Vec<(u16, String)> = statuses
            .iter()
            .map(|s| (*s, format!(r#"{{"jsonrpc":"2.0","id":1,"status":{s}}}"#)))
            .collect();
        Self::start_answers(&answers).await
    }

    /// Starts a server answering `answers` (status and JSON body) in turn.
    pub async fn start_answers(answers: &[(u16, String)]) -> Self {
        let statuses: Arc<Vec<(StatusCode, Bytes)>> = Arc::new(
            answers
                .iter()
                .map(|(s, body)| {
                    let status = StatusCode::from_u16(*s).expect("a valid HTTP status");
                    (status, Bytes::from(body.clone()))
                })
                .collect(),
        );
        assert!(!statuses.is_empty(), "a cycle of at least one answer");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let answered: Arc<Mutex<Answered>> = Arc::default();
        let counted = answered.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (statuses, counted) = (statuses.clone(), counted.clone());
                let service = service_fn(move |_request| {
                    let (status, body) = next(&statuses, &counted);
                    async move { Ok::<_, Infallible>(answer(status, body)) }
                });
                tokio::spawn(
                    http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self {
            port,
            answered,
            task,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Requests answered with `status` so far.
    pub fn answered(&self, status: u16) -> usize {
        let answered = self.answered.lock().unwrap_or_else(PoisonError::into_inner);
        answered.by_status.get(&status).copied().unwrap_or(0)
    }

    /// Requests answered with the answer at `position` of the cycle so far.
    pub fn answered_at(&self, position: usize) -> usize {
        let answered = self.answered.lock().unwrap_or_else(PoisonError::into_inner);
        answered.by_position.get(&position).copied().unwrap_or(0)
    }

    /// Requests answered so far, whatever the status.
    pub fn requests(&self) -> usize {
        let answered = self.answered.lock().unwrap_or_else(PoisonError::into_inner);
        answered.by_status.values().sum()
    }
}

impl Drop for StatusCycle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The next answer, counted.
fn next(answers: &[(StatusCode, Bytes)], answered: &Mutex<Answered>) -> (StatusCode, Bytes) {
    let mut answered = answered.lock().unwrap_or_else(PoisonError::into_inner);
    let position = answered.next % answers.len();
    let (status, body) = answers[position].clone();
    answered.next += 1;
    *answered.by_status.entry(status.as_u16()).or_default() += 1;
    *answered.by_position.entry(position).or_default() += 1;
    (status, body)
}

fn answer(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
