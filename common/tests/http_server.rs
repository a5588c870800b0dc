//! The `/metrics` server against hostile clients, on a real listener: sockets that send requests
//! and never read the answers, and sockets that connect and say nothing, must neither lock out a
//! scraper nor stay open.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http_server::{serve, Reply, StatusCode, MAX_CONNECTIONS};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// An answer far larger than the kernel buffers between a client and the server.
const BIG: usize = 512 << 10;
/// Pipelined requests per non-reading socket: 32 MiB of answers it never reads.
const PIPELINED: usize = 64;

/// Starts the server on a free port of 127.0.0.1; it stops when the returned sender drops.
async fn start() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let route = |path: &str| match path {
        "/big" => Reply::text(StatusCode::OK, "x".repeat(BIG)),
        "/metrics" => Reply::text(StatusCode::OK, "up 1\n"),
        _ => Reply::text(StatusCode::NOT_FOUND, "not found\n"),
    };
    tokio::spawn(serve(listener, route, async {
        let _ = stopped.await;
    }));
    (address, stop)
}

/// Polls `check` every 100 ms until it holds, panicking after `limit` (a generous bound, not a
/// performance assertion).
async fn poll_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scrape_succeeds(address: SocketAddr) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    match client.get(format!("http://{address}/metrics")).send().await {
        Ok(response) => {
            response.status() == 200 && response.text().await.is_ok_and(|t| t == "up 1\n")
        }
        Err(_) => false,
    }
}

/// A hostile socket, and whether the server has been seen to close it.
struct Hostile {
    stream: TcpStream,
    /// Nothing was sent, so a read cannot consume an answer.
    idle: bool,
    closed: bool,
}

impl Hostile {
    async fn non_reader(address: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let requests = "GET /big HTTP/1.1\r\nhost: x\r\n\r\n".repeat(PIPELINED);
        stream.write_all(requests.as_bytes()).await.unwrap();
        Self {
            stream,
            idle: false,
            closed: false,
        }
    }

    async fn idle(address: SocketAddr) -> Self {
        let stream = TcpStream::connect(address).await.unwrap();
        Self {
            stream,
            idle: true,
            closed: false,
        }
    }

    /// Whether the server has closed the socket, learnt without reading any answer bytes: a
    /// reset shows as a socket error (reported once, hence remembered); an idle socket, with
    /// nothing to read, sees end-of-file.
    fn closed_by_server(&mut self) -> bool {
        self.closed = self.closed
            || matches!(self.stream.take_error(), Ok(Some(_)) | Err(_))
            || (self.idle && {
                let mut byte = [0u8; 1];
                match self.stream.try_read(&mut byte) {
                    Ok(0) => true,
                    Ok(_) => panic!("an idle socket was sent data"),
                    Err(e) => e.kind() != ErrorKind::WouldBlock,
                }
            });
        self.closed
    }
}

/// Waits until the server has closed every hostile socket, then scrapes once more.
async fn all_closed_then_a_scrape(address: SocketAddr, hostile: &mut [Hostile]) {
    poll_until(
        "the server to close every hostile socket",
        Duration::from_secs(60),
        || std::future::ready(hostile.iter_mut().all(Hostile::closed_by_server)),
    )
    .await;
    assert!(scrape_succeeds(address).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sockets_neither_lock_out_a_scrape_nor_stay_open() {
    let (address, _stop) = start().await;
    assert!(scrape_succeeds(address).await);
    let mut hostile = Vec::new();
    for _ in 0..100 {
        hostile.push(Hostile::non_reader(address).await);
    }
    for _ in 0..100 {
        hostile.push(Hostile::idle(address).await);
    }
    assert!(hostile.len() > MAX_CONNECTIONS * 3);

    poll_until("a scrape to succeed", Duration::from_secs(30), || {
        scrape_succeeds(address)
    })
    .await;
    all_closed_then_a_scrape(address, &mut hostile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_non_reading_sockets_time_out_below_the_connection_limit() {
    let (address, _stop) = start().await;
    let mut hostile = Vec::new();
    for _ in 0..5 {
        hostile.push(Hostile::non_reader(address).await);
        hostile.push(Hostile::idle(address).await);
    }
    assert!(
        hostile.len() < MAX_CONNECTIONS,
        "no eviction here: only the timeouts act"
    );
    all_closed_then_a_scrape(address, &mut hostile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_gets_the_whole_answer_on_a_kept_alive_connection() {
    let (address, _stop) = start().await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let body = client
            .get(format!("http://{address}/big"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body.len(), BIG);
    }
}

/// A kept-alive connection (a scraper's) is closed when the server stops, not served on.
#[tokio::test]
async fn a_stopped_server_closes_its_kept_alive_connections() {
    use tokio::io::AsyncReadExt;
    let (address, stop) = start().await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).ends_with("up 1\n"));
    drop(stop);
    // Closed: the read ends (EOF or reset) well before the idle timeout would close it.
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "still open after the stop: {read:?}"
    );
}
