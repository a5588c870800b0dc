//! Why the actuator could not start, and why a cycle decided nothing.

use thiserror::Error;

use crate::haproxy::HaproxyError;
use crate::prometheus_api::PrometheusError;

/// Why a cycle decided nothing.
#[derive(Debug, Error)]
pub enum CycleError {
    #[error("Prometheus query failed, weights left as they are: {0}")]
    Prometheus(#[from] PrometheusError),
    #[error("HAProxy failed: {0}")]
    Haproxy(#[from] HaproxyError),
}

/// Why the actuator cannot start.
#[derive(Debug, Error)]
pub enum ActuatorError {
    #[error("cannot build the Prometheus client: {0}")]
    PrometheusClient(#[from] reqwest::Error),
}
