//! A second node standing in for the other nodes of a provider's fleet: kept a few blocks behind
//! the primary's head by mining it forward, so a share of reads can be answered from a node that
//! is behind, the way a provider's load balancer does.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;

use crate::json_rpc;

/// How often the follower reads both heads.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// The replica and the primary head it follows.
pub(crate) struct Replica {
    addr: String,
    primary: String,
    client: reqwest::Client,
    /// The primary's head at the last read; `None` while the primary does not answer.
    primary_head: Mutex<Option<u64>>,
}

impl Replica {
    pub(crate) fn new(addr: String, primary: String, client: reqwest::Client) -> Self {
        Self {
            addr,
            primary,
            client,
            primary_head: Mutex::new(None),
        }
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Forever: every 200 ms, mines the replica up to the primary's head minus `lag()` blocks.
    /// Mining only goes forward, so proxies sharing one replica each push it to their own target.
    pub(crate) async fn follow(&self, lag: impl Fn() -> u64) {
        loop {
            let head = block_number(&self.client, &self.primary).await;
            *self
                .primary_head
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = head;
            if let (Some(head), Some(own)) = (head, block_number(&self.client, &self.addr).await) {
                let target = head.saturating_sub(lag());
                if own < target {
                    let blocks = format!("{:#x}", target - own);
                    // A failed mine is retried on the next tick.
                    let url = format!("http://{}", self.addr);
                    let _ = json_rpc::call(&self.client, &url, "anvil_mine", json!([blocks])).await;
                }
            }
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    }

    /// Whether a read may go to the replica now: its head (read now) is behind the primary's last
    /// known head by 1 to `lag + 1` blocks. Never when it is level or ahead (a stalled primary
    /// must not look fresher through its replica, and another proxy may have mined a shared
    /// replica past this one's head), nor while it has not caught up yet.
    pub(crate) async fn usable(&self, lag: u64) -> bool {
        let primary = *self
            .primary_head
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (Some(primary), Some(own)) = (primary, block_number(&self.client, &self.addr).await)
        else {
            return false;
        };
        own < primary && primary - own <= lag + 1
    }
}

async fn block_number(client: &reqwest::Client, addr: &str) -> Option<u64> {
    let head = json_rpc::call(
        client,
        &format!("http://{addr}"),
        "eth_blockNumber",
        json!([]),
    )
    .await?;
    json_rpc::quantity(&head)
}
