//! The in-process live loop's log, captured as JSON lines for the tests on real parts to read:
//! the weights it wrote (to compare a backtest with) and the lines it logged when.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use actuator::backtest::parse_time;
use common::process::{log_subscriber, LogFormat};
use serde_json::Value;

/// What the live actuator did to one server: out (with its reason) or back in, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub server: String,
    pub at: f64,
    pub out: Option<String>,
}

/// The process's log, as JSON lines.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// The process's log from now on (installed once; every test of the binary shares it).
    pub fn capture() -> Self {
        static LOG: OnceLock<Log> = OnceLock::new();
        LOG.get_or_init(|| {
            let log = Log::default();
            let writer = log.clone();
            tracing::subscriber::set_global_default(log_subscriber(
                LogFormat::Json,
                "info",
                false,
                move || writer.clone(),
            ))
            .unwrap();
            log
        })
        .clone()
    }

    /// Every line as JSON, with its Unix time.
    fn entries(&self) -> Vec<(f64, Value)> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|line| {
                let entry: Value = serde_json::from_str(line).ok()?;
                let at = parse_time(entry["timestamp"].as_str()?, SystemTime::now()).ok()?;
                Some((at, entry))
            })
            .collect()
    }

    /// The lines whose message contains `text`: (Unix time, the line's fields).
    pub fn lines(&self, text: &str) -> Vec<(f64, Value)> {
        self.entries()
            .into_iter()
            .filter(|(_, e)| {
                e["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(text))
            })
            .map(|(at, e)| (at, e["fields"].clone()))
            .collect()
    }

    /// Every weight the live actuator wrote to or from 0, at the time it logged it.
    pub fn events(&self) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .lines("weight set")
            .into_iter()
            .filter_map(|(at, f)| {
                let (from, to) = (f["from"].as_str()?, f["to"].as_str()?);
                let out = match (from, to) {
                    ("0", "0") => return None,
                    (_, "0") => Some(f["reason"].as_str()?.to_owned()),
                    ("0", _) => None,
                    _ => return None,
                };
                Some(Event {
                    server: f["server"].as_str()?.to_owned(),
                    at,
                    out,
                })
            })
            .collect();
        events.sort_by(|a, b| (&a.server, a.at).partial_cmp(&(&b.server, b.at)).unwrap());
        events
    }
}
