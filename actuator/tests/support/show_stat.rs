//! `show stat` as the planning step reads it, for the tests that plan without an HAProxy.

use actuator::haproxy::{BackendStat, ServerStat};

/// A backend with `algorithm` whose servers are all UP, without client counters, at these weights.
pub fn backend(algorithm: &str, servers: &[(&str, u32)]) -> BackendStat {
    BackendStat {
        algorithm: algorithm.into(),
        servers: servers
            .iter()
            .map(|(name, weight)| {
                let stat = ServerStat {
                    weight: *weight,
                    status: "UP".into(),
                    counters: None,
                    backup: false,
                    address: None,
                };
                (name.to_string(), stat)
            })
            .collect(),
    }
}
