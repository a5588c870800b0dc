//! A thin client for Prometheus' query API: instant queries (`/api/v1/query`) for the live loop,
//! range queries (`/api/v1/query_range`) for the backtest. Values arrive as strings (`"1"`,
//! `"NaN"`, `"+Inf"`); an empty result means "no data", never zero.
//!
//! Memory is bounded by what is kept, not by what Prometheus sends: the answer is parsed as it
//! arrives (never buffered whole) straight into [`Sample`]s, and what is kept is capped.
//! - [`MAX_SAMPLES`] samples: one more fails the query with [`PrometheusError::TooManySamples`];
//! - [`MAX_LABEL_BYTES`] of labels over all samples, each label charged its name, its value and
//!   [`LABEL_OVERHEAD`] bytes for its storage (which also bounds their number): past it,
//!   [`PrometheusError::LabelsTooLarge`];
//! - [`MAX_STRING`] bytes for any one JSON string: past it, [`PrometheusError::StringTooLong`];
//! - [`MAX_BODY`] bytes for the whole answer: past it, [`PrometheusError::TooLarge`].
//!
//! A range answer counts each series as a sample, and also keeps at most [`MAX_POINTS`] points
//! ([`PrometheusError::TooManyPoints`]) from at most [`MAX_RANGE_BODY`] bytes: a caller asks for
//! a chunk of the range small enough to fit (at most 16 bytes a point, so about 32 MB).
//!
//! The actuator's queries return one sample per chain and provider, with those two labels; the
//! caps leave ample room for that and fail a query that returns raw series of a large Prometheus.
//! At the caps a query keeps about 6 MB, whatever the size of the answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;
use url::Url;

/// Largest answer read.
pub const MAX_BODY: usize = 16 << 20;
/// Most samples kept from one answer; the actuator needs one per chain and provider.
pub const MAX_SAMPLES: usize = 5_000;
/// Label budget of one answer, see [`LABEL_OVERHEAD`].
pub const MAX_LABEL_BYTES: usize = 1 << 20;
/// What a label costs beyond its name and value: two `String`s and a map slot.
pub const LABEL_OVERHEAD: usize = 64;
/// Longest JSON string read (a label value, an error message).
pub const MAX_STRING: usize = 64 << 10;
/// Most points kept from one range answer, over all its series.
pub const MAX_POINTS: usize = 2_000_000;
/// Largest range answer read: [`MAX_POINTS`] points of up to about 60 bytes of JSON each.
pub const MAX_RANGE_BODY: usize = 128 << 20;
/// Most points Prometheus 2.42 returns per series from one range query (it refuses more).
pub const MAX_POINTS_PER_SERIES: usize = 11_000;
/// Start of a non-JSON answer quoted in [`PrometheusError::NotJson`].
const SNIPPET: usize = 120;

/// Why a query gave no result.
#[derive(Debug, Error, PartialEq)]
pub enum PrometheusError {
    #[error("Prometheus did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach Prometheus: {0}")]
    Transport(String),
    #[error("Prometheus answered {error_type}: {error}")]
    Api { error_type: String, error: String },
    #[error("Prometheus answered HTTP {status} without a JSON body: {snippet:?}")]
    NotJson { status: u16, snippet: String },
    #[error("Prometheus' answer is over {MAX_BODY} bytes ({MAX_RANGE_BODY} for a range query)")]
    TooLarge,
    #[error(
        "Prometheus' answer has over {MAX_SAMPLES} samples; aggregate the query by chain and provider"
    )]
    TooManySamples,
    #[error(
        "Prometheus' range answer has over {MAX_POINTS} points; ask for a shorter range or a longer step"
    )]
    TooManyPoints,
    #[error(
        "Prometheus' answer has over {MAX_LABEL_BYTES} bytes of labels; keep only `chain` and `provider` (e.g. `max by (chain, provider)`)"
    )]
    LabelsTooLarge,
    #[error("Prometheus' answer has a string over {MAX_STRING} bytes")]
    StringTooLong,
    #[error("unexpected Prometheus answer: {0}")]
    Unexpected(String),
}

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    /// Evaluation time, Unix seconds.
    pub timestamp: f64,
    pub value: f64,
}

/// One series of a range query's matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    /// (evaluation time in Unix seconds, value), in time order.
    pub points: Vec<(f64, f64)>,
}

/// Which series of a range answer to keep, by their labels.
pub type SeriesFilter = Arc<dyn Fn(&BTreeMap<String, String>) -> bool + Send + Sync>;

/// An instant query's result.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    Vector(Vec<Sample>),
    Scalar { timestamp: f64, value: f64 },
}

/// Parses a Prometheus sample value: a decimal, `NaN`, `+Inf` or `-Inf`.
pub fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok().filter(|v: &f64| v.is_finite()),
    }
}

mod decode;

pub use decode::{decode, decode_matrix};
use decode::{decode_from, not_json, unexpected_kind, Chunks, Data, Expect};

/// Queries one Prometheus (or anything serving its API: Thanos, Mimir, VictoriaMetrics).
#[derive(Clone)]
pub struct PrometheusClient {
    http: reqwest::Client,
    instant: Url,
    range: Url,
    timeout: Duration,
}

/// The times a range query evaluates at: `start`, `start + step`, … up to `end` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub start: f64,
    pub end: f64,
    pub step: f64,
}

impl PrometheusClient {
    pub fn new(base: &Url, timeout: Duration) -> Result<Self, reqwest::Error> {
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let instant = base.join("api/v1/query").unwrap_or_else(|_| base.clone());
        let range = base
            .join("api/v1/query_range")
            .unwrap_or_else(|_| base.clone());
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            instant,
            range,
            timeout,
        })
    }

    /// Evaluates `promql` now. The answer is parsed on a blocking thread while it arrives.
    pub async fn query(&self, promql: &str) -> Result<QueryResult, PrometheusError> {
        let form = [("query", promql.to_owned())];
        match self
            .fetch(&self.instant, &form, Expect::Instant, None)
            .await?
        {
            Data::Instant(result) => Ok(result),
            Data::Matrix(_) => Err(unexpected_kind("matrix", Expect::Instant)),
        }
    }

    /// Evaluates `promql` at every time of `range`; at most [`MAX_POINTS_PER_SERIES`] of them.
    /// Only the series `keep` accepts are kept: on a Prometheus shared with other chains and
    /// providers, the others are skipped as they arrive, so they cost neither memory nor caps.
    pub async fn query_range(
        &self,
        promql: &str,
        range: Range,
        keep: SeriesFilter,
    ) -> Result<Vec<Series>, PrometheusError> {
        // Milliseconds, as Prometheus keeps its times.
        let seconds = |t: f64| format!("{t:.3}");
        let form = [
            ("query", promql.to_owned()),
            ("start", seconds(range.start)),
            ("end", seconds(range.end)),
            ("step", seconds(range.step)),
            // VictoriaMetrics rounds `start` down to a multiple of `step` (for its cache) when a
            // range has 50 points or more, so no point would fall on the asked times; `nocache`
            // keeps them (measured on 1.79.5). Prometheus, Thanos and Mimir ignore it.
            ("nocache", "1".to_owned()),
        ];
        match self
            .fetch(&self.range, &form, Expect::Range, Some(keep))
            .await?
        {
            Data::Matrix(series) => Ok(series),
            Data::Instant(_) => Err(unexpected_kind("vector", Expect::Range)),
        }
    }

    /// POSTs `form` to `endpoint` and decodes the answer while it arrives, within the caps.
    async fn fetch(
        &self,
        endpoint: &Url,
        form: &[(&str, String)],
        expect: Expect,
        keep: Option<SeriesFilter>,
    ) -> Result<Data, PrometheusError> {
        let transport = |e: reqwest::Error| PrometheusError::Transport(e.without_url().to_string());
        let max_body = match expect {
            Expect::Instant => MAX_BODY,
            Expect::Range => MAX_RANGE_BODY,
        };
        let fetch = async {
            let mut response = self
                .http
                .post(endpoint.clone())
                .form(form)
                .send()
                .await
                .map_err(transport)?;
            let status = response.status().as_u16();
            let (sender, receiver) = mpsc::channel(4);
            let parser = tokio::task::spawn_blocking(move || {
                decode_from(
                    Chunks {
                        receiver,
                        current: None,
                        offset: 0,
                    },
                    expect,
                    keep,
                )
            });
            let mut start = Vec::new();
            let mut received = 0;
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                received += chunk.len();
                if received > max_body {
                    return Err(PrometheusError::TooLarge);
                }
                if start.len() < SNIPPET {
                    start.extend_from_slice(&chunk[..chunk.len().min(SNIPPET - start.len())]);
                }
                if sender.send(chunk).await.is_err() {
                    break; // the parser has stopped: the answer is decided
                }
            }
            drop(sender);
            parser
                .await
                .map_err(|e| {
                    PrometheusError::Unexpected(format!("the answer's parser failed: {e}"))
                })?
                .map_err(|e| e.unwrap_or_else(|| not_json(status, &start)))
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| PrometheusError::Timeout(self.timeout))?
    }
}

#[cfg(test)]
mod tests;
