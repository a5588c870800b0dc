//! The real `ethrpc-exporter` binary against providers that fail in every way it names: each
//! failure gets its reason, the exporter keeps going, `Retry-After` is honoured, the output is
//! promtool-clean, and the API key in the URLs and headers never appears anywhere.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use testkit::fake_rpc::FakeRpc;
use testkit::metrics_text::{promtool_check_metrics, sample};
use testkit::{free_port, get_text, wait_for};

const MARKER: &str = "MARKERKEY7f3a";
const WAIT: Duration = Duration::from_secs(30);

/// (provider name, URL, reason its errors must carry; None for the healthy one)
fn providers(fake: &FakeRpc) -> Vec<(&'static str, String, Option<&'static str>)> {
    let secret_path = format!("v3/{MARKER}?key={MARKER}");
    let with_userinfo = |url: String| url.replacen("http://", &format!("http://user:{MARKER}@"), 1);
    vec![
        ("healthy", with_userinfo(fake.url("ok", &secret_path)), None),
        (
            "garbage",
            fake.url("garbage", &secret_path),
            Some("invalid_response"),
        ),
        (
            "noresult",
            fake.url("no-result", &secret_path),
            Some("invalid_response"),
        ),
        (
            "rpcerror",
            fake.url("rpc-error", &secret_path),
            Some("rpc_error"),
        ),
        (
            "badhex",
            fake.url("bad-hex", &secret_path),
            Some("invalid_response"),
        ),
        ("huge", fake.url("huge", &secret_path), Some("too_large")),
        ("hang", fake.url("hang", &secret_path), Some("timeout")),
        (
            "limited",
            fake.url("429", &secret_path),
            Some("rate_limited"),
        ),
        (
            "status500",
            fake.url("500", &secret_path),
            Some("http_status"),
        ),
        (
            "wrongchain",
            fake.url("wrong-chain", &secret_path),
            Some("wrong_chain"),
        ),
        (
            "refused",
            format!("http://127.0.0.1:{}/{secret_path}", free_port()),
            Some("connect"),
        ),
        (
            "nodns",
            format!("http://no-such-host.invalid/{secret_path}"),
            Some("connect"),
        ),
        (
            "tls",
            fake.url("ok", &secret_path).replace("http://", "https://"),
            Some("tls"),
        ),
    ]
}

fn write_config(dir: &std::path::Path, fake: &FakeRpc) -> PathBuf {
    let mut text = String::from(
        "[exporter]\nprobe_interval = \"200ms\"\nprobe_timeout = \"500ms\"\n\
         [[chain]]\nname = \"dev\"\nchain_id = 1\nbackend = \"rpc\"\n",
    );
    for (name, url, _) in providers(fake) {
        // The URL comes through the environment, as in production; the header sits in the file.
        let var = format!("URL_{}", name.to_uppercase());
        std::env::set_var(&var, &url);
        text.push_str(&format!(
            "[[chain.provider]]\nname = \"{name}\"\nurl = \"${{{var}}}\"\n\
             headers = {{ Authorization = \"Bearer {MARKER}\" }}\n"
        ));
    }
    let path = dir.join("ethrpc.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn every_failure_gets_its_reason_and_no_secret_leaks() {
    let fake = FakeRpc::start().await;
    let temp = testkit::TempDir::new("bad-providers");
    let dir = temp.path();
    let config = write_config(dir, &fake);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let stdout = std::fs::File::create(dir.join("stdout.log")).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ethrpc-exporter"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .expect("start the exporter");

    let readyz = format!("{base}/readyz");
    wait_for("/readyz", WAIT, || get_text(&readyz)).await;
    let all = providers(&fake);
    let text = wait_for("every reason to be counted", WAIT, || async {
        let text = get_text(&format!("{base}/metrics")).await?;
        let counted = all.iter().all(|(name, _, reason)| match reason {
            Some(r) => {
                sample(
                    &text,
                    "ethrpc_probe_errors_total",
                    &[("provider", name), ("reason", r)],
                ) >= Some(1.0)
            }
            None => sample(&text, "ethrpc_up", &[("provider", name)]) == Some(1.0),
        });
        counted.then_some(text)
    })
    .await;
    for (name, _, reason) in &all {
        let up = sample(&text, "ethrpc_up", &[("provider", name)]);
        assert_eq!(up, Some(if reason.is_some() { 0.0 } else { 1.0 }), "{name}");
    }
    assert_eq!(
        promtool_check_metrics(&text),
        "",
        "promtool must print nothing"
    );

    // Retry-After: 3600 means one request only, however many rounds pass.
    let probes =
        |t: &str| sample(t, "ethrpc_probes_total", &[("provider", "healthy")]).unwrap_or(0.0);
    let before = probes(&text);
    wait_for("five more rounds", WAIT, || async {
        let t = get_text(&format!("{base}/metrics")).await?;
        (probes(&t) >= before + 5.0).then_some(())
    })
    .await;
    assert_eq!(
        fake.hits("429"),
        1,
        "a rate-limited provider must not be probed again"
    );

    let page = get_text(&format!("{base}/")).await.expect("status page");
    assert!(
        page.contains("down: too_large") && page.contains("healthy"),
        "{page}"
    );
    let metrics = get_text(&format!("{base}/metrics")).await.unwrap();
    let checked = std::process::Command::new(env!("CARGO_BIN_EXE_ethrpc-exporter"))
        .args(["check-config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(checked.status.success());
    let printed = String::from_utf8_lossy(&checked.stdout).to_string();
    assert!(
        printed.contains("name = \"garbage\"") && printed.contains("<redacted>"),
        "{printed}"
    );

    // SIGTERM stops it cleanly.
    let pid = child.id().expect("running") as i32;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("stops")
        .unwrap();
    assert!(status.success(), "exit status {status}");

    let logs = std::fs::read_to_string(dir.join("stderr.log")).unwrap()
        + &std::fs::read_to_string(dir.join("stdout.log")).unwrap();
    assert!(
        logs.contains("provider is down"),
        "state changes are logged"
    );
    for (what, output) in [
        ("logs", &logs),
        ("/metrics", &metrics),
        ("/", &page),
        ("check-config", &printed),
    ] {
        assert!(!output.contains(MARKER), "the secret leaked into {what}");
    }
}
