//! serde's messages repeat the offending value (`invalid type: string "https://…/KEY", expected
//! u64`, ``unknown variant `KEY` ``). After `${VAR}` expansion that value may be a secret, and no
//! quoting rule survives a value that holds quotes itself, so the message is rebuilt from its
//! known shapes without the value, and a message of any other shape is not shown.

/// What serde calls the kinds of value it did not expect, longest first where one starts another.
const VALUE_KINDS: &[&str] = &[
    "boolean",
    "integer",
    "floating point",
    "character",
    "string",
    "byte array",
    "unit value",
    "unit variant",
    "Option value",
    "newtype struct",
    "newtype variant",
    "tuple variant",
    "struct variant",
    "sequence",
    "map",
    "enum",
];

/// Messages that name a key or a count but never a value; keys come from the file itself,
/// never from the environment. `invalid duration` is this crate's own.
const VALUE_FREE: &[&str] = &[
    "unknown field `",
    "missing field `",
    "duplicate field `",
    "invalid length ",
    "invalid duration",
];

/// `message` with every value cut out.
pub(super) fn without_values(message: &str) -> String {
    let message = message.trim();
    if VALUE_FREE.iter().any(|prefix| message.starts_with(prefix)) {
        return message.to_owned();
    }
    // The expected part is the crate's own text and comes last, so the last `, expected ` is the
    // real one even when the value contains the same words.
    let expected = message
        .rfind(", expected ")
        .map(|at| &message[at..])
        .unwrap_or("");
    for problem in ["invalid type: ", "invalid value: "] {
        if let Some(value) = message.strip_prefix(problem) {
            let kind = VALUE_KINDS
                .iter()
                .find(|kind| value.starts_with(*kind))
                .unwrap_or(&"a value");
            return format!("{problem}{kind}{expected} (value not shown)");
        }
    }
    if message.starts_with("unknown variant ") {
        return format!("unknown variant{expected} (value not shown)");
    }
    "has a value that cannot be used here (not shown: it may hold a secret)".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_cut_out_whatever_they_hold() {
        for (message, shown) in [
            (
                r#"invalid type: string "a\"KEY", expected u64"#,
                "invalid type: string, expected u64 (value not shown)",
            ),
            (
                r#"invalid type: string "KEY, expected x", expected u64"#,
                "invalid type: string, expected u64 (value not shown)",
            ),
            (
                "invalid value: integer `300000000000`, expected u32",
                "invalid value: integer, expected u32 (value not shown)",
            ),
            (
                "unknown variant `KEY\"`, expected one of `equal`, `latency`",
                "unknown variant, expected one of `equal`, `latency` (value not shown)",
            ),
            (
                "something else entirely: KEY",
                "has a value that cannot be used here (not shown: it may hold a secret)",
            ),
        ] {
            assert_eq!(without_values(message), shown);
        }
    }

    #[test]
    fn messages_without_values_are_kept() {
        let message = "unknown field `colour`, expected one of `name`, `url`";
        assert_eq!(without_values(message), message);
        assert_eq!(without_values("missing field `url`"), "missing field `url`");
    }
}
