//! A thin client for Prometheus' instant-query API (`/api/v1/query`). Values arrive as strings
//! (`"1"`, `"NaN"`, `"+Inf"`); an empty vector means "no data", never zero.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use url::Url;

/// Largest answer read; a vector for thousands of servers is far smaller.
const MAX_BODY: usize = 16 << 20;

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
    #[error("Prometheus' answer is over {MAX_BODY} bytes")]
    TooLarge,
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

/// An instant query's result.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    Vector(Vec<Sample>),
    Scalar { timestamp: f64, value: f64 },
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
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

/// Decodes an answer body (any HTTP status: errors carry the same envelope).
pub fn decode(status: u16, body: &[u8]) -> Result<QueryResult, PrometheusError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|_| PrometheusError::NotJson {
            status,
            snippet: String::from_utf8_lossy(&body[..body.len().min(120)])
                .trim()
                .to_owned(),
        })?;
    if envelope.status != "success" {
        return Err(PrometheusError::Api {
            error_type: envelope.error_type.unwrap_or_else(|| "error".into()),
            error: envelope.error.unwrap_or_default(),
        });
    }
    let data = envelope
        .data
        .ok_or_else(|| PrometheusError::Unexpected("success without data".into()))?;
    let bad = |what: String| PrometheusError::Unexpected(what);
    match data.result_type.as_str() {
        "vector" => {
            let samples: Vec<RawSample> = serde_json::from_value(data.result)
                .map_err(|e| bad(format!("vector result: {e}")))?;
            samples
                .into_iter()
                .map(|s| {
                    Ok(Sample {
                        value: parse_value(&s.value.1)
                            .ok_or_else(|| bad(format!("sample value {:?}", s.value.1)))?,
                        timestamp: s.value.0,
                        labels: s.metric,
                    })
                })
                .collect::<Result<_, _>>()
                .map(QueryResult::Vector)
        }
        "scalar" => {
            let (timestamp, value): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| bad(format!("scalar result: {e}")))?;
            Ok(QueryResult::Scalar {
                timestamp,
                value: parse_value(&value).ok_or_else(|| bad(format!("sample value {value:?}")))?,
            })
        }
        other => Err(bad(format!(
            "a {other} result; write an instant vector query"
        ))),
    }
}

/// Queries one Prometheus (or anything serving its API: Thanos, Mimir, VictoriaMetrics).
#[derive(Clone)]
pub struct PrometheusClient {
    http: reqwest::Client,
    endpoint: Url,
    timeout: Duration,
}

impl PrometheusClient {
    pub fn new(base: &Url, timeout: Duration) -> Result<Self, reqwest::Error> {
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let endpoint = base.join("api/v1/query").unwrap_or(base);
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            endpoint,
            timeout,
        })
    }

    /// Evaluates `promql` now.
    pub async fn query(&self, promql: &str) -> Result<QueryResult, PrometheusError> {
        let fetch = async {
            let mut response = self
                .http
                .post(self.endpoint.clone())
                .form(&[("query", promql)])
                .send()
                .await
                .map_err(|e| PrometheusError::Transport(e.without_url().to_string()))?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| PrometheusError::Transport(e.without_url().to_string()))?
            {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(PrometheusError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            decode(status, &body)
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
}
