//! Text a provider wrote (its error messages, a result it sent instead of a block, the causes of
//! a transport error) made safe to show. Some providers echo the request path or the key in an
//! "invalid key" error, so such text can carry the very secrets of the provider's URL and headers;
//! and it can carry a newline that forges a log line or an escape that drives a terminal.

use common::config::ProviderConfig;

/// What a removed secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Removes one provider's secrets from text it wrote.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is removed whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// The secrets of `provider`'s URL and headers.
    pub fn new(provider: &ProviderConfig) -> Self {
        let mut secrets = provider.url.secret_parts();
        secrets.extend(provider.headers.secret_parts());
        secrets.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret, REDACTED)
        })
    }
}

/// `text` fit for one log line, a page and a terminal: control characters (newlines, escapes)
/// and the invisible characters that split lines or reorder text are written as Rust escapes
/// (`\n`, `\u{1b}`), and the text is cut after `max` bytes with `…`.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 4);
    for c in text.chars() {
        let start = out.len();
        if unsafe_to_show(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(start);
            out.push('…');
            break;
        }
    }
    out
}

/// Control characters, line and paragraph separators, and bidirectional overrides.
fn unsafe_to_show(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_is_replaced_the_longest_first() {
        let redactor = Redactor {
            secrets: vec!["KEY-LONG".to_owned(), "KEY".to_owned()],
        };
        assert_eq!(
            redactor.redact("bad key KEY-LONG in /v2/KEY?k=KEY"),
            "bad key [redacted] in /v2/[redacted]?k=[redacted]"
        );
        assert_eq!(Redactor::default().redact("as is"), "as is");
    }

    #[test]
    fn control_characters_are_escaped_not_passed() {
        let shown = printable("bad\nINFO forged line\r\x1b[31mred\u{202e}", 200);
        assert_eq!(shown, "bad\\nINFO forged line\\r\\u{1b}[31mred\\u{202e}");
        assert_eq!(printable("tab\there é ✓", 200), "tab\\there é ✓");
    }

    #[test]
    fn long_text_is_cut_on_a_character_and_never_mid_escape() {
        let cut = printable(&"é".repeat(300), 200);
        assert!(cut.len() <= 200 + '…'.len_utf8() && cut.ends_with('…'));
        let cut = printable(&format!("{}\x1b", "a".repeat(198)), 200);
        assert_eq!(cut, format!("{}…", "a".repeat(198)), "no half of \\u{{1b}}");
        assert_eq!(printable("short", 200), "short");
    }
}
