//! The stack the end-to-end and backtest tests share: three anvil nodes mining together, p2's
//! behind a fault proxy, a real HAProxy (plain defaults) with backend `rpc` over p1, p2 and p3,
//! and a real metrics engine (Prometheus, or another given) scraping the exporter's listener
//! every second.

use testkit::anvil::Anvil;
use testkit::fault_proxy::FaultProxy;
use testkit::haproxy::{backend, HaproxyProcess};
use testkit::metrics_engine::{Engine, MetricsEngine};
use tokio::net::TcpListener;

use super::live;

pub const SERVERS: [&str; 3] = ["p1", "p2", "p3"];

pub struct ThreeNodes {
    pub nodes: Vec<Anvil>,
    /// In front of p2's node.
    pub proxy: FaultProxy,
    pub haproxy: HaproxyProcess,
    /// The metrics engine the actuator queries.
    pub prometheus: MetricsEngine,
    /// Where the exporter must listen for Prometheus to scrape it.
    pub exporter_listener: TcpListener,
}

impl ThreeNodes {
    /// The stack with `engine` as the metrics engine.
    pub async fn start_with(engine: Engine) -> Self {
        let nodes = Anvil::start_mining_together(3, 31337).await;
        let proxy = FaultProxy::start(format!("127.0.0.1:{}", nodes[1].port)).await;
        let servers: Vec<(&str, String)> = nodes
            .iter()
            .zip(SERVERS)
            .map(|(n, s)| (s, format!("127.0.0.1:{}", n.port)))
            .collect();
        let haproxy = HaproxyProcess::start(&backend("rpc", "roundrobin", &servers)).await;
        let exporter_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let exporter_address = exporter_listener.local_addr().unwrap().to_string();
        let prometheus =
            MetricsEngine::start_engine(engine, &[("ethrpc-exporter", exporter_address)], &[])
                .await;
        Self {
            nodes,
            proxy,
            haproxy,
            prometheus,
            exporter_listener,
        }
    }

    /// The config of p1, p2 (through the proxy) and p3, with `policy` lines in `[policy]`.
    pub fn config_text(&self, policy: &str) -> String {
        live::config_text(
            &self.prometheus.url(),
            &self.haproxy.admin_socket,
            policy,
            &[
                ("p1", self.nodes[0].url(), ""),
                ("p2", self.proxy.url(), ""),
                ("p3", self.nodes[2].url(), ""),
            ],
        )
    }
}
