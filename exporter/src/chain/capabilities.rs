//! Capability rounds of one chain (`[chain.capabilities]`): every `interval`, each provider that
//! is up is asked each enabled probe, all providers at once per capability so that logs are
//! compared over the same range; the answers are judged together ([`crate::capability`]) and
//! published. Each call is [`confirm`]ed like a head request, and a probe that fails without a
//! deliberate answer leaves the last finding standing.

use std::sync::Arc;
use std::time::Duration;

use common::config::CapabilitiesConfig;
use futures::future::join_all;
use tokio::time::MissedTickBehavior;

use super::ChainProber;
use crate::capability::{finalized_lags, judge, logs_range, Answer, Capability, Finding};
use crate::confirm::{confirm, Confirmed};
use crate::rpc::{ProbeError, Rpc};

impl ChainProber {
    /// Runs a capability round every `caps.interval`, the first once the chain has a head (the
    /// logs range is counted back from it).
    pub(super) async fn probe_capabilities(self: Arc<Self>, caps: CapabilitiesConfig) {
        let mut ticker = tokio::time::interval(caps.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            ticker.tick().await;
            let head = loop {
                if let Some(head) = self.lock_view().head {
                    break head;
                }
                tokio::time::sleep(self.settings.probe_interval).await;
            };
            for capability in Capability::enabled(&caps) {
                self.capability_round(capability, &caps, head).await;
            }
        }
    }

    /// Asks every provider that is up about `capability`, then judges and publishes.
    async fn capability_round(&self, capability: Capability, caps: &CapabilitiesConfig, head: u64) {
        let up: Vec<bool> = self
            .lock_view()
            .providers
            .iter()
            .map(|p| p.up == Some(true))
            .collect();
        let asks = up.iter().enumerate().map(|(i, up)| async move {
            if *up {
                self.ask(i, capability, caps, head).await
            } else {
                None
            }
        });
        let answers: Vec<Option<Answer>> = join_all(asks).await;
        let findings = judge(&answers);
        if capability == Capability::Finalized {
            for (p, lag) in self.metrics.providers.iter().zip(finalized_lags(&answers)) {
                if let Some(lag) = lag {
                    p.finalized_lag.set(lag as f64);
                }
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

    /// Provider `i`'s answer about `capability`; `None` when its probe failed without one.
    async fn ask(
        &self,
        i: usize,
        capability: Capability,
        caps: &CapabilitiesConfig,
        head: u64,
    ) -> Option<Answer> {
        let m = self.metrics.providers[i].capability(capability)?;
        let rpc = Rpc::new(
            &self.clients,
            &self.config.providers[i],
            &self.redactors[i],
            self.settings.max_response_bytes,
        );
        let deadline = tokio::time::Instant::now()
            .checked_add(self.settings.probe_timeout)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
        m.probes.inc();
        let rpc = &rpc;
        let Confirmed { result, .. } = {
            let _permit = self.limiter.acquire().await.ok()?;
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
                Capability::Finalized => {
                    let finalized =
                        move || async move { rpc.finalized_block().await.map(Answer::Finalized) };
                    confirm(deadline, finalized).await
                }
            }
        };
        match result {
            Ok(answer) => Some(answer),
            Err(ProbeError {
                refusal: Some(refusal),
                ..
            }) => Some(Answer::Refused(refusal)),
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
