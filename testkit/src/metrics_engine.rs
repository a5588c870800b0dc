//! A real metrics engine on 127.0.0.1 scraping given targets every second, with its data in a
//! private temp dir; killed on drop. Prometheus (Debian's `prometheus`) or VictoriaMetrics
//! single-node (Debian's `victoria-metrics`): both read the same `scrape_configs` and serve the
//! same query API, so the tests run the actuator unchanged over either. What differs (binary,
//! flags, readiness path) is in [`Engine`]; writing the config, starting, polling readiness and
//! stopping are shared.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{free_port, get_text, wait_for, TempDir};

/// Which engine, with what it is started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Prometheus,
    /// `latency_offset` is `-search.latencyOffset`: how far behind the query time the engine
    /// evaluates (its default, 30 s, hides the newest samples; `None` keeps the default).
    VictoriaMetrics {
        latency_offset: Option<Duration>,
    },
}

impl Engine {
    /// Its name in logs and panics.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Prometheus => "Prometheus",
            Engine::VictoriaMetrics { .. } => "VictoriaMetrics",
        }
    }

    fn binary(self) -> &'static str {
        match self {
            Engine::Prometheus => "prometheus",
            Engine::VictoriaMetrics { .. } => "victoria-metrics",
        }
    }

    /// Polled until it answers 2xx.
    fn readiness_path(self) -> &'static str {
        match self {
            Engine::Prometheus => "/-/ready",
            Engine::VictoriaMetrics { .. } => "/health",
        }
    }

    fn args(self, config: &str, data: &str, port: u16) -> Vec<String> {
        match self {
            Engine::Prometheus => vec![
                format!("--config.file={config}"),
                format!("--storage.tsdb.path={data}"),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ],
            Engine::VictoriaMetrics { latency_offset } => {
                let mut args = vec![
                    format!("-promscrape.config={config}"),
                    format!("-storageDataPath={data}"),
                    format!("-httpListenAddr=127.0.0.1:{port}"),
                ];
                if let Some(offset) = latency_offset {
                    args.push(format!("-search.latencyOffset={}ms", offset.as_millis()));
                }
                args
            }
        }
    }
}

/// A running engine; killed on drop.
pub struct MetricsEngine {
    pub engine: Engine,
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
}

/// The scrape config: `targets` (job name, `host:port`) every second, and `rule_files`
/// (Prometheus only: VictoriaMetrics evaluates rules in a separate `vmalert`).
fn scrape_config(engine: Engine, targets: &[(&str, String)], rule_files: &[String]) -> String {
    let mut config = String::from("global:\n  scrape_interval: 1s\n");
    if engine == Engine::Prometheus {
        config.push_str("  evaluation_interval: 1s\n");
    }
    config.push_str("scrape_configs:\n");
    let mut jobs: Vec<(&str, Vec<&str>)> = Vec::new();
    for (job, target) in targets {
        match jobs.iter_mut().find(|(j, _)| j == job) {
            Some((_, list)) => list.push(target),
            None => jobs.push((job, vec![target])),
        }
    }
    for (job, list) in jobs {
        let quoted: Vec<String> = list.iter().map(|t| format!("'{t}'")).collect();
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
            quoted.join(", ")
        ));
    }
    if !rule_files.is_empty() {
        assert_eq!(
            engine,
            Engine::Prometheus,
            "rule files need Prometheus (VictoriaMetrics evaluates rules in vmalert)"
        );
        config.push_str("rule_files:\n");
        for file in rule_files {
            config.push_str(&format!("  - '{file}'\n"));
        }
    }
    config
}

impl MetricsEngine {
    /// Starts Prometheus scraping `targets` (job name, `host:port`) every second, with extra
    /// `rule_files`, and waits until it is ready.
    pub async fn start(targets: &[(&str, String)], rule_files: &[String]) -> Self {
        Self::start_engine(Engine::Prometheus, targets, rule_files).await
    }

    /// Starts `engine` scraping `targets` every second and waits until it is ready.
    pub async fn start_engine(
        engine: Engine,
        targets: &[(&str, String)],
        rule_files: &[String],
    ) -> Self {
        let dir = TempDir::new(engine.binary());
        std::fs::write(
            dir.path().join("scrape.yml"),
            scrape_config(engine, targets, rule_files),
        )
        .expect("write scrape.yml");
        let mut process = Self {
            engine,
            port: free_port(),
            dir,
            child: None,
        };
        process.launch().await;
        process
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let d = self.dir.path();
        let log = d.join("engine.log");
        let args = self.engine.args(
            &d.join("scrape.yml").display().to_string(),
            &d.join("data").display().to_string(),
            self.port,
        );
        let name = self.engine.name();
        let child = Command::new(self.engine.binary())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({e}); run ./scripts/setup"));
        self.child = Some(child);
        let ready = format!("{}{}", self.url(), self.engine.readiness_path());
        let child = &mut self.child;
        wait_for(
            &format!("{name} to be ready"),
            Duration::from_secs(60),
            || {
                if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("{name} exited ({status}):\n{log}");
                }
                get_text(&ready)
            },
        )
        .await;
    }

    /// Kills the engine (its port then refuses connections).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }

    /// Starts it again on the same port and data.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }
}
