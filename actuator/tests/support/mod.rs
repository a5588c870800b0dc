//! What the policy's and the planning step's tests share.

use actuator::decision::Observation;

/// A provider every gate passes: up, on its chain, at the head, fresh, fast, not erroring.
pub fn healthy() -> Observation {
    Observation {
        up: true,
        chain_id_ok: Some(true),
        block_lag: Some(0.0),
        block_age: Some(1.0),
        latency: Some(0.05),
        error_ratio: Some(0.0),
    }
}
