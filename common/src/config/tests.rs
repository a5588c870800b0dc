//! The config as a whole: the documented example, defaults, layering, the printer, and every
//! file under `testdata/` rejected with the error its first line names.

use std::path::Path;
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
[exporter]
listen = "127.0.0.1:9787"
probe_interval = "2s"
probe_timeout = "150ms"

[[chain]]
name = "mainnet"
chain_id = 1
backend = "rpc-backend"

[[chain.provider]]
name = "quicknode"
url = "${QN_URL}"
server = "qn"
headers = { Authorization = "Bearer ${TOKEN}" }

[[chain.provider]]
name = "local"
url = "http://127.0.0.1:8545"
"#;

/// Every key set, none to its default, secrets in every place that can hold one.
const EVERY_KEY: &str = r#"
[exporter]
listen = "127.0.0.1:19787"
probe_interval = "3s"
probe_timeout = "1s 500ms"
chain_id_interval = "10m"
max_concurrent_probes = 8
max_response_bytes = 4096
head_window = "7s"

[actuator]
listen = "127.0.0.1:19788"
prometheus_url = "${PROM_URL}"
haproxy = "tcp:127.0.0.1:9999"
interval = "1s"
query_timeout = "900ms"
haproxy_timeout = "800ms"
signal_window = "20s"
max_data_age = "25s"

[actuator.queries]
up = "my_up"
chain_id_match = "my_match"
block_lag = "my_lag"
block_age = "my_age"
latency = "my_latency{quote=\"a\\\"b\"}"
error_ratio = "my_errors"
last_probe = "my_last"

[policy]
max_block_lag = 9

[[chain]]
name = "mainnet"
chain_id = 1
backend = "rpc-backend"
max_block_lag = 4
max_block_age = "30s"
max_latency = "1s"
max_error_ratio = 0.25
weighting = "equal"
readmit_after = 2
slow_start = "5s"
full_weight = 200
deadband = 10
latency_bucket = "25ms"
base_ejection = "5s"
max_ejection = "2m"
latency_smoothing = "0s"
min_tier_capacity = 1.5
max_client_error_ratio = 0.5
min_client_requests = 50

[chain.capabilities]
interval = "30m"
archive_block = 1000000
logs_blocks = 50
logs_address = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
trace = true
finalized = true
safe = true

[[chain.provider]]
name = "quicknode"
url = "${QN_URL}"
server = "qn"
headers = { Authorization = "Bearer ${TOKEN}", X-Api-Key = "${TOKEN}" }
insecure_skip_verify = true
tier = 2
max_rps = 12.5
probe_interval = "30s"

[[chain]]
name = "sepolia"
chain_id = 11155111
backend = "sepolia-backend"

[[chain.provider]]
name = "local"
url = "http://127.0.0.1:8545"
"#;

/// The environment the tests load with: every value is a secret, one holds a quote.
fn env(name: &str) -> Option<String> {
    match name {
        "QN_URL" => Some("https://x.quiknode.pro/SECRETKEY/".into()),
        "TOKEN" => Some("SECRETTOKEN".into()),
        "PROM_URL" => {
            Some("http://user:SECRETPASS@prom.example:9090/prefix/?token=SECRETTOKEN".into())
        }
        "QUOTED" => Some("a\"SECRETKEY".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("ethrpc.toml"), text, env)
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains("SECRET"),
        "secret leaked into {what}: {text}"
    );
}

#[test]
fn parses_the_documented_example() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.exporter.probe_interval, Duration::from_secs(2));
    assert_eq!(c.exporter.probe_timeout, Duration::from_millis(150));
    assert_eq!(c.chains[0].name.as_str(), "mainnet");
    let qn = &c.chains[0].providers[0];
    assert_eq!(qn.server.as_str(), "qn");
    assert_eq!(qn.url.expose().path(), "/SECRETKEY/");
    assert_eq!(qn.headers.expose()["authorization"], "Bearer SECRETTOKEN");
    assert_eq!(c.chains[0].providers[1].server.as_str(), "local");
    assert_eq!(qn.tier, Tier::PRIMARY, "tier 1 unless set");
    assert_eq!((qn.max_rps, qn.probe_interval), (None, None), "unlimited");
    assert_eq!(
        qn.probe_interval_or(Duration::from_secs(2)),
        Duration::from_secs(2)
    );
    assert_no_secret("Debug", &format!("{c:?}"));
}

#[test]
fn defaults_apply_when_sections_are_absent() {
    let without: String = GOOD
        .lines()
        .skip_while(|l| !l.starts_with("[[chain]]"))
        .map(|l| format!("{l}\n"))
        .collect();
    let c = parse(&without).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.exporter.listen, "127.0.0.1:9787".parse().unwrap());
    assert_eq!(c.exporter.probe_timeout, Duration::from_secs(2));
    assert_eq!(c.exporter.chain_id_interval, Duration::from_secs(300));
    assert_eq!(c.exporter.max_response_bytes, 1 << 20);
    assert_eq!(c.exporter.head_window, Duration::from_secs(5));
    assert_eq!(c.actuator.listen, "127.0.0.1:9788".parse().unwrap());
    assert_eq!(
        c.actuator.prometheus_url.expose().as_str(),
        "http://127.0.0.1:9090/"
    );
    assert_eq!(
        c.actuator.max_data_age,
        Duration::from_secs(8),
        "3 probes + timeout"
    );
    assert_eq!(c.chains[0].policy, PolicyConfig::default());
    let p = &c.chains[0].policy;
    assert_eq!(p.base_ejection, Duration::from_secs(10));
    assert_eq!(p.max_ejection, Duration::from_secs(300));
    assert_eq!(p.latency_smoothing, Duration::from_secs(30));
}

#[test]
fn chain_policy_overrides_the_global_policy_which_overrides_defaults() {
    let text = GOOD
        .replacen(
            "[exporter]",
            "[policy]\nmax_block_lag = 7\nmax_latency = \"1s\"\n\n[exporter]",
            1,
        )
        .replacen(
            "chain_id = 1",
            "chain_id = 1\nmax_block_lag = 2\nweighting = \"equal\"",
            1,
        );
    let c = parse(&text).unwrap();
    let p = &c.chains[0].policy;
    assert_eq!(p.max_block_lag, 2, "chain override");
    assert_eq!(p.weighting, Weighting::Equal, "chain override");
    assert_eq!(p.max_latency, Duration::from_secs(1), "global");
    assert_eq!(p.readmit_after, 3, "default");
    assert_eq!(
        c.actuator.haproxy,
        HaproxyAddress::Unix("/var/run/haproxy/actuator.sock".into())
    );
    assert_eq!(
        c.actuator.signal_window,
        Duration::from_secs(6),
        "3 probe intervals"
    );
    assert!(c.actuator.queries.latency.contains("[6000ms]"));
    let shown = c.to_string();
    assert!(
        shown.contains("max_block_lag = 2") && shown.contains("weighting = \"equal\""),
        "{shown}"
    );
}

#[test]
fn actuator_settings_and_query_overrides_are_read() {
    let c = parse(EVERY_KEY).unwrap();
    let a = &c.actuator;
    assert_eq!(
        a.haproxy,
        HaproxyAddress::Tcp("127.0.0.1:9999".parse().unwrap())
    );
    assert_eq!(a.interval, Duration::from_secs(1));
    assert_eq!(a.queries.up, "my_up");
    assert_eq!(a.queries.latency, "my_latency{quote=\"a\\\"b\"}");
    let only_up = GOOD.replacen(
        "[exporter]",
        "[actuator.queries]\nup = \"my_up\"\n[exporter]",
        1,
    );
    let c = parse(&only_up).unwrap();
    assert_eq!(c.actuator.queries.up, "my_up");
    assert_eq!(
        c.actuator.queries.block_lag,
        Queries::defaults(Duration::from_secs(6)).block_lag
    );
}

#[test]
fn the_printed_config_reads_back_as_the_same_config() {
    let config = parse(EVERY_KEY).unwrap();
    assert_eq!(config.chains[0].policy.max_block_lag, 4);
    assert_eq!(config.chains[1].policy.max_block_lag, 9, "from [policy]");
    let qn = &config.chains[0].providers[0];
    assert_eq!(qn.tier.get(), 2);
    assert_eq!(qn.max_rps, Some(12.5));
    assert_eq!(qn.probe_interval, Some(Duration::from_secs(30)));
    let caps = config.chains[0].capabilities.as_ref().unwrap();
    assert_eq!(caps.interval, Duration::from_secs(1800));
    assert_eq!(caps.archive_block, Some(1_000_000));
    assert_eq!(caps.logs.as_ref().map(|l| l.blocks), Some(50));
    assert!(caps.trace && caps.finalized && caps.safe);
    assert_eq!(caps.probes(), 5);
    assert_eq!(config.chains[1].capabilities, None, "off unless set");
    let printed = config.to_string();
    assert_no_secret("the printed config", &printed);
    let again = Config::parse(Path::new("printed.toml"), &printed, |_| None)
        .unwrap_or_else(|e| panic!("{e}\n{printed}"));
    // Debug shows every field of every section, secrets redacted the same way on both sides.
    assert_eq!(format!("{again:#?}"), format!("{config:#?}"), "{printed}");
    assert_eq!(again.to_string(), printed);
}

#[test]
fn every_url_is_redacted_in_the_printed_config() {
    let config = parse(EVERY_KEY).unwrap();
    let printed = config.to_string();
    assert!(
        printed.contains("prometheus_url = \"http://prom.example:9090/<redacted>\""),
        "{printed}"
    );
    assert!(
        printed.contains("url = \"https://x.quiknode.pro/<redacted>\""),
        "{printed}"
    );
    for secret in ["user", "prefix", "token", "Bearer"] {
        assert!(!printed.contains(secret), "{secret} shown in {printed}");
    }
    assert_no_secret("Debug", &format!("{config:?}"));
    assert_eq!(
        config.actuator.prometheus_url.expose().as_str(),
        "http://user:SECRETPASS@prom.example:9090/prefix/?token=SECRETTOKEN",
        "the actuator's client still gets the whole URL"
    );
}

#[test]
fn capability_probes_take_the_default_interval() {
    let text = GOOD.replacen(
        "[[chain.provider]]",
        "[chain.capabilities]\nfinalized = true\n\n[[chain.provider]]",
        1,
    );
    let caps = parse(&text).unwrap().chains[0]
        .capabilities
        .clone()
        .unwrap();
    assert_eq!(caps.interval, Duration::from_secs(600));
    assert_eq!(
        (caps.archive_block, &caps.logs, caps.trace),
        (None, &None, false)
    );
    assert_eq!(caps.probes(), 1);
}

#[test]
fn names_allow_only_command_safe_characters() {
    for ok in ["rpc-backend", "a.b:c_d-1", &"x".repeat(64)] {
        assert!(Name::parse(ok).is_ok(), "{ok}");
    }
    for bad in ["", "a b", "a;b", "a\nb", "a/b", "é", &"x".repeat(65)] {
        assert!(Name::parse(bad).is_err(), "{bad:?}");
    }
}

/// Each `testdata/*.toml` starts with `# error: …`, the field and message (what to do) it must
/// be rejected with, after the file's own name; none may show a secret.
#[test]
fn each_invalid_file_is_rejected_with_its_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "testdata holds {} files", files.len());
    let mut wrong = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.display().to_string();
        let expected = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# error: "))
            .unwrap_or_else(|| panic!("{name}: first line must be `# error: …`"));
        let message = match Config::parse(&file, &text, env) {
            Ok(_) => {
                wrong.push(format!("{name}: accepted"));
                continue;
            }
            Err(e) => e.to_string(),
        };
        assert_no_secret(&name, &message);
        let got = message
            .strip_prefix(&format!("{name}: "))
            .unwrap_or(&message);
        if !got.starts_with(expected) {
            wrong.push(format!("{name}:\n  expected {expected}\n  got      {got}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_policy_key_can_be_overridden_by_name_and_is_checked_as_the_file_s() {
    let p = PolicyConfig::default();
    let q = p.with_override("max_block_lag", "1").unwrap();
    assert_eq!(q.max_block_lag, 1);
    assert_eq!(q.full_weight, p.full_weight, "the rest stays");
    let q = q.with_override("base_ejection", "20s").unwrap();
    assert_eq!(
        q.base_ejection,
        Duration::from_secs(20),
        "a bare duration is a string"
    );
    assert_eq!(
        q.with_override("weighting", "equal").unwrap().weighting,
        Weighting::Equal
    );
    let e = p.with_override("max_lag", "1").unwrap_err();
    assert!(
        e.contains("unknown field `max_lag`") && e.contains("max_block_lag"),
        "{e}"
    );
    let e = p.with_override("max_error_ratio", "2").unwrap_err();
    assert!(
        e.starts_with("max_error_ratio: must be between 0 and 1"),
        "{e}"
    );
    let e = p.with_override("base_ejection", "SECRET").unwrap_err();
    assert!(e.contains("base_ejection") && !e.contains("SECRET"), "{e}");
    let e = p.with_override("max_block_lag", "\"SECRET\"").unwrap_err();
    assert!(!e.contains("SECRET"), "{e}");
}
