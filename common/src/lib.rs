//! What `ethrpc-exporter` and `ethrpc-actuator` share: the one config file both read, the small
//! HTTP server behind their `/metrics` and health endpoints, and process set-up (logging, signals).

pub mod cadence;
pub mod clock;
pub mod config;
pub mod envsubst;
pub mod http_server;
pub mod label_enum;
pub mod metric_names;
pub mod metrics;
pub mod process;
pub mod secret;
pub mod svg;
