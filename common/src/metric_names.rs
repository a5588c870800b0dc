//! The names of the exporter's series that other code reads: the exporter publishes them under
//! these names, and the actuator's default queries read them by the same constants, so a rename
//! cannot break one side silently. Dashboards and alerts are checked against what the binaries
//! really publish by a test (`actuator/tests/metric_names.rs`).

pub const UP: &str = "ethrpc_up";
pub const CHAIN_ID_MATCH: &str = "ethrpc_chain_id_match";
pub const PROBE_DURATION: &str = "ethrpc_probe_duration_seconds";
pub const BLOCK_AGE: &str = "ethrpc_block_age_seconds";
pub const BLOCK_LAG: &str = "ethrpc_block_lag";
pub const LAST_PROBE: &str = "ethrpc_last_probe_timestamp_seconds";
pub const PROBES: &str = "ethrpc_probes_total";
pub const PROBE_ERRORS: &str = "ethrpc_probe_errors_total";
