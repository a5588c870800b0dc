//! Client traffic through an HAProxy frontend, and what HAProxy counted of it, for the tests on
//! real parts that need a demand or a share of the traffic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testkit::haproxy::HaproxyProcess;

/// JSON-RPC requests to `frontend` at `per_second` until the returned flag is set.
pub fn load(frontend: &str, per_second: u32) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let url = frontend.to_owned();
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut ticker =
            tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_second)));
        while !flag.load(Ordering::Relaxed) {
            ticker.tick().await;
            let request = client
                .post(&url)
                .header("content-type", "application/json")
                .body(r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#)
                .send();
            tokio::spawn(request);
        }
    });
    done
}

/// `lbtot` of `server` of backend `rpc` in HAProxy: the client requests sent to it.
pub async fn selected(haproxy: &HaproxyProcess, server: &str) -> u64 {
    haproxy
        .server_stats("rpc")
        .await
        .iter()
        .find(|s| s.get("svname").map(String::as_str) == Some(server))
        .and_then(|s| s.get("lbtot")?.parse().ok())
        .unwrap_or(0)
}
