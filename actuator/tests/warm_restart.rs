//! Restarting the actuator mid-incident, on real parts: three anvil nodes (p2's behind a fault
//! proxy, for the exporter's probes and HAProxy's client requests alike), the exporter, a real
//! Prometheus scraping the exporter and the actuator every second, a real HAProxy (roundrobin)
//! with a frontend, and the actuator every second, stopped and started again on the same
//! address. The restarted actuator rebuilds its memory from its own series in Prometheus.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

#[path = "support/clients.rs"]
mod clients;
#[path = "support/live.rs"]
mod live;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actuator::prometheus_api::{PrometheusClient, QueryResult};
use common::clock::unix_now;
use common::config::Config;
use testkit::anvil::Anvil;
use testkit::fault_proxy::{Fault, FaultProxy};
use testkit::haproxy::{backend, HaproxyProcess};
use testkit::prometheus::PrometheusProcess;
use testkit::{free_port, get_text, wait_for, TempDir};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(90);

struct Stack {
    started: Instant,
    _nodes: Vec<Anvil>,
    proxy: FaultProxy,
    haproxy: HaproxyProcess,
    prometheus: PrometheusProcess,
    config: Config,
    /// The same config as a file, for the binary.
    config_path: std::path::PathBuf,
    /// Where the actuator listens, before and after a restart (Prometheus scrapes it there).
    address: SocketAddr,
    actuator: Option<live::LiveActuator>,
    frontend: String,
    stop_exporter: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

impl Stack {
    async fn start(policy: &str) -> Self {
        let started = Instant::now();
        let nodes = Anvil::start_mining_together(3, 31337).await;
        let proxy = FaultProxy::start(format!("127.0.0.1:{}", nodes[1].port)).await;
        let urls = [nodes[0].url(), proxy.url(), nodes[2].url()];
        let servers: Vec<(&str, String)> = ["p1", "p2", "p3"]
            .into_iter()
            .zip(&urls)
            .map(|(s, u)| {
                let address = u.trim_start_matches("http://").trim_end_matches('/');
                (s, address.to_owned())
            })
            .collect();
        let port = free_port();
        let haproxy = HaproxyProcess::start(&format!(
            "frontend clients\n  bind 127.0.0.1:{port}\n  default_backend rpc\n{}",
            backend("rpc", "roundrobin", &servers)
        ))
        .await;
        let exporter_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let actuator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = actuator_listener.local_addr().unwrap();
        let prometheus = PrometheusProcess::start(
            &[
                (
                    "ethrpc-exporter",
                    exporter_listener.local_addr().unwrap().to_string(),
                ),
                ("ethrpc-actuator", address.to_string()),
            ],
            &[],
        )
        .await;
        let providers: Vec<(&str, String, &str)> = ["p1", "p2", "p3"]
            .into_iter()
            .zip(urls)
            .map(|(name, url)| (name, url, ""))
            .collect();
        let text = live::config_text(&prometheus.url(), &haproxy.admin_socket, policy, &providers);
        let config = live::parse(&text);
        let dir = TempDir::new("warm-restart");
        let config_path = dir.path().join("ethrpc.toml");
        std::fs::write(&config_path, &text).unwrap();
        let stop_exporter = live::spawn_exporter(&config, exporter_listener);
        let actuator = live::spawn_actuator(config.clone(), Some(actuator_listener)).await;
        let stack = Self {
            started,
            _nodes: nodes,
            proxy,
            haproxy,
            prometheus,
            config,
            config_path,
            address,
            actuator: Some(actuator),
            frontend: format!("http://127.0.0.1:{port}/"),
            stop_exporter: Some(stop_exporter),
            _dir: dir,
        };
        let page = format!("{}/", stack.actuator.as_ref().unwrap().base);
        wait_for("the actuator to judge all three healthy", WAIT, || async {
            let page = get_text(&page).await?;
            (page.matches(" healthy ").count() == 3).then_some(())
        })
        .await;
        stack.log("stack up, all three healthy");
        stack
    }

    fn log(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    async fn p2(&self) -> Option<u32> {
        self.haproxy.weight("rpc/p2").await
    }

    /// Stops the actuator (as a rollout does: its cycle finishes, HAProxy keeps its weights) and
    /// starts a new one on the same address, with nothing in memory. Returns the Unix time.
    async fn restart(&mut self) -> f64 {
        let old = self.actuator.take().unwrap();
        old.stop.send(()).unwrap();
        assert!(old.handle.await.unwrap().is_ok());
        let address = self.address;
        let listener = wait_for("the actuator's address to be free", WAIT, || async move {
            TcpListener::bind(address).await.ok()
        })
        .await;
        let at = unix_now();
        self.actuator = Some(live::spawn_actuator(self.config.clone(), Some(listener)).await);
        self.log("actuator restarted");
        at
    }

    /// What Prometheus answers now for `promql` (one sample), if anything.
    async fn prometheus_value(&self, promql: &str) -> Option<f64> {
        let url = url::Url::parse(&self.prometheus.url()).unwrap();
        let client = PrometheusClient::new(&url, Duration::from_secs(5)).unwrap();
        match client.query(promql).await.ok()? {
            QueryResult::Vector(v) => v.first().map(|s| s.value),
            QueryResult::Scalar { .. } => None,
        }
    }

    /// `ethrpc-actuator explain --from URL`'s output.
    async fn explain(&self, from: &str) -> String {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ethrpc-actuator"))
            .arg("--config")
            .arg(&self.config_path)
            .args(["explain", "--from", from])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn stop(mut self) {
        if let Some(a) = self.actuator.take() {
            a.stop.send(()).unwrap();
            assert!(a.handle.await.unwrap().is_ok());
        }
        if let Some(stop) = self.stop_exporter.take() {
            let _ = stop.send(());
        }
    }
}

/// Polls p2's weight every 100 ms until `done` says so; returns (seconds since `since`, weight)
/// at each change, the first entry being the weight at the start.
async fn watch_p2(
    s: &Stack,
    since: f64,
    limit: Duration,
    done: impl Fn(&[(f64, u32)]) -> bool,
) -> Vec<(f64, u32)> {
    let deadline = Instant::now() + limit;
    let mut seen: Vec<(f64, u32)> = Vec::new();
    while !done(&seen) && Instant::now() < deadline {
        if let Some(w) = s.p2().await {
            if seen.last().map(|(_, last)| *last) != Some(w) {
                seen.push((unix_now() - since, w));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// `seconds:weight` pairs.
fn timeline(seen: &[(f64, u32)]) -> String {
    let shown: Vec<String> = seen.iter().map(|(t, w)| format!("{t:.1}s:{w}")).collect();
    shown.join(" ")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_during_a_hold_keeps_the_server_out_until_it_ends() {
    let mut s = Stack::start(
        "readmit_after = 2\nslow_start = \"6s\"\nbase_ejection = \"30s\"\nmax_ejection = \"300s\"",
    )
    .await;
    s.proxy.set_fault(Fault::Error);
    wait_for("p2 ejected", WAIT, || async {
        (s.p2().await == Some(0)).then_some(())
    })
    .await;
    let ejected = Instant::now();
    s.proxy.set_fault(Fault::Pass);
    s.log("p2 ejected (errors), fault cleared: a 30 s hold from its last breach");
    // The scenario of the issue: the actuator restarted 11 s after the ejection.
    tokio::time::sleep_until((ejected + Duration::from_secs(11)).into()).await;
    let returns = s
        .prometheus_value(
            "ethrpc_actuator_earliest_return_timestamp_seconds{backend=\"rpc\",server=\"p2\"}",
        )
        .await
        .expect("the hold's end, as Prometheus scraped it");
    let restart = s.restart().await;
    let hold_left = returns - restart;
    s.log(&format!("the hold ends {hold_left:.1} s after the restart"));
    let seen = watch_p2(&s, restart, WAIT, |seen| {
        seen.last().is_some_and(|(_, w)| *w == 100)
    })
    .await;
    let shown: Vec<String> = seen.iter().map(|(t, w)| format!("{t:.1}s:{w}")).collect();
    s.log(&format!(
        "p2 after the restart (seconds since the restart: weight): {}",
        shown.join(" ")
    ));
    let rebuilt = "memory rebuilt at start: 3 server(s) from the actuator's history";
    let running = s.explain(&format!("http://{}/", s.address)).await;
    assert!(
        running.starts_with("source: the running actuator at ") && running.contains(rebuilt),
        "{running}"
    );
    // Unreachable: computed here, with the memory rebuilt the same way.
    let computed = s.explain("http://127.0.0.1:1/").await;
    eprintln!("{computed}");
    assert!(
        computed.starts_with("source: computed here") && computed.contains(rebuilt),
        "{computed}"
    );
    assert_eq!(seen.first().map(|(_, w)| *w), Some(0), "{seen:?}");
    let (back_at, first) = seen[1];
    assert!(
        back_at >= hold_left - 0.5,
        "out until the hold ends ({hold_left:.1} s): {seen:?}"
    );
    assert!(
        (1..100).contains(&first),
        "back through slow start: {seen:?}"
    );
    assert!(seen[1..].windows(2).all(|w| w[0].1 < w[1].1), "{seen:?}");
    assert_eq!(seen.last().map(|(_, w)| *w), Some(100), "{seen:?}");
    s.stop().await;
}

/// Errors for `bad`, then none for `good`, `times` times.
async fn flap(proxy: &FaultProxy, bad: Duration, good: Duration, times: usize) {
    for _ in 0..times {
        proxy.set_fault(Fault::Error);
        tokio::time::sleep(bad).await;
        proxy.set_fault(Fault::Pass);
        tokio::time::sleep(good).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_flap_keeps_the_flapper_out() {
    let mut s = Stack::start(
        "readmit_after = 2\nslow_start = \"3s\"\nbase_ejection = \"5s\"\nmax_ejection = \"60s\"",
    )
    .await;
    let load = clients::load(&s.frontend, 20);
    let five = Duration::from_secs(5);
    flap(&s.proxy, five, five, 3).await;
    assert_eq!(s.p2().await, Some(0), "held out while it flaps");
    s.log("p2 flapped 5 s / 5 s three times: held out");
    // Restart in a good phase once p2 looks healthy again (held, readmitting): the first cycle
    // of a cold actuator would put it back.
    s.proxy.set_fault(Fault::Error);
    tokio::time::sleep(five).await;
    s.proxy.set_fault(Fault::Pass);
    let good_since = Instant::now();
    let page = format!("{}/", s.actuator.as_ref().unwrap().base);
    wait_for("p2 healthy again, held out", WAIT, || async {
        let page = get_text(&page).await?;
        let p2 = page.lines().find(|l| l.trim_start().starts_with("p2 "))?;
        p2.contains("readmitting").then_some(())
    })
    .await;
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for server in ["p1", "p2", "p3"] {
            v.push(clients::selected(&s.haproxy, server).await);
        }
        v
    };
    let restart = s.restart().await;
    s.log(&format!(
        "restarted {:.1} s into a good phase, p2 judged healthy",
        good_since.elapsed().as_secs_f64()
    ));
    let flapping = async {
        tokio::time::sleep_until((good_since + five).into()).await;
        flap(&s.proxy, five, five, 5).await;
    };
    // Watched until the flapping ends (five more periods after this good phase).
    let flap_end = good_since + Duration::from_secs(55);
    let (seen, ()) = tokio::join!(
        watch_p2(&s, restart, flap_end - Instant::now(), |_| false),
        flapping
    );
    load.store(true, Ordering::Relaxed);
    let mut after = Vec::new();
    for server in ["p1", "p2", "p3"] {
        after.push(clients::selected(&s.haproxy, server).await);
    }
    let sent: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: u64 = sent.iter().sum();
    let share = sent[1] as f64 / total.max(1) as f64;
    let changes = seen.len().saturating_sub(1);
    s.log(&format!(
        "after the restart, until the flapping ended: p2's weights {}, {changes} change(s); client requests p1/p2/p3 {sent:?}, p2's share {:.2} %",
        timeline(&seen),
        share * 100.0
    ));
    assert!(total > 500, "the load ran: {sent:?}");
    assert!(changes <= 1, "{seen:?}");
    assert!(share <= 0.02, "{sent:?}");
    s.stop().await;
}
