//! JSON-RPC calls to one provider, with a size limit, turning every way a provider can fail
//! into a [`Reason`] and a detail text that never contains the URL, the headers or any part of
//! them: what the provider wrote is [`Redactor`]ed as the error is built. Deadlines and retries are
//! the caller's ([`crate::confirm`]): one probe's attempts share one deadline.

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use common::config::ProviderConfig;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::provider_text::{printable, Redactor};
use crate::reason::Reason;

/// The longest `Retry-After` honoured, so a provider cannot switch probing off for long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// How long a provider whose quota is spent goes unprobed: a monthly or billing limit does not
/// lift within seconds, and probing it every second would only fill the logs.
pub const QUOTA_RECHECK: Duration = Duration::from_secs(60);
/// Words of a JSON-RPC error (lower case) that say the plan's quota is spent rather than its rate
/// exceeded: Alchemy's "Monthly capacity limit exceeded", credits and billing messages.
const QUOTA_WORDS: [&str; 5] = ["monthly", "quota", "billing", "payment", "credits"];
/// The address capability probes ask about: any address works, this one exists everywhere.
const ZERO_ADDRESS: &str = "0x0000000000000000000000000000000000000000";
/// Longest provider error message kept for logs and the status page.
const MAX_DETAIL: usize = 200;

/// A failed call.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeError {
    pub reason: Reason,
    /// Human-readable explanation, free of the provider's secrets and of control characters,
    /// at most [`MAX_DETAIL`] bytes and an ellipsis.
    pub detail: String,
    /// From a `429`: skip this provider until then.
    pub retry_after: Option<Duration>,
    /// Whether a second attempt at once may well succeed (see [`Reason::is_transient`]); false
    /// also for an HTTP status other than 5xx, a deliberate answer.
    pub transient: bool,
    /// What a JSON-RPC error answer says the provider will not serve, when its code or words
    /// say so (capability probes take it as evidence; a head probe fails either way).
    pub refusal: Option<Refusal>,
}

/// A JSON-RPC error answer that says what the provider does not serve, rather than that it
/// failed this once. Which kinds count as evidence depends on the call asked
/// ([`crate::capability::Capability::accepts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The method is not served on this node or plan (`-32601`, "not supported", …).
    MethodUnavailable,
    /// The state asked for is not held (pruned state).
    MissingState,
    /// The range or result is over the provider's limit (`eth_getLogs`).
    OverLimit,
}

/// Phrases (lower case) of each [`Refusal`], checked in this order after [`RATE_WORDS`]: a
/// message of missing state may also say "not available". Whole phrases, as providers write
/// them: single words ("exceed", "too many", "does not exist") also appear in transient errors
/// ("context deadline exceeded", "too many concurrent requests") and in the client's own
/// ("account does not exist"). `header not found` is left out: a load balancer's replica behind
/// answers it, which says nothing of the node's state.
const REFUSAL_WORDS: [(Refusal, &[&str]); 3] = [
    (
        Refusal::MissingState,
        &[
            "missing trie node",
            "pruned",
            "pruning",
            "state is not available",
            "state not available",
            "historical state",
        ],
    ),
    (
        Refusal::MethodUnavailable,
        &[
            "method not found",
            "does not exist/is not available",
            "method not supported",
            "is not supported",
            "unsupported method",
            "method not allowed",
            "not whitelisted",
            "is not enabled",
            "is not available on",
        ],
    ),
    (
        Refusal::OverLimit,
        &[
            "query returned more than",
            "block range",
            "range is too large",
            "range too large",
            "is limited to",
            "response size exceeded",
        ],
    ),
];
/// Words of a rate limit: a refusal of this moment, not of the method.
const RATE_WORDS: [&str; 4] = ["rate", "too many requests", "capacity", "limit exceeded"];

/// What a JSON-RPC error with `code` and `message` refuses, if its code or words say.
pub fn refusal(code: Option<i64>, message: &str) -> Option<Refusal> {
    if code == Some(-32601) {
        return Some(Refusal::MethodUnavailable);
    }
    let lower = message.to_lowercase();
    if RATE_WORDS.iter().any(|w| lower.contains(w)) {
        return None;
    }
    REFUSAL_WORDS
        .iter()
        .find(|(_, words)| words.iter().any(|w| lower.contains(w)))
        .map(|(refusal, _)| *refusal)
}

impl ProbeError {
    /// An error explained in the exporter's own words.
    pub fn new(reason: Reason, detail: impl AsRef<str>) -> Self {
        Self {
            reason,
            detail: printable(detail.as_ref(), MAX_DETAIL),
            retry_after: None,
            transient: reason.is_transient(),
            refusal: None,
        }
    }

    /// The plan's quota is spent: not asked again for [`QUOTA_RECHECK`].
    fn quota_exhausted(detail: impl AsRef<str>) -> Self {
        let mut e = Self::new(Reason::QuotaExhausted, detail);
        e.retry_after = Some(QUOTA_RECHECK);
        e
    }

    /// An error whose detail quotes the provider (or its transport): `redactor` removes the
    /// provider's secrets before the text can reach a log or a page.
    pub fn quoting(reason: Reason, detail: &str, redactor: &Redactor) -> Self {
        Self::new(reason, redactor.redact(detail))
    }
}

/// The head block as a provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub number: u64,
    /// Unix seconds.
    pub timestamp: u64,
    pub hash: String,
}

/// The two HTTP clients all providers share (one verifies TLS, one does not, for providers that
/// opted out). Sharing keeps memory flat with a thousand providers.
#[derive(Clone)]
pub struct HttpClients {
    verified: reqwest::Client,
    insecure: reqwest::Client,
}

impl HttpClients {
    pub fn new(connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .danger_accept_invalid_certs(insecure)
                .pool_idle_timeout(Duration::from_secs(90))
                .user_agent(concat!("ethrpc-exporter/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        Ok(Self {
            verified: build(false)?,
            insecure: build(true)?,
        })
    }
}

/// One provider as the prober calls it.
pub struct Rpc<'a> {
    client: &'a reqwest::Client,
    provider: &'a ProviderConfig,
    /// `provider`'s secrets, for what it writes back.
    redactor: &'a Redactor,
    max_bytes: usize,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<RpcErrorBody>,
}

#[derive(Deserialize)]
struct RpcErrorBody {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct RawBlock {
    number: String,
    timestamp: String,
    hash: String,
}

impl<'a> Rpc<'a> {
    pub fn new(
        clients: &'a HttpClients,
        provider: &'a ProviderConfig,
        redactor: &'a Redactor,
        max_bytes: usize,
    ) -> Self {
        let client = if provider.insecure_skip_verify {
            &clients.insecure
        } else {
            &clients.verified
        };
        Self {
            client,
            provider,
            redactor,
            max_bytes,
        }
    }

    /// `eth_chainId`.
    pub async fn chain_id(&self) -> Result<u64, ProbeError> {
        let bytes = self.call("eth_chainId", json!([])).await?;
        decode_chain_id(&bytes, self.redactor)
    }

    /// `eth_getBlockByNumber("latest", false)`.
    pub async fn latest_block(&self) -> Result<Block, ProbeError> {
        let bytes = self
            .call("eth_getBlockByNumber", json!(["latest", false]))
            .await?;
        decode_block(&bytes, self.redactor)
    }

    /// `eth_getBalance` of the zero address at `block`: served only where that block's state
    /// is held.
    pub async fn balance_at(&self, block: u64) -> Result<(), ProbeError> {
        let params = json!([ZERO_ADDRESS, format!("0x{block:x}")]);
        let bytes = self.call("eth_getBalance", params).await?;
        decode::<String>("eth_getBalance", &bytes, self.redactor).map(drop)
    }

    /// How many logs `eth_getLogs` returns over blocks `from..=to`, of `address` if given.
    pub async fn log_count(
        &self,
        from: u64,
        to: u64,
        address: Option<&str>,
    ) -> Result<usize, ProbeError> {
        let mut filter =
            json!({"fromBlock": format!("0x{from:x}"), "toBlock": format!("0x{to:x}")});
        if let Some(address) = address {
            filter["address"] = json!(address);
        }
        let bytes = self.call("eth_getLogs", json!([filter])).await?;
        decode::<Vec<serde::de::IgnoredAny>>("eth_getLogs", &bytes, self.redactor)
            .map(|logs| logs.len())
    }

    /// `debug_traceCall` of an empty call at `latest`: whether tracing is served.
    pub async fn trace_call(&self) -> Result<(), ProbeError> {
        let params = json!([{"to": ZERO_ADDRESS, "data": "0x"}, "latest", {}]);
        let bytes = self.call("debug_traceCall", params).await?;
        decode::<serde::de::IgnoredAny>("debug_traceCall", &bytes, self.redactor).map(drop)
    }

    /// The number of the block `eth_getBlockByNumber(tag, false)` answers (`tag` is
    /// `finalized` or `safe`).
    pub async fn tagged_block(&self, tag: &'static str) -> Result<u64, ProbeError> {
        let bytes = self
            .call("eth_getBlockByNumber", json!([tag, false]))
            .await?;
        let raw: Option<RawBlock> = decode("eth_getBlockByNumber", &bytes, self.redactor)?;
        let Some(raw) = raw else {
            let mut e = ProbeError::new(Reason::InvalidResponse, format!("no {tag} block"));
            e.refusal = Some(Refusal::MissingState);
            return Err(e);
        };
        parse_quantity(&raw.number).ok_or_else(|| {
            ProbeError::new(
                Reason::InvalidResponse,
                format!("{tag} block number is not a hex quantity"),
            )
        })
    }

    /// The raw reply body of `method`.
    async fn call(&self, method: &str, params: serde_json::Value) -> Result<Vec<u8>, ProbeError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.post(&body).await
    }

    fn transport_failure(&self, e: reqwest::Error) -> ProbeError {
        let https = self.provider.url.expose().scheme() == "https";
        transport_error(e, https, self.redactor)
    }

    async fn post(&self, body: &serde_json::Value) -> Result<Vec<u8>, ProbeError> {
        let mut response = self
            .client
            .post(self.provider.url.expose().clone())
            .headers(self.provider.headers.expose().clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| self.transport_failure(e))?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let mut e = ProbeError::new(Reason::RateLimited, "HTTP 429 Too Many Requests");
            e.retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            return Err(e);
        }
        if status == reqwest::StatusCode::PAYMENT_REQUIRED {
            return Err(ProbeError::quota_exhausted("HTTP 402 Payment Required"));
        }
        if !status.is_success() {
            let mut e = ProbeError::new(Reason::HttpStatus, format!("HTTP {status}"));
            e.transient = status.is_server_error();
            return Err(e);
        }
        let too_large = || {
            ProbeError::new(
                Reason::TooLarge,
                format!("response body over {} bytes", self.max_bytes),
            )
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes as u64)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_failure(e))?
        {
            if bytes.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// The chain id in an `eth_chainId` reply body.
pub fn decode_chain_id(bytes: &[u8], redactor: &Redactor) -> Result<u64, ProbeError> {
    let hex: String = decode("eth_chainId", bytes, redactor)?;
    parse_quantity(&hex).ok_or_else(|| {
        ProbeError::new(
            Reason::InvalidResponse,
            "eth_chainId result is not a hex quantity",
        )
    })
}

/// The block in an `eth_getBlockByNumber("latest", false)` reply body.
pub fn decode_block(bytes: &[u8], redactor: &Redactor) -> Result<Block, ProbeError> {
    let raw: Option<RawBlock> = decode("eth_getBlockByNumber", bytes, redactor)?;
    let raw =
        raw.ok_or_else(|| ProbeError::new(Reason::InvalidResponse, "latest block is null"))?;
    let bad = |field: &str| {
        ProbeError::new(
            Reason::InvalidResponse,
            format!("block {field} is not a valid hex value"),
        )
    };
    let number = parse_quantity(&raw.number).ok_or_else(|| bad("number"))?;
    let timestamp = parse_quantity(&raw.timestamp).ok_or_else(|| bad("timestamp"))?;
    let hash_ok = raw.hash.len() == 66
        && raw.hash.starts_with("0x")
        && raw.hash[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if !hash_ok {
        return Err(bad("hash"));
    }
    Ok(Block {
        number,
        timestamp,
        hash: raw.hash,
    })
}

/// The result of a JSON-RPC response. The provider's words (its error message; serde's messages,
/// which quote an unexpected string result) go through `redactor`.
fn decode<T: DeserializeOwned>(
    method: &str,
    bytes: &[u8],
    redactor: &Redactor,
) -> Result<T, ProbeError> {
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| {
        ProbeError::quoting(
            Reason::InvalidResponse,
            &format!("{method}: body is not a JSON-RPC response ({e})"),
            redactor,
        )
    })?;
    if let Some(error) = envelope.error {
        let code = error.code.map_or(String::new(), |c| format!(" {c}"));
        let message = error.message.unwrap_or_default();
        let detail = redactor.redact(&format!("{method}: JSON-RPC error{code}: {message}"));
        let lower = message.to_lowercase();
        if QUOTA_WORDS.iter().any(|w| lower.contains(w)) {
            return Err(ProbeError::quota_exhausted(detail));
        }
        let mut e = ProbeError::new(Reason::RpcError, detail);
        e.refusal = refusal(error.code, &message);
        return Err(e);
    }
    let result = envelope.result.ok_or_else(|| {
        ProbeError::new(
            Reason::InvalidResponse,
            format!("{method}: response has no result"),
        )
    })?;
    serde_json::from_value(result).map_err(|e| {
        ProbeError::quoting(
            Reason::InvalidResponse,
            &format!("{method}: unexpected result ({e})"),
            redactor,
        )
    })
}

/// Classifies a transport failure. `reqwest`'s own `Display` includes the URL, so only the
/// messages of its sources are used. On an `https` URL, a connect failure that is neither the
/// name lookup nor the TCP connection is the TLS handshake (rustls' error arrives boxed inside
/// the connector's, so its type cannot be relied on).
fn transport_error(e: reqwest::Error, https: bool, redactor: &Redactor) -> ProbeError {
    let e = e.without_url();
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let detail = if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    };
    let network = detail.contains("dns error") || detail.contains("tcp connect error");
    let reason = if e.is_timeout() {
        Reason::Timeout
    } else if https && e.is_connect() && !network {
        Reason::Tls
    } else {
        Reason::Connect
    };
    ProbeError::quoting(reason, &detail, redactor)
}

/// Parses a JSON-RPC quantity: `0x` and 1 to 16 hex digits.
pub fn parse_quantity(hex: &str) -> Option<u64> {
    let digits = hex.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// `Retry-After` as seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_strictly() {
        assert_eq!(parse_quantity("0x0"), Some(0));
        assert_eq!(parse_quantity("0x1b4"), Some(436));
        assert_eq!(parse_quantity("0xffffffffffffffff"), Some(u64::MAX));
        for bad in [
            "",
            "0x",
            "1b4",
            "0xzz",
            "0x10000000000000000",
            "0x-1",
            "0x+1",
        ] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("99999", now), Some(MAX_RETRY_AFTER));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn decoding_names_each_kind_of_bad_body() {
        let none = Redactor::default();
        let reason = |body: &str| {
            decode::<String>("m", body.as_bytes(), &none)
                .unwrap_err()
                .reason
        };
        assert_eq!(reason("<html>"), Reason::InvalidResponse);
        assert_eq!(
            reason(r#"{"jsonrpc":"2.0","id":1}"#),
            Reason::InvalidResponse
        );
        assert_eq!(reason(r#"{"id":1,"result":17}"#), Reason::InvalidResponse);
        assert_eq!(
            reason(r#"{"id":1,"error":{"code":-32000,"message":"boom"}}"#),
            Reason::RpcError
        );
        let spent = decode::<String>(
            "m",
            br#"{"id":1,"error":{"code":429,"message":"Monthly capacity limit exceeded. Visit the dashboard"}}"#,
            &none,
        )
        .unwrap_err();
        assert_eq!(spent.reason, Reason::QuotaExhausted);
        assert_eq!(
            spent.retry_after,
            Some(QUOTA_RECHECK),
            "asked again in a minute"
        );
        assert!(!spent.transient, "not retried at once");
        assert_eq!(
            reason(r#"{"id":1,"error":{"code":-32005,"message":"request rate limited"}}"#),
            Reason::RpcError,
            "a rate, not a quota"
        );
        let ok: String = decode("m", br#"{"id":1,"result":"0x1"}"#, &none).unwrap();
        assert_eq!(ok, "0x1");
    }

    #[test]
    fn refusals_are_read_from_codes_and_words() {
        use Refusal::*;
        let cases = [
            (-32601, "the method debug_traceCall does not exist/is not available", Some(MethodUnavailable)),
            (-32000, "The method debug_traceCall does not exist/is not available", Some(MethodUnavailable)),
            (-32000, "debug_traceCall is not available on the Free tier - upgrade to Growth", Some(MethodUnavailable)),
            (-32000, "missing trie node 0 (path ) state is not available", Some(MissingState)),
            (-32000, "old data not available due to pruning", Some(MissingState)),
            (-32005, "query returned more than 10000 results", Some(OverLimit)),
            (-32602, "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range", Some(OverLimit)),
            (-32005, "daily request count exceeded, request rate limited", None),
            (-32005, "project ID request rate exceeded", None),
            (-32005, "limit exceeded", None),
            (429, "Your app has exceeded its compute units per second capacity", None),
            // Transient, or the client's own: no evidence of what the provider serves.
            (-32000, "header not found", None),
            (-32000, "context deadline exceeded", None),
            (-32000, "too many concurrent requests", None),
            (-32000, "service not available", None),
            (-32000, "account does not exist", None),
            (-32000, "gas required exceeds allowance (0)", None),
            (3, "execution reverted", None),
        ];
        for (code, message, expected) in cases {
            assert_eq!(refusal(Some(code), message), expected, "{message}");
        }
        assert_eq!(refusal(None, ""), None);
        let none = Redactor::default();
        let pruned = decode::<String>(
            "m",
            br#"{"id":1,"error":{"code":-32000,"message":"missing trie node abc"}}"#,
            &none,
        )
        .unwrap_err();
        assert_eq!(pruned.refusal, Some(Refusal::MissingState));
        assert!(
            pruned.transient,
            "asked again once: a replica behind answers so too"
        );
    }

    #[test]
    fn long_details_are_cut_on_a_char_boundary() {
        let e = ProbeError::new(Reason::RpcError, "é".repeat(300));
        assert!(e.detail.len() <= MAX_DETAIL + '…'.len_utf8());
        assert!(e.detail.ends_with('…'));
    }

    #[test]
    fn details_carry_no_control_characters() {
        let e = ProbeError::new(Reason::RpcError, "a\nb\x1b[0m");
        assert_eq!(e.detail, "a\\nb\\u{1b}[0m");
    }
}
