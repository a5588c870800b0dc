//! Probing one chain: every interval a round probes all its providers at once (skipping any whose
//! previous probe is still in flight), then derives the chain head and each provider's lag and age.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::config::{ChainConfig, ExporterConfig};
use futures::future::join_all;
use tokio::sync::{OwnedMutexGuard, Semaphore};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::rpc::{Block, HttpClients, ProbeError, Rpc};

/// What one probe task remembers between its runs. Held in a mutex that is locked for the
/// whole probe, so that a provider never has two probes in flight.
#[derive(Default)]
struct ProbeMemory {
    chain_checked_at: Option<Instant>,
    chain_ok: bool,
    skip_until: Option<Instant>,
}

/// What is known of one provider (for the status page and state-change logs).
#[derive(Debug, Clone, Default)]
pub struct ProviderView {
    /// `None` until the first probe finishes.
    pub up: Option<bool>,
    pub last_error: Option<ProbeError>,
    pub latency: Option<Duration>,
    /// Last block seen; kept while the provider is down.
    pub block: Option<Block>,
    pub lag: Option<u64>,
    pub age_seconds: Option<f64>,
}

/// What is known of one chain.
#[derive(Debug, Clone, Default)]
pub struct ChainView {
    pub head: Option<u64>,
    pub providers: Vec<ProviderView>,
    pub rounds_done: u64,
    applied_round: u64,
}

/// The chain head of one round: the highest block, or the second highest when three or more
/// providers answered, so one provider far ahead cannot make all the others look behind.
pub fn chain_head(mut numbers: Vec<u64>) -> Option<u64> {
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    if numbers.len() >= 3 {
        Some(numbers[1])
    } else {
        numbers.first().copied()
    }
}

/// Probes one chain's providers and publishes what it finds.
pub struct ChainProber {
    config: ChainConfig,
    /// How probes are made: `[exporter]`.
    settings: ExporterConfig,
    clients: HttpClients,
    limiter: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    memories: Vec<Arc<tokio::sync::Mutex<ProbeMemory>>>,
    view: Mutex<ChainView>,
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl ChainProber {
    pub fn new(
        config: ChainConfig,
        settings: ExporterConfig,
        clients: HttpClients,
        limiter: Arc<Semaphore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        for p in &config.providers {
            metrics.register_provider(config.name.as_str(), p.name.as_str());
        }
        let n = config.providers.len();
        Self {
            memories: (0..n).map(|_| Default::default()).collect(),
            view: Mutex::new(ChainView {
                providers: vec![ProviderView::default(); n],
                ..Default::default()
            }),
            config,
            settings,
            clients,
            limiter,
            metrics,
        }
    }

    pub fn config(&self) -> &ChainConfig {
        &self.config
    }

    /// A copy of what is known now.
    pub fn view(&self) -> ChainView {
        self.lock_view().clone()
    }

    fn lock_view(&self) -> std::sync::MutexGuard<'_, ChainView> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a round every interval until dropped; dropping it cancels rounds in flight.
    pub async fn run(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.settings.probe_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut rounds = JoinSet::new();
        for id in 1.. {
            ticker.tick().await;
            while rounds.try_join_next().is_some() {}
            rounds.spawn(self.clone().round(id));
        }
    }

    /// One round; public so tests can drive rounds without a timer.
    pub async fn round(self: Arc<Self>, id: u64) {
        let this = &self;
        let probes = self.memories.iter().enumerate().filter_map(|(i, memory)| {
            let memory = memory.clone().try_lock_owned().ok()?; // still in flight: skip
            Some(async move { (i, this.probe(i, memory).await) })
        });
        let results: Vec<(usize, Option<Option<u64>>)> = join_all(probes).await;
        self.finish_round(id, &results);
    }

    /// `None` when not probed (honouring `Retry-After`); else the block number, if one came.
    async fn probe(
        &self,
        i: usize,
        mut memory: OwnedMutexGuard<ProbeMemory>,
    ) -> Option<Option<u64>> {
        if memory
            .skip_until
            .is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        let result = {
            let _permit = self.limiter.acquire().await.ok()?;
            self.call(i, &mut memory).await
        };
        memory.skip_until = result
            .as_ref()
            .err()
            .and_then(|e| e.retry_after)
            .map(|wait| Instant::now() + wait);
        self.record(i, &result);
        Some(result.ok().map(|(block, _)| block.number))
    }

    async fn call(
        &self,
        i: usize,
        memory: &mut ProbeMemory,
    ) -> Result<(Block, Duration), ProbeError> {
        let provider = &self.config.providers[i];
        let s = &self.settings;
        let rpc = Rpc::new(
            &self.clients,
            provider,
            s.probe_timeout,
            s.max_response_bytes,
        );
        let check_due = !memory.chain_ok
            || memory
                .chain_checked_at
                .is_none_or(|at| at.elapsed() >= s.chain_id_interval);
        if check_due {
            let id = rpc.chain_id().await?;
            memory.chain_checked_at = Some(Instant::now());
            memory.chain_ok = id == self.config.chain_id;
            self.metrics
                .chain_id_match
                .with_label_values(&[self.config.name.as_str(), provider.name.as_str()])
                .set(if memory.chain_ok { 1.0 } else { 0.0 });
            if !memory.chain_ok {
                return Err(ProbeError {
                    reason: Reason::WrongChain,
                    detail: format!("eth_chainId is {id}, expected {}", self.config.chain_id),
                    retry_after: None,
                });
            }
        }
        let started = Instant::now();
        let block = rpc.latest_block().await?;
        Ok((block, started.elapsed()))
    }

    fn record(&self, i: usize, result: &Result<(Block, Duration), ProbeError>) {
        let chain = self.config.name.as_str();
        let provider = self.config.providers[i].name.as_str();
        let labels = [chain, provider];
        let m = &self.metrics;
        m.probes.with_label_values(&labels).inc();
        m.last_probe
            .with_label_values(&labels)
            .set(unix_seconds(SystemTime::now()));
        let mut view = self.lock_view();
        let pv = &mut view.providers[i];
        match result {
            Ok((block, latency)) => {
                m.up.with_label_values(&labels).set(1.0);
                m.probe_duration
                    .with_label_values(&labels)
                    .set(latency.as_secs_f64());
                m.request_duration
                    .with_label_values(&labels)
                    .observe(latency.as_secs_f64());
                m.block_number
                    .with_label_values(&labels)
                    .set(block.number as f64);
                m.block_timestamp
                    .with_label_values(&labels)
                    .set(block.timestamp as f64);
                if pv.up != Some(true) {
                    tracing::info!(chain, provider, block = block.number, "provider is up");
                }
                if pv.block.as_ref().is_some_and(|b| b.number > block.number) {
                    tracing::debug!(
                        chain,
                        provider,
                        block = block.number,
                        "block number went backwards"
                    );
                }
                pv.up = Some(true);
                pv.last_error = None;
                pv.latency = Some(*latency);
                pv.block = Some(block.clone());
            }
            Err(e) => {
                m.up.with_label_values(&labels).set(0.0);
                m.errors
                    .with_label_values(&[chain, provider, e.reason.as_str()])
                    .inc();
                let same = pv.up == Some(false)
                    && pv
                        .last_error
                        .as_ref()
                        .is_some_and(|old| old.reason == e.reason);
                if !same {
                    tracing::warn!(chain, provider, reason = %e.reason, detail = %e.detail, "provider is down");
                }
                pv.up = Some(false);
                pv.last_error = Some(e.clone());
            }
        }
    }

    /// Derives this round's head, and the lag and age of every provider probed in it. A
    /// provider's lag is measured against the head of the round that probed it: a slow answer
    /// is judged against the blocks of its own moment, not against rounds that ran meanwhile.
    /// The published head only moves forward in round order.
    fn finish_round(&self, id: u64, results: &[(usize, Option<Option<u64>>)]) {
        let chain = self.config.name.as_str();
        let mut view = self.lock_view();
        view.rounds_done += 1;
        let round_head = chain_head(results.iter().filter_map(|(_, r)| r.flatten()).collect());
        if id > view.applied_round {
            view.applied_round = id;
            if let Some(head) = round_head {
                view.head = Some(head);
                self.metrics
                    .chain_head
                    .with_label_values(&[chain])
                    .set(head as f64);
            }
        }
        let head = round_head.or(view.head);
        let now = unix_seconds(SystemTime::now());
        for (i, _) in results.iter().filter(|(_, r)| r.is_some()) {
            let pv = &mut view.providers[*i];
            let Some(block) = &pv.block else { continue };
            let labels = [chain, self.config.providers[*i].name.as_str()];
            let age = (now - block.timestamp as f64).max(0.0);
            pv.age_seconds = Some(age);
            self.metrics.block_age.with_label_values(&labels).set(age);
            if let Some(head) = head {
                let lag = head.saturating_sub(block.number);
                pv.lag = Some(lag);
                self.metrics
                    .block_lag
                    .with_label_values(&labels)
                    .set(lag as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::chain_head;

    #[test]
    fn head_is_the_highest_of_one_or_two_answers() {
        assert_eq!(chain_head(vec![]), None);
        assert_eq!(chain_head(vec![7]), Some(7));
        assert_eq!(chain_head(vec![7, 9]), Some(9));
    }

    #[test]
    fn head_is_the_second_highest_of_three_or_more() {
        assert_eq!(chain_head(vec![100, 1_000_000, 99]), Some(100));
        assert_eq!(chain_head(vec![5, 5, 5]), Some(5));
        assert_eq!(chain_head(vec![1, 2, 3, 4]), Some(3));
    }
}
