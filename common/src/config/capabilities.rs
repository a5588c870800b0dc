//! `[chain.capabilities]`: what the exporter asks each provider besides its head, at a low
//! cadence of its own: state at an old block (archive), logs, tracing, the finalized and safe
//! blocks.
//! Clients call these methods, and a provider that answers its head fine can still fail them
//! (a pruned node, a plan without `debug_*`, a replica that returns `[]` for logs it lacks).

use std::ops::Not;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::FieldError;

/// The shortest capability interval: what a provider can serve changes over hours, and every
/// call costs a share of the plan.
pub const MIN_CAPABILITY_INTERVAL: Duration = Duration::from_secs(10);
/// The default interval: each enabled probe, each provider, every 10 minutes.
pub const DEFAULT_CAPABILITY_INTERVAL: Duration = Duration::from_secs(600);
/// The widest logs range: providers cap `eth_getLogs` ranges at 2 000 to 10 000 blocks.
pub const MAX_LOGS_BLOCKS: u64 = 2_000;

/// `[chain.capabilities]`, validated: at least one probe is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilitiesConfig {
    /// How often each provider is asked each enabled probe.
    pub interval: Duration,
    /// Archive: `eth_getBalance` of the zero address at this block, which only an archive node
    /// (or one that keeps that much state) holds.
    pub archive_block: Option<u64>,
    /// Logs: `eth_getLogs` over the last blocks every provider holds, compared with its peers.
    pub logs: Option<LogsProbe>,
    /// Tracing: `debug_traceCall` of an empty call at `latest`.
    pub trace: bool,
    /// The finalized block: `eth_getBlockByNumber("finalized")`, its lag behind the peers'.
    pub finalized: bool,
    /// The safe block: `eth_getBlockByNumber("safe")`, its lag behind the peers'.
    pub safe: bool,
}

/// What the logs probe asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsProbe {
    /// Blocks in the range (1 to [`MAX_LOGS_BLOCKS`]).
    pub blocks: u64,
    /// Only this contract's logs (`0x` and 40 hex digits): keeps the answer small on busy chains.
    pub address: Option<String>,
}

/// `[chain.capabilities]` as written.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCapabilities {
    #[serde(
        default,
        with = "super::toml_form::optional",
        skip_serializing_if = "Option::is_none"
    )]
    interval: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    archive_block: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logs_blocks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logs_address: Option<String>,
    #[serde(default, skip_serializing_if = "Not::not")]
    trace: bool,
    #[serde(default, skip_serializing_if = "Not::not")]
    finalized: bool,
    #[serde(default, skip_serializing_if = "Not::not")]
    safe: bool,
}

impl RawCapabilities {
    /// Checks the section of the chain at `at` (`chain[0]`).
    pub(super) fn validate(self, at: &str) -> Result<CapabilitiesConfig, FieldError> {
        let field = |key: &str| format!("{at}.capabilities.{key}");
        let interval = self.interval.unwrap_or(DEFAULT_CAPABILITY_INTERVAL);
        if interval < MIN_CAPABILITY_INTERVAL {
            return Err((
                field("interval"),
                format!(
                    "{} is too often; what a provider can serve changes over hours and each probe is billed: use at least {} (the default is {})",
                    humantime::format_duration(interval),
                    humantime::format_duration(MIN_CAPABILITY_INTERVAL),
                    humantime::format_duration(DEFAULT_CAPABILITY_INTERVAL)
                ),
            ));
        }
        if self.archive_block == Some(0) {
            return Err((
                field("archive_block"),
                "block 0 is a poor test: nodes keep the genesis state however much they prune; use a block older than a full node keeps, e.g. 1000000 on mainnet".into(),
            ));
        }
        let logs = match (self.logs_blocks, self.logs_address) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err((
                    field("logs_address"),
                    "is set without logs_blocks; set logs_blocks (how many recent blocks to ask for) too".into(),
                ))
            }
            (Some(blocks), address) => {
                if !(1..=MAX_LOGS_BLOCKS).contains(&blocks) {
                    return Err((
                        field("logs_blocks"),
                        format!("{blocks} is out of range; use 1 to {MAX_LOGS_BLOCKS} (providers cap eth_getLogs ranges)"),
                    ));
                }
                if let Some(a) = address.as_deref().filter(|a| !is_address(a)) {
                    return Err((
                        field("logs_address"),
                        format!("{a:?} is not a contract address; write it as 0x and 40 hex digits"),
                    ));
                }
                Some(LogsProbe { blocks, address })
            }
        };
        if self.archive_block.is_none()
            && logs.is_none()
            && !self.trace
            && !self.finalized
            && !self.safe
        {
            return Err((
                format!("{at}.capabilities"),
                "enables no probe; set archive_block, logs_blocks, trace = true, finalized = true or safe = true, or remove the section".into(),
            ));
        }
        Ok(CapabilitiesConfig {
            interval,
            archive_block: self.archive_block,
            logs,
            trace: self.trace,
            finalized: self.finalized,
            safe: self.safe,
        })
    }
}

impl CapabilitiesConfig {
    /// How many probes each provider is sent every [`Self::interval`].
    pub fn probes(&self) -> usize {
        usize::from(self.archive_block.is_some())
            + usize::from(self.logs.is_some())
            + usize::from(self.trace)
            + usize::from(self.finalized)
            + usize::from(self.safe)
    }
}

fn is_address(text: &str) -> bool {
    text.strip_prefix("0x")
        .is_some_and(|hex| hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The section as the printer writes it: every key, the interval included.
impl From<&CapabilitiesConfig> for RawCapabilities {
    fn from(c: &CapabilitiesConfig) -> Self {
        Self {
            interval: Some(c.interval),
            archive_block: c.archive_block,
            logs_blocks: c.logs.as_ref().map(|l| l.blocks),
            logs_address: c.logs.as_ref().and_then(|l| l.address.clone()),
            trace: c.trace,
            finalized: c.finalized,
            safe: c.safe,
        }
    }
}
