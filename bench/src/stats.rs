//! Percentiles and the Markdown tables of the report.

use std::time::Duration;

/// The `q` quantile (0..=1) of `values` by nearest rank; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// "p50 / p95 / max" of durations measured in trials, where `None` means "did not happen within
/// the window"; such trials are counted and shown as `never` when all missed.
pub fn summary_seconds(values: &[Option<Duration>]) -> String {
    let hits: Vec<f64> = values.iter().flatten().map(Duration::as_secs_f64).collect();
    let missed = values.len() - hits.len();
    if hits.is_empty() {
        return if values.is_empty() {
            "-".into()
        } else {
            "never".into()
        };
    }
    let f = |q| format!("{:.1}", quantile(&hits, q).unwrap_or(f64::NAN));
    let mut text = format!("{} / {} / {} s", f(0.5), f(0.95), f(1.0));
    if missed > 0 {
        text.push_str(&format!(" ({missed} never)"));
    }
    text
}

/// "p50 / p95 / max" of ratios as percentages.
pub fn summary_percent(values: &[f64]) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let f = |q| format!("{:.1}", 100.0 * quantile(values, q).unwrap_or(f64::NAN));
    format!("{} / {} / {} %", f(0.5), f(0.95), f(1.0))
}

/// A target's verdict in the report (targets are reported, never asserted).
pub fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// The p95 of durations measured in trials, in seconds; `None` if any trial never got there
/// (such a trial fails any target).
pub fn p95(values: &[Option<Duration>]) -> Option<f64> {
    let hits: Vec<f64> = values.iter().flatten().map(Duration::as_secs_f64).collect();
    if hits.len() < values.len() {
        return None;
    }
    quantile(&hits, 0.95)
}

/// A Markdown table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        " --- |".repeat(header.len())
    );
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn summaries_count_misses() {
        let d = |s| Some(Duration::from_secs(s));
        assert_eq!(
            summary_seconds(&[d(1), d(3), None]),
            "1.0 / 3.0 / 3.0 s (1 never)"
        );
        assert_eq!(summary_seconds(&[None, None]), "never");
        assert_eq!(summary_percent(&[0.01, 0.02]), "1.0 / 2.0 / 2.0 %");
    }
}
