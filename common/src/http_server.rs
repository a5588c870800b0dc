//! A minimal HTTP/1 server for `/metrics`, `/healthz`, `/readyz` and `/`: GET by path only.
//!
//! Hardened so a handful of hostile sockets cannot lock the scrape endpoint:
//! - a connection waiting for a request that sends nothing for [`IDLE_TIMEOUT`] is closed, and
//!   one whose answer makes no progress for [`WRITE_TIMEOUT`] (a client that does not read) is
//!   reset, which also frees the kernel's send buffer at once;
//! - at most [`MAX_CONNECTIONS`] are open; when all are taken, a new connection evicts (resets)
//!   the least recently active one instead of being refused, so idle or non-reading sockets
//!   cannot hold the slots while a scraper, whose connection is always the freshest, gets in;
//! - request headers must arrive within [`HEADER_TIMEOUT`] (a slow trickle is cut off).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Open connections at most; a new one evicts the least recently active.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may wait for (the next) request without receiving a byte.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may make no progress because the client does not read it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request's headers may take to arrive in full.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub use hyper::StatusCode;

/// What a route answers.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    /// A plain-text body.
    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// A Prometheus text exposition, as both binaries serve on `/metrics`.
    pub fn metrics(body: String) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body,
        }
    }
}

/// Serves `route(path)` for every GET until `shutdown` completes.
pub async fn serve<R>(listener: TcpListener, route: R, shutdown: impl Future<Output = ()>)
where
    R: Fn(&str) -> Reply + Send + Sync + 'static,
{
    let route = Arc::new(route);
    let open = Arc::new(OpenConnections::default());
    let _close = CloseOnStop(open.clone());
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (id, activity) = open.admit();
        let epoch = open.epoch;
        let open = open.clone();
        let route = route.clone();
        tokio::spawn(async move {
            let _registered = Registered { open, id };
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let route = route.clone();
                async move { Ok::<_, Infallible>(respond(&req, route.as_ref())) }
            });
            let io = Watched::new(stream, activity.clone(), epoch);
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(io), service);
            tokio::select! {
                _ = connection => {}
                _ = activity.evicted.notified() => {}
            }
        });
    }
}

fn respond<B>(req: &Request<B>, route: &dyn Fn(&str) -> Reply) -> Response<Full<Bytes>> {
    let reply = if req.method() == Method::GET || req.method() == Method::HEAD {
        route(req.uri().path())
    } else {
        Reply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n")
    };
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = reply.status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(reply.content_type),
    );
    response
}

/// One connection's liveness, shared between its task and the accept loop.
struct Activity {
    /// When a byte last moved either way, in milliseconds since [`OpenConnections::epoch`].
    last_ms: AtomicU64,
    /// Set when the connection is dropped for misbehaving: it is then reset, not closed.
    aborted: AtomicBool,
    /// Wakes the connection's task to drop it.
    evicted: Notify,
}

/// The connections being served, so the accept loop can evict the least recently active.
struct OpenConnections {
    epoch: Instant,
    state: Mutex<(u64, HashMap<u64, Arc<Activity>>)>,
}

impl Default for OpenConnections {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            state: Mutex::new((0, HashMap::new())),
        }
    }
}

impl OpenConnections {
    /// Registers a new connection, first evicting the least recently active one if all
    /// [`MAX_CONNECTIONS`] are taken.
    fn admit(&self) -> (u64, Arc<Activity>) {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (next_id, open) = &mut *guard;
        if open.len() >= MAX_CONNECTIONS {
            let stalest = open
                .iter()
                .min_by_key(|(_, a)| a.last_ms.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            if let Some(victim) = stalest.and_then(|id| open.remove(&id)) {
                victim.aborted.store(true, Ordering::Relaxed);
                victim.evicted.notify_one();
            }
        }
        let id = *next_id;
        *next_id += 1;
        let activity = Arc::new(Activity {
            last_ms: AtomicU64::new(millis_since(self.epoch)),
            aborted: AtomicBool::new(false),
            evicted: Notify::new(),
        });
        open.insert(id, activity.clone());
        (id, activity)
    }

    fn remove(&self, id: u64) {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        guard.1.remove(&id);
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Closes the connections still open when the server stops (returns, or is dropped by an
/// aborted task): a kept-alive connection, a scraper's every second, is never idle, and would
/// otherwise go on answering for a server that has stopped (a restarted actuator on the same
/// address would never be scraped).
struct CloseOnStop(Arc<OpenConnections>);

impl Drop for CloseOnStop {
    fn drop(&mut self) {
        let guard = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        for activity in guard.1.values() {
            activity.evicted.notify_one();
        }
    }
}

/// Unregisters a connection when its task ends, however it ends.
struct Registered {
    open: Arc<OpenConnections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.remove(self.id);
    }
}

/// The TCP stream with the idle and write timeouts, recording activity for eviction.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// The server's [`OpenConnections::epoch`].
    epoch: Instant,
    /// Armed while a read waits; disarmed by any progress.
    read_stall: Option<Pin<Box<Sleep>>>,
    /// Armed while a write waits; disarmed by write progress only, so a client that keeps
    /// sending but never reads is still cut off.
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl Watched {
    fn new(stream: TcpStream, activity: Arc<Activity>, epoch: Instant) -> Self {
        Self {
            stream,
            activity,
            epoch,
            read_stall: None,
            write_stall: None,
        }
    }

    fn record_progress(&mut self, wrote: bool) {
        let now = millis_since(self.epoch);
        self.activity.last_ms.fetch_max(now, Ordering::Relaxed);
        self.read_stall = None;
        if wrote {
            self.write_stall = None;
        }
    }

    /// Records a write's progress, or fails it once it has been stalled for [`WRITE_TIMEOUT`].
    fn after_write(
        &mut self,
        polled: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.record_progress(true);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if stalled_too_long(&mut self.write_stall, WRITE_TIMEOUT, cx) => {
                self.activity.aborted.store(true, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client does not read its answer",
                )))
            }
            other => other,
        }
    }
}

/// Polls a stall timer, arming it first; `Ready` once the stall has lasted `limit`.
fn stalled_too_long(
    timer: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
) -> bool {
    timer
        .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)))
        .as_mut()
        .poll(cx)
        .is_ready()
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.record_progress(false);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if stalled_too_long(&mut self.read_stall, IDLE_TIMEOUT, cx) => {
                if self.write_stall.is_some() {
                    // Also not reading its answer: reset, as the write timeout would.
                    self.activity.aborted.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the idle timeout",
                )))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.after_write(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.after_write(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Drop for Watched {
    /// A misbehaving client is reset: closing normally would keep its unread answer in the
    /// kernel's send buffer, retried for minutes.
    fn drop(&mut self) {
        if self.activity.aborted.load(Ordering::Relaxed) {
            let _ = self.stream.set_zero_linger();
        }
    }
}
