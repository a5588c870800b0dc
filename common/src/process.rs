//! Process set-up shared by both binaries: logging and stop signals.

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global logger on stderr: `RUST_LOG` filters (default `info`); colours only when
/// stderr is a terminal (see [`ansi_colours`]).
pub fn init_logging(format: LogFormat) {
    let directives =
        std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| DEFAULT_DIRECTIVES.to_owned());
    let ansi = ansi_colours(
        format,
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    log_subscriber(format, &directives, ansi, std::io::stderr).init();
}

const DEFAULT_DIRECTIVES: &str = "info";

/// Whether text log lines carry ANSI colour codes: only on a terminal, and not when `NO_COLOR`
/// is set to anything (no-color.org). Written to a file or a log collector, escape bytes are
/// noise at best and, at worst, instructions to whatever terminal later displays the file.
pub fn ansi_colours(format: LogFormat, stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    format == LogFormat::Text && stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// The logger both binaries install, writing to `writer` (public so tests can capture what is
/// logged). `directives` are `RUST_LOG`'s (`info` if they do not parse). The HTTP stack's own
/// crates are held at `info` whatever they say, as their trace output can include request
/// URLs, which carry provider API keys.
pub fn log_subscriber<W>(
    format: LogFormat,
    directives: &str,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let mut filter =
        EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new(DEFAULT_DIRECTIVES));
    for quiet in [
        "reqwest=info",
        "hyper=info",
        "hyper_util=info",
        "rustls=info",
        "h2=info",
    ] {
        filter = filter.add_directive(quiet.parse().expect("static directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("stop signal received, shutting down");
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex, PoisonError};

    use super::*;

    #[test]
    fn colours_only_for_text_on_a_terminal_without_no_color() {
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        assert!(ansi_colours(LogFormat::Text, true, None));
        assert!(
            ansi_colours(LogFormat::Text, true, empty),
            "empty NO_COLOR is unset"
        );
        assert!(
            !ansi_colours(LogFormat::Text, false, None),
            "a file or a pipe"
        );
        assert!(!ansi_colours(LogFormat::Text, true, set));
        assert!(!ansi_colours(LogFormat::Json, true, None));
    }

    /// A writer into memory that tests can read back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            buffer.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat, ansi: bool) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = log_subscriber(format, "info", ansi, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(provider = "p", "provider is down");
            tracing::debug!("filtered out");
        });
        let bytes = buffer
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        String::from_utf8(bytes).expect("utf-8 log")
    }

    #[test]
    fn the_colour_decision_is_what_reaches_the_log() {
        let plain = logged(LogFormat::Text, false);
        assert!(
            plain.contains("WARN") && plain.contains("provider is down"),
            "{plain}"
        );
        assert!(!plain.contains('\x1b'), "{plain:?}");
        assert!(!plain.contains("filtered out"));
        assert!(
            logged(LogFormat::Text, true).contains('\x1b'),
            "colours when asked"
        );
        let json = logged(LogFormat::Json, false);
        assert!(
            json.starts_with('{') && json.contains(r#""message":"provider is down""#),
            "{json}"
        );
    }
}
