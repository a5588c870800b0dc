//! `check-config`'s output: the config as understood, written back as TOML through the same raw
//! sections the loader reads, with every URL and header value redacted. Reading the output again
//! gives the same config, secrets aside. Then what the config needs from HAProxy that it cannot
//! check itself, as TOML comments.

use std::fmt;

use super::load::RawConfig;
use super::{policy, Config, Tier};

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

/// What the HAProxy side needs for this config and the config cannot check (`check-config` prints
/// it after the config; the actuator's `explain` checks it against the running HAProxy).
pub struct HaproxyNeeds<'a>(pub &'a Config);

impl fmt::Display for HaproxyNeeds<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chain in &self.0.chains {
            for p in chain.providers.iter().filter(|p| p.tier > Tier::PRIMARY) {
                writeln!(
                    f,
                    "# Reserve: {provider} (tier {tier}) stands by at weight 0 in backend {backend}. If every\n\
                     # primary dies at once, clients' requests fail until the actuator's next cycle brings it in,\n\
                     # unless HAProxy has a `backup` twin of it (not in this config):\n\
                     #   server {server}-backup <{server}'s address> backup\n\
                     # (deploy/README.md, \"Reserves (tiers) in HAProxy\"; `ethrpc-actuator explain` warns without one.)",
                    provider = p.name,
                    tier = p.tier.get(),
                    backend = chain.backend,
                    server = p.server,
                )?;
            }
        }
        for chain in &self.0.chains {
            writeln!(
                f,
                "# Backend {backend}: its stick table counts each server's rate-limit answers and JSON-RPC errors\n\
                 # inside HTTP 200, which learned limits and the client_errors gate read; without those lines\n\
                 # both are off there (deploy/README.md, \"Counting what clients got\"; the actuator says so once).",
                backend = chain.backend,
            )?;
        }
        Ok(())
    }
}
