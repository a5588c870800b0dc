//! `--set KEY=VALUE`: a `[policy]` key overridden for one run, in every chain, whatever the file
//! says. Each chain's policy takes the key through the config's own
//! [`PolicyConfig::with_override`](common::config::PolicyConfig::with_override), so parsing,
//! checks and messages (an unknown key lists the valid ones) stay the config's alone.

use std::fmt;
use std::str::FromStr;

use common::config::{ChainConfig, Config};
use thiserror::Error;

/// One `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub key: String,
    pub value: String,
}

impl FromStr for Override {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not KEY=VALUE, e.g. max_block_lag=1"))?;
        let key = key.trim();
        let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if key.is_empty() || !key.chars().all(bare) {
            return Err(format!(
                "{key:?} is not a policy key; keys are written like max_block_lag"
            ));
        }
        Ok(Self {
            key: key.to_owned(),
            value: value.trim().to_owned(),
        })
    }
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// An override the config does not accept.
#[derive(Debug, Error, PartialEq)]
pub enum OverrideError {
    /// The loader's verdict: the field and what is wrong, e.g. an unknown key and the valid ones.
    #[error("--set {key}: {message}")]
    Rejected { key: String, message: String },
}

/// `config`'s chains with `overrides` applied, in order (a later one wins).
pub fn apply(config: &Config, overrides: &[Override]) -> Result<Vec<ChainConfig>, OverrideError> {
    let mut chains = config.chains.clone();
    for chain in &mut chains {
        for o in overrides {
            chain.policy = chain
                .policy
                .with_override(&o.key, &o.value)
                .map_err(|message| OverrideError::Rejected {
                    key: o.key.clone(),
                    message,
                })?;
        }
    }
    Ok(chains)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use common::config::Weighting;

    use super::*;

    const CONFIG: &str = r#"
[actuator]
prometheus_url = "http://127.0.0.1:9090/secret-path?token=abc"
[policy]
max_block_lag = 5
[[chain]]
name = "one"
chain_id = 1
backend = "one"
[[chain.provider]]
name = "a"
url = "https://a.example/key"
[[chain]]
name = "two"
chain_id = 2
backend = "two"
max_block_lag = 7
base_ejection = "30s"
[[chain.provider]]
name = "b"
url = "https://b.example/key"
"#;

    fn config() -> Config {
        Config::parse(Path::new("t.toml"), CONFIG, |_| None).unwrap()
    }

    fn set(text: &str) -> Override {
        text.parse().unwrap()
    }

    #[test]
    fn an_override_wins_in_every_chain_and_leaves_the_rest() {
        let c = config();
        assert_eq!(
            [
                c.chains[0].policy.max_block_lag,
                c.chains[1].policy.max_block_lag
            ],
            [5, 7]
        );
        let chains = apply(&c, &[set("max_block_lag=1"), set("base_ejection=20s")]).unwrap();
        for chain in &chains {
            assert_eq!(chain.policy.max_block_lag, 1);
            assert_eq!(chain.policy.base_ejection, Duration::from_secs(20));
        }
        let chains = apply(&c, &[set("weighting=equal"), set("max_error_ratio = 0.2")]).unwrap();
        assert_eq!(chains[1].policy.weighting, Weighting::Equal);
        assert_eq!(chains[1].policy.max_error_ratio, 0.2);
        assert_eq!(chains[1].policy.max_block_lag, 7, "untouched keys stay");
        assert_eq!(chains[1].policy.base_ejection, Duration::from_secs(30));
        assert_eq!(chains[0].providers[0].url, c.chains[0].providers[0].url);
        let later = apply(&c, &[set("max_block_lag=1"), set("max_block_lag=2")]).unwrap();
        assert_eq!(later[0].policy.max_block_lag, 2, "a later override wins");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named_by_the_loader() {
        let c = config();
        let e = apply(&c, &[set("max_lag=1")]).unwrap_err().to_string();
        assert!(e.starts_with("--set max_lag:"), "{e}");
        assert!(
            e.contains("unknown field `max_lag`") && e.contains("max_block_lag"),
            "lists the valid keys: {e}"
        );
        let e = apply(&c, &[set("max_error_ratio=2")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_error_ratio") && e.contains("between 0 and 1"),
            "{e}"
        );
        let e = apply(&c, &[set("base_ejection=soon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("base_ejection"), "{e}");
        assert!(!e.contains("secret-path") && !e.contains("token"), "{e}");
        assert!("max_block_lag".parse::<Override>().is_err());
        assert!("a b=1".parse::<Override>().is_err());
        assert!("=1".parse::<Override>().is_err());
    }
}
