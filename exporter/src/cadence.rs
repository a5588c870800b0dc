//! When a provider is due its calls: its probes on the rounds of its chain, its chain-id checks on
//! its probes, each a [`Cadence`] (an interval rounded up to whole ticks, shared with the
//! actuator, which allows a provider probed less often its longer interval).

use common::cadence::{probe_period, Cadence};
use common::config::{ExporterConfig, ProviderConfig};

/// How often one provider is sent each of its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderCadence {
    /// Its probes (a head request each), on its chain's rounds.
    pub probe: Cadence,
    /// Its `eth_chainId` checks, on its probes: never more often than those.
    pub chain_id: Cadence,
}

impl ProviderCadence {
    /// Its probes on the rounds of `[exporter] probe_interval`, its checks on its probes.
    pub fn new(provider: &ProviderConfig, exporter: &ExporterConfig) -> Self {
        let round = exporter.probe_interval;
        let probe = Cadence::new(probe_period(provider, exporter), round);
        Self {
            probe,
            chain_id: Cadence::new(exporter.chain_id_interval, probe.period()),
        }
    }
}
