//! Stable latency weights. A healthy provider's latency has a heavy tail, so the raw signal
//! moves a lot from one cycle to the next; weights follow an exponentially weighted average of
//! its logarithm (a geometric mean: one multi-second request moves it little), rounded up to
//! `latency_bucket`s with hysteresis: a server leaves its bucket only once the average is half
//! a bucket beyond its edges, so a provider sitting near an edge does not hop between weights.

use common::config::PolicyConfig;

/// A server leaves its bucket only this many buckets beyond its edges.
const HYSTERESIS_BUCKETS: f64 = 0.5;

/// Latencies below this are taken as this (a logarithm needs a positive number).
const FLOOR_SECONDS: f64 = 1e-4;

/// What the policy remembers of a server's latency between cycles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothedLatency {
    /// Average of ln(latency in seconds).
    pub log_mean: f64,
    /// When it was last updated (caller's clock, seconds).
    pub at: f64,
    /// The bucket the weight is computed from (1 = the fastest).
    pub bucket: u64,
}

impl SmoothedLatency {
    /// The average latency, in seconds.
    pub fn seconds(&self) -> f64 {
        self.log_mean.exp()
    }
}

fn bucket_of(policy: &PolicyConfig, latency: f64) -> u64 {
    let size = policy.latency_bucket.as_secs_f64();
    let buckets = (latency.max(0.0) / size).ceil();
    if buckets >= u64::MAX as f64 {
        u64::MAX
    } else {
        (buckets as u64).max(1)
    }
}

/// `held` unless `latency` is more than half a bucket outside it.
fn with_hysteresis(policy: &PolicyConfig, held: u64, latency: f64) -> u64 {
    let size = policy.latency_bucket.as_secs_f64();
    let upper = (held as f64 + HYSTERESIS_BUCKETS) * size;
    let lower = (held as f64 - 1.0 - HYSTERESIS_BUCKETS) * size;
    if latency > lower && latency <= upper {
        held
    } else {
        bucket_of(policy, latency)
    }
}

/// Folds one latency observation (seconds) at `now` into `previous`.
pub fn smooth(
    policy: &PolicyConfig,
    previous: Option<SmoothedLatency>,
    latency: f64,
    now: f64,
) -> SmoothedLatency {
    let sample = latency.max(FLOOR_SECONDS).ln();
    let Some(previous) = previous else {
        return SmoothedLatency {
            log_mean: sample,
            at: now,
            bucket: bucket_of(policy, sample.exp()),
        };
    };
    let tau = policy.latency_smoothing.as_secs_f64();
    let elapsed = (now - previous.at).max(0.0);
    let alpha = if tau <= 0.0 {
        1.0
    } else {
        1.0 - (-elapsed / tau).exp()
    };
    let log_mean = previous.log_mean + alpha * (sample - previous.log_mean);
    SmoothedLatency {
        log_mean,
        at: now,
        bucket: with_hysteresis(policy, previous.bucket, log_mean.exp()),
    }
}

/// The weight of a server in `bucket` when the fastest admitted server is in `best`:
/// inversely proportional, never below 1.
pub fn weight(policy: &PolicyConfig, bucket: u64, best: u64) -> u32 {
    let full = f64::from(policy.full_weight);
    let w = (full * best as f64 / bucket.max(1) as f64).round() as u32;
    w.clamp(1, policy.full_weight)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> PolicyConfig {
        PolicyConfig {
            latency_bucket: Duration::from_millis(50),
            latency_smoothing: Duration::from_secs(30),
            ..PolicyConfig::default()
        }
    }

    #[test]
    fn the_first_observation_sets_the_average_and_bucket() {
        let s = smooth(&policy(), None, 0.120, 0.0);
        assert!((s.seconds() - 0.120).abs() < 1e-9);
        assert_eq!(s.bucket, 3);
    }

    #[test]
    fn one_outlier_moves_the_average_little() {
        let p = policy();
        let mut s = smooth(&p, None, 0.060, 0.0);
        for t in 1..60 {
            s = smooth(&p, Some(s), 0.060, f64::from(t));
        }
        let after = smooth(&p, Some(s), 3.0, 60.0);
        assert!(after.seconds() < 0.060 * 1.2, "{}", after.seconds());
        assert_eq!(after.bucket, 2);
    }

    #[test]
    fn a_server_near_an_edge_keeps_its_bucket_until_half_a_bucket_beyond() {
        let p = policy();
        let held = |bucket, latency| with_hysteresis(&p, bucket, latency);
        // Bucket 3 is (100, 150] ms: it is kept from 75 to 175 ms.
        assert_eq!(held(3, 0.149), 3);
        assert_eq!(held(3, 0.170), 3);
        assert_eq!(held(3, 0.176), 4);
        assert_eq!(held(3, 0.080), 3);
        assert_eq!(held(3, 0.074), 2);
        assert_eq!(held(1, 0.074), 1);
        assert_eq!(held(1, 0.076), 2);
    }

    #[test]
    fn a_lasting_change_is_followed_within_a_few_time_constants() {
        let p = policy();
        let mut s = smooth(&p, None, 0.040, 0.0);
        for t in 1..=150 {
            s = smooth(&p, Some(s), 0.400, f64::from(t));
        }
        assert_eq!(s.bucket, bucket_of(&p, s.seconds()));
        assert!(s.seconds() > 0.38, "{}", s.seconds());
    }

    #[test]
    fn zero_smoothing_follows_the_raw_signal() {
        let p = PolicyConfig {
            latency_smoothing: Duration::ZERO,
            ..policy()
        };
        let s = smooth(&p, None, 0.040, 0.0);
        let s = smooth(&p, Some(s), 0.400, 1.0);
        assert!((s.seconds() - 0.400).abs() < 1e-9);
    }

    #[test]
    fn weights_are_inverse_to_buckets_and_never_zero() {
        let p = policy();
        assert_eq!(weight(&p, 1, 1), 100);
        assert_eq!(weight(&p, 2, 1), 50);
        assert_eq!(weight(&p, 3, 1), 33);
        assert_eq!(weight(&p, 1000, 1), 1);
    }
}
