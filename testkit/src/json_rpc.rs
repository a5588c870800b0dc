//! One JSON-RPC call to a node, for helpers that drive nodes directly (not through the code
//! under test).

use std::time::Duration;

use serde_json::{json, Value};

/// How long a node may take to answer a helper's call.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `method(params)` on the node at `url`: its `result`, or `None` on any failure.
pub async fn call(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    params: Value,
) -> Option<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let reply: Value = client
        .post(url)
        .json(&body)
        .timeout(TIMEOUT)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    reply.get("result").cloned()
}

/// A JSON-RPC quantity (`"0x1a"`) as a number.
pub fn quantity(value: &Value) -> Option<u64> {
    u64::from_str_radix(value.as_str()?.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(quantity(&json!("0x1a")), Some(26));
        assert_eq!(quantity(&json!("0x0")), Some(0));
        assert_eq!(quantity(&json!("1a")), None);
        assert_eq!(quantity(&json!(26)), None);
    }
}
