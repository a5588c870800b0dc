//! The failover benchmark's stack, all real parts on 127.0.0.1: per arm three anvil nodes (each
//! behind a fault proxy) and an HAProxy frontend and backend; one exporter probing every arm, one
//! Prometheus scraping every second, and an actuator for the `ethrpc` and the `seed` arms.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use actuator::haproxy::{BackendStat, Haproxy};
use common::config::HaproxyAddress;
use testkit::anvil::Anvil;
use testkit::fault_proxy::FaultProxy;
use testkit::haproxy::HaproxyProcess;
use testkit::prometheus::PrometheusProcess;
use testkit::{free_port, get_text, wait_for, TempDir};
use tokio::process::{Child, Command};

pub const CHAIN_ID: u64 = 31337;
/// The provider faults are injected into.
pub const FAULTY: usize = 1;
pub const SERVERS: [&str; 3] = ["n1", "n2", "n3"];

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
}

/// The whole stack; every process stops on drop.
pub struct Stack {
    pub arms: Vec<ArmStack>,
    pub haproxy: Haproxy,
    pub actuator_ports: Vec<(Arm, u16)>,
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

fn haproxy_sections(arms: &[ArmStack]) -> String {
    let mut text = String::new();
    for a in arms {
        let backend = a.arm.backend();
        text.push_str(&format!(
            "frontend fe-{name}\n  bind 127.0.0.1:{port}\n  default_backend {backend}\n\
             backend {backend}\n  balance roundrobin\n  option httpchk\n  \
             http-check send meth POST uri / ver HTTP/1.1 hdr Host localhost hdr Content-Type application/json body \"{{\\\"jsonrpc\\\":\\\"2.0\\\",\\\"id\\\":1,\\\"method\\\":\\\"eth_blockNumber\\\",\\\"params\\\":[]}}\"\n  \
             http-check expect status 200\n  default-server check inter 2s fall 2 rise 2 weight 100\n",
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

impl Stack {
    /// Starts the arms and everything around them, and waits until every arm is healthy.
    pub async fn start(arms: &[Arm]) -> anyhow::Result<Self> {
        let dir = TempDir::new("bench");
        let mut stacks = Vec::new();
        for &arm in arms {
            let nodes = Anvil::start_mining_together(3, CHAIN_ID).await;
            let mut proxies = Vec::new();
            for node in &nodes {
                proxies.push(FaultProxy::start(format!("127.0.0.1:{}", node.port)).await);
            }
            stacks.push(ArmStack {
                arm,
                nodes,
                proxies,
                frontend_port: free_port(),
            });
        }
        let haproxy_process = HaproxyProcess::start(&haproxy_sections(&stacks)).await;
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
            arms: stacks,
            haproxy,
            _haproxy_process: haproxy_process,
            _prometheus: prometheus,
            actuator_ports: actuated,
            _exporter: exporter,
            _actuators: actuators,
            _dir: dir,
        };
        stack.wait_healthy(Duration::from_secs(120)).await;
        Ok(stack)
    }

    /// HAProxy's view of every arm's backend.
    pub async fn backends(&self) -> Vec<(Arm, BackendStat)> {
        let stat = self.haproxy.show_stat().await.unwrap_or_default();
        self.arms
            .iter()
            .map(|a| {
                (
                    a.arm,
                    stat.get(&a.arm.backend()).cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Waits until every server of every arm is at full weight and UP, and the ethrpc actuator
    /// judges all its servers healthy.
    pub async fn wait_healthy(&self, limit: Duration) {
        wait_for("every arm healthy at full weight", limit, || async {
            for (_, b) in self.backends().await {
                let all = SERVERS.iter().all(|s| {
                    b.servers
                        .get(*s)
                        .is_some_and(|st| st.weight == 100 && st.status.starts_with("UP"))
                });
                if !all {
                    return None;
                }
            }
            for (arm, port) in &self.actuator_ports {
                if *arm == Arm::Ethrpc {
                    let page = get_text(&format!("http://127.0.0.1:{port}/")).await?;
                    if page.matches(" healthy ").count() != SERVERS.len() {
                        return None;
                    }
                }
            }
            Some(())
        })
        .await;
    }

    /// `ethrpc_actuator_weight_writes_total` of the faulty server, per actuated arm.
    pub async fn weight_writes(&self, arm: Arm) -> f64 {
        let Some((_, port)) = self.actuator_ports.iter().find(|(a, _)| *a == arm) else {
            return 0.0;
        };
        let text = get_text(&format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap_or_default();
        testkit::metrics_text::sample(
            &text,
            "ethrpc_actuator_weight_writes_total",
            &[("server", SERVERS[FAULTY])],
        )
        .unwrap_or(0.0)
    }
}
