//! What clients see: HAProxy counts every client request a server was chosen for and how it
//! ended, which the probes (one request a second) cannot. The actuator reads the counters every
//! cycle; their increase over the signal window is the passive signal: the backend's request
//! rate, and per server the share of requests that failed and that were rate limited.
//!
//! With the shipped retries (`retry-on … 502 …`, `option redispatch 1`) a failed attempt that
//! HAProxy retries on another server is not counted in the failing server's `hrsp_5xx`, `eresp`
//! or `econ` but in its `wredis` (redispatched) and `wretr` (retried): measured on HAProxy 2.6,
//! a server answering 502 to 29 requests out of 29 showed `hrsp_5xx` 0, `wretr` 29, `wredis` 29,
//! one refusing connections `econ` 0, `wredis` 29. Failed attempts are therefore the final
//! failures plus the larger of `wretr` and `wredis` (with redispatch both count one retried
//! attempt).
//!
//! Counters only ever grow while HAProxy runs; a counter that went down means HAProxy restarted,
//! and the window starts again (no evidence until it has spanned a cycle).

use std::collections::VecDeque;

/// One server's cumulative counters from `show stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientCounters {
    /// Times the load balancer chose the server (`lbtot`): the requests sent to it.
    pub selected: u64,
    /// Answers with a 5xx status (`hrsp_5xx`).
    pub server_errors: u64,
    /// Responses that broke off or could not be read (`eresp`).
    pub response_errors: u64,
    /// Connections that failed (`econ`).
    pub connection_errors: u64,
    /// Rate-limit answers (HTTP 429, JSON-RPC rate limits in a 200), counted by the backend's
    /// stick table (`gpc0`, see [`crate::haproxy::table`]): 0 where the backend does not count
    /// them. Not `show stat`'s `hrsp_4xx`, which counts every 4xx, clients' malformed requests too.
    pub rate_limited: u64,
    /// The provider's JSON-RPC errors inside a 200 (`gpc1` of the same table): 0 where the
    /// backend does not count them.
    pub rpc_errors: u64,
    /// Failed attempts HAProxy retried (`wretr`).
    pub retried: u64,
    /// Failed attempts HAProxy sent to another server (`wredis`).
    pub redispatched: u64,
}

impl ClientCounters {
    fn fields(&self) -> [u64; 8] {
        [
            self.selected,
            self.server_errors,
            self.response_errors,
            self.connection_errors,
            self.rate_limited,
            self.rpc_errors,
            self.retried,
            self.redispatched,
        ]
    }
}

/// A server's client requests over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientSignal {
    /// Requests sent to the server.
    pub requests: f64,
    /// Of those, failed attempts: 5xx, connection and response errors, retried or not.
    pub failed: f64,
    /// Of those, answers with the provider's JSON-RPC error inside a 200.
    pub rpc_errors: f64,
    /// Of those, rate-limited ones (HTTP 429 or a JSON-RPC rate limit).
    pub rate_limited: f64,
    /// The span the increase was measured over.
    pub seconds: f64,
}

impl ClientSignal {
    /// Requests per second sent to the server.
    pub fn rate(&self) -> f64 {
        self.requests / self.seconds
    }

    /// Share of requests that failed, at the HTTP level or with the provider's JSON-RPC error:
    /// what its clients see. `None` without requests.
    pub fn failed_ratio(&self) -> Option<f64> {
        self.share(self.failed + self.rpc_errors)
    }

    /// Share of requests that failed at the HTTP level, `None` without requests.
    pub fn http_failed_ratio(&self) -> Option<f64> {
        self.share(self.failed)
    }

    /// Share of requests answered with the provider's JSON-RPC error, `None` without requests.
    pub fn rpc_error_ratio(&self) -> Option<f64> {
        self.share(self.rpc_errors)
    }

    /// Share of requests that were rate limited, `None` without requests.
    pub fn rate_limited_ratio(&self) -> Option<f64> {
        self.share(self.rate_limited)
    }

    fn share(&self, count: f64) -> Option<f64> {
        (self.requests > 0.0).then(|| (count / self.requests).clamp(0.0, 1.0))
    }
}

/// Most snapshots kept per server, whatever the window and interval.
const MAX_SNAPSHOTS: usize = 256;

/// One server's counter snapshots within the window, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterHistory(VecDeque<(f64, ClientCounters)>);

impl CounterHistory {
    /// Records the counters read at `now` (seconds) and returns their increase since the
    /// newest snapshot at least `window` old (or the oldest there is, when none is yet).
    /// `None` after a restart of HAProxy or before two snapshots.
    pub fn record(
        &mut self,
        now: f64,
        counters: ClientCounters,
        window: f64,
    ) -> Option<ClientSignal> {
        let went_back = self.0.back().is_some_and(|(t, last)| {
            *t > now
                || last
                    .fields()
                    .iter()
                    .zip(counters.fields())
                    .any(|(a, b)| b < *a)
        });
        if went_back {
            self.0.clear();
        }
        // Keep one snapshot at or beyond the window's start: the base of the increase.
        while self.0.len() >= 2 && self.0[1].0 <= now - window {
            self.0.pop_front();
        }
        if self.0.len() >= MAX_SNAPSHOTS {
            self.0.pop_front();
        }
        self.0.push_back((now, counters));
        let (since, base) = *self.0.front()?;
        let seconds = now - since;
        if seconds <= 0.0 {
            return None;
        }
        let delta = |f: fn(&ClientCounters) -> u64| f(&counters).saturating_sub(f(&base)) as f64;
        Some(ClientSignal {
            requests: delta(|c| c.selected),
            failed: delta(|c| c.server_errors)
                + delta(|c| c.response_errors)
                + delta(|c| c.connection_errors)
                + delta(|c| c.retried).max(delta(|c| c.redispatched)),
            rpc_errors: delta(|c| c.rpc_errors),
            rate_limited: delta(|c| c.rate_limited),
            seconds,
        })
    }
}

/// The fewest client requests in the window that say a server is rate limited.
const RATE_LIMIT_EVIDENCE: f64 = 20.0;

/// A share of 429s above this is rate limiting, not a stray answer.
const RATE_LIMITED_RATIO: f64 = 0.01;

/// While a server is sent no more than its learned limit, 429s under this share are stray (a
/// per-method limit on heavy calls, a replica's hiccup): a limit that is kept does not answer
/// this many. Over it, the limit itself has fallen (a plan changed, a shared key).
const LIMIT_FELL_RATIO: f64 = 0.1;

/// How long a rate served without 429s counts as proven.
const PROVEN_FOR_SECONDS: f64 = 900.0;

/// What the evidence says a server carries: at most `rps` (learned from its 429s: here and below,
/// every rate-limit answer, an HTTP 429 or a JSON-RPC rate limit inside a 200), and at least
/// `proven` (served without them, recently). It moves only on evidence, never with the clock:
/// - a window of 429s cuts it to what the server served meanwhile, never below `proven`, and
///   only when the server was sent more than its limit, or answered so many 429s within it that
///   the limit itself must have fallen; 429s that keep coming at a few percent within the limit
///   are stray and cut nothing, so a limit cannot compound downwards;
/// - a window without 429s proves the rate it carried, and raises a limit below that rate;
/// - a limit is forgotten once it could carry the whole backend's demand (it no longer binds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnedLimit {
    /// Requests per second the server carries at most; `None`: no limit seen.
    pub rps: Option<f64>,
    /// When the evidence for `rps` came (policy clock, seconds).
    pub since: f64,
    /// Requests per second it served without 429s; 0 when none is known.
    pub proven: f64,
    /// When it did.
    pub proven_at: f64,
}

impl LearnedLimit {
    /// A limit of `rps` learned at `since`, with nothing proven yet.
    pub fn new(rps: f64, since: f64) -> Self {
        Self {
            rps: Some(rps),
            since,
            proven: 0.0,
            proven_at: since,
        }
    }

    /// The rate served without 429s that still counts at `now`.
    fn proven_at(&self, now: f64) -> f64 {
        if now - self.proven_at <= PROVEN_FOR_SECONDS {
            self.proven
        } else {
            0.0
        }
    }

    /// What the evidence says after the window `clients` (evidence newer than the limit's only:
    /// a window still holding the 429s behind the last cut would cut again), given the backend's
    /// `demand`, at `now`.
    pub fn learn(
        learned: Option<Self>,
        clients: Option<ClientSignal>,
        demand: Option<f64>,
        now: f64,
    ) -> Option<Self> {
        let fresh = clients.filter(|c| {
            c.requests >= RATE_LIMIT_EVIDENCE && learned.is_none_or(|l| now - c.seconds >= l.since)
        });
        let mut next = match fresh {
            None => learned?,
            Some(c) => {
                let known = learned.unwrap_or(Self {
                    rps: None,
                    since: now,
                    proven: 0.0,
                    proven_at: now,
                });
                let proven = known.proven_at(now);
                let sent = c.rate();
                let share = c.rate_limited_ratio().unwrap_or(0.0);
                let served = ((c.requests - c.rate_limited).max(0.0) / c.seconds).max(1.0);
                match known.rps {
                    _ if share <= RATE_LIMITED_RATIO => Self {
                        rps: known.rps.map(|l| l.max(sent)),
                        since: if known.rps.is_some_and(|l| sent > l) {
                            now
                        } else {
                            known.since
                        },
                        proven: proven.max(sent),
                        proven_at: now,
                    },
                    // Stray: within the limit, a few percent.
                    Some(l) if sent <= l && share < LIMIT_FELL_RATIO => known,
                    // The limit itself fell: what was proven before no longer holds.
                    Some(l) if sent <= l => Self::new(served, now),
                    _ => Self {
                        rps: Some(served.max(proven)),
                        since: now,
                        ..known
                    },
                }
            }
        };
        // A limit that could carry the whole backend no longer binds.
        if next.rps.zip(demand).is_some_and(|(l, d)| l >= d) {
            next.rps = None;
        }
        Some(next)
    }
}

/// Signals for the unit tests of the modules that judge them.
#[cfg(test)]
pub(crate) mod test_signal {
    use super::ClientSignal;

    /// `requests` over 5 s, of which `failed` failed and `rate_limited` were rate limited.
    pub fn signal(requests: f64, failed: f64, rate_limited: f64) -> Option<ClientSignal> {
        Some(ClientSignal {
            requests,
            failed,
            rpc_errors: 0.0,
            rate_limited,
            seconds: 5.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::test_signal::signal;
    use super::*;

    /// `rate` req/s sent for 5 s, `share` of them answered 429.
    fn window(rate: f64, share: f64) -> Option<ClientSignal> {
        signal(rate * 5.0, 0.0, rate * 5.0 * share)
    }

    #[test]
    fn a_limit_is_learned_from_429s_and_cut_to_what_was_served() {
        // 40 req/s sent, half of them 429: it carries 20 req/s.
        let l = LearnedLimit::learn(None, window(40.0, 0.5), Some(120.0), 0.0).unwrap();
        assert_eq!(l.rps, Some(20.0));
        // No evidence: it stays, whatever the clock.
        let kept = LearnedLimit::learn(Some(l), None, Some(120.0), 600.0);
        assert_eq!(kept.and_then(|k| k.rps), Some(20.0));
        // The window holding the 429s behind the cut does not cut again.
        let again = LearnedLimit::learn(Some(l), window(40.0, 0.5), Some(120.0), 2.0);
        assert_eq!(again, Some(l));
        // Sent more than it again, with 429s: cut to what it served.
        let cut = LearnedLimit::learn(Some(l), window(30.0, 0.5), Some(120.0), 10.0).unwrap();
        assert_eq!(cut.rps, Some(15.0));
    }

    #[test]
    fn stray_429s_within_the_limit_do_not_compound() {
        // 3 % 429s whatever the rate: learned once, then held however often it repeats.
        let mut l = LearnedLimit::learn(None, window(33.7, 0.03), Some(90.0), 0.0).unwrap();
        let first = l.rps.unwrap();
        for k in 1..200 {
            let now = f64::from(k) * 5.0;
            let sent = first * 0.9;
            l = LearnedLimit::learn(Some(l), window(sent, 0.03), Some(90.0), now).unwrap();
        }
        assert_eq!(l.rps, Some(first), "held, not ratcheted");
    }

    #[test]
    fn a_fallen_limit_is_learned_again_and_a_higher_one_on_evidence() {
        let l = LearnedLimit::learn(None, window(40.0, 0.5), Some(120.0), 0.0).unwrap();
        // Within the limit, a fifth answered 429: the plan itself changed.
        let fell = LearnedLimit::learn(Some(l), window(18.0, 0.2), Some(120.0), 10.0).unwrap();
        assert!((fell.rps.unwrap() - 14.4).abs() < 1e-9, "{fell:?}");
        // Served 30 req/s without 429s (another server failed, say): it carries that.
        let more = LearnedLimit::learn(Some(fell), window(30.0, 0.0), Some(120.0), 20.0).unwrap();
        assert_eq!((more.rps, more.proven), (Some(30.0), 30.0));
        // A cut is never below what was proven clean.
        let cut = LearnedLimit::learn(Some(more), window(40.0, 0.5), Some(120.0), 30.0).unwrap();
        assert_eq!(cut.rps, Some(30.0));
    }

    #[test]
    fn a_limit_that_no_longer_binds_is_forgotten_and_none_is_learned_from_a_clean_window() {
        let l = LearnedLimit::learn(None, window(40.0, 0.5), Some(120.0), 0.0).unwrap();
        let rps = |l: Option<LearnedLimit>| l.and_then(|l| l.rps);
        assert_eq!(
            rps(LearnedLimit::learn(Some(l), None, Some(20.0), 10.0)),
            None
        );
        let clean = LearnedLimit::learn(None, window(40.0, 0.0), Some(120.0), 0.0);
        assert_eq!(
            clean.map(|c| (c.rps, c.proven)),
            Some((None, 40.0)),
            "proven, no limit"
        );
        assert_eq!(
            LearnedLimit::learn(None, signal(10.0, 0.0, 10.0), Some(120.0), 0.0),
            None,
            "too few requests"
        );
    }

    #[test]
    fn retried_attempts_count_as_failed_once() {
        let mut h = CounterHistory::default();
        let at = |selected, retried, redispatched| ClientCounters {
            selected,
            retried,
            redispatched,
            ..Default::default()
        };
        h.record(0.0, at(0, 0, 0), 3.0);
        // As HAProxy counted a server answering 502 to everything, retried elsewhere.
        let s = h.record(1.0, at(29, 29, 29), 3.0).unwrap();
        assert_eq!(s.failed_ratio(), Some(1.0));
        // And one refusing connections.
        let s = h.record(2.0, at(58, 29, 58), 3.0).unwrap();
        assert_eq!(s.failed_ratio(), Some(1.0));
    }

    fn at(selected: u64, server_errors: u64, rate_limited: u64) -> ClientCounters {
        ClientCounters {
            selected,
            server_errors,
            rate_limited,
            ..Default::default()
        }
    }

    #[test]
    fn the_increase_spans_the_window() {
        let mut h = CounterHistory::default();
        assert_eq!(h.record(0.0, at(100, 0, 0), 3.0), None, "one snapshot");
        let s = h.record(1.0, at(110, 1, 0), 3.0).unwrap();
        assert_eq!((s.requests, s.failed, s.seconds), (10.0, 1.0, 1.0));
        h.record(2.0, at(120, 1, 0), 3.0);
        h.record(3.0, at(130, 1, 2), 3.0);
        let s = h.record(4.0, at(140, 4, 2), 3.0).unwrap();
        assert_eq!((s.requests, s.failed, s.rate_limited), (30.0, 3.0, 2.0));
        assert_eq!(s.seconds, 3.0, "from the snapshot 3 s old");
        assert_eq!(s.rate(), 10.0);
        assert_eq!(s.failed_ratio(), Some(0.1));
    }

    #[test]
    fn json_rpc_errors_fail_clients_beside_http_failures() {
        let mut h = CounterHistory::default();
        h.record(0.0, at(0, 0, 0), 3.0);
        let counters = ClientCounters {
            rpc_errors: 30,
            ..at(100, 10, 0)
        };
        let s = h.record(1.0, counters, 3.0).unwrap();
        assert_eq!(s.rpc_errors, 30.0);
        assert_eq!(s.rpc_error_ratio(), Some(0.3));
        assert_eq!(
            s.failed_ratio(),
            Some(0.4),
            "10 HTTP failures and 30 errors in a 200"
        );
    }

    #[test]
    fn a_counter_going_back_is_a_restart_not_a_negative_rate() {
        let mut h = CounterHistory::default();
        h.record(0.0, at(1000, 10, 0), 3.0);
        h.record(1.0, at(1010, 10, 0), 3.0);
        assert_eq!(h.record(2.0, at(5, 0, 0), 3.0), None, "restarted");
        let s = h.record(3.0, at(15, 1, 0), 3.0).unwrap();
        assert_eq!((s.requests, s.failed), (10.0, 1.0));
    }

    #[test]
    fn no_requests_is_no_ratio_and_memory_is_bounded() {
        let mut h = CounterHistory::default();
        for i in 0..1000 {
            h.record(f64::from(i) * 1e-3, at(0, 0, 0), 1e9);
        }
        assert!(h.0.len() <= MAX_SNAPSHOTS);
        let s = h.record(2.0, at(0, 0, 0), 1e9).unwrap();
        assert_eq!(s.failed_ratio(), None);
        assert_eq!(s.rate_limited_ratio(), None);
    }

    proptest::proptest! {
        /// Windows clean or with stray 429s (under the share that says the limit fell), at any
        /// rates, every 5 s: once the server served X req/s without 429s, its limit is never
        /// below X within the time that counts as proven.
        #[test]
        fn a_rate_served_without_429s_is_never_cut_below(
            windows in proptest::collection::vec((1.0f64..200.0, 0u8..2, 0.011f64..0.099), 1..80),
        ) {
            let mut learned = None;
            let mut best_clean: f64 = 0.0;
            for (k, (rate, stray, share)) in windows.into_iter().enumerate() {
                let now = 5.0 * (k as f64 + 1.0);
                let share = if stray == 1 { share } else { 0.0 };
                learned = LearnedLimit::learn(learned, window(rate, share), None, now);
                if share == 0.0 {
                    best_clean = best_clean.max(rate);
                }
                if let Some(limit) = learned.and_then(|l| l.rps) {
                    proptest::prop_assert!(limit + 1e-9 >= best_clean, "{learned:?} below {best_clean}");
                }
            }
        }
    }
}
