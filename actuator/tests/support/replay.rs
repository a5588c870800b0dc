//! Running `ethrpc-actuator backtest` over a recorded run, and reading its JSON answer back as
//! the live log's events, to compare the two.

use std::path::Path;

use serde_json::Value;

use crate::log::Event;

/// Runs the binary with `args`: (success, stdout, stderr).
pub async fn backtest(config: &Path, args: &[String]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ethrpc-actuator"))
        .arg("--config")
        .arg(config)
        .arg("backtest")
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn range(from: f64, to: f64) -> Vec<String> {
    vec![
        "--from".into(),
        format!("{from:.3}"),
        "--to".into(),
        format!("{to:.3}"),
    ]
}

/// The backtest's events from its JSON run: ejection starts and ends.
pub fn replayed(run: &Value) -> Vec<Event> {
    let mut events = Vec::new();
    for server in run["backends"][0]["servers"].as_array().unwrap() {
        let name = server["server"].as_str().unwrap();
        for e in server["ejections"].as_array().unwrap() {
            events.push(Event {
                server: name.to_owned(),
                at: e["start"].as_f64().unwrap(),
                out: Some(e["reason"].as_str().unwrap().to_owned()),
            });
            if let Some(end) = e["end"].as_f64() {
                events.push(Event {
                    server: name.to_owned(),
                    at: end,
                    out: None,
                });
            }
        }
    }
    events.sort_by(|a, b| (&a.server, a.at).partial_cmp(&(&b.server, b.at)).unwrap());
    events
}
