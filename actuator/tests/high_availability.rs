//! High availability on real parts: two exporters scraped by one Prometheus (with the shipped
//! alert rules), two HAProxy instances each with its own actuator. Losing one exporter changes no
//! weight and raises no provider alert; both HAProxy instances converge on the same weights after a
//! fault and after the recovery; a Prometheus restart in the middle of a fault holds the weights.

use std::path::Path;
use std::time::{Duration, Instant};

use actuator::cycle::Mode;
use actuator::RunOptions;
use common::config::Config;
use testkit::anvil::Anvil;
use testkit::haproxy::{backend, HaproxyProcess};
use testkit::prometheus::PrometheusProcess;
use testkit::{get_text, wait_for, workspace_root};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(90);
const SERVERS: [&str; 3] = ["p1", "p2", "p3"];
/// The actuators' interval.
const CYCLE: Duration = Duration::from_secs(1);

async fn weights(h: &HaproxyProcess) -> Vec<Option<u32>> {
    let mut out = Vec::new();
    for s in SERVERS {
        out.push(h.weight(&format!("rpc/{s}")).await);
    }
    out
}

/// Polls both HAProxy instances until `done` holds for each; returns when each got there.
async fn both(
    pair: &[HaproxyProcess; 2],
    what: &str,
    done: impl Fn(&[Option<u32>]) -> bool,
) -> [Instant; 2] {
    let mut when: [Option<Instant>; 2] = [None, None];
    let start = Instant::now();
    while when.iter().any(Option::is_none) {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        for (i, h) in pair.iter().enumerate() {
            if when[i].is_none() && done(&weights(h).await) {
                when[i] = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    when.map(|w| w.expect("both set"))
}

/// Provider alerts pending or firing in Prometheus.
async fn provider_alerts(prometheus: &PrometheusProcess) -> Option<String> {
    let url = format!(
        "{}/api/v1/query?query=ALERTS%7Balertname%3D~%22EthrpcProvider.*%7CEthrpcNoHealthyProvider%22%7D",
        prometheus.url()
    );
    let body = get_text(&url).await?;
    Some(body)
}

fn config_text(prometheus: &str, socket: &Path, nodes: &[Anvil]) -> String {
    let mut text = format!(
        "[exporter]\nprobe_interval = \"500ms\"\nprobe_timeout = \"2s\"\n\
         [actuator]\nprometheus_url = \"{prometheus}\"\nhaproxy = \"unix:{}\"\ninterval = \"1s\"\n\
         [policy]\nmax_block_lag = 3\nreadmit_after = 2\nslow_start = \"2s\"\nbase_ejection = \"3s\"\n\
         [[chain]]\nname = \"dev\"\nchain_id = 31337\nbackend = \"rpc\"\n",
        socket.display()
    );
    for (name, node) in SERVERS.iter().zip(nodes) {
        text.push_str(&format!(
            "[[chain.provider]]\nname = \"{name}\"\nurl = \"{}\"\n",
            node.url()
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn two_exporters_two_haproxies_and_a_prometheus_restart() {
    let nodes = Anvil::start_mining_together(3, 31337).await;
    let servers: Vec<(&str, String)> = nodes
        .iter()
        .zip(SERVERS)
        .map(|(n, s)| (s, format!("127.0.0.1:{}", n.port)))
        .collect();
    let pair = [
        HaproxyProcess::start(&backend("rpc", "roundrobin", &servers)).await,
        HaproxyProcess::start(&backend("rpc", "roundrobin", &servers)).await,
    ];
    let exporter_listeners = [
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ];
    let targets: Vec<(&str, String)> = exporter_listeners
        .iter()
        .map(|l| ("ethrpc-exporter", l.local_addr().unwrap().to_string()))
        .collect();
    let rules = workspace_root().join("alerts/ethrpc.rules.yml");
    let mut prometheus = PrometheusProcess::start(&targets, &[rules.display().to_string()]).await;

    let mut stop_exporters = Vec::new();
    for listener in exporter_listeners {
        let text = config_text(&prometheus.url(), &pair[0].admin_socket, &nodes);
        let config = Config::parse(Path::new("ha.toml"), &text, |_| None).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(exporter::run(config, listener, async {
            let _ = stopped.await;
        }));
        stop_exporters.push(stop);
    }
    let mut stop_actuators = Vec::new();
    for h in &pair {
        let text = config_text(&prometheus.url(), &h.admin_socket, &nodes);
        let config = Config::parse(Path::new("ha.toml"), &text, |_| None).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = RunOptions {
            mode: Mode::Apply,
            once: false,
        };
        tokio::spawn(actuator::run(config, options, listener, async {
            let _ = stopped.await;
        }));
        stop_actuators.push(stop);
    }
    both(&pair, "all healthy", |w| w.iter().all(|w| *w == Some(100))).await;

    // One exporter gone: the other's series carry on; no weight moves, no provider alert.
    let _ = stop_exporters.remove(0).send(());
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        for h in &pair {
            assert_eq!(weights(h).await, vec![Some(100); 3], "one exporter lost");
        }
        let alerts = provider_alerts(&prometheus).await.unwrap_or_default();
        assert!(
            alerts.contains("\"result\":[]"),
            "provider alert with one exporter gone: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A fault: both HAProxy instances take p2 out, within two cycles of each other.
    nodes[1].set_interval_mining(0).await;
    let out = both(&pair, "p2 out in both", |w| w[1] == Some(0)).await;
    let apart = out[0].max(out[1]) - out[0].min(out[1]);
    assert!(apart <= 2 * CYCLE, "converged {apart:?} apart");
    assert_eq!(weights(&pair[0]).await, weights(&pair[1]).await);
    // The alert rules are evaluated: the same query that stayed empty above now sees the fault.
    wait_for("EthrpcProviderLagging pending", WAIT, || async {
        let alerts = provider_alerts(&prometheus).await?;
        alerts.contains("EthrpcProviderLagging").then_some(())
    })
    .await;

    // Prometheus restarted in the middle of the fault: weights held while it is away.
    let held = [weights(&pair[0]).await, weights(&pair[1]).await];
    prometheus.kill().await;
    tokio::time::sleep(3 * CYCLE).await;
    assert_eq!([weights(&pair[0]).await, weights(&pair[1]).await], held);
    prometheus.restart().await;

    // Recovery: p2 catches up; both bring it back to full weight within two cycles of each other.
    let gap = nodes[2]
        .block_number()
        .await
        .saturating_sub(nodes[1].block_number().await);
    nodes[1].mine(gap + 1).await;
    nodes[1].set_interval_mining(1).await;
    let back = both(&pair, "p2 back in both", |w| {
        w.iter().all(|w| *w == Some(100))
    })
    .await;
    let apart = back[0].max(back[1]) - back[0].min(back[1]);
    assert!(apart <= 2 * CYCLE, "recovered {apart:?} apart");
    for stop in stop_actuators.into_iter().chain(stop_exporters) {
        let _ = stop.send(());
    }
}
