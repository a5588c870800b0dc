//! The actuator against a real HAProxy and a real Prometheus that has no ethrpc data: servers
//! HAProxy lacks, or that no provider names, are reported and left alone; missing data holds
//! every weight; a query Prometheus rejects fails the cycle and writes nothing.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use actuator::cycle::{Actuator, CycleError, Mode};
use actuator::decision::Verdict;
use actuator::prometheus_api::PrometheusError;
use common::config::Config;
use testkit::haproxy::{backend, HaproxyProcess};
use testkit::metrics_text::sample;
use testkit::prometheus::PrometheusProcess;

fn config(prometheus: &str, socket: &Path, extra: &str) -> Config {
    let text = format!(
        "[actuator]\nprometheus_url = \"{prometheus}\"\nhaproxy = \"unix:{}\"\n{extra}\
         [[chain]]\nname = \"dev\"\nchain_id = 1\nbackend = \"rpc\"\n\
         [[chain.provider]]\nname = \"p1\"\nurl = \"http://127.0.0.1:1\"\n\
         [[chain.provider]]\nname = \"p2\"\nurl = \"http://127.0.0.1:2\"\n",
        socket.display()
    );
    Config::parse(Path::new("test.toml"), &text, |_| None).unwrap()
}

/// `ethrpc_actuator_server_mismatch` for `server` and `kind` in a rendered exposition.
fn mismatch(metrics: &str, server: &str, kind: &str) -> Option<f64> {
    sample(
        metrics,
        "ethrpc_actuator_server_mismatch",
        &[("server", server), ("kind", kind)],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn mismatched_servers_are_reported_and_missing_data_holds() {
    let haproxy = HaproxyProcess::start(&backend(
        "rpc",
        "roundrobin",
        &[
            ("p1", "127.0.0.1:9".into()),
            ("extra", "127.0.0.1:9".into()),
        ],
    ))
    .await;
    haproxy.admin("set weight rpc/p1 37").await;
    let prometheus = PrometheusProcess::start(&[], &[]).await;
    let actuator = Actuator::new(config(&prometheus.url(), &haproxy.admin_socket, "")).unwrap();

    let report = actuator
        .cycle(Mode::Apply)
        .await
        .expect("a cycle without data succeeds");
    let b = &report.backends[0];
    assert_eq!(b.not_configured, vec!["extra".to_owned()]);
    let p1 = &b.servers[0];
    assert!(p1.in_haproxy);
    assert_eq!(p1.verdict, Verdict::NoData);
    assert_eq!(p1.write, None, "missing data writes nothing");
    let p2 = &b.servers[1];
    assert!(!p2.in_haproxy, "p2 has no server in HAProxy");
    assert_eq!(haproxy.weight("rpc/p1").await, Some(37), "held as it was");
    assert_eq!(haproxy.weight("rpc/extra").await, Some(100), "left alone");

    let metrics = actuator.metrics.render();
    assert_eq!(mismatch(&metrics, "p2", "missing_in_haproxy"), Some(1.0));
    assert_eq!(mismatch(&metrics, "extra", "not_configured"), Some(1.0));
    assert_eq!(
        sample(&metrics, "ethrpc_actuator_weight", &[("server", "p1")]),
        Some(37.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "ethrpc_actuator_servers_without_data",
            &[("backend", "rpc")]
        ),
        Some(1.0),
        "the held server is counted"
    );

    // Once HAProxy no longer has the unconfigured server, its mismatch gauge goes back to 0.
    let reply = haproxy
        .admin("set server rpc/extra state maint; del server rpc/extra")
        .await;
    assert!(reply.contains("Server deleted"), "{reply}");
    actuator.cycle(Mode::Apply).await.expect("second cycle");
    let metrics = actuator.metrics.render();
    assert_eq!(mismatch(&metrics, "extra", "not_configured"), Some(0.0));
    assert_eq!(mismatch(&metrics, "p2", "missing_in_haproxy"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_prometheus_rejects_fails_the_cycle_and_writes_nothing() {
    let haproxy = HaproxyProcess::one_server_at(37).await;
    let prometheus = PrometheusProcess::start(&[], &[]).await;
    let broken = "[actuator.queries]\nup = \"min by (chain, provider) (ethrpc_up\"\n";
    let actuator = Actuator::new(config(&prometheus.url(), &haproxy.admin_socket, broken)).unwrap();
    match actuator.cycle(Mode::Apply).await {
        Err(CycleError::Prometheus(PrometheusError::Api { error_type, .. })) => {
            assert_eq!(error_type, "bad_data")
        }
        other => panic!("expected a bad_data error, got {other:?}"),
    }
    assert_eq!(haproxy.weight("rpc/p1").await, Some(37));
    let metrics = actuator.metrics.render();
    assert_eq!(
        sample(
            &metrics,
            "ethrpc_actuator_errors_total",
            &[("stage", "prometheus")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "ethrpc_actuator_cycles_total",
            &[("result", "prometheus_error")]
        ),
        Some(1.0)
    );
    assert!(!actuator.ready(), "not ready before a successful cycle");
}
