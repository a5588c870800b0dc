//! A real HAProxy (Debian's `haproxy`) on 127.0.0.1, with an admin and an operator socket in a
//! private temp dir, run in the foreground and killed on drop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::{wait_for, TempDir};

/// The `defaults` lines that decide how clients' requests fare (HTTP mode, timeouts, retries), as
/// both shipped configs carry them: `deploy/local/haproxy.cfg` and
/// `deploy/kubernetes/base/haproxy.cfg` (`actuator/tests/haproxy_retries.rs` keeps the three
/// equal). Tests and benches started with these run what users run; the reasons are in
/// `deploy/README.md`, "Retries".
pub const SHIPPED_DEFAULTS: &str = "  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 10s
  retries 2
  option redispatch 1
  retry-on conn-failure empty-response junk-response response-timeout 500 502 503 504
  option http-buffer-request
";

/// `defaults` for tests of the runtime API alone: HAProxy's built-in retries (connection failures
/// only, same server), long timeouts.
const PLAIN_DEFAULTS: &str =
    "  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n";

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
    /// plain `defaults` (no L7 retries), and waits until the admin socket answers.
    pub async fn start(sections: &str) -> Self {
        Self::start_with_defaults(PLAIN_DEFAULTS, sections).await
    }

    /// The running process's id (its memory is read from `/proc` by the bench).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Like [`start`](Self::start), but with the shipped configs' `defaults`
    /// ([`SHIPPED_DEFAULTS`]): their timeouts and retries apply to `sections`.
    pub async fn start_shipped(sections: &str) -> Self {
        Self::start_with_defaults(SHIPPED_DEFAULTS, sections).await
    }

    async fn start_with_defaults(defaults: &str, sections: &str) -> Self {
        let dir = TempDir::new("haproxy");
        let admin_socket = dir.path().join("admin.sock");
        let operator_socket = dir.path().join("operator.sock");
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  stats socket {} mode 600 level admin\n  stats socket {} mode 600 level operator\n\
                 defaults\n{defaults}\n{sections}",
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

    /// `show stat` for `backend`'s servers: one map per server, field name (`svname`, `wretr`,
    /// `wredis`, …) to value, read by header name with quoted fields kept whole.
    pub async fn server_stats(&self, backend: &str) -> Vec<HashMap<String, String>> {
        let reply = self.admin(&format!("show stat {backend} 4 -1")).await;
        let mut lines = reply.lines();
        let header = lines
            .next()
            .and_then(|l| l.strip_prefix("# "))
            .map(csv_fields)
            .unwrap_or_default();
        lines
            .filter(|l| !l.is_empty())
            .map(|l| header.iter().cloned().zip(csv_fields(l)).collect())
            .collect()
    }

    /// `get weight backend/server`'s current weight.
    pub async fn weight(&self, backend_server: &str) -> Option<u32> {
        let reply =
            admin_command(&self.admin_socket, &format!("get weight {backend_server}")).await?;
        reply.split_whitespace().next()?.parse().ok()
    }

    /// Waits up to `limit` until `backend/server` has `weight`.
    pub async fn wait_weight(&self, backend_server: &str, weight: u32, limit: Duration) {
        wait_for(
            &format!("{backend_server} at weight {weight}"),
            limit,
            || async { (self.weight(backend_server).await == Some(weight)).then_some(()) },
        )
        .await;
    }

    /// HAProxy with backend `rpc` of one server `p1` (at a closed port), set to `weight`: for
    /// watching that the actuator leaves a weight as it is.
    pub async fn one_server_at(weight: u32) -> Self {
        let haproxy = Self::start(&backend(
            "rpc",
            "roundrobin",
            &[("p1", "127.0.0.1:9".into())],
        ))
        .await;
        haproxy.admin(&format!("set weight rpc/p1 {weight}")).await;
        haproxy
    }
}

/// One CSV line's fields: HAProxy quotes a field that holds a comma (a check's `last_chk`).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_keep_their_commas() {
        assert_eq!(
            csv_fields(r#"rpc,p1,3,"Down, for maintenance",,7"#),
            ["rpc", "p1", "3", "Down, for maintenance", "", "7"]
        );
    }
}
