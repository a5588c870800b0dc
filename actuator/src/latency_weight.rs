//! Stable latency weights. A healthy provider's latency has a heavy tail, so the raw signal
//! moves a lot from one cycle to the next; weights follow an exponentially weighted average of
//! its logarithm (a geometric mean: one multi-second request moves it little), rounded up to
//! `latency_bucket`s with hysteresis: a server leaves its bucket only once the average is two
//! fifths beyond its edges, so a provider sitting near an edge does not hop between weights (the
//! average of a healthy paid provider's latency wanders ±30 % around its median over half an hour:
//! a fifth was measured to flip a provider at an edge every few minutes). The band is
//! relative, so a fast provider that was slow for a while always finds its way back to the
//! fastest bucket; and there is none while the average is younger than its time constant, so a
//! noisy first sample cannot lock a provider into the wrong bucket.

use common::config::PolicyConfig;

/// A server leaves its bucket only this far (relative) beyond its edges.
const HYSTERESIS: f64 = 0.4;

/// Latencies below this are taken as this (a logarithm needs a positive number).
const FLOOR_SECONDS: f64 = 1e-4;

/// What the policy remembers of a server's latency between cycles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothedLatency {
    /// Average of ln(latency in seconds).
    pub log_mean: f64,
    /// When it was last updated (caller's clock, seconds).
    pub at: f64,
    /// When the first latency was observed: hysteresis starts one time constant later.
    pub since: f64,
    /// The bucket the weight is computed from (1 = the fastest).
    pub bucket: u64,
}

impl SmoothedLatency {
    /// The average latency, in seconds.
    pub fn seconds(&self) -> f64 {
        self.log_mean.exp()
    }
}

/// The bucket of `latency` (seconds), without hysteresis.
pub fn bucket_of(policy: &PolicyConfig, latency: f64) -> u64 {
    let size = policy.latency_bucket.as_secs_f64();
    let buckets = (latency.max(0.0) / size).ceil();
    if buckets >= u64::MAX as f64 {
        u64::MAX
    } else {
        (buckets as u64).max(1)
    }
}

/// `held` unless `latency` is more than two fifths outside its edges.
fn with_hysteresis(policy: &PolicyConfig, held: u64, latency: f64) -> u64 {
    let size = policy.latency_bucket.as_secs_f64();
    let upper = held as f64 * size * (1.0 + HYSTERESIS);
    let lower = (held as f64 - 1.0) * size * (1.0 - HYSTERESIS);
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
            since: now,
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
    let settled = now - previous.since >= tau;
    SmoothedLatency {
        log_mean,
        at: now,
        since: previous.since,
        bucket: if settled {
            with_hysteresis(policy, previous.bucket, log_mean.exp())
        } else {
            bucket_of(policy, log_mean.exp())
        },
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
    fn a_server_near_an_edge_keeps_its_bucket_until_two_fifths_beyond() {
        let p = policy();
        let held = |bucket, latency| with_hysteresis(&p, bucket, latency);
        // Bucket 3 is (100, 150] ms: it is kept from 60 to 210 ms.
        assert_eq!(held(3, 0.149), 3);
        assert_eq!(held(3, 0.209), 3);
        assert_eq!(held(3, 0.211), 5);
        assert_eq!(held(3, 0.061), 3);
        assert_eq!(held(3, 0.059), 2);
        // The bench's noisy 60 ms provider, whose average wandered from 36 to 65 ms over 30
        // minutes, keeps whichever of buckets 1 and 2 it is in.
        assert_eq!(held(1, 0.065), 1);
        assert_eq!(held(2, 0.036), 2);
        assert_eq!(held(1, 0.071), 2);
        // Relative: a 29 ms server held in bucket 2 (50, 100] goes back to bucket 1.
        assert_eq!(held(2, 0.031), 2);
        assert_eq!(held(2, 0.029), 1);
    }

    #[test]
    fn a_noisy_first_sample_cannot_lock_the_wrong_bucket() {
        let p = policy();
        // First sample 20 ms from a provider whose latency is 90 ms.
        let mut s = smooth(&p, None, 0.020, 0.0);
        assert_eq!(s.bucket, 1);
        for t in 1..=120 {
            s = smooth(&p, Some(s), 0.090, f64::from(t));
        }
        assert_eq!(s.bucket, 2, "{}", s.seconds());
    }

    #[test]
    fn a_lasting_change_is_followed_within_a_few_time_constants() {
        let p = policy();
        // From 40 ms (bucket 1) to 300 ms (bucket 6, (250, 300]).
        let mut s = smooth(&p, None, 0.040, 0.0);
        for t in 1..=150 {
            s = smooth(&p, Some(s), 0.300, f64::from(t));
        }
        assert!(s.seconds() > 0.29, "{}", s.seconds());
        // Followed to within the band: bucket 5 (200, 250] holds up to 350 ms.
        assert_eq!(s.bucket, 5);
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
