//! From the signal queries to one [`Observation`] per provider. A provider whose `up` or last
//! probe time is missing, or whose last probe is older than `max_data_age`, has no observation:
//! the policy then holds its weight (fail static). Data from the future is clock skew, not
//! freshness, and is reported: a last probe ahead of Prometheus' clock (the exporter's clock runs
//! ahead) leaves the provider without an observation; a block timestamped ahead of the
//! exporter's (the provider's clock, or the exporter's behind) leaves it without a block age.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::cadence::probe_period;
use common::config::{Config, Queries};

use crate::decision::Observation;
use crate::engine_lag::{self, EngineLag};
use crate::prometheus_api::{PrometheusClient, PrometheusError, QueryResult};

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

    /// The provider a series is about, from its `chain` and `provider` labels.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Self> {
        Some(Self::new(labels.get("chain")?, labels.get("provider")?))
    }
}

/// A last probe this far in Prometheus' future is clock skew, not a scrape racing a query.
const PROBE_SKEW_TOLERANCE_SECONDS: f64 = 1.0;

/// A block this far in the exporter's future is clock skew, not a block producer's rounding.
const BLOCK_SKEW_TOLERANCE_SECONDS: f64 = 15.0;

common::label_enum! {
    /// Which timestamp came from the future.
    pub enum Skew {
        /// The exporter's last probe, against Prometheus' clock.
        LastProbe => "last_probe",
        /// The provider's head block, against the exporter's clock.
        BlockTimestamp => "block_timestamp",
    }
}

/// What Prometheus says of every provider with fresh data, and who has a clock ahead of it.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    signals: HashMap<ProviderKey, Observation>,
    /// Providers with data from the future: which timestamp, and by how many seconds.
    pub clock_skewed: Vec<(ProviderKey, Skew, f64)>,
    /// How far the engine itself lags (live loop only); `None` when unknown.
    pub engine_lag: Option<EngineLag>,
}

impl Observations {
    pub fn get(&self, key: &ProviderKey) -> Option<&Observation> {
        self.signals.get(key)
    }

    pub fn insert(&mut self, key: ProviderKey, observation: Observation) {
        self.signals.insert(key, observation);
    }
}

/// How old a provider's last probe may be for its data to count as fresh: `max_data_age`, plus,
/// for a provider probed less often than the exporter's rounds (its own `probe_interval`,
/// rounded up to whole rounds: [`probe_period`]), how much longer its interval is. A reserve
/// probed every minute is then not taken for stale between its probes.
#[derive(Debug, Clone, PartialEq)]
pub struct Freshness {
    max_data_age: f64,
    longer: HashMap<ProviderKey, f64>,
}

impl Freshness {
    /// The same age for every provider.
    pub fn uniform(max_data_age: Duration) -> Self {
        Self {
            max_data_age: max_data_age.as_secs_f64(),
            longer: HashMap::new(),
        }
    }

    pub fn new(config: &Config) -> Self {
        let round = config.exporter.probe_interval;
        let mut freshness = Self::uniform(config.actuator.max_data_age);
        for chain in &config.chains {
            for p in chain.providers.iter() {
                let longer = probe_period(p, &config.exporter).saturating_sub(round);
                if !longer.is_zero() {
                    freshness.longer.insert(
                        ProviderKey::new(chain.name.as_str(), p.name.as_str()),
                        longer.as_secs_f64(),
                    );
                }
            }
        }
        freshness
    }

    /// Seconds any provider's last probe may be old (`max_data_age`).
    pub fn max_data_age(&self) -> f64 {
        self.max_data_age
    }

    /// Seconds `key`'s last probe may be old.
    pub fn max_age(&self, key: &ProviderKey) -> f64 {
        self.max_data_age + self.longer.get(key).copied().unwrap_or(0.0)
    }
}

/// One query's samples by provider: (evaluation time, value).
pub type Signal = HashMap<ProviderKey, (f64, f64)>;

/// Every query's samples at one evaluation time: what observations are assembled from.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    pub up: Signal,
    pub chain_id_match: Signal,
    pub block_lag: Signal,
    pub block_age: Signal,
    pub latency: Signal,
    pub error_ratio: Signal,
    pub last_probe: Signal,
}

impl Signals {
    /// The signals from the answers to [`signal_queries`], in its order.
    pub fn from_answers(answers: impl IntoIterator<Item = Signal>) -> Self {
        let mut answers = answers.into_iter();
        let mut next = || answers.next().unwrap_or_default();
        Self {
            up: next(),
            chain_id_match: next(),
            block_lag: next(),
            block_age: next(),
            latency: next(),
            error_ratio: next(),
            last_probe: next(),
        }
    }
}

/// Each signal's query, with the name errors give it, in the order of [`Signals::from_answers`].
pub fn signal_queries(q: &Queries) -> [(&'static str, &str); 7] {
    [
        ("up", &q.up),
        ("chain_id_match", &q.chain_id_match),
        ("block_lag", &q.block_lag),
        ("block_age", &q.block_age),
        ("latency", &q.latency),
        ("error_ratio", &q.error_ratio),
        ("last_probe", &q.last_probe),
    ]
}

/// Runs every query, measures the engine's own lag, and assembles the observations.
pub async fn observe(
    client: &PrometheusClient,
    queries: &Queries,
    freshness: &Freshness,
) -> Result<Observations, PrometheusError> {
    let (answers, engine_lag) = tokio::join!(
        futures::future::try_join_all(
            signal_queries(queries)
                .map(|(name, text)| async move { signal(name, client.query(text).await?) }),
        ),
        engine_lag::measure(client, freshness.max_data_age()),
    );
    let mut observations = assemble(&Signals::from_answers(answers?), freshness);
    observations.engine_lag = engine_lag;
    Ok(observations)
}

/// The observations the signals make, without I/O: the live loop assembles its instant queries'
/// samples, the backtest each evaluation time of its range queries.
pub fn assemble(signals: &Signals, freshness: &Freshness) -> Observations {
    let finite = |signal: &Signal, key: &ProviderKey| {
        signal.get(key).map(|(_, v)| *v).filter(|v| v.is_finite())
    };
    let mut observations = Observations::default();
    for (key, (_, up_value)) in &signals.up {
        // Age of the last probe at evaluation time (Prometheus' clock against the exporter's).
        let probe_age = signals
            .last_probe
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
        let mut block_age = finite(&signals.block_age, key);
        if let Some(age) = block_age.filter(|age| *age < -BLOCK_SKEW_TOLERANCE_SECONDS) {
            observations
                .clock_skewed
                .push((key.clone(), Skew::BlockTimestamp, -age));
            block_age = None;
        }
        let fresh = probe_age.is_some_and(|age| age <= freshness.max_age(key));
        if !fresh || !up_value.is_finite() {
            continue;
        }
        observations.insert(
            key.clone(),
            Observation {
                up: *up_value >= 0.5,
                chain_id_ok: finite(&signals.chain_id_match, key).map(|v| v >= 0.5),
                block_lag: finite(&signals.block_lag, key),
                block_age,
                latency: finite(&signals.latency, key),
                error_ratio: finite(&signals.error_ratio, key).map(|r| r.clamp(0.0, 1.0)),
            },
        );
    }
    observations
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
        .filter_map(|sample| {
            let key = ProviderKey::from_labels(&sample.labels)?;
            Some((key, (sample.timestamp, sample.value)))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_provider_probed_less_often_may_be_older_by_its_longer_interval() {
        let text = "[exporter]\nprobe_interval = \"2s\"\n\
            [actuator]\nmax_data_age = \"8s\"\n\
            [[chain]]\nname = \"c\"\nchain_id = 1\nbackend = \"b\"\n\
            [[chain.provider]]\nname = \"primary\"\nurl = \"http://127.0.0.1:1\"\n\
            [[chain.provider]]\nname = \"reserve\"\nurl = \"http://127.0.0.1:2\"\nprobe_interval = \"15s\"\n";
        let config = Config::parse(Path::new("t.toml"), text, |_| None).unwrap();
        let f = Freshness::new(&config);
        assert_eq!(f.max_age(&ProviderKey::new("c", "primary")), 8.0);
        // 15 s is probed every 16 s (whole rounds of 2 s): 14 s longer than a round.
        assert_eq!(f.max_age(&ProviderKey::new("c", "reserve")), 22.0);
        let mut signals = Signals::default();
        for name in ["primary", "reserve"] {
            let key = ProviderKey::new("c", name);
            signals.up.insert(key.clone(), (100.0, 1.0));
            signals.last_probe.insert(key, (100.0, 85.0));
        }
        let o = assemble(&signals, &f);
        assert!(
            o.get(&ProviderKey::new("c", "primary")).is_none(),
            "15 s old: stale"
        );
        assert!(
            o.get(&ProviderKey::new("c", "reserve")).is_some(),
            "within its interval"
        );
    }
}
