//! A real Prometheus (Debian's `prometheus`) on 127.0.0.1 scraping given targets every second,
//! with its data in a private temp dir; killed on drop.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{free_port, get_text, wait_for, TempDir};

pub struct PrometheusProcess {
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
}

impl PrometheusProcess {
    /// Starts Prometheus scraping `targets` (job name, `host:port`) every second, with extra
    /// `rule_files`, and waits until it is ready.
    pub async fn start(targets: &[(&str, String)], rule_files: &[String]) -> Self {
        let dir = TempDir::new("prometheus");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
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
            config.push_str("rule_files:\n");
            for file in rule_files {
                config.push_str(&format!("  - '{file}'\n"));
            }
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write prometheus.yml");
        let mut process = Self {
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
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                d.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", d.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(d.join("prometheus.log")).expect("log file"),
            ))
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus is not installed; run ./scripts/setup");
        self.child = Some(child);
        let ready = format!("{}/-/ready", self.url());
        let log = d.join("prometheus.log");
        let child = &mut self.child;
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("Prometheus exited ({status}):\n{log}");
            }
            get_text(&ready)
        })
        .await;
    }

    /// Kills Prometheus (its port then refuses connections).
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
