//! The gates a server must pass to stay in the pool: what the probes say of its provider
//! ([`breach`], in the order the reasons are declared) and what its clients see through HAProxy
//! ([`client_breach`], judged against its peers on the same traffic).

use common::config::PolicyConfig;

use crate::client_signal::ClientSignal;
use crate::decision::{EjectReason, Observation};

/// The first gate `o` breaches. Each signal arrives already confirmed: `up` is 0 only when the
/// exporter's second attempt failed too, lag is judged on the provider's best recent answer, and
/// latency and error ratio are taken over a window by their queries. So one breach ejects.
pub fn breach(policy: &PolicyConfig, o: &Observation) -> Option<EjectReason> {
    let over = |value: Option<f64>, limit: f64| value.is_some_and(|v| v > limit);
    if o.chain_id_ok == Some(false) {
        Some(EjectReason::WrongChain)
    } else if !o.up {
        Some(EjectReason::Down)
    } else if over(o.block_age, policy.max_block_age.as_secs_f64()) {
        Some(EjectReason::Stale)
    } else if over(o.block_lag, policy.max_block_lag as f64) {
        Some(EjectReason::Lagging)
    } else if over(o.latency, policy.max_latency.as_secs_f64()) {
        Some(EjectReason::Slow)
    } else if over(o.error_ratio, policy.max_error_ratio) {
        Some(EjectReason::Erroring)
    } else {
        None
    }
}

/// A server's clients must fail this many times as often as its peers' (their median) for the
/// failures to be its own: what fails everywhere at once (a heavy `eth_getLogs`, HAProxy's own
/// queue) is the workload, not a provider.
pub const PEER_FACTOR: f64 = 3.0;

/// Clients see too many failures: at least `min_client_requests` requests in the window, a
/// failed share at `max_client_error_ratio` (1 turns the gate off), and [`PEER_FACTOR`] times
/// `peers`, the median failed share of the other servers. Without a peer to judge against (a
/// pool of two whose other server is out), the provider's JSON-RPC errors cannot be told from
/// the workload's (old blocks no plan holds, a method no provider serves): only HTTP failures
/// count then, so that the last server is not ejected for what its clients ask.
pub fn client_breach(
    policy: &PolicyConfig,
    clients: Option<ClientSignal>,
    peers: Option<f64>,
) -> Option<EjectReason> {
    let c = clients?;
    let enough = c.requests >= f64::from(policy.min_client_requests.max(1));
    let failed = match peers {
        Some(_) => c.failed_ratio(),
        None => c.http_failed_ratio(),
    };
    let failing = failed.is_some_and(|r| {
        r >= policy.max_client_error_ratio && r >= PEER_FACTOR * peers.unwrap_or(0.0)
    });
    (policy.max_client_error_ratio < 1.0 && enough && failing).then_some(EjectReason::ClientErrors)
}

/// For each server, the median failed share of the *other* servers with enough requests to
/// judge (`None` when none has).
pub fn peer_failed_ratios(
    policy: &PolicyConfig,
    clients: impl Iterator<Item = Option<ClientSignal>>,
) -> Vec<Option<f64>> {
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
                0 => None,
                n if n % 2 == 1 => Some(others[n / 2]),
                n => Some((others[n / 2 - 1] + others[n / 2]) / 2.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_signal::test_signal::signal;

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
            assert!(
                got.is_some_and(|got| (got - want).abs() < 1e-9),
                "{peers:?}"
            );
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
            peers[0],
            Some(0.01),
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
    fn without_a_peer_only_http_failures_judge() {
        let p = PolicyConfig::default();
        // A pool of two whose other server is out: no requests, no peer.
        let with = |failed: f64, rpc_errors: f64| {
            let mut alone = signal(100.0, failed, 0.0);
            if let Some(c) = alone.as_mut() {
                c.rpc_errors = rpc_errors;
            }
            let peers = peer_failed_ratios(&p, [alone, None].into_iter());
            assert_eq!(peers[0], None);
            client_breach(&p, alone, peers[0])
        };
        assert_eq!(
            with(0.0, 40.0),
            None,
            "its clients' JSON-RPC errors may be the workload's"
        );
        assert_eq!(with(40.0, 0.0), Some(EjectReason::ClientErrors));
        // Beside a peer that answers well, the same JSON-RPC errors are its own.
        let fine = signal(100.0, 0.0, 0.0);
        let mut erring = signal(100.0, 0.0, 0.0);
        if let Some(c) = erring.as_mut() {
            c.rpc_errors = 40.0;
        }
        let peers = peer_failed_ratios(&p, [erring, fine].into_iter());
        assert_eq!(
            client_breach(&p, erring, peers[0]),
            Some(EjectReason::ClientErrors)
        );
        assert_eq!(client_breach(&p, fine, peers[1]), None);
    }
}
