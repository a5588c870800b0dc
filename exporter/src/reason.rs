//! The fixed set of reasons a probe fails, used as the `reason` label: a closed set keeps the
//! label's cardinality bounded whatever a provider answers.

common::label_enum! {
    /// Why a probe did not yield a usable block.
    pub enum Reason {
        Timeout => "timeout",
        Connect => "connect",
        Tls => "tls",
        HttpStatus => "http_status",
        RateLimited => "rate_limited",
        /// The plan's quota is spent (HTTP 402, a monthly or billing limit): a lasting state,
        /// asked again only every [`crate::rpc::QUOTA_RECHECK`].
        QuotaExhausted => "quota_exhausted",
        RpcError => "rpc_error",
        InvalidResponse => "invalid_response",
        TooLarge => "too_large",
        WrongChain => "wrong_chain",
        /// A block the chain cannot have made yet ([`crate::plausible`]).
        ImplausibleBlock => "implausible_block",
    }
}

impl Reason {
    /// Whether a failure of this kind is often a blip that a second attempt at once would not
    /// meet (a reset, a 5xx, a hang, a bad body from one replica), so worth confirming before
    /// believing. A rate limit and a wrong chain id are the provider's deliberate answers; an
    /// implausible block is judged after the answer, not retried.
    pub fn is_transient(self) -> bool {
        !matches!(
            self,
            Reason::RateLimited
                | Reason::QuotaExhausted
                | Reason::WrongChain
                | Reason::ImplausibleBlock
        )
    }
}
