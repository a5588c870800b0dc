//! Fuzzing, as property tests, of the parsers fed by other programs: Prometheus answers to
//! instant and range queries (`prometheus_api::decode`, `decode_matrix`) and HAProxy's
//! `show stat` and `show table` replies (`haproxy::parse_stat`, `parse_table`). Arbitrary
//! bytes, structured-but-wrong answers and mutated real ones must never panic, must give bounded
//! output, and must fail with a named error.
//!
//! `cargo test` runs proptest's default case count (a few seconds). A longer run:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release -p ethrpc-actuator --test fuzz_parsers
//! ```

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use actuator::haproxy::{parse_stat, parse_table, HaproxyError, ResponseCounts, MAX_SERVERS};
use actuator::prometheus_api::{
    decode, decode_matrix, parse_value, PrometheusError, QueryResult, Series, MAX_POINTS,
    MAX_SAMPLES,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Checks what every failed decode must satisfy: a named error, never a transport one, and a
/// short quote of a body that is not JSON.
fn check_error(status: u16, error: PrometheusError) {
    match error {
        PrometheusError::NotJson { status: s, snippet } => {
            assert_eq!(s, status);
            assert!(snippet.chars().count() <= 120, "{snippet:?}");
        }
        PrometheusError::Api { .. }
        | PrometheusError::Unexpected(_)
        | PrometheusError::TooManySamples
        | PrometheusError::TooManyPoints
        | PrometheusError::LabelsTooLarge
        | PrometheusError::StringTooLong => {}
        e => panic!("decoding cannot fail with a transport error: {e}"),
    }
}

/// Checks what every decode must satisfy and returns the samples, if any.
fn decode_checked(status: u16, body: &[u8]) -> Option<QueryResult> {
    match decode(status, body) {
        Ok(QueryResult::Vector(samples)) => {
            assert!(samples.len() <= MAX_SAMPLES);
            Some(QueryResult::Vector(samples))
        }
        Ok(scalar) => Some(scalar),
        Err(e) => {
            check_error(status, e);
            None
        }
    }
}

/// Checks what every range decode must satisfy and returns the series, if any.
fn decode_matrix_checked(status: u16, body: &[u8]) -> Option<Vec<Series>> {
    match decode_matrix(status, body) {
        Ok(series) => {
            assert!(series.len() <= MAX_SAMPLES);
            assert!(series.iter().map(|s| s.points.len()).sum::<usize>() <= MAX_POINTS);
            Some(series)
        }
        Err(e) => {
            check_error(status, e);
            None
        }
    }
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(|f| json!(f)),
        any::<i64>().prop_map(|i| json!(i)),
        "[a-z+\\-0-9.]{0,8}".prop_map(Value::String),
        Just(json!("NaN")),
        Just(json!("+Inf")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A sample, well formed or wrong in one of the ways an answer can be.
fn sample() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        (any::<f64>(), "[0-9.eE+\\-]{0,6}|NaN|\\+Inf|-Inf|Inf|inf")
            .prop_map(|(t, v)| json!([t, v])),
        any_json(),
    ];
    let metric = prop_oneof![
        prop::collection::btree_map("[a-z_]{0,6}", "[ -~]{0,8}", 0..4).prop_map(|m| json!(m)),
        any_json(),
    ];
    (metric, value, any::<bool>()).prop_map(|(metric, value, extra)| {
        let mut sample = json!({"metric": metric, "value": value});
        if extra {
            sample["histogram"] = json!([1, {"count": "1"}]);
        }
        sample
    })
}

/// An envelope around `result`, with plausible and implausible status and type fields.
fn envelope() -> impl Strategy<Value = Value> {
    let status = prop_oneof![Just(json!("success")), Just(json!("error")), any_json()];
    let kind = prop_oneof![
        Just(json!("vector")),
        Just(json!("scalar")),
        Just(json!("matrix")),
        Just(json!("string")),
        any_json()
    ];
    let result = prop_oneof![
        prop::collection::vec(sample(), 0..6).prop_map(Value::Array),
        (any::<f64>(), "[0-9.]{0,4}|NaN").prop_map(|(t, v)| json!([t, v])),
        any_json(),
    ];
    (status, kind, result, any_json()).prop_map(|(status, kind, result, error)| {
        json!({"status": status, "data": {"resultType": kind, "result": result},
               "errorType": "bad_data", "error": error})
    })
}

/// A series of a matrix, well formed or wrong in one of the ways an answer can be.
fn series() -> impl Strategy<Value = Value> {
    let point = prop_oneof![
        (any::<f64>(), "[0-9.eE+\\-]{0,6}|NaN|\\+Inf|-Inf|Inf").prop_map(|(t, v)| json!([t, v])),
        any_json(),
    ];
    let values = prop_oneof![
        prop::collection::vec(point, 0..6).prop_map(Value::Array),
        any_json(),
    ];
    let metric = prop_oneof![
        prop::collection::btree_map("[a-z_]{0,6}", "[ -~]{0,8}", 0..4).prop_map(|m| json!(m)),
        any_json(),
    ];
    (metric, values).prop_map(|(metric, values)| json!({"metric": metric, "values": values}))
}

/// A range answer's envelope around a matrix, or around something else.
fn matrix_envelope() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![Just(json!("matrix")), Just(json!("vector")), any_json()];
    let result = prop_oneof![
        prop::collection::vec(series(), 0..5).prop_map(Value::Array),
        any_json(),
    ];
    (kind, result).prop_map(|(kind, result)| {
        json!({"status": "success", "data": {"resultType": kind, "result": result}})
    })
}

/// A valid range answer's body, for mutation.
fn valid_matrix(n: usize) -> Vec<u8> {
    let series: Vec<Value> = (0..n)
        .map(|i| {
            json!({"metric": {"chain": "c", "provider": format!("p{i}")},
                        "values": [[1.5, "0.25"], [3.5, "NaN"], [5.5, "+Inf"]]})
        })
        .collect();
    serde_json::to_vec(
        &json!({"status": "success", "data": {"resultType": "matrix", "result": series}}),
    )
    .unwrap()
}

/// A valid answer's body, for mutation.
fn valid_answer(n: usize) -> Vec<u8> {
    let samples: Vec<Value> = (0..n)
        .map(|i| json!({"metric": {"chain": "c", "provider": format!("p{i}")}, "value": [1.5, "0.25"]}))
        .collect();
    serde_json::to_vec(
        &json!({"status": "success", "data": {"resultType": "vector", "result": samples}}),
    )
    .unwrap()
}

proptest! {
    #[test]
    fn prometheus_arbitrary_bytes(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_checked(status, &body);
    }

    #[test]
    fn prometheus_structured_but_wrong(answer in envelope()) {
        let body = serde_json::to_vec(&answer).unwrap();
        let decoded = decode_checked(200, &body);
        if answer["status"] != "success" {
            prop_assert!(decoded.is_none(), "only success carries a result");
        }
        if let Some(QueryResult::Vector(samples)) = decoded {
            let sent = answer["data"]["result"].as_array().unwrap();
            prop_assert_eq!(samples.len(), sent.len());
            for (kept, sent) in samples.iter().zip(sent) {
                let text = sent["value"][1].as_str().unwrap();
                let expected = parse_value(text).unwrap();
                prop_assert!(kept.value == expected || (kept.value.is_nan() && expected.is_nan()));
            }
        }
    }

    #[test]
    fn prometheus_mutated_answers(
        n in 0usize..8,
        range in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut body = if range { valid_matrix(n) } else { valid_answer(n) };
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let cut = cut.index(body.len() + 1);
        for (status, body) in [(200, &body[..cut]), (503, &body[..])] {
            decode_checked(status, body);
            decode_matrix_checked(status, body);
        }
    }

    #[test]
    fn prometheus_range_arbitrary_bytes(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_matrix_checked(status, &body);
    }

    #[test]
    fn prometheus_range_structured_but_wrong(answer in matrix_envelope()) {
        let body = serde_json::to_vec(&answer).unwrap();
        let decoded = decode_matrix_checked(200, &body);
        if answer["data"]["resultType"] != "matrix" {
            prop_assert!(decoded.is_none(), "a range answer holds a matrix");
        }
        if let Some(series) = decoded {
            let sent = answer["data"]["result"].as_array().unwrap();
            prop_assert_eq!(series.len(), sent.len());
            for (kept, sent) in series.iter().zip(sent) {
                let sent = sent["values"].as_array().unwrap();
                prop_assert_eq!(kept.points.len(), sent.len());
                for ((t, v), sent) in kept.points.iter().zip(sent) {
                    let expected = parse_value(sent[1].as_str().unwrap()).unwrap();
                    let sent_t = sent[0].as_f64().unwrap();
                    prop_assert!((t - sent_t).abs() <= sent_t.abs() * 1e-12, "{} vs {}", t, sent_t);
                    prop_assert!(*v == expected || (v.is_nan() && expected.is_nan()));
                }
            }
        }
        prop_assert!(decode(200, &body).is_err() || answer["data"]["resultType"] != "matrix",
            "an instant decode never takes a matrix");
    }

    #[test]
    fn prometheus_error_answers(error in "[ -~]{0,30}", kind in "[a-z_]{1,10}", status in 400u16..600) {
        let body = serde_json::to_vec(&json!({"status": "error", "errorType": kind, "error": error})).unwrap();
        prop_assert_eq!(
            decode(status, &body),
            Err(PrometheusError::Api { error_type: kind, error })
        );
    }

    #[test]
    fn haproxy_arbitrary_text(reply in "(?s).{0,400}") {
        check_stat(&reply);
    }

    #[test]
    fn haproxy_arbitrary_text_after_a_header(rows in "(?s)[a-z0-9,\"\n #A-Z]{0,400}") {
        let reply = format!("# pxname,svname,status,weight,uweight,lbtot,algo\n{rows}");
        check_stat(&reply);
    }

    #[test]
    fn haproxy_table_arbitrary_text(reply in "(?s).{0,400}") {
        check_table(&reply);
    }

    #[test]
    fn haproxy_table_arbitrary_text_after_a_header(rows in "(?s)[a-z0-9:=_ \n#x-]{0,400}") {
        check_table(&format!("# table: rpc-backend, type: string, size:1024, used:3\n{rows}"));
    }

    #[test]
    fn haproxy_table_mutated_entries(
        entries in prop::collection::vec(
            (any::<u64>(), prop::option::of(any::<u64>()), prop::option::of(any::<u64>())),
            0..20,
        ),
        cut in any::<prop::sample::Index>(),
        noise in "[ -~\n]{0,12}",
    ) {
        let mut reply = String::from("# table: rpc-backend, type: string, size:1024, used:0\n");
        for (i, (rate_limited, rpc_errors, answers)) in entries.iter().enumerate() {
            reply.push_str(&format!("0x{i:x}: key=s{i} use=0 exp=599000 gpc0={rate_limited}"));
            if let Some(rpc_errors) = rpc_errors {
                reply.push_str(&format!(" gpc1={rpc_errors}"));
            }
            if let Some(answers) = answers {
                reply.push_str(&format!(" http_req_cnt={answers}"));
            }
            reply.push('\n');
        }
        let table = parse_table(&reply).unwrap().unwrap();
        for (i, (rate_limited, rpc_errors, answers)) in entries.iter().enumerate() {
            let expected = ResponseCounts {
                rate_limited: *rate_limited,
                rpc_errors: *rpc_errors,
                answers: *answers,
            };
            prop_assert_eq!(table.get(&format!("s{i}")), Some(&expected));
        }
        // Cut anywhere and with anything inserted, it still parses without a panic.
        let at = reply.char_indices().map(|(i, _)| i).nth(cut.index(reply.chars().count().max(1))).unwrap_or(0);
        check_table(&format!("{}{noise}{}", &reply[..at], &reply[at..]));
        check_table(&reply[..at]);
    }

    #[test]
    fn haproxy_quoted_and_short_rows(
        columns in Just(COLUMNS.to_vec()).prop_shuffle(),
        rows in prop::collection::vec(row(), 0..12),
    ) {
        let mut reply = format!("# {},\n", columns.join(","));
        let mut csv = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
        for (i, row) in rows.iter().enumerate() {
            let fields: Vec<String> = columns
                .iter()
                .take(row.kept_fields)
                .map(|c| row.field(c, i))
                .collect();
            csv.write_record(&fields).unwrap();
        }
        reply.push_str(&String::from_utf8(csv.into_inner().unwrap()).unwrap());
        let stat = parse_stat(&reply).unwrap();
        for (i, row) in rows.iter().enumerate() {
            let server = stat.get("px").and_then(|b| b.servers.get(&format!("s{i}")));
            let complete = row.kept_fields == COLUMNS.len();
            match row.weight.parse::<u32>() {
                Ok(weight) if complete => {
                    let server = server.unwrap();
                    prop_assert_eq!(server.weight, weight);
                    prop_assert_eq!(&server.status, &row.status);
                }
                // Short rows may still carry the weight, depending on the column order.
                Ok(_) => {}
                Err(_) => prop_assert!(server.is_none(), "an unknown weight is never a weight"),
            }
        }
    }
}

const COLUMNS: [&str; 8] = [
    "pxname",
    "svname",
    "status",
    "uweight",
    "lbtot",
    "last_chk",
    "check_desc",
    "algo",
];

/// One server row of generated `show stat` CSV.
#[derive(Debug, Clone)]
struct Row {
    status: String,
    weight: String,
    free_text: String,
    kept_fields: usize,
}

impl Row {
    fn field(&self, column: &str, i: usize) -> String {
        match column {
            "pxname" => "px".into(),
            "svname" => format!("s{i}"),
            "status" => self.status.clone(),
            "uweight" => self.weight.clone(),
            "lbtot" => "7".into(),
            _ => self.free_text.clone(),
        }
    }
}

fn row() -> impl Strategy<Value = Row> {
    (
        "UP|DOWN|MAINT|no check|DOWN 1/2|[ -~]{0,6}",
        "[0-9]{1,3}|[0-9 ,\"-]{0,6}|4294967296",
        "[ -~\n]{0,20}",
        prop_oneof![Just(COLUMNS.len()), 0..COLUMNS.len()],
    )
        .prop_map(|(status, weight, free_text, kept_fields)| Row {
            status,
            weight,
            free_text,
            kept_fields,
        })
}

/// What every `show stat` parse must satisfy.
fn check_stat(reply: &str) {
    match parse_stat(reply) {
        Ok(stat) => {
            let servers: usize = stat.values().map(|b| b.servers.len()).sum();
            assert!(servers <= reply.lines().count(), "more servers than rows");
        }
        Err(HaproxyError::NotStat { first_line }) => {
            assert!(first_line.chars().count() <= 200)
        }
        Err(e) => panic!("parsing cannot fail with a transport error: {e}"),
    }
}

/// What every `show table` parse must satisfy.
fn check_table(reply: &str) {
    match parse_table(reply) {
        Ok(Some(table)) => {
            assert!(table.len() <= MAX_SERVERS);
            assert!(
                table.len() <= reply.lines().count(),
                "more servers than lines"
            );
        }
        Ok(None) => {}
        Err(HaproxyError::NotTable { first_line }) => {
            assert!(first_line.chars().count() <= 200)
        }
        Err(e) => panic!("parsing cannot fail with a transport error: {e}"),
    }
}
