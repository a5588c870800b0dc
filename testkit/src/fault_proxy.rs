//! A proxy in front of a real node that misbehaves on command. In TCP mode it delays every chunk
//! of the node's answers, answers HTTP 500 with a JSON-RPC error, or refuses connections. In HTTP
//! mode it reads each JSON-RPC request and, unless a fault is set, applies a paid provider's
//! [`Noise`] to it (see `testkit/NOISE.md`). Tests drive it directly; the local demo and the
//! benchmark drive the `ethrpc-faultproxy` binary over HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub use crate::fault_control::Fault;
use crate::fault_control::{Control, ERROR_BODY};
pub use crate::noise::{Flap, MethodAnswer, MethodErrors, Noise, NoiseStats, RateLimit};
use crate::noisy_http::{self, Upstreams};
use crate::replica::Replica;

/// A running proxy; its tasks and connections stop when it drops.
pub struct FaultProxy {
    pub port: u16,
    control: Arc<Control>,
    tasks: Vec<JoinHandle<()>>,
}

impl FaultProxy {
    /// TCP mode: forwards a new port on 127.0.0.1 to `upstream` (`host:port`), passing traffic
    /// through.
    pub async fn start(upstream: String) -> Self {
        Self::bind(loopback(), upstream)
            .await
            .expect("bind an ephemeral port")
    }

    /// TCP mode: forwards `listen` to `upstream`.
    pub async fn bind(listen: SocketAddr, upstream: String) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let port = listener.local_addr()?.port();
        let control = Arc::new(Control::new(Noise::none()));
        let shared = control.clone();
        let accept = accept_loop(listener, control.clone(), move |client| {
            let upstream = upstream.clone();
            let control = shared.clone();
            async move {
                if let Ok(server) = TcpStream::connect(&upstream).await {
                    forward(client, server, control).await;
                }
            }
        });
        Ok(Self {
            port,
            control,
            tasks: vec![accept],
        })
    }

    /// HTTP mode on a new port on 127.0.0.1: JSON-RPC aware, `noise` applied to every request;
    /// `replica` (`host:port`) is a second node the proxy keeps behind `upstream`'s head.
    pub async fn start_noisy(upstream: String, replica: Option<String>, noise: Noise) -> Self {
        Self::bind_noisy(loopback(), upstream, replica, noise)
            .await
            .expect("bind an ephemeral port")
    }

    /// HTTP mode on `listen`.
    pub async fn bind_noisy(
        listen: SocketAddr,
        upstream: String,
        replica: Option<String>,
        noise: Noise,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let port = listener.local_addr()?.port();
        let control = Arc::new(Control::new(noise));
        let client = reqwest::Client::new();
        let replica =
            replica.map(|addr| Arc::new(Replica::new(addr, upstream.clone(), client.clone())));
        let mut tasks = Vec::new();
        if let Some(replica) = replica.clone() {
            let control = control.clone();
            tasks.push(tokio::spawn(async move {
                replica.follow(|| control.replica_lag()).await;
            }));
        }
        let upstreams = Arc::new(Upstreams::new(upstream, replica, client));
        let shared = control.clone();
        tasks.push(accept_loop(listener, control.clone(), move |client| {
            noisy_http::serve(client, shared.clone(), upstreams.clone())
        }));
        Ok(Self {
            port,
            control,
            tasks,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets the fault (both modes); in HTTP mode any fault but `Pass` overrides the noise.
    pub fn set_fault(&self, fault: Fault) {
        self.control.set_fault(fault);
    }

    /// Sets the noise (HTTP mode; a TCP-mode proxy ignores it). The token bucket refills and a
    /// flap starts its bad phase now.
    pub fn set_noise(&self, noise: Noise) {
        self.control.state().set(noise, Instant::now());
    }

    /// Sets or clears the 502s to one method (HTTP mode), leaving the other knobs, the token
    /// bucket and a flap's phase as they are.
    pub fn set_method_errors(&self, errors: impl IntoIterator<Item = MethodErrors>) {
        self.control
            .state()
            .set_method_errors(errors.into_iter().collect());
    }

    /// Restarts the noise's random stream from `seed`: sequential requests then draw the same
    /// noise on every run (proxies start from a random seed).
    pub fn seed(&self, seed: u64) {
        self.control.state().seed(seed);
    }

    /// What was injected so far (HTTP mode; all zero in TCP mode).
    pub fn stats(&self) -> NoiseStats {
        self.control.counters.snapshot()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Accepts connections and serves each with `serve`, closing them at once while the fault is
/// `Refuse`. Aborting the returned task drops the connections too.
fn accept_loop<S, F>(listener: TcpListener, control: Arc<Control>, serve: S) -> JoinHandle<()>
where
    S: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            while connections.try_join_next().is_some() {}
            if control.fault() == Fault::Refuse {
                continue; // dropping the stream closes it
            }
            connections.spawn(serve(client));
        }
    })
}

async fn forward(client: TcpStream, server: TcpStream, control: Arc<Control>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let requests = async {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            match control.fault() {
                Fault::Error | Fault::Refuse => {
                    let reply = format!(
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{ERROR_BODY}",
                        ERROR_BODY.len()
                    );
                    let _ = reply_tx.send(reply.into_bytes()).await;
                    break;
                }
                Fault::Pass | Fault::Delay(_) => {
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        drop(reply_tx);
    };
    let answers = async {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            tokio::select! {
                injected = reply_rx.recv() => {
                    if let Some(reply) = injected {
                        let _ = client_write.write_all(&reply).await;
                    }
                    break;
                }
                read = server_read.read(&mut buf) => {
                    let n = match read {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Fault::Delay(d) = control.fault() {
                        tokio::time::sleep(d).await;
                    }
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests, answers);
}
