//! HAProxy's runtime API (the admin socket), over `unix:` or `tcp:`. One command line per
//! connection, `\n`-terminated, the reply read to EOF: two 2.6 error messages lack the blank line
//! that ends the others, so replies are never framed on `\n\n`.

use std::collections::BTreeMap;
use std::time::Duration;

use common::config::HaproxyAddress;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client_signal::ClientCounters;
use crate::haproxy_write::WeightCommand;

mod table;
pub use table::{parse_table, ResponseCounts, ServerCounts, MAX_SERVERS, RESPONSE_COUNTING};

/// Largest reply read (`show stat` for thousands of servers is a few MiB).
const MAX_REPLY: usize = 64 << 20;
/// Longest command line sent; HAProxy's default buffer is 16 KiB.
const MAX_LINE: usize = 8 << 10;
/// HAProxy's answer to a weight on a static-algorithm backend.
const STATIC_ALGORITHM: &str = "static LB algorithm";

/// Why HAProxy could not be read or written.
#[derive(Debug, Error)]
pub enum HaproxyError {
    #[error("cannot connect to HAProxy at {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("HAProxy at {address} did not answer within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("lost the connection to HAProxy at {address}: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    #[error("HAProxy's reply is over {MAX_REPLY} bytes")]
    TooLarge,
    #[error("HAProxy's `show stat` reply is not CSV with pxname, svname, status and weight columns: {first_line:?}")]
    NotStat { first_line: String },
    #[error("HAProxy's `show table` reply is neither a table nor `No such table`: {first_line:?}")]
    NotTable { first_line: String },
}

/// A server as `show stat` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    /// The weight set by the config or the runtime API (`uweight`; `weight` on old versions).
    pub weight: u32,
    /// `UP`, `DOWN`, `MAINT`, `no check`, …
    pub status: String,
    /// What its client requests came to; `None` when a column is missing or does not parse
    /// (then there is no passive signal for it, never a zero).
    pub counters: Option<ClientCounters>,
    /// A `backup` server (`bck` 1): HAProxy's last resort when no active server is usable.
    pub backup: bool,
    /// Where it sends requests (`addr`, `ip:port`): a reserve's `backup` twin is the entry at the
    /// same address. `None` when the column is missing or empty.
    pub address: Option<String>,
}

/// A backend as `show stat` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendStat {
    /// The `algo` field, e.g. `roundrobin`.
    pub algorithm: String,
    pub servers: BTreeMap<String, ServerStat>,
}

impl BackendStat {
    /// Takes each server's rate-limit answers and JSON-RPC errors from the backend's counting
    /// table (`show table`): a server the table has no entry for has had no answer counted yet.
    pub fn count_answers(&mut self, table: &ServerCounts) {
        for (name, server) in &mut self.servers {
            if let Some(counters) = &mut server.counters {
                let counts = table.get(name).copied().unwrap_or_default();
                counters.rate_limited = counts.rate_limited;
                counters.rpc_errors = counts.rpc_errors.unwrap_or(0);
            }
        }
    }
}

/// One server's weight to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightWrite {
    pub backend: String,
    pub server: String,
    pub weight: WeightCommand,
}

impl WeightWrite {
    fn command(&self) -> String {
        format!(
            "set weight {}/{} {}",
            self.backend, self.server, self.weight
        )
    }
}

/// What became of one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Done,
    /// The backend only takes 0 and 100%.
    StaticAlgorithm,
    Failed(String),
}

/// The admin-socket client.
#[derive(Debug, Clone)]
pub struct Haproxy {
    address: HaproxyAddress,
    timeout: Duration,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Haproxy {
    pub fn new(address: HaproxyAddress, timeout: Duration) -> Self {
        Self { address, timeout }
    }

    /// Sends one command line and returns the whole reply.
    pub async fn command(&self, line: &str) -> Result<String, HaproxyError> {
        debug_assert!(!line.contains('\n'), "names are validated at config load");
        let address = self.address.to_string();
        let exchange = async {
            let connect = |source| HaproxyError::Connect {
                address: address.clone(),
                source,
            };
            let mut stream: Box<dyn Stream> = match &self.address {
                HaproxyAddress::Unix(path) => Box::new(
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(connect)?,
                ),
                HaproxyAddress::Tcp(addr) => Box::new(
                    tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(connect)?,
                ),
            };
            let io = |source| HaproxyError::Io {
                address: address.clone(),
                source,
            };
            stream
                .write_all(format!("{line}\n").as_bytes())
                .await
                .map_err(io)?;
            let mut reply = Vec::new();
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                let n = stream.read(&mut chunk).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                if reply.len() + n > MAX_REPLY {
                    return Err(HaproxyError::TooLarge);
                }
                reply.extend_from_slice(&chunk[..n]);
            }
            Ok(String::from_utf8_lossy(&reply).into_owned())
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HaproxyError::Timeout {
                address: address.clone(),
                timeout: self.timeout,
            })?
    }

    /// Backends and their servers, from `show stat` (backend and server rows only).
    pub async fn show_stat(&self) -> Result<BTreeMap<String, BackendStat>, HaproxyError> {
        parse_stat(&self.command("show stat -1 6 -1").await?)
    }

    /// `backend`'s per-server response counters (HTTP 429s, …), from its stick table: see
    /// [`parse_table`]. `Ok(None)` when the backend does not count them ([`RESPONSE_COUNTING`]
    /// is missing from it; HAProxy answers an unknown backend the same way).
    pub async fn response_counts(
        &self,
        backend: &str,
    ) -> Result<Option<ServerCounts>, HaproxyError> {
        parse_table(&self.command(&format!("show table {backend}")).await?)
    }

    /// Sets weights, many per line; a line with any error is replayed one command at a time to
    /// find which failed.
    pub async fn set_weights(
        &self,
        writes: &[WeightWrite],
    ) -> Result<Vec<WriteOutcome>, HaproxyError> {
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut start = 0;
        while start < writes.len() {
            let mut end = start;
            let mut line = String::new();
            while end < writes.len() {
                let command = writes[end].command();
                if !line.is_empty() && line.len() + command.len() + 1 > MAX_LINE {
                    break;
                }
                if !line.is_empty() {
                    line.push(';');
                }
                line.push_str(&command);
                end += 1;
            }
            let reply = self.command(&line).await?;
            if reply.trim().is_empty() {
                outcomes.extend((start..end).map(|_| WriteOutcome::Done));
            } else {
                for write in &writes[start..end] {
                    let reply = self.command(&write.command()).await?;
                    outcomes.push(outcome(reply.trim()));
                }
            }
            start = end;
        }
        Ok(outcomes)
    }
}

fn outcome(reply: &str) -> WriteOutcome {
    if reply.is_empty() {
        WriteOutcome::Done
    } else if reply.contains(STATIC_ALGORITHM) {
        WriteOutcome::StaticAlgorithm
    } else {
        WriteOutcome::Failed(reply.lines().next().unwrap_or(reply).to_owned())
    }
}

/// Longest part of an unexpected reply quoted in an error.
const QUOTED_REPLY: usize = 200;

/// The first line of `reply`, cut, to quote in an error.
fn first_line(reply: &str) -> String {
    reply
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(QUOTED_REPLY)
        .collect()
}

/// Parses `show stat` CSV by header name, with a CSV reader: HAProxy quotes fields that hold a
/// comma (a check answered `503 Down, for maintenance`), so splitting on `,` would shift every
/// later column. A server row whose weight is missing or does not parse is left out: its weight
/// is unknown, not 0, and a server absent from the map is never written. A row without a
/// backend, server or status is left out too.
pub fn parse_stat(reply: &str) -> Result<BTreeMap<String, BackendStat>, HaproxyError> {
    let not_stat = || HaproxyError::NotStat {
        first_line: first_line(reply),
    };
    let body = reply.strip_prefix("# ").ok_or_else(not_stat)?;
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body.as_bytes());
    let mut records = csv.records();
    let header = match records.next() {
        Some(Ok(header)) => header,
        _ => return Err(not_stat()),
    };
    let col = |name: &str| header.iter().position(|h| h == name);
    let (px, sv, status) = match (col("pxname"), col("svname"), col("status")) {
        (Some(px), Some(sv), Some(status)) => (px, sv, status),
        _ => return Err(not_stat()),
    };
    let weight = col("uweight").or(col("weight")).ok_or_else(not_stat)?;
    let algo = col("algo");
    let bck = col("bck");
    let addr = col("addr");
    let counter_columns = ["lbtot", "hrsp_5xx", "eresp", "econ", "wretr", "wredis"].map(col);
    let mut backends: BTreeMap<String, BackendStat> = BTreeMap::new();
    for row in records.flatten() {
        let (Some(backend), Some(server)) = (row.get(px), row.get(sv)) else {
            continue;
        };
        match server {
            "FRONTEND" => {}
            "BACKEND" => {
                let algorithm = algo.and_then(|i| row.get(i)).unwrap_or("");
                backends.entry(backend.to_owned()).or_default().algorithm = algorithm.to_owned();
            }
            server => {
                let (Some(weight), Some(status)) = (
                    row.get(weight).and_then(|w| w.parse().ok()),
                    row.get(status),
                ) else {
                    continue;
                };
                let value = |i: Option<usize>| row.get(i?)?.parse::<u64>().ok();
                let backup = value(bck) == Some(1);
                let address = addr
                    .and_then(|i| row.get(i))
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned);
                let counters = match counter_columns.map(value) {
                    [Some(selected), Some(server_errors), Some(response_errors), Some(connection_errors), Some(retried), Some(redispatched)] =>
                    {
                        // 429s and JSON-RPC errors come from the backend's own table: `show
                        // stat`'s `hrsp_4xx` counts every 4xx, clients' malformed requests too,
                        // and no status shows an error inside a 200.
                        Some(ClientCounters {
                            selected,
                            server_errors,
                            response_errors,
                            connection_errors,
                            rate_limited: 0,
                            rpc_errors: 0,
                            retried,
                            redispatched,
                        })
                    }
                    _ => None,
                };
                backends
                    .entry(backend.to_owned())
                    .or_default()
                    .servers
                    .insert(
                        server.to_owned(),
                        ServerStat {
                            weight,
                            status: status.to_owned(),
                            counters,
                            backup,
                            address,
                        },
                    );
            }
        }
    }
    backends.retain(|_, b| !b.servers.is_empty() || !b.algorithm.is_empty());
    Ok(backends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_read_by_header_name() {
        let reply =
            "# pxname,svname,status,weight,uweight,algo,lbtot,hrsp_5xx,eresp,econ,hrsp_4xx,wretr,wredis\n\
                     rr,a,UP,50,50,,7,1,2,3,4,5,6\n\
                     rr,b,DOWN 1/2,70,70,\n\
                     rr,BACKEND,UP,120,120,roundrobin\n\
                     st,c,no check,100,100,\n\
                     st,BACKEND,UP,100,100,source\n\n";
        let stat = parse_stat(reply).unwrap();
        assert_eq!(stat["rr"].algorithm, "roundrobin");
        assert_eq!(
            stat["rr"].servers["a"],
            ServerStat {
                weight: 50,
                status: "UP".into(),
                counters: Some(ClientCounters {
                    selected: 7,
                    server_errors: 1,
                    response_errors: 2,
                    connection_errors: 3,
                    rate_limited: 0,
                    rpc_errors: 0,
                    retried: 5,
                    redispatched: 6,
                }),
                backup: false,
                address: None,
            }
        );
        assert_eq!(stat["rr"].servers["b"].status, "DOWN 1/2");
        let mut counted = stat.clone();
        let mut table = ServerCounts::new();
        table.insert(
            "a".into(),
            ResponseCounts {
                rate_limited: 9,
                rpc_errors: Some(4),
                answers: Some(7),
            },
        );
        counted.get_mut("rr").unwrap().count_answers(&table);
        let counters =
            |s: &BTreeMap<String, BackendStat>, server: &str| s["rr"].servers[server].counters;
        assert_eq!(
            counters(&counted, "a").map(|c| (c.rate_limited, c.rpc_errors)),
            Some((9, 4)),
            "hrsp_4xx is not read"
        );
        assert_eq!(counters(&counted, "b"), None, "still no counters");
        assert_eq!(
            stat["rr"].servers["b"].counters, None,
            "missing counters are no signal, not zeros"
        );
        assert_eq!(stat["st"].servers["c"].weight, 100);
        for not_stat in [
            "Permission denied\n\n",
            "",
            "# pxname,svname,weight\nrr,a,1\n",
        ] {
            assert!(
                matches!(parse_stat(not_stat), Err(HaproxyError::NotStat { .. })),
                "{not_stat:?}"
            );
        }
    }

    #[test]
    fn quoted_fields_do_not_shift_later_columns() {
        // As HAProxy 2.6 writes a check answered `503 Down, for maintenance`.
        let reply = "# pxname,svname,status,last_chk,weight,uweight,lbtot,algo\n\
                     rr,a,DOWN,\"Down, for maintenance\",40,40,3,\n\
                     rr,b,UP,\"say \"\"hi\"\", twice\",60,60,5,\n\
                     rr,BACKEND,UP,,100,100,8,roundrobin\n\n";
        let stat = parse_stat(reply).unwrap();
        let a = &stat["rr"].servers["a"];
        assert_eq!((a.weight, a.status.as_str()), (40, "DOWN"));
        assert_eq!(stat["rr"].servers["b"].weight, 60);
        assert_eq!(stat["rr"].algorithm, "roundrobin");
    }

    #[test]
    fn servers_with_an_unknown_weight_are_left_out_not_read_as_zero() {
        let reply = "# pxname,svname,status,weight,uweight,lbtot\n\
                     rr,short,UP\n\
                     rr,blank,UP,,,1\n\
                     rr,word,UP,ten,ten,1\n\
                     rr,negative,UP,-1,-1,1\n\
                     rr,nostatus\n\
                     rr,ok,UP,5,5\n";
        let stat = parse_stat(reply).unwrap();
        let names: Vec<&str> = stat["rr"].servers.keys().map(String::as_str).collect();
        assert_eq!(names, ["ok"]);
        assert_eq!(stat["rr"].servers["ok"].counters, None, "lbtot absent");
    }

    #[test]
    fn replies_become_outcomes() {
        assert_eq!(outcome(""), WriteOutcome::Done);
        assert_eq!(
            outcome("No such server."),
            WriteOutcome::Failed("No such server.".into())
        );
        assert_eq!(
            outcome(
                "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'."
            ),
            WriteOutcome::StaticAlgorithm
        );
    }
}
