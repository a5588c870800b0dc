//! What a replay found, per backend and server, and how it is tallied step by step: ejections
//! (start, end, reason), weight writes, time at 0 and below full weight, time without data,
//! stretches on standby (a tier not in use), fail-open stretches, and the share of the traffic
//! each server would have carried (its weight over the backend's sum, integrated over time).
//! Times are Unix seconds; every step stands for the `step` seconds that follow it.

use serde::Serialize;

use crate::decision::{EjectReason, Verdict};
use crate::report::CycleReport;

/// One policy's replay of the range.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Which policy: the config's, or what `--set`/`--compare` changed.
    pub policy: String,
    pub backends: Vec<BackendSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendSummary {
    pub backend: String,
    pub chain: String,
    pub full_weight: u32,
    /// Every server with data would have been ejected: all kept in.
    pub fail_open: Vec<Period>,
    /// Time every server's weight was 0 (HAProxy would have answered 503).
    pub seconds_without_servers: f64,
    pub servers: Vec<ServerSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerSummary {
    pub provider: String,
    pub server: String,
    pub ejections: Vec<Ejection>,
    /// Healthy but held at 0 because its tier was not in use.
    pub standby: Vec<Period>,
    /// Every weight written, in order; the replay starts at `full_weight`.
    pub writes: Vec<WeightChange>,
    pub seconds_at_zero: f64,
    pub seconds_below_full: f64,
    /// No fresh data: the policy held the weight, as the live loop would.
    pub no_data: Vec<Period>,
    pub seconds_without_data: f64,
    /// Share of the backend's traffic over the whole range, 0 to 1.
    pub carried: f64,
}

/// A stretch out of the pool; `end` is `None` when it lasted past the range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ejection {
    pub start: f64,
    pub end: Option<f64>,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Period {
    pub start: f64,
    pub end: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WeightChange {
    pub at: f64,
    pub weight: u32,
}

/// Stretches of a state that holds a label (an ejection's reason) or none.
#[derive(Debug)]
struct Stretches<L> {
    open: Option<(f64, L)>,
    closed: Vec<(f64, f64, L)>,
}

impl<L> Default for Stretches<L> {
    fn default() -> Self {
        Self {
            open: None,
            closed: Vec::new(),
        }
    }
}

impl<L: Copy> Stretches<L> {
    /// The state at `time`: a stretch opens, goes on (keeping its first label) or closes.
    fn update(&mut self, time: f64, state: Option<L>) {
        match (self.open, state) {
            (None, Some(label)) => self.open = Some((time, label)),
            (Some((start, label)), None) => {
                self.closed.push((start, time, label));
                self.open = None;
            }
            _ => {}
        }
    }

    /// Every stretch, with `None` as the end of one still open.
    fn finish(self) -> impl Iterator<Item = (f64, Option<f64>, L)> {
        self.closed
            .into_iter()
            .map(|(s, e, l)| (s, Some(e), l))
            .chain(self.open.map(|(s, l)| (s, None, l)))
    }

    /// Every stretch, one still open ending at `end`.
    fn periods(self, end: f64) -> Vec<Period> {
        self.finish()
            .map(|(start, stop, _)| Period {
                start,
                end: stop.unwrap_or(end),
            })
            .collect()
    }
}

#[derive(Debug, Default)]
struct ServerTally {
    ejected: Stretches<EjectReason>,
    standby: Stretches<()>,
    no_data: Stretches<()>,
    writes: Vec<WeightChange>,
    at_zero: f64,
    below_full: f64,
    without_data: f64,
    carried: f64,
}

#[derive(Debug, Default)]
struct BackendTally {
    fail_open: Stretches<()>,
    without_servers: f64,
    servers: Vec<ServerTally>,
}

/// The tallies of one replay, in the report's order (chains, then their providers).
#[derive(Debug, Default)]
pub struct Tally {
    backends: Vec<BackendTally>,
}

impl Tally {
    /// Adds the step at `time`: `report` is its plan, `weights` the servers' weights after its
    /// writes (by backend, then server), `wrote` the servers written, lasting `step` seconds.
    pub fn add(
        &mut self,
        time: f64,
        step: f64,
        report: &CycleReport,
        weights: &[Vec<u32>],
        wrote: &[(usize, usize)],
    ) {
        if self.backends.is_empty() {
            self.backends = report
                .backends
                .iter()
                .map(|b| BackendTally {
                    servers: b.servers.iter().map(|_| ServerTally::default()).collect(),
                    ..BackendTally::default()
                })
                .collect();
        }
        for &(b, s) in wrote {
            if let Some(tally) = self.backends.get_mut(b).and_then(|t| t.servers.get_mut(s)) {
                tally.writes.push(WeightChange {
                    at: time,
                    weight: weights[b][s],
                });
            }
        }
        for ((backend, tally), weights) in
            report.backends.iter().zip(&mut self.backends).zip(weights)
        {
            tally
                .fail_open
                .update(time, backend.fail_open.then_some(()));
            let sum: u32 = weights.iter().sum();
            if sum == 0 {
                tally.without_servers += step;
            }
            for ((server, t), &weight) in
                backend.servers.iter().zip(&mut tally.servers).zip(weights)
            {
                // Without data the policy holds: an ejection neither starts nor ends.
                if server.verdict != Verdict::NoData {
                    t.ejected.update(time, server.verdict.reason());
                }
                t.standby
                    .update(time, (server.verdict == Verdict::Standby).then_some(()));
                let no_data = server.verdict == Verdict::NoData;
                t.no_data.update(time, no_data.then_some(()));
                if no_data {
                    t.without_data += step;
                }
                if weight == 0 {
                    t.at_zero += step;
                }
                if weight < backend.full_weight {
                    t.below_full += step;
                }
                if sum > 0 {
                    t.carried += step * f64::from(weight) / f64::from(sum);
                }
            }
        }
    }

    /// The summary of a replay that ended at `end`, labelled `policy`; `report` names the
    /// backends and servers.
    pub fn finish(self, policy: String, end: f64, span: f64, report: &CycleReport) -> RunSummary {
        let backends = report
            .backends
            .iter()
            .zip(self.backends)
            .map(|(backend, tally)| BackendSummary {
                backend: backend.backend.clone(),
                chain: backend.chain.clone(),
                full_weight: backend.full_weight,
                fail_open: tally.fail_open.periods(end),
                seconds_without_servers: tally.without_servers,
                servers: backend
                    .servers
                    .iter()
                    .zip(tally.servers)
                    .map(|(server, t)| ServerSummary {
                        provider: server.provider.clone(),
                        server: server.server.clone(),
                        ejections: t
                            .ejected
                            .finish()
                            .map(|(start, end, reason)| Ejection {
                                start,
                                end,
                                reason: reason.as_str(),
                            })
                            .collect(),
                        standby: t.standby.periods(end),
                        writes: t.writes,
                        seconds_at_zero: t.at_zero,
                        seconds_below_full: t.below_full,
                        no_data: t.no_data.periods(end),
                        seconds_without_data: t.without_data,
                        carried: if span > 0.0 { t.carried / span } else { 0.0 },
                    })
                    .collect(),
            })
            .collect();
        RunSummary { policy, backends }
    }
}
