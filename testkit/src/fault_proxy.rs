//! A TCP proxy in front of a real node that misbehaves on command: it delays every chunk of the
//! node's answers, answers HTTP 500 with a JSON-RPC error, or refuses connections. Tests drive it
//! directly; the local demo and the benchmark drive the `ethrpc-faultproxy` binary over HTTP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the proxy treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Hold every chunk of the answer this long.
    Delay(Duration),
    /// Answer every request with HTTP 500 and a JSON-RPC error body.
    Error,
    /// Close every connection at once.
    Refuse,
}

impl Fault {
    /// Parses `pass`, `error`, `refuse` or `delay/MILLISECONDS`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pass" => Some(Fault::Pass),
            "error" => Some(Fault::Error),
            "refuse" => Some(Fault::Refuse),
            other => {
                let ms = other.strip_prefix("delay/")?.parse().ok()?;
                Some(Fault::Delay(Duration::from_millis(ms)))
            }
        }
    }
}

const ERROR_BODY: &str =
    r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"injected fault"}}"#;

/// A running proxy.
pub struct FaultProxy {
    pub port: u16,
    fault: Arc<Mutex<Fault>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Forwards a new port on 127.0.0.1 to `upstream` (`host:port`), passing traffic through.
    pub async fn start(upstream: String) -> Self {
        Self::bind("127.0.0.1:0".parse().expect("literal address"), upstream)
            .await
            .expect("bind an ephemeral port")
    }

    /// Forwards `listen` to `upstream`.
    pub async fn bind(listen: SocketAddr, upstream: String) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let port = listener.local_addr()?.port();
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let shared = fault.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let fault = shared.clone();
                tokio::spawn(async move {
                    if current(&fault) == Fault::Refuse {
                        return; // dropping the stream closes it
                    }
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        forward(client, server, fault).await;
                    }
                });
            }
        });
        Ok(Self { port, fault, task })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn current(fault: &Mutex<Fault>) -> Fault {
    *fault.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn forward(client: TcpStream, server: TcpStream, fault: Arc<Mutex<Fault>>) {
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
            match current(&fault) {
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
                    if let Fault::Delay(d) = current(&fault) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        assert_eq!(Fault::parse("pass"), Some(Fault::Pass));
        assert_eq!(
            Fault::parse("delay/250"),
            Some(Fault::Delay(Duration::from_millis(250)))
        );
        assert_eq!(Fault::parse("error"), Some(Fault::Error));
        assert_eq!(Fault::parse("delay/x"), None);
        assert_eq!(Fault::parse("slow"), None);
    }
}
