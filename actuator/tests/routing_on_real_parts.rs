//! Tiers, plan limits and what clients see, on real parts: three anvil nodes (p1 and p2 behind
//! fault proxies in HTTP mode, p3 direct), the exporter, a real Prometheus, a real HAProxy with the
//! shipped defaults (retries included), the shipped 429 counting and a frontend, the actuator
//! every second, and client requests through the frontend so that HAProxy's counters carry a
//! demand.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

#[path = "support/clients.rs"]
mod clients;
#[path = "support/live.rs"]
mod live;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actuator::haproxy::RESPONSE_COUNTING;
use testkit::anvil::Anvil;
use testkit::fault_proxy::{Fault, FaultProxy};
use testkit::haproxy::{backend, HaproxyProcess};
use testkit::noise::{MethodAnswer, MethodErrors, Noise};
use testkit::prometheus::PrometheusProcess;
use testkit::{free_port, get_text, wait_for, TempDir};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(60);

/// The stack; the providers' lines of `[[chain.provider]]` come from the test.
struct Stack {
    _nodes: Vec<Anvil>,
    proxies: Vec<FaultProxy>,
    haproxy: HaproxyProcess,
    _prometheus: PrometheusProcess,
    frontend: String,
    page: String,
    stop: Vec<oneshot::Sender<()>>,
    /// The actuator runs until `stop`; a failure shows in its page and the weights.
    _actuator_task: tokio::task::JoinHandle<Result<bool, actuator::cycle::ActuatorError>>,
    _dir: TempDir,
}

impl Stack {
    /// p1 and p2 behind fault proxies, p3 direct; `extra[i]` is appended to provider i's table.
    async fn start(extra: [&str; 3], policy: &str) -> Self {
        let nodes = Anvil::start_mining_together(3, 31337).await;
        let mut proxies = Vec::new();
        for node in &nodes[..2] {
            let upstream = format!("127.0.0.1:{}", node.port);
            proxies.push(FaultProxy::start_noisy(upstream, None, Noise::none()).await);
        }
        let urls = [proxies[0].url(), proxies[1].url(), nodes[2].url()];
        let addresses: Vec<String> = urls
            .iter()
            .map(|u| {
                u.trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect();
        let servers: Vec<(&str, String)> = ["p1", "p2", "p3"].into_iter().zip(addresses).collect();
        let port = free_port();
        let counting: String = RESPONSE_COUNTING.map(|l| format!("  {l}\n")).concat();
        let haproxy = HaproxyProcess::start_shipped(&format!(
            "frontend clients\n  bind 127.0.0.1:{port}\n  default_backend rpc\n{}{counting}",
            backend("rpc", "roundrobin", &servers)
        ))
        .await;
        let exporter_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let exporter_address = exporter_listener.local_addr().unwrap().to_string();
        let prometheus =
            PrometheusProcess::start(&[("ethrpc-exporter", exporter_address)], &[]).await;
        let dir = TempDir::new("routing");
        let providers: Vec<(&str, String, &str)> = ["p1", "p2", "p3"]
            .into_iter()
            .zip(urls)
            .zip(extra)
            .map(|((name, url), extra)| (name, url, extra))
            .collect();
        let text = live::config_text(&prometheus.url(), &haproxy.admin_socket, policy, &providers);
        let config = live::parse(&text);
        let stop_exporter = live::spawn_exporter(&config, exporter_listener);
        let actuator = live::spawn_actuator(config, None).await;
        let page = format!("{}/", actuator.base);
        let stop_actuator = actuator.stop;
        let actuator_task = actuator.handle;
        Self {
            _nodes: nodes,
            proxies,
            haproxy,
            _prometheus: prometheus,
            frontend: format!("http://127.0.0.1:{port}/"),
            page,
            stop: vec![stop_exporter, stop_actuator],
            _actuator_task: actuator_task,
            _dir: dir,
        }
    }

    /// Like [`start`](Self::start) with equal weighting, once all three serve at full weight.
    async fn start_serving(extra: [&str; 3]) -> Self {
        let stack = Self::start(extra, "weighting = \"equal\"").await;
        wait_for("all three serving", WAIT, || async {
            (stack.weights().await == [Some(100); 3]).then_some(())
        })
        .await;
        stack
    }

    async fn weights(&self) -> [Option<u32>; 3] {
        let mut out = [None; 3];
        for (i, w) in out.iter_mut().enumerate() {
            *w = self.haproxy.weight(&format!("rpc/p{}", i + 1)).await;
        }
        out
    }

    /// Client requests through the frontend at `per_second` until the returned flag is set.
    fn load(&self, per_second: u32) -> Arc<AtomicBool> {
        clients::load(&self.frontend, per_second)
    }

    /// `lbtot` of `server` in HAProxy.
    async fn selected(&self, server: &str) -> u64 {
        clients::selected(&self.haproxy, server).await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reserve_serves_only_while_both_primaries_are_down() {
    let stack = Stack::start(
        ["", "", "tier = 2"],
        "base_ejection = \"2s\"\nmax_ejection = \"4s\"\nreadmit_after = 2\nslow_start = \"0s\"",
    )
    .await;
    let started = Instant::now();
    wait_for(
        "tier 1 to serve and the reserve to stand by",
        WAIT,
        || async { (stack.weights().await == [Some(100), Some(100), Some(0)]).then_some(()) },
    )
    .await;
    let page = get_text(&stack.page).await.unwrap();
    assert!(page.contains("standby"), "{page}");
    assert!(
        page.contains("tier 1 serves; higher tiers stand by"),
        "{page}"
    );
    eprintln!(
        "[{:>5.1}s] reserve standing by",
        started.elapsed().as_secs_f64()
    );

    for proxy in &stack.proxies {
        proxy.set_fault(Fault::Refuse);
    }
    let down = Instant::now();
    wait_for("the reserve to carry the traffic", WAIT, || async {
        let w = stack.weights().await;
        (w[0] == Some(0) && w[1] == Some(0) && w[2].is_some_and(|w| w > 0)).then_some(())
    })
    .await;
    eprintln!(
        "both primaries down: the reserve serves {:.1} s later",
        down.elapsed().as_secs_f64()
    );
    let page = get_text(&stack.page).await.unwrap();
    eprintln!("{page}");
    assert!(page.contains("tiers up to 2 serve"), "{page}");
    assert!(
        !page.contains("FAIL OPEN"),
        "a serving reserve is no fail open: {page}"
    );

    for proxy in &stack.proxies {
        proxy.set_fault(Fault::Pass);
    }
    let recovered = Instant::now();
    wait_for(
        "the primaries back and the reserve standing by",
        WAIT,
        || async { (stack.weights().await == [Some(100), Some(100), Some(0)]).then_some(()) },
    )
    .await;
    eprintln!(
        "primaries recovered: the reserve stands by again {:.1} s later",
        recovered.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_limit_caps_what_haproxy_sends_to_the_provider() {
    let stack = Stack::start_serving(["max_rps = 4", "", ""]).await;
    let load = stack.load(30);
    let capped = wait_for("p1's weight capped under its plan", WAIT, || async {
        let w = stack.weights().await;
        match w {
            [Some(p1), Some(p2), Some(p3)] if p1 > 0 && p1 * 3 < p2.min(p3) => Some(w),
            _ => None,
        }
    })
    .await;
    eprintln!("capped weights: {capped:?}");
    let page = get_text(&stack.page).await.unwrap();
    eprintln!("{page}");
    assert!(page.contains("4.0/s"), "the limit is shown: {page}");
    // What HAProxy then sends p1, measured from its own counter over 5 s.
    let (before, at) = (stack.selected("p1").await, Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await; // a measurement window, not a wait for state
    let rate = (stack.selected("p1").await - before) as f64 / at.elapsed().as_secs_f64();
    load.store(true, Ordering::Relaxed);
    eprintln!("p1 carries {rate:.1} req/s under its 4 req/s plan, of 30 req/s");
    // The cap aims at 90 % of the plan (3.6 req/s): at the plan itself, it was not applied.
    assert!(
        rate < 4.0,
        "p1 carries {rate:.1} req/s, not under its 4 req/s plan"
    );
    assert!(
        rate > 0.5,
        "a capped provider still serves: {rate:.1} req/s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_failing_clients_while_its_probes_pass_is_ejected() {
    let stack = Stack::start_serving(["", "", ""]).await;
    let load = stack.load(30);
    // p2 answers 502 to 30 % of the clients' eth_blockNumber; the exporter's probes (eth_chainId,
    // eth_getBlockByNumber) all pass. HAProxy retries the 502s elsewhere, so clients see none.
    stack.proxies[1].set_method_errors(Some(MethodErrors::bad_gateway("eth_blockNumber", 0.3)));
    let broken = Instant::now();
    wait_for("p2 ejected on what its clients see", WAIT, || async {
        (stack.weights().await == [Some(100), Some(0), Some(100)]).then_some(())
    })
    .await;
    let out_after = broken.elapsed().as_secs_f64();
    let page = get_text(&stack.page).await.unwrap();
    eprintln!("p2 out {out_after:.1} s after it began failing clients\n{page}");
    assert!(page.contains("client_errors"), "{page}");
    // p1 and p3 took p2's retried requests and never failed: still in.
    assert_eq!(stack.weights().await, [Some(100), Some(0), Some(100)]);
    load.store(true, Ordering::Relaxed);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_400s_teach_no_limit_and_429s_do() {
    let stack = Stack::start_serving(["", "", ""]).await;
    let load = stack.load(30);
    let p1_row = |page: &str| {
        page.lines()
            .find(|l| l.trim_start().starts_with("p1 "))
            .unwrap_or_else(|| panic!("no row for p1 in {page}"))
            .to_owned()
    };
    // p1 answers 400 (a client's malformed call, as a provider sees it) to 30 % of the clients'
    // calls: no evidence of a limit, so nothing is learned and nobody moves.
    stack.proxies[0].set_method_errors(Some(MethodErrors::new(
        "eth_blockNumber",
        0.3,
        MethodAnswer::Status(400),
    )));
    let window_full = stack.selected("p1").await + 60;
    wait_for("p1 to answer 60 more client requests", WAIT, || async {
        (stack.selected("p1").await >= window_full).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await; // a signal window of 400s, not a wait for state
    let page = get_text(&stack.page).await.unwrap();
    eprintln!("after 400s:\n{page}");
    assert_eq!(stack.weights().await, [Some(100); 3], "{page}");
    assert!(
        !p1_row(&page).contains("% rate limited"),
        "a 400 is counted as no rate limit: {page}"
    );
    // The same share answered 429: a limit is learned from it and p1's weight is capped.
    stack.proxies[0].set_method_errors(Some(MethodErrors::new(
        "eth_blockNumber",
        0.3,
        MethodAnswer::Status(429),
    )));
    let capped = wait_for("p1 capped on its 429s", WAIT, || async {
        let w = stack.weights().await;
        matches!(w, [Some(p1), Some(100), Some(100)] if p1 > 0 && p1 < 100).then_some(w)
    })
    .await;
    let page = get_text(&stack.page).await.unwrap();
    eprintln!("after 429s: {capped:?}\n{page}");
    assert!(p1_row(&page).contains("% rate limited"), "{page}");
    load.store(true, Ordering::Relaxed);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_rpc_errors_inside_200s_eject_their_provider_and_reverts_eject_nobody() {
    let stack = Stack::start_serving(["", "", ""]).await;
    let load = stack.load(30);
    let row = |page: &str, server: &str| {
        page.lines()
            .find(|l| l.trim_start().starts_with(&format!("{server} ")))
            .unwrap_or_else(|| panic!("no row for {server} in {page}"))
            .to_owned()
    };
    // p1 answers `execution reverted` (in a 200) to 30 % of the calls, its peers to none: were
    // a revert counted, p1 would be out (30 % is over the gate's 25 % and its peers' 0).
    stack.proxies[0].set_method_errors(Some(MethodErrors::reverted("eth_blockNumber", 0.3)));
    let window_full = stack.selected("p1").await + 60;
    wait_for("p1 to answer 60 more client requests", WAIT, || async {
        (stack.selected("p1").await >= window_full).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await; // a signal window of reverts, not a wait for state
    let page = get_text(&stack.page).await.unwrap();
    eprintln!("after reverts:\n{page}");
    assert_eq!(stack.weights().await, [Some(100); 3], "{page}");
    assert!(!page.contains("JSON-RPC errors"), "{page}");

    // p2 answers `header not found` (in a 200) to 30 %: its own error, which its clients see
    // and its probes (other methods) do not. Out on what its clients got.
    stack.proxies[1]
        .set_method_errors(Some(MethodErrors::header_not_found("eth_blockNumber", 0.3)));
    let broken = Instant::now();
    let page = wait_for("p2 shown with JSON-RPC errors", WAIT, || async {
        let page = get_text(&stack.page).await?;
        row(&page, "p2").contains("JSON-RPC errors").then_some(page)
    })
    .await;
    eprintln!("{page}");
    wait_for("p2 ejected on its JSON-RPC errors", WAIT, || async {
        (stack.weights().await == [Some(100), Some(0), Some(100)]).then_some(())
    })
    .await;
    let out_after = broken.elapsed().as_secs_f64();
    let page = get_text(&stack.page).await.unwrap();
    eprintln!("p2 out {out_after:.1} s after it began answering header not found\n{page}");
    assert!(row(&page, "p2").contains("client_errors"), "{page}");

    // p1 answers a JSON-RPC rate limit (-32005, in a 200) to 30 %: evidence of a limit, as a
    // 429 is, so its weight is capped rather than ejected.
    stack.proxies[0].set_method_errors(Some(MethodErrors::rpc_error(
        "eth_blockNumber",
        0.3,
        -32005,
        "daily request count exceeded, request rate limited",
    )));
    let capped = wait_for("p1 capped on its JSON-RPC rate limits", WAIT, || async {
        let w = stack.weights().await;
        matches!(w, [Some(p1), Some(0), Some(100)] if p1 > 0 && p1 < 100).then_some(w)
    })
    .await;
    let page = get_text(&stack.page).await.unwrap();
    eprintln!("after JSON-RPC rate limits: {capped:?}\n{page}");
    assert!(row(&page, "p1").contains("% rate limited"), "{page}");
    load.store(true, Ordering::Relaxed);
}
