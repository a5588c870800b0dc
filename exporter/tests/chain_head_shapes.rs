//! The chain head in the shapes users run, on a scripted chain that makes blocks in real time
//! (numbers and timestamps as a real chain's): a pool of two where one stalls, three where one is
//! implausible and one stalls, a liar ahead with fresh timestamps, a majority frozen together
//! (fast blocks, and 12 s blocks frozen an hour), and a reserve probed every minute beside a
//! primary that is constantly behind. Rounds are driven by the test at the configured interval.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::config::Config;
use exporter::Exporter;
use serde_json::json;
use support::{block, errors, listen, read_request, reply, unix_now, value};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;

/// What a provider answers for the head.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// The chain's head, `behind` blocks back.
    Live { behind: u64 },
    /// The same block for ever.
    Frozen { number: u64, timestamp: u64 },
    /// The head plus `ahead`, timestamped now.
    Ahead(u64),
    /// Every other request answered by a replica `behind` blocks back (the first of each pair).
    Replica { behind: u64 },
}

/// A chain making a block every `block_time` from `start`, and its providers.
#[derive(Clone)]
struct Chain {
    start: Instant,
    start_unix: u64,
    block_time: Duration,
    providers: Arc<Mutex<HashMap<String, Behaviour>>>,
    /// Head requests answered so far.
    requests: Arc<std::sync::atomic::AtomicU64>,
}

const BASE: u64 = 1_000_000;

impl Chain {
    fn new(block_time: Duration) -> Self {
        Self {
            start: Instant::now(),
            start_unix: unix_now(),
            block_time,
            providers: Arc::default(),
            requests: Arc::default(),
        }
    }

    fn head(&self) -> u64 {
        BASE + (self.start.elapsed().as_nanos() / self.block_time.as_nanos()) as u64
    }

    fn timestamp(&self, number: u64) -> u64 {
        let made = Duration::from_nanos(
            (number.saturating_sub(BASE) as u128 * self.block_time.as_nanos()) as u64,
        );
        self.start_unix + made.as_secs()
    }

    fn set(&self, name: &str, behaviour: Behaviour) {
        self.providers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), behaviour);
    }

    /// Freezes `name` at the head now.
    fn freeze(&self, name: &str) {
        let number = self.head();
        let timestamp = self.timestamp(number);
        self.set(name, Behaviour::Frozen { number, timestamp });
    }

    fn answer(&self, name: &str) -> serde_json::Value {
        let behaviour = self
            .providers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
            .unwrap_or(Behaviour::Live { behind: 0 });
        let (number, timestamp) = match behaviour {
            Behaviour::Live { behind } => {
                let n = self.head() - behind;
                (n, self.timestamp(n))
            }
            Behaviour::Frozen { number, timestamp } => (number, timestamp),
            Behaviour::Ahead(ahead) => (self.head() + ahead, unix_now()),
            Behaviour::Replica { behind } => {
                let n = self
                    .requests
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let number = if n % 2 == 0 {
                    self.head() - behind
                } else {
                    self.head()
                };
                (number, self.timestamp(number))
            }
        };
        block(number, timestamp)
    }
}

async fn serve(mut stream: TcpStream, chain: Chain) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let name = request.path.trim_start_matches('/').to_owned();
    let result = match request.body["method"].as_str() {
        Some("eth_getBlockByNumber") => chain.answer(&name),
        _ => json!("0x1"),
    };
    reply(&mut stream, result, None).await;
}

/// An exporter probing `providers` (name, extra TOML lines) of `chain` every `interval`.
async fn exporter(
    chain: &Chain,
    interval: Duration,
    providers: &[(&str, &str)],
) -> (Exporter, tokio::task::JoinHandle<()>) {
    let served = chain.clone();
    let (port, server) = listen(move |stream| serve(stream, served.clone())).await;
    let mut text = format!(
        "[exporter]\nprobe_interval = \"{}ms\"\nprobe_timeout = \"2s\"\n\
         [[chain]]\nname = \"dev\"\nchain_id = 1\nbackend = \"rpc\"\n",
        interval.as_millis()
    );
    for (name, extra) in providers {
        text.push_str(&format!(
            "[[chain.provider]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}/{name}\"\n{extra}\n"
        ));
    }
    let config = Config::parse(Path::new("test.toml"), &text, |_| None).unwrap();
    (Exporter::new(&config).unwrap(), server)
}

/// Runs `rounds` rounds every `interval`, calling `before(round)` first; the metrics after each.
async fn run(
    exporter: &Exporter,
    interval: Duration,
    rounds: u64,
    mut before: impl FnMut(u64),
) -> Vec<String> {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seen = Vec::new();
    for id in 1..=rounds {
        ticker.tick().await;
        before(id);
        exporter.chains[0].clone().round(id).await;
        seen.push(exporter.metrics.render());
    }
    seen
}

fn lag(text: &str, provider: &str) -> f64 {
    value(text, "ethrpc_block_lag", provider).unwrap_or(-1.0)
}

fn up(text: &str, provider: &str) -> bool {
    value(text, "ethrpc_up", provider) == Some(1.0)
}

/// The first round (1-based) from `from` on at which `provider` lags more than 3 blocks.
fn first_lagging(seen: &[String], provider: &str, from: usize) -> Option<usize> {
    (from..seen.len())
        .find(|&i| lag(&seen[i], provider) > 3.0)
        .map(|i| i + 1)
}

const QUARTER: Duration = Duration::from_millis(250);

#[tokio::test]
async fn a_pool_of_two_where_one_stalls_lags_behind_the_other() {
    let chain = Chain::new(QUARTER);
    let (exporter, server) = exporter(&chain, QUARTER, &[("p1", ""), ("p2", "")]).await;
    let seen = run(&exporter, QUARTER, 28, |id| {
        if id == 9 {
            chain.freeze("p2");
        }
    })
    .await;
    server.abort();
    let lagging = first_lagging(&seen, "p2", 8).expect("p2 never lagged");
    println!(
        "pool of two: p2 stalled at round 9, lag > 3 at round {lagging} ({:.2} s)",
        (lagging - 9) as f64 * QUARTER.as_secs_f64()
    );
    assert!(lagging <= 9 + 14, "stall seen late: round {lagging}");
    assert!(lag(seen.last().unwrap(), "p2") > lag(&seen[lagging - 1], "p2"));
    for (i, text) in seen.iter().enumerate() {
        assert!(up(text, "p1") && up(text, "p2"), "round {}", i + 1);
        assert_eq!(lag(text, "p1"), 0.0, "round {}: {text}", i + 1);
        if i < 8 {
            assert_eq!(lag(text, "p2"), 0.0, "round {}", i + 1);
        }
    }
}

#[tokio::test]
async fn three_where_one_is_implausible_and_one_stalls() {
    let chain = Chain::new(QUARTER);
    chain.set("liar", Behaviour::Ahead(1_000_000));
    let (exporter, server) =
        exporter(&chain, QUARTER, &[("p1", ""), ("p2", ""), ("liar", "")]).await;
    let seen = run(&exporter, QUARTER, 28, |id| {
        if id == 9 {
            chain.freeze("p2");
        }
    })
    .await;
    server.abort();
    let last = seen.last().unwrap();
    assert!(errors(last, "liar", "implausible_block").unwrap() >= 20.0);
    let lagging = first_lagging(&seen, "p2", 8).expect("p2 never lagged");
    println!("one implausible, one stalled at round 9: lag > 3 at round {lagging}");
    for text in &seen {
        assert_eq!(lag(text, "p1"), 0.0);
        assert!(up(text, "p1"));
    }
}

#[tokio::test]
async fn a_liar_ahead_with_fresh_timestamps_drains_nobody_in_a_pool_of_two() {
    let chain = Chain::new(QUARTER);
    let (exporter, server) = exporter(&chain, QUARTER, &[("honest", ""), ("liar", "")]).await;
    let seen = run(&exporter, QUARTER, 24, |id| {
        if id == 9 {
            chain.set("liar", Behaviour::Ahead(50));
        }
    })
    .await;
    server.abort();
    for (i, text) in seen.iter().enumerate() {
        assert!(up(text, "honest"), "round {}", i + 1);
        assert_eq!(lag(text, "honest"), 0.0, "round {}: {text}", i + 1);
    }
}

#[tokio::test]
async fn two_frozen_together_lose_to_the_one_that_advances() {
    let chain = Chain::new(QUARTER);
    let (exporter, server) = exporter(&chain, QUARTER, &[("p1", ""), ("p2", ""), ("p3", "")]).await;
    let seen = run(&exporter, QUARTER, 40, |id| {
        if id == 9 {
            chain.freeze("p2");
            chain.freeze("p3");
        }
    })
    .await;
    server.abort();
    for (i, text) in seen.iter().enumerate() {
        assert!(up(text, "p1"), "round {}: {text}", i + 1);
        assert_eq!(lag(text, "p1"), 0.0, "round {}", i + 1);
    }
    let last = seen.last().unwrap();
    assert_eq!(errors(last, "p1", "implausible_block"), Some(0.0));
    for frozen in ["p2", "p3"] {
        let at = first_lagging(&seen, frozen, 8).expect("frozen never lagged");
        println!("two frozen at round 9: {frozen} lag > 3 at round {at}");
        assert!(lag(last, frozen) >= 20.0, "{frozen}: {}", lag(last, frozen));
    }
}

#[tokio::test]
async fn twelve_second_blocks_frozen_an_hour_before_the_exporter_started() {
    let chain = Chain::new(Duration::from_secs(12));
    let head = chain.head();
    for frozen in ["p2", "p3"] {
        chain.set(
            frozen,
            Behaviour::Frozen {
                number: head - 300,
                timestamp: unix_now() - 3600,
            },
        );
    }
    let (exporter, server) = exporter(&chain, QUARTER, &[("p1", ""), ("p2", ""), ("p3", "")]).await;
    let seen = run(&exporter, QUARTER, 8, |_| ()).await;
    server.abort();
    for text in &seen {
        assert!(up(text, "p1"), "{text}");
        assert_eq!(lag(text, "p1"), 0.0);
        assert_eq!(lag(text, "p2"), 300.0);
        assert_eq!(errors(text, "p1", "implausible_block"), Some(0.0));
    }
}

#[tokio::test]
async fn a_reserve_probed_every_minute_does_not_hide_a_lagging_primary() {
    let half = Duration::from_millis(500);
    let chain = Chain::new(Duration::from_secs(1));
    chain.set("p2", Behaviour::Live { behind: 5 });
    let (exporter, server) = exporter(
        &chain,
        half,
        &[
            ("p1", ""),
            ("p2", ""),
            ("reserve", "tier = 2\nprobe_interval = \"60s\""),
        ],
    )
    .await;
    let seen = run(&exporter, half, 20, |_| ()).await;
    server.abort();
    let last = seen.last().unwrap();
    assert_eq!(value(last, "ethrpc_probes_total", "reserve"), Some(1.0));
    let out = seen.iter().filter(|t| lag(t, "p2") >= 4.0).count();
    println!(
        "reserve every 60 s, p2 5 blocks behind: p2 lagging in {out} of {} rounds",
        seen.len()
    );
    assert!(out * 10 >= seen.len() * 9, "{out} of {}", seen.len());
    for text in &seen {
        assert_eq!(lag(text, "p1"), 0.0);
    }
}

#[tokio::test]
async fn replica_answers_behind_are_asked_again_before_they_count_as_lag() {
    let chain = Chain::new(QUARTER);
    chain.set("replica", Behaviour::Replica { behind: 8 });
    let (noisy, server) =
        exporter(&chain, QUARTER, &[("p1", ""), ("p2", ""), ("replica", "")]).await;
    let seen = run(&noisy, QUARTER, 16, |_| ()).await;
    server.abort();
    for (i, text) in seen.iter().enumerate().skip(1) {
        assert!(lag(text, "replica") <= 1.0, "round {}: {text}", i + 1);
    }
    let retries = value(
        seen.last().unwrap(),
        "ethrpc_probe_retries_total",
        "replica",
    );
    assert!(
        retries >= Some(10.0),
        "behind answers asked again: {retries:?}"
    );
    // A stalled provider answers the same again: its lag is not hidden.
    let chain = Chain::new(QUARTER);
    let (exporter, server) = exporter(&chain, QUARTER, &[("p1", ""), ("p2", ""), ("p3", "")]).await;
    let seen = run(&exporter, QUARTER, 20, |id| {
        if id == 4 {
            chain.freeze("p3");
        }
    })
    .await;
    server.abort();
    assert!(lag(seen.last().unwrap(), "p3") >= 10.0);
}
