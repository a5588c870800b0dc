//! Prometheus metrics, the same way in both binaries. The exporter keeps its series as typed live
//! values ([`Gauge`], [`Counter`], [`Histogram`]) with their label text rendered once
//! ([`Labels`]), and writes `/metrics` straight from them into one string ([`Exposition`]): no
//! per-scrape copy of every series, which at a thousand providers cost more than the probing.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The bits of a NaN that a [`Gauge`] never stores as a value, marking one that has none yet.
const ABSENT: u64 = 0x7ff8_0000_0000_0001;

/// A gauge, its `f64` held as bits. Absent from the exposition until first set: a value not yet
/// known is left out rather than published as 0, which would read as a measurement.
#[derive(Debug)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub const fn absent() -> Self {
        Self(AtomicU64::new(ABSENT))
    }

    /// A gauge published from the start, at `value`.
    pub fn new(value: f64) -> Self {
        Self(AtomicU64::new(Self::bits(value)))
    }

    pub fn set(&self, value: f64) {
        self.0.store(Self::bits(value), Relaxed);
    }

    /// Every NaN as the canonical one, so that no value reads as [`ABSENT`].
    fn bits(value: f64) -> u64 {
        if value.is_nan() {
            f64::NAN.to_bits()
        } else {
            value.to_bits()
        }
    }

    /// Takes the gauge out of the exposition, as when what it measured is gone.
    pub fn clear(&self) {
        self.0.store(ABSENT, Relaxed);
    }

    /// `None` until first set.
    pub fn get(&self) -> Option<f64> {
        let bits = self.0.load(Relaxed);
        (bits != ABSENT).then(|| f64::from_bits(bits))
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Self::absent()
    }
}

/// A counter; published from creation, at 0, so that `rate()` sees its first increment.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A histogram over fixed upper bounds. Each bucket counts only its own observations and the
/// exposition sums them, so that the published `_count` always equals the `+Inf` bucket and the
/// buckets never decrease, even while observations land during a render.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One more than `bounds`: the last counts observations above every bound.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    /// `bounds` ascending and finite (`+Inf` is implied).
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        debug_assert!(bounds.iter().all(|b| b.is_finite()));
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0.0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Relaxed);
        // The closure always yields a value, so this cannot fail.
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }
}

/// A series' labels, rendered once as `name="value",…` and written as they are by every
/// exposition. Values are escaped; names are the program's own. The default is no label.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels(String);

impl Labels {
    pub fn new(pairs: &[(&str, &str)]) -> Self {
        let mut text = String::new();
        for (i, (name, value)) in pairs.iter().enumerate() {
            debug_assert!(is_metric_name(name) && !name.contains(':'));
            if i > 0 {
                text.push(',');
            }
            text.push_str(name);
            text.push_str("=\"");
            escape_into(&mut text, value, true);
            text.push('"');
        }
        Self(text)
    }
}

/// What a metric family is, as `# TYPE` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// The text exposition (format 0.0.4) being written: every family's `# HELP` and `# TYPE`, then
/// its samples, one line each. A family with no sample is left out, headers included.
pub struct Exposition {
    text: String,
    /// The family whose headers are written with its first sample.
    pending: Option<(&'static str, Kind, &'static str)>,
    /// The `le` texts of the last histogram's bounds (`+Inf` last), which the other histograms
    /// of its family share: formatted once per family, not once per series.
    le: (&'static [f64], Vec<String>),
}

impl Exposition {
    /// `capacity` in bytes: what the last exposition took, so that this one is not regrown.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            text: String::with_capacity(capacity),
            pending: None,
            le: (&[], Vec::new()),
        }
    }

    /// Starts family `name`; its samples follow.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) {
        debug_assert!(is_metric_name(name));
        self.pending = Some((name, kind, help));
    }

    /// `name{labels} value`, if the gauge has a value.
    pub fn gauge(&mut self, name: &str, labels: &Labels, gauge: &Gauge) {
        if let Some(value) = gauge.get() {
            self.sample(name, "", labels, None, Value::Float(value));
        }
    }

    /// A gauge with one more label, e.g. a reason from a fixed set (`value` is not escaped).
    pub fn gauge_with(
        &mut self,
        name: &str,
        labels: &Labels,
        label: (&str, &'static str),
        gauge: &Gauge,
    ) {
        if let Some(value) = gauge.get() {
            self.sample(name, "", labels, Some(label), Value::Float(value));
        }
    }

    pub fn counter(&mut self, name: &str, labels: &Labels, counter: &Counter) {
        self.sample(name, "", labels, None, Value::Int(counter.get()));
    }

    /// A counter with one more label, e.g. a reason from a fixed set (`value` is not escaped).
    pub fn counter_with(
        &mut self,
        name: &str,
        labels: &Labels,
        label: (&str, &'static str),
        counter: &Counter,
    ) {
        self.sample(name, "", labels, Some(label), Value::Int(counter.get()));
    }

    /// The `_bucket` lines (cumulative, `+Inf` last), `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &Labels, histogram: &Histogram) {
        let (bounds, mut le) = std::mem::take(&mut self.le);
        if !std::ptr::eq(bounds, histogram.bounds) || le.is_empty() {
            le = histogram
                .bounds
                .iter()
                .map(|b| {
                    let mut text = String::new();
                    write_float(&mut text, *b);
                    text
                })
                .chain(["+Inf".to_owned()])
                .collect();
        }
        let mut cumulative = 0;
        for (count, le) in histogram.counts.iter().zip(&le) {
            cumulative += count.load(Relaxed);
            self.sample(
                name,
                "_bucket",
                labels,
                Some(("le", le)),
                Value::Int(cumulative),
            );
        }
        self.le = (histogram.bounds, le);
        let sum = f64::from_bits(histogram.sum.load(Relaxed));
        self.sample(name, "_sum", labels, None, Value::Float(sum));
        self.sample(name, "_count", labels, None, Value::Int(cumulative));
    }

    pub fn finish(self) -> String {
        self.text
    }

    fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &Labels,
        extra: Option<(&str, &str)>,
        value: Value,
    ) {
        if let Some((family, kind, help)) = self.pending.take() {
            self.text.push_str("# HELP ");
            self.text.push_str(family);
            self.text.push(' ');
            escape_into(&mut self.text, help, false);
            self.text.push_str("\n# TYPE ");
            self.text.push_str(family);
            self.text.push(' ');
            self.text.push_str(kind.as_str());
            self.text.push('\n');
        }
        let out = &mut self.text;
        out.push_str(name);
        out.push_str(suffix);
        if let Some((_, value)) = extra {
            debug_assert!(!value.contains(['"', '\\', '\n']));
        }
        if !labels.0.is_empty() || extra.is_some() {
            out.push('{');
            out.push_str(&labels.0);
            if let Some((label, value)) = extra {
                if !labels.0.is_empty() {
                    out.push(',');
                }
                out.push_str(label);
                out.push_str("=\"");
                out.push_str(value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        match value {
            Value::Float(v) => write_float(out, v),
            Value::Int(n) => write_u64(out, n),
        }
        out.push('\n');
    }
}

enum Value {
    Float(f64),
    Int(u64),
}

/// As the text format spells floats: `NaN`, `+Inf` and `-Inf` as Go parses them, others in
/// Rust's shortest round-tripping form (`1`, `0.025`, `1732640000.5`).
fn write_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if value.fract() == 0.0 && value.abs() < 2f64.powi(53) {
        // Integral, as most values are (flags, blocks, counts): as Display writes it, faster.
        if value < 0.0 {
            out.push('-');
        }
        write_u64(out, value.abs() as u64);
    } else {
        // Writing into a String cannot fail.
        let _ = write!(out, "{value}");
    }
}

/// `n` in decimal, without the formatting machinery: most samples are counts.
fn write_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

/// Escapes `\` and newline (and `"` in a label value), as the text format asks.
fn escape_into(out: &mut String, text: &str, label_value: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label_value => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(write: impl FnOnce(&mut Exposition)) -> String {
        let mut out = Exposition::with_capacity(0);
        out.family("m", Kind::Gauge, "Help \\ with\nlines.");
        write(&mut out);
        out.finish()
    }

    #[test]
    fn a_gauge_is_absent_until_set_and_a_family_without_samples_is_left_out() {
        let gauge = Gauge::absent();
        let labels = Labels::new(&[("a", "1")]);
        assert_eq!(one(|o| o.gauge("m", &labels, &gauge)), "");
        gauge.set(f64::NAN);
        assert_eq!(gauge.get().map(f64::is_nan), Some(true), "NaN is a value");
        gauge.clear();
        assert_eq!(one(|o| o.gauge_with("m", &labels, ("r", "x"), &gauge)), "");
        gauge.set(-2.5);
        assert_eq!(
            one(|o| o.gauge("m", &labels, &gauge)),
            "# HELP m Help \\\\ with\\nlines.\n# TYPE m gauge\nm{a=\"1\"} -2.5\n"
        );
    }

    #[test]
    fn special_floats_are_spelt_as_prometheus_parses_them() {
        let text = |v: f64| {
            let mut s = String::new();
            write_float(&mut s, v);
            s
        };
        assert_eq!(text(f64::NAN), "NaN");
        assert_eq!(text(f64::INFINITY), "+Inf");
        assert_eq!(text(f64::NEG_INFINITY), "-Inf");
        assert_eq!(text(1.0), "1");
        assert_eq!(text(-0.0), "0");
        for v in [
            0.0,
            7.0,
            -3.0,
            1e15,
            -(2f64.powi(53) - 1.0),
            2f64.powi(53),
            1e300,
            0.5,
        ] {
            assert_eq!(text(v), format!("{v}"), "as Display writes it");
        }
        assert_eq!(text(1_732_640_000.5), "1732640000.5");
        assert_eq!(text(1e-7).parse::<f64>(), Ok(1e-7));
    }

    #[test]
    fn integers_are_written_in_decimal() {
        for n in [0, 9, 10, 1234567890, u64::MAX] {
            let mut s = String::new();
            write_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let labels = Labels::new(&[("a", "x\"y\\z\nw"), ("b", "")]);
        assert_eq!(labels.0, "a=\"x\\\"y\\\\z\\nw\",b=\"\"");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_equals_inf() {
        static BOUNDS: [f64; 2] = [0.5, 1.0];
        let h = Histogram::new(&BOUNDS);
        for v in [0.25, 0.5, 0.75, 3.0] {
            h.observe(v);
        }
        let labels = Labels::new(&[("p", "x")]);
        let mut out = Exposition::with_capacity(0);
        out.family("h", Kind::Histogram, "H.");
        out.histogram("h", &labels, &h);
        assert_eq!(
            out.finish(),
            "# HELP h H.\n# TYPE h histogram\n\
             h_bucket{p=\"x\",le=\"0.5\"} 2\nh_bucket{p=\"x\",le=\"1\"} 3\n\
             h_bucket{p=\"x\",le=\"+Inf\"} 4\nh_sum{p=\"x\"} 4.5\nh_count{p=\"x\"} 4\n"
        );
    }

    #[test]
    fn a_sample_without_labels_has_no_braces() {
        let c = Counter::default();
        c.inc_by(3);
        let text = one(|o| {
            o.counter("m", &Labels::new(&[]), &c);
            o.counter_with("m", &Labels::new(&[]), ("r", "x"), &c);
            o.gauge_with(
                "m",
                &Labels::new(&[("a", "1")]),
                ("r", "y"),
                &Gauge::new(0.5),
            );
        });
        assert!(
            text.ends_with("\nm 3\nm{r=\"x\"} 3\nm{a=\"1\",r=\"y\"} 0.5\n"),
            "{text}"
        );
    }
}
