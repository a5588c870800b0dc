//! The one TOML file both binaries read. It is parsed in three steps (`load`): TOML syntax,
//! `${VAR}` expansion of every string value, then typed deserialisation into raw sections; each
//! section then checks itself and applies its defaults into a type that cannot be invalid.
//! Every error names the file, the field and what to do.

#[macro_use]
mod layered;

mod actuator;
mod capabilities;
mod chain;
mod exporter;
mod load;
mod policy;
mod print;
mod serde_message;
mod toml_form;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

pub use actuator::{ActuatorConfig, HaproxyAddress, Queries};
pub use capabilities::{CapabilitiesConfig, LogsProbe, MAX_LOGS_BLOCKS};
pub use chain::{ChainConfig, Name, ProviderConfig, Tier};
pub use exporter::ExporterConfig;
pub use policy::{PolicyConfig, Weighting};
pub use print::HaproxyNeeds;
pub use toml_form::duration;

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

/// A field path (`chain[0].max_ejection`) and what is wrong with it.
type FieldError = (String, String);

/// `text` as the address `field` listens on.
fn listen_address(field: &str, text: &str, example: &str) -> Result<SocketAddr, FieldError> {
    text.parse().map_err(|_| {
        (
            field.to_owned(),
            format!("{text:?} is not an address; write it as \"{example}\""),
        )
    })
}

/// Fails on the first of `durations` (field, value) that is zero: timers and windows of zero
/// would spin or divide by nothing.
fn require_nonzero(durations: &[(&str, Duration)], message: &str) -> Result<(), FieldError> {
    match durations.iter().find(|(_, value)| value.is_zero()) {
        Some((field, _)) => Err((field.to_string(), message.to_owned())),
        None => Ok(()),
    }
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
        load::raw_config(text, env)
            .and_then(Self::try_from)
            .map_err(|(field, message)| ConfigError::Invalid {
                file: file.to_owned(),
                field,
                message,
            })
    }
}

impl TryFrom<load::RawConfig> for Config {
    type Error = FieldError;

    fn try_from(raw: load::RawConfig) -> Result<Self, FieldError> {
        // `[policy]` is checked on its own too, so its mistakes are named there, not in a chain.
        PolicyConfig::resolve(&raw.policy, &Default::default(), "policy.")?;
        let exporter = ExporterConfig::try_from(raw.exporter)?;
        let chains = chain::validate_chains(raw.chain, &raw.policy, exporter.probe_interval)?;
        Ok(Self {
            actuator: raw.actuator.validate(&exporter)?,
            exporter,
            chains,
        })
    }
}
