//! The `failover` part: every scenario's trials on the noisy providers, a table per scenario, the
//! ethrpc arm's targets, and a timeline of the first `down` trial.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::arm::Arm;
use crate::load::ClientSummary;
use crate::stack::Stack;
use crate::stats::{met, p95, quantile, summary_percent, summary_seconds, table};
use crate::timeline::{save, Timeline};
use crate::trial::{trial, Scenario, Span, Trial};

/// What to run.
pub struct Options {
    /// The section's title, and what it says first.
    pub title: &'static str,
    pub intro: &'static str,
    /// The ethrpc arm's target for the faulty provider's share of a 60 s window.
    pub share_target: f64,
    pub scenarios: Vec<Scenario>,
    pub trials: usize,
    /// Counted after injection.
    pub window: Duration,
    /// The report's path: timelines are written next to it.
    pub out: Option<PathBuf>,
    /// The scenario whose first trial gets a timeline, and the timeline's file stem.
    pub timeline: Option<(Scenario, &'static str)>,
}

/// The window the share target is set for.
const TARGET_WINDOW: Duration = Duration::from_secs(60);
/// The share target with three providers.
pub const SHARE_TARGET: f64 = 0.03;

/// One arm's row, under the arm's own name (two arms of one kind differ by it).
fn row(name: &str, trials: &[Trial]) -> Vec<String> {
    let zero: Vec<_> = trials.iter().map(|t| t.to_weight_zero).collect();
    let out: Vec<_> = trials.iter().map(|t| t.to_out).collect();
    let back: Vec<_> = trials.iter().map(|t| t.to_back).collect();
    let shares: Vec<f64> = trials.iter().map(|t| t.faulty_share).collect();
    let client = trials
        .iter()
        .fold(ClientSummary::default(), |all, t| all.merge(&t.client));
    vec![
        name.into(),
        summary_seconds(&zero),
        summary_seconds(&out),
        summary_seconds(&back),
        summary_percent(&shares),
        client.latency_text(),
        client.failed_text(),
    ]
}

/// "ethrpc / seed" ratios of the p95 time to weight 0 and the median faulty share.
fn versus_seed(ethrpc: &[Trial], seed: &[Trial]) -> String {
    let zero = |t: &[Trial]| p95(&t.iter().map(|t| t.to_weight_zero).collect::<Vec<_>>());
    let share = |t: &[Trial]| {
        quantile(&t.iter().map(|t| t.faulty_share).collect::<Vec<_>>(), 0.5).unwrap_or(0.0)
    };
    let time = match (zero(ethrpc), zero(seed)) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        (Some(_), None) => "seed never ejected".into(),
        _ => "-".into(),
    };
    let shares = if share(seed) > 0.0 {
        format!("{:.2}", share(ethrpc) / share(seed))
    } else {
        "-".into()
    };
    format!("ethrpc / seed: p95 time to weight 0 {time}; median faulty share {shares}.\n")
}

/// The ethrpc arm's row of the targets table.
fn targets_row(scenario: Scenario, trials: &[Trial], o: &Options) -> String {
    let zero = p95(&trials.iter().map(|t| t.to_weight_zero).collect::<Vec<_>>());
    let target = scenario.target().as_secs_f64();
    let worst_share = trials.iter().map(|t| t.faulty_share).fold(0.0, f64::max);
    let worst_errors = trials
        .iter()
        .map(|t| t.client.failed_share())
        .fold(0.0, f64::max);
    let errors = match scenario.client_error_target() {
        Some(limit) => format!(
            "≤ {:.2} % | {:.3} % | {}",
            100.0 * limit,
            100.0 * worst_errors,
            met(worst_errors <= limit)
        ),
        None => format!("- | {:.3} % | -", 100.0 * worst_errors),
    };
    format!(
        "| `{}` | ≤ {target:.0} s | {} | {} | ≤ {:.0} % | {:.1} % | {} | {errors} |\n",
        scenario.name(),
        zero.map_or("never".into(), |v| format!("{v:.1} s")),
        met(zero.is_some_and(|v| v <= target)),
        100.0 * o.share_target,
        100.0 * worst_share,
        if o.window == TARGET_WINDOW {
            met(worst_share <= o.share_target)
        } else {
            "n/a: the target is for a 60 s window"
        },
    )
}

/// The timeline of one trial, written next to the report; returns the report's reference.
fn timeline(
    stack: &Stack,
    scenario: Scenario,
    span: Span,
    out: &std::path::Path,
    stem: &str,
) -> String {
    let lead = Duration::from_secs(10);
    let from = span.injected.checked_sub(lead).unwrap_or(span.injected);
    let snapshots = stack
        .recorder
        .between(from, span.end + Duration::from_secs(5));
    let svg = Timeline {
        title: format!(
            "`{}` trial 1: {} at 0 s, recovered at {:.0} s",
            scenario.name(),
            scenario.describe(),
            (span.recovered - span.injected).as_secs_f64()
        ),
        arms: stack.arms.iter().map(|a| a.arm.name()).collect(),
        snapshots: &snapshots,
        zero: span.injected,
        marks: vec![
            (span.injected, "fault".into()),
            (span.recovered, "recovered".into()),
        ],
        shaded: vec![(span.injected, span.recovered)],
        shaded_label: "the fault in force".into(),
    }
    .svg();
    let name = format!("{stem}.svg");
    save(out, &name, &svg, &format!("`{}` timeline", scenario.name())).unwrap_or_else(|e| {
        eprintln!("could not write {name}: {e}");
        String::new()
    })
}

/// Runs every scenario's trials and returns the report section.
pub async fn run(stack: &mut Stack, o: &Options) -> String {
    let arms: Vec<Arm> = stack.arms.iter().map(|a| a.arm).collect();
    let mut report = format!(
        "## {}\n\n{}The fault hits n2 on top of its noise (stall: mining stops; slow: answers held 4 s; \
         down: the node is killed, its proxy then closes connections; errors: HTTP 500 with a JSON-RPC error). \
         {} trial(s) per scenario, traffic counted over {} s after injection. Times are p50 / p95 / max; \
         \"out of rotation\" is weight 0 or marked DOWN by HAProxy's health check; \"back\" is the start of its \
         first 5 s in rotation at one weight (slow start and any re-ejection over). Failed client requests are summed over the trials' \
         windows.\n\n",
        o.title,
        o.intro,
        o.trials,
        o.window.as_secs()
    );
    let mut targets = String::new();
    for &scenario in &o.scenarios {
        let mut results: Vec<Vec<Trial>> = vec![Vec::new(); arms.len()];
        let mut first_span = None;
        for t in 0..o.trials {
            eprintln!("failover: {} trial {}/{}", scenario.name(), t + 1, o.trials);
            let (trials, span) = trial(stack, scenario, o.window).await;
            first_span.get_or_insert(span);
            for (all, one) in results.iter_mut().zip(trials) {
                all.push(one);
            }
        }
        let rows: Vec<Vec<String>> = stack
            .arms
            .iter()
            .zip(&results)
            .map(|(a, r)| row(a.name(), r))
            .collect();
        let _ = writeln!(
            report,
            "### `{}`\n\n{}",
            scenario.name(),
            table(
                &[
                    "arm",
                    "injection → weight 0",
                    "injection → out of rotation",
                    "recovery → back",
                    "faulty provider's share",
                    "client p50 / p99",
                    "failed client requests"
                ],
                &rows
            )
        );
        if let Some(seed) = arms.iter().position(|a| *a == Arm::Seed) {
            report.push_str(&versus_seed(&results[0], &results[seed]));
            report.push('\n');
        }
        if let (Some((drawn, stem)), Some(span), Some(out)) = (o.timeline, first_span, &o.out) {
            if drawn == scenario {
                report.push_str(&timeline(stack, scenario, span, out, stem));
                report.push('\n');
            }
        }
        targets.push_str(&targets_row(scenario, &results[0], o));
    }
    let _ = writeln!(
        report,
        "### Targets (ethrpc arm)\n\n| scenario | weight 0 (p95) | measured | | faulty share | worst trial | | \
         failed client requests | worst trial | |\n|{}\n{targets}",
        " --- |".repeat(10)
    );
    report
}
