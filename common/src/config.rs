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
}

/// One `[[chain]]`: a network, its expected chain id, and the HAProxy backend serving it.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub name: Name,
    pub chain_id: u64,
    pub backend: Name,
    pub providers: Vec<ProviderConfig>,
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
        let e = &self.exporter;
        writeln!(f, "[exporter]")?;
        writeln!(f, "listen = \"{}\"", e.listen)?;
        writeln!(
            f,
            "probe_interval = \"{}\"",
            humantime::format_duration(e.probe_interval)
        )?;
        writeln!(
            f,
            "probe_timeout = \"{}\"",
            humantime::format_duration(e.probe_timeout)
        )?;
        writeln!(
            f,
            "chain_id_interval = \"{}\"",
            humantime::format_duration(e.chain_id_interval)
        )?;
        writeln!(f, "max_concurrent_probes = {}", e.max_concurrent_probes)?;
        writeln!(f, "max_response_bytes = {}", e.max_response_bytes)?;
        for c in &self.chains {
            writeln!(
                f,
                "\n[[chain]]\nname = \"{}\"\nchain_id = {}\nbackend = \"{}\"",
                c.name, c.chain_id, c.backend
            )?;
            for p in &c.providers {
                writeln!(
                    f,
                    "\n[[chain.provider]]\nname = \"{}\"\nserver = \"{}\"",
                    p.name, p.server
                )?;
                writeln!(f, "url = \"{}\"", p.url)?;
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
    chain: Vec<RawChain>,
}

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
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let field = e.path().to_string();
                invalid(&field, hide_quoted_values(&e.into_inner().to_string()))
            })?;
        validate(raw).map_err(|(field, message)| invalid(&field, message))
    }
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
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

fn validate(raw: RawConfig) -> Result<Config, FieldError> {
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
                    format!("HAProxy server {server} is used by two providers of chain {chain_name}; set distinct `server` names"),
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
            name: chain_name,
            chain_id: chain.chain_id,
            backend,
            providers,
        });
    }
    Ok(Config {
        exporter: ExporterConfig {
            listen,
            probe_interval: e.probe_interval,
            probe_timeout: e.probe_timeout,
            chain_id_interval: e.chain_id_interval,
            max_concurrent_probes,
            max_response_bytes: e.max_response_bytes,
        },
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
                "HAProxy server local is used by two",
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
    fn a_file_without_chains_or_providers_is_rejected() {
        assert!(error("").contains("no [[chain]] is configured"));
        let no_providers = "[[chain]]\nname = \"a\"\nchain_id = 1\nbackend = \"b\"\n";
        assert!(error(no_providers).contains("chain a has no providers"));
        let twice = format!("{no_providers}[[chain.provider]]\nname=\"p\"\nurl=\"http://h\"\n");
        assert!(error(&format!("{twice}{twice}")).contains("chain a is configured twice"));
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
