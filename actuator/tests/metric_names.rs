//! Every `ethrpc_*` series the dashboards, the alert rules, their tests and the actuator's default
//! queries read is one the binaries publish: the exporter's from its real exposition, the
//! actuator's from its declarations. A renamed metric fails here, not silently on a dashboard.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::config::{Config, Queries};
use testkit::workspace_root;

/// The `ethrpc_*` names in `text`, with histogram suffixes taken off.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("ethrpc_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if before_ok {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(base.to_owned());
        }
        i = end;
    }
    out
}

/// The exporter's families, from a real exposition with every series present.
fn exporter_families() -> BTreeSet<String> {
    let text = "[[chain]]\nname = \"c\"\nchain_id = 1\nbackend = \"b\"\n\
                [chain.capabilities]\narchive_block = 1\nfinalized = true\n\
                [[chain.provider]]\nname = \"p\"\nurl = \"http://127.0.0.1:1\"\n";
    let config = Config::parse(Path::new("t.toml"), text, |_| None).unwrap();
    let metrics = exporter::metrics::Metrics::new();
    let chain = metrics.register_chain(&config.chains[0]);
    chain.head.set(1.0);
    for g in [
        &chain.providers[0].up,
        &chain.providers[0].chain_id_match,
        &chain.providers[0].probe_duration,
        &chain.providers[0].block_number,
        &chain.providers[0].block_timestamp,
        &chain.providers[0].block_age,
        &chain.providers[0].block_lag,
        &chain.providers[0].consecutive_failures,
        &chain.providers[0].last_probe,
        &chain.providers[0].finalized_lag,
    ] {
        g.set(1.0);
    }
    for c in &chain.providers[0].capabilities {
        c.set_finding(exporter::capability::Finding::Capable);
    }
    names(&metrics.render())
        .into_iter()
        .filter(|n| !n.starts_with("ethrpc_actuator_"))
        .collect()
}

#[test]
fn dashboards_alerts_and_queries_read_only_published_series() {
    let published_by_exporter = exporter_families();
    let declared_by_actuator: BTreeSet<String> = names(include_str!("../src/metrics.rs"));
    let root = workspace_root();
    let q = Queries::defaults(Duration::from_secs(6));
    let queries = [
        q.up,
        q.chain_id_match,
        q.block_lag,
        q.block_age,
        q.latency,
        q.error_ratio,
        q.last_probe,
    ]
    .join("\n");
    let mut sources = vec![("default queries".to_owned(), queries)];
    for file in [
        "dashboards/ethrpc-overview.json",
        "alerts/ethrpc.rules.yml",
        "alerts/tests.yml",
    ] {
        sources.push((
            file.to_owned(),
            std::fs::read_to_string(root.join(file)).unwrap(),
        ));
    }
    let mut unknown = Vec::new();
    for (source, text) in &sources {
        for name in names(text) {
            let known = if name.starts_with("ethrpc_actuator_") {
                declared_by_actuator.contains(&name)
            } else {
                published_by_exporter.contains(&name)
            };
            if !known {
                unknown.push(format!("{source}: {name}"));
            }
        }
    }
    assert!(unknown.is_empty(), "series nobody publishes: {unknown:#?}");
    assert!(
        published_by_exporter.contains("ethrpc_up"),
        "{published_by_exporter:?}"
    );
}
