//! Whether the metrics engine itself lags: how far its newest sample of the exporter's series is
//! behind the time it evaluates at. Prometheus answers with the last scrape, so it reads 0 to
//! one scrape interval. An engine that hides recent samples (VictoriaMetrics'
//! `-search.latencyOffset`, 30 s by default) or answers from a cache (a query frontend's results
//! cache) reads that much more, and then every provider's data looks stale: the actuator holds
//! every weight. Its log then names the engine and the fix instead of guessing at clocks.
//!
//! The lag is measured in the engine's own clock (the answer's evaluation time against its scrape
//! timestamps, `timestamp()`), so clock skew between the exporter and the engine cannot show as
//! lag; an exporter that stopped probing but is still scraped shows fresh scrapes and old probe
//! timestamps, so it does not read as lag either. VictoriaMetrics evaluates at the shifted time
//! but stamps the answer with the query time: with no sample of the exporter yet (it hides the
//! first 30 s too), `time()` against the answer's stamp shows the shift from the first cycle.

use common::metric_names::LAST_PROBE;

use crate::metrics::ActuatorMetrics;
use crate::prometheus_api::{PrometheusClient, QueryResult};

/// The engine's newest scrape of the exporter's last-probe series (its own clock), or, while it
/// has none, the time it evaluates at.
pub fn query() -> String {
    format!("max(timestamp({LAST_PROBE})) or vector(time())")
}

/// What one cycle measured of the engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineLag {
    /// Seconds between the engine's evaluation time and its newest sample of the exporter.
    pub seconds: f64,
    /// The lag alone takes over half of `max_data_age`: it makes fresh data look stale.
    pub lagging: bool,
}

/// Judges a measured lag against the freshness budget (`max_data_age`, seconds). Over half of
/// it is left for the probe interval and the exporter; a healthy Prometheus scraping at least
/// that often stays below.
pub fn judge(seconds: f64, max_data_age: f64) -> EngineLag {
    // VictoriaMetrics stamps answers with whole seconds: a fraction of a second "ahead" is that.
    let seconds = seconds.max(0.0);
    EngineLag {
        seconds,
        lagging: seconds > max_data_age / 2.0,
    }
}

/// The lag in the answer to [`query`]: its evaluation time minus its value. `None` for an answer
/// of another shape.
pub fn lag_of(answer: &QueryResult) -> Option<f64> {
    let QueryResult::Vector(samples) = answer else {
        return None;
    };
    samples
        .iter()
        .map(|s| s.timestamp - s.value)
        .filter(|lag| lag.is_finite())
        .reduce(f64::min)
}

/// Measures the engine's lag. A failed query reads as unknown: the signal queries of the same
/// cycle report the engine's failures.
pub async fn measure(client: &PrometheusClient, max_data_age: f64) -> Option<EngineLag> {
    let answer = client.query(&query()).await.ok()?;
    lag_of(&answer).map(|seconds| judge(seconds, max_data_age))
}

/// The warning's text: the cause, and the fix for each engine that lags this way.
pub const CAUSE: &str = "the metrics engine lags: its newest sample of the exporter is older than half of max_data_age, so fresh data looks stale and weights are held. VictoriaMetrics hides the last -search.latencyOffset (30s by default) of samples: start it with -search.latencyOffset=1s and query the single-node URL or vmselect's /select/0/prometheus. Thanos query-frontend and Mimir: do not answer recent queries from the results cache (Mimir -query-frontend.max-cache-freshness, Thanos query-frontend caches range queries only: point the actuator at Thanos Query). Prometheus: scrape the exporter at least every max_data_age/2";

/// What was logged of the engine's lag, so that it is logged once when it starts and once when
/// it ends.
#[derive(Debug, Default)]
pub struct EngineLagLog {
    lagging: bool,
}

impl EngineLagLog {
    /// True while the last reading was lagging.
    pub fn lagging(&self) -> bool {
        self.lagging
    }

    /// Publishes this cycle's reading; an unknown one leaves the state as it was.
    pub fn publish(&mut self, m: &ActuatorMetrics, lag: Option<EngineLag>) {
        let Some(lag) = lag else {
            m.engine_lag.clear();
            return;
        };
        m.engine_lag.set(lag.seconds);
        m.engine_lagging.set(f64::from(u8::from(lag.lagging)));
        if lag.lagging && !self.lagging {
            tracing::warn!(lag_seconds = lag.seconds, "{CAUSE}");
        } else if !lag.lagging && self.lagging {
            tracing::info!(
                lag_seconds = lag.seconds,
                "metrics engine lag over: its newest samples are recent again"
            );
        }
        self.lagging = lag.lagging;
    }
}

/// The line `explain` prints about the engine.
pub fn explain_line(lag: Option<EngineLag>) -> String {
    match lag {
        None => "metrics engine: lag unknown (its answer had no sample)\n".into(),
        Some(l) if l.lagging => format!(
            "metrics engine: LAGGING {:.1}s behind its evaluation time; {CAUSE}\n",
            l.seconds
        ),
        Some(l) => format!(
            "metrics engine: newest sample {:.1}s behind its evaluation time\n",
            l.seconds
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::prometheus_api::Sample;

    fn sample(timestamp: f64, value: f64) -> Sample {
        Sample {
            labels: BTreeMap::new(),
            timestamp,
            value,
        }
    }

    #[test]
    fn a_scrape_interval_is_not_lag_and_a_latency_offset_is() {
        // Prometheus, scraping every second, max_data_age 6.5 s: at most a scrape behind.
        assert!(!judge(1.0, 6.5).lagging);
        // VictoriaMetrics' default: 30 s hidden.
        assert_eq!(
            judge(30.6, 6.5),
            EngineLag {
                seconds: 30.6,
                lagging: true
            }
        );
        // The border: half the budget.
        assert!(!judge(3.25, 6.5).lagging);
        assert!(judge(3.3, 6.5).lagging);
        // Whole-second stamps read a little ahead: no lag, never negative.
        assert_eq!(judge(-0.4, 6.5).seconds, 0.0);
    }

    #[test]
    fn the_lag_is_the_answers_time_minus_the_newest_scrape() {
        let answer = QueryResult::Vector(vec![sample(1000.0, 969.5)]);
        assert_eq!(lag_of(&answer), Some(30.5));
        assert_eq!(lag_of(&QueryResult::Vector(vec![])), None);
        let odd = QueryResult::Vector(vec![sample(1000.0, f64::NAN), sample(1000.0, 999.0)]);
        assert_eq!(lag_of(&odd), Some(1.0));
        let scalar = QueryResult::Scalar {
            timestamp: 1.0,
            value: 1.0,
        };
        assert_eq!(lag_of(&scalar), None);
    }

    #[test]
    fn the_cause_is_logged_once_per_episode() {
        let m = ActuatorMetrics::new();
        let mut log = EngineLagLog::default();
        log.publish(&m, Some(judge(31.0, 6.5)));
        assert!(log.lagging());
        assert_eq!(m.engine_lagging.get(), Some(1.0));
        assert_eq!(m.engine_lag.get(), Some(31.0));
        log.publish(&m, None);
        assert!(log.lagging(), "an unknown reading changes nothing");
        assert_eq!(m.engine_lag.get(), None);
        log.publish(&m, Some(judge(0.5, 6.5)));
        assert!(!log.lagging());
        assert_eq!(m.engine_lagging.get(), Some(0.0));
        assert!(explain_line(Some(judge(31.0, 6.5))).contains("-search.latencyOffset=1s"));
        assert!(!explain_line(Some(judge(0.5, 6.5))).contains("LAGGING"));
    }
}
