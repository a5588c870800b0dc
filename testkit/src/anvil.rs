//! Real Ethereum nodes: anvil from the npm package `@foundry-rs/anvil-linux-amd64`, installed by
//! `scripts/setup` into `.tools/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::{free_port, wait_for, workspace_root};

/// The anvil binary: `$ETHRPC_ANVIL`, else the one `scripts/setup` installs.
pub fn anvil_binary() -> PathBuf {
    if let Ok(path) = std::env::var("ETHRPC_ANVIL") {
        return path.into();
    }
    let path = workspace_root().join(".tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        path.exists(),
        "anvil is not installed at {}; run ./scripts/setup",
        path.display()
    );
    path
}

/// One anvil node on 127.0.0.1, started with mining off; killed on drop.
pub struct Anvil {
    pub port: u16,
    chain_id: u64,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Anvil {
    /// Starts a node with `chain_id` and waits until it answers.
    pub async fn start(chain_id: u64) -> Self {
        let mut node = Self {
            port: free_port(),
            chain_id,
            child: None,
            http: reqwest::Client::new(),
        };
        node.launch().await;
        node
    }

    async fn launch(&mut self) {
        let child = Command::new(anvil_binary())
            .args(["--port", &self.port.to_string()])
            .args(["--chain-id", &self.chain_id.to_string()])
            .args(["--host", "127.0.0.1", "--no-mining", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start anvil");
        self.child = Some(child);
        let node = &*self;
        wait_for("anvil to answer", Duration::from_secs(30), || async {
            node.try_rpc("eth_chainId", json!([])).await
        })
        .await;
    }

    /// Starts a killed node again on the same port: a fresh chain, mining off.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }

    /// Starts `n` nodes and switches 1-second mining on in all of them together, so their heads
    /// stay within a block of each other.
    pub async fn start_mining_together(n: usize, chain_id: u64) -> Vec<Self> {
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(Self::start(chain_id).await);
        }
        // Each call takes about a millisecond, so the nodes start mining within milliseconds.
        for node in &nodes {
            node.set_interval_mining(1).await;
        }
        nodes
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn try_rpc(&self, method: &str, params: Value) -> Option<Value> {
        crate::json_rpc::call(&self.http, &self.url(), method, params).await
    }

    /// A JSON-RPC call that must succeed.
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        self.try_rpc(method, params)
            .await
            .unwrap_or_else(|| panic!("anvil {method} failed"))
    }

    /// `evm_setIntervalMining`: a block every `seconds`; 0 stalls the head.
    pub async fn set_interval_mining(&self, seconds: u64) {
        self.rpc("evm_setIntervalMining", json!([seconds])).await;
    }

    /// `anvil_mine`: `blocks` blocks now.
    pub async fn mine(&self, blocks: u64) {
        self.rpc("anvil_mine", json!([format!("{blocks:#x}")]))
            .await;
    }

    /// `anvil_setChainId`.
    pub async fn set_chain_id(&self, id: u64) {
        self.rpc("anvil_setChainId", json!([id])).await;
    }

    pub async fn block_number(&self) -> u64 {
        crate::json_rpc::quantity(&self.rpc("eth_blockNumber", json!([])).await).unwrap_or(0)
    }

    /// Kills the node now (its port then refuses connections).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }
}
