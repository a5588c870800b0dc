//! Reading values out of Prometheus text exposition in tests.

/// The value of the series `name` whose labels include every pair of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels.iter().all(|(k, v)| {
                    label_text
                        .split(',')
                        .any(|pair| pair == format!("{k}=\"{v}\""))
                });
            matches.then(|| value.parse().ok())?
        })
}

/// Runs `promtool check metrics` on `text` and returns what it printed (empty when clean).
pub fn promtool_check_metrics(text: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed; run ./scripts/setup");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn finds_a_series_by_name_and_labels() {
        let text = "# HELP x y\nm{a=\"1\",b=\"2\"} 3\nm{a=\"1\",b=\"9\"} 4\nn 5\n";
        assert_eq!(sample(text, "m", &[("b", "9")]), Some(4.0));
        assert_eq!(sample(text, "m", &[("b", "2"), ("a", "1")]), Some(3.0));
        assert_eq!(sample(text, "n", &[]), Some(5.0));
        assert_eq!(sample(text, "m", &[("b", "7")]), None);
    }
}
