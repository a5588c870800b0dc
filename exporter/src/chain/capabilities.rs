//! Capability rounds of one chain (`[chain.capabilities]`): every `interval`, each provider that
//! is up is asked each enabled probe, all providers at once per capability so that logs are
//! compared over the same range; the answers are judged together ([`crate::capability`]) and
//! published. Each call is [`confirm`]ed like a head request, and a probe that fails without a
//! deliberate answer leaves the last finding standing. Capability calls have a limiter of their
//! own, so that heavy calls (`eth_getLogs`, tracing) never hold up head probes.

use std::sync::Arc;

use common::config::CapabilitiesConfig;
use futures::future::join_all;
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

use super::{deadline_from_now, ChainProber};
use crate::capability::{judge, logs_range, tag_lags, Answer, Capability, Finding};
use crate::confirm::{confirm, Confirmed};
use crate::reason::Reason;
use crate::rpc::{ProbeError, Rpc};

/// Capability calls in flight at once, per chain.
const MAX_CONCURRENT_CAPABILITY_CALLS: usize = 4;

/// What one capability round asks and what it knows.
struct Round<'a> {
    capability: Capability,
    caps: &'a CapabilitiesConfig,
    head: u64,
    limiter: &'a Semaphore,
}

impl ChainProber {
    /// Runs a capability round every `caps.interval`, the first once the chain has a head (the
    /// logs range is counted back from it).
    pub(super) async fn probe_capabilities(self: Arc<Self>, caps: CapabilitiesConfig) {
        let mut ticker = tokio::time::interval(caps.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let limiter = Semaphore::new(MAX_CONCURRENT_CAPABILITY_CALLS);
        loop {
            ticker.tick().await;
            let head = loop {
                if let Some(head) = self.lock_view().head {
                    break head;
                }
                tokio::time::sleep(self.settings.probe_interval).await;
            };
            for capability in Capability::enabled(&caps) {
                if capability == Capability::Archive && caps.archive_block > Some(head) {
                    tracing::debug!(chain = %self.config.name, head, "archive_block is beyond the chain head; not asked");
                    continue;
                }
                let round = Round {
                    capability,
                    caps: &caps,
                    head,
                    limiter: &limiter,
                };
                self.capability_round(&round).await;
            }
        }
    }

    /// Asks every provider that is up about the round's capability (for logs, only those whose
    /// own head reaches the range), then judges and publishes.
    async fn capability_round(&self, round: &Round<'_>) {
        let capability = round.capability;
        let logs_end = round
            .caps
            .logs
            .as_ref()
            .map(|l| logs_range(round.head, l.blocks).1);
        let asked: Vec<bool> = self
            .lock_view()
            .providers
            .iter()
            .map(|p| {
                let reaches = || match (capability, logs_end) {
                    (Capability::Logs, Some(end)) => p.effective_head.is_some_and(|h| h >= end),
                    _ => true,
                };
                p.up == Some(true) && reaches()
            })
            .collect();
        let asks = asked.iter().enumerate().map(|(i, asked)| async move {
            if *asked {
                self.ask(i, round).await
            } else {
                None
            }
        });
        let answers: Vec<Option<Answer>> = join_all(asks).await;
        let findings = judge(&answers);
        for (p, lag) in self.metrics.providers.iter().zip(tag_lags(&answers)) {
            if let (Some(gauge), Some(lag)) = (p.tag_lag(capability), lag) {
                gauge.set(lag as f64);
            }
        }
        let chain = self.config.name.as_str();
        for (i, finding) in findings.into_iter().enumerate() {
            let (Some(finding), Some(m)) =
                (finding, self.metrics.providers[i].capability(capability))
            else {
                continue;
            };
            let before = m.set_finding(finding);
            let provider = self.config.providers[i].name.as_str();
            match (before, finding) {
                (b, f) if b == Some(f) => {}
                (_, Finding::Capable) => {
                    tracing::info!(chain, provider, %capability, "provider serves this capability")
                }
                (_, reason) => tracing::warn!(
                    chain,
                    provider,
                    %capability,
                    %reason,
                    "provider does not serve this capability"
                ),
            }
        }
    }

    /// Provider `i`'s answer about the round's capability; `None` when its probe failed without
    /// one it could be judged on.
    async fn ask(&self, i: usize, round: &Round<'_>) -> Option<Answer> {
        let Round {
            capability,
            caps,
            head,
            limiter,
        } = *round;
        let m = self.metrics.providers[i].capability(capability)?;
        let rpc = Rpc::new(
            &self.clients,
            &self.config.providers[i],
            &self.redactors[i],
            self.settings.max_response_bytes,
        );
        m.probes.inc();
        let rpc = &rpc;
        let Confirmed { result, .. } = {
            let _permit = limiter.acquire().await.ok()?;
            // From the permit on: waiting for it is not the provider's time.
            let deadline = deadline_from_now(self.settings.probe_timeout);
            match capability {
                Capability::Archive => {
                    let block = caps.archive_block?;
                    let served =
                        move || async move { rpc.balance_at(block).await.map(|()| Answer::Served) };
                    confirm(deadline, served).await
                }
                Capability::Logs => {
                    let logs = caps.logs.as_ref()?;
                    let (from, to) = logs_range(head, logs.blocks);
                    let address = logs.address.as_deref();
                    let count = move || async move {
                        rpc.log_count(from, to, address).await.map(Answer::Logs)
                    };
                    confirm(deadline, count).await
                }
                Capability::Trace => {
                    let traced =
                        move || async move { rpc.trace_call().await.map(|()| Answer::Served) };
                    confirm(deadline, traced).await
                }
                Capability::Finalized | Capability::Safe => {
                    let tag = capability.as_str();
                    let tagged =
                        move || async move { rpc.tagged_block(tag).await.map(Answer::Tagged) };
                    confirm(deadline, tagged).await
                }
            }
        };
        match result {
            Ok(answer) => Some(answer),
            Err(ProbeError {
                refusal: Some(refusal),
                ..
            }) if capability.accepts(refusal) => Some(Answer::Refused(refusal)),
            Err(e) if capability == Capability::Logs && e.reason == Reason::TooLarge => {
                Some(Answer::ManyLogs)
            }
            Err(e) => {
                m.failures.inc();
                tracing::debug!(
                    chain = %self.config.name,
                    provider = %self.config.providers[i].name,
                    %capability,
                    reason = %e.reason,
                    detail = %e.detail,
                    "capability probe failed without an answer; the last finding stands"
                );
                None
            }
        }
    }
}
