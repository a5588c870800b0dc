//! What the exporter and the actuator cost at 10, 100 and 1000 providers: the exporter probes a
//! fast local JSON-RPC responder (a fake is right here: this measures the exporter itself), and
//! the actuator drives a real HAProxy from a real Prometheus scraping that exporter.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actuator::cycle::{Actuator, Mode};
use actuator::metrics::Stage;
use common::config::Config;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use testkit::haproxy::HaproxyProcess;
use testkit::prometheus::PrometheusProcess;
use testkit::{free_port, get_text, wait_for, TempDir};

use crate::local_server::{request_body, LocalServer};
use crate::stack::spawn;
use crate::stats::quantile;

const PER_CHAIN: usize = 100;
const INTERVAL: Duration = Duration::from_secs(1);

/// Answers every provider at once and records when each probe arrived.
struct Responder {
    server: LocalServer,
    arrivals: Arc<Mutex<Vec<(usize, Instant)>>>,
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    arrivals: Arc<Mutex<Vec<(usize, Instant)>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    let provider = req
        .uri()
        .path()
        .trim_start_matches("/p")
        .parse()
        .unwrap_or(usize::MAX);
    let body = request_body(req).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let reply = if body.windows(11).any(|w| w == b"eth_chainId") {
        r#"{"jsonrpc":"2.0","id":1,"result":"0x7a69"}"#.to_owned()
    } else {
        arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((provider, arrived));
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"number":"{now:#x}","timestamp":"{now:#x}","hash":"0x{}"}}}}"#,
            "ab".repeat(32)
        )
    };
    Ok(Response::new(Full::new(Bytes::from(reply))))
}

impl Responder {
    async fn start() -> anyhow::Result<Self> {
        let arrivals: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
        let recorded = arrivals.clone();
        let server = LocalServer::start(move |req| answer(req, recorded.clone())).await?;
        Ok(Self { server, arrivals })
    }

    fn take(&self) -> Vec<(usize, Instant)> {
        std::mem::take(&mut *self.arrivals.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The config for `n` providers in chains of 100, one HAProxy backend per chain.
fn config_text(n: usize, responder: u16, listen: u16, actuator: &str) -> String {
    let mut text = format!(
        "[exporter]\nlisten = \"127.0.0.1:{listen}\"\nprobe_interval = \"1s\"\nprobe_timeout = \"2s\"\n{actuator}"
    );
    for c in 0..n.div_ceil(PER_CHAIN) {
        text.push_str(&format!(
            "[[chain]]\nname = \"c{c}\"\nchain_id = 31337\nbackend = \"b{c}\"\n"
        ));
        for p in (c * PER_CHAIN)..n.min((c + 1) * PER_CHAIN) {
            text.push_str(&format!("[[chain.provider]]\nname = \"p{p}\"\nurl = \"http://127.0.0.1:{responder}/p{p}\"\n"));
        }
    }
    text
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The exporter's cost at one size.
#[derive(Debug, Clone)]
pub struct ExporterCost {
    /// Peak RSS before `/metrics` was ever requested: probing alone.
    pub rss_before_scrape_mib: f64,
    pub series: usize,
    pub body_kib: f64,
    pub cpu_percent: f64,
    pub peak_rss_mib: f64,
    pub render_ms_p50: f64,
    pub render_ms_max: f64,
    pub jitter_ms_p99: f64,
    pub probes_per_second: f64,
}

/// The actuator's cost at one size.
#[derive(Debug, Clone)]
pub struct ActuatorCost {
    /// (stage, first cycle ms, steady median ms)
    pub stages: Vec<(&'static str, f64, f64)>,
    pub peak_rss_mib: f64,
}

/// Lateness of each probe against its chain's round schedule: rounds are `INTERVAL` apart from
/// the chain's first probe in the window.
fn jitter_p99_ms(arrivals: &[(usize, Instant)]) -> f64 {
    let mut by_chain: std::collections::BTreeMap<usize, Vec<Instant>> = Default::default();
    for (p, t) in arrivals {
        by_chain.entry(p / PER_CHAIN).or_default().push(*t);
    }
    let mut lateness = Vec::new();
    for times in by_chain.values_mut() {
        times.sort();
        let first = times[0];
        for t in times.iter() {
            let since = t.duration_since(first).as_secs_f64();
            // The nearest round: a probe a hair early must not count as a whole interval late.
            let round = (since / INTERVAL.as_secs_f64()).round();
            lateness.push(1000.0 * (since - round * INTERVAL.as_secs_f64()).max(0.0));
        }
    }
    quantile(&lateness, 0.99).unwrap_or(f64::NAN)
}

/// Measures both at `n` providers/servers over `measure`.
pub async fn measure(n: usize, measure: Duration) -> anyhow::Result<(ExporterCost, ActuatorCost)> {
    let dir = TempDir::new("cost");
    let responder = Responder::start().await?;
    let exporter_port = free_port();
    let exporter_text = config_text(n, responder.server.port, exporter_port, "");
    let exporter = spawn(dir.path(), "ethrpc-exporter", "exporter", &exporter_text)?;
    let pid = exporter.id().unwrap_or(0);
    let base = format!("http://127.0.0.1:{exporter_port}");
    let readyz = format!("{base}/readyz");
    wait_for("the exporter to be ready", Duration::from_secs(60), || {
        get_text(&readyz)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    responder.take();
    let ticks0 = cpu_ticks(pid).unwrap_or(0);
    let t0 = Instant::now();
    tokio::time::sleep(measure).await;
    let cpu_percent = 100.0 * (cpu_ticks(pid).unwrap_or(0) - ticks0) as f64
        / clock_ticks()
        / t0.elapsed().as_secs_f64();
    let arrivals = responder.take();
    let probes_per_second = arrivals.len() as f64 / t0.elapsed().as_secs_f64();
    let rss_before_scrape_mib = peak_rss_mib(pid).unwrap_or(f64::NAN);
    let mut render = Vec::new();
    let client = reqwest::Client::new();
    let mut body = String::new();
    for _ in 0..20 {
        let started = Instant::now();
        body = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        render.push(1000.0 * started.elapsed().as_secs_f64());
        anyhow::ensure!(body.contains("ethrpc_up"), "no metrics");
    }
    let exporter_cost = ExporterCost {
        rss_before_scrape_mib,
        series: body.lines().filter(|l| !l.starts_with('#')).count(),
        body_kib: body.len() as f64 / 1024.0,
        cpu_percent,
        peak_rss_mib: peak_rss_mib(pid).unwrap_or(f64::NAN),
        render_ms_p50: quantile(&render, 0.5).unwrap_or(f64::NAN),
        render_ms_max: quantile(&render, 1.0).unwrap_or(f64::NAN),
        jitter_ms_p99: jitter_p99_ms(&arrivals),
        probes_per_second,
    };

    // The actuator: n servers at weight 50 in a real HAProxy, a real Prometheus scraping the exporter.
    let mut sections = String::new();
    for c in 0..n.div_ceil(PER_CHAIN) {
        sections.push_str(&format!("backend b{c}\n  balance roundrobin\n"));
        for p in (c * PER_CHAIN)..n.min((c + 1) * PER_CHAIN) {
            sections.push_str(&format!("  server p{p} 127.0.0.1:9 weight 50\n"));
        }
    }
    let haproxy = HaproxyProcess::start(&sections).await;
    let prometheus = PrometheusProcess::start(
        &[("ethrpc-exporter", format!("127.0.0.1:{exporter_port}"))],
        &[],
    )
    .await;
    let count_url = format!("{}/api/v1/query?query=count(ethrpc_up)", prometheus.url());
    wait_for(
        "Prometheus to hold every provider",
        Duration::from_secs(60),
        || async {
            let text = get_text(&count_url).await?;
            text.contains(&format!("\"{n}\"")).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await; // fill the signal window
    let actuator_section = format!(
        "[actuator]\nprometheus_url = \"{}\"\nhaproxy = \"unix:{}\"\ninterval = \"1s\"\nlisten = \"127.0.0.1:{}\"\n",
        prometheus.url(),
        haproxy.admin_socket.display(),
        free_port()
    );
    let actuator_text = config_text(n, responder.server.port, exporter_port, &actuator_section);
    let config = Config::parse(Path::new("actuator.toml"), &actuator_text, |_| None)?;
    let actuator = Actuator::new(config)?;
    let mut cycles: Vec<Vec<f64>> = Vec::new();
    for _ in 0..11 {
        actuator.cycle(Mode::Apply).await?;
        cycles.push(
            Stage::ALL
                .iter()
                .map(|s| {
                    1000.0
                        * actuator
                            .metrics
                            .stage_duration(*s)
                            .get()
                            .unwrap_or(f64::NAN)
                })
                .collect(),
        );
    }
    let stages = Stage::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let steady: Vec<f64> = cycles[1..].iter().map(|c| c[i]).collect();
            (
                s.as_str(),
                cycles[0][i],
                quantile(&steady, 0.5).unwrap_or(f64::NAN),
            )
        })
        .collect();
    let binary = spawn(dir.path(), "ethrpc-actuator", "actuator", &actuator_text)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let actuator_cost = ActuatorCost {
        stages,
        peak_rss_mib: peak_rss_mib(binary.id().unwrap_or(0)).unwrap_or(f64::NAN),
    };
    drop((binary, exporter));
    Ok((exporter_cost, actuator_cost))
}
