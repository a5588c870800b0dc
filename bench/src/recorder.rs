//! HAProxy's view of every arm over time: `show stat` read in the background every 100 ms and
//! kept compactly, so every part reads the same record (when a server left the rotation, for how
//! long, its traffic share) and the timelines are drawn from it afterwards. 100 ms rather than
//! the timelines' coarser need, because times to weight 0 are read off it too.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actuator::haproxy::{BackendStat, Haproxy};
use tokio::task::JoinHandle;

use crate::arm::{backup_twin, SERVERS};

pub const EVERY: Duration = Duration::from_millis(100);

/// One server at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerSample {
    pub weight: u32,
    /// Marked DOWN (or MAINT) by HAProxy, whatever its weight.
    pub down: bool,
    /// `lbtot`: times the load balancer chose it so far.
    pub selected: u64,
}

impl ServerSample {
    /// Whether HAProxy may send it traffic.
    pub fn in_rotation(&self) -> bool {
        self.weight > 0 && !self.down
    }

    /// Its weight as clients feel it: 0 while DOWN.
    pub fn effective_weight(&self) -> u32 {
        if self.down {
            0
        } else {
            self.weight
        }
    }
}

/// Every arm's servers (in [`SERVERS`] order) at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub at: Instant,
    pub arms: Vec<[ServerSample; 3]>,
}

/// `backends`' servers from one `show stat`; `None` if any is missing (a failed read). A
/// provider's backup twin, when there is one, counts into its requests: both are the provider.
fn snapshot(
    at: Instant,
    stat: &std::collections::BTreeMap<String, BackendStat>,
    backends: &[String],
) -> Option<Snapshot> {
    let mut arms = Vec::with_capacity(backends.len());
    for backend in backends {
        let servers = &stat.get(backend)?.servers;
        let mut row = [ServerSample::default(); 3];
        for (sample, name) in row.iter_mut().zip(SERVERS) {
            let st = servers.get(name)?;
            let twin = servers
                .get(&backup_twin(name))
                .and_then(|t| t.counters)
                .map_or(0, |c| c.selected);
            *sample = ServerSample {
                weight: st.weight,
                down: st.status.starts_with("DOWN") || st.status.starts_with("MAINT"),
                selected: st.counters.map_or(0, |c| c.selected) + twin,
            };
        }
        arms.push(row);
    }
    Some(Snapshot { at, arms })
}

/// The background reader; stops on drop.
pub struct Recorder {
    snapshots: Arc<Mutex<Vec<Snapshot>>>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Reads `backends` (one per arm) every [`EVERY`].
    pub fn start(haproxy: Haproxy, backends: Vec<String>) -> Self {
        let snapshots: Arc<Mutex<Vec<Snapshot>>> = Arc::default();
        let kept = snapshots.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Ok(stat) = haproxy.show_stat().await else {
                    continue;
                };
                if let Some(s) = snapshot(Instant::now(), &stat, &backends) {
                    kept.lock().unwrap_or_else(PoisonError::into_inner).push(s);
                }
            }
        });
        Self { snapshots, task }
    }

    /// Snapshots taken in `[from, to]`.
    pub fn between(&self, from: Instant, to: Instant) -> Vec<Snapshot> {
        self.snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .cloned()
            .collect()
    }

    /// The newest snapshot, once one was taken.
    pub fn latest(&self) -> Option<Snapshot> {
        self.snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .cloned()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One server of one arm through a run of snapshots.
#[derive(Debug, Clone, Copy)]
pub struct Track<'a> {
    pub snapshots: &'a [Snapshot],
    pub arm: usize,
    pub server: usize,
}

impl Track<'_> {
    fn samples(&self) -> impl Iterator<Item = (Instant, ServerSample)> + '_ {
        self.snapshots
            .iter()
            .map(|s| (s.at, s.arms[self.arm][self.server]))
    }

    /// When `state` first held.
    pub fn first(&self, state: impl Fn(&ServerSample) -> bool) -> Option<Instant> {
        self.samples().find(|(_, s)| state(s)).map(|(at, _)| at)
    }

    /// How many times `state` began (not counting a state held from the first snapshot).
    pub fn entries(&self, state: impl Fn(&ServerSample) -> bool) -> usize {
        let held: Vec<bool> = self.samples().map(|(_, s)| state(&s)).collect();
        held.windows(2).filter(|w| !w[0] && w[1]).count()
    }

    /// Seconds `state` held, each snapshot standing for the time until the next.
    pub fn seconds(&self, state: impl Fn(&ServerSample) -> bool) -> f64 {
        self.snapshots
            .windows(2)
            .filter(|w| state(&w[0].arms[self.arm][self.server]))
            .map(|w| (w[1].at - w[0].at).as_secs_f64())
            .sum::<f64>()
            + 0.0 // an empty sum is -0.0
    }

    /// When it began the first stretch of at least `hold` in rotation at one weight (a return
    /// that has settled: slow start and any re-ejection over).
    pub fn first_steady(&self, hold: Duration) -> Option<Instant> {
        let mut run: Option<(Instant, u32)> = None;
        for (at, s) in self.samples() {
            run = match run {
                Some((from, weight)) if s.in_rotation() && s.weight == weight => {
                    if at - from >= hold {
                        return Some(from);
                    }
                    Some((from, weight))
                }
                _ => s.in_rotation().then_some((at, s.weight)),
            };
        }
        None
    }

    /// Requests HAProxy sent it between the first and the last snapshot.
    pub fn selected(&self) -> u64 {
        let mut samples = self.samples();
        let first = samples.next().map_or(0, |(_, s)| s.selected);
        let last = self.samples().last().map_or(first, |(_, s)| s.selected);
        last.saturating_sub(first)
    }

    /// The weight it held longest (its usual weight).
    pub fn usual_weight(&self) -> Option<u32> {
        let mut time: std::collections::BTreeMap<u32, f64> = Default::default();
        for w in self.snapshots.windows(2) {
            *time
                .entry(w[0].arms[self.arm][self.server].weight)
                .or_default() += (w[1].at - w[0].at).as_secs_f64();
        }
        time.into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(w, _)| w)
    }
}

/// Each server's share of the requests HAProxy sent `arm` over `snapshots`.
pub fn shares(snapshots: &[Snapshot], arm: usize) -> [f64; 3] {
    let selected: Vec<u64> = (0..3)
        .map(|server| {
            Track {
                snapshots,
                arm,
                server,
            }
            .selected()
        })
        .collect();
    let total: u64 = selected.iter().sum();
    let mut out = [0.0; 3];
    if total > 0 {
        for (share, n) in out.iter_mut().zip(&selected) {
            *share = *n as f64 / total as f64;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshots 1 s apart of one arm whose second server has these (weight, down, lbtot).
    fn run(states: &[(u32, bool, u64)]) -> Vec<Snapshot> {
        let start = Instant::now();
        states
            .iter()
            .enumerate()
            .map(|(i, &(weight, down, selected))| {
                let other = ServerSample {
                    weight: 100,
                    down: false,
                    selected: 10 * i as u64,
                };
                Snapshot {
                    at: start + Duration::from_secs(i as u64),
                    arms: vec![[
                        other,
                        ServerSample {
                            weight,
                            down,
                            selected,
                        },
                        other,
                    ]],
                }
            })
            .collect()
    }

    fn second(snapshots: &[Snapshot]) -> Track<'_> {
        Track {
            snapshots,
            arm: 0,
            server: 1,
        }
    }

    #[test]
    fn a_track_counts_entries_and_time_out_of_rotation() {
        let snapshots = run(&[
            (50, false, 0),
            (0, false, 5),
            (0, false, 5),
            (50, false, 5),
            (50, true, 5),
            (50, false, 5),
            (50, false, 9),
        ]);
        let track = second(&snapshots);
        let out = |s: &ServerSample| !s.in_rotation();
        assert_eq!(track.entries(out), 2);
        assert_eq!(track.entries(|s| s.weight == 0), 1);
        assert_eq!(track.seconds(out), 3.0);
        assert_eq!(track.first(out), Some(snapshots[1].at));
        assert_eq!(track.selected(), 9);
        assert_eq!(track.usual_weight(), Some(50));
    }

    #[test]
    fn a_return_is_steady_once_one_weight_holds_in_rotation() {
        let snapshots = run(&[
            (0, false, 0),
            (10, false, 0),
            (20, false, 0),
            (20, false, 0),
            (0, false, 0),
            (50, false, 0),
            (50, true, 0),
            (50, false, 0),
            (50, false, 0),
            (50, false, 0),
        ]);
        let track = second(&snapshots);
        assert_eq!(
            track.first_steady(Duration::from_secs(1)),
            Some(snapshots[2].at)
        );
        assert_eq!(
            track.first_steady(Duration::from_secs(2)),
            Some(snapshots[7].at)
        );
        assert_eq!(track.first_steady(Duration::from_secs(3)), None);
    }

    #[test]
    fn a_state_held_from_the_start_is_not_an_entry() {
        let snapshots = run(&[(0, false, 0), (0, false, 0), (100, false, 0)]);
        let track = second(&snapshots);
        assert_eq!(track.entries(|s| s.weight == 0), 0);
        assert_eq!(track.seconds(|s| s.weight == 0), 2.0);
    }

    #[test]
    fn shares_split_the_requests_sent() {
        // The others get 20 each over the run, the second server 30.
        let snapshots = run(&[(100, false, 0), (100, false, 10), (100, false, 30)]);
        assert_eq!(
            shares(&snapshots, 0),
            [20.0 / 70.0, 30.0 / 70.0, 20.0 / 70.0]
        );
        assert_eq!(shares(&snapshots[..1], 0), [0.0; 3]);
    }
}
