//! Per-server response counters that HAProxy keeps itself, in a stick table of the backend, read
//! with `show table <backend>`. `show stat` counts answers by HTTP status class only (`hrsp_4xx`):
//! only a 429 shows a request limit (the 400s of a client's malformed calls do not), and
//! providers answer most of their failures as HTTP 200 with a JSON-RPC error, which no status
//! shows. So the shipped configs count per server what `show stat` cannot tell apart
//! ([`RESPONSE_COUNTING`]; `deploy/README.md`, "Counting what clients got").
//!
//! Which counter means what (the configs and the README follow this list):
//!
//! | stored | counts, per server |
//! | --- | --- |
//! | `gpc0` | rate-limit answers: HTTP 429, and JSON-RPC rate-limit errors in a 200 |
//! | `gpc1` | the provider's JSON-RPC errors in a 200 (`header not found`, pruned state, internal errors, a method it lacks), not rate limits and not the client's own (reverts, invalid params) |
//! | `http_req_cnt` | every answer a client got from it (the denominator) |
//!
//! Only the answer a client gets runs `http-response` rules: an attempt that is retried (a 502
//! then another server) is in neither counter (verified on 2.6.12). The counters start at 0 when
//! HAProxy starts or reloads, and an entry idle for the table's `expire` is removed and starts
//! again at 0: readers take differences and read a decrease as a restart.

use std::collections::BTreeMap;

use super::{first_line, HaproxyError};

/// The lines in a backend that keep the counters, as both shipped configs carry them (a test
/// keeps them equal): the recipe for a user's own config (`deploy/README.md`, "Counting what
/// clients got", says what each line does and why). The key is the server's name cut to 32
/// bytes; `size` bounds the entries, `expire` outlasts many actuator cycles. `sc2`, the last of
/// HAProxy 2.6's three tracking slots, leaves a frontend's own `sc0`/`sc1` alone. Verified on
/// 2.6.12:
/// - codes are matched as strings: `-m int` cannot match a negative number (`-32005` reads as
///   the range `:32005`, which every error code is in);
/// - a 2xx body is waited for only when it can hold a JSON-RPC error: not compressed, not known
///   to be over one buffer; at most one buffer (16 KiB) is held, a larger answer passes on
///   whole and is never parsed as an error; the wait's `time` is `timeout server`'s, since a
///   body neither complete nor filling the buffer by then is answered 504;
/// - a batch's answer (an array) has no `$.error`: not counted;
/// - providers are asked for plain answers (`Accept-Encoding` removed): a compressed body cannot
///   be read, and its errors would go unseen;
/// - a rate-limit code or word is no rate limit in the client's own error (a contract's revert
///   reason can say anything) or in a range or size limit (`-32005` "query returned more than
///   10000 results" is a provider's `eth_getLogs` limit: its own error, judged against its peers).
pub const RESPONSE_COUNTING: [&str; 15] = [
    "stick-table type string len 32 size 1k expire 10m store gpc0,gpc1,http_req_cnt",
    "http-request del-header accept-encoding",
    "http-response track-sc2 srv_name",
    "acl ethrpc_2xx status 200:299",
    "acl ethrpc_compressed res.hdr(content-encoding) -m found",
    "acl ethrpc_large res.hdr(content-length) -m int gt 16000",
    "http-response wait-for-body time 10s at-least 16k if ethrpc_2xx !ethrpc_compressed !ethrpc_large",
    "acl ethrpc_error res.body,json_query('$.error.code') -m found",
    "acl ethrpc_limit_code res.body,json_query('$.error.code') -m str -- -32005 -32007 -32029 429",
    "acl ethrpc_limit_message res.body,json_query('$.error.message'),lower -m sub \"rate limit\" \"ratelimit\" \"rate-limit\" \"rate exceeded\" \"too many requests\" \"limit reached\" \"capacity\" \"quota\"",
    "acl ethrpc_no_limit res.body,json_query('$.error.message'),lower -m sub \"query returned more than\" \"block range\" \"range limit\" \"range is too large\" \"response size\"",
    "acl ethrpc_client_code res.body,json_query('$.error.code') -m str -- 3 -32600 -32602 -32700",
    "acl ethrpc_client_message res.body,json_query('$.error.message'),lower -m sub \"revert\" \"insufficient funds\" \"insufficient balance\" \"nonce too low\" \"nonce too high\" \"gas required exceeds\" \"intrinsic gas too low\" \"gas limit\" \"out of gas\" \"already known\" \"underpriced\" \"base fee\" \"fee cap\" \"priority fee\" \"tries to replace\" \"invalid sender\" \"invalid argument\" \"invalid params\" \"invalid opcode\" \"invalid jump\" \"stack limit\" \"configured cap\" \"oversized data\" \"replay-protected\" \"type not supported\" \"max code size\" \"initcode\"",
    "http-response sc-inc-gpc0(2) if { status 429 } || ethrpc_2xx ethrpc_limit_code !ethrpc_no_limit !ethrpc_client_code !ethrpc_client_message || ethrpc_2xx ethrpc_limit_message !ethrpc_no_limit !ethrpc_client_code !ethrpc_client_message",
    "http-response sc-inc-gpc1(2) if ethrpc_2xx ethrpc_error !ethrpc_limit_code !ethrpc_limit_message !ethrpc_client_code !ethrpc_client_message || ethrpc_2xx ethrpc_error ethrpc_no_limit !ethrpc_client_code !ethrpc_client_message",
];

/// Most entries read from one reply; the shipped table holds 1k.
pub const MAX_SERVERS: usize = 10_000;
/// Longer entry lines are skipped (a real one is under 100 bytes).
const MAX_ENTRY_LINE: usize = 1024;
/// HAProxy 2.6's answer for a backend without a table, and for a name that is no table.
const NO_SUCH_TABLE: &str = "No such table";

/// One server's counters (see the module's list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseCounts {
    /// Rate-limit answers (`gpc0`).
    pub rate_limited: u64,
    /// The provider's JSON-RPC errors (`gpc1`); `None` when the table does not store them.
    pub rpc_errors: Option<u64>,
    /// Every answer clients got (`http_req_cnt`); `None` when the table does not store it.
    pub answers: Option<u64>,
}

/// Counters by server name (as the table's key: cut to 32 bytes). A server that has answered
/// nothing since the counters started, or for the table's `expire`, is absent.
pub type ServerCounts = BTreeMap<String, ResponseCounts>;

/// Parses a `show table <backend>` reply, as 2.6.12 prints it:
///
/// ```text
/// # table: rpc-backend, type: string, size:1024, used:2
/// 0x561300391748: key=p1 use=0 exp=597141 gpc0=4 http_req_cnt=12
/// 0x7fece4046b88: key=p2 use=0 exp=597193 gpc0=0 http_req_cnt=12
/// ```
///
/// `Ok(None)`: the backend does not count responses (`No such table`, a table not keyed by
/// string, or entries without `gpc0`), so no limit can be learned from it. Any other reply
/// (`Permission denied`, an unknown command) is [`HaproxyError::NotTable`]. Malformed and overlong
/// entry lines are skipped; at most [`MAX_SERVERS`] entries are read. Never panics.
pub fn parse_table(reply: &str) -> Result<Option<ServerCounts>, HaproxyError> {
    let mut lines = reply.lines();
    let header = lines.next().unwrap_or("");
    if header.trim_end() == NO_SUCH_TABLE {
        return Ok(None);
    }
    let Some(fields) = header.strip_prefix("# table: ") else {
        return Err(HaproxyError::NotTable {
            first_line: first_line(reply),
        });
    };
    if !fields.split(", ").any(|f| f == "type: string") {
        return Ok(None);
    }
    let mut servers = ServerCounts::new();
    for line in lines.take_while(|l| !l.is_empty() && !l.starts_with('#')) {
        if servers.len() >= MAX_SERVERS {
            break;
        }
        match entry(line) {
            Entry::Counts(server, counts) => {
                servers.insert(server.to_owned(), counts);
            }
            Entry::Uncounted => return Ok(None),
            Entry::Malformed => {}
        }
    }
    Ok(Some(servers))
}

/// What one entry line holds.
enum Entry<'a> {
    Counts(&'a str, ResponseCounts),
    /// A well-formed entry without `gpc0`: the table stores something else.
    Uncounted,
    Malformed,
}

/// Reads `0x…: key=NAME use=0 exp=… gpc0=N gpc1=E http_req_cnt=M` by field name. Server names hold
/// only letters, digits and `.:_-`, which HAProxy prints unescaped.
fn entry(line: &str) -> Entry<'_> {
    if line.len() > MAX_ENTRY_LINE {
        return Entry::Malformed;
    }
    let mut tokens = line.split_whitespace();
    if !tokens.next().is_some_and(|t| t.ends_with(':')) {
        return Entry::Malformed;
    }
    let (mut key, mut gpc0, mut rpc_errors, mut answers) = (None, None, None, None);
    for token in tokens {
        match token.split_once('=') {
            Some(("key", k)) if !k.is_empty() => key = Some(k),
            Some(("gpc0", n)) => gpc0 = Some(n.parse::<u64>().ok()),
            Some(("gpc1", n)) => rpc_errors = Some(n.parse::<u64>().ok()),
            Some(("http_req_cnt", n)) => answers = n.parse().ok(),
            _ => {}
        }
    }
    match (key, gpc0) {
        // A counter that does not read as one makes the line malformed, not a zero.
        _ if rpc_errors == Some(None) => Entry::Malformed,
        (Some(key), Some(Some(rate_limited))) => Entry::Counts(
            key,
            ResponseCounts {
                rate_limited,
                rpc_errors: rpc_errors.flatten(),
                answers,
            },
        ),
        (Some(_), None) => Entry::Uncounted,
        _ => Entry::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2.6.12 reply: `a` answered 429 to every third request, `b` 400 to all, `c` 502 then 429
    /// (its 502s were retried elsewhere and are not counted), `d` a JSON-RPC error in a 200 to
    /// every other request.
    const REAL: &str = "# table: rpc-backend, type: string, size:1024, used:4\n\
        0x561300391748: key=a use=0 exp=597141 gpc0=4 gpc1=0 http_req_cnt=12\n\
        0x7fece4046b88: key=b use=0 exp=597193 gpc0=0 gpc1=0 http_req_cnt=12\n\
        0x561300395db8: key=c use=0 exp=597204 gpc0=6 gpc1=0 http_req_cnt=6\n\
        0x561300395dc0: key=d use=0 exp=597204 gpc0=0 gpc1=5 http_req_cnt=10\n\n";

    fn counts(rate_limited: u64, rpc_errors: Option<u64>, answers: Option<u64>) -> ResponseCounts {
        ResponseCounts {
            rate_limited,
            rpc_errors,
            answers,
        }
    }

    #[test]
    fn a_real_reply_gives_each_servers_counts() {
        let table = parse_table(REAL).unwrap().unwrap();
        assert_eq!(table.len(), 4);
        assert_eq!(table["a"], counts(4, Some(0), Some(12)));
        assert_eq!(table["b"], counts(0, Some(0), Some(12)));
        assert_eq!(table["c"], counts(6, Some(0), Some(6)));
        assert_eq!(table["d"], counts(0, Some(5), Some(10)));
        let older = "# table: rpc-backend, type: string, size:1024, used:1\n\
            0x561300391748: key=a use=0 exp=597141 gpc0=4 http_req_cnt=12\n\n";
        assert_eq!(
            parse_table(older).unwrap().unwrap()["a"],
            counts(4, None, Some(12)),
            "a table without gpc1 counts no JSON-RPC errors"
        );
        let empty = "# table: rpc-backend, type: string, size:1024, used:0\n\n";
        assert_eq!(parse_table(empty).unwrap(), Some(ServerCounts::new()));
    }

    #[test]
    fn backends_that_do_not_count_are_none() {
        for reply in [
            "No such table\n\n",
            "# table: iptable, type: ip, size:1024, used:0\n\n",
            "# table: t, type: string, size:1024, used:1\n0x1: key=a use=0 exp=1 http_req_rate(10000)=3\n\n",
        ] {
            assert_eq!(parse_table(reply).unwrap(), None, "{reply:?}");
        }
    }

    #[test]
    fn other_replies_are_errors() {
        for reply in [
            "",
            "Permission denied\n\n",
            "Unknown command: 'show tabel'\n",
        ] {
            assert!(
                matches!(parse_table(reply), Err(HaproxyError::NotTable { .. })),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn malformed_lines_are_skipped_and_other_fields_ignored() {
        let long = format!("0x9: key=long gpc0=1 {}\n", "x".repeat(MAX_ENTRY_LINE));
        let reply = format!(
            "# table: rpc-backend, type: string, size:1024, used:6\n\
             0x1: key=ok use=0 exp=5 gpc0=2 gpc1=7 http_req_cnt=x\n\
             0x6: key=bad1 use=0 exp=5 gpc0=2 gpc1=-3\n\
             0x2: key=neg use=0 gpc0=-1\n\
             no pointer key=np gpc0=1\n\
             0x3: key= gpc0=1\n\
             0x4: gpc0=3\n{long}\n\
             0x5: key=after gpc0=9\n"
        );
        let table = parse_table(&reply).unwrap().unwrap();
        assert_eq!(table.keys().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(table["ok"], counts(2, Some(7), None));
    }

    #[test]
    fn entries_are_bounded() {
        let mut reply = String::from("# table: t, type: string, size:1024, used:0\n");
        for i in 0..MAX_SERVERS + 10 {
            reply.push_str(&format!("0x{i:x}: key=s{i} use=0 exp=1 gpc0=1\n"));
        }
        assert_eq!(parse_table(&reply).unwrap().unwrap().len(), MAX_SERVERS);
    }
}
