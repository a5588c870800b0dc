//! From text to raw sections: TOML syntax, `${VAR}` expansion of every string value, then typed
//! deserialisation. Errors name the field and never repeat a value (it may hold a secret).

use serde::{Deserialize, Serialize};

use super::actuator::RawActuator;
use super::chain::RawChain;
use super::exporter::RawExporter;
use super::policy::{self, RawPolicy};
use super::{serde_message, FieldError};
use crate::envsubst;

/// The whole file as written.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub exporter: RawExporter,
    #[serde(default)]
    pub actuator: RawActuator,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub chain: Vec<RawChain>,
}

/// Parses `text`, expanding `${VAR}` through `env`.
pub(super) fn raw_config(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<RawConfig, FieldError> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| line_col(text, s.start))
            .unwrap_or_default();
        // The message only: toml's Display quotes the offending line, which may hold a key.
        (format!("TOML syntax{at}"), e.message().trim().to_owned())
    })?;
    for (key, value) in table.iter_mut() {
        expand_strings(value, key, &env).map_err(|(field, e)| (field, e.to_string()))?;
    }
    policy::gather_chain_keys(&mut table);
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let field = policy::field_as_written(&e.path().to_string());
        (
            field,
            serde_message::without_values(e.into_inner().message()),
        )
    })
}

fn line_col(text: &str, offset: usize) -> String {
    // A span inside a multi-byte character would panic a plain slice.
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!(" at line {line}, column {col}")
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
