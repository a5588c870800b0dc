//! A failed cycle's reason, logged once per kind of failure rather than every cycle: an engine
//! that answers with another API's shape (an HTML page, JSON without `status`, a proxy's `404`)
//! or not at all fails every cycle the same way, and one line with its reply says it; another
//! kind of failure, or the recovery, is logged when it comes.
//!
//! The engine's reply is quoted redacted and cut: an auth proxy's error page may echo the request
//! path, which can hold a token of `prometheus_url`, and an error string may be 64 KiB.

use std::mem::{discriminant, Discriminant};

use common::secret::SecretUrl;

use crate::error::CycleError;
use crate::prometheus_api::PrometheusError;

/// What a removed secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Longest reason logged, in characters.
const MAX_LOGGED: usize = 300;

/// What kind of failure: the error's variant and, for the engine, its error's variant and HTTP
/// status. Two failures of one kind are the same condition (a message may carry a request id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    cycle: Discriminant<CycleError>,
    engine: Option<Discriminant<PrometheusError>>,
    status: Option<u16>,
}

fn kind(error: &CycleError) -> Kind {
    let (engine, status) = match error {
        CycleError::Prometheus(e) => (
            Some(discriminant(e)),
            match e {
                PrometheusError::NotJson { status, .. } => Some(*status),
                _ => None,
            },
        ),
        CycleError::Haproxy(_) => (None, None),
    };
    Kind {
        cycle: discriminant(error),
        engine,
        status,
    }
}

/// `text` with every secret of `url` replaced by [`REDACTED`], its control characters escaped
/// (no forged log lines) and cut after [`MAX_LOGGED`] characters.
pub fn redacted(text: &str, url: &SecretUrl) -> String {
    let mut secrets = url.secret_parts();
    // Longest first, so that a secret containing another is removed whole.
    secrets.sort_unstable_by_key(|s| std::cmp::Reverse(s.len()));
    let clean = secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret, REDACTED)
    });
    let mut out = String::with_capacity(clean.len().min(MAX_LOGGED * 4));
    for (i, c) in clean.chars().enumerate() {
        if i == MAX_LOGGED {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The failures logged so far.
#[derive(Debug, Default)]
pub struct FailureLog {
    /// The kind of the failure logged last, while cycles keep failing.
    failing: Option<Kind>,
}

impl FailureLog {
    /// A cycle failed: logged when it is a new kind of failure.
    pub fn failed(&mut self, error: &CycleError, url: &SecretUrl) {
        let kind = kind(error);
        if self.failing == Some(kind) {
            return;
        }
        self.failing = Some(kind);
        let error = redacted(&error.to_string(), url);
        tracing::warn!(%error, "cycle failed; weights left as they are, the status page and metrics keep serving (logged once until the failure changes or ends)");
    }

    /// A cycle succeeded: the end of a failure is logged.
    pub fn succeeded(&mut self) {
        if self.failing.take().is_some() {
            tracing::info!("cycles succeed again");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use url::Url;

    use super::*;

    fn url(text: &str) -> SecretUrl {
        SecretUrl::new(Url::parse(text).unwrap())
    }

    #[test]
    fn the_urls_secrets_are_removed_and_the_text_is_cut() {
        let u = url("http://user:hunter2@vm.example/tok3n-abc/select/0/prometheus");
        let text = "404 page not found: /tok3n-abc/select/0/prometheus/api/v1/query\nuser hunter2";
        let clean = redacted(text, &u);
        assert!(
            !clean.contains("tok3n") && !clean.contains("hunter2"),
            "{clean}"
        );
        assert!(
            clean.contains("[redacted]") && clean.contains("\\n"),
            "{clean}"
        );
        let long = redacted(&"x".repeat(1000), &u);
        assert_eq!(long.chars().count(), MAX_LOGGED + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn one_kind_of_failure_is_one_condition() {
        let not_json = |status, snippet: &str| {
            CycleError::Prometheus(PrometheusError::NotJson {
                status,
                snippet: snippet.into(),
            })
        };
        assert_eq!(kind(&not_json(404, "a")), kind(&not_json(404, "b")));
        assert_ne!(kind(&not_json(404, "a")), kind(&not_json(200, "a")));
        let timeout = CycleError::Prometheus(PrometheusError::Timeout(Duration::from_secs(2)));
        assert_ne!(kind(&not_json(404, "a")), kind(&timeout));
        let mut log = FailureLog::default();
        log.failed(&timeout, &url("http://127.0.0.1:1"));
        assert!(log.failing.is_some());
        log.succeeded();
        assert!(log.failing.is_none());
    }
}
