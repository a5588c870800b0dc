//! The one TOML file both binaries read. It is parsed in three steps: TOML syntax, `${VAR}`
//! expansion of every string value, then typed deserialisation and validation into types that
//! cannot be invalid. Every error names the file, the field and what to do.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};
use thiserror::Error;
use url::Url;

use crate::envsubst;
use crate::secret::{SecretHeaders, SecretUrl};

/// A config file that cannot be used, with where and why.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: PathBuf,
        field: String,
        message: String,
    },
}

/// The whole validated config.
#[derive(Debug, Clone)]
pub struct Config {
    pub exporter: ExporterConfig,
    pub actuator: ActuatorConfig,
    pub chains: Vec<ChainConfig>,
}

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

/// One `[[chain]]`: a network, its expected chain id, and the HAProxy backend serving it.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub name: Name,
    pub chain_id: u64,
    pub backend: Name,
    pub providers: Vec<ProviderConfig>,
    /// `[policy]` with this chain's overrides applied.
    pub policy: PolicyConfig,
}

/// `[actuator]`: where the actuator reads and writes, and how often.
#[derive(Debug, Clone)]
pub struct ActuatorConfig {
    pub listen: SocketAddr,
    pub prometheus_url: Url,
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

/// The PromQL behind each signal; each yields one sample per `chain`/`provider`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queries {
    pub up: String,
    pub chain_id_match: String,
    pub block_lag: String,
    pub block_age: String,
    pub latency: String,
    pub error_ratio: String,
    pub last_probe: String,
}

impl Queries {
    /// The default queries over the exporter's metrics. With several exporters (an HA pair) the
    /// worst view counts. Latency is the median over the window, so one slow probe cannot eject.
    pub fn defaults(window: Duration) -> Self {
        let w = format!("{}ms", window.as_millis());
        let by = "by (chain, provider)";
        Self {
            up: format!("min {by} (ethrpc_up)"),
            chain_id_match: format!("min {by} (ethrpc_chain_id_match)"),
            block_lag: format!("max {by} (ethrpc_block_lag)"),
            block_age: format!("max {by} (ethrpc_block_age_seconds)"),
            latency: format!(
                "max {by} (quantile_over_time(0.5, ethrpc_probe_duration_seconds[{w}]))"
            ),
            error_ratio: format!(
                "sum {by} (increase(ethrpc_probe_errors_total[{w}])) / sum {by} (increase(ethrpc_probes_total[{w}]))"
            ),
            last_probe: format!("max {by} (ethrpc_last_probe_timestamp_seconds)"),
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

/// How healthy servers share traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    /// Every healthy server gets the full weight.
    Equal,
    /// Weight inversely proportional to (bucketed) latency.
    Latency,
}

/// The weighting policy's thresholds (`[policy]`, overridable per chain).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub max_block_lag: u64,
    pub max_block_age: Duration,
    pub max_latency: Duration,
    pub max_error_ratio: f64,
    pub weighting: Weighting,
    pub readmit_after: u32,
    pub slow_start: Duration,
    /// Weight of the best server, 1..=256.
    pub full_weight: u32,
    /// Weight changes smaller than this are not written.
    pub deadband: u32,
    /// Latencies are rounded up to multiples of this before weighting.
    pub latency_bucket: Duration,
    /// Escalating ejection: an ejected server returns only after it has been healthy for
    /// `base_ejection` × its recent ejection count (capped at `max_ejection`); the count decays by
    /// one per `base_ejection` it stays in the pool. Zero: readmission after `readmit_after` only.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// Time constant of the latency average that weights follow (zero: the raw signal).
    pub latency_smoothing: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            max_block_lag: 3,
            max_block_age: Duration::from_secs(60),
            max_latency: Duration::from_millis(1500),
            max_error_ratio: 0.5,
            weighting: Weighting::Latency,
            readmit_after: 3,
            slow_start: Duration::from_secs(10),
            full_weight: 100,
            deadband: 5,
            latency_bucket: Duration::from_millis(50),
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            latency_smoothing: Duration::from_secs(30),
        }
    }
}

/// One `[[chain.provider]]`.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Label value in metrics and logs.
    pub name: Name,
    /// The HAProxy server of this provider (defaults to `name`).
    pub server: Name,
    pub url: SecretUrl,
    pub headers: SecretHeaders,
    /// Opt-in: accept any TLS certificate (self-signed test nodes). Logged as a warning.
    pub insecure_skip_verify: bool,
}

/// A name that is safe as a label value and inside an HAProxy command line:
/// 1 to 64 characters from `[A-Za-z0-9_.:-]`, so it cannot carry `;`, spaces or newlines.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Checks `s`; the error says which characters are allowed.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "_.:-".contains(c);
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1 to 64 characters long".into());
        }
        if let Some(bad) = s.chars().find(|c| !ok_char(*c)) {
            return Err(format!(
                "contains {bad:?}; use only letters, digits and `_ . : -`"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Config {
    /// The config as understood, in TOML form, with URLs and header values redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dur = |d: Duration| humantime::format_duration(d).to_string();
        let e = &self.exporter;
        writeln!(f, "[exporter]\nlisten = \"{}\"", e.listen)?;
        writeln!(f, "probe_interval = \"{}\"", dur(e.probe_interval))?;
        writeln!(f, "probe_timeout = \"{}\"", dur(e.probe_timeout))?;
        writeln!(f, "chain_id_interval = \"{}\"", dur(e.chain_id_interval))?;
        writeln!(f, "max_concurrent_probes = {}", e.max_concurrent_probes)?;
        writeln!(f, "max_response_bytes = {}", e.max_response_bytes)?;
        writeln!(f, "head_window = \"{}\"", dur(e.head_window))?;
        let a = &self.actuator;
        writeln!(f, "\n[actuator]\nlisten = \"{}\"", a.listen)?;
        writeln!(f, "prometheus_url = \"{}\"", a.prometheus_url)?;
        writeln!(f, "haproxy = \"{}\"", a.haproxy)?;
        for (key, value) in [
            ("interval", a.interval),
            ("query_timeout", a.query_timeout),
            ("haproxy_timeout", a.haproxy_timeout),
            ("signal_window", a.signal_window),
            ("max_data_age", a.max_data_age),
        ] {
            writeln!(f, "{key} = \"{}\"", dur(value))?;
        }
        let q = &a.queries;
        writeln!(f, "\n[actuator.queries]")?;
        for (key, query) in [
            ("up", &q.up),
            ("chain_id_match", &q.chain_id_match),
            ("block_lag", &q.block_lag),
            ("block_age", &q.block_age),
            ("latency", &q.latency),
            ("error_ratio", &q.error_ratio),
            ("last_probe", &q.last_probe),
        ] {
            writeln!(f, "{key} = {query:?}")?;
        }
        for c in &self.chains {
            writeln!(f, "\n[[chain]]\nname = \"{}\"", c.name)?;
            writeln!(f, "chain_id = {}\nbackend = \"{}\"", c.chain_id, c.backend)?;
            let p = &c.policy;
            let weighting = match p.weighting {
                Weighting::Equal => "equal",
                Weighting::Latency => "latency",
            };
            writeln!(f, "max_block_lag = {}", p.max_block_lag)?;
            writeln!(f, "max_block_age = \"{}\"", dur(p.max_block_age))?;
            writeln!(f, "max_latency = \"{}\"", dur(p.max_latency))?;
            writeln!(f, "max_error_ratio = {}", p.max_error_ratio)?;
            writeln!(f, "weighting = \"{weighting}\"")?;
            writeln!(f, "readmit_after = {}", p.readmit_after)?;
            writeln!(f, "slow_start = \"{}\"", dur(p.slow_start))?;
            writeln!(
                f,
                "full_weight = {}\ndeadband = {}",
                p.full_weight, p.deadband
            )?;
            for (key, value) in [
                ("latency_bucket", p.latency_bucket),
                ("base_ejection", p.base_ejection),
                ("max_ejection", p.max_ejection),
                ("latency_smoothing", p.latency_smoothing),
            ] {
                writeln!(f, "{key} = \"{}\"", dur(value))?;
            }
            for p in &c.providers {
                writeln!(f, "\n[[chain.provider]]\nname = \"{}\"", p.name)?;
                writeln!(f, "server = \"{}\"\nurl = \"{}\"", p.server, p.url)?;
                if !p.headers.expose().is_empty() {
                    writeln!(f, "headers = {}", p.headers)?;
                }
                if p.insecure_skip_verify {
                    writeln!(f, "insecure_skip_verify = true")?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    exporter: RawExporter,
    #[serde(default)]
    actuator: RawActuator,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    chain: Vec<RawChain>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawActuator {
    listen: String,
    prometheus_url: String,
    haproxy: String,
    #[serde(deserialize_with = "duration")]
    interval: Duration,
    #[serde(deserialize_with = "duration")]
    query_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    haproxy_timeout: Duration,
    #[serde(deserialize_with = "optional_duration")]
    signal_window: Option<Duration>,
    #[serde(deserialize_with = "optional_duration")]
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawQueries {
    up: Option<String>,
    chain_id_match: Option<String>,
    block_lag: Option<String>,
    block_age: Option<String>,
    latency: Option<String>,
    error_ratio: Option<String>,
    last_probe: Option<String>,
}

/// `[policy]`, and the same keys inside a `[[chain]]` (moved there into `policy` before
/// deserialising, see [`POLICY_KEYS`]).
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, default)]
struct RawPolicy {
    max_block_lag: Option<u64>,
    #[serde(deserialize_with = "optional_duration")]
    max_block_age: Option<Duration>,
    #[serde(deserialize_with = "optional_duration")]
    max_latency: Option<Duration>,
    max_error_ratio: Option<f64>,
    weighting: Option<Weighting>,
    readmit_after: Option<u32>,
    #[serde(deserialize_with = "optional_duration")]
    slow_start: Option<Duration>,
    full_weight: Option<u32>,
    deadband: Option<u32>,
    #[serde(deserialize_with = "optional_duration")]
    latency_bucket: Option<Duration>,
    #[serde(deserialize_with = "optional_duration")]
    base_ejection: Option<Duration>,
    #[serde(deserialize_with = "optional_duration")]
    max_ejection: Option<Duration>,
    #[serde(deserialize_with = "optional_duration")]
    latency_smoothing: Option<Duration>,
}

/// Policy keys a `[[chain]]` may override directly.
const POLICY_KEYS: [&str; 13] = [
    "max_block_lag",
    "max_block_age",
    "max_latency",
    "max_error_ratio",
    "weighting",
    "readmit_after",
    "slow_start",
    "full_weight",
    "deadband",
    "latency_bucket",
    "base_ejection",
    "max_ejection",
    "latency_smoothing",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawExporter {
    listen: String,
    #[serde(deserialize_with = "duration")]
    probe_interval: Duration,
    #[serde(deserialize_with = "duration")]
    probe_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    chain_id_interval: Duration,
    max_concurrent_probes: usize,
    max_response_bytes: usize,
    #[serde(deserialize_with = "duration")]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    name: String,
    chain_id: u64,
    backend: String,
    #[serde(default)]
    provider: Vec<RawProvider>,
    #[serde(default)]
    policy: RawPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    url: String,
    server: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// Parses a duration written as "2s", "150ms", "1m 30s".
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write it like \"2s\" or \"150ms\""
        ))
    })
}

impl Config {
    /// Reads, expands and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text, |name| std::env::var(name).ok())
    }

    /// Parses `text` as if read from `file`, expanding `${VAR}` through `env`.
    pub fn parse(
        file: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            field: field.to_owned(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| line_col(text, s.start))
                .unwrap_or_default();
            // The message only: toml's Display quotes the offending line, which may hold a key.
            invalid(&format!("TOML syntax{at}"), e.message().trim().to_owned())
        })?;
        for (key, value) in table.iter_mut() {
            expand_strings(value, key, &env)
                .map_err(|(field, e)| invalid(&field, e.to_string()))?;
        }
        move_chain_policy_keys(&mut table);
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let field = e.path().to_string();
                invalid(&field, hide_quoted_values(&e.into_inner().to_string()))
            })?;
        validate(raw).map_err(|(field, message)| invalid(&field, message))
    }
}

/// Policy keys written directly inside a `[[chain]]` go into its `policy` table, so that one
/// struct describes the policy keys and unknown chain keys are still rejected.
fn move_chain_policy_keys(table: &mut toml::Table) {
    let Some(toml::Value::Array(chains)) = table.get_mut("chain") else {
        return;
    };
    for chain in chains.iter_mut().filter_map(toml::Value::as_table_mut) {
        let mut policy = toml::Table::new();
        for key in POLICY_KEYS {
            if let Some(value) = chain.remove(key) {
                policy.insert(key.to_owned(), value);
            }
        }
        if !policy.is_empty() {
            chain.insert("policy".to_owned(), toml::Value::Table(policy));
        }
    }
}

fn line_col(text: &str, offset: usize) -> String {
    // A span inside a multi-byte character would panic a plain slice.
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!(" at line {line}, column {col}")
}

/// serde's messages quote the offending value (`invalid type: string "https://…key"`): the
/// value may be a secret, so every quoted string is cut out.
fn hide_quoted_values(message: &str) -> String {
    let mut out = String::new();
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        out.push_str(if inside { "\"…\"" } else { part });
        inside = !inside;
    }
    out
}

fn expand_strings(
    value: &mut toml::Value,
    path: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), (String, envsubst::EnvsubstError)> {
    match value {
        toml::Value::String(s) => {
            *s = envsubst::expand(s, env).map_err(|e| (path.to_owned(), e))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_strings(item, &format!("{path}[{i}]"), env)?;
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                expand_strings(item, &format!("{path}.{key}"), env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

type FieldError = (String, String);

fn name(field: String, value: &str) -> Result<Name, FieldError> {
    Name::parse(value).map_err(|m| (field, format!("{value:?} {m}")))
}

/// A chain's policy: its own keys, else `[policy]`, else the defaults.
fn resolve_policy(
    global: &RawPolicy,
    chain: &RawPolicy,
    at: &str,
) -> Result<PolicyConfig, FieldError> {
    let d = PolicyConfig::default();
    let field = |key: &str| format!("{at}{key}");
    let p = PolicyConfig {
        max_block_lag: chain
            .max_block_lag
            .or(global.max_block_lag)
            .unwrap_or(d.max_block_lag),
        max_block_age: chain
            .max_block_age
            .or(global.max_block_age)
            .unwrap_or(d.max_block_age),
        max_latency: chain
            .max_latency
            .or(global.max_latency)
            .unwrap_or(d.max_latency),
        max_error_ratio: chain
            .max_error_ratio
            .or(global.max_error_ratio)
            .unwrap_or(d.max_error_ratio),
        weighting: chain.weighting.or(global.weighting).unwrap_or(d.weighting),
        readmit_after: chain
            .readmit_after
            .or(global.readmit_after)
            .unwrap_or(d.readmit_after),
        slow_start: chain
            .slow_start
            .or(global.slow_start)
            .unwrap_or(d.slow_start),
        full_weight: chain
            .full_weight
            .or(global.full_weight)
            .unwrap_or(d.full_weight),
        deadband: chain.deadband.or(global.deadband).unwrap_or(d.deadband),
        latency_bucket: chain
            .latency_bucket
            .or(global.latency_bucket)
            .unwrap_or(d.latency_bucket),
        base_ejection: chain
            .base_ejection
            .or(global.base_ejection)
            .unwrap_or(d.base_ejection),
        max_ejection: chain
            .max_ejection
            .or(global.max_ejection)
            .unwrap_or(d.max_ejection),
        latency_smoothing: chain
            .latency_smoothing
            .or(global.latency_smoothing)
            .unwrap_or(d.latency_smoothing),
    };
    if !(0.0..=1.0).contains(&p.max_error_ratio) {
        return Err((
            field("max_error_ratio"),
            "must be between 0 and 1, e.g. 0.5".into(),
        ));
    }
    if !(1..=256).contains(&p.full_weight) {
        return Err((
            field("full_weight"),
            "must be between 1 and 256 (HAProxy's range)".into(),
        ));
    }
    if p.deadband >= p.full_weight {
        return Err((
            field("deadband"),
            "must be smaller than full_weight, e.g. 5".into(),
        ));
    }
    if p.readmit_after == 0 {
        return Err((
            field("readmit_after"),
            "must be at least 1 healthy cycle".into(),
        ));
    }
    if p.max_ejection < p.base_ejection {
        return Err((
            field("max_ejection"),
            "must be at least base_ejection, e.g. \"300s\"".into(),
        ));
    }
    for (key, value) in [
        ("max_block_age", p.max_block_age),
        ("max_latency", p.max_latency),
        ("latency_bucket", p.latency_bucket),
    ] {
        if value.is_zero() {
            return Err((field(key), "must be greater than zero".into()));
        }
    }
    Ok(p)
}

fn validate_actuator(
    a: RawActuator,
    exporter: &ExporterConfig,
) -> Result<ActuatorConfig, FieldError> {
    let listen = a.listen.parse().map_err(|_| {
        (
            "actuator.listen".to_owned(),
            format!(
                "{:?} is not an address; write it as \"127.0.0.1:9788\"",
                a.listen
            ),
        )
    })?;
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
    for (field, value) in [
        ("actuator.interval", a.interval),
        ("actuator.query_timeout", a.query_timeout),
        ("actuator.haproxy_timeout", a.haproxy_timeout),
    ] {
        if value.is_zero() {
            return Err((
                field.into(),
                "must be greater than zero, e.g. \"2s\"".into(),
            ));
        }
    }
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
    for (field, value) in [
        ("actuator.signal_window", signal_window),
        ("actuator.max_data_age", max_data_age),
    ] {
        if value.is_zero() {
            return Err((field.into(), "must be greater than zero".into()));
        }
    }
    let d = Queries::defaults(signal_window);
    let q = a.queries;
    Ok(ActuatorConfig {
        listen,
        prometheus_url,
        haproxy,
        interval: a.interval,
        query_timeout: a.query_timeout,
        haproxy_timeout: a.haproxy_timeout,
        signal_window,
        max_data_age,
        queries: Queries {
            up: q.up.unwrap_or(d.up),
            chain_id_match: q.chain_id_match.unwrap_or(d.chain_id_match),
            block_lag: q.block_lag.unwrap_or(d.block_lag),
            block_age: q.block_age.unwrap_or(d.block_age),
            latency: q.latency.unwrap_or(d.latency),
            error_ratio: q.error_ratio.unwrap_or(d.error_ratio),
            last_probe: q.last_probe.unwrap_or(d.last_probe),
        },
    })
}

fn validate(raw: RawConfig) -> Result<Config, FieldError> {
    let global_policy = raw.policy.clone();
    resolve_policy(&global_policy, &RawPolicy::default(), "policy.")?;
    let e = raw.exporter;
    let listen = e.listen.parse().map_err(|_| {
        (
            "exporter.listen".to_owned(),
            format!(
                "{:?} is not an address; write it as \"127.0.0.1:9787\"",
                e.listen
            ),
        )
    })?;
    for (field, value) in [
        ("exporter.probe_interval", e.probe_interval),
        ("exporter.probe_timeout", e.probe_timeout),
        ("exporter.chain_id_interval", e.chain_id_interval),
    ] {
        if value.is_zero() {
            return Err((
                field.into(),
                "must be greater than zero, e.g. \"2s\"".into(),
            ));
        }
    }
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
    if raw.chain.is_empty() {
        return Err((
            "chain".into(),
            "no [[chain]] is configured; add one with at least one [[chain.provider]]".into(),
        ));
    }
    let mut chain_names = HashSet::new();
    let mut backends = HashSet::new();
    let mut chains = Vec::with_capacity(raw.chain.len());
    for (ci, chain) in raw.chain.into_iter().enumerate() {
        let at = format!("chain[{ci}]");
        let chain_name = name(format!("{at}.name"), &chain.name)?;
        if !chain_names.insert(chain_name.clone()) {
            return Err((
                format!("{at}.name"),
                format!("chain {chain_name} is configured twice; give each chain its own name"),
            ));
        }
        let backend = name(format!("{at}.backend"), &chain.backend)?;
        if !backends.insert(backend.clone()) {
            return Err((
                format!("{at}.backend"),
                format!("backend {backend} already serves another chain; each chain needs its own HAProxy backend"),
            ));
        }
        if chain.provider.is_empty() {
            return Err((
                format!("{at}.provider"),
                format!("chain {chain_name} has no providers; add a [[chain.provider]]"),
            ));
        }
        let mut provider_names = HashSet::new();
        let mut servers = HashSet::new();
        let mut providers = Vec::with_capacity(chain.provider.len());
        for (pi, p) in chain.provider.into_iter().enumerate() {
            let at = format!("{at}.provider[{pi}]");
            let provider_name = name(format!("{at}.name"), &p.name)?;
            if !provider_names.insert(provider_name.clone()) {
                return Err((
                    format!("{at}.name"),
                    format!("provider {provider_name} appears twice in chain {chain_name}; names must be unique"),
                ));
            }
            let server = match &p.server {
                Some(s) => name(format!("{at}.server"), s)?,
                None => provider_name.clone(),
            };
            if !servers.insert(server.clone()) {
                return Err((
                    format!("{at}.server"),
                    format!("HAProxy server {backend}/{server} is used by two providers; set distinct `server` names"),
                ));
            }
            providers.push(ProviderConfig {
                url: provider_url(&at, &p.url)?,
                headers: headers(&at, &p.headers)?,
                insecure_skip_verify: p.insecure_skip_verify,
                name: provider_name,
                server,
            });
        }
        chains.push(ChainConfig {
            policy: resolve_policy(&global_policy, &chain.policy, &format!("{at}."))?,
            name: chain_name,
            chain_id: chain.chain_id,
            backend,
            providers,
        });
    }
    let exporter = ExporterConfig {
        listen,
        probe_interval: e.probe_interval,
        probe_timeout: e.probe_timeout,
        chain_id_interval: e.chain_id_interval,
        max_concurrent_probes,
        max_response_bytes: e.max_response_bytes,
        head_window: e.head_window,
    };
    Ok(Config {
        actuator: validate_actuator(raw.actuator, &exporter)?,
        exporter,
        chains,
    })
}

/// Never echoes the URL: its path and query usually hold the API key.
fn provider_url(at: &str, text: &str) -> Result<SecretUrl, FieldError> {
    let field = format!("{at}.url");
    let url = Url::parse(text).map_err(|e| {
        (
            field.clone(),
            format!("is not a valid URL ({e}); write it as https://host/path (value not shown: it may hold a key)"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err((
            field,
            format!(
                "scheme {:?} is not supported; use https:// (or http:// for local nodes)",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err((field, "has no host; write it as https://host/path".into()));
    }
    Ok(SecretUrl::new(url))
}

fn headers(
    at: &str,
    raw: &std::collections::BTreeMap<String, String>,
) -> Result<SecretHeaders, FieldError> {
    let mut map = HeaderMap::new();
    for (key, value) in raw {
        let field = format!("{at}.headers.{key}");
        let name = HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| (field.clone(), "is not a valid HTTP header name".to_owned()))?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            (
                field,
                "value holds characters not allowed in an HTTP header (value not shown)".to_owned(),
            )
        })?;
        map.insert(name, value);
    }
    Ok(SecretHeaders::new(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[exporter]
listen = "127.0.0.1:9787"
probe_interval = "2s"
probe_timeout = "150ms"

[[chain]]
name = "mainnet"
chain_id = 1
backend = "rpc-backend"

[[chain.provider]]
name = "quicknode"
url = "${QN_URL}"
server = "qn"
headers = { Authorization = "Bearer ${TOKEN}" }

[[chain.provider]]
name = "local"
url = "http://127.0.0.1:8545"
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "QN_URL" => Some("https://x.quiknode.pro/SECRETKEY/".into()),
            "TOKEN" => Some("SECRETTOKEN".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("ethrpc.toml"), text, env)
    }

    fn error(text: &str) -> String {
        let message = parse(text).unwrap_err().to_string();
        assert!(message.starts_with("ethrpc.toml: "), "{message}");
        assert!(!message.contains("SECRET"), "secret leaked: {message}");
        message
    }

    #[test]
    fn parses_the_documented_example() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.exporter.probe_interval, Duration::from_secs(2));
        assert_eq!(c.exporter.probe_timeout, Duration::from_millis(150));
        assert_eq!(c.chains[0].name.as_str(), "mainnet");
        let qn = &c.chains[0].providers[0];
        assert_eq!(qn.server.as_str(), "qn");
        assert_eq!(qn.url.expose().path(), "/SECRETKEY/");
        assert_eq!(qn.headers.expose()["authorization"], "Bearer SECRETTOKEN");
        assert_eq!(c.chains[0].providers[1].server.as_str(), "local");
        assert!(!format!("{c:?}").contains("SECRET"));
    }

    #[test]
    fn defaults_apply_when_the_exporter_section_is_absent() {
        let without: String = GOOD
            .lines()
            .skip_while(|l| !l.starts_with("[[chain]]"))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse(&without).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.exporter.listen, "127.0.0.1:9787".parse().unwrap());
        assert_eq!(c.exporter.probe_timeout, Duration::from_secs(2));
        assert_eq!(c.exporter.chain_id_interval, Duration::from_secs(300));
        assert_eq!(c.exporter.max_response_bytes, 1 << 20);
        assert_eq!(c.exporter.head_window, Duration::from_secs(5));
        let p = &c.chains[0].policy;
        assert_eq!(p.base_ejection, Duration::from_secs(10));
        assert_eq!(p.max_ejection, Duration::from_secs(300));
        assert_eq!(p.latency_smoothing, Duration::from_secs(30));
    }

    #[test]
    fn each_mistake_names_its_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "probe_timeout = \"150ms\"",
                "probe_timeout = \"0s\"",
                "exporter.probe_timeout: must be greater than zero",
            ),
            (
                "probe_interval = \"2s\"",
                "probe_interval = \"often\"",
                "exporter.probe_interval: invalid duration",
            ),
            (
                "listen = \"127.0.0.1:9787\"",
                "listen = \"nowhere\"",
                "exporter.listen",
            ),
            (
                "chain_id = 1",
                "chain_id = 1\ncolour = 1",
                "unknown field `colour`",
            ),
            (
                "name = \"local\"",
                "name = \"quicknode\"",
                "provider quicknode appears twice",
            ),
            (
                "name = \"local\"",
                "name = \"lo cal\"",
                "chain[0].provider[1].name: \"lo cal\" contains ' '",
            ),
            (
                "server = \"qn\"",
                "server = \"local\"",
                "HAProxy server rpc-backend/local is used by two",
            ),
            (
                "backend = \"rpc-backend\"",
                "backend = \"a;b\"",
                "chain[0].backend",
            ),
            (
                "${TOKEN}",
                "${MISSING_TOKEN}",
                "environment variable `MISSING_TOKEN` is not set",
            ),
            (
                "\"${QN_URL}\"",
                "\"ftp://host/SECRETKEY\"",
                "scheme \"ftp\" is not supported",
            ),
            (
                "\"${QN_URL}\"",
                "\"https://\"",
                "chain[0].provider[0].url: is not a valid URL",
            ),
            (
                "\"${QN_URL}\"",
                "\"not a url SECRETKEY\"",
                "value not shown",
            ),
            (
                "chain_id = 1",
                "chain_id = \"SECRETKEY\"",
                "chain[0].chain_id: invalid type",
            ),
            ("[exporter]", "[exporter", "TOML syntax at line 2"),
            ("name = \"local\"", "name = \"lo€al", "TOML syntax at line"),
            (
                "chain_id = 1",
                "chain_id = 1\nmax_error_ratio = 1.5",
                "chain[0].max_error_ratio: must be between 0 and 1",
            ),
            (
                "chain_id = 1",
                "chain_id = 1\nfull_weight = 300",
                "full_weight: must be between 1 and 256",
            ),
            (
                "chain_id = 1",
                "chain_id = 1\nweighting = \"fastest\"",
                "unknown variant `fastest`",
            ),
            (
                "[exporter]",
                "[policy]\nreadmit_after = 0\n[exporter]",
                "policy.readmit_after: must be at least 1",
            ),
            (
                "[exporter]",
                "[actuator]\nhaproxy = \"tcp:0.0.0.0:9999\"\n[exporter]",
                "actuator.haproxy: 0.0.0.0:9999 is not a loopback address",
            ),
            (
                "[exporter]",
                "[actuator]\nhaproxy = \"/run/h.sock\"\n[exporter]",
                "must start with unix: or tcp:",
            ),
            (
                "[exporter]",
                "[actuator]\nprometheus_url = \"SECRETKEY\"\n[exporter]",
                "actuator.prometheus_url: is not an http(s) URL",
            ),
            (
                "[exporter]",
                "[actuator]\nintervall = \"1s\"\n[exporter]",
                "unknown field `intervall`",
            ),
            (
                "chain_id = 1",
                "chain_id = 1\nbase_ejection = \"60s\"\nmax_ejection = \"30s\"",
                "chain[0].max_ejection: must be at least base_ejection",
            ),
            (
                "probe_interval = \"2s\"",
                "probe_interval = \"200000000000y\"",
                "exporter.probe_interval: is too large",
            ),
            (
                "[exporter]",
                "[actuator]\nmax_data_age = \"0s\"\n[exporter]",
                "actuator.max_data_age: must be greater than zero",
            ),
        ];
        for (from, to, expected) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "case {from} did not apply");
            let message = error(&text);
            assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            );
        }
    }

    #[test]
    fn chain_policy_overrides_the_global_policy_which_overrides_defaults() {
        let text = GOOD
            .replacen(
                "[exporter]",
                "[policy]\nmax_block_lag = 7\nmax_latency = \"1s\"\n\n[exporter]",
                1,
            )
            .replacen(
                "chain_id = 1",
                "chain_id = 1\nmax_block_lag = 2\nweighting = \"equal\"",
                1,
            );
        let c = parse(&text).unwrap();
        let p = &c.chains[0].policy;
        assert_eq!(p.max_block_lag, 2, "chain override");
        assert_eq!(p.weighting, Weighting::Equal, "chain override");
        assert_eq!(p.max_latency, Duration::from_secs(1), "global");
        assert_eq!(p.readmit_after, 3, "default");
        assert_eq!(
            c.actuator.haproxy,
            HaproxyAddress::Unix("/var/run/haproxy/actuator.sock".into())
        );
        assert_eq!(
            c.actuator.signal_window,
            Duration::from_secs(6),
            "3 probe intervals"
        );
        assert!(c.actuator.queries.latency.contains("[6000ms]"));
        let shown = c.to_string();
        assert!(
            shown.contains("max_block_lag = 2") && shown.contains("weighting = \"equal\""),
            "{shown}"
        );
    }

    #[test]
    fn actuator_settings_and_query_overrides_are_read() {
        let text = GOOD.replacen(
            "[exporter]",
            "[actuator]\nhaproxy = \"tcp:127.0.0.1:9999\"\ninterval = \"1s\"\n[actuator.queries]\nup = \"my_up\"\n\n[exporter]",
            1,
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.actuator.haproxy,
            HaproxyAddress::Tcp("127.0.0.1:9999".parse().unwrap())
        );
        assert_eq!(c.actuator.interval, Duration::from_secs(1));
        assert_eq!(c.actuator.queries.up, "my_up");
        assert_eq!(
            c.actuator.queries.block_lag,
            Queries::defaults(Duration::from_secs(6)).block_lag
        );
    }

    #[test]
    fn a_file_without_chains_or_providers_is_rejected() {
        assert!(error("").contains("no [[chain]] is configured"));
        let no_providers = "[[chain]]\nname = \"a\"\nchain_id = 1\nbackend = \"b\"\n";
        assert!(error(no_providers).contains("chain a has no providers"));
        let twice = format!("{no_providers}[[chain.provider]]\nname=\"p\"\nurl=\"http://h\"\n");
        assert!(error(&format!("{twice}{twice}")).contains("chain a is configured twice"));
        let other = twice.replacen("name = \"a\"", "name = \"b\"", 1);
        assert!(
            error(&format!("{twice}{other}")).contains("backend b already serves another chain")
        );
    }

    #[test]
    fn names_allow_only_command_safe_characters() {
        for ok in ["rpc-backend", "a.b:c_d-1", &"x".repeat(64)] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a;b", "a\nb", "a/b", "é", &"x".repeat(65)] {
            assert!(Name::parse(bad).is_err(), "{bad:?}");
        }
    }
}
