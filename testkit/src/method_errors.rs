//! Answers other than the node's to the calls of one method, as providers give them: an HTTP
//! status, a JSON-RPC error inside a 200 (the provider's own or the client's), or a result a
//! node that does not hold the data gives. Part of the noise model ([`crate::noise::Noise`]).

/// A share of the requests that call `method` (alone or in a batch) answered with `answer`
/// instead of the node's.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodErrors {
    pub method: String,
    pub share: f64,
    pub answer: MethodAnswer,
}

/// How the calls [`MethodErrors`] picks are answered.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodAnswer {
    /// This HTTP status: 502 (a provider's balancer failing one method, an HTML page), 429 (a
    /// per-method limit on a heavy call, whatever the rate), 400 (a client's malformed call, as
    /// every provider answers it); a JSON-RPC error body but for the 502.
    Status(u16),
    /// HTTP 200 with this JSON-RPC error, carrying the request's id: how providers answer most
    /// failures (`header not found` from a replica behind, pruned state, `-32005` limits) and a
    /// client's own mistakes (`execution reverted`).
    RpcError { code: i64, message: String },
    /// HTTP 200 with this result, carrying the request's id: a pruned or lagging node answering
    /// `eth_getLogs` with `[]` for a range it does not hold.
    Result(serde_json::Value),
}

impl MethodErrors {
    /// `answer` to `share` of the calls of `method`.
    pub fn new(method: &str, share: f64, answer: MethodAnswer) -> Self {
        Self {
            method: method.to_owned(),
            share,
            answer,
        }
    }

    /// HTTP 502 to `share` of the calls of `method`.
    pub fn bad_gateway(method: &str, share: f64) -> Self {
        Self::new(method, share, MethodAnswer::Status(502))
    }

    /// A JSON-RPC error `code` with `message` inside an HTTP 200 to `share` of the calls.
    pub fn rpc_error(method: &str, share: f64, code: i64, message: &str) -> Self {
        let message = message.to_owned();
        Self::new(method, share, MethodAnswer::RpcError { code, message })
    }

    /// `header not found` in a 200: a provider's replica behind the block asked for.
    pub fn header_not_found(method: &str, share: f64) -> Self {
        Self::rpc_error(method, share, -32000, "header not found")
    }

    /// `execution reverted` in a 200: the client's own call fails, on every provider alike.
    pub fn reverted(method: &str, share: f64) -> Self {
        Self::rpc_error(method, share, 3, "execution reverted")
    }

    /// `missing trie node` in a 200: a pruned node asked for state at an old block.
    pub fn pruned(method: &str, share: f64) -> Self {
        Self::rpc_error(
            method,
            share,
            -32000,
            "missing trie node 0 (path ) state is not available",
        )
    }

    /// A JSON-RPC rate limit in a 200 (`-32005`), as Infura answers over a plan's rate.
    pub fn rpc_rate_limited(method: &str, share: f64) -> Self {
        Self::rpc_error(
            method,
            share,
            -32005,
            "daily request count exceeded, request rate limited",
        )
    }

    /// An `eth_getLogs` range limit in a 200 (`-32005` too, but no rate limit).
    pub fn logs_range_limit(share: f64) -> Self {
        let message = "query returned more than 10000 results";
        Self::rpc_error("eth_getLogs", share, -32005, message)
    }

    /// `[]` to `eth_getLogs`: a node that does not hold the range, where its peers return logs.
    pub fn no_logs(share: f64) -> Self {
        Self::new(
            "eth_getLogs",
            share,
            MethodAnswer::Result(serde_json::json!([])),
        )
    }
}
