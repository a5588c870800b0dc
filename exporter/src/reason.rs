//! The fixed set of reasons a probe fails, used as the `reason` label: a closed set keeps the
//! label's cardinality bounded whatever a provider answers.

use std::fmt;

/// Why a probe did not yield a usable block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Timeout,
    Connect,
    Tls,
    HttpStatus,
    RateLimited,
    RpcError,
    InvalidResponse,
    TooLarge,
    WrongChain,
    /// A block the chain cannot have made yet ([`crate::plausible`]).
    ImplausibleBlock,
}

impl Reason {
    /// Every reason, for pre-creating counters at zero so that `rate()` works from the start.
    pub const ALL: [Reason; 10] = [
        Reason::Timeout,
        Reason::Connect,
        Reason::Tls,
        Reason::HttpStatus,
        Reason::RateLimited,
        Reason::RpcError,
        Reason::InvalidResponse,
        Reason::TooLarge,
        Reason::WrongChain,
        Reason::ImplausibleBlock,
    ];

    /// Whether a failure of this kind is often a blip that a second attempt at once would not
    /// meet (a reset, a 5xx, a hang, a bad body from one replica), so worth confirming before
    /// believing. A rate limit and a wrong chain id are the provider's deliberate answers; an
    /// implausible block is judged after the answer, not retried.
    pub fn is_transient(self) -> bool {
        !matches!(
            self,
            Reason::RateLimited | Reason::WrongChain | Reason::ImplausibleBlock
        )
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Connect => "connect",
            Reason::Tls => "tls",
            Reason::HttpStatus => "http_status",
            Reason::RateLimited => "rate_limited",
            Reason::RpcError => "rpc_error",
            Reason::InvalidResponse => "invalid_response",
            Reason::TooLarge => "too_large",
            Reason::WrongChain => "wrong_chain",
            Reason::ImplausibleBlock => "implausible_block",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
