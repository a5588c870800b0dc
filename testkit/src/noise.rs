//! The noise of a healthy paid JSON-RPC provider: a heavy-tailed latency, a share of answers from
//! a node a block or two behind, a few 502s and hangs per thousand requests, a plan's rate limit,
//! and optionally an on/off flap. The knobs and why their defaults look like a paid provider are in
//! `testkit/NOISE.md`; this module only draws, per request, what the noise does to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

pub use crate::method_errors::{MethodAnswer, MethodErrors};

/// The noise applied to every request of a proxy in HTTP mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Noise {
    /// Median added latency; latencies are log-normal around it.
    pub median: Duration,
    /// Sigma of ln(latency): 1.2 puts p99 near 1 s for a 60 ms median.
    pub spread: f64,
    /// Cap of one drawn latency (the odd multi-second request).
    pub max_latency: Duration,
    /// Share of read requests answered by the replica (when it is behind this provider's head).
    pub replica_share: f64,
    /// Blocks the replica is kept behind this provider's head.
    pub replica_lag: u64,
    /// Share answered HTTP 502 with a load balancer's HTML page.
    pub error_share: f64,
    /// Share that hang for `hang` before being answered normally.
    pub hang_share: f64,
    /// How long a hanging request hangs (longer than a probe timeout).
    pub hang: Duration,
    /// A token bucket; above it HTTP 429 with a JSON-RPC error body.
    pub rate_limit: Option<RateLimit>,
    /// On/off cycles; while "bad" every request is answered HTTP 500.
    pub flap: Option<Flap>,
    /// Answers other than the node's to a share of the requests calling a method: a provider
    /// failing clients' calls while answering a prober's (which calls other methods) well. Each
    /// entry draws apart; shares of entries for one method add up.
    pub method_errors: Vec<MethodErrors>,
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// Alternating phases, starting with `bad` when the noise is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flap {
    pub bad: Duration,
    pub good: Duration,
}

/// What a proxy injected so far (HTTP mode; all zero in TCP mode). Counters only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoiseStats {
    /// Every HTTP request received, whatever it was answered.
    pub requests: u64,
    /// Requests answered by the replica.
    pub replica: u64,
    pub errors_502: u64,
    pub hangs: u64,
    pub rate_limited: u64,
    /// Requests answered HTTP 500 during a flap's bad phase.
    pub flap_errors: u64,
    /// Requests answered with [`MethodErrors`]' answer for calling its method.
    pub method_errors: u64,
}

impl Noise {
    /// A healthy paid provider whose median latency is `median` (see NOISE.md for the reasoning).
    pub fn paid_provider(median: Duration) -> Self {
        Self {
            median,
            spread: 1.2,
            max_latency: Duration::from_secs(3),
            replica_share: 0.1,
            replica_lag: 2,
            error_share: 0.003,
            hang_share: 0.001,
            hang: Duration::from_secs(3),
            rate_limit: Some(RateLimit {
                per_second: 250.0,
                burst: 50.0,
            }),
            flap: None,
            method_errors: Vec::new(),
        }
    }

    /// No noise at all: a plain HTTP pass-through.
    pub fn none() -> Self {
        Self {
            median: Duration::ZERO,
            spread: 0.0,
            max_latency: Duration::ZERO,
            replica_share: 0.0,
            replica_lag: 2,
            error_share: 0.0,
            hang_share: 0.0,
            hang: Duration::ZERO,
            rate_limit: None,
            flap: None,
            method_errors: Vec::new(),
        }
    }

    /// The latency for a standard-normal draw `z`: `median · e^(spread·z)`, capped at
    /// `max_latency`. Pure, so the distribution can be checked without sleeping.
    pub fn latency(&self, z: f64) -> Duration {
        let factor = (self.spread * z).exp();
        let drawn = self.median.as_secs_f64() * factor;
        if drawn.is_finite() && drawn < self.max_latency.as_secs_f64() {
            Duration::from_secs_f64(drawn.max(0.0))
        } else {
            self.max_latency
        }
    }
}

/// What the noise does to one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// A flap's bad phase: HTTP 500 at once.
    FlapError,
    /// Over the rate limit: HTTP 429 at once.
    RateLimited,
    /// HTTP 502 after `after`.
    BadGateway { after: Duration },
    /// [`MethodErrors`]' answer after `after`, for calling its method.
    MethodError {
        after: Duration,
        answer: MethodAnswer,
    },
    /// Answered by a node after `after`; `hang` says `after` is a hang, `replica` that a read may go
    /// to the replica.
    Forward {
        after: Duration,
        hang: bool,
        replica: bool,
    },
}

/// The noise in force and the state it draws from: a seedable RNG, the token bucket and the flap
/// clock.
pub(crate) struct NoiseState {
    noise: Noise,
    rng: SmallRng,
    tokens: f64,
    refilled: Instant,
    since: Instant,
}

impl NoiseState {
    pub(crate) fn new(noise: Noise, seed: u64, now: Instant) -> Self {
        let tokens = noise.rate_limit.map_or(0.0, |limit| limit.burst);
        Self {
            noise,
            rng: SmallRng::seed_from_u64(seed),
            tokens,
            refilled: now,
            since: now,
        }
    }

    pub(crate) fn noise(&self) -> &Noise {
        &self.noise
    }

    /// New knobs: a full bucket and a flap starting bad now; the random stream goes on.
    pub(crate) fn set(&mut self, noise: Noise, now: Instant) {
        self.tokens = noise.rate_limit.map_or(0.0, |limit| limit.burst);
        self.refilled = now;
        self.since = now;
        self.noise = noise;
    }

    /// New method errors; the other knobs, the bucket and the flap clock go on as they were.
    pub(crate) fn set_method_errors(&mut self, errors: Vec<MethodErrors>) {
        self.noise.method_errors = errors;
    }

    /// Restarts the random stream, so a test's sequential requests draw the same noise each run.
    pub(crate) fn seed(&mut self, seed: u64) {
        self.rng = SmallRng::seed_from_u64(seed);
    }

    /// Draws the noise for one request arriving at `now` that calls `methods` (one per call of a
    /// batch). Every call takes the same number of random values, so counts over sequential
    /// requests depend only on the seed.
    pub(crate) fn draw(&mut self, now: Instant, methods: &[String]) -> Verdict {
        let method_error: f64 = self.rng.random();
        let error: f64 = self.rng.random();
        let hang: f64 = self.rng.random();
        let replica: f64 = self.rng.random();
        let z = standard_normal(&mut self.rng);
        if self.flapping(now) {
            return Verdict::FlapError;
        }
        if !self.take_token(now) {
            return Verdict::RateLimited;
        }
        let latency = self.noise.latency(z);
        let mut below = 0.0;
        for m in &self.noise.method_errors {
            if methods.contains(&m.method) {
                below += m.share;
                if method_error < below {
                    return Verdict::MethodError {
                        after: latency,
                        answer: m.answer.clone(),
                    };
                }
            }
        }
        if error < self.noise.error_share {
            return Verdict::BadGateway { after: latency };
        }
        let hang = hang < self.noise.hang_share;
        Verdict::Forward {
            after: if hang { self.noise.hang } else { latency },
            hang,
            replica: replica < self.noise.replica_share,
        }
    }

    fn flapping(&self, now: Instant) -> bool {
        let Some(flap) = self.noise.flap else {
            return false;
        };
        let cycle = (flap.bad + flap.good).as_nanos();
        cycle > 0
            && now.saturating_duration_since(self.since).as_nanos() % cycle < flap.bad.as_nanos()
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let Some(limit) = self.noise.rate_limit else {
            return true;
        };
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A standard-normal draw by Box–Muller (rand_distr is not a dependency).
fn standard_normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln(u1) is finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The counters behind [`NoiseStats`], shared by a proxy's connections.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) replica: AtomicU64,
    pub(crate) errors_502: AtomicU64,
    pub(crate) hangs: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) flap_errors: AtomicU64,
    pub(crate) method_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> NoiseStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NoiseStats {
            requests: read(&self.requests),
            replica: read(&self.replica),
            errors_502: read(&self.errors_502),
            hangs: read(&self.hangs),
            rate_limited: read(&self.rate_limited),
            flap_errors: read(&self.flap_errors),
            method_errors: read(&self.method_errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantile(sorted: &[Duration], q: f64) -> Duration {
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    }

    #[test]
    fn paid_provider_latency_has_the_documented_median_and_p99() {
        let noise = Noise::paid_provider(Duration::from_millis(60));
        let mut rng = SmallRng::seed_from_u64(1);
        let mut samples: Vec<Duration> = (0..200_000)
            .map(|_| noise.latency(standard_normal(&mut rng)))
            .collect();
        samples.sort();
        let median = quantile(&samples, 0.5).as_secs_f64();
        let p99 = quantile(&samples, 0.99).as_secs_f64();
        assert!((0.055..0.065).contains(&median), "median {median}");
        assert!((0.85..1.15).contains(&p99), "p99 {p99}");
        assert_eq!(samples.last(), Some(&Duration::from_secs(3)), "the cap");
        assert!(quantile(&samples, 0.9999) <= Duration::from_secs(3));
    }

    #[test]
    fn latency_is_capped_and_never_negative() {
        let noise = Noise::paid_provider(Duration::from_millis(60));
        assert_eq!(noise.latency(0.0), Duration::from_millis(60));
        assert_eq!(noise.latency(100.0), Duration::from_secs(3));
        assert_eq!(noise.latency(f64::INFINITY), Duration::from_secs(3));
        assert!(noise.latency(-100.0) < Duration::from_micros(1));
        assert_eq!(Noise::none().latency(5.0), Duration::ZERO);
    }

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let noise = Noise {
            rate_limit: Some(RateLimit {
                per_second: 10.0,
                burst: 5.0,
            }),
            ..Noise::none()
        };
        let start = Instant::now();
        let mut state = NoiseState::new(noise, 1, start);
        let passed = (0..8)
            .filter(|_| state.draw(start, &[]) != Verdict::RateLimited)
            .count();
        assert_eq!(passed, 5, "the burst");
        // 10/s: one token per 100 ms.
        let later = start + Duration::from_millis(350);
        let passed = (0..8)
            .filter(|_| state.draw(later, &[]) != Verdict::RateLimited)
            .count();
        assert_eq!(passed, 3);
        // An idle minute refills to the burst, not beyond.
        let idle = later + Duration::from_secs(60);
        let passed = (0..20)
            .filter(|_| state.draw(idle, &[]) != Verdict::RateLimited)
            .count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn flap_starts_bad_and_alternates() {
        let second = Duration::from_secs(1);
        let noise = Noise {
            flap: Some(Flap {
                bad: second,
                good: 2 * second,
            }),
            ..Noise::none()
        };
        let start = Instant::now();
        let mut state = NoiseState::new(noise, 1, start);
        let at = |ms: u64| start + Duration::from_millis(ms);
        let bad: Vec<bool> = [0, 999, 1000, 2999, 3000, 3999, 4000]
            .into_iter()
            .map(|ms| state.draw(at(ms), &[]) == Verdict::FlapError)
            .collect();
        assert_eq!(bad, [true, true, false, false, true, true, false]);
    }

    #[test]
    fn several_method_errors_add_up_for_one_method_and_stay_apart_by_method() {
        let noise = Noise {
            method_errors: vec![
                MethodErrors::header_not_found("eth_call", 0.2),
                MethodErrors::reverted("eth_call", 0.3),
                MethodErrors::no_logs(0.5),
            ],
            ..Noise::none()
        };
        let now = Instant::now();
        let mut state = NoiseState::new(noise, 11, now);
        let call = vec!["eth_call".to_owned()];
        let (mut missing, mut reverted) = (0, 0);
        for _ in 0..10_000 {
            if let Verdict::MethodError {
                answer: MethodAnswer::RpcError { code, .. },
                ..
            } = state.draw(now, &call)
            {
                if code == 3 {
                    reverted += 1;
                } else {
                    missing += 1;
                }
            }
        }
        assert!(
            (1_800..2_200).contains(&missing),
            "{missing} of 10 000 at 20 %"
        );
        assert!(
            (2_800..3_200).contains(&reverted),
            "{reverted} of 10 000 at 30 %"
        );
        let logs = vec!["eth_getLogs".to_owned()];
        let empty = (0..10_000)
            .filter(|_| {
                matches!(
                    state.draw(now, &logs),
                    Verdict::MethodError {
                        answer: MethodAnswer::Result(_),
                        ..
                    }
                )
            })
            .count();
        assert!((4_800..5_200).contains(&empty), "{empty} of 10 000 at 50 %");
    }

    #[test]
    fn method_errors_hit_their_method_at_their_share_and_nothing_else() {
        let failing = |share| Noise {
            error_share: 0.1,
            method_errors: vec![MethodErrors::bad_gateway("eth_blockNumber", share)],
            ..Noise::none()
        };
        let now = Instant::now();
        let calls = |methods: &[&str]| methods.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        let mut state = NoiseState::new(failing(0.3), 5, now);
        let method_error = |v: Verdict| matches!(v, Verdict::MethodError { .. });
        let single = calls(&["eth_blockNumber"]);
        let hits = (0..10_000)
            .filter(|_| method_error(state.draw(now, &single)))
            .count();
        assert!((2_800..3_200).contains(&hits), "{hits} of 10 000 at 30 %");
        let batch = calls(&["eth_chainId", "eth_blockNumber"]);
        let hits = (0..10_000)
            .filter(|_| method_error(state.draw(now, &batch)))
            .count();
        assert!((2_800..3_200).contains(&hits), "a batch calling it: {hits}");
        // Other methods draw exactly what they would without the knob.
        let other = calls(&["eth_chainId"]);
        let mut with = NoiseState::new(failing(1.0), 9, now);
        let mut without = NoiseState::new(Noise::none(), 9, now);
        without.set(
            Noise {
                error_share: 0.1,
                ..Noise::none()
            },
            now,
        );
        for _ in 0..2_000 {
            let verdict = with.draw(now, &other);
            assert!(!method_error(verdict.clone()));
            assert_eq!(verdict, without.draw(now, &other));
        }
    }

    #[test]
    fn no_noise_forwards_at_once_to_the_primary() {
        let now = Instant::now();
        let mut state = NoiseState::new(Noise::none(), 3, now);
        for _ in 0..1000 {
            assert_eq!(
                state.draw(now, &[]),
                Verdict::Forward {
                    after: Duration::ZERO,
                    hang: false,
                    replica: false
                }
            );
        }
    }
}
