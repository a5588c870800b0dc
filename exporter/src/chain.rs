//! Probing one chain: every interval a round probes at once all its providers that are due (each
//! has its own [`ProviderCadence`]; any whose previous probe is still in flight is skipped), then
//! derives the chain head and each provider's lag and age from the providers probed in it.
//! Each request of a probe is [`confirm`]ed, and lag and age are judged on each provider's
//! effective head ([`RecentHeads`]), so that a healthy provider's noise is not taken for failure.
//! A block the chain cannot have reached yet is an error of the provider that answered it
//! ([`crate::plausible`]), and in small pools a provider is called behind only when its own block
//! age agrees ([`chain_head`]), so that one provider that is wrong cannot drain the honest ones.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::clock::unix_now;
use common::config::{ChainConfig, ExporterConfig};
use futures::future::join_all;
use tokio::sync::{OwnedMutexGuard, Semaphore};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::cadence::ProviderCadence;
use crate::confirm::{confirm, Confirmed};
use crate::head::RecentHeads;
use crate::metrics::{ChainMetrics, Metrics};
use crate::plausible::{check_number, Reference, FUTURE_TOLERANCE_SECONDS, REFERENCE_LIFETIME};
use crate::provider_text::Redactor;
use crate::reason::Reason;
use crate::rpc::{Block, HttpClients, ProbeError, Rpc};

/// What one probe task remembers between its runs. Held in a mutex that is locked for the
/// whole probe, so that a provider never has two probes in flight.
struct ProbeMemory {
    /// The start of the round of its last probe.
    probed_at: Option<Instant>,
    /// The start of the round of its last successful chain-id check.
    chain_checked_at: Option<Instant>,
    chain_ok: bool,
    skip_until: Option<Instant>,
    heads: RecentHeads,
}

impl ProbeMemory {
    fn new(head_window: Duration) -> Self {
        Self {
            probed_at: None,
            chain_checked_at: None,
            chain_ok: false,
            skip_until: None,
            heads: RecentHeads::new(head_window),
        }
    }
}

/// One provider's part in a round in which it was probed.
struct Probed {
    /// Whether this probe got a block.
    answered: bool,
    /// Its effective head; kept while it is down, so that its lag keeps growing.
    head: Option<Block>,
}

/// What is known of one provider (for the status page and state-change logs).
#[derive(Debug, Clone, Default)]
pub struct ProviderView {
    /// `None` until the first probe finishes.
    pub up: Option<bool>,
    pub last_error: Option<ProbeError>,
    pub latency: Option<Duration>,
    /// Last block seen, as it came; kept while the provider is down.
    pub block: Option<Block>,
    /// The highest block answered within `head_window`, which lag and age are judged on.
    pub effective_head: Option<u64>,
    pub lag: Option<u64>,
    pub age_seconds: Option<f64>,
    /// Confirmed failed probes in a row.
    pub consecutive_failures: u64,
    /// Whether its effective head's timestamp is more than [`FUTURE_TOLERANCE_SECONDS`] ahead of
    /// this host's clock (its age is then negative, published as it is).
    pub clock_skewed: bool,
}

/// What is known of one chain.
#[derive(Debug, Clone, Default)]
pub struct ChainView {
    pub head: Option<u64>,
    pub providers: Vec<ProviderView>,
    pub rounds_done: u64,
    applied_round: u64,
    /// The last head the providers agreed on, which answers are judged plausible against.
    reference: Option<Reference>,
}

/// A round's chain head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub number: u64,
    /// Whether the answers agree on it; only such a head becomes the [`Reference`] for
    /// plausibility, so that a head chosen in a dispute cannot get honest answers rejected.
    pub agreed: bool,
}

/// The chain head of one round from the effective heads of the providers that answered, such
/// that no provider is behind on the word of one other alone:
/// - three or more: the second highest, so that a head is always vouched for by two providers
///   and one far ahead cannot make all the others look behind;
/// - two: their block if they agree; otherwise nothing tells which one is wrong (a provider can
///   claim a higher block with a fresh timestamp as easily as an honest one shows it), so the
///   head is the lower, under which neither lags, and it is not agreed: in a pool of two a stall
///   is caught by its block age (`max_block_age`), not by the other provider's word;
/// - one: its answer.
pub fn chain_head(mut numbers: Vec<u64>) -> Option<Head> {
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    let (number, agreed) = match numbers[..] {
        [] => return None,
        [only] => (only, true),
        [high, low] => (low, high == low),
        [_, second, ..] => (second, true),
    };
    Some(Head { number, agreed })
}

/// Probes one chain's providers and publishes what it finds.
pub struct ChainProber {
    config: ChainConfig,
    /// How probes are made: `[exporter]`.
    settings: ExporterConfig,
    clients: HttpClients,
    limiter: Arc<Semaphore>,
    /// This chain's series, its providers' in config order.
    metrics: Arc<ChainMetrics>,
    /// Each provider's secrets, for the text it writes back.
    redactors: Vec<Redactor>,
    /// When each provider is due a probe and a chain-id check.
    cadences: Vec<ProviderCadence>,
    memories: Vec<Arc<tokio::sync::Mutex<ProbeMemory>>>,
    view: Mutex<ChainView>,
}

impl ChainProber {
    pub fn new(
        config: ChainConfig,
        settings: ExporterConfig,
        clients: HttpClients,
        limiter: Arc<Semaphore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let metrics = metrics.register_chain(&config);
        let n = config.providers.len();
        Self {
            memories: (0..n)
                .map(|_| {
                    Arc::new(tokio::sync::Mutex::new(ProbeMemory::new(
                        settings.head_window,
                    )))
                })
                .collect(),
            redactors: config.providers.iter().map(Redactor::new).collect(),
            cadences: config
                .providers
                .iter()
                .map(|p| ProviderCadence::new(p, &settings))
                .collect(),
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
        let started = Instant::now();
        let probes = self.memories.iter().enumerate().filter_map(|(i, memory)| {
            let memory = memory.clone().try_lock_owned().ok()?; // still in flight: skip
            Some(async move { (i, this.probe(i, started, memory).await) })
        });
        let results: Vec<(usize, Option<Probed>)> = join_all(probes).await;
        self.finish_round(id, &results);
    }

    /// Probes provider `i` in the round `started` then; `None` when not probed (not due yet, or
    /// honouring `Retry-After`).
    async fn probe(
        &self,
        i: usize,
        started: Instant,
        mut memory: OwnedMutexGuard<ProbeMemory>,
    ) -> Option<Probed> {
        let since = memory
            .probed_at
            .map(|at| started.saturating_duration_since(at));
        if !self.cadences[i].probe.is_due(since)
            || memory
                .skip_until
                .is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        memory.probed_at = Some(started);
        let result = {
            let _permit = self.limiter.acquire().await.ok()?;
            self.call(i, started, &mut memory).await
        }
        .and_then(|answer| self.plausible(&answer.0).map(|()| answer));
        memory.skip_until = result
            .as_ref()
            .err()
            .and_then(|e| e.retry_after)
            .map(|wait| Instant::now() + wait);
        let now = Instant::now();
        if let Ok((block, _)) = &result {
            memory.heads.record(now, block.clone());
        }
        self.record(i, &result);
        Some(Probed {
            answered: result.is_ok(),
            head: memory.heads.effective(now).cloned(),
        })
    }

    /// Whether the chain can have reached `block` yet, judged against the last agreed head.
    fn plausible(&self, block: &Block) -> Result<(), ProbeError> {
        let reference = self.lock_view().reference;
        check_number(block.number, reference, Instant::now(), unix_now())
            .map_err(|why| ProbeError::new(Reason::ImplausibleBlock, why))
    }

    /// [`confirm`]s one request of provider `i` and counts the attempts it retried or hedged.
    async fn confirmed<T, F, Fut>(
        &self,
        i: usize,
        deadline: tokio::time::Instant,
        attempt: F,
    ) -> Result<T, ProbeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProbeError>>,
    {
        let Confirmed { result, retries } = confirm(deadline, attempt).await;
        if retries > 0 {
            let chain = self.config.name.as_str();
            let provider = self.config.providers[i].name.as_str();
            self.metrics.providers[i].retries.inc_by(retries);
            tracing::debug!(
                chain,
                provider,
                confirmed_failure = result.is_err(),
                "an attempt failed or hung and was retried"
            );
        }
        result
    }

    async fn call(
        &self,
        i: usize,
        started: Instant,
        memory: &mut ProbeMemory,
    ) -> Result<(Block, Duration), ProbeError> {
        let provider = &self.config.providers[i];
        let s = &self.settings;
        let rpc = Rpc::new(
            &self.clients,
            provider,
            &self.redactors[i],
            s.max_response_bytes,
        );
        // `probe_timeout` bounds each JSON-RPC call, so a chain-id check does not eat into the
        // head request's time and a slow provider is judged slow, not down.
        let deadline = || {
            let now = tokio::time::Instant::now();
            // A timeout too large to add is as good as none: a day still ends a hung call.
            now.checked_add(s.probe_timeout)
                .unwrap_or(now + Duration::from_secs(86_400))
        };
        let since_check = memory
            .chain_checked_at
            .map(|at| started.saturating_duration_since(at));
        if !memory.chain_ok || self.cadences[i].chain_id.is_due(since_check) {
            let id = self.confirmed(i, deadline(), || rpc.chain_id()).await?;
            memory.chain_checked_at = Some(started);
            memory.chain_ok = id == self.config.chain_id;
            self.metrics.providers[i]
                .chain_id_match
                .set(if memory.chain_ok { 1.0 } else { 0.0 });
            if !memory.chain_ok {
                return Err(ProbeError::new(
                    Reason::WrongChain,
                    format!("eth_chainId is {id}, expected {}", self.config.chain_id),
                ));
            }
        }
        let started = Instant::now();
        let block = self.confirmed(i, deadline(), || rpc.latest_block()).await?;
        Ok((block, started.elapsed()))
    }

    fn record(&self, i: usize, result: &Result<(Block, Duration), ProbeError>) {
        let chain = self.config.name.as_str();
        let provider = self.config.providers[i].name.as_str();
        let m = &self.metrics.providers[i];
        m.probes.inc();
        m.last_probe.set(unix_now());
        let mut view = self.lock_view();
        let pv = &mut view.providers[i];
        match result {
            Ok((block, latency)) => {
                m.up.set(1.0);
                m.probe_duration.set(latency.as_secs_f64());
                m.request_duration.observe(latency.as_secs_f64());
                m.block_number.set(block.number as f64);
                m.block_timestamp.set(block.timestamp as f64);
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
                m.consecutive_failures.set(0.0);
                pv.up = Some(true);
                pv.consecutive_failures = 0;
                pv.last_error = None;
                pv.latency = Some(*latency);
                pv.block = Some(block.clone());
            }
            Err(e) => {
                m.up.set(0.0);
                m.errors(e.reason).inc();
                let same = pv.up == Some(false)
                    && pv
                        .last_error
                        .as_ref()
                        .is_some_and(|old| old.reason == e.reason);
                if !same {
                    tracing::warn!(chain, provider, reason = %e.reason, detail = %e.detail, "provider is down");
                }
                pv.up = Some(false);
                pv.consecutive_failures += 1;
                m.consecutive_failures.set(pv.consecutive_failures as f64);
                pv.last_error = Some(e.clone());
            }
        }
    }

    /// Derives this round's head, and the lag and age of every provider probed in it, all from
    /// effective heads. A provider's lag is measured against the head of the round that probed
    /// it: a slow answer is judged against the blocks of its own moment, not against rounds that
    /// ran meanwhile. The published head only moves forward in round order.
    fn finish_round(&self, id: u64, results: &[(usize, Option<Probed>)]) {
        let chain = self.config.name.as_str();
        let now = unix_now();
        let age = |block: &Block| now - block.timestamp as f64;
        let mut view = self.lock_view();
        view.rounds_done += 1;
        let answers = results.iter().filter_map(|(_, probed)| {
            let probed = probed.as_ref().filter(|p| p.answered)?;
            Some(probed.head.as_ref()?.number)
        });
        let round_head = chain_head(answers.collect());
        if id > view.applied_round {
            view.applied_round = id;
            if let Some(head) = round_head {
                view.head = Some(head.number);
                // The reference moves only when the agreed head does (or it expired): a frozen
                // majority must not keep renewing the time it is judged from.
                let renew = view
                    .reference
                    .is_none_or(|r| head.number > r.number || r.at.elapsed() > REFERENCE_LIFETIME);
                if head.agreed && renew {
                    view.reference = Some(Reference {
                        number: head.number,
                        at: Instant::now(),
                    });
                }
                self.metrics.head.set(head.number as f64);
            }
        }
        let head = round_head.map(|h| h.number).or(view.head);
        for (i, probed) in results {
            let Some(Probed {
                head: Some(block), ..
            }) = probed
            else {
                continue;
            };
            let pv = &mut view.providers[*i];
            pv.effective_head = Some(block.number);
            let provider = self.config.providers[*i].name.as_str();
            let m = &self.metrics.providers[*i];
            // Negative when the timestamp is ahead of this host's clock: published as it is,
            // since a clamped 0 would make the provider look perfectly fresh for ever.
            let age = age(block);
            pv.age_seconds = Some(age);
            m.block_age.set(age);
            let skewed = age < -FUTURE_TOLERANCE_SECONDS;
            if skewed && !pv.clock_skewed {
                tracing::warn!(
                    chain,
                    provider,
                    ahead_seconds = -age,
                    "block timestamp is ahead of this host's clock: clock skew, or an implausible \
                     block; its age is published negative"
                );
            } else if pv.clock_skewed && !skewed {
                tracing::info!(
                    chain,
                    provider,
                    "block timestamp no longer ahead of this host's clock"
                );
            }
            pv.clock_skewed = skewed;
            if let Some(head) = head {
                let lag = head.saturating_sub(block.number);
                pv.lag = Some(lag);
                m.block_lag.set(lag as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(numbers: &[u64]) -> Option<(u64, bool)> {
        chain_head(numbers.to_vec()).map(|h| (h.number, h.agreed))
    }

    #[test]
    fn one_answer_is_the_head() {
        assert_eq!(head(&[]), None);
        assert_eq!(head(&[7]), Some((7, true)));
    }

    #[test]
    fn of_two_that_disagree_the_lower_is_the_head_and_not_agreed() {
        assert_eq!(head(&[9, 9]), Some((9, true)), "equal");
        assert_eq!(head(&[9, 59]), Some((9, false)), "one is wrong, either one");
        assert_eq!(head(&[7, 9]), Some((7, false)));
    }

    #[test]
    fn of_three_or_more_the_second_highest_is_the_head() {
        assert_eq!(head(&[100, 1_000_000, 99]), Some((100, true)));
        assert_eq!(head(&[5, 5, 5]), Some((5, true)));
        assert_eq!(head(&[1, 2, 3, 4]), Some((3, true)));
    }
}
