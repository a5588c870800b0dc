//! From the signal queries to one [`Observation`] per provider. A provider whose `up` or last
//! probe time is missing, or whose last probe is older than `max_data_age`, has no observation:
//! the policy then holds its weight (fail static). Data from the future is clock skew, not
//! freshness, and is reported: a last probe ahead of Prometheus' clock (the exporter's clock runs
//! ahead) leaves the provider without an observation; a block timestamped ahead of the
//! exporter's (the provider's clock, or the exporter's behind) leaves it without a block age.

use std::collections::HashMap;
use std::time::Duration;

use common::config::Queries;

use crate::policy::Observation;
use crate::prometheus_api::{PrometheusClient, PrometheusError, QueryResult, Sample};

/// A provider as labelled by the exporter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderKey {
    pub chain: String,
    pub provider: String,
}

impl ProviderKey {
    pub fn new(chain: &str, provider: &str) -> Self {
        Self {
            chain: chain.to_owned(),
            provider: provider.to_owned(),
        }
    }
}

/// A last probe this far in Prometheus' future is clock skew, not a scrape racing a query.
const PROBE_SKEW_TOLERANCE_SECONDS: f64 = 1.0;

/// A block this far in the exporter's future is clock skew, not a block producer's rounding.
const BLOCK_SKEW_TOLERANCE_SECONDS: f64 = 15.0;

/// Which timestamp came from the future.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skew {
    /// The exporter's last probe, against Prometheus' clock.
    LastProbe,
    /// The provider's head block, against the exporter's clock.
    BlockTimestamp,
}

impl Skew {
    pub fn as_str(self) -> &'static str {
        match self {
            Skew::LastProbe => "last_probe",
            Skew::BlockTimestamp => "block_timestamp",
        }
    }
}

/// What Prometheus says of every provider with fresh data, and who has a clock ahead of it.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    signals: HashMap<ProviderKey, Observation>,
    /// Providers with data from the future: which timestamp, and by how many seconds.
    pub clock_skewed: Vec<(ProviderKey, Skew, f64)>,
}

impl Observations {
    pub fn get(&self, key: &ProviderKey) -> Option<&Observation> {
        self.signals.get(key)
    }

    pub fn insert(&mut self, key: ProviderKey, observation: Observation) {
        self.signals.insert(key, observation);
    }
}

/// One query's samples by provider: (evaluation time, value).
type Signal = HashMap<ProviderKey, (f64, f64)>;

/// Runs every query and assembles the observations.
pub async fn observe(
    client: &PrometheusClient,
    queries: &Queries,
    max_data_age: Duration,
) -> Result<Observations, PrometheusError> {
    let q = |promql: &'static str, text: &str| {
        let text = text.to_owned();
        async move { signal(promql, client.query(&text).await?) }
    };
    let (up, chain_id, lag, age, latency, errors, last_probe) = futures::try_join!(
        q("up", &queries.up),
        q("chain_id_match", &queries.chain_id_match),
        q("block_lag", &queries.block_lag),
        q("block_age", &queries.block_age),
        q("latency", &queries.latency),
        q("error_ratio", &queries.error_ratio),
        q("last_probe", &queries.last_probe),
    )?;
    let finite = |signal: &Signal, key: &ProviderKey| {
        signal.get(key).map(|(_, v)| *v).filter(|v| v.is_finite())
    };
    let mut observations = Observations::default();
    for (key, (_, up_value)) in &up {
        // Age of the last probe at evaluation time (Prometheus' clock against the exporter's).
        let probe_age = last_probe
            .get(key)
            .map(|(evaluated, probed)| evaluated - probed)
            .filter(|age| age.is_finite());
        if let Some(age) = probe_age.filter(|age| *age < -PROBE_SKEW_TOLERANCE_SECONDS) {
            observations
                .clock_skewed
                .push((key.clone(), Skew::LastProbe, -age));
            continue;
        }
        // A block from the future says nothing of staleness, but the clock-free signals (down,
        // wrong chain, lag, latency, errors) still judge the provider.
        let mut block_age = finite(&age, key);
        if let Some(age) = block_age.filter(|age| *age < -BLOCK_SKEW_TOLERANCE_SECONDS) {
            observations
                .clock_skewed
                .push((key.clone(), Skew::BlockTimestamp, -age));
            block_age = None;
        }
        let fresh = probe_age.is_some_and(|age| age <= max_data_age.as_secs_f64());
        if !fresh || !up_value.is_finite() {
            continue;
        }
        observations.insert(
            key.clone(),
            Observation {
                up: *up_value >= 0.5,
                chain_id_ok: finite(&chain_id, key).map(|v| v >= 0.5),
                block_lag: finite(&lag, key),
                block_age,
                latency: finite(&latency, key),
                error_ratio: finite(&errors, key).map(|r| r.clamp(0.0, 1.0)),
            },
        );
    }
    Ok(observations)
}

/// A vector result keyed by `(chain, provider)`.
fn signal(name: &str, result: QueryResult) -> Result<Signal, PrometheusError> {
    let QueryResult::Vector(samples) = result else {
        return Err(PrometheusError::Unexpected(format!(
            "the {name} query returned a scalar; it must return one sample per chain and provider"
        )));
    };
    Ok(samples
        .into_iter()
        .filter_map(
            |Sample {
                 labels,
                 timestamp,
                 value,
             }| {
                let key = ProviderKey {
                    chain: labels.get("chain")?.clone(),
                    provider: labels.get("provider")?.clone(),
                };
                Some((key, (timestamp, value)))
            },
        )
        .collect())
}
