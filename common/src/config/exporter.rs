//! `[exporter]`: how and how often providers are probed. Its raw shape, defaults and checks.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{listen_address, require_nonzero, FieldError};

/// `[exporter]`: how and how often providers are probed.
#[derive(Debug, Clone)]
pub struct ExporterConfig {
    pub listen: SocketAddr,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    /// How often `eth_chainId` is re-checked while it matches.
    pub chain_id_interval: Duration,
    /// Probes in flight at once across all chains.
    pub max_concurrent_probes: NonZeroUsize,
    /// Longest accepted response body; longer ones are `too_large`.
    pub max_response_bytes: usize,
    /// Lag and block age are judged on the highest block a provider answered within this
    /// window, so a fleet that sometimes answers from a replica a block or two behind is not
    /// `lagging`, while a frozen head (no newer answer at all) still is at once.
    pub head_window: Duration,
}

/// `[exporter]` as written; absent keys take the defaults.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawExporter {
    listen: String,
    #[serde(with = "super::toml_form::required")]
    probe_interval: Duration,
    #[serde(with = "super::toml_form::required")]
    probe_timeout: Duration,
    #[serde(with = "super::toml_form::required")]
    chain_id_interval: Duration,
    max_concurrent_probes: usize,
    max_response_bytes: usize,
    #[serde(with = "super::toml_form::required")]
    head_window: Duration,
}

impl Default for RawExporter {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9787".into(),
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(2),
            chain_id_interval: Duration::from_secs(300),
            max_concurrent_probes: 64,
            max_response_bytes: 1024 * 1024,
            head_window: Duration::from_secs(5),
        }
    }
}

impl TryFrom<RawExporter> for ExporterConfig {
    type Error = FieldError;

    fn try_from(e: RawExporter) -> Result<Self, FieldError> {
        let listen = listen_address("exporter.listen", &e.listen, "127.0.0.1:9787")?;
        require_nonzero(
            &[
                ("exporter.probe_interval", e.probe_interval),
                ("exporter.probe_timeout", e.probe_timeout),
                ("exporter.chain_id_interval", e.chain_id_interval),
            ],
            "must be greater than zero, e.g. \"2s\"",
        )?;
        let max_concurrent_probes = NonZeroUsize::new(e.max_concurrent_probes).ok_or((
            "exporter.max_concurrent_probes".to_owned(),
            "must be at least 1".to_owned(),
        ))?;
        if e.max_response_bytes < 1024 {
            return Err((
                "exporter.max_response_bytes".into(),
                "must be at least 1024; a block header needs about 1 KiB".into(),
            ));
        }
        Ok(Self {
            listen,
            probe_interval: e.probe_interval,
            probe_timeout: e.probe_timeout,
            chain_id_interval: e.chain_id_interval,
            max_concurrent_probes,
            max_response_bytes: e.max_response_bytes,
            head_window: e.head_window,
        })
    }
}

/// The section as the printer writes it.
impl From<&ExporterConfig> for RawExporter {
    fn from(e: &ExporterConfig) -> Self {
        Self {
            listen: e.listen.to_string(),
            probe_interval: e.probe_interval,
            probe_timeout: e.probe_timeout,
            chain_id_interval: e.chain_id_interval,
            max_concurrent_probes: e.max_concurrent_probes.get(),
            max_response_bytes: e.max_response_bytes,
            head_window: e.head_window,
        }
    }
}
