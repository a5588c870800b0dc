//! The benchmark's stack, all real parts on 127.0.0.1: per arm three anvil nodes, each behind a
//! noisy HTTP proxy (a paid provider's latency, lagging replica reads, 502s, hangs and rate limit,
//! see `testkit/NOISE.md`) sharing the arm's replica node, and an HAProxy frontend and backend run
//! with the shipped `defaults` and backend options; one exporter probing every arm, one Prometheus
//! scraping every second, an actuator for the `ethrpc` and the `seed` arms, a client load per arm
//! and a record of HAProxy's view. What an arm runs is an [`ArmSpec`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use actuator::haproxy::Haproxy;
use anyhow::Context as _;
use common::config::HaproxyAddress;
use testkit::anvil::Anvil;
use testkit::fault_proxy::{FaultProxy, NoiseStats};
use testkit::haproxy::HaproxyProcess;
use testkit::metrics_engine::{Engine, MetricsEngine};
use testkit::{free_port, get_text, TempDir};
use tokio::process::{Child, Command};

use crate::arm::{backup_twin, Arm, ArmSpec, CHAIN_ID, SERVERS};
use crate::load::Load;
use crate::recorder::{Recorder, ServerSample};

/// One arm's providers and frontend.
pub struct ArmStack {
    pub arm: Arm,
    pub spec: ArmSpec,
    pub nodes: Vec<Anvil>,
    pub proxies: Vec<FaultProxy>,
    pub frontend_port: u16,
    /// Its actuator's HTTP port; `None` for HAProxy alone.
    pub actuator_port: Option<u16>,
    /// The nodes a block or two behind that the proxies answer some reads from.
    _replica: Anvil,
}

impl ArmStack {
    async fn start(spec: ArmSpec) -> Self {
        let nodes = Anvil::start_mining_together(3, CHAIN_ID).await;
        let replica = Anvil::start(CHAIN_ID).await;
        let mut proxies = Vec::new();
        for (node, provider) in nodes.iter().zip(&spec.providers) {
            proxies.push(
                FaultProxy::start_noisy(
                    format!("127.0.0.1:{}", node.port),
                    Some(format!("127.0.0.1:{}", replica.port)),
                    provider.noise.clone(),
                )
                .await,
            );
        }
        Self {
            arm: spec.arm,
            actuator_port: (spec.arm != Arm::HaproxyOnly).then(free_port),
            spec,
            nodes,
            proxies,
            frontend_port: free_port(),
            _replica: replica,
        }
    }

    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    pub fn backend(&self) -> String {
        format!("be-{}", self.spec.name)
    }

    /// The actuator's page (what `ethrpc-actuator explain` prints); `None` for HAProxy alone or
    /// when it does not answer.
    pub async fn explain(&self) -> Option<String> {
        get_text(&format!("http://127.0.0.1:{}/", self.actuator_port?)).await
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
                method_errors: a.method_errors + b.method_errors,
            })
    }
}

/// The whole stack; every process stops on drop.
pub struct Stack {
    pub arms: Vec<ArmStack>,
    /// One client load per arm, in `arms` order.
    pub loads: Vec<Load>,
    pub recorder: Recorder,
    // Held so that these processes and files live as long as the stack.
    _haproxy_process: HaproxyProcess,
    _engines: Vec<MetricsEngine>,
    _exporter: Child,
    /// Each actuated arm's actuator, with the file stem of its config and log.
    actuators: Vec<(Arm, String, Child)>,
    dir: TempDir,
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
    std::fs::write(dir.join(format!("{stem}.toml")), config)?;
    start(dir, name, stem)
}

/// Starts binary `name` with `dir/STEM.toml`, appending to `dir/STEM.log`; killed on drop.
fn start(dir: &Path, name: &str, stem: &str) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{stem}.log")))?;
    Ok(Command::new(binary(name))
        .arg("--config")
        .arg(dir.join(format!("{stem}.toml")))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()?)
}

/// The shipped backend's options (balance, health check, server defaults): the lines of
/// `deploy/local/haproxy.cfg`'s `backend rpc-backend` but its comments and servers.
pub fn shipped_backend_options() -> anyhow::Result<String> {
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
        let backend = a.backend();
        text.push_str(&format!(
            "frontend fe-{name}\n  bind 127.0.0.1:{port}\n  default_backend {backend}\nbackend {backend}\n{options}",
            name = a.name(),
            port = a.frontend_port,
        ));
        for line in a.spec.backend_options.lines() {
            text.push_str(&format!("  {}\n", line.trim()));
        }
        for (i, ((server, proxy), provider)) in SERVERS
            .iter()
            .zip(&a.proxies)
            .zip(&a.spec.providers)
            .enumerate()
        {
            let disabled = if i < a.spec.pool { "" } else { " disabled" };
            text.push_str(&format!(
                "  server {server} 127.0.0.1:{}{disabled}\n",
                proxy.port
            ));
            if provider.backup_twin {
                text.push_str(&format!(
                    "  server {} 127.0.0.1:{} backup\n",
                    backup_twin(server),
                    proxy.port
                ));
            }
        }
    }
    text
}

fn chain_section(a: &ArmStack, policy: &str) -> String {
    let mut text = format!(
        "[[chain]]\nname = \"{name}\"\nchain_id = {CHAIN_ID}\nbackend = \"{backend}\"\n{policy}",
        name = a.name(),
        backend = a.backend()
    );
    for ((server, proxy), provider) in a.spec.pooled(&a.proxies) {
        text.push_str(&format!(
            "[[chain.provider]]\nname = \"{server}\"\nurl = \"{}\"\ntier = {}\n",
            proxy.url(),
            provider.tier
        ));
        if let Some(rps) = provider.max_rps {
            text.push_str(&format!("max_rps = {rps}\n"));
        }
    }
    text
}

const EXPORTER: &str = "[exporter]\nprobe_interval = \"1s\"\nprobe_timeout = \"2s\"\n";

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
    /// Starts the [standard](ArmSpec::standard) arms and everything around them, a client load
    /// of `rate` requests/s per arm, and waits until every arm is in service.
    pub async fn start(arms: &[Arm], rate: u32) -> anyhow::Result<Self> {
        Self::start_specs(arms.iter().map(|a| ArmSpec::standard(*a)).collect(), rate).await
    }

    /// Starts `specs`' arms and everything around them, a client load of `rate` requests/s per
    /// arm, and waits until every arm is in service.
    pub async fn start_specs(specs: Vec<ArmSpec>, rate: u32) -> anyhow::Result<Self> {
        let dir = TempDir::new("bench");
        let mut stacks = Vec::new();
        for spec in specs {
            stacks.push(ArmStack::start(spec).await);
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

        let mut targets = vec![("ethrpc-exporter", format!("127.0.0.1:{exporter_port}"))];
        targets.extend(
            stacks
                .iter()
                .filter_map(|a| a.actuator_port)
                .map(|port| ("ethrpc-actuator", format!("127.0.0.1:{port}"))),
        );
        // One engine of each kind the arms query, all scraping the same targets.
        let mut engines: Vec<MetricsEngine> = Vec::new();
        for a in &stacks {
            if engines.iter().all(|e| e.engine != a.spec.engine) {
                engines.push(MetricsEngine::start_engine(a.spec.engine, &targets, &[]).await);
            }
        }
        let engine_url = |engine: Engine| {
            engines
                .iter()
                .find(|e| e.engine == engine)
                .map(MetricsEngine::url)
                .unwrap_or_default()
        };

        let mut actuators = Vec::new();
        for a in &stacks {
            let Some(port) = a.actuator_port else {
                continue;
            };
            let (interval, policy, extra) = match a.arm {
                Arm::Seed => ("60s", SEED_POLICY, SEED_QUERIES),
                _ => ("1s", a.spec.policy.as_str(), a.spec.actuator),
            };
            let text = format!(
                "{EXPORTER}[actuator]\nprometheus_url = \"{}\"\nhaproxy = \"unix:{}\"\ninterval = \"{interval}\"\nlisten = \"127.0.0.1:{port}\"\n{extra}{}",
                engine_url(a.spec.engine),
                haproxy_process.admin_socket.display(),
                chain_section(a, policy)
            );
            let stem = format!("actuator-{}", a.name());
            let child = spawn(dir.path(), "ethrpc-actuator", &stem, &text)?;
            actuators.push((a.arm, stem, child));
        }
        let stack = Self {
            loads: stacks
                .iter()
                .map(|a| Load::start(a.frontend_port, rate, a.spec.client_method))
                .collect(),
            recorder: Recorder::start(haproxy, stacks.iter().map(ArmStack::backend).collect()),
            arms: stacks,
            _haproxy_process: haproxy_process,
            _engines: engines,
            _exporter: exporter,
            actuators,
            dir,
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

    /// Every primary (tier 1) of every arm in rotation, and each ethrpc actuator judging all of
    /// its servers healthy (not ejected, readmitting or in slow start) or standing by.
    async fn in_service(&self) -> bool {
        let Some(weights) = self.weights() else {
            return false;
        };
        for (a, weights) in self.arms.iter().zip(&weights) {
            let primaries = a.spec.providers.iter().zip(weights).take(a.spec.pool);
            if primaries.filter(|(p, _)| p.tier == 1).any(|(_, w)| *w == 0) {
                return false;
            }
            if a.arm == Arm::Ethrpc {
                let settled =
                    |p: &str| p.matches(" healthy ").count() + p.matches(" standby ").count();
                if a.explain().await.is_none_or(|p| settled(&p) != a.spec.pool) {
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

    /// Kills `arm`'s actuator (as an OOM kill or a rollout would) and starts it again with the
    /// same config; returns once the new process runs.
    pub async fn restart_actuator(&mut self, arm: Arm) -> anyhow::Result<()> {
        let dir = self.dir.path().to_owned();
        let (_, stem, child) = self
            .actuators
            .iter_mut()
            .find(|(a, _, _)| *a == arm)
            .context("that arm has no actuator")?;
        child.kill().await?;
        *child = start(&dir, "ethrpc-actuator", stem)?;
        Ok(())
    }

    /// `ethrpc_actuator_weight_writes_total` per server (in [`SERVERS`] order) of an actuated
    /// arm; `None` for HAProxy alone.
    pub async fn weight_writes(&self, arm: Arm) -> Option<[f64; 3]> {
        let port = self.arms.iter().find(|a| a.arm == arm)?.actuator_port?;
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
