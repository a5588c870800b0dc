//! Fuzzing the JSON-RPC reply parser, the third parser that reads outside input: arbitrary bytes,
//! JSON of the wrong shape, and mutated real replies never panic, always end in a block or a
//! named reason, and never carry a control character or an unbounded detail.
//! A longer run: `PROPTEST_CASES=100000 cargo test --release -p ethrpc-exporter --test fuzz_rpc`.

use exporter::provider_text::Redactor;
use exporter::reason::Reason;
use exporter::rpc::{decode_block, decode_chain_id, ProbeError};
use proptest::prelude::*;

const BLOCK: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"number":"0x10","timestamp":"0x65","hash":"0x00000000000000000000000000000000000000000000000000000000000000ab","extra":[1,2,{"x":null}]}}"#;

fn check_error(e: &ProbeError) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(e.reason, Reason::InvalidResponse | Reason::RpcError),
        "{:?}",
        e.reason
    );
    prop_assert!(e.detail.len() <= 1024, "detail of {} bytes", e.detail.len());
    prop_assert!(!e.detail.chars().any(char::is_control), "{:?}", e.detail);
    Ok(())
}

/// A JSON value of any shape, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        "\\PC{0,40}".prop_map(serde_json::Value::from),
        "0x[0-9a-fA-F]{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("number".to_owned()),
                    Just("timestamp".to_owned()),
                    Just("hash".to_owned()),
                    Just("result".to_owned()),
                    Just("error".to_owned()),
                    Just("message".to_owned()),
                    Just("code".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_end_in_a_named_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let r = Redactor::default();
        if let Err(e) = decode_block(&bytes, &r) { check_error(&e)?; }
        if let Err(e) = decode_chain_id(&bytes, &r) { check_error(&e)?; }
    }

    #[test]
    fn wrong_shapes_end_in_a_named_error(result in json(), error in proptest::option::of(json())) {
        let mut envelope = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": result});
        if let Some(error) = error {
            envelope["error"] = error;
        }
        let bytes = serde_json::to_vec(&envelope).unwrap();
        let r = Redactor::default();
        match decode_block(&bytes, &r) {
            Ok(block) => prop_assert_eq!(block.hash.len(), 66),
            Err(e) => check_error(&e)?,
        }
        if let Err(e) = decode_chain_id(&bytes, &r) { check_error(&e)?; }
    }

    #[test]
    fn mutated_real_replies_end_in_a_block_or_a_named_error(
        cut in 0..BLOCK.len(),
        flips in prop::collection::vec((0..BLOCK.len(), any::<u8>()), 0..4),
    ) {
        let mut bytes = BLOCK.as_bytes().to_vec();
        for (at, byte) in flips {
            bytes[at] = byte;
        }
        bytes.truncate(cut.max(1));
        if let Err(e) = decode_block(&bytes, &Redactor::default()) { check_error(&e)?; }
    }
}

#[test]
fn the_real_reply_decodes() {
    let block = decode_block(BLOCK.as_bytes(), &Redactor::default()).unwrap();
    assert_eq!((block.number, block.timestamp), (16, 101));
}
