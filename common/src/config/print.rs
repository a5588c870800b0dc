//! `check-config`'s output: the config as understood, written back as TOML through the same raw
//! sections the loader reads, with every URL and header value redacted. Reading the output again
//! gives the same config, secrets aside.

use std::fmt;

use super::load::RawConfig;
use super::{policy, Config};

impl fmt::Display for Config {
    /// The config as understood, in TOML form, with URLs and header values redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = RawConfig {
            exporter: (&self.exporter).into(),
            actuator: (&self.actuator).into(),
            // Each chain shows its resolved policy, so `[policy]` has nothing left to say.
            policy: Default::default(),
            chain: self.chains.iter().map(Into::into).collect(),
        };
        // Serialising plain strings, numbers and tables cannot fail; if it ever did, the printer
        // must say so rather than print a partial config.
        let mut table = toml::Table::try_from(raw).map_err(|_| fmt::Error)?;
        table.remove("policy");
        policy::spread_chain_keys(&mut table);
        f.write_str(&toml::to_string(&table).map_err(|_| fmt::Error)?)
    }
}
