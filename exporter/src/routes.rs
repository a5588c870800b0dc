//! The exporter's HTTP endpoints: `/metrics`, `/healthz`, `/readyz` and a status page at `/`.

use std::fmt::Write as _;

use common::http_server::{Reply, StatusCode};

use crate::Exporter;

/// Answers one GET.
pub fn route(exporter: &Exporter, path: &str) -> Reply {
    match path {
        "/metrics" => Reply::metrics(exporter.metrics.render()),
        "/healthz" => Reply::text(StatusCode::OK, "ok\n"),
        "/readyz" if exporter.ready() => Reply::text(StatusCode::OK, "ready\n"),
        "/readyz" => Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first probe round\n",
        ),
        "/" => Reply {
            status: StatusCode::OK,
            content_type: "text/html; charset=utf-8",
            body: status_page(exporter),
        },
        _ => Reply::text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz, /readyz or /\n",
        ),
    }
}

/// One row per provider, by name (names are `[A-Za-z0-9_.:-]`, so need no escaping; error
/// details do).
fn status_page(exporter: &Exporter) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><title>ethrpc-exporter</title></head><body>\
         <h1>ethrpc-exporter</h1><p><a href=\"/metrics\">/metrics</a></p>",
    );
    for prober in &exporter.chains {
        let config = prober.config();
        let view = prober.view();
        let head = view.head.map_or("unknown".to_owned(), |h| h.to_string());
        let _ = write!(
            html,
            "<h2>{} (chain id {}, head {head})</h2><table border=1 cellpadding=4>\
             <tr><th>provider</th><th>state</th><th>latency</th><th>block</th>\
             <th>effective head</th><th>lag</th><th>age</th><th>last error</th><th>capabilities</th></tr>",
            config.name, config.chain_id
        );
        for (i, (p, pv)) in config.providers.iter().zip(&view.providers).enumerate() {
            let state = match (pv.up, &pv.last_error) {
                (None, _) => "unknown".to_owned(),
                (Some(true), _) => "up".to_owned(),
                (Some(false), Some(e)) => {
                    format!("down: {} ({} in a row)", e.reason, pv.consecutive_failures)
                }
                (Some(false), None) => "down".to_owned(),
            };
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            let capabilities: Vec<String> = prober
                .capabilities(i)
                .into_iter()
                .map(|(c, f)| format!("{c}: {}", f.map_or("unknown", |f| f.as_str())))
                .collect();
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                p.name,
                opt(pv.latency.map(|l| format!("{} ms", l.as_millis()))),
                opt(pv.block.as_ref().map(|b| b.number.to_string())),
                opt(pv.effective_head.map(|h| h.to_string())),
                opt(pv.lag.map(|l| l.to_string())),
                opt(pv.age_seconds.map(|a| format!("{a:.0} s"))),
                escape(&opt(pv.last_error.as_ref().map(|e| e.detail.clone()))),
                opt((!capabilities.is_empty()).then(|| capabilities.join(", "))),
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</body></html>\n");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
