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

use common::config::PolicyConfig;

use crate::policy::EjectReason;

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
    /// Answers with a 4xx status (`hrsp_4xx`): from a JSON-RPC provider, a 429 (rate limited)
    /// in practice, as JSON-RPC errors travel in 200s.
    pub rejected: u64,
    /// Failed attempts HAProxy retried (`wretr`).
    pub retried: u64,
    /// Failed attempts HAProxy sent to another server (`wredis`).
    pub redispatched: u64,
}

impl ClientCounters {
    fn fields(&self) -> [u64; 7] {
        [
            self.selected,
            self.server_errors,
            self.response_errors,
            self.connection_errors,
            self.rejected,
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
    /// Of those, rate-limited ones (4xx).
    pub rate_limited: f64,
    /// The span the increase was measured over.
    pub seconds: f64,
}

impl ClientSignal {
    /// Requests per second sent to the server.
    pub fn rate(&self) -> f64 {
        self.requests / self.seconds
    }

    /// Share of requests that failed, `None` without requests.
    pub fn failed_ratio(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| (self.failed / self.requests).clamp(0.0, 1.0))
    }

    /// Share of requests that were rate limited, `None` without requests.
    pub fn rate_limited_ratio(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| (self.rate_limited / self.requests).clamp(0.0, 1.0))
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
            rate_limited: delta(|c| c.rejected),
            seconds,
        })
    }
}

/// A server's clients must fail this many times as often as its peers' (their median) for the
/// failures to be its own: what fails everywhere at once (a heavy `eth_getLogs`, HAProxy's own
/// queue) is the workload, not a provider.
pub const PEER_FACTOR: f64 = 3.0;

/// Clients see too many failures: at least `min_client_requests` requests in the window, a
/// failed share at `max_client_error_ratio` (1 turns the gate off), and [`PEER_FACTOR`] times
/// `peers`, the median failed share of the other servers.
pub fn client_breach(
    policy: &PolicyConfig,
    clients: Option<ClientSignal>,
    peers: f64,
) -> Option<EjectReason> {
    let c = clients?;
    let enough = c.requests >= f64::from(policy.min_client_requests.max(1));
    let failing = c
        .failed_ratio()
        .is_some_and(|r| r >= policy.max_client_error_ratio && r >= PEER_FACTOR * peers);
    (policy.max_client_error_ratio < 1.0 && enough && failing).then_some(EjectReason::ClientErrors)
}

/// For each server, the median failed share of the *other* servers with enough requests to
/// judge (0 when none has).
pub fn peer_failed_ratios(
    policy: &PolicyConfig,
    clients: impl Iterator<Item = Option<ClientSignal>>,
) -> Vec<f64> {
    let min = f64::from(policy.min_client_requests.max(1));
    let ratios: Vec<Option<f64>> = clients
        .map(|c| {
            c.filter(|c| c.requests >= min)
                .and_then(|c| c.failed_ratio())
        })
        .collect();
    (0..ratios.len())
        .map(|i| {
            let mut others: Vec<f64> = ratios
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .filter_map(|(_, r)| *r)
                .collect();
            others.sort_by(f64::total_cmp);
            match others.len() {
                0 => 0.0,
                n if n % 2 == 1 => others[n / 2],
                n => (others[n / 2 - 1] + others[n / 2]) / 2.0,
            }
        })
        .collect()
}

/// The fewest client requests in the window that say a server is rate limited.
const RATE_LIMIT_EVIDENCE: f64 = 20.0;

/// A share of 4xx above this is rate limiting, not a stray answer.
const RATE_LIMITED_RATIO: f64 = 0.01;

/// How a learned limit grows back, per second since it was set: by this share of itself…
const GROWTH_SHARE_PER_SECOND: f64 = 0.01;
/// …and at least by this many requests per second, so a limit cut near zero recovers too.
const GROWTH_RPS_PER_SECOND: f64 = 0.1;

/// A request rate a server was seen to carry without 429s, learned at a time, and growing back
/// with time (with evidence or without: a server capped near zero gets too few requests to
/// show that its 429s have stopped).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnedLimit {
    /// Requests per second when learned.
    pub rps: f64,
    /// When it was learned (policy clock, seconds).
    pub since: f64,
}

impl LearnedLimit {
    /// The limit at `now`.
    pub fn at(&self, now: f64) -> f64 {
        let elapsed = (now - self.since).max(0.0);
        self.rps * (1.0 + GROWTH_SHARE_PER_SECOND * elapsed) + GROWTH_RPS_PER_SECOND * elapsed
    }

    /// Cut to what the server carried without 429s when they come, on evidence newer than the
    /// last cut (a window still holding the 429s that caused it would cut again and again, to
    /// below what the server can carry); forgotten once it could carry the whole backend's
    /// `demand` (it no longer binds).
    pub fn learn(
        learned: Option<Self>,
        clients: Option<ClientSignal>,
        demand: Option<f64>,
        now: f64,
    ) -> Option<Self> {
        let limited = clients.filter(|c| {
            c.requests >= RATE_LIMIT_EVIDENCE
                && c.rate_limited_ratio()
                    .is_some_and(|r| r > RATE_LIMITED_RATIO)
                && learned.is_none_or(|l| now - c.seconds >= l.since)
        });
        if let Some(c) = limited {
            let served = ((c.requests - c.rate_limited).max(0.0) / c.seconds).max(1.0);
            let rps = learned.map_or(served, |l| l.at(now).min(served));
            return Some(Self { rps, since: now });
        }
        learned.filter(|l| demand.is_none_or(|d| l.at(now) < d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(requests: f64, failed: f64, rate_limited: f64) -> Option<ClientSignal> {
        Some(ClientSignal {
            requests,
            failed,
            rate_limited,
            seconds: 5.0,
        })
    }

    #[test]
    fn failures_everywhere_are_the_workload_not_a_provider() {
        let p = PolicyConfig::default();
        let all = [
            signal(100.0, 40.0, 0.0),
            signal(100.0, 35.0, 0.0),
            signal(100.0, 45.0, 0.0),
        ];
        let peers = peer_failed_ratios(&p, all.into_iter());
        for (got, want) in peers.iter().zip([0.40, 0.425, 0.375]) {
            assert!((got - want).abs() < 1e-9, "{peers:?}");
        }
        for (c, peers) in all.iter().zip(peers) {
            assert_eq!(client_breach(&p, *c, peers), None);
        }
        let one = [
            signal(100.0, 40.0, 0.0),
            signal(100.0, 1.0, 0.0),
            signal(10.0, 9.0, 0.0),
        ];
        let peers = peer_failed_ratios(&p, one.into_iter());
        assert_eq!(
            peers[0], 0.01,
            "the server with too few requests is no peer"
        );
        assert_eq!(
            client_breach(&p, one[0], peers[0]),
            Some(EjectReason::ClientErrors)
        );
        assert_eq!(
            client_breach(&p, one[2], peers[2]),
            None,
            "too few requests"
        );
    }

    #[test]
    fn a_learned_limit_is_cut_grows_back_with_time_and_is_forgotten() {
        // 40 req/s sent over 5 s, half of them 429: it carries 20 req/s.
        let l = LearnedLimit::learn(None, signal(200.0, 0.0, 100.0), Some(120.0), 0.0).unwrap();
        assert_eq!(l.at(0.0), 20.0);
        // No evidence at all (capped near zero, say): it still grows.
        let l = LearnedLimit::learn(Some(l), None, Some(120.0), 10.0).unwrap();
        assert!((l.at(10.0) - 23.0).abs() < 1e-9, "{}", l.at(10.0));
        // A new cut never raises it.
        let cut = LearnedLimit::learn(Some(l), signal(200.0, 0.0, 10.0), Some(120.0), 10.0);
        assert_eq!(cut.map(|c| c.at(10.0)), Some(23.0));
        // The window that holds the 429s behind the last cut does not cut again.
        let cut = cut.unwrap();
        assert_eq!(cut.since, 10.0);
        let at = |t: f64| {
            let c = LearnedLimit::learn(Some(cut), signal(50.0, 0.0, 40.0), Some(120.0), t);
            c.map(|c| c.at(t))
        };
        assert_eq!(at(12.0), Some(cut.at(12.0)), "evidence from before the cut");
        assert_eq!(
            at(15.0),
            Some(2.0),
            "a new window of 429s: cut to what it carried"
        );
        // Cut to nothing, it recovers at GROWTH_RPS_PER_SECOND at least.
        let zero = LearnedLimit::learn(None, signal(100.0, 0.0, 100.0), Some(50.0), 0.0).unwrap();
        assert_eq!(zero.at(0.0), 1.0);
        assert!(zero.at(60.0) > 7.0);
        // Once it could carry the whole backend, it no longer binds: forgotten.
        assert_eq!(LearnedLimit::learn(Some(l), None, Some(20.0), 10.0), None);
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

    fn at(selected: u64, server_errors: u64, rejected: u64) -> ClientCounters {
        ClientCounters {
            selected,
            server_errors,
            rejected,
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
}
