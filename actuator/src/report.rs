//! What a cycle saw and decided, per backend and server: the one record that the status page,
//! `explain`, the metrics and the logs are all derived from.

use crate::client_signal::ClientSignal;
use crate::decision::{Observation, Verdict};
use crate::haproxy::WriteOutcome;
use crate::haproxy_write::WeightCommand;

/// Whether a cycle writes to HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    /// Decide and report only.
    DryRun,
}

/// What a cycle saw and did, per backend.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    pub backends: Vec<BackendReport>,
    /// The metrics engine's lag; `None` when unknown.
    pub engine_lag: Option<crate::engine_lag::EngineLag>,
}

impl CycleReport {
    /// True when every write that was due succeeded.
    pub fn all_written(&self) -> bool {
        self.backends
            .iter()
            .flat_map(|b| &b.servers)
            .all(|s| !matches!(s.outcome, Some(WriteOutcome::Failed(_))))
    }

    /// Where a server sits in the report: (backend index, server index).
    pub fn locate(&self, backend: &str, server: &str) -> Option<(usize, usize)> {
        let b = self.backends.iter().position(|b| b.backend == backend)?;
        let s = self.backends[b]
            .servers
            .iter()
            .position(|s| s.server == server)?;
        Some((b, s))
    }
}

#[derive(Debug, Clone)]
pub struct BackendReport {
    pub backend: String,
    /// The chain policy's `full_weight` (what `100%` means on a static backend).
    pub full_weight: u32,
    pub chain: String,
    pub algorithm: String,
    pub static_algorithm: bool,
    pub fail_open: bool,
    /// The highest tier in use; `None` when no server is available.
    pub tier: Option<common::config::Tier>,
    /// Client requests per second over the signal window, from HAProxy; `None` until measured.
    pub demand: Option<f64>,
    /// What the servers of the tiers in use can carry (requests per second); `None`: unlimited.
    pub capacity: Option<f64>,
    /// The demand exceeds every plan limit in use: traffic is shared by limit.
    pub overloaded: bool,
    /// Seconds the tiers in use are still held after a failed release; `None`: not held.
    pub release_held_for: Option<f64>,
    pub servers: Vec<ServerReport>,
    /// HAProxy servers of this backend that no provider names (left alone).
    pub not_configured: Vec<String>,
    /// HAProxy `backup` servers no provider names: HAProxy's own last resort, left alone and not
    /// a mismatch (e.g. a second entry for a reserve, used the moment no active server is).
    pub backups: Vec<String>,
    /// Reserves (tier 2 and up) without a `backup` twin in HAProxy (see `plan`): a warning, with
    /// the recipe, in `explain` and once in the log.
    pub reserves_without_backup: Vec<String>,
}

impl BackendReport {
    /// Servers in HAProxy whose weight is held because their data is missing or stale.
    pub fn without_data(&self) -> usize {
        self.servers
            .iter()
            .filter(|s| s.in_haproxy && s.verdict == Verdict::NoData)
            .count()
    }
}

#[derive(Debug, Clone)]
pub struct ServerReport {
    pub provider: String,
    pub server: String,
    /// False when HAProxy has no such server (left alone).
    pub in_haproxy: bool,
    pub tier: common::config::Tier,
    pub observation: Option<Observation>,
    /// What clients saw over the signal window (HAProxy's counters).
    pub clients: Option<ClientSignal>,
    /// The request rate its weight is capped to: the plan's `max_rps`, or what it carried before
    /// answering 429s.
    pub limit: Option<f64>,
    pub verdict: Verdict,
    /// The smoothed latency the weight follows (seconds), once one was observed.
    pub weighed_latency: Option<f64>,
    /// The latency bucket its weight is computed from (1 = the fastest), with hysteresis.
    pub latency_bucket: Option<u64>,
    /// Seconds since its slow start began, while it ramps up.
    pub ramping_for: Option<f64>,
    /// Recent ejections (escalation count) after this cycle.
    pub ejections: u32,
    /// Seconds from this cycle until an ejected server may return at the earliest.
    pub returns_in: Option<f64>,
    /// HAProxy's weight at the start of the cycle.
    pub current: Option<u32>,
    pub desired: Option<u32>,
    /// What was (or, in a dry run, would be) written.
    pub write: Option<WeightCommand>,
    pub outcome: Option<WriteOutcome>,
}

impl ServerReport {
    /// The weight HAProxy should have after this cycle: what is written, else what it has (a
    /// change inside the deadband is not written, so it is not a disagreement either).
    pub fn target(&self, full_weight: u32) -> Option<u32> {
        match self.write {
            Some(command) => Some(command.weight(full_weight)),
            None => self.current,
        }
    }
}
