//! The cycle report as a table, per backend: what `ethrpc-actuator explain` prints and `/` shows.

use std::fmt::Write as _;

use crate::decision::Verdict;
use crate::haproxy::WriteOutcome;
use crate::report::{CycleReport, ServerReport};

fn verdict_text(v: Verdict) -> String {
    match v {
        Verdict::Healthy => "healthy".into(),
        Verdict::SlowStart => "slow start".into(),
        Verdict::Ejected(_) => "ejected".into(),
        Verdict::Readmitting { streak, .. } => format!("readmitting ({streak} ok)"),
        Verdict::FailOpen(_) => "fail open".into(),
        Verdict::NoData => "no data: hold".into(),
        Verdict::Standby => "standby".into(),
    }
}

fn row(s: &ServerReport) -> Vec<String> {
    let num = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_owned(), f);
    let o = s.observation;
    let set = match (&s.write, &s.outcome) {
        (_, Some(WriteOutcome::Failed(reply))) => format!("failed: {reply}"),
        (Some(w), _) => w.to_string(),
        (None, _) => s
            .desired
            .map_or("(hold)".to_owned(), |d| format!("{d} (as is)")),
    };
    let clients = s.clients.map(|c| {
        let mut text = format!("{:.1}/s", c.rate());
        if let Some(r) = c.failed_ratio().filter(|r| *r > 0.0) {
            let _ = write!(text, " {:.0}% failed", r * 100.0);
        }
        if let Some(r) = c.rpc_error_ratio().filter(|r| *r > 0.0) {
            let _ = write!(text, " ({:.0}% JSON-RPC errors)", r * 100.0);
        }
        if let Some(r) = c.rate_limited_ratio().filter(|r| *r > 0.0) {
            let _ = write!(text, " {:.0}% rate limited", r * 100.0);
        }
        text
    });
    vec![
        s.server.clone(),
        s.provider.clone(),
        s.tier.to_string(),
        o.map_or("-".into(), |o| if o.up { "1".into() } else { "0".into() }),
        num(o.and_then(|o| o.block_lag), &|v| format!("{v:.0}")),
        num(o.and_then(|o| o.block_age), &|v| format!("{v:.1}s")),
        num(o.and_then(|o| o.latency), &|v| {
            format!("{:.0}ms", v * 1000.0)
        }),
        num(s.weighed_latency, &|v| format!("{:.0}ms", v * 1000.0)),
        num(o.and_then(|o| o.error_ratio), &|v| format!("{v:.2}")),
        clients.unwrap_or_else(|| "-".into()),
        num(s.limit, &|v| format!("{v:.1}/s")),
        if s.in_haproxy {
            verdict_text(s.verdict)
        } else {
            "not in HAProxy".into()
        },
        s.verdict.reason().map_or("-".into(), |r| r.as_str().into()),
        s.ejections.to_string(),
        num(s.returns_in, &|v| format!("{v:.0}s")),
        s.current.map_or("-".into(), |w| w.to_string()),
        set,
    ]
}

/// Which tiers serve and why, with the demand and what the tiers in use can carry.
fn tiers_text(b: &crate::report::BackendReport) -> String {
    let demand = b
        .demand
        .map_or("not measured yet".to_owned(), |d| format!("{d:.1} req/s"));
    let capacity = b
        .capacity
        .map_or("unlimited".to_owned(), |c| format!("{c:.1} req/s"));
    let top = b.servers.iter().map(|s| s.tier).max();
    let serving = match b.tier {
        None => "no server is available: every tier stays as the policy left it".to_owned(),
        Some(t) if t.get() == 1 => "tier 1 serves".to_owned(),
        Some(t) => format!(
            "tiers up to {t} serve: the lower tiers lack healthy servers or capacity for the demand"
        ),
    };
    let standing_by = if b.tier.is_some() && top > b.tier {
        "; higher tiers stand by"
    } else {
        ""
    };
    let held = b.release_held_for.map_or(String::new(), |s| {
        format!(
            "; held another {s:.0}s: the last release failed (the tiers were needed again soon)"
        )
    });
    let why = format!("{serving}{held}{standing_by}");
    let overload = if b.overloaded {
        "; OVERLOADED: demand above every plan limit in use, shared by limit"
    } else {
        ""
    };
    format!("{why} (demand {demand}, capacity {capacity}{overload})")
}

/// Renders `report` as aligned text tables.
pub fn render(report: &CycleReport) -> String {
    let header: Vec<String> = [
        "server",
        "provider",
        "tier",
        "up",
        "lag",
        "age",
        "latency",
        "smoothed",
        "errors",
        "clients",
        "limit",
        "verdict",
        "reason",
        "ejections",
        "back in",
        "now",
        "set",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    let mut out = crate::engine_lag::explain_line(report.engine_lag);
    for b in &report.backends {
        let algo = if b.algorithm.is_empty() {
            "not in HAProxy"
        } else {
            &b.algorithm
        };
        let mode = if b.static_algorithm {
            ", static: on/off only"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "backend {} (chain {}, {algo}{mode})",
            b.backend, b.chain
        );
        let held = b.without_data();
        if held > 0 {
            let _ = writeln!(
                out,
                "  HOLDING {held} server(s): no fresh data from Prometheus, their weights are left as they are"
            );
        }
        let _ = writeln!(out, "  {}", tiers_text(b));
        if b.fail_open {
            let _ = writeln!(
                out,
                "  FAIL OPEN: every server is bad; all share the traffic"
            );
        }
        let rows: Vec<Vec<String>> = std::iter::once(header.clone())
            .chain(b.servers.iter().map(row))
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
        }
        for server in &b.not_configured {
            let _ = writeln!(out, "  {server}: in HAProxy but not configured; left alone");
        }
        for server in &b.backups {
            let _ = writeln!(
                out,
                "  {server}: HAProxy backup server, its last resort when no active server is usable; left alone"
            );
        }
        for server in &b.reserves_without_backup {
            let _ = writeln!(out, "  WARNING {}", reserve_without_backup(server));
        }
        out.push('\n');
    }
    out
}

/// What a reserve without a `backup` twin costs, and the fix in one line.
pub fn reserve_without_backup(server: &str) -> String {
    format!(
        "{server}: a reserve (tier 2 or more) with no `backup` entry in HAProxy: if every primary \
         dies at once, clients' requests fail until the next cycle brings {server} in; add \
         `server {server}-backup <{server}'s address> backup` to the backend \
         (deploy/README.md, \"Reserves (tiers) in HAProxy\")"
    )
}
