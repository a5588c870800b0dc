//! Wall-clock time as Prometheus writes it: Unix seconds as `f64`. Decisions use a monotonic
//! clock; this is for timestamps that are published or compared with Prometheus' own.

use std::time::{SystemTime, UNIX_EPOCH};

/// `t` as Unix seconds; a time before 1970 (a badly set clock) counts as 0.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Now, as Unix seconds.
pub fn unix_now() -> f64 {
    unix_seconds(SystemTime::now())
}
