//! Timelines as hand-written SVG: per arm, each provider's weight (as clients feel it: 0 while
//! DOWN) and its share of the traffic in 2 s bins, over one run, with the fault's injection and
//! recovery marked. Lines carry their labels at their ends, so no legend is needed.

use std::fmt::Write as _;

use common::svg::escape;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::arm::SERVERS;
use crate::recorder::Snapshot;

const COLOURS: [&str; 3] = ["#1f6fb4", "#d62728", "#2a9d3a"];
const WIDTH: f64 = 960.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 96.0;
const TOP: f64 = 64.0;
const PANEL: f64 = 84.0;
/// Between an arm's weight and share panels.
const GAP: f64 = 22.0;
/// From one arm's share panel to the next arm's weight panel (room for the arm's name).
const ROW_GAP: f64 = 46.0;
/// Below the last panel: the time axis' labels.
const BOTTOM: f64 = 26.0;
const BIN: Duration = Duration::from_secs(2);
/// Labels at line ends are kept this far apart.
const LABEL_STEP: f64 = 11.0;

/// One run to draw.
pub struct Timeline<'a> {
    pub title: String,
    /// The arms' names, in the snapshots' order.
    pub arms: Vec<&'static str>,
    pub snapshots: &'a [Snapshot],
    /// Time 0 of the axis.
    pub zero: Instant,
    /// Vertical lines across every panel, labelled at the top.
    pub marks: Vec<(Instant, String)>,
    /// Stretches shaded in every panel (a fault in force), and what the shade means.
    pub shaded: Vec<(Instant, Instant)>,
    pub shaded_label: String,
}

fn seconds(at: Instant, zero: Instant) -> f64 {
    if at >= zero {
        (at - zero).as_secs_f64()
    } else {
        -(zero - at).as_secs_f64()
    }
}

/// Each bin's start and every server's share of the requests sent in it; `None` for a bin without
/// requests.
fn share_bins(snapshots: &[Snapshot], arm: usize) -> Vec<(Instant, Option<[f64; 3]>)> {
    let Some(first) = snapshots.first() else {
        return Vec::new();
    };
    let mut edges: Vec<&Snapshot> = vec![first];
    for s in snapshots {
        if s.at >= edges[edges.len() - 1].at + BIN {
            edges.push(s);
        }
    }
    edges
        .windows(2)
        .map(|w| {
            let delta: Vec<u64> = (0..3)
                .map(|i| {
                    w[1].arms[arm][i]
                        .selected
                        .saturating_sub(w[0].arms[arm][i].selected)
                })
                .collect();
            let total: u64 = delta.iter().sum();
            let shares = (total > 0).then(|| [0, 1, 2].map(|i| delta[i] as f64 / total as f64));
            (w[0].at, shares)
        })
        .collect()
}

/// Spreads labels' y positions (sorted by wish) at least [`LABEL_STEP`] apart.
fn spread(mut wishes: Vec<(f64, String, &'static str)>) -> Vec<(f64, String, &'static str)> {
    wishes.sort_by(|a, b| a.0.total_cmp(&b.0));
    for i in 1..wishes.len() {
        let floor = wishes[i - 1].0 + LABEL_STEP;
        if wishes[i].0 < floor {
            wishes[i].0 = floor;
        }
    }
    wishes
}

/// One panel's frame: a step line per server from `(time, value)` points (`None`: a gap).
struct Panel {
    top: f64,
    max: f64,
    unit: &'static str,
    lines: Vec<Vec<(f64, Option<f64>)>>,
}

impl Timeline<'_> {
    fn span(&self) -> (f64, f64) {
        let start = self
            .snapshots
            .first()
            .map_or(0.0, |s| seconds(s.at, self.zero));
        let end = self
            .snapshots
            .last()
            .map_or(1.0, |s| seconds(s.at, self.zero));
        (start, end.max(start + 1.0))
    }

    fn x(&self, t: f64) -> f64 {
        let (start, end) = self.span();
        LEFT + (t - start) / (end - start) * (WIDTH - LEFT - RIGHT)
    }

    fn height(&self) -> f64 {
        TOP + self.arms.len() as f64 * (2.0 * PANEL + GAP + ROW_GAP) + BOTTOM
    }

    fn row_top(&self, arm: usize) -> f64 {
        TOP + ROW_GAP + arm as f64 * (2.0 * PANEL + GAP + ROW_GAP)
    }

    fn weights(&self, arm: usize) -> Panel {
        let lines = (0..3)
            .map(|server| {
                self.snapshots
                    .iter()
                    .map(|s| {
                        let w = s.arms[arm][server].effective_weight();
                        (seconds(s.at, self.zero), Some(f64::from(w)))
                    })
                    .collect()
            })
            .collect::<Vec<Vec<_>>>();
        let top_weight = lines
            .iter()
            .flatten()
            .filter_map(|p| p.1)
            .fold(100.0, f64::max);
        Panel {
            top: self.row_top(arm),
            max: top_weight,
            unit: "",
            lines,
        }
    }

    fn shares(&self, arm: usize) -> Panel {
        let bins = share_bins(self.snapshots, arm);
        let end = self.snapshots.last().map(|s| seconds(s.at, self.zero));
        let lines = (0..3)
            .map(|server| {
                let mut points: Vec<(f64, Option<f64>)> = bins
                    .iter()
                    .map(|(at, shares)| {
                        (seconds(*at, self.zero), shares.map(|s| 100.0 * s[server]))
                    })
                    .collect();
                if let (Some(end), Some(last)) = (end, points.last().copied()) {
                    points.push((end, last.1));
                }
                points
            })
            .collect();
        Panel {
            top: self.row_top(arm) + PANEL + GAP,
            max: 100.0,
            unit: " %",
            lines,
        }
    }

    fn draw(&self, out: &mut String, panel: &Panel, caption: &str) {
        let (start, end) = self.span();
        let y = |v: f64| panel.top + PANEL - v / panel.max * PANEL;
        let (x0, x1) = (self.x(start), self.x(end));
        for (a, b) in &self.shaded {
            let (a, b) = (
                self.x(seconds(*a, self.zero).max(start)),
                self.x(seconds(*b, self.zero).min(end)),
            );
            if b > a {
                let _ = writeln!(
                    out,
                    r##"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{PANEL}" fill="#f6d2d2"/>"##,
                    panel.top,
                    b - a
                );
            }
        }
        for v in [0.0, panel.max / 2.0, panel.max] {
            let (at, unit) = (y(v), panel.unit);
            let _ = writeln!(
                out,
                r##"<line x1="{x0:.1}" y1="{at:.1}" x2="{x1:.1}" y2="{at:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="axis">{v:.0}{unit}</text>"##,
                x0 - 4.0,
                at + 4.0,
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{x0:.1}" y="{:.1}" class="caption">{}</text>"#,
            panel.top - 5.0,
            escape(caption)
        );
        let mut labels = Vec::new();
        for (server, line) in panel.lines.iter().enumerate() {
            let mut d = String::new();
            // The value the pen holds; a point that keeps it adds nothing but at the line's end.
            let mut pen: Option<f64> = None;
            for (i, (t, v)) in line.iter().enumerate() {
                let end = i + 1 == line.len() || line[i + 1].1.is_none();
                match (*v, pen) {
                    (Some(v), None) => {
                        let _ = write!(d, "M{:.1},{:.1}", self.x(*t), y(v));
                    }
                    (Some(v), Some(held)) if v != held || end => {
                        let _ = write!(d, "H{:.1}V{:.1}", self.x(*t), y(v));
                    }
                    _ => {}
                }
                pen = *v;
            }
            // Offset the lines by a pixel each so equal values stay visible side by side.
            let _ = writeln!(
                out,
                r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.8" transform="translate(0,{})"/>"#,
                COLOURS[server],
                server as f64 - 1.0
            );
            if let Some(v) = line.iter().rev().find_map(|p| p.1) {
                labels.push((
                    y(v) + 4.0,
                    format!("{} {v:.0}{}", SERVERS[server], panel.unit),
                    COLOURS[server],
                ));
            }
        }
        for (ly, text, colour) in spread(labels) {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{ly:.1}" fill="{colour}" class="end">{text}</text>"#,
                x1 + 6.0
            );
        }
    }

    /// The SVG document.
    pub fn svg(&self) -> String {
        let (start, end) = self.span();
        let height = self.height();
        let mut out = format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif">
<style>.axis{{font-size:10px;fill:#666}} .caption{{font-size:11px;fill:#333}} .end{{font-size:11px;font-weight:bold}} .arm{{font-size:14px;font-weight:bold}} .mark{{font-size:11px;fill:#000}}</style>
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="16" font-weight="bold">{}</text>
<text x="{LEFT}" y="40" font-size="11" fill="#444">weight as HAProxy applies it (0 while marked DOWN), and share of client requests in 2 s bins (from lbtot); time in s{}</text>
"##,
            escape(&self.title),
            if self.shaded.is_empty() {
                String::new()
            } else {
                format!("; shaded: {}", escape(&self.shaded_label))
            },
        );
        let step = if end - start > 150.0 { 20.0 } else { 10.0 };
        let mut tick = (start / step).ceil() * step + 0.0; // not "-0"
        while tick <= end {
            let x = self.x(tick);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#f0f0f0"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="axis">{tick:.0}</text>"##,
                height - BOTTOM,
                height - 8.0
            );
            tick += step;
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" class="axis">time (s)</text>"#,
            self.x(end) + 6.0,
            height - 8.0
        );
        for (arm, name) in self.arms.iter().enumerate() {
            let _ = writeln!(
                out,
                r#"<text x="8" y="{:.1}" class="arm">{}</text>"#,
                self.row_top(arm) - 22.0,
                escape(name)
            );
            self.draw(&mut out, &self.weights(arm), "weight");
            self.draw(&mut out, &self.shares(arm), "share of client requests");
        }
        for (at, label) in &self.marks {
            let x = self.x(seconds(*at, self.zero));
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#000" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" class="mark">{}</text>"##,
                TOP - 4.0,
                height - BOTTOM,
                x + 3.0,
                TOP + 6.0,
                escape(label)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

/// Writes `svg` as `name` next to the report at `report`, and returns the report's reference.
pub fn save(report: &Path, name: &str, svg: &str, caption: &str) -> std::io::Result<String> {
    std::fs::write(report.with_file_name(name), svg)?;
    Ok(format!("![{caption}]({name})\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::ServerSample;

    fn run() -> (Instant, Vec<Snapshot>) {
        let zero = Instant::now();
        let snapshots = (0..40u64)
            .map(|i| {
                let s = |weight, selected| ServerSample {
                    weight,
                    down: false,
                    selected,
                };
                Snapshot {
                    at: zero + Duration::from_millis(250 * i),
                    arms: vec![[
                        s(100, 3 * i),
                        s(if i < 20 { 50 } else { 0 }, i.min(20)),
                        s(33, i),
                    ]],
                }
            })
            .collect();
        (zero, snapshots)
    }

    #[test]
    fn bins_split_each_two_seconds_of_requests() {
        let (_, snapshots) = run();
        let bins = share_bins(&snapshots, 0);
        assert_eq!(bins.len(), 4);
        assert_eq!(bins[0].1, Some([0.6, 0.2, 0.2]));
        assert_eq!(bins[3].1, Some([0.75, 0.0, 0.25]));
    }

    #[test]
    fn labels_are_spread_apart_in_order() {
        let spread = spread(vec![
            (50.0, "b".into(), "x"),
            (48.0, "a".into(), "x"),
            (90.0, "c".into(), "x"),
        ]);
        let ys: Vec<f64> = spread.iter().map(|l| l.0).collect();
        assert_eq!(ys, [48.0, 59.0, 90.0]);
    }

    #[test]
    fn the_document_labels_every_line_and_mark() {
        let (zero, snapshots) = run();
        let svg = Timeline {
            title: "down <trial>".into(),
            arms: vec!["ethrpc"],
            snapshots: &snapshots,
            zero,
            marks: vec![(zero + Duration::from_secs(5), "fault".into())],
            shaded: vec![(zero, zero + Duration::from_secs(5))],
            shaded_label: "n2 down".into(),
        }
        .svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("down &lt;trial&gt;"));
        for label in [
            "n1 100",
            "n2 0",
            "n3 33",
            "n1 75 %",
            "n2 0 %",
            ">fault<",
            ">ethrpc<",
            "shaded: n2 down",
        ] {
            assert!(svg.contains(label), "{label}");
        }
        assert_eq!(svg.matches("<path").count(), 6);
    }
}
