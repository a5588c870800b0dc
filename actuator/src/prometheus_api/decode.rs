//! Decoding an answer as it arrives, within the caps the parent module documents: the body is
//! read through a guard that refuses long strings before they are buffered, and samples (series
//! and points, for a range query) are charged to a budget as they are kept.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufReader, Read};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{
    parse_value, PrometheusError, QueryResult, Sample, Series, SeriesFilter, LABEL_OVERHEAD,
    MAX_LABEL_BYTES, MAX_POINTS, MAX_SAMPLES, MAX_STRING, SNIPPET,
};

/// Which kind of query an answer is for, so which result types it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// `/api/v1/query`: a vector or a scalar.
    Instant,
    /// `/api/v1/query_range`: a matrix.
    Range,
}

/// An answer's result, of the kind its query expects.
#[derive(Debug)]
pub(super) enum Data {
    Instant(QueryResult),
    Matrix(Vec<Series>),
}

/// Decodes an instant query's answer body (any HTTP status: errors carry the same envelope).
pub fn decode(status: u16, body: &[u8]) -> Result<QueryResult, PrometheusError> {
    match decode_body(status, body, Expect::Instant)? {
        Data::Instant(result) => Ok(result),
        Data::Matrix(_) => Err(unexpected_kind("matrix", Expect::Instant)),
    }
}

/// Decodes a range query's answer body.
pub fn decode_matrix(status: u16, body: &[u8]) -> Result<Vec<Series>, PrometheusError> {
    match decode_body(status, body, Expect::Range)? {
        Data::Matrix(series) => Ok(series),
        Data::Instant(_) => Err(unexpected_kind("vector", Expect::Range)),
    }
}

fn decode_body(status: u16, body: &[u8], expect: Expect) -> Result<Data, PrometheusError> {
    decode_from(body, expect, None).map_err(|e| e.unwrap_or_else(|| not_json(status, body)))
}

/// The error for a result of the wrong type.
pub(super) fn unexpected_kind(kind: &str, expect: Expect) -> PrometheusError {
    PrometheusError::Unexpected(match expect {
        Expect::Instant => format!("a {kind} result; write an instant vector query"),
        Expect::Range => format!("a {kind} result where a range query returns a matrix"),
    })
}

pub(super) fn not_json(status: u16, start: &[u8]) -> PrometheusError {
    PrometheusError::NotJson {
        status,
        snippet: String::from_utf8_lossy(&start[..start.len().min(SNIPPET)])
            .trim()
            .to_owned(),
    }
}

/// Decodes an answer as it is read; `Err(None)` when it is not a Prometheus envelope. A range
/// answer's series that `keep` refuses are skipped as they are read: their points are neither
/// kept nor charged, their labels are refunded, and they do not count against [`MAX_SAMPLES`].
pub(super) fn decode_from(
    body: impl Read,
    expect: Expect,
    keep: Option<SeriesFilter>,
) -> Result<Data, Option<PrometheusError>> {
    let budget = Budget::new(expect, keep);
    let guard = StringGuard {
        inner: body,
        tripped: &budget.string_too_long,
        in_string: false,
        escaped: false,
        run: 0,
    };
    let mut json = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 << 10, guard));
    let envelope = EnvelopeSeed(&budget)
        .deserialize(&mut json)
        .and_then(|envelope| json.end().map(|()| envelope));
    let envelope = match envelope {
        Ok(envelope) => envelope,
        Err(_) if budget.string_too_long.get() => return Err(Some(PrometheusError::StringTooLong)),
        Err(_) => return Err(budget.failure.take()),
    };
    if envelope.status.as_deref() != Some("success") {
        return match envelope.status {
            None => Err(None),
            Some(_) => Err(Some(PrometheusError::Api {
                error_type: envelope.error_type.unwrap_or_else(|| "error".into()),
                error: envelope.error.unwrap_or_default(),
            })),
        };
    }
    envelope
        .data
        .ok_or_else(|| Some(PrometheusError::Unexpected("success without data".into())))
}

/// Fails a read that would hand the JSON parser a string over [`MAX_STRING`] bytes, before the
/// parser buffers it, and says so in `tripped` (the parser reports it as any read error).
struct StringGuard<'t, R> {
    inner: R,
    tripped: &'t Cell<bool>,
    in_string: bool,
    escaped: bool,
    run: usize,
}

impl<R: Read> Read for StringGuard<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &byte in &buf[..n] {
            if !self.in_string {
                self.in_string = byte == b'"';
                self.run = 0;
            } else if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
            }
            self.run += 1;
            if self.run > MAX_STRING {
                self.tripped.set(true);
                return Err(io::Error::other("string too long"));
            }
        }
        Ok(n)
    }
}

/// The body's chunks as the client receives them, read by the parser on a blocking thread.
pub(super) struct Chunks<B> {
    pub(super) receiver: mpsc::Receiver<B>,
    pub(super) current: Option<B>,
    pub(super) offset: usize,
}

impl<B: AsRef<[u8]>> Read for Chunks<B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(chunk) = &self.current {
                let rest = &chunk.as_ref()[self.offset..];
                if !rest.is_empty() {
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    self.offset += n;
                    return Ok(n);
                }
            }
            match self.receiver.blocking_recv() {
                Some(chunk) => {
                    self.current = Some(chunk);
                    self.offset = 0;
                }
                None => return Ok(0),
            }
        }
    }
}

/// What one answer may hold and still keep, and why decoding stopped.
struct Budget {
    expect: Expect,
    keep: Option<SeriesFilter>,
    label_bytes_left: Cell<usize>,
    points_left: Cell<usize>,
    string_too_long: Cell<bool>,
    failure: RefCell<Option<PrometheusError>>,
}

impl Budget {
    fn new(expect: Expect, keep: Option<SeriesFilter>) -> Self {
        Self {
            expect,
            keep,
            label_bytes_left: Cell::new(MAX_LABEL_BYTES),
            points_left: Cell::new(MAX_POINTS),
            string_too_long: Cell::new(false),
            failure: RefCell::new(None),
        }
    }

    /// Whether a series with `labels` is wanted.
    fn keeps(&self, labels: &BTreeMap<String, String>) -> bool {
        self.keep.as_ref().is_none_or(|keep| keep(labels))
    }

    /// Gives back what a skipped series' labels were charged.
    fn refund(&self, labels: &BTreeMap<String, String>) {
        let cost: usize = labels
            .iter()
            .map(|(name, value)| name.len() + value.len() + LABEL_OVERHEAD)
            .sum();
        self.label_bytes_left
            .set(self.label_bytes_left.get().saturating_add(cost));
    }

    /// Records why decoding stops (the first reason wins) and stops the parser.
    fn fail<E: de::Error>(&self, error: PrometheusError) -> E {
        let message = error.to_string();
        self.failure.borrow_mut().get_or_insert(error);
        E::custom(message)
    }
}

#[derive(Default)]
struct Envelope {
    status: Option<String>,
    data: Option<Data>,
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum EnvelopeField {
    Status,
    Data,
    ErrorType,
    Error,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum DataField {
    ResultType,
    Result,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum SampleField {
    Metric,
    Value,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum SeriesField {
    Metric,
    Values,
    #[serde(other)]
    Other,
}

/// A visitor that carries the answer's [`Budget`], and its `DeserializeSeed`: `$name -> $value`
/// read with `$deserialize` (`deserialize_map` or `deserialize_seq`), expecting `$what`, by
/// `$visit`.
macro_rules! budgeted_visitor {
    ($(#[$doc:meta])* $name:ident -> $value:ty, $deserialize:ident, $what:literal, $visit:item) => {
        $(#[$doc])*
        struct $name<'b>(&'b Budget);

        impl<'de> DeserializeSeed<'de> for $name<'_> {
            type Value = $value;
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<$value, D::Error> {
                d.$deserialize(self)
            }
        }

        impl<'de> Visitor<'de> for $name<'_> {
            type Value = $value;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($what)
            }

            $visit
        }
    };
}

budgeted_visitor!(
    EnvelopeSeed -> Envelope, deserialize_map, "a Prometheus API envelope",
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let mut envelope = Envelope::default();
        while let Some(field) = map.next_key()? {
            match field {
                EnvelopeField::Status => envelope.status = Some(map.next_value()?),
                EnvelopeField::ErrorType => envelope.error_type = Some(map.next_value()?),
                EnvelopeField::Error => envelope.error = Some(map.next_value()?),
                EnvelopeField::Data => envelope.data = Some(map.next_value_seed(DataSeed(self.0))?),
                EnvelopeField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(envelope)
    }
);

budgeted_visitor!(
    DataSeed -> Data, deserialize_map, "a query result",
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Data, A::Error> {
        let budget = self.0;
        let bad = |what: String| budget.fail(PrometheusError::Unexpected(what));
        let mut kind: Option<String> = None;
        let mut result = None;
        while let Some(field) = map.next_key()? {
            match field {
                DataField::ResultType => kind = Some(map.next_value()?),
                DataField::Result => match (kind.as_deref(), budget.expect) {
                    (Some("vector"), Expect::Instant) => {
                        let samples = map
                            .next_value_seed(VectorSeed(budget))
                            .map_err(|e| bad(format!("vector result: {e}")))?;
                        result = Some(Data::Instant(QueryResult::Vector(samples)));
                    }
                    (Some("scalar"), Expect::Instant) => {
                        let (timestamp, value) = map
                            .next_value_seed(ValueSeed(budget))
                            .map_err(|e| bad(format!("scalar result: {e}")))?;
                        result = Some(Data::Instant(QueryResult::Scalar { timestamp, value }));
                    }
                    (Some("matrix"), Expect::Range) => {
                        let series = map
                            .next_value_seed(MatrixSeed(budget))
                            .map_err(|e| bad(format!("matrix result: {e}")))?;
                        result = Some(Data::Matrix(series));
                    }
                    (Some(other), expect) => {
                        let error = unexpected_kind(other, expect);
                        return Err(budget.fail(error));
                    }
                    (None, _) => return Err(bad("`result` before `resultType`".into())),
                },
                DataField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        result.ok_or_else(|| bad("data without a result".into()))
    }
);

budgeted_visitor!(
    VectorSeed -> Vec<Sample>, deserialize_seq, "an array of samples",
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Sample>, A::Error> {
        let mut samples = Vec::new();
        while let Some(sample) = seq.next_element_seed(SampleSeed(self.0))? {
            if samples.len() == MAX_SAMPLES {
                return Err(self.0.fail(PrometheusError::TooManySamples));
            }
            samples.push(sample);
        }
        Ok(samples)
    }
);

budgeted_visitor!(
    SampleSeed -> Sample, deserialize_map, "a sample",
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Sample, A::Error> {
        let (mut labels, mut value) = (None, None);
        while let Some(field) = map.next_key()? {
            match field {
                SampleField::Metric => labels = Some(map.next_value_seed(LabelsSeed(self.0))?),
                SampleField::Value => value = Some(map.next_value_seed(ValueSeed(self.0))?),
                SampleField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let labels = labels.ok_or_else(|| de::Error::missing_field("metric"))?;
        let (timestamp, value) = value.ok_or_else(|| de::Error::missing_field("value"))?;
        Ok(Sample {
            labels,
            timestamp,
            value,
        })
    }
);

budgeted_visitor!(
    /// A matrix: the series kept, each counted as a sample against [`MAX_SAMPLES`].
    MatrixSeed -> Vec<Series>, deserialize_seq, "an array of series",
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Series>, A::Error> {
        let mut series = Vec::new();
        while let Some(one) = seq.next_element_seed(SeriesSeed(self.0))? {
            let Some(one) = one else { continue };
            if series.len() == MAX_SAMPLES {
                return Err(self.0.fail(PrometheusError::TooManySamples));
            }
            series.push(one);
        }
        Ok(series)
    }
);

budgeted_visitor!(
    /// A series, or `None` when the budget's filter refuses its labels (its points are skipped
    /// unread when the labels come first, as Prometheus and VictoriaMetrics write them).
    SeriesSeed -> Option<Series>, deserialize_map, "a series",
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Series>, A::Error> {
        let (mut labels, mut points) = (None, None);
        while let Some(field) = map.next_key()? {
            match field {
                SeriesField::Metric => labels = Some(map.next_value_seed(LabelsSeed(self.0))?),
                SeriesField::Values if labels.as_ref().is_none_or(|l| self.0.keeps(l)) => {
                    points = Some(map.next_value_seed(PointsSeed(self.0))?);
                }
                SeriesField::Values | SeriesField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let labels = labels.ok_or_else(|| de::Error::missing_field("metric"))?;
        if !self.0.keeps(&labels) {
            self.0.refund(&labels);
            return Ok(None);
        }
        // A series of native histograms only has no `values`: no float points.
        Ok(Some(Series {
            labels,
            points: points.unwrap_or_default(),
        }))
    }
);

budgeted_visitor!(
    /// A series' points, charged to the answer's [`MAX_POINTS`] as they are read.
    PointsSeed -> Vec<(f64, f64)>, deserialize_seq, "an array of points",
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut points = Vec::new();
        while let Some(point) = seq.next_element_seed(ValueSeed(self.0))? {
            let left = self.0.points_left.get();
            if left == 0 {
                return Err(self.0.fail(PrometheusError::TooManyPoints));
            }
            self.0.points_left.set(left - 1);
            points.push(point);
        }
        Ok(points)
    }
);

budgeted_visitor!(
    /// A sample's labels, charged to the answer's label budget as they are read.
    LabelsSeed -> BTreeMap<String, String>, deserialize_map, "an object of string labels",
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut labels = BTreeMap::new();
        while let Some((name, value)) = map.next_entry::<String, String>()? {
            let cost = name.len() + value.len() + LABEL_OVERHEAD;
            let left = self.0.label_bytes_left.get();
            if cost > left {
                return Err(self.0.fail(PrometheusError::LabelsTooLarge));
            }
            self.0.label_bytes_left.set(left - cost);
            labels.insert(name, value);
        }
        Ok(labels)
    }
);

/// `[<time>, "<value>"]`, the value parsed by [`parse_value`].
struct ValueSeed<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = (f64, f64);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(f64, f64), D::Error> {
        let (timestamp, text) = <(f64, String)>::deserialize(d)?;
        let value = parse_value(&text).ok_or_else(|| {
            self.0.fail(PrometheusError::Unexpected(format!(
                "sample value {text:?}"
            )))
        })?;
        Ok((timestamp, value))
    }
}
