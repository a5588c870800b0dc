//! Warm restart: what the policy remembers (ejections and holds, slow start, smoothed latency,
//! learned limits, tiers standing by) rebuilt at start from what the actuator published about
//! itself before it stopped. Prometheus scrapes those series anyway, so it is the durable
//! source: no state file, and a rollout to a new machine or pod finds the same memory.
//!
//! Rebuilding is a pure function of the history (the last sample of each series) and what
//! HAProxy shows now. What cannot be rebuilt is assumed the careful way:
//! - a server at weight 0 with no history is taken as just ejected ([`EjectReason::Restart`]):
//!   it returns through `readmit_after` and slow start, never straight to full weight;
//! - a server at weight 0 in a tier above every tier HAProxy sends traffic to stands by, so a
//!   cold start never brings a reserve tier in just because it knows nothing of it;
//! - a server with a limit (its plan's `max_rps` or one learned from 429s) keeps at most its
//!   current HAProxy weight until the demand is measured: that weight may be a cap that cannot
//!   be recomputed (or lifted) without a demand.

use std::collections::BTreeMap;

use common::config::{ChainConfig, PolicyConfig, ProviderConfig};

use crate::client_signal::LearnedLimit;
use crate::decision::{Ceiling, EjectReason, Memory};
use crate::ejection::EjectionMemory;
use crate::haproxy::{BackendStat, ServerStat};
use crate::latency_weight::{bucket_of, SmoothedLatency};
use crate::metrics::names::{
    EARLIEST_RETURN, EJECTED, LATENCY_BUCKET, LIMIT, RECENT_EJECTIONS, SLOW_START, STANDBY,
    WEIGHED_LATENCY, WEIGHT,
};
use crate::plan::{haproxy_up, MemoryBook, ServerKey};
use crate::prometheus_api::Series;

/// The actuator's own series a restart reads back (all labelled `backend` and `server`).
const SERIES: [&str; 9] = [
    WEIGHT,
    RECENT_EJECTIONS,
    EARLIEST_RETURN,
    EJECTED,
    STANDBY,
    LIMIT,
    WEIGHED_LATENCY,
    LATENCY_BUCKET,
    SLOW_START,
];

/// How far back a restart looks for the actuator's last samples.
pub const LOOKBACK_SECONDS: f64 = 900.0;

/// The step of the history query: series that were present in the last scrape end on the same
/// step, those dropped earlier (an absent gauge is marked stale) end at least a scrape before.
pub const STEP_SECONDS: f64 = 1.0;

/// Two series ended together when their last points are this close (seconds).
const SAME_END: f64 = STEP_SECONDS / 2.0;

/// The PromQL that fetches the history of `backends` (as a range query, so the last point of
/// each series tells when it was last scraped; staleness ends a series when it stops).
pub fn history_query<'a>(backends: impl IntoIterator<Item = &'a str>) -> String {
    let names = SERIES
        .iter()
        .map(|n| n.trim_start_matches("ethrpc_actuator_"))
        .collect::<Vec<_>>()
        .join("|");
    let backends = backends
        .into_iter()
        .map(regex_literal)
        .collect::<Vec<_>>()
        .join("|");
    format!("{{__name__=~\"ethrpc_actuator_({names})\",backend=~\"{backends}\"}}")
}

/// `text` as a regular expression matching only itself, inside a PromQL double-quoted string.
fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                out.push_str("\\\\");
                out.push(c);
            }
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// A series' last point: Unix time and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Last {
    pub at: f64,
    pub value: f64,
}

/// What one actuator last published of one server; every field was present in its last scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    /// When the server was last scraped (Unix seconds).
    pub at: f64,
    pub weight: Option<f64>,
    pub recent_ejections: Option<f64>,
    pub earliest_return: Option<f64>,
    pub ejected: Option<EjectReason>,
    pub standby: Option<bool>,
    pub limit: Option<f64>,
    pub weighed_latency: Option<f64>,
    pub latency_bucket: Option<f64>,
    pub slow_start_since: Option<f64>,
}

/// The labels that tell actuators apart (`job`, `instance`, …): all but the name, the server's
/// and the reason.
type Source = BTreeMap<String, String>;

/// What Prometheus holds of the actuators' last cycles, by backend and server, one entry per
/// actuator that published them (two HAProxy instances, two actuators).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    servers: BTreeMap<(String, String), Vec<Published>>,
}

impl History {
    /// Reads the range answer of [`history_query`]. Series without the labels or points it
    /// needs are skipped; NaN and infinite points are not values.
    pub fn from_series(series: &[Series]) -> Self {
        type Lasts =
            BTreeMap<(String, String), BTreeMap<Source, Vec<(String, Option<String>, Last)>>>;
        let mut lasts: Lasts = BTreeMap::new();
        for s in series {
            let label = |name: &str| s.labels.get(name).cloned();
            let (Some(name), Some(backend), Some(server)) =
                (label("__name__"), label("backend"), label("server"))
            else {
                continue;
            };
            let Some(&(at, value)) = s.points.iter().rev().find(|(_, v)| v.is_finite()) else {
                continue;
            };
            let source: Source = s
                .labels
                .iter()
                .filter(|(k, _)| !["__name__", "backend", "server", "reason"].contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            lasts
                .entry((backend, server))
                .or_default()
                .entry(source)
                .or_default()
                .push((name, label("reason"), Last { at, value }));
        }
        let servers = lasts
            .into_iter()
            .map(|(key, sources)| {
                let published = sources.into_values().map(|l| published(&l)).collect();
                (key, published)
            })
            .collect();
        Self { servers }
    }

    /// What was published of `backend`/`server`: from the actuator whose last weight is what
    /// HAProxy has now, else the most recent (an actuator of another HAProxy instance decides
    /// on the same data, so either serves when both match).
    pub fn server(&self, backend: &str, server: &str, current: u32) -> Option<&Published> {
        let all = self.servers.get(&(backend.to_owned(), server.to_owned()))?;
        let latest = |p: &&Published| p.at;
        let matching = all
            .iter()
            .filter(|p| p.weight == Some(f64::from(current)))
            .max_by(|a, b| latest(a).total_cmp(&latest(b)));
        matching.or_else(|| all.iter().max_by(|a, b| latest(a).total_cmp(&latest(b))))
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

/// One server's fields from one source, keeping only the series present in its last scrape.
fn published(lasts: &[(String, Option<String>, Last)]) -> Published {
    let at = lasts.iter().map(|(_, _, l)| l.at).fold(f64::MIN, f64::max);
    let mut p = Published {
        at,
        ..Published::default()
    };
    for (name, reason, last) in lasts.iter().filter(|(_, _, l)| at - l.at <= SAME_END) {
        let v = Some(last.value);
        match name.as_str() {
            WEIGHT => p.weight = v,
            RECENT_EJECTIONS => p.recent_ejections = v,
            EARLIEST_RETURN => p.earliest_return = v,
            STANDBY => p.standby = Some(last.value >= 0.5),
            LIMIT => p.limit = v,
            WEIGHED_LATENCY => p.weighed_latency = v,
            LATENCY_BUCKET => p.latency_bucket = v,
            SLOW_START => p.slow_start_since = v,
            EJECTED if last.value >= 0.5 => {
                let reason = EjectReason::ALL
                    .into_iter()
                    .find(|r| reason.as_deref() == Some(r.as_str()));
                // The first gate in order, as the policy checks them.
                p.ejected = match (p.ejected, reason) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            _ => {}
        }
    }
    p
}

/// Where a server's rebuilt memory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The actuator's own published series.
    History,
    /// Nothing known: the careful defaults.
    Cold,
}

/// Everything a rebuild is made from.
pub struct RebuildInput<'a> {
    pub chains: &'a [ChainConfig],
    /// `show stat` by backend name.
    pub haproxy: &'a BTreeMap<String, BackendStat>,
    /// `None` when Prometheus could not be read: every server starts cold.
    pub history: Option<&'a History>,
    /// The policy's clock (seconds) and the Unix time, both now.
    pub now: f64,
    pub unix_now: f64,
    /// How long a restart's ceiling waits for a measured demand (seconds).
    pub ceiling_for: f64,
}

/// The memory to start from, and where each server's came from.
#[derive(Debug, Clone, Default)]
pub struct Rebuilt {
    pub memory: MemoryBook,
    pub origins: BTreeMap<(String, String), Origin>,
}

impl Rebuilt {
    /// Servers rebuilt from history, and servers started cold.
    pub fn counts(&self) -> (usize, usize) {
        let warm = self
            .origins
            .values()
            .filter(|o| **o == Origin::History)
            .count();
        (warm, self.origins.len() - warm)
    }
}

/// Rebuilds the memory of every configured server HAProxy has.
pub fn rebuild(input: &RebuildInput<'_>) -> Rebuilt {
    let mut out = Rebuilt::default();
    for chain in input.chains {
        let Some(stat) = input.haproxy.get(chain.backend.as_str()) else {
            continue;
        };
        let servers: Vec<(&ProviderConfig, &ServerStat)> = chain
            .providers
            .iter()
            .filter_map(|p| Some((p, stat.servers.get(p.server.as_str())?)))
            .collect();
        // The highest tier HAProxy sends traffic to now.
        let carrying = servers
            .iter()
            .filter(|(_, s)| s.weight > 0 && haproxy_up(&s.status))
            .map(|(p, _)| p.tier)
            .max();
        for (p, s) in servers {
            let published = input
                .history
                .and_then(|h| h.server(chain.backend.as_str(), p.server.as_str(), s.weight));
            let (mut memory, origin) = match published {
                Some(published) => (
                    warm(&chain.policy, p, s.weight, published, input),
                    Origin::History,
                ),
                None => {
                    let reserve = carrying.is_some_and(|t| p.tier > t);
                    (cold(s.weight, reserve), Origin::Cold)
                }
            };
            if memory.limit(p.max_rps).is_some() {
                memory.ceiling = Some(Ceiling {
                    weight: s.weight,
                    until: input.now + input.ceiling_for,
                });
            }
            let key = ServerKey {
                backend: chain.backend.clone(),
                server: p.server.clone(),
            };
            out.origins
                .insert((key.backend.to_string(), key.server.to_string()), origin);
            out.memory.servers.insert(key, memory);
        }
    }
    out
}

/// A server nothing is known of, at `weight` in HAProxy; `reserve`: its tier is above every
/// tier HAProxy sends traffic to.
fn cold(weight: u32, reserve: bool) -> Memory {
    match (weight, reserve) {
        (0, true) => Memory {
            standby: true,
            ..Memory::default()
        },
        (0, false) => Memory {
            ejected: Some(EjectReason::Restart),
            ..Memory::default()
        },
        _ => Memory::default(),
    }
}

/// The memory `published` describes, on the policy's clock, for a server at `weight` in HAProxy.
fn warm(
    policy: &PolicyConfig,
    provider: &ProviderConfig,
    weight: u32,
    published: &Published,
    input: &RebuildInput<'_>,
) -> Memory {
    let clock = |unix: f64| input.now - (input.unix_now - unix);
    let count = published
        .recent_ejections
        .map_or(0, |c| c.clamp(0.0, f64::from(u32::MAX)) as u32);
    let standby = published.standby == Some(true);
    // Out of the pool in HAProxy, though the history has it in: set to 0 after the last scrape
    // (an ejection in the last cycle, an operator): back only through readmission.
    let ejected = match published.ejected {
        None if weight == 0 && !standby => Some(EjectReason::Restart),
        reason => reason,
    };
    let mut ejection = EjectionMemory {
        count,
        last_breach: None,
        // The count decays again from now: the time spent down is not time seen healthy.
        decay_from: (count > 0 && ejected.is_none()).then_some(input.now),
    };
    if published.ejected.is_some() {
        // The hold ends where it was published to end; without it, a whole hold from the last
        // scrape.
        let returns = published
            .earliest_return
            .unwrap_or(published.at + ejection.hold(policy));
        ejection.last_breach = Some(clock(returns) - ejection.hold(policy));
    }
    let latency = published.weighed_latency.filter(|l| *l > 0.0).map(|l| {
        let at = clock(published.at);
        SmoothedLatency {
            log_mean: l.ln(),
            at,
            // Settled: the bucket keeps its hysteresis.
            since: at - policy.latency_smoothing.as_secs_f64(),
            bucket: published
                .latency_bucket
                .filter(|b| *b >= 1.0 && *b < u64::MAX as f64)
                .map_or_else(|| bucket_of(policy, l), |b| b as u64),
        }
    });
    // The published limit is the lower of the plan's and the learned one: below the plan's (or
    // without one) it was learned.
    let learned_limit = published
        .limit
        .filter(|l| *l > 0.0 && provider.max_rps.is_none_or(|m| *l < m))
        .map(|rps| LearnedLimit::new(rps, clock(published.at)));
    Memory {
        ejected,
        healthy_streak: 0,
        ramp_started: published
            .slow_start_since
            .filter(|_| ejected.is_none())
            .map(clock),
        ejection,
        latency,
        learned_limit,
        standby: ejected.is_none() && standby,
        ceiling: None,
        // Not published: after a restart a failed release is not held back (cold).
        release: Default::default(),
    }
}
