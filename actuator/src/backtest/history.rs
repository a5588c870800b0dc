//! The signals' history: the live loop's seven queries, evaluated over the range with
//! `/api/v1/query_range` in chunks. A chunk asks for few enough points that Prometheus serves it
//! (at most [`MAX_POINTS_PER_SERIES`] per series) and that its answer fits the client's caps, so
//! a week at 2 s costs the memory of one chunk, never of the whole range. Only the configured
//! providers' series are kept, as the answers arrive ([`Wanted`]): a Prometheus shared with other
//! chains and providers costs the memory of the configured servers × one chunk, whatever it
//! returns.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::config::{Config, Queries};

use crate::observe::{signal_queries, ProviderKey, Signal, Signals};
use crate::prometheus_api::{
    PrometheusClient, PrometheusError, Range, Series, SeriesFilter, MAX_POINTS,
    MAX_POINTS_PER_SERIES,
};

/// The providers a backtest replays: the series of any other are skipped as they arrive.
#[derive(Clone)]
pub struct Wanted(Arc<HashSet<ProviderKey>>);

impl Wanted {
    /// Every provider of every chain of `config`.
    pub fn new(config: &Config) -> Self {
        Self(Arc::new(
            config
                .chains
                .iter()
                .flat_map(|c| {
                    c.providers
                        .iter()
                        .map(|p| ProviderKey::new(c.name.as_str(), p.name.as_str()))
                })
                .collect(),
        ))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn filter(&self) -> SeriesFilter {
        let wanted = self.0.clone();
        Arc::new(move |labels| {
            ProviderKey::from_labels(labels).is_some_and(|key| wanted.contains(&key))
        })
    }
}

/// The evaluation times of the whole range: `start + k × step` for `k` in `0..steps`, in
/// milliseconds (Prometheus' resolution), so every answer's point maps to exactly one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub start_ms: i64,
    pub step_ms: i64,
    pub steps: usize,
}

impl Grid {
    /// Unix seconds of step `k`.
    pub fn time(&self, k: usize) -> f64 {
        (self.start_ms + k as i64 * self.step_ms) as f64 / 1000.0
    }

    pub fn step_seconds(&self) -> f64 {
        self.step_ms as f64 / 1000.0
    }

    /// The range split into chunks of steps `[first, first + len)`, each small enough for one
    /// answer when every query returns up to `series` series.
    pub fn chunks(&self, series: usize) -> Vec<(usize, usize)> {
        // Prometheus counts both ends, so a chunk of n steps is n points per series.
        let per_series = (MAX_POINTS / series.max(1)).min(MAX_POINTS_PER_SERIES - 1);
        let size = per_series.max(1);
        (0..self.steps)
            .step_by(size)
            .map(|first| (first, size.min(self.steps - first)))
            .collect()
    }
}

/// One query's values over a chunk, by provider: `None` where it had no sample.
type Columns = HashMap<ProviderKey, Vec<Option<f64>>>;

/// Every query's values over a chunk of the grid, in [`signal_queries`]' order (`up` first).
pub struct Chunk {
    grid: Grid,
    first: usize,
    len: usize,
    columns: [Columns; 7],
}

impl Chunk {
    /// Runs the seven queries over steps `[first, first + len)` of `grid`, keeping the series
    /// of the `wanted` providers.
    pub async fn fetch(
        client: &PrometheusClient,
        queries: &Queries,
        wanted: &Wanted,
        grid: Grid,
        (first, len): (usize, usize),
    ) -> Result<Self, PrometheusError> {
        let range = Range {
            start: grid.time(first),
            end: grid.time(first + len.saturating_sub(1)),
            step: grid.step_seconds(),
        };
        let answers =
            futures::future::try_join_all(signal_queries(queries).map(|(name, text)| async move {
                client
                    .query_range(text, range, wanted.filter())
                    .await
                    .map_err(|e| named(name, e))
            }))
            .await?;
        let mut chunk = Self {
            grid,
            first,
            len,
            columns: Default::default(),
        };
        for (columns, series) in chunk.columns.iter_mut().zip(answers) {
            *columns = Self::columns(grid, first, len, series);
        }
        Ok(chunk)
    }

    fn columns(grid: Grid, first: usize, len: usize, answer: Vec<Series>) -> Columns {
        let start_ms = grid.start_ms + first as i64 * grid.step_ms;
        let mut columns = Columns::new();
        for series in answer {
            let Some(key) = ProviderKey::from_labels(&series.labels) else {
                continue;
            };
            let column = columns.entry(key).or_insert_with(|| vec![None; len]);
            for (time, value) in series.points {
                let offset = (time * 1000.0).round() as i64 - start_ms;
                if offset % grid.step_ms != 0 {
                    continue;
                }
                if let Some(slot) = usize::try_from(offset / grid.step_ms)
                    .ok()
                    .and_then(|i| column.get_mut(i))
                {
                    *slot = Some(value);
                }
            }
        }
        columns
    }

    /// Steps of the grid this chunk covers.
    pub fn steps(&self) -> std::ops::Range<usize> {
        self.first..self.first + self.len
    }

    /// Whether any provider has an `up` sample in the chunk.
    pub fn has_data(&self) -> bool {
        self.columns[0]
            .values()
            .any(|c| c.iter().any(Option::is_some))
    }

    /// Every query's samples at grid step `k` (one of [`Self::steps`]), as the live loop's
    /// instant queries would have returned them then.
    pub fn signals_at(&self, k: usize) -> Signals {
        let time = self.grid.time(k);
        let i = k - self.first;
        let at = |columns: &Columns| -> Signal {
            columns
                .iter()
                .filter_map(|(key, column)| Some((key.clone(), (time, column.get(i).copied()??))))
                .collect()
        };
        Signals::from_answers(self.columns.iter().map(at))
    }
}

/// An error that says which query failed.
fn named(name: &str, e: PrometheusError) -> PrometheusError {
    match e {
        PrometheusError::Api { error_type, error } => PrometheusError::Api {
            error_type,
            error: format!("the {name} query: {error}"),
        },
        PrometheusError::Unexpected(what) => {
            PrometheusError::Unexpected(format!("the {name} query: {what}"))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn series(provider: &str, points: &[(f64, f64)]) -> Series {
        let labels: BTreeMap<String, String> = [("chain", "dev"), ("provider", provider)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Series {
            labels,
            points: points.to_vec(),
        }
    }

    #[test]
    fn chunks_cover_the_grid_within_the_caps() {
        let grid = Grid {
            start_ms: 0,
            step_ms: 2000,
            steps: 43_200,
        };
        let chunks = grid.chunks(10);
        assert_eq!(chunks.first(), Some(&(0, MAX_POINTS_PER_SERIES - 1)));
        assert_eq!(chunks.iter().map(|c| c.1).sum::<usize>(), 43_200);
        assert!(chunks.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
        let many = grid.chunks(1_000);
        assert!(many.iter().all(|c| c.1 * 1_000 <= MAX_POINTS));
    }

    #[test]
    fn points_land_on_their_step_and_gaps_stay_empty() {
        let grid = Grid {
            start_ms: 1_000_000,
            step_ms: 2000,
            steps: 10,
        };
        let columns = Chunk::columns(
            grid,
            4,
            3,
            vec![
                series(
                    "a",
                    &[(1008.0, 1.0), (1012.0, 3.0), (1011.0, 9.0), (1020.0, 9.0)],
                ),
                Series {
                    labels: BTreeMap::new(),
                    points: vec![(1008.0, 1.0)],
                },
            ],
        );
        assert_eq!(
            columns.len(),
            1,
            "a series without chain and provider is skipped"
        );
        assert_eq!(
            columns[&ProviderKey::new("dev", "a")],
            [Some(1.0), None, Some(3.0)],
            "off-grid and out-of-chunk points are dropped"
        );
        let mut all: [Columns; 7] = Default::default();
        all[0] = columns;
        let chunk = Chunk {
            grid,
            first: 4,
            len: 3,
            columns: all,
        };
        assert!(chunk.has_data());
        let at = chunk.signals_at(6);
        assert_eq!(at.up[&ProviderKey::new("dev", "a")], (1012.0, 3.0));
        assert!(chunk.signals_at(5).up.is_empty());
        assert!(at.latency.is_empty());
    }
}
