//! The runtime-API client against a real HAProxy 2.6.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use actuator::haproxy::{Haproxy, HaproxyError, WeightWrite, WriteOutcome};
use actuator::haproxy_write::WeightCommand;
use common::config::HaproxyAddress;
use testkit::haproxy::{backend, HaproxyProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn servers(n: usize) -> Vec<(String, String)> {
    (1..=n)
        .map(|i| (format!("s{i}"), format!("127.0.0.1:{}", 10000 + i)))
        .collect()
}

async fn start() -> HaproxyProcess {
    let three = servers(3);
    let rr: Vec<(&str, String)> = three.iter().map(|(n, a)| (n.as_str(), a.clone())).collect();
    let st = [("c", "127.0.0.1:9".to_owned())];
    HaproxyProcess::start(&(backend("rr", "roundrobin", &rr) + &backend("st", "source", &st))).await
}

fn client(socket: &std::path::Path) -> Haproxy {
    Haproxy::new(
        HaproxyAddress::Unix(socket.to_owned()),
        Duration::from_secs(2),
    )
}

fn write(backend: &str, server: &str, weight: WeightCommand) -> WeightWrite {
    WeightWrite {
        backend: backend.into(),
        server: server.into(),
        weight,
    }
}

#[tokio::test]
async fn sets_weights_and_reads_them_back() {
    let h = start().await;
    let c = client(&h.admin_socket);
    let stat = c.show_stat().await.unwrap();
    assert_eq!(stat["rr"].algorithm, "roundrobin");
    assert_eq!(stat["st"].algorithm, "source");
    assert_eq!(stat["rr"].servers["s1"].weight, 100);
    assert_eq!(stat["rr"].servers.len(), 3);

    let outcomes = c
        .set_weights(&[
            write("rr", "s1", WeightCommand::Absolute(0)),
            write("rr", "s2", WeightCommand::Absolute(37)),
            write("rr", "s3", WeightCommand::Absolute(256)),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![WriteOutcome::Done; 3]);
    let stat = c.show_stat().await.unwrap();
    let weights: Vec<u32> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| stat["rr"].servers[*s].weight)
        .collect();
    assert_eq!(weights, vec![0, 37, 256]);
    assert_eq!(h.weight("rr/s2").await, Some(37), "get weight agrees");
}

#[tokio::test]
async fn each_error_is_reported_for_its_command_only() {
    let h = start().await;
    let c = client(&h.admin_socket);
    let outcomes = c
        .set_weights(&[
            write("rr", "s1", WeightCommand::Absolute(10)),
            write("rr", "nope", WeightCommand::Absolute(10)),
            write("nobackend", "s1", WeightCommand::Absolute(10)),
            write("rr", "s2", WeightCommand::Absolute(300)),
            write("st", "c", WeightCommand::Absolute(50)),
            write("rr", "s3", WeightCommand::Absolute(20)),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            WriteOutcome::Done,
            WriteOutcome::Failed("No such server.".into()),
            WriteOutcome::Failed("No such backend.".into()),
            WriteOutcome::Failed("Absolute weight can only be between 0 and 256 inclusive.".into()),
            WriteOutcome::StaticAlgorithm,
            WriteOutcome::Done,
        ]
    );
    assert_eq!(h.weight("rr/s1").await, Some(10));
    assert_eq!(
        h.weight("rr/s3").await,
        Some(20),
        "commands after an error still run"
    );
    // Malformed commands are never built by the client (names are validated), but the replies
    // HAProxy gives for them are read to EOF without hanging, blank line or not.
    let reply = c
        .command("set weight rrs1 5;set weight rr/s1 x")
        .await
        .unwrap();
    assert!(reply.contains("Require 'backend/server'."), "{reply:?}");
    assert!(
        reply.contains("Empty weight string empty or preceded by garbage"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn static_backends_take_on_and_off() {
    let h = start().await;
    let c = client(&h.admin_socket);
    let off = c
        .set_weights(&[write("st", "c", WeightCommand::Absolute(0))])
        .await
        .unwrap();
    assert_eq!(off, vec![WriteOutcome::Done]);
    assert_eq!(h.weight("st/c").await, Some(0));
    let on = c
        .set_weights(&[write("st", "c", WeightCommand::FullPercent)])
        .await
        .unwrap();
    assert_eq!(on, vec![WriteOutcome::Done]);
    assert_eq!(h.weight("st/c").await, Some(100));
}

#[tokio::test]
async fn an_operator_level_socket_is_refused_writes() {
    let h = start().await;
    let c = client(&h.operator_socket);
    let outcomes = c
        .set_weights(&[write("rr", "s1", WeightCommand::Absolute(5))])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![WriteOutcome::Failed("Permission denied".into())]
    );
    assert_eq!(h.weight("rr/s1").await, Some(100));
}

#[tokio::test]
async fn unreachable_sockets_and_tcp_sockets() {
    let dir = testkit::TempDir::new("nosock");
    let missing = client(&dir.path().join("missing.sock"));
    assert!(matches!(
        missing.show_stat().await,
        Err(HaproxyError::Connect { .. })
    ));

    let port = testkit::free_port();
    let sections = format!(
        "global\n  stats socket ipv4@127.0.0.1:{port} level admin\n{}",
        backend("rr", "roundrobin", &[("a", "127.0.0.1:9".into())])
    );
    // A second `global` section is merged by HAProxy: this adds a TCP admin socket.
    let h = HaproxyProcess::start(&sections).await;
    let tcp = Haproxy::new(
        HaproxyAddress::Tcp(format!("127.0.0.1:{port}").parse().unwrap()),
        Duration::from_secs(2),
    );
    let outcomes = tcp
        .set_weights(&[write("rr", "a", WeightCommand::Absolute(42))])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![WriteOutcome::Done]);
    assert_eq!(h.weight("rr/a").await, Some(42));
}

#[tokio::test]
async fn many_writes_are_split_into_lines_haproxy_accepts() {
    let many = servers(600);
    let list: Vec<(&str, String)> = many.iter().map(|(n, a)| (n.as_str(), a.clone())).collect();
    let h = HaproxyProcess::start(&backend("big", "roundrobin", &list)).await;
    let c = client(&h.admin_socket);
    let writes: Vec<WeightWrite> = many
        .iter()
        .enumerate()
        .map(|(i, (n, _))| write("big", n, WeightCommand::Absolute((i % 200) as u32 + 1)))
        .collect();
    let outcomes = c.set_weights(&writes).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == WriteOutcome::Done));
    let stat = c.show_stat().await.unwrap();
    for (i, (n, _)) in many.iter().enumerate() {
        assert_eq!(stat["big"].servers[n].weight, (i % 200) as u32 + 1, "{n}");
    }
}

/// A health-check target that answers every request `503 Down, for maintenance`: HAProxy then
/// quotes `"Down, for maintenance"` in the `last_chk` field of `show stat`.
async fn down_for_maintenance() -> u16 {
    let port = testkit::free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream
                    .write_all(b"HTTP/1.0 503 Down, for maintenance\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_comma_in_a_check_answer_does_not_shift_the_weight() {
    let port = down_for_maintenance().await;
    let h = HaproxyProcess::start(&format!(
        "backend chk\n  balance roundrobin\n  option httpchk GET /\n\
         default-server inter 100ms fall 1 rise 1\n\
         server down 127.0.0.1:{port} weight 40 check\n\
         server up 127.0.0.1:9 weight 60\n"
    ))
    .await;
    testkit::wait_for(
        "HAProxy to quote the check answer in show stat",
        Duration::from_secs(20),
        || async {
            let raw = h.admin("show stat chk 4 -1").await;
            raw.contains("\"Down, for maintenance\"").then_some(())
        },
    )
    .await;
    let c = client(&h.admin_socket);
    let stat = c.show_stat().await.unwrap();
    let down = &stat["chk"].servers["down"];
    assert_eq!(down.weight, 40);
    assert!(down.status.starts_with("DOWN"), "{down:?}");
    assert_eq!(stat["chk"].servers["up"].weight, 60);
    assert_eq!(stat["chk"].algorithm, "roundrobin");

    let outcomes = c
        .set_weights(&[write("chk", "down", WeightCommand::Absolute(7))])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![WriteOutcome::Done]);
    assert_eq!(
        c.show_stat().await.unwrap()["chk"].servers["down"].weight,
        7
    );
}
