//! The probe budget `check-config` prints: how many JSON-RPC calls this exporter sends each
//! provider a day and a month. Teams pay providers per request, and a reserve probed as often as a
//! primary costs as much for nothing; the table shows what each `probe_interval` costs before it
//! runs. Only chain and provider names appear in it, never a URL.

use std::fmt;
use std::time::Duration;

use common::config::{Config, Name, Tier};

use crate::cadence::ProviderCadence;

const SECONDS_PER_DAY: f64 = 86_400.0;
/// The month of a plan's quota.
const DAYS_PER_MONTH: f64 = 30.0;

/// One provider's calls.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderBudget<'a> {
    pub chain: &'a Name,
    pub provider: &'a Name,
    pub tier: Tier,
    /// Its probe interval as configured.
    pub asked: Duration,
    /// Its probe interval as the exporter keeps it: rounded up to whole rounds.
    pub every: Duration,
    /// Head requests a day: one a probe.
    pub head_calls_per_day: f64,
    /// `eth_chainId` checks a day, while the chain id matches.
    pub chain_id_calls_per_day: f64,
    /// Capability probes a day (`[chain.capabilities]`), at most: only providers that are up
    /// are asked.
    pub capability_calls_per_day: f64,
}

impl ProviderBudget<'_> {
    pub fn calls_per_day(&self) -> f64 {
        self.head_calls_per_day + self.chain_id_calls_per_day + self.capability_calls_per_day
    }

    pub fn calls_per_month(&self) -> f64 {
        self.calls_per_day() * DAYS_PER_MONTH
    }
}

/// Every provider's calls, in config order, with what they were derived from.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget<'a> {
    pub providers: Vec<ProviderBudget<'a>>,
    /// `[exporter] probe_interval`: the rounds every probe interval is a whole number of.
    round: Duration,
    /// `[exporter] chain_id_interval`.
    chain_id_interval: Duration,
}

impl<'a> Budget<'a> {
    pub fn of(config: &'a Config) -> Self {
        let exporter = &config.exporter;
        let providers = config
            .chains
            .iter()
            .flat_map(|chain| chain.providers.iter().map(move |p| (chain, p)))
            .map(|(chain, p)| {
                let cadence = ProviderCadence::new(p, exporter);
                ProviderBudget {
                    chain: &chain.name,
                    provider: &p.name,
                    tier: p.tier,
                    asked: p.probe_interval_or(exporter.probe_interval),
                    every: cadence.probe.period(),
                    head_calls_per_day: per_day(cadence.probe.period()),
                    chain_id_calls_per_day: per_day(cadence.chain_id.period()),
                    capability_calls_per_day: chain
                        .capabilities
                        .as_ref()
                        .map_or(0.0, |c| c.probes() as f64 * per_day(c.interval)),
                }
            })
            .collect();
        Self {
            providers,
            round: exporter.probe_interval,
            chain_id_interval: exporter.chain_id_interval,
        }
    }

    pub fn calls_per_day(&self) -> f64 {
        self.providers
            .iter()
            .map(ProviderBudget::calls_per_day)
            .sum()
    }

    pub fn calls_per_month(&self) -> f64 {
        self.calls_per_day() * DAYS_PER_MONTH
    }
}

fn per_day(period: Duration) -> f64 {
    SECONDS_PER_DAY / period.as_secs_f64()
}

/// The budget as TOML comments, so that the config printed above it still reads back.
impl fmt::Display for Budget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rounded_up = self.providers.iter().any(|p| p.every != p.asked);
        writeln!(
            f,
            "# Probe budget: JSON-RPC calls this exporter sends each provider (a month is 30 days):\n\
             # a head request on every probe, and eth_chainId on the first probe every {} (on every\n\
             # probe while the chain id does not match), and each enabled capability probe once per\n\
             # [chain.capabilities] interval. Retries and hedges of failing or slow calls\n\
             # come on top.\n#",
            humantime::format_duration(self.chain_id_interval)
        )?;
        let mut rows = vec![Row::header()];
        rows.extend(self.providers.iter().map(|p| {
            let mark = if p.every == p.asked { "" } else { "*" };
            Row([
                p.chain.to_string(),
                p.provider.to_string(),
                p.tier.to_string(),
                format!("{}{mark}", humantime::format_duration(p.every)),
                readable(p.calls_per_day()),
                readable(p.calls_per_month()),
            ])
        }));
        rows.push(Row::total(self));
        let widths: [usize; COLUMNS] =
            std::array::from_fn(|c| rows.iter().map(|r| r.0[c].len()).max().unwrap_or(0));
        for row in &rows {
            row.write(f, &widths)?;
        }
        if rounded_up {
            writeln!(
                f,
                "# * probe_interval rounded up to whole rounds of [exporter] probe_interval ({})",
                humantime::format_duration(self.round)
            )?;
        }
        Ok(())
    }
}

const COLUMNS: usize = 6;

/// One line of the table: chain, provider, tier, interval, calls a day, calls a month.
struct Row([String; COLUMNS]);

impl Row {
    fn header() -> Self {
        Self(
            [
                "chain",
                "provider",
                "tier",
                "every",
                "calls/day",
                "calls/month",
            ]
            .map(String::from),
        )
    }

    fn total(budget: &Budget<'_>) -> Self {
        let blank = String::new;
        Self([
            "total".into(),
            blank(),
            blank(),
            blank(),
            readable(budget.calls_per_day()),
            readable(budget.calls_per_month()),
        ])
    }

    /// Names left-aligned, numbers right-aligned.
    fn write(&self, f: &mut fmt::Formatter<'_>, widths: &[usize; COLUMNS]) -> fmt::Result {
        let mut line = String::from("#");
        for (c, (cell, width)) in self.0.iter().zip(widths).enumerate() {
            if c < 2 {
                line.push_str(&format!(" {cell:<width$} "));
            } else {
                line.push_str(&format!(" {cell:>width$} "));
            }
        }
        writeln!(f, "{}", line.trim_end())
    }
}

/// A count to read at a glance: `43 200` below a million, `1.30 M` from there.
fn readable(count: f64) -> String {
    // Counts are non-negative and far below 2⁶⁴; `as` saturates if they ever were not.
    let count = count.round();
    if count < 1e6 {
        grouped(count as u64)
    } else {
        let hundredths = (count / 1e4).round() as u64;
        format!("{}.{:02} M", grouped(hundredths / 100), hundredths % 100)
    }
}

/// `n` with its digits in groups of three.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 4 / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(Path::new("test.toml"), text, |_| None).expect("valid config")
    }

    /// A primary at the exporter's 2 s, a reserve at 1 m and one at 3 s (in 2 s rounds: 4 s),
    /// chain id every 5 m.
    const PROVIDERS: &str = r#"
        [exporter]
        probe_interval = "2s"
        chain_id_interval = "5m"
        [[chain]]
        name = "mainnet"
        chain_id = 1
        backend = "rpc"
        [[chain.provider]]
        name = "primary"
        url = "https://primary.example/v3/KEYSECRET"
        [[chain.provider]]
        name = "reserve"
        url = "https://reserve.example/v3/KEYSECRET"
        tier = 2
        probe_interval = "1m"
        [[chain.provider]]
        name = "odd"
        url = "https://odd.example/KEYSECRET"
        probe_interval = "3s"
    "#;

    #[test]
    fn a_primary_every_two_seconds_costs_43_200_head_requests_a_day() {
        let config = config(PROVIDERS);
        let budget = Budget::of(&config);
        let primary = &budget.providers[0];
        assert_eq!(primary.provider.as_str(), "primary");
        assert_eq!(primary.every, Duration::from_secs(2));
        assert_eq!(primary.head_calls_per_day, 43_200.0);
        assert_eq!(primary.chain_id_calls_per_day, 288.0, "one every 5 minutes");
        assert_eq!(primary.calls_per_month(), 43_488.0 * 30.0);
    }

    #[test]
    fn a_reserve_probed_every_minute_costs_thirty_times_less() {
        let config = config(PROVIDERS);
        let budget = Budget::of(&config);
        let reserve = &budget.providers[1];
        assert_eq!(reserve.tier.get(), 2);
        assert_eq!(reserve.head_calls_per_day, 1_440.0);
        assert_eq!(reserve.chain_id_calls_per_day, 288.0);
    }

    #[test]
    fn an_interval_between_rounds_is_budgeted_as_the_exporter_keeps_it() {
        let config = config(PROVIDERS);
        let odd = &Budget::of(&config).providers[2];
        assert_eq!(odd.asked, Duration::from_secs(3));
        assert_eq!(
            odd.every,
            Duration::from_secs(4),
            "rounded up to 2 s rounds"
        );
        assert_eq!(odd.head_calls_per_day, 21_600.0);
    }

    #[test]
    fn chain_id_checks_are_never_budgeted_above_the_probes() {
        let config = config(&PROVIDERS.replace(r#""5m""#, r#""10s""#));
        let budget = Budget::of(&config);
        let (primary, reserve) = (&budget.providers[0], &budget.providers[1]);
        assert_eq!(primary.chain_id_calls_per_day, 8_640.0, "every 10 s");
        assert_eq!(reserve.head_calls_per_day, 1_440.0);
        assert_eq!(reserve.chain_id_calls_per_day, 1_440.0, "one on each probe");
    }

    #[test]
    fn capability_probes_are_budgeted_per_probe_and_interval() {
        let text = PROVIDERS.replacen(
            "[[chain.provider]]",
            "[chain.capabilities]\ninterval = \"5m\"\narchive_block = 100\nfinalized = true\n[[chain.provider]]",
            1,
        );
        let config = config(&text);
        let budget = Budget::of(&config);
        let primary = &budget.providers[0];
        assert_eq!(
            primary.capability_calls_per_day, 576.0,
            "two probes every 5 minutes"
        );
        assert_eq!(primary.calls_per_day(), 43_488.0 + 576.0);
        assert_eq!(
            budget.providers[1].capability_calls_per_day, 576.0,
            "a reserve is asked too, while up"
        );
        assert_eq!(
            Budget::of(&self::config(PROVIDERS)).providers[0].capability_calls_per_day,
            0.0
        );
    }

    #[test]
    fn the_total_adds_every_chain_and_provider() {
        let config = config(PROVIDERS);
        let budget = Budget::of(&config);
        let day = 43_488.0 + 1_728.0 + (21_600.0 + 288.0);
        assert_eq!(budget.calls_per_day(), day);
        assert_eq!(budget.calls_per_month(), day * 30.0);
    }

    #[test]
    fn the_table_is_toml_comments_with_readable_numbers_and_no_secret() {
        let config = config(PROVIDERS);
        let text = Budget::of(&config).to_string();
        assert!(text.lines().all(|l| l.starts_with('#')), "{text}");
        assert!(
            !text.contains("KEYSECRET") && !text.contains("example"),
            "{text}"
        );
        let row = |name: &str| {
            text.lines()
                .find(|l| l.contains(name))
                .unwrap_or_else(|| panic!("no row {name} in {text}"))
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(row("primary"), "mainnet primary 1 2s 43 488 1.30 M");
        assert_eq!(row("reserve"), "mainnet reserve 2 1m 1 728 51 840");
        assert_eq!(row("odd"), "mainnet odd 1 4s* 21 888 656 640");
        assert_eq!(row("total"), "total 67 104 2.01 M");
        assert!(text.contains("rounded up"), "{text}");
        assert!(text.contains("Retries and hedges"), "{text}");
    }

    #[test]
    fn counts_are_grouped_below_a_million_and_in_millions_above() {
        assert_eq!(readable(0.0), "0");
        assert_eq!(readable(999.4), "999");
        assert_eq!(readable(43_200.0), "43 200");
        assert_eq!(readable(999_999.0), "999 999");
        assert_eq!(readable(1_296_000.0), "1.30 M");
        assert_eq!(readable(2_592_000_000.0), "2 592.00 M");
    }
}
