//! `[[chain]]` and its `[[chain.provider]]`s: what is probed and which HAProxy backend and
//! servers it maps to. Their raw shapes and checks; the policy keys a chain may set are in
//! [`super::policy`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use url::Url;

use super::capabilities::{CapabilitiesConfig, RawCapabilities};
use super::policy::{PolicyConfig, RawPolicy};
use super::FieldError;
use crate::secret::{SecretHeaders, SecretUrl};

/// One `[[chain]]`: a network, its expected chain id, and the HAProxy backend serving it.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub name: Name,
    pub chain_id: u64,
    pub backend: Name,
    pub providers: Vec<ProviderConfig>,
    /// `[policy]` with this chain's overrides applied.
    pub policy: PolicyConfig,
    /// `[chain.capabilities]`: what is asked besides the head; `None`, nothing.
    pub capabilities: Option<CapabilitiesConfig>,
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
    /// 1 for a primary; servers of a higher tier get traffic only when the lower tiers fall
    /// short (too few healthy servers, or too little plan capacity for the demand).
    pub tier: Tier,
    /// The plan's request rate limit (requests per second through HAProxy); `None`: unlimited.
    pub max_rps: Option<f64>,
    /// How often this provider is probed, when not the exporter's `probe_interval` (a reserve
    /// can be probed less often: its probes cost money too).
    pub probe_interval: Option<Duration>,
}

impl ProviderConfig {
    /// This provider's probe interval: its own, else the exporter's.
    pub fn probe_interval_or(&self, exporter: Duration) -> Duration {
        self.probe_interval.unwrap_or(exporter)
    }
}

/// A provider's tier: 1 (primary, the default) to [`Tier::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tier(u8);

impl Tier {
    pub const PRIMARY: Tier = Tier(1);
    pub const MAX: u8 = 9;

    pub fn get(self) -> u8 {
        self.0
    }

    /// `None` outside 1..=[`Tier::MAX`].
    pub fn new(tier: u8) -> Option<Self> {
        (1..=Self::MAX).contains(&tier).then_some(Self(tier))
    }

    fn parse(field: String, value: u32) -> Result<Self, FieldError> {
        match u8::try_from(value).ok().and_then(Self::new) {
            Some(t) => Ok(t),
            None => Err((
                field,
                format!(
                    "must be between 1 (primary, the default) and {}; higher tiers are used only when lower ones fall short",
                    Self::MAX
                ),
            )),
        }
    }
}

impl Default for Tier {
    fn default() -> Self {
        Self::PRIMARY
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
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

/// One `[[chain]]` as written, its policy keys gathered into `policy` while loading.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChain {
    name: String,
    chain_id: u64,
    backend: String,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capabilities: Option<RawCapabilities>,
    #[serde(default)]
    provider: Vec<RawProvider>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    insecure_skip_verify: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_rps: Option<f64>,
    #[serde(
        default,
        with = "super::toml_form::optional",
        skip_serializing_if = "Option::is_none"
    )]
    probe_interval: Option<Duration>,
}

/// Checks every chain; names and backends must be unique across chains, provider names and
/// servers within a chain.
pub(super) fn validate_chains(
    raw: Vec<RawChain>,
    global_policy: &RawPolicy,
    exporter_interval: Duration,
) -> Result<Vec<ChainConfig>, FieldError> {
    if raw.is_empty() {
        return Err((
            "chain".into(),
            "no [[chain]] is configured; add one with at least one [[chain.provider]]".into(),
        ));
    }
    let mut chain_names = HashSet::new();
    let mut backends = HashSet::new();
    let mut chains = Vec::with_capacity(raw.len());
    for (ci, chain) in raw.into_iter().enumerate() {
        let at = format!("chain[{ci}]");
        let chain_name = name(format!("{at}.name"), &chain.name)?;
        unique(&mut chain_names, &chain_name, &at, "name", || {
            format!("chain {chain_name} is configured twice; give each chain its own name")
        })?;
        let backend = name(format!("{at}.backend"), &chain.backend)?;
        unique(&mut backends, &backend, &at, "backend", || {
            format!("backend {backend} already serves another chain; each chain needs its own HAProxy backend")
        })?;
        if chain.provider.is_empty() {
            return Err((
                format!("{at}.provider"),
                format!("chain {chain_name} has no providers; add a [[chain.provider]]"),
            ));
        }
        let capabilities = chain.capabilities.map(|c| c.validate(&at)).transpose()?;
        chains.push(ChainConfig {
            policy: PolicyConfig::resolve(&chain.policy, global_policy, &format!("{at}."))?,
            capabilities,
            providers: validate_providers(
                chain.provider,
                &at,
                (&chain_name, &backend),
                exporter_interval,
            )?,
            name: chain_name,
            chain_id: chain.chain_id,
            backend,
        });
    }
    Ok(chains)
}

fn validate_providers(
    raw: Vec<RawProvider>,
    chain_at: &str,
    (chain_name, backend): (&Name, &Name),
    exporter_interval: Duration,
) -> Result<Vec<ProviderConfig>, FieldError> {
    let mut provider_names = HashSet::new();
    let mut servers = HashSet::new();
    let mut providers = Vec::with_capacity(raw.len());
    for (pi, p) in raw.into_iter().enumerate() {
        let at = format!("{chain_at}.provider[{pi}]");
        let provider_name = name(format!("{at}.name"), &p.name)?;
        unique(&mut provider_names, &provider_name, &at, "name", || {
            format!("provider {provider_name} appears twice in chain {chain_name}; names must be unique")
        })?;
        let server = match &p.server {
            Some(s) => name(format!("{at}.server"), s)?,
            None => provider_name.clone(),
        };
        unique(&mut servers, &server, &at, "server", || {
            format!("HAProxy server {backend}/{server} is used by two providers; set distinct `server` names")
        })?;
        let tier = match p.tier {
            Some(t) => Tier::parse(format!("{at}.tier"), t)?,
            None => Tier::PRIMARY,
        };
        if let Some(rps) = p.max_rps.filter(|r| !(r.is_finite() && *r > 0.0)) {
            return Err((
                format!("{at}.max_rps"),
                format!("{rps} is not a request rate; write the plan's limit in requests per second, e.g. 25, or leave it out for unlimited"),
            ));
        }
        if let Some(interval) = p.probe_interval.filter(|i| *i < exporter_interval) {
            return Err((
                format!("{at}.probe_interval"),
                format!(
                    "{} is shorter than [exporter] probe_interval ({}); a provider can be probed less often than the others, not more",
                    humantime::format_duration(interval),
                    humantime::format_duration(exporter_interval)
                ),
            ));
        }
        providers.push(ProviderConfig {
            url: provider_url(&at, &p.url)?,
            headers: headers(&at, &p.headers)?,
            insecure_skip_verify: p.insecure_skip_verify,
            name: provider_name,
            server,
            tier,
            max_rps: p.max_rps,
            probe_interval: p.probe_interval,
        });
    }
    Ok(providers)
}

/// Records `name` in `seen`; an error on `{at}.{key}` if it was there already.
fn unique(
    seen: &mut HashSet<Name>,
    name: &Name,
    at: &str,
    key: &str,
    twice: impl FnOnce() -> String,
) -> Result<(), FieldError> {
    if seen.insert(name.clone()) {
        Ok(())
    } else {
        Err((format!("{at}.{key}"), twice()))
    }
}

fn name(field: String, value: &str) -> Result<Name, FieldError> {
    Name::parse(value).map_err(|m| (field, format!("{value:?} {m}")))
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

fn headers(at: &str, raw: &BTreeMap<String, String>) -> Result<SecretHeaders, FieldError> {
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

/// The chain as the printer writes it: its resolved policy in full, URLs and header values
/// redacted.
impl From<&ChainConfig> for RawChain {
    fn from(c: &ChainConfig) -> Self {
        Self {
            name: c.name.to_string(),
            chain_id: c.chain_id,
            backend: c.backend.to_string(),
            policy: RawPolicy::from(&c.policy),
            capabilities: c.capabilities.as_ref().map(RawCapabilities::from),
            provider: c.providers.iter().map(RawProvider::from).collect(),
        }
    }
}

impl From<&ProviderConfig> for RawProvider {
    fn from(p: &ProviderConfig) -> Self {
        Self {
            name: p.name.to_string(),
            url: p.url.to_string(),
            server: Some(p.server.to_string()),
            headers: p
                .headers
                .expose()
                .keys()
                .map(|name| (name.to_string(), SecretHeaders::REDACTED.to_owned()))
                .collect(),
            insecure_skip_verify: p.insecure_skip_verify,
            tier: Some(u32::from(p.tier.get())),
            max_rps: p.max_rps,
            probe_interval: p.probe_interval,
        }
    }
}
