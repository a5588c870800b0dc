//! One policy replayed over the history: the live loop's planning ([`plan`], the very same code)
//! run step by step from a cold start, against a simulated HAProxy that takes every write.

use std::collections::{BTreeMap, HashSet};

use common::config::ChainConfig;

use super::summary::{RunSummary, Tally};
use crate::haproxy::{BackendStat, ServerStat};
use crate::observe::Observations;
use crate::plan::{plan, MemoryBook, PlanInput};
use crate::report::CycleReport;

/// What a replay carries from one step to the next.
pub struct Replay<'a> {
    chains: &'a [ChainConfig],
    /// `actuator.signal_window`, seconds.
    signal_window: f64,
    /// Unix seconds of the range's start: the policy clock's zero.
    start: f64,
    step: f64,
    memory: MemoryBook,
    /// HAProxy's weights as the replay left them, by chain, then provider.
    weights: Vec<Vec<u32>>,
    tally: Tally,
    last: CycleReport,
}

/// HAProxy as the backtest sees it: every configured server `UP` at the weight the previous
/// step wrote, in a `roundrobin` backend. The one place that knows what a `show stat` holds,
/// so a field HAProxy gains changes only this function.
fn haproxy_view(chains: &[ChainConfig], weights: &[Vec<u32>]) -> BTreeMap<String, BackendStat> {
    chains
        .iter()
        .zip(weights)
        .map(|(chain, weights)| {
            let servers = chain
                .providers
                .iter()
                .zip(weights)
                .map(|(p, &weight)| {
                    let stat = ServerStat {
                        weight,
                        status: "UP".to_owned(),
                        counters: None,
                        backup: false,
                        address: None,
                    };
                    (p.server.to_string(), stat)
                })
                .collect();
            let backend = BackendStat {
                algorithm: "roundrobin".to_owned(),
                servers,
            };
            (chain.backend.to_string(), backend)
        })
        .collect()
}

impl<'a> Replay<'a> {
    /// A cold start at `start` (Unix seconds): no memory, every server at its full weight.
    pub fn new(chains: &'a [ChainConfig], signal_window: f64, start: f64, step: f64) -> Self {
        Self {
            chains,
            signal_window,
            start,
            step,
            memory: MemoryBook::default(),
            weights: chains
                .iter()
                .map(|c| vec![c.policy.full_weight; c.providers.len()])
                .collect(),
            tally: Tally::default(),
            last: CycleReport::default(),
        }
    }

    /// Plans the step at `time` (Unix seconds) and applies its writes as HAProxy would.
    pub fn step(&mut self, observations: &Observations, time: f64) {
        let view = haproxy_view(self.chains, &self.weights);
        let planned = plan(&PlanInput {
            chains: self.chains,
            observations,
            haproxy: &view,
            memory: &self.memory,
            static_backends: &HashSet::new(),
            now: time - self.start,
            signal_window: self.signal_window,
        });
        self.memory = planned.memory;
        let mut wrote = Vec::with_capacity(planned.writes.len());
        for write in &planned.writes {
            let Some((b, s)) = planned.report.locate(&write.backend, &write.server) else {
                continue;
            };
            // `100%` is the configured weight, where the replay started.
            self.weights[b][s] = write.weight.weight(self.chains[b].policy.full_weight);
            wrote.push((b, s));
        }
        self.tally
            .add(time, self.step, &planned.report, &self.weights, &wrote);
        self.last = planned.report;
    }

    /// The summary once the range has been replayed up to `end` (Unix seconds).
    pub fn finish(self, policy: String, end: f64) -> RunSummary {
        self.tally.finish(policy, end, end - self.start, &self.last)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use common::config::Config;

    use super::*;
    use crate::backtest::summary::{Ejection, Period, WeightChange};
    use crate::decision::Observation;
    use crate::observe::ProviderKey;

    fn chains() -> Vec<ChainConfig> {
        let text = "[policy]\nweighting = \"equal\"\nreadmit_after = 1\nslow_start = \"0s\"\nbase_ejection = \"0s\"\n\
                    [[chain]]\nname = \"dev\"\nchain_id = 1\nbackend = \"rpc\"\n\
                    [[chain.provider]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\n\
                    [[chain.provider]]\nname = \"b\"\nurl = \"http://127.0.0.1:2/\"\n";
        Config::parse(Path::new("t.toml"), text, |_| None)
            .unwrap()
            .chains
    }

    /// `a` as given (`None`: no data), `b` always up.
    fn observations(a: Option<bool>) -> Observations {
        let mut o = Observations::default();
        let up = |up| Observation {
            up,
            ..Observation::default()
        };
        if let Some(a) = a {
            o.insert(ProviderKey::new("dev", "a"), up(a));
        }
        o.insert(ProviderKey::new("dev", "b"), up(true));
        o
    }

    #[test]
    fn a_replay_tallies_ejections_weights_gaps_and_shares() {
        let chains = chains();
        let mut replay = Replay::new(&chains, 6.0, 1000.0, 2.0);
        // a: up, down twice, no data (held at 0), up (back), up.
        let script = [
            Some(true),
            Some(false),
            Some(false),
            None,
            Some(true),
            Some(true),
        ];
        for (k, a) in script.into_iter().enumerate() {
            replay.step(&observations(a), 1000.0 + 2.0 * k as f64);
        }
        let summary = replay.finish("test".into(), 1012.0);
        let backend = &summary.backends[0];
        let (a, b) = (&backend.servers[0], &backend.servers[1]);
        assert_eq!(
            a.ejections,
            [Ejection {
                start: 1002.0,
                end: Some(1008.0),
                reason: "down"
            }],
            "no data neither starts nor ends an ejection"
        );
        assert_eq!(
            a.writes,
            [
                WeightChange {
                    at: 1002.0,
                    weight: 0
                },
                WeightChange {
                    at: 1008.0,
                    weight: 100
                }
            ]
        );
        assert_eq!((a.seconds_at_zero, a.seconds_below_full), (6.0, 6.0));
        assert_eq!(
            a.no_data,
            [Period {
                start: 1006.0,
                end: 1008.0
            }]
        );
        assert_eq!(a.seconds_without_data, 2.0);
        // a carries half for 3 steps of 6, b half then all.
        assert!((a.carried - 0.25).abs() < 1e-9, "{}", a.carried);
        assert!((b.carried - 0.75).abs() < 1e-9, "{}", b.carried);
        assert!(b.ejections.is_empty() && b.writes.is_empty());
        assert!(backend.fail_open.is_empty());
        assert_eq!(backend.seconds_without_servers, 0.0);
    }

    #[test]
    fn everyone_down_fails_open_and_an_open_ejection_lasts_past_the_end() {
        let chains = chains();
        let mut replay = Replay::new(&chains, 6.0, 0.0, 1.0);
        let mut all_down = observations(Some(false));
        all_down.insert(
            ProviderKey::new("dev", "b"),
            Observation {
                up: false,
                ..Observation::default()
            },
        );
        replay.step(&observations(Some(true)), 0.0);
        replay.step(&all_down, 1.0);
        replay.step(&observations(Some(false)), 2.0);
        let summary = replay.finish("test".into(), 3.0);
        let backend = &summary.backends[0];
        assert_eq!(
            backend.fail_open,
            [Period {
                start: 1.0,
                end: 2.0
            }]
        );
        let a = &backend.servers[0];
        assert_eq!(a.ejections.len(), 1);
        assert_eq!((a.ejections[0].start, a.ejections[0].end), (1.0, None));
        assert_eq!(a.seconds_at_zero, 1.0, "kept in while failing open");
    }
}
