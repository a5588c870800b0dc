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
        match self.fetch(&self.instant, &form, Expect::Instant).await? {
            Data::Instant(result) => Ok(result),
            Data::Matrix(_) => Err(unexpected_kind("matrix", Expect::Instant)),
        }
    }

    /// Evaluates `promql` at every time of `range`; at most [`MAX_POINTS_PER_SERIES`] of them.
    pub async fn query_range(
        &self,
        promql: &str,
        range: Range,
    ) -> Result<Vec<Series>, PrometheusError> {
        // Milliseconds, as Prometheus keeps its times.
        let seconds = |t: f64| format!("{t:.3}");
        let form = [
            ("query", promql.to_owned()),
            ("start", seconds(range.start)),
            ("end", seconds(range.end)),
            ("step", seconds(range.step)),
        ];
        match self.fetch(&self.range, &form, Expect::Range).await? {
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
mod tests {
    use super::*;

    #[test]
    fn reads_vectors_with_special_values() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"chain":"a","provider":"p"},"value":[1795487401.414,"1"]},
            {"metric":{"provider":"q"},"value":[1795487401.414,"NaN"]},
            {"metric":{"provider":"r"},"value":[1795487401.414,"+Inf"]},
            {"metric":{"provider":"s"},"value":[1795487401.414,"-Inf"]},
            {"metric":{},"value":[1795487401.414,"1e-3"]}]}}"#;
        let QueryResult::Vector(v) = decode(200, body).unwrap() else {
            panic!("vector")
        };
        assert_eq!(v[0].labels["chain"], "a");
        assert_eq!(v[0].value, 1.0);
        assert!((v[0].timestamp - 1_795_487_401.414).abs() < 1e-6);
        assert!(v[1].value.is_nan());
        assert_eq!(v[2].value, f64::INFINITY);
        assert_eq!(v[3].value, f64::NEG_INFINITY);
        assert_eq!(v[4].value, 0.001);
    }

    #[test]
    fn empty_vector_is_no_data_and_scalars_are_read() {
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(decode(200, empty).unwrap(), QueryResult::Vector(vec![]));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"42"]}}"#;
        assert_eq!(
            decode(200, scalar).unwrap(),
            QueryResult::Scalar {
                timestamp: 1.5,
                value: 42.0
            }
        );
    }

    #[test]
    fn errors_are_typed() {
        let bad =
            br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#;
        assert_eq!(
            decode(400, bad),
            Err(PrometheusError::Api {
                error_type: "bad_data".into(),
                error: "1:5: parse error: unexpected".into()
            })
        );
        assert!(matches!(
            decode(404, b"404 page not found"),
            Err(PrometheusError::NotJson { status: 404, .. })
        ));
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(matches!(
            decode(200, matrix),
            Err(PrometheusError::Unexpected(_))
        ));
        let odd = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"one"]}]}}"#;
        assert!(matches!(
            decode(200, odd),
            Err(PrometheusError::Unexpected(_))
        ));
    }

    #[test]
    fn values_parse_strictly() {
        assert_eq!(parse_value("2.5"), Some(2.5));
        assert_eq!(parse_value("inf"), None, "Prometheus writes +Inf");
        assert_eq!(parse_value(""), None);
    }

    fn vector(samples: &[String]) -> Vec<u8> {
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            samples.join(",")
        )
        .into_bytes()
    }

    fn sample(labels: &str) -> String {
        format!(r#"{{"metric":{{{labels}}},"value":[1,"1"]}}"#)
    }

    #[test]
    fn samples_are_capped() {
        let at_cap = vec![sample(r#""provider":"p""#); MAX_SAMPLES];
        assert!(
            matches!(decode(200, &vector(&at_cap)), Ok(QueryResult::Vector(v)) if v.len() == MAX_SAMPLES)
        );
        let over = vec![sample(""); MAX_SAMPLES + 1];
        assert_eq!(
            decode(200, &vector(&over)),
            Err(PrometheusError::TooManySamples)
        );
    }

    #[test]
    fn labels_are_capped_by_bytes_and_by_count() {
        let value = "v".repeat(MAX_STRING - 100);
        let big = vec![sample(&format!(r#""l":"{value}""#)); MAX_LABEL_BYTES / MAX_STRING + 2];
        assert_eq!(
            decode(200, &vector(&big)),
            Err(PrometheusError::LabelsTooLarge)
        );
        let many = vec![
            sample(r#""a":"","b":"","c":"","d":"""#);
            MAX_LABEL_BYTES / LABEL_OVERHEAD / 4 + 1
        ];
        assert_eq!(
            decode(200, &vector(&many)),
            Err(PrometheusError::LabelsTooLarge)
        );
    }

    #[test]
    fn long_strings_are_refused_before_they_are_buffered() {
        let long = vec![sample(&format!(r#""l":"{}""#, "\\\"".repeat(MAX_STRING)))];
        assert_eq!(
            decode(200, &vector(&long)),
            Err(PrometheusError::StringTooLong)
        );
        let error = format!(
            r#"{{"status":"error","errorType":"x","error":"{}"}}"#,
            "e".repeat(MAX_STRING + 1)
        );
        assert_eq!(
            decode(400, error.as_bytes()),
            Err(PrometheusError::StringTooLong)
        );
    }

    #[test]
    fn unknown_fields_are_skipped_and_order_is_checked() {
        let extra = br#"{"status":"success","warnings":["w"],"data":{"resultType":"vector","stats":{"a":[1]},
            "result":[{"metric":{"provider":"p"},"histogram":[1,{}],"value":[2,"3"]}]},"infos":[]}"#;
        let QueryResult::Vector(v) = decode(200, extra).unwrap() else {
            panic!("vector")
        };
        assert_eq!(
            (v[0].timestamp, v[0].value, v[0].labels["provider"].as_str()),
            (2.0, 3.0, "p")
        );
        let reversed = br#"{"status":"success","data":{"result":[],"resultType":"vector"}}"#;
        assert!(
            matches!(decode(200, reversed), Err(PrometheusError::Unexpected(e)) if e.contains("before"))
        );
        assert!(matches!(
            decode(200, b"{\"status\":\"success\"} x"),
            Err(PrometheusError::NotJson { .. })
        ));
    }

    fn matrix(series: &[String]) -> Vec<u8> {
        format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
            series.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn reads_matrices_and_refuses_other_kinds_for_a_range() {
        let body = matrix(&[
            r#"{"metric":{"provider":"p"},"values":[[10,"1"],[12,"NaN"],[14,"-Inf"]]}"#.into(),
            r#"{"metric":{},"histograms":[[10,{}]]}"#.into(),
        ]);
        let series = decode_matrix(200, &body).unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].labels["provider"], "p");
        let times: Vec<f64> = series[0].points.iter().map(|p| p.0).collect();
        assert_eq!(times, [10.0, 12.0, 14.0]);
        assert!(series[0].points[1].1.is_nan());
        assert_eq!(series[0].points[2].1, f64::NEG_INFINITY);
        assert!(
            series[1].points.is_empty(),
            "histograms only: no float points"
        );
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(
            matches!(decode_matrix(200, vector), Err(PrometheusError::Unexpected(e)) if e.contains("matrix"))
        );
        let no_metric = matrix(&[r#"{"values":[[1,"1"]]}"#.into()]);
        assert!(matches!(
            decode_matrix(200, &no_metric),
            Err(PrometheusError::Unexpected(_))
        ));
    }

    #[test]
    fn range_points_and_series_are_capped() {
        let points = |n: usize| vec!["[1,\"1\"]"; n].join(",");
        let at_cap = matrix(&[
            format!(r#"{{"metric":{{}},"values":[{}]}}"#, points(MAX_POINTS / 2)),
            format!(r#"{{"metric":{{}},"values":[{}]}}"#, points(MAX_POINTS / 2)),
        ]);
        assert!(matches!(decode_matrix(200, &at_cap), Ok(s) if s.len() == 2));
        let over = matrix(&[
            format!(r#"{{"metric":{{}},"values":[{}]}}"#, points(MAX_POINTS / 2)),
            format!(
                r#"{{"metric":{{}},"values":[{}]}}"#,
                points(MAX_POINTS / 2 + 1)
            ),
        ]);
        assert_eq!(
            decode_matrix(200, &over),
            Err(PrometheusError::TooManyPoints)
        );
        let empty_series = vec![r#"{"metric":{},"values":[]}"#.to_owned(); MAX_SAMPLES + 1];
        assert_eq!(
            decode_matrix(200, &matrix(&empty_series)),
            Err(PrometheusError::TooManySamples),
            "series without points or labels still count"
        );
    }
}
