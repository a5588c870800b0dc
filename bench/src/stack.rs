//! The benchmark's stack, all real parts on 127.0.0.1: per arm three anvil nodes, each behind a
//! noisy HTTP proxy (a paid provider's latency, lagging replica reads, 502s, hangs and rate limit,
//! see `testkit/NOISE.md`) sharing the arm's replica node, and an HAProxy frontend and backend run
//! with the shipped `defaults` and backend options; one exporter probing every arm, one Prometheus
//! scraping every second, an actuator for the `ethrpc` and the `seed` arms, a client load per arm
//! and a record of HAProxy's view.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use actuator::haproxy::Haproxy;
use anyhow::Context as _;
use common::config::HaproxyAddress;
use testkit::anvil::Anvil;
use testkit::fault_proxy::{FaultProxy, Noise, NoiseStats};
use testkit::haproxy::HaproxyProcess;
use testkit::prometheus::PrometheusProcess;
use testkit::{free_port, get_text, TempDir};
use tokio::process::{Child, Command};

use crate::load::Load;
use crate::recorder::{Recorder, ServerSample};

pub const CHAIN_ID: u64 = 31337;
/// The provider faults are injected into.
pub const FAULTY: usize = 1;
pub const SERVERS: [&str; 3] = ["n1", "n2", "n3"];
/// The providers' median latencies, fastest first.
pub const MEDIANS_MS: [u64; 3] = [30, 60, 120];

/// One way of running HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// ethrpc's actuator with the benchmark's policy.
    Ethrpc,
    /// The actuator configured as the seed: equal weights, only block age ≥ 150 s and latency
    /// ≥ 3 s, every 60 s.
    Seed,
    /// No actuator: HAProxy and its health checks alone.
    HaproxyOnly,
}

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Arm::Ethrpc => "ethrpc",
            Arm::Seed => "seed",
            Arm::HaproxyOnly => "haproxy-only",
        }
    }

    pub fn backend(self) -> String {
        format!("be-{}", self.name())
    }
}

/// One arm's providers and frontend.
pub struct ArmStack {
    pub arm: Arm,
    pub nodes: Vec<Anvil>,
    pub proxies: Vec<FaultProxy>,
    pub frontend_port: u16,
    /// The nodes a block or two behind that the proxies answer some reads from.
    _replica: Anvil,
}

impl ArmStack {
    async fn start(arm: Arm) -> Self {
        let nodes = Anvil::start_mining_together(3, CHAIN_ID).await;
        let replica = Anvil::start(CHAIN_ID).await;
        let mut proxies = Vec::new();
        for (node, median) in nodes.iter().zip(MEDIANS_MS) {
            proxies.push(
                FaultProxy::start_noisy(
                    format!("127.0.0.1:{}", node.port),
                    Some(format!("127.0.0.1:{}", replica.port)),
                    Noise::paid_provider(Duration::from_millis(median)),
                )
                .await,
            );
        }
        Self {
            arm,
            nodes,
            proxies,
            frontend_port: free_port(),
            _replica: replica,
        }
    }

    /// What the noise did to this arm's providers so far, all three together.
    pub fn noise(&self) -> NoiseStats {
        self.proxies
            .iter()
            .map(FaultProxy::stats)
            .fold(NoiseStats::default(), |a, b| NoiseStats {
                requests: a.requests + b.requests,
                replica: a.replica + b.replica,
                errors_502: a.errors_502 + b.errors_502,
                hangs: a.hangs + b.hangs,
                rate_limited: a.rate_limited + b.rate_limited,
                flap_errors: a.flap_errors + b.flap_errors,
            })
    }
}

/// The whole stack; every process stops on drop.
pub struct Stack {
    pub arms: Vec<ArmStack>,
    pub actuator_ports: Vec<(Arm, u16)>,
    /// One client load per arm, in `arms` order.
    pub loads: Vec<Load>,
    pub recorder: Recorder,
    // Held so that these processes and files live as long as the stack.
    _haproxy_process: HaproxyProcess,
    _prometheus: PrometheusProcess,
    _exporter: Child,
    _actuators: Vec<Child>,
    _dir: TempDir,
}

/// Where the release binaries are (`$ETHRPC_BIN_DIR`, else `target/release`).
pub fn binary(name: &str) -> PathBuf {
    std::env::var_os("ETHRPC_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::workspace_root().join("target/release"))
        .join(name)
}

/// Writes `config` to `dir/STEM.toml` and starts binary `name` with it, logging to
/// `dir/STEM.log`; killed on drop.
pub fn spawn(dir: &Path, name: &str, stem: &str, config: &str) -> anyhow::Result<Child> {
    let path = dir.join(format!("{stem}.toml"));
    std::fs::write(&path, config)?;
    Ok(Command::new(binary(name))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(
            dir.join(format!("{stem}.log")),
        )?))
        .kill_on_drop(true)
        .spawn()?)
}

/// The shipped backend's options (balance, health check, server defaults): the lines of
/// `deploy/local/haproxy.cfg`'s `backend rpc-backend` but its comments and servers.
fn shipped_backend_options() -> anyhow::Result<String> {
    let path = testkit::workspace_root().join("deploy/local/haproxy.cfg");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (_, section) = text
        .split_once("\nbackend rpc-backend\n")
        .with_context(|| format!("{} has no `backend rpc-backend`", path.display()))?;
    let options: String = section
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("server "))
        .map(|l| format!("  {l}\n"))
        .collect();
    anyhow::ensure!(
        options.contains("balance"),
        "no options in {}'s backend",
        path.display()
    );
    Ok(options)
}

fn haproxy_sections(arms: &[ArmStack], options: &str) -> String {
    let mut text = String::new();
    for a in arms {
        let backend = a.arm.backend();
        text.push_str(&format!(
            "frontend fe-{name}\n  bind 127.0.0.1:{port}\n  default_backend {backend}\nbackend {backend}\n{options}",
            name = a.arm.name(),
            port = a.frontend_port,
        ));
        for (server, proxy) in SERVERS.iter().zip(&a.proxies) {
            text.push_str(&format!("  server {server} 127.0.0.1:{}\n", proxy.port));
        }
    }
    text
}

fn chain_section(a: &ArmStack, policy: &str) -> String {
    let mut text = format!(
        "[[chain]]\nname = \"{name}\"\nchain_id = {CHAIN_ID}\nbackend = \"{backend}\"\n{policy}",
        name = a.arm.name(),
        backend = a.arm.backend()
    );
    for (server, proxy) in SERVERS.iter().zip(&a.proxies) {
        text.push_str(&format!(
            "[[chain.provider]]\nname = \"{server}\"\nurl = \"{}\"\n",
            proxy.url()
        ));
    }
    text
}

const EXPORTER: &str = "[exporter]\nprobe_interval = \"1s\"\nprobe_timeout = \"2s\"\n";

/// The bench's policy for the ethrpc arm (1 s blocks).
const ETHRPC_POLICY: &str = "max_block_lag = 2\nmax_block_age = \"5s\"\n";

/// The seed, as configuration: equal weights, eject on block age ≥ 150 s or latency ≥ 3 s only
/// (up, chain id, lag and errors are queried as always-fine), no readmission delay or slow start.
const SEED_POLICY: &str = "weighting = \"equal\"\nmax_block_age = \"150s\"\nmax_latency = \"3s\"\n\
    max_block_lag = 1000000000\nmax_error_ratio = 1.0\nreadmit_after = 1\nslow_start = \"0s\"\ndeadband = 0\n";
const SEED_QUERIES: &str = "[actuator.queries]\n\
    up = \"min by (chain, provider) (ethrpc_up) * 0 + 1\"\n\
    chain_id_match = \"min by (chain, provider) (ethrpc_up) * 0 + 1\"\n\
    block_lag = \"max by (chain, provider) (ethrpc_up) * 0\"\n\
    error_ratio = \"max by (chain, provider) (ethrpc_up) * 0\"\n\
    latency = \"max by (chain, provider) (ethrpc_probe_duration_seconds)\"\n";

/// How long weights must hold still before a part starts.
const STILL: Duration = Duration::from_secs(5);

impl Stack {
    /// Starts the arms and everything around them, a client load of `rate` requests/s per arm,
    /// and waits until every arm is in service.
    pub async fn start(arms: &[Arm], rate: u32) -> anyhow::Result<Self> {
        let dir = TempDir::new("bench");
        let mut stacks = Vec::new();
        for &arm in arms {
            stacks.push(ArmStack::start(arm).await);
        }
        let haproxy_process =
            HaproxyProcess::start_shipped(&haproxy_sections(&stacks, &shipped_backend_options()?))
                .await;
        let haproxy = Haproxy::new(
            HaproxyAddress::Unix(haproxy_process.admin_socket.clone()),
            Duration::from_secs(2),
        );

        let exporter_port = free_port();
        let mut text = format!("{EXPORTER}listen = \"127.0.0.1:{exporter_port}\"\n");
        for a in &stacks {
            text.push_str(&chain_section(a, ""));
        }
        let exporter = spawn(dir.path(), "ethrpc-exporter", "exporter", &text)?;

        let actuated: Vec<(Arm, u16)> = arms
            .iter()
            .filter(|a| **a != Arm::HaproxyOnly)
            .map(|a| (*a, free_port()))
            .collect();
        let mut targets = vec![("ethrpc-exporter", format!("127.0.0.1:{exporter_port}"))];
        targets.extend(
            actuated
                .iter()
                .map(|(_, port)| ("ethrpc-actuator", format!("127.0.0.1:{port}"))),
        );
        let prometheus = PrometheusProcess::start(&targets, &[]).await;

        let mut actuators = Vec::new();
        for (arm, port) in &actuated {
            let a = stacks.iter().find(|s| s.arm == *arm).expect("arm started");
            let (interval, policy, queries) = match arm {
                Arm::Seed => ("60s", SEED_POLICY, SEED_QUERIES),
                _ => ("1s", ETHRPC_POLICY, ""),
            };
            let text = format!(
                "{EXPORTER}[actuator]\nprometheus_url = \"{}\"\nhaproxy = \"unix:{}\"\ninterval = \"{interval}\"\nlisten = \"127.0.0.1:{port}\"\n{queries}{}",
                prometheus.url(),
                haproxy_process.admin_socket.display(),
                chain_section(a, policy)
            );
            let stem = format!("actuator-{}", arm.name());
            actuators.push(spawn(dir.path(), "ethrpc-actuator", &stem, &text)?);
        }
        let stack = Self {
            loads: stacks
                .iter()
                .map(|a| Load::start(a.frontend_port, rate))
                .collect(),
            recorder: Recorder::start(haproxy, stacks.iter().map(|a| a.arm.backend()).collect()),
            arms: stacks,
            _haproxy_process: haproxy_process,
            _prometheus: prometheus,
            actuator_ports: actuated,
            _exporter: exporter,
            _actuators: actuators,
            _dir: dir,
        };
        let started = Instant::now();
        while !stack.in_service().await {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "the stack was not in service within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(stack)
    }

    /// Every arm's servers' weights as clients feel them (0 while DOWN), from the newest record.
    fn weights(&self) -> Option<Vec<[u32; 3]>> {
        let latest = self.recorder.latest()?;
        Some(
            latest
                .arms
                .iter()
                .map(|servers| servers.map(|s: ServerSample| s.effective_weight()))
                .collect(),
        )
    }

    /// Every server of every arm in rotation, and the ethrpc actuator judging all of its servers
    /// healthy (not ejected, readmitting or in slow start).
    async fn in_service(&self) -> bool {
        let Some(weights) = self.weights() else {
            return false;
        };
        if weights.iter().flatten().any(|w| *w == 0) {
            return false;
        }
        for (arm, port) in &self.actuator_ports {
            if *arm == Arm::Ethrpc {
                let page = get_text(&format!("http://127.0.0.1:{port}/")).await;
                if page.is_none_or(|p| p.matches(" healthy ").count() != SERVERS.len()) {
                    return false;
                }
            }
        }
        true
    }

    /// Waits until every arm is in service again with its weights still for 5 s (slow starts
    /// and escalations over). After `limit` it warns and returns: the part then starts from
    /// wherever the stack is, which its numbers show.
    pub async fn wait_healthy(&self, limit: Duration) {
        let started = Instant::now();
        let (mut seen, mut since) = (None, Instant::now());
        loop {
            let weights = self.weights();
            if weights != seen {
                (seen, since) = (weights, Instant::now());
            }
            if since.elapsed() >= STILL && self.in_service().await {
                return;
            }
            if started.elapsed() > limit {
                eprintln!(
                    "warning: the stack did not settle within {}s; going on",
                    limit.as_secs()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `ethrpc_actuator_weight_writes_total` per server (in [`SERVERS`] order) of an actuated
    /// arm; `None` for HAProxy alone.
    pub async fn weight_writes(&self, arm: Arm) -> Option<[f64; 3]> {
        let (_, port) = self.actuator_ports.iter().find(|(a, _)| *a == arm)?;
        let text = get_text(&format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap_or_default();
        Some(SERVERS.map(|server| {
            testkit::metrics_text::sample(
                &text,
                "ethrpc_actuator_weight_writes_total",
                &[("server", server)],
            )
            .unwrap_or(0.0)
        }))
    }
}
