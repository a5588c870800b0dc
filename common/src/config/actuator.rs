//! `[actuator]`: where the actuator reads (Prometheus) and writes (HAProxy's admin socket), how
//! often, and the PromQL behind each signal. Its raw shape, defaults and checks.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::exporter::ExporterConfig;
use super::{listen_address, require_nonzero, FieldError};
use crate::metric_names::{
    BLOCK_AGE, BLOCK_LAG, CHAIN_ID_MATCH, LAST_PROBE, PROBES, PROBE_DURATION, PROBE_ERRORS, UP,
};
use crate::secret::SecretUrl;

/// `[actuator]`: where the actuator reads and writes, and how often.
#[derive(Debug, Clone)]
pub struct ActuatorConfig {
    pub listen: SocketAddr,
    /// May carry credentials (user info, a token in the query), so it is shown redacted.
    pub prometheus_url: SecretUrl,
    pub haproxy: HaproxyAddress,
    pub interval: Duration,
    /// Deadline of one Prometheus query.
    pub query_timeout: Duration,
    /// Deadline of one HAProxy admin-socket exchange.
    pub haproxy_timeout: Duration,
    /// Range of the latency and error-ratio signals (`[W]` in the default queries).
    pub signal_window: Duration,
    /// A provider whose last probe is older than this counts as missing (fail static).
    pub max_data_age: Duration,
    pub queries: Queries,
}

layered_section! {
    /// The PromQL behind each signal; each yields one sample per `chain`/`provider`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Queries, raw RawQueries {
        up: String,
        chain_id_match: String,
        block_lag: String,
        block_age: String,
        latency: String,
        error_ratio: String,
        last_probe: String,
    }
}

impl Queries {
    /// The default queries over the exporter's metrics. With several exporters (an HA pair) the
    /// worst view counts. Latency is the median over the window, so one slow probe cannot eject.
    pub fn defaults(window: Duration) -> Self {
        let w = format!("{}ms", window.as_millis());
        let by = "by (chain, provider)";
        Self {
            up: format!("min {by} ({UP})"),
            chain_id_match: format!("min {by} ({CHAIN_ID_MATCH})"),
            block_lag: format!("max {by} ({BLOCK_LAG})"),
            block_age: format!("max {by} ({BLOCK_AGE})"),
            latency: format!("max {by} (quantile_over_time(0.5, {PROBE_DURATION}[{w}]))"),
            error_ratio: format!(
                "sum {by} (increase({PROBE_ERRORS}[{w}])) / sum {by} (increase({PROBES}[{w}]))"
            ),
            last_probe: format!("max {by} ({LAST_PROBE})"),
        }
    }
}

/// Where HAProxy's admin socket is. A TCP socket must be on loopback: whoever reaches it is admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaproxyAddress {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::str::FromStr for HaproxyAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(
                    "unix: needs a socket path, e.g. \"unix:/run/haproxy/actuator.sock\"".into(),
                );
            }
            return Ok(Self::Unix(path.into()));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            let addr: SocketAddr = addr
                .parse()
                .map_err(|_| format!("{addr:?} is not an address; write \"tcp:127.0.0.1:9999\""))?;
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "{addr} is not a loopback address; the admin socket gives full control of HAProxy, so use a Unix socket or tcp:127.0.0.1:PORT"
                ));
            }
            return Ok(Self::Tcp(addr));
        }
        Err(format!("{s:?} must start with unix: or tcp:"))
    }
}

impl fmt::Display for HaproxyAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// `[actuator]` as written; absent keys take the defaults. The two windows default to multiples
/// of the exporter's probe interval, so they stay `None` until the exporter is known.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawActuator {
    listen: String,
    prometheus_url: String,
    haproxy: String,
    #[serde(with = "super::toml_form::required")]
    interval: Duration,
    #[serde(with = "super::toml_form::required")]
    query_timeout: Duration,
    #[serde(with = "super::toml_form::required")]
    haproxy_timeout: Duration,
    #[serde(
        with = "super::toml_form::optional",
        skip_serializing_if = "Option::is_none"
    )]
    signal_window: Option<Duration>,
    #[serde(
        with = "super::toml_form::optional",
        skip_serializing_if = "Option::is_none"
    )]
    max_data_age: Option<Duration>,
    queries: RawQueries,
}

impl Default for RawActuator {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9788".into(),
            prometheus_url: "http://127.0.0.1:9090".into(),
            haproxy: "unix:/var/run/haproxy/actuator.sock".into(),
            interval: Duration::from_secs(2),
            query_timeout: Duration::from_secs(2),
            haproxy_timeout: Duration::from_secs(2),
            signal_window: None,
            max_data_age: None,
            queries: RawQueries::default(),
        }
    }
}

impl RawActuator {
    /// Checks the section and fills in the defaults that derive from `exporter`.
    pub(super) fn validate(self, exporter: &ExporterConfig) -> Result<ActuatorConfig, FieldError> {
        let a = self;
        let listen = listen_address("actuator.listen", &a.listen, "127.0.0.1:9788")?;
        let prometheus_url = Url::parse(&a.prometheus_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                (
                    "actuator.prometheus_url".to_owned(),
                    "is not an http(s) URL; write it as \"http://127.0.0.1:9090\" (value not shown)"
                        .to_owned(),
                )
            })?;
        let haproxy = a
            .haproxy
            .parse()
            .map_err(|m| ("actuator.haproxy".to_owned(), m))?;
        require_nonzero(
            &[
                ("actuator.interval", a.interval),
                ("actuator.query_timeout", a.query_timeout),
                ("actuator.haproxy_timeout", a.haproxy_timeout),
            ],
            "must be greater than zero, e.g. \"2s\"",
        )?;
        // The defaults derive from the exporter's intervals; a huge interval must be a config
        // error, not an overflow panic.
        let three_probes = exporter.probe_interval.checked_mul(3).ok_or((
            "exporter.probe_interval".to_owned(),
            "is too large; write a probe interval of seconds or minutes, e.g. \"2s\"".to_owned(),
        ))?;
        let signal_window = a.signal_window.unwrap_or(three_probes);
        let max_data_age = match a.max_data_age {
            Some(age) => age,
            None => three_probes.checked_add(exporter.probe_timeout).ok_or((
                "exporter.probe_timeout".to_owned(),
                "is too large; write a timeout of seconds, e.g. \"2s\"".to_owned(),
            ))?,
        };
        require_nonzero(
            &[
                ("actuator.signal_window", signal_window),
                ("actuator.max_data_age", max_data_age),
            ],
            "must be greater than zero",
        )?;
        Ok(ActuatorConfig {
            listen,
            prometheus_url: SecretUrl::new(prometheus_url),
            haproxy,
            interval: a.interval,
            query_timeout: a.query_timeout,
            haproxy_timeout: a.haproxy_timeout,
            signal_window,
            max_data_age,
            queries: RawQueries::resolve(&[&a.queries], Queries::defaults(signal_window)),
        })
    }
}

/// The section as the printer writes it: the Prometheus URL redacted like a provider's.
impl From<&ActuatorConfig> for RawActuator {
    fn from(a: &ActuatorConfig) -> Self {
        Self {
            listen: a.listen.to_string(),
            prometheus_url: a.prometheus_url.to_string(),
            haproxy: a.haproxy.to_string(),
            interval: a.interval,
            query_timeout: a.query_timeout,
            haproxy_timeout: a.haproxy_timeout,
            signal_window: Some(a.signal_window),
            max_data_age: Some(a.max_data_age),
            queries: RawQueries::from(&a.queries),
        }
    }
}
