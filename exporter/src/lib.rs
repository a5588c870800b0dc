//! `ethrpc-exporter`: probes every configured Ethereum JSON-RPC provider on an interval and
//! publishes latency, freshness, lag and errors as Prometheus metrics.

pub mod budget;
pub mod cadence;
pub mod capability;
pub mod chain;
pub mod chain_head;
pub mod confirm;
pub mod head;
pub mod metrics;
pub mod plausible;
pub mod provider_text;
pub mod reason;
pub mod routes;
pub mod rpc;
pub mod view;

use std::future::Future;
use std::sync::Arc;

use common::config::Config;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::chain::ChainProber;
use crate::metrics::Metrics;
use crate::rpc::HttpClients;

/// Why the exporter could not start.
#[derive(Debug, Error)]
pub enum ExporterError {
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// The running exporter's shared state: one prober per chain and the metrics they write.
pub struct Exporter {
    pub chains: Vec<Arc<ChainProber>>,
    pub metrics: Arc<Metrics>,
}

impl Exporter {
    /// Builds probers for every chain of `config`; nothing runs until [`run`].
    pub fn new(config: &Config) -> Result<Self, ExporterError> {
        let e = &config.exporter;
        let clients = HttpClients::new(e.probe_timeout)?;
        let limiter = Arc::new(Semaphore::new(e.max_concurrent_probes.get()));
        let metrics = Arc::new(Metrics::new());
        let chains = config
            .chains
            .iter()
            .map(|chain| {
                for p in chain.providers.iter().filter(|p| p.insecure_skip_verify) {
                    tracing::warn!(chain = %chain.name, provider = %p.name,
                        "insecure_skip_verify is set: this provider's TLS certificate is not verified");
                }
                Arc::new(ChainProber::new(
                    chain.clone(),
                    e.clone(),
                    clients.clone(),
                    limiter.clone(),
                    metrics.clone(),
                ))
            })
            .collect();
        Ok(Self { chains, metrics })
    }

    /// True once every chain has finished a probe round.
    pub fn ready(&self) -> bool {
        self.chains.iter().all(|c| c.view().rounds_done > 0)
    }
}

/// Probes and serves `/metrics` on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ExporterError> {
    let exporter = Arc::new(Exporter::new(&config)?);
    let providers: usize = config.chains.iter().map(|c| c.providers.len()).sum();
    tracing::info!(
        address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        chains = config.chains.len(),
        providers,
        interval = ?config.exporter.probe_interval,
        "exporter started"
    );
    let probers = futures::future::join_all(exporter.chains.iter().cloned().map(ChainProber::run));
    let served = exporter.clone();
    let server = common::http_server::serve(
        listener,
        move |path| routes::route(&served, path),
        std::future::pending(),
    );
    tokio::select! {
        _ = shutdown => {}
        _ = probers => {}
        _ = server => {}
    }
    tracing::info!("exporter stopped");
    Ok(())
}
