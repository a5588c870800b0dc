//! Probing one chain: every interval a round probes at once all its providers that are due (each
//! has its own [`ProviderCadence`]; any whose previous probe is still in flight is skipped), then
//! derives the chain head from every provider's latest answer that is recent enough (a provider
//! probed less often votes between its probes) and the lag and age of the providers probed in it.
//! Each request of a probe is [`confirm`]ed, and lag and age are judged on each provider's
//! effective head ([`RecentHeads`]), so that a healthy provider's noise is not taken for failure.
//! A block the chain cannot have reached yet is an error of the provider that answered it
//! ([`crate::plausible`]), and the head is decided on block numbers and timestamps
//! ([`crate::chain_head`]), so that neither one provider that is wrong nor a majority that froze
//! together can drain the honest ones. What a result and a round's end change is decided by the
//! pure steps of [`crate::view`]; this module schedules, probes, and publishes their outcome.

mod capabilities;

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
use crate::capability::{Capability, Finding};
use crate::confirm::{confirm, Confirmed};
use crate::head::RecentHeads;
use crate::metrics::{ChainMetrics, Metrics};
use crate::provider_text::Redactor;
use crate::reason::Reason;
use crate::rpc::{Block, HttpClients, ProbeError, Rpc};
use crate::view::{ChainView, Change, Now, ProbeResult, Probed, RoundOutcome};

/// An answer this many blocks or more behind the last chain head is asked again before it
/// counts: one block behind is propagation, two is a replica's answer or real lag.
const LAG_TO_CONFIRM: u64 = 2;

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
    /// How long each provider's last answer votes for the head: until its next probe is overdue.
    vote_lifetimes: Vec<Duration>,
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
        let cadences: Vec<ProviderCadence> = config
            .providers
            .iter()
            .map(|p| ProviderCadence::new(p, &settings))
            .collect();
        Self {
            memories: (0..n)
                .map(|_| {
                    Arc::new(tokio::sync::Mutex::new(ProbeMemory::new(
                        settings.head_window,
                    )))
                })
                .collect(),
            redactors: config.providers.iter().map(Redactor::new).collect(),
            vote_lifetimes: cadences
                .iter()
                .map(|c| c.probe.period() + settings.probe_interval + settings.probe_timeout)
                .collect(),
            cadences,
            view: Mutex::new(ChainView::new(n)),
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

    /// Provider `i`'s last finding of each capability its chain probes (`None`: none yet).
    pub fn capabilities(&self, i: usize) -> Vec<(Capability, Option<Finding>)> {
        self.metrics.providers.get(i).map_or_else(Vec::new, |p| {
            p.capabilities
                .iter()
                .map(|c| (c.capability, c.finding()))
                .collect()
        })
    }

    /// A copy of what is known now.
    pub fn view(&self) -> ChainView {
        self.lock_view().clone()
    }

    fn lock_view(&self) -> std::sync::MutexGuard<'_, ChainView> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a round every interval, and a capability round every capability interval when
    /// `[chain.capabilities]` is set, until dropped; dropping it cancels rounds in flight.
    pub async fn run(self: Arc<Self>) {
        match self.config.capabilities.clone() {
            Some(caps) => {
                tokio::join!(self.clone().probe_heads(), self.probe_capabilities(caps));
            }
            None => self.probe_heads().await,
        }
    }

    async fn probe_heads(self: Arc<Self>) {
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
        self.lock_view().plausible(block, now())
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
        let deadline = || deadline_from_now(s.probe_timeout);
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
        let latency = started.elapsed();
        // A lagging answer is confirmed like a failure: a provider's own load balancer answers
        // some reads from a replica blocks behind, and a few such answers in a row would look
        // like lag. One more request at once; the higher answer counts (lag is judged on the
        // highest recent answer anyway). A stalled provider answers the same again, at once.
        let known_head = self.lock_view().head;
        if known_head.is_none_or(|head| block.number.saturating_add(LAG_TO_CONFIRM) > head) {
            return Ok((block, latency));
        }
        self.metrics.providers[i].retries.inc();
        let again = tokio::time::timeout_at(deadline(), rpc.latest_block()).await;
        let block = match again {
            Ok(Ok(newer)) if newer.number > block.number => newer,
            _ => block,
        };
        Ok((block, latency))
    }

    /// Records provider `i`'s probe result in the view and publishes it.
    fn record(&self, i: usize, result: &ProbeResult) {
        let (changes, failures) = {
            let mut view = self.lock_view();
            let changes = view.record(i, result);
            (changes, view.providers[i].consecutive_failures)
        };
        let chain = self.config.name.as_str();
        let provider = self.config.providers[i].name.as_str();
        let m = &self.metrics.providers[i];
        m.probes.inc();
        m.last_probe.set(unix_now());
        match result {
            Ok((block, latency)) => {
                m.up.set(1.0);
                m.probe_duration.set(latency.as_secs_f64());
                m.request_duration.observe(latency.as_secs_f64());
                m.block_number.set(block.number as f64);
                m.block_timestamp.set(block.timestamp as f64);
            }
            Err(e) => {
                m.up.set(0.0);
                m.errors(e.reason).inc();
            }
        }
        m.consecutive_failures.set(failures as f64);
        for change in changes {
            log_change(chain, provider, &change);
        }
    }

    /// Ends round `id` in the view and publishes the head, lag and age it decided.
    fn finish_round(&self, id: u64, results: &[(usize, Option<Probed>)]) {
        let RoundOutcome { head, judged } =
            self.lock_view()
                .finish_round(id, results, &self.vote_lifetimes, now());
        if let Some(head) = head {
            self.metrics.head.set(head as f64);
        }
        let chain = self.config.name.as_str();
        for j in judged {
            let m = &self.metrics.providers[j.provider];
            m.block_age.set(j.age);
            if let Some(lag) = j.lag {
                m.block_lag.set(lag as f64);
            }
            if let Some(change) = &j.change {
                log_change(
                    chain,
                    self.config.providers[j.provider].name.as_str(),
                    change,
                );
            }
        }
    }
}

/// When a call given `timeout` from now must end. A timeout too large to add is as good as
/// none: a day still ends a hung call.
fn deadline_from_now(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or(now + Duration::from_secs(86_400))
}

/// This host's clocks now.
fn now() -> Now {
    Now {
        unix: unix_now(),
        at: Instant::now(),
    }
}

/// The log line of a change of one provider's state.
fn log_change(chain: &str, provider: &str, change: &Change) {
    match change {
        Change::Up { block } => tracing::info!(chain, provider, block, "provider is up"),
        Change::Down { error } => tracing::warn!(
            chain,
            provider,
            reason = %error.reason,
            detail = %error.detail,
            "provider is down"
        ),
        Change::Backwards { block } => {
            tracing::debug!(chain, provider, block, "block number went backwards")
        }
        Change::SkewStarted { ahead_seconds } => tracing::warn!(
            chain,
            provider,
            ahead_seconds,
            "block timestamp is ahead of this host's clock: clock skew, or an implausible block; \
             its age is published negative"
        ),
        Change::SkewEnded => tracing::info!(
            chain,
            provider,
            "block timestamp no longer ahead of this host's clock"
        ),
    }
}
