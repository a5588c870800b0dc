//! The backtest as text: per backend a table of every server under every policy, then each
//! policy's ejections, fail-open and standby stretches with their times.

use std::fmt::Write as _;

use super::summary::{Period, RunSummary};
use super::time::{format_span, format_time};
use super::Backtest;

/// Policy names in tables: A, B.
fn letter(run: usize) -> char {
    char::from(b'A' + u8::try_from(run.min(25)).unwrap_or(25))
}

/// Rows padded to their columns' widths, two spaces apart, indented.
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_owned();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn periods(out: &mut String, what: &str, policy: &str, list: &[(String, &[Period])]) {
    let any = list.iter().any(|(_, p)| !p.is_empty());
    if !any {
        let _ = writeln!(out, "  {what}{policy}: none");
        return;
    }
    let _ = writeln!(out, "  {what}{policy}:");
    let rows: Vec<Vec<String>> = list
        .iter()
        .flat_map(|(name, periods)| {
            periods.iter().map(move |p| {
                vec![
                    name.clone(),
                    format!("{} → {}", format_time(p.start), format_time(p.end)),
                    format_span(p.end - p.start),
                ]
            })
        })
        .collect();
    out.push_str(&table(&rows, "    "));
}

/// The whole backtest as text.
pub fn render(backtest: &Backtest) -> String {
    let mut out = String::new();
    let span = backtest.end - backtest.start;
    let _ = writeln!(
        out,
        "backtest {} → {} ({}), step {}: {} steps",
        format_time(backtest.start),
        format_time(backtest.end),
        format_span(span),
        format_span(backtest.step_seconds),
        backtest.steps
    );
    let compare = backtest.runs.len() > 1;
    let policies: Vec<String> = backtest
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{} = {}", letter(i), r.policy))
        .collect();
    let _ = writeln!(out, "policy: {}", policies.join("; "));
    let Some(first) = backtest.runs.first() else {
        return out;
    };
    for (b, backend) in first.backends.iter().enumerate() {
        let _ = writeln!(
            out,
            "\nbackend {} (chain {})",
            backend.backend, backend.chain
        );
        let mut header: Vec<String> = vec!["server".into()];
        if compare {
            header.push("policy".into());
        }
        header.extend(
            [
                "ejections",
                "writes",
                "at 0",
                "below full",
                "carried",
                "no data",
            ]
            .map(String::from),
        );
        let mut rows = vec![header];
        for (s, server) in backend.servers.iter().enumerate() {
            for (i, run) in backtest.runs.iter().enumerate() {
                let Some(x) = run.backends.get(b).and_then(|b| b.servers.get(s)) else {
                    continue;
                };
                let name = if i > 0 {
                    String::new()
                } else if server.server == server.provider {
                    server.server.clone()
                } else {
                    format!("{} ({})", server.server, server.provider)
                };
                let mut row = vec![name];
                if compare {
                    row.push(letter(i).to_string());
                }
                row.extend([
                    x.ejections.len().to_string(),
                    x.writes.len().to_string(),
                    format_span(x.seconds_at_zero),
                    format_span(x.seconds_below_full),
                    format!("{:.1}%", x.carried * 100.0),
                    format_span(x.seconds_without_data),
                ]);
                rows.push(row);
            }
        }
        out.push_str(&table(&rows, "  "));
        for (i, run) in backtest.runs.iter().enumerate() {
            let Some(backend) = run.backends.get(b) else {
                continue;
            };
            let policy = if compare {
                format!(", {}", letter(i))
            } else {
                String::new()
            };
            ejections(&mut out, &policy, run, b);
            let fail_open = [(String::from("backend"), backend.fail_open.as_slice())];
            periods(&mut out, "fail open", &policy, &fail_open);
            let standby: Vec<(String, &[Period])> = backend
                .servers
                .iter()
                .map(|s| (s.server.clone(), s.standby.as_slice()))
                .collect();
            periods(&mut out, "standby (tier not in use)", &policy, &standby);
            if backend.seconds_without_servers > 0.0 {
                let _ = writeln!(
                    out,
                    "  every weight 0{policy}: {}",
                    format_span(backend.seconds_without_servers)
                );
            }
        }
    }
    out
}

fn ejections(out: &mut String, policy: &str, run: &RunSummary, b: usize) {
    let Some(backend) = run.backends.get(b) else {
        return;
    };
    let rows: Vec<Vec<String>> = backend
        .servers
        .iter()
        .flat_map(|s| {
            s.ejections.iter().map(move |e| {
                let (end, span) = match e.end {
                    Some(end) => (format_time(end), format_span(end - e.start)),
                    None => ("past the end".to_owned(), String::new()),
                };
                vec![
                    s.server.clone(),
                    format!("{} → {end}", format_time(e.start)),
                    span,
                    e.reason.to_owned(),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        let _ = writeln!(out, "  ejections{policy}: none");
    } else {
        let _ = writeln!(out, "  ejections{policy}:");
        out.push_str(&table(&rows, "    "));
    }
}
