//! Per-provider probe intervals: a provider with a longer `probe_interval` is probed only in the
//! rounds it is due (and its chain id no more often), it votes for the head with its last answer
//! between its probes, and `check-config` prints what each provider costs after the config.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::config::{Config, HaproxyNeeds};
use exporter::budget::Budget;
use exporter::Exporter;
use serde_json::json;
use support::{block, listen, read_request, reply, round, unix_now, value};
use testkit::anvil::Anvil;
use testkit::metrics_text::sample;
use testkit::{free_port, get_text, wait_for};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(30);

/// Requests by provider (the first path segment) and method.
type Requests = Arc<Mutex<HashMap<(String, String), u64>>>;

/// A JSON-RPC server on which `/NAME/N` is a provider whose head is block N; it counts requests.
async fn fixed_heads() -> (u16, Requests, tokio::task::JoinHandle<()>) {
    let requests = Requests::default();
    let counted = requests.clone();
    let (port, task) = listen(move |stream| answer(stream, counted.clone())).await;
    (port, requests, task)
}

async fn answer(mut stream: TcpStream, requests: Requests) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let mut path = request.path.split('/').skip(1);
    let name = path.next().unwrap_or_default().to_owned();
    let number = path.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let method = request.body["method"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let result = match method.as_str() {
        "eth_getBlockByNumber" => block(number, unix_now()),
        _ => json!("0x1"),
    };
    *requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((name, method))
        .or_default() += 1;
    reply(&mut stream, result, None).await;
}

fn count(requests: &Requests, provider: &str, method: &str) -> u64 {
    let requests = requests.lock().unwrap_or_else(PoisonError::into_inner);
    requests
        .get(&(provider.to_owned(), method.to_owned()))
        .copied()
        .unwrap_or(0)
}

/// Config text: chain `dev` (chain id `chain_id`) probed every second, with `providers`
/// (name, URL, extra keys).
fn config_text(
    chain_id: u64,
    chain_id_interval: &str,
    providers: &[(&str, String, &str)],
) -> String {
    let mut text = format!(
        "[exporter]\nprobe_interval = \"1s\"\nprobe_timeout = \"2s\"\n\
         chain_id_interval = \"{chain_id_interval}\"\n\
         [[chain]]\nname = \"dev\"\nchain_id = {chain_id}\nbackend = \"rpc\"\n"
    );
    for (name, url, extra) in providers {
        text.push_str(&format!(
            "[[chain.provider]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n"
        ));
    }
    text
}

fn parse(text: &str) -> Config {
    Config::parse(Path::new("test.toml"), text, |_| None).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test]
async fn a_provider_not_due_is_skipped_and_votes_with_its_last_answer() {
    let (port, requests, server) = fixed_heads().await;
    let url = |name: &str, head: u64| format!("http://127.0.0.1:{port}/{name}/{head}");
    // The chain id is due on every probe of `every`; `rare`'s probes come once an hour.
    let text = config_text(
        1,
        "1s",
        &[
            ("every", url("every", 10), ""),
            ("rare", url("rare", 5), "tier = 2\nprobe_interval = \"1h\""),
        ],
    );
    let exporter = Exporter::new(&parse(&text)).unwrap();
    let head = |t: &str| sample(t, "ethrpc_chain_head_block_number", &[("chain", "dev")]);

    let first = round(&exporter, 1).await;
    assert_eq!(head(&first), Some(5.0), "two that disagree: the lower");

    let mut last = String::new();
    for id in 2..=4 {
        last = round(&exporter, id).await;
    }
    // Its last answer is as fresh as the other's (the blocks never move here, so no pace is
    // known to project it by): it still votes, and of two that disagree the lower is the head.
    assert_eq!(
        head(&last),
        Some(5.0),
        "a provider not probed votes with its last answer"
    );
    assert_eq!(value(&last, "ethrpc_probes_total", "every"), Some(4.0));
    assert_eq!(value(&last, "ethrpc_probes_total", "rare"), Some(1.0));
    for (name, expected) in [("ethrpc_up", 1.0), ("ethrpc_block_lag", 0.0)] {
        assert_eq!(
            value(&last, name, "rare"),
            Some(expected),
            "{name}: skipped is neither failed nor judged against a head it was not probed in"
        );
    }
    assert_eq!(
        value(&last, "ethrpc_probe_consecutive_failures", "rare"),
        Some(0.0)
    );
    assert_eq!(count(&requests, "every", "eth_getBlockByNumber"), 4);
    assert_eq!(count(&requests, "every", "eth_chainId"), 4);
    assert_eq!(count(&requests, "rare", "eth_getBlockByNumber"), 1);
    assert_eq!(
        count(&requests, "rare", "eth_chainId"),
        1,
        "no chain-id check without a probe, though chain_id_interval is 1 s"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_second_provider_is_probed_a_third_as_often_and_the_head_follows_the_other() {
    let nodes = Anvil::start_mining_together(2, 31337).await;
    let text = config_text(
        31337,
        "5m",
        &[
            ("every", nodes[0].url(), ""),
            (
                "reserve",
                nodes[1].url(),
                "tier = 2\nprobe_interval = \"3s\"",
            ),
        ],
    );
    let listener = TcpListener::bind(("127.0.0.1", free_port())).await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let running = tokio::spawn(exporter::run(
        parse(&text),
        listener,
        std::future::pending(),
    ));
    let probes = |t: &str, p: &str| value(t, "ethrpc_probes_total", p).unwrap_or(0.0);

    let start = wait_for("both probed once", WAIT, || async {
        let t = get_text(&metrics_url).await?;
        let counts = (probes(&t, "every"), probes(&t, "reserve"));
        (counts.0 >= 1.0 && counts.1 >= 1.0).then_some(counts)
    })
    .await;
    // (chain head, `every`'s block) at each look while 15 more rounds run.
    let seen = Mutex::new(Vec::new());
    let end = wait_for("15 more rounds", WAIT, || async {
        let t = get_text(&metrics_url).await?;
        let head = sample(&t, "ethrpc_chain_head_block_number", &[("chain", "dev")]);
        let block = value(&t, "ethrpc_block_number", "every");
        seen.lock().unwrap().push((head?, block?));
        assert_eq!(value(&t, "ethrpc_up", "reserve"), Some(1.0), "{t}");
        let counts = (probes(&t, "every"), probes(&t, "reserve"));
        (counts.0 >= start.0 + 15.0).then_some(counts)
    })
    .await;
    running.abort();

    let every = end.0 - start.0;
    let reserve = end.1 - start.1;
    assert!(
        (every / 3.0 - reserve).abs() <= 2.0,
        "reserve probed {reserve} times while every was probed {every} times"
    );
    let seen = seen.into_inner().unwrap();
    assert!(seen.len() >= 10, "{seen:?}");
    // A head held at the reserve's last answer would trail `every` for most of the 3 s between
    // the reserve's probes (tens of looks 100 ms apart). `every`'s block is published when its
    // probe ends and the head when the round does, so one look between the two may see a
    // block ahead of the head by two on a loaded machine; three looks in a row may not.
    let mut trailing = 0;
    for (head, block) in &seen {
        trailing = if head + 1.0 < *block { trailing + 1 } else { 0 };
        assert!(
            trailing < 3,
            "the head must follow `every` between the reserve's probes: {seen:?}"
        );
    }
}

#[test]
fn check_config_prints_the_budget_and_the_reserves_needs_after_a_config_that_reads_back_the_same() {
    const SECRET: &str = "KEY9d41c";
    let temp = testkit::TempDir::new("check-config-budget");
    let file = temp.path().join("ethrpc.toml");
    let text = config_text(
        1,
        "5m",
        &[
            (
                "primary",
                format!("https://primary.example/v3/{SECRET}"),
                "",
            ),
            (
                "reserve",
                format!("https://reserve.example/{SECRET}"),
                "tier = 2\nprobe_interval = \"1m\"",
            ),
        ],
    )
    .replace("probe_interval = \"1s\"", "probe_interval = \"2s\"");
    std::fs::write(&file, text).unwrap();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ethrpc-exporter"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(!printed.contains(SECRET), "{printed}");

    let again = parse(&printed);
    let (config, budget) = printed
        .split_once("\n# Probe budget")
        .unwrap_or_else(|| panic!("no budget in {printed}"));
    assert_eq!(
        config.trim_end(),
        again.to_string().trim_end(),
        "the config part reads back as itself"
    );
    let (budget, needs) = budget
        .split_once("\n# Reserve:")
        .unwrap_or_else(|| panic!("no note on the reserve in {budget}"));
    assert_eq!(
        format!("# Probe budget{budget}\n"),
        Budget::of(&again).to_string()
    );
    assert_eq!(
        format!("# Reserve:{needs}"),
        HaproxyNeeds(&again).to_string()
    );
    assert!(
        needs.contains("server reserve-backup <reserve's address> backup")
            && !needs.contains("server primary"),
        "the recipe for the reserve alone: {needs}"
    );
    assert!(
        needs.contains("Counting what clients got"),
        "the backend's counting lines: {needs}"
    );
    let row = |name: &str| {
        budget
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row {name} in {budget}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row("primary"), "# dev primary 1 2s 43 488 1.30 M");
    assert_eq!(row("reserve"), "# dev reserve 2 1m 1 728 51 840");
    assert_eq!(row("total"), "# total 45 216 1.36 M");
}
