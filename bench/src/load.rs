//! A steady client load through an HAProxy frontend: JSON-RPC POSTs at a fixed rate, each
//! recorded with its start time and latency.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::stats::quantile;

/// One request: when it started, how long it took, whether it got a JSON-RPC result.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub started: Instant,
    pub latency: Duration,
    pub ok: bool,
    /// Answered HTTP 429 (rate limited).
    pub rate_limited: bool,
}

/// A running load; stops on drop.
pub struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: JoinHandle<()>,
}

impl Load {
    /// `rate` requests per second to `http://127.0.0.1:port`, each a call of `method` (one that
    /// takes no parameters).
    pub fn start(port: u16, rate: u32, method: &str) -> Self {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let recorded = samples.clone();
        let url = format!("http://127.0.0.1:{port}");
        let method = method.to_owned();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(64)
                .build()
                .expect("HTTP client");
            let body =
                serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": []})
                    .to_string();
            let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
            ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
            loop {
                ticker.tick().await;
                let (client, url, recorded) = (client.clone(), url.clone(), recorded.clone());
                let body = body.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let reply = client
                        .post(url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    let rate_limited = reply
                        .as_ref()
                        .is_ok_and(|r| r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS);
                    let ok = match reply {
                        Ok(r) if r.status().is_success() => {
                            r.text().await.is_ok_and(|t| t.contains("\"result\""))
                        }
                        _ => false,
                    };
                    let sample = Sample {
                        started,
                        latency: started.elapsed(),
                        ok,
                        rate_limited,
                    };
                    recorded
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(sample);
                });
            }
        });
        Self { samples, task }
    }

    /// Requests started in `[from, to)`.
    pub fn between(&self, from: Instant, to: Instant) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| s.started >= from && s.started < to)
            .copied()
            .collect()
    }

    /// What the client saw of the requests started in `[from, to)`.
    pub fn summary(&self, from: Instant, to: Instant) -> ClientSummary {
        ClientSummary::of(&self.between(from, to))
    }
}

/// Client latencies and failures over some requests.
#[derive(Debug, Clone, Default)]
pub struct ClientSummary {
    /// Latencies in seconds.
    pub latencies: Vec<f64>,
    pub failed: usize,
    /// Of the failed, those answered HTTP 429.
    pub rate_limited: usize,
}

impl ClientSummary {
    pub fn of(samples: &[Sample]) -> Self {
        Self {
            latencies: samples.iter().map(|s| s.latency.as_secs_f64()).collect(),
            failed: samples.iter().filter(|s| !s.ok).count(),
            rate_limited: samples.iter().filter(|s| s.rate_limited).count(),
        }
    }

    /// Both summaries' requests together.
    pub fn merge(mut self, other: &ClientSummary) -> Self {
        self.latencies.extend_from_slice(&other.latencies);
        self.failed += other.failed;
        self.rate_limited += other.rate_limited;
        self
    }

    pub fn requests(&self) -> usize {
        self.latencies.len()
    }

    /// Failed requests as a share of all (0 when there were none).
    pub fn failed_share(&self) -> f64 {
        if self.latencies.is_empty() {
            0.0
        } else {
            self.failed as f64 / self.latencies.len() as f64
        }
    }

    /// "p50 / p99 ms".
    pub fn latency_text(&self) -> String {
        let ms =
            |q| quantile(&self.latencies, q).map_or("-".into(), |v| format!("{:.0}", v * 1000.0));
        format!("{} / {} ms", ms(0.5), ms(0.99))
    }

    /// "N of M (x %)".
    pub fn failed_text(&self) -> String {
        format!(
            "{} of {} ({:.3} %)",
            self.failed,
            self.requests(),
            100.0 * self.failed_share()
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.task.abort();
    }
}
