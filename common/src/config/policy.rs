//! `[policy]`: the weighting policy's thresholds, overridable per `[[chain]]` by writing the same
//! key inside the chain. Every key is declared once below, with its default and doc.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{require_nonzero, FieldError};

/// How healthy servers share traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    /// Every healthy server gets the full weight.
    Equal,
    /// Weight inversely proportional to (bucketed) latency.
    Latency,
}

layered_section! {
    /// The weighting policy's thresholds (`[policy]`, overridable per chain).
    #[derive(Debug, Clone, PartialEq)]
    pub struct PolicyConfig, raw RawPolicy {
        max_block_lag: u64 = 3,
        max_block_age: Duration = Duration::from_secs(60),
        max_latency: Duration = Duration::from_millis(1500),
        max_error_ratio: f64 = 0.5,
        weighting: Weighting = Weighting::Latency,
        readmit_after: u32 = 3,
        slow_start: Duration = Duration::from_secs(10),
        /// Weight of the best server, 1..=256.
        full_weight: u32 = 100,
        /// Weight changes smaller than this are not written.
        deadband: u32 = 5,
        /// Latencies are rounded up to multiples of this before weighting.
        latency_bucket: Duration = Duration::from_millis(50),
        /// Escalating ejection: an ejected server returns only after it has been healthy for
        /// `base_ejection` × its recent ejection count (capped at `max_ejection`); the count decays by
        /// one per `base_ejection` it stays in the pool. Zero: readmission after `readmit_after` only.
        base_ejection: Duration = Duration::from_secs(10),
        max_ejection: Duration = Duration::from_secs(300),
        /// Time constant of the latency average that weights follow (zero: the raw signal).
        latency_smoothing: Duration = Duration::from_secs(30),
        /// Tiers: tier N alone carries the traffic while its healthy servers' `max_rps` sum is at
        /// least this multiple of the backend's measured request rate (a server without
        /// `max_rps` covers any demand); else the next tier is brought in. 0: only health counts.
        min_tier_capacity: f64 = 1.0,
        /// What clients see (HAProxy's counters over the signal window): a server whose share of
        /// failed client requests (5xx, connection and response errors) reaches this is
        /// ejected. 1: off.
        max_client_error_ratio: f64 = 0.25,
        /// Fewer client requests than this in the signal window are no evidence either way.
        min_client_requests: u32 = 20,
    }
}

impl PolicyConfig {
    /// The policy of one chain: its own keys, else `[policy]`, else the defaults. `at` is the
    /// chain's field prefix (`chain[0].`), or `policy.` for the global section alone.
    pub(super) fn resolve(
        chain: &RawPolicy,
        global: &RawPolicy,
        at: &str,
    ) -> Result<Self, FieldError> {
        let policy = RawPolicy::resolve(&[chain, global], Self::default());
        policy
            .check()
            .map_err(|(key, message)| (format!("{at}{key}"), message))?;
        Ok(policy)
    }

    /// This policy with `key` set to `value` (a TOML value such as `1`, `0.2` or `"10s"`, else
    /// taken as a string: `10s`, `equal`), checked as the file's keys are. The error names the
    /// key and what to do (an unknown key lists the valid ones) and never repeats the value.
    pub fn with_override(&self, key: &str, value: &str) -> Result<Self, String> {
        let mut table = toml::Table::try_from(RawPolicy::from(self))
            .map_err(|_| "cannot represent the policy as TOML".to_owned())?;
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|_| !value.contains(['\n', '\r']));
        table.insert(
            key.to_owned(),
            parsed.unwrap_or_else(|| toml::Value::String(value.to_owned())),
        );
        let raw: RawPolicy =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let at = e.path().to_string();
                let message = super::serde_message::without_values(e.into_inner().message());
                if at == "." {
                    message
                } else {
                    format!("{at}: {message}")
                }
            })?;
        let policy = RawPolicy::resolve(&[&raw], self.clone());
        policy
            .check()
            .map_err(|(key, message)| format!("{key}: {message}"))?;
        Ok(policy)
    }

    /// The rules a policy must satisfy; an error names the key and what to do.
    fn check(&self) -> Result<(), FieldError> {
        let rule = |key: &str, message: &str| Err((key.to_owned(), message.to_owned()));
        if !(0.0..=1.0).contains(&self.max_error_ratio) {
            return rule("max_error_ratio", "must be between 0 and 1, e.g. 0.5");
        }
        if !(0.0..=1.0).contains(&self.max_client_error_ratio) {
            return rule(
                "max_client_error_ratio",
                "must be between 0 and 1, e.g. 0.25 (1 turns the gate off)",
            );
        }
        if !(self.min_tier_capacity.is_finite() && self.min_tier_capacity >= 0.0) {
            return rule(
                "min_tier_capacity",
                "must be 0 or more, e.g. 1.0 (tier 1 alone while it can carry the demand)",
            );
        }
        if !(1..=256).contains(&self.full_weight) {
            return rule("full_weight", "must be between 1 and 256 (HAProxy's range)");
        }
        if self.deadband >= self.full_weight {
            return rule("deadband", "must be smaller than full_weight, e.g. 5");
        }
        if self.readmit_after == 0 {
            return rule("readmit_after", "must be at least 1 healthy cycle");
        }
        if self.max_ejection < self.base_ejection {
            return rule(
                "max_ejection",
                "must be at least base_ejection, e.g. \"300s\"",
            );
        }
        require_nonzero(
            &[
                ("max_block_age", self.max_block_age),
                ("max_latency", self.max_latency),
                ("latency_bucket", self.latency_bucket),
            ],
            "must be greater than zero",
        )
    }
}

/// The table inside a chain where its policy keys are gathered while loading.
const CHAIN_POLICY: &str = "policy";

/// Policy keys written directly inside a `[[chain]]` go into its `policy` table, so that one
/// struct describes the policy keys and unknown chain keys are still rejected.
pub(super) fn gather_chain_keys(config: &mut toml::Table) {
    for chain in chains(config) {
        let policy: toml::Table = RawPolicy::KEYS
            .iter()
            .filter_map(|key| Some((key.to_string(), chain.remove(*key)?)))
            .collect();
        if !policy.is_empty() {
            chain.insert(CHAIN_POLICY.to_owned(), toml::Value::Table(policy));
        }
    }
}

/// The inverse of [`gather_chain_keys`], for printing: the policy keys go back into the chain,
/// ahead of its providers (TOML puts a table's plain keys before its sub-tables).
pub(super) fn spread_chain_keys(config: &mut toml::Table) {
    for chain in chains(config) {
        let Some(toml::Value::Table(policy)) = chain.remove(CHAIN_POLICY) else {
            continue;
        };
        let providers = chain.remove("provider");
        chain.extend(policy);
        if let Some(providers) = providers {
            chain.insert("provider".to_owned(), providers);
        }
    }
}

/// A field path as the user wrote it: `chain[0].policy.deadband` is `chain[0].deadband`.
pub(super) fn field_as_written(path: &str) -> String {
    match path.split_once(&format!("].{CHAIN_POLICY}.")) {
        Some((chain, key)) if chain.starts_with("chain[") => format!("{chain}].{key}"),
        _ => path.to_owned(),
    }
}

fn chains(config: &mut toml::Table) -> impl Iterator<Item = &mut toml::Table> {
    match config.get_mut("chain") {
        Some(toml::Value::Array(chains)) => {
            Some(chains.iter_mut().filter_map(toml::Value::as_table_mut))
        }
        _ => None,
    }
    .into_iter()
    .flatten()
}
