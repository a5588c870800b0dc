//! A real HAProxy (Debian's `haproxy`) on 127.0.0.1, with an admin and an operator socket in a
//! private temp dir, run in the foreground and killed on drop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::{wait_for, TempDir};

/// One HAProxy process and its config.
pub struct HaproxyProcess {
    pub dir: TempDir,
    /// `level admin` socket, mode 600.
    pub admin_socket: PathBuf,
    /// `level operator` socket, for permission tests.
    pub operator_socket: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

/// A `backend` section: `servers` are (name, address) pairs, all at weight 100.
pub fn backend(name: &str, balance: &str, servers: &[(&str, String)]) -> String {
    let mut text = format!("backend {name}\n  balance {balance}\n");
    for (server, address) in servers {
        text.push_str(&format!("  server {server} {address} weight 100\n"));
    }
    text
}

impl HaproxyProcess {
    /// Starts HAProxy with `sections` (frontends, backends) after a generated `global` and
    /// `defaults`, and waits until the admin socket answers.
    pub async fn start(sections: &str) -> Self {
        let dir = TempDir::new("haproxy");
        let admin_socket = dir.path().join("admin.sock");
        let operator_socket = dir.path().join("operator.sock");
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  stats socket {} mode 600 level admin\n  stats socket {} mode 600 level operator\n\
                 defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\n{sections}",
                admin_socket.display(),
                operator_socket.display()
            ),
        )
        .expect("write haproxy.cfg");
        let mut process = Self {
            dir,
            admin_socket,
            operator_socket,
            config,
            child: None,
        };
        process.launch().await;
        process
    }

    async fn launch(&mut self) {
        let _ = std::fs::remove_file(&self.admin_socket);
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy is not installed; run ./scripts/setup");
        self.child = Some(child);
        let socket = self.admin_socket.clone();
        wait_for("the HAProxy admin socket", Duration::from_secs(20), || {
            let socket = socket.clone();
            async move {
                admin_command(&socket, "show info")
                    .await
                    .filter(|r| r.contains("Name:"))
            }
        })
        .await;
    }

    /// Stops HAProxy and starts it again from its config: weights go back to the config's.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        self.launch().await;
    }

    /// Sends one command on the admin socket.
    pub async fn admin(&self, line: &str) -> String {
        admin_command(&self.admin_socket, line)
            .await
            .expect("admin socket answers")
    }

    /// `get weight backend/server`'s current weight.
    pub async fn weight(&self, backend_server: &str) -> Option<u32> {
        let reply =
            admin_command(&self.admin_socket, &format!("get weight {backend_server}")).await?;
        reply.split_whitespace().next()?.parse().ok()
    }
}

async fn admin_command(socket: &std::path::Path, line: &str) -> Option<String> {
    let mut stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .await
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.ok()?;
    Some(reply)
}
