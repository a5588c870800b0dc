//! A real Prometheus (Debian's `prometheus`) on 127.0.0.1 scraping given targets every second,
//! with its data in a private temp dir; killed on drop. The runner is the engine-neutral
//! [`MetricsEngine`](crate::metrics_engine::MetricsEngine); `start` starts Prometheus.

pub use crate::metrics_engine::MetricsEngine as PrometheusProcess;
