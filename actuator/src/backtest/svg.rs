//! The backtest as an SVG timeline: one row per server, its weight over time as a step line
//! (a second policy's dashed), its ejections shaded in their reason's colour and labelled with
//! the reason where they are wide enough (every row also lists its reasons beside its name), no
//! data hatched, fail open marked along the backend's rows. Everything is labelled where it is
//! drawn, so there is no legend to look up.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use common::svg::escape;

use super::summary::{Period, ServerSummary};
use super::time::{format_span, format_time};
use super::Backtest;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 170.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 70.0;
const ROW: f64 = 54.0;
const ROW_GAP: f64 = 16.0;
/// Between backends: room for the backend's name.
const BACKEND_GAP: f64 = 26.0;
const BOTTOM: f64 = 40.0;
/// Width of one character of the 11 px labels, for fitting them.
const CHAR: f64 = 6.2;
const LINES: [&str; 2] = ["#1b4f8a", "#e07b00"];

fn colour(reason: &str) -> &'static str {
    match reason {
        "wrong_chain" => "#7b3fa0",
        "down" => "#c62828",
        "stale" => "#8d6e63",
        "lagging" => "#ef6c00",
        "slow" => "#0277bd",
        "erroring" => "#ad1457",
        "client_errors" => "#00897b",
        _ => "#555555",
    }
}

struct Frame {
    start: f64,
    end: f64,
}

impl Frame {
    fn x(&self, t: f64) -> f64 {
        let span = (self.end - self.start).max(1e-9);
        LEFT + ((t - self.start) / span).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }
}

/// Ticks about every 110 px, at a round number of seconds.
fn ticks(frame: &Frame) -> Vec<f64> {
    let span = frame.end - frame.start;
    let wanted = span / ((WIDTH - LEFT - RIGHT) / 110.0);
    let round = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        10800.0, 21600.0, 43200.0, 86400.0,
    ];
    let every = round
        .iter()
        .copied()
        .find(|r| *r >= wanted)
        .unwrap_or(86400.0 * (wanted / 86400.0).ceil());
    let first = (frame.start / every).ceil() * every;
    (0..)
        .map(|i| first + f64::from(i) * every)
        .take_while(|t| *t <= frame.end)
        .collect()
}

/// The step line of one server's weight: from full weight at the start, through every write.
fn weight_path(frame: &Frame, server: &ServerSummary, full: u32, top: f64) -> String {
    let y = |w: u32| top + ROW - f64::from(w.min(full)) / f64::from(full.max(1)) * (ROW - 6.0);
    let mut d = format!("M{:.1},{:.1}", frame.x(frame.start), y(full));
    for change in &server.writes {
        let _ = write!(d, " H{:.1} V{:.1}", frame.x(change.at), y(change.weight));
    }
    let _ = write!(d, " H{:.1}", frame.x(frame.end));
    d
}

/// A period of a row filled with `fill` at `opacity`.
fn shade(out: &mut String, frame: &Frame, period: &Period, top: f64, fill: &str, opacity: f64) {
    let (x0, x1) = (frame.x(period.start), frame.x(period.end));
    let _ = writeln!(
        out,
        r#"<rect x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{ROW:.1}" fill="{fill}" fill-opacity="{opacity}"/>"#,
        (x1 - x0).max(1.0)
    );
}

/// The timeline of `backtest`.
pub fn render(backtest: &Backtest) -> String {
    let frame = Frame {
        start: backtest.start,
        end: backtest.end,
    };
    let Some(first) = backtest.runs.first() else {
        return String::new();
    };
    let rows: usize = first.backends.iter().map(|b| b.servers.len()).sum();
    let height =
        TOP + first.backends.len() as f64 * BACKEND_GAP + rows as f64 * (ROW + ROW_GAP) + BOTTOM;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    out.push_str(
        r##"<defs><pattern id="nodata" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f4f4f4"/><line x1="0" y1="0" x2="0" y2="6" stroke="#bbbbbb" stroke-width="2"/></pattern></defs>
<rect width="100%" height="100%" fill="white"/>
"##,
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">Backtest {} → {} ({}), step {}</text>"#,
        format_time(backtest.start),
        format_time(backtest.end),
        format_span(backtest.end - backtest.start),
        format_span(backtest.step_seconds)
    );
    let mut legend_x = LEFT;
    for (i, run) in backtest.runs.iter().enumerate() {
        let dash = if i == 0 {
            ""
        } else {
            r#" stroke-dasharray="5,3""#
        };
        let text = format!("weight, {}", run.policy);
        let _ = writeln!(
            out,
            r#"<line x1="{legend_x}" y1="38" x2="{:.0}" y2="38" stroke="{}" stroke-width="2"{dash}/><text x="{:.0}" y="42">{}</text>"#,
            legend_x + 24.0,
            LINES[i.min(1)],
            legend_x + 30.0,
            escape(&text)
        );
        legend_x += 40.0 + text.chars().count() as f64 * CHAR;
    }
    let whose = if backtest.runs.len() > 1 {
        format!(" under {}", escape(&first.policy))
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="58" fill="#555">shaded: ejected{whose} (reason written in the shade) · hatched: no data, weight held · amber bar: fail open</text>"##
    );
    let mut top = TOP;
    for (b, backend) in first.backends.iter().enumerate() {
        top += BACKEND_GAP;
        let _ = writeln!(
            out,
            r#"<text x="8" y="{:.1}" font-size="12" font-weight="bold">backend {} (chain {})</text>"#,
            top - 8.0,
            escape(&backend.backend),
            escape(&backend.chain)
        );
        for s in 0..backend.servers.len() {
            row(&mut out, &frame, backtest, b, s, top);
            top += ROW + ROW_GAP;
        }
    }
    let axis = top;
    for t in ticks(&frame) {
        let x = frame.x(t);
        let label = format_time(t);
        let clock = label.get(11..19).unwrap_or(&label);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{axis:.1}" stroke="#e6e6e6"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#444">{clock}</text>"##,
            axis + 14.0
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">time (UTC)</text>"##,
        WIDTH - RIGHT,
        axis + 30.0
    );
    out.push_str("</svg>\n");
    out
}

/// One server's row: shades, then weight lines, then labels on top.
fn row(out: &mut String, frame: &Frame, backtest: &Backtest, b: usize, s: usize, top: f64) {
    let Some(first) = backtest.runs.first() else {
        return;
    };
    let backend = &first.backends[b];
    let server = &backend.servers[s];
    let full = backend.full_weight;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top:.1}" width="{:.1}" height="{ROW}" fill="#fafafa" stroke="#dddddd"/>"##,
        WIDTH - LEFT - RIGHT
    );
    for period in &server.no_data {
        shade(out, frame, period, top, "url(#nodata)", 1.0);
    }
    let mut reasons = BTreeSet::new();
    let mut labels = Vec::new();
    for e in &server.ejections {
        let period = Period {
            start: e.start,
            end: e.end.unwrap_or(frame.end),
        };
        shade(out, frame, &period, top, colour(e.reason), 0.22);
        reasons.insert(e.reason);
        let width = frame.x(period.end) - frame.x(period.start);
        if width >= e.reason.len() as f64 * CHAR + 6.0 {
            labels.push((frame.x(period.start) + 3.0, e.reason));
        }
    }
    for period in &backend.fail_open {
        let (x0, x1) = (frame.x(period.start), frame.x(period.end));
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{top:.1}" width="{:.1}" height="4" fill="#f2a900"/>"##,
            (x1 - x0).max(1.0)
        );
    }
    for (i, run) in backtest.runs.iter().enumerate() {
        let Some(x) = run.backends.get(b).and_then(|b| b.servers.get(s)) else {
            continue;
        };
        let dash = if i == 0 {
            ""
        } else {
            r#" stroke-dasharray="5,3""#
        };
        let _ = writeln!(
            out,
            r#"<path d="{}" fill="none" stroke="{}" stroke-width="{}"{dash}/>"#,
            weight_path(frame, x, full, top),
            LINES[i.min(1)],
            if i == 0 { 2.0 } else { 1.6 }
        );
    }
    for (x, reason) in labels {
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" fill="{}" font-weight="bold">{reason}</text>"#,
            top + ROW / 2.0 + 4.0,
            colour(reason)
        );
    }
    let name = if server.server == server.provider {
        server.server.clone()
    } else {
        format!("{} ({})", server.server, server.provider)
    };
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12" font-weight="bold">{}</text>"#,
        LEFT - 8.0,
        top + 18.0,
        escape(&name)
    );
    let summary = match server.ejections.len() {
        0 => "never ejected".to_owned(),
        n => format!(
            "{n} ejection{}: {}",
            if n == 1 { "" } else { "s" },
            reasons.into_iter().collect::<Vec<_>>().join(", ")
        ),
    };
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">carried {:.1}%</text>"##,
        LEFT - 8.0,
        top + 32.0,
        escape(&summary),
        LEFT - 8.0,
        top + 46.0,
        server.carried * 100.0
    );
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" fill="#999" font-size="9">{full}</text><text x="{:.1}" y="{:.1}" fill="#999" font-size="9">0</text>"##,
        LEFT + 2.0,
        top + 12.0,
        LEFT + 2.0,
        top + ROW - 2.0
    );
}
