//! What one arm of the benchmark is: who sets the weights, its three providers (noise, tier,
//! plan limit), how many of them its chain has, its policy and what its clients call. The
//! failover, flap and noisy parts use [`ArmSpec::standard`]; the pool-of-two part
//! [`ArmSpec::pool_of_two`]; the routing part varies providers, tiers, plan limits and backend
//! options.

use std::time::Duration;

use testkit::fault_proxy::{FaultProxy, Noise};
use testkit::metrics_engine::Engine;

pub const CHAIN_ID: u64 = 31337;
/// The provider faults are injected into.
pub const FAULTY: usize = 1;
pub const SERVERS: [&str; 3] = ["n1", "n2", "n3"];
/// The providers' median latencies, fastest first.
pub const MEDIANS_MS: [u64; 3] = [30, 60, 120];

/// One way of running HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// ethrpc's actuator with the benchmark's policy.
    Ethrpc,
    /// The actuator configured as the seed: equal weights, only block age ≥ 150 s and latency
    /// ≥ 3 s, every 60 s.
    Seed,
    /// No actuator: HAProxy and its health checks alone.
    HaproxyOnly,
}

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Arm::Ethrpc => "ethrpc",
            Arm::Seed => "seed",
            Arm::HaproxyOnly => "haproxy-only",
        }
    }
}

/// The method the client load calls unless an arm says otherwise.
pub const CLIENT_METHOD: &str = "eth_blockNumber";

/// One provider of an arm: its noise, and what its `[[chain.provider]]` says besides its name
/// and URL.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub noise: Noise,
    pub tier: u8,
    pub max_rps: Option<f64>,
    /// Also in HAProxy as `NAME-backup`, a `backup` server at full weight that the actuator does
    /// not know: HAProxy sends it traffic whenever no other server is usable.
    pub backup_twin: bool,
}

impl ProviderSpec {
    /// A healthy paid provider (tier 1, no plan limit) with this median latency.
    pub fn paid(median_ms: u64) -> Self {
        Self {
            noise: Noise::paid_provider(Duration::from_millis(median_ms)),
            tier: 1,
            max_rps: None,
            backup_twin: false,
        }
    }
}

/// What one arm runs.
#[derive(Debug, Clone)]
pub struct ArmSpec {
    /// Who sets the weights.
    pub arm: Arm,
    /// Its frontend (`fe-NAME`), backend (`be-NAME`) and chain are named after it.
    pub name: &'static str,
    /// In [`SERVERS`] order.
    pub providers: [ProviderSpec; 3],
    /// How many of them, from the first, the chain has: 3, or 2 for a pool of two (the third
    /// then stands `disabled` in HAProxy, unknown to the exporter and the actuator).
    pub pool: usize,
    /// Lines added to the shipped backend's options, e.g. `default-server observe layer7`.
    pub backend_options: &'static str,
    /// The chain's policy keys for an `ethrpc` actuator.
    pub policy: String,
    /// Extra `[actuator]` keys for an `ethrpc` actuator.
    pub actuator: &'static str,
    /// What the client load calls.
    pub client_method: &'static str,
    /// The metrics engine its actuator queries (each engine scrapes the same exporter).
    pub engine: Engine,
}

impl ArmSpec {
    /// The arm of the noisy, failover and flap parts: three healthy paid providers with
    /// [`MEDIANS_MS`], all primaries.
    pub fn standard(arm: Arm) -> Self {
        Self {
            arm,
            name: arm.name(),
            providers: MEDIANS_MS.map(ProviderSpec::paid),
            pool: SERVERS.len(),
            backend_options: "",
            policy: ETHRPC_POLICY.to_owned(),
            actuator: "",
            client_method: CLIENT_METHOD,
            engine: Engine::Prometheus,
        }
    }

    /// The most common setup: two healthy paid providers (n1, n2), the default policy (no
    /// `max_block_age` tuning, whatever the block time).
    pub fn pool_of_two(arm: Arm) -> Self {
        Self {
            pool: 2,
            policy: String::new(),
            ..Self::standard(arm)
        }
    }

    /// The standard ethrpc arm, named `name`, its actuator querying `engine`.
    pub fn on_engine(name: &'static str, engine: Engine) -> Self {
        Self {
            name,
            engine,
            ..Self::standard(Arm::Ethrpc)
        }
    }

    /// Its providers that the chain has, with their server names.
    pub fn pooled<'a>(
        &'a self,
        proxies: &'a [FaultProxy],
    ) -> impl Iterator<Item = ((&'static str, &'a FaultProxy), &'a ProviderSpec)> {
        SERVERS
            .into_iter()
            .zip(proxies)
            .zip(&self.providers)
            .take(self.pool)
    }
}

/// The bench's policy for the ethrpc arm (1 s blocks).
pub const ETHRPC_POLICY: &str = "max_block_lag = 2\nmax_block_age = \"5s\"\n";

/// The name of a provider's `backup` twin in HAProxy.
pub fn backup_twin(server: &str) -> String {
    format!("{server}-backup")
}
