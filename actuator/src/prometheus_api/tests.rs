//! The client's decoding of every answer shape, its caps and its errors.

use super::*;

#[test]
fn reads_vectors_with_special_values() {
    let body = br#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"chain":"a","provider":"p"},"value":[1795487401.414,"1"]},
        {"metric":{"provider":"q"},"value":[1795487401.414,"NaN"]},
        {"metric":{"provider":"r"},"value":[1795487401.414,"+Inf"]},
        {"metric":{"provider":"s"},"value":[1795487401.414,"-Inf"]},
        {"metric":{},"value":[1795487401.414,"1e-3"]}]}}"#;
    let QueryResult::Vector(v) = decode(200, body).unwrap() else {
        panic!("vector")
    };
    assert_eq!(v[0].labels["chain"], "a");
    assert_eq!(v[0].value, 1.0);
    assert!((v[0].timestamp - 1_795_487_401.414).abs() < 1e-6);
    assert!(v[1].value.is_nan());
    assert_eq!(v[2].value, f64::INFINITY);
    assert_eq!(v[3].value, f64::NEG_INFINITY);
    assert_eq!(v[4].value, 0.001);
}

#[test]
fn empty_vector_is_no_data_and_scalars_are_read() {
    let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    assert_eq!(decode(200, empty).unwrap(), QueryResult::Vector(vec![]));
    let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"42"]}}"#;
    assert_eq!(
        decode(200, scalar).unwrap(),
        QueryResult::Scalar {
            timestamp: 1.5,
            value: 42.0
        }
    );
}

#[test]
fn errors_are_typed() {
    let bad =
        br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#;
    assert_eq!(
        decode(400, bad),
        Err(PrometheusError::Api {
            error_type: "bad_data".into(),
            error: "1:5: parse error: unexpected".into()
        })
    );
    assert!(matches!(
        decode(404, b"404 page not found"),
        Err(PrometheusError::NotJson { status: 404, .. })
    ));
    let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
    assert!(matches!(
        decode(200, matrix),
        Err(PrometheusError::Unexpected(_))
    ));
    let odd = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"one"]}]}}"#;
    assert!(matches!(
        decode(200, odd),
        Err(PrometheusError::Unexpected(_))
    ));
}

#[test]
fn values_parse_strictly() {
    assert_eq!(parse_value("2.5"), Some(2.5));
    assert_eq!(parse_value("inf"), None, "Prometheus writes +Inf");
    assert_eq!(parse_value(""), None);
}

fn vector(samples: &[String]) -> Vec<u8> {
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        samples.join(",")
    )
    .into_bytes()
}

fn sample(labels: &str) -> String {
    format!(r#"{{"metric":{{{labels}}},"value":[1,"1"]}}"#)
}

#[test]
fn samples_are_capped() {
    let at_cap = vec![sample(r#""provider":"p""#); MAX_SAMPLES];
    assert!(
        matches!(decode(200, &vector(&at_cap)), Ok(QueryResult::Vector(v)) if v.len() == MAX_SAMPLES)
    );
    let over = vec![sample(""); MAX_SAMPLES + 1];
    assert_eq!(
        decode(200, &vector(&over)),
        Err(PrometheusError::TooManySamples)
    );
}

#[test]
fn labels_are_capped_by_bytes_and_by_count() {
    let value = "v".repeat(MAX_STRING - 100);
    let big = vec![sample(&format!(r#""l":"{value}""#)); MAX_LABEL_BYTES / MAX_STRING + 2];
    assert_eq!(
        decode(200, &vector(&big)),
        Err(PrometheusError::LabelsTooLarge)
    );
    let many =
        vec![sample(r#""a":"","b":"","c":"","d":"""#); MAX_LABEL_BYTES / LABEL_OVERHEAD / 4 + 1];
    assert_eq!(
        decode(200, &vector(&many)),
        Err(PrometheusError::LabelsTooLarge)
    );
}

#[test]
fn long_strings_are_refused_before_they_are_buffered() {
    let long = vec![sample(&format!(r#""l":"{}""#, "\\\"".repeat(MAX_STRING)))];
    assert_eq!(
        decode(200, &vector(&long)),
        Err(PrometheusError::StringTooLong)
    );
    let error = format!(
        r#"{{"status":"error","errorType":"x","error":"{}"}}"#,
        "e".repeat(MAX_STRING + 1)
    );
    assert_eq!(
        decode(400, error.as_bytes()),
        Err(PrometheusError::StringTooLong)
    );
}

#[test]
fn unknown_fields_are_skipped_and_order_is_checked() {
    let extra =
        br#"{"status":"success","warnings":["w"],"data":{"resultType":"vector","stats":{"a":[1]},
        "result":[{"metric":{"provider":"p"},"histogram":[1,{}],"value":[2,"3"]}]},"infos":[]}"#;
    let QueryResult::Vector(v) = decode(200, extra).unwrap() else {
        panic!("vector")
    };
    assert_eq!(
        (v[0].timestamp, v[0].value, v[0].labels["provider"].as_str()),
        (2.0, 3.0, "p")
    );
    let reversed = br#"{"status":"success","data":{"result":[],"resultType":"vector"}}"#;
    assert!(
        matches!(decode(200, reversed), Err(PrometheusError::Unexpected(e)) if e.contains("before"))
    );
    assert!(matches!(
        decode(200, b"{\"status\":\"success\"} x"),
        Err(PrometheusError::NotJson { .. })
    ));
}

fn matrix(series: &[String]) -> Vec<u8> {
    format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
        series.join(",")
    )
    .into_bytes()
}

#[test]
fn reads_matrices_and_refuses_other_kinds_for_a_range() {
    let body = matrix(&[
        r#"{"metric":{"provider":"p"},"values":[[10,"1"],[12,"NaN"],[14,"-Inf"]]}"#.into(),
        r#"{"metric":{},"histograms":[[10,{}]]}"#.into(),
    ]);
    let series = decode_matrix(200, &body).unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].labels["provider"], "p");
    let times: Vec<f64> = series[0].points.iter().map(|p| p.0).collect();
    assert_eq!(times, [10.0, 12.0, 14.0]);
    assert!(series[0].points[1].1.is_nan());
    assert_eq!(series[0].points[2].1, f64::NEG_INFINITY);
    assert!(
        series[1].points.is_empty(),
        "histograms only: no float points"
    );
    let vector = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    assert!(
        matches!(decode_matrix(200, vector), Err(PrometheusError::Unexpected(e)) if e.contains("matrix"))
    );
    let no_metric = matrix(&[r#"{"values":[[1,"1"]]}"#.into()]);
    assert!(matches!(
        decode_matrix(200, &no_metric),
        Err(PrometheusError::Unexpected(_))
    ));
}

#[test]
fn range_points_and_series_are_capped() {
    let points = |n: usize| vec!["[1,\"1\"]"; n].join(",");
    let at_cap = matrix(&[
        format!(r#"{{"metric":{{}},"values":[{}]}}"#, points(MAX_POINTS / 2)),
        format!(r#"{{"metric":{{}},"values":[{}]}}"#, points(MAX_POINTS / 2)),
    ]);
    assert!(matches!(decode_matrix(200, &at_cap), Ok(s) if s.len() == 2));
    let over = matrix(&[
        format!(r#"{{"metric":{{}},"values":[{}]}}"#, points(MAX_POINTS / 2)),
        format!(
            r#"{{"metric":{{}},"values":[{}]}}"#,
            points(MAX_POINTS / 2 + 1)
        ),
    ]);
    assert_eq!(
        decode_matrix(200, &over),
        Err(PrometheusError::TooManyPoints)
    );
    let empty_series = vec![r#"{"metric":{},"values":[]}"#.to_owned(); MAX_SAMPLES + 1];
    assert_eq!(
        decode_matrix(200, &matrix(&empty_series)),
        Err(PrometheusError::TooManySamples),
        "series without points or labels still count"
    );
}

#[test]
fn a_range_answer_keeps_only_the_series_wanted_and_charges_nothing_for_the_others() {
    let keep: SeriesFilter = Arc::new(|labels| labels.get("provider").is_some_and(|p| p == "mine"));
    let points = |n: usize| vec!["[1,\"1\"]"; n].join(",");
    // Foreign series: more than the series cap, and together more points than the points
    // cap; the wanted one among them, once with its labels after its points.
    let mut series: Vec<String> = (0..MAX_SAMPLES + 10)
        .map(|i| {
            format!(
                r#"{{"metric":{{"provider":"other{i}"}},"values":[{}]}}"#,
                points(500)
            )
        })
        .collect();
    series.insert(
        7,
        r#"{"metric":{"provider":"mine"},"values":[[1,"5"]]}"#.into(),
    );
    series.push(r#"{"values":[[2,"6"]],"metric":{"provider":"mine"}}"#.into());
    let body = matrix(&series);
    let Ok(Data::Matrix(kept)) = decode::decode_from(&body[..], Expect::Range, Some(keep)) else {
        panic!("a filtered range answer decodes");
    };
    let values: Vec<(f64, f64)> = kept.iter().flat_map(|s| s.points.clone()).collect();
    assert_eq!(values, [(1.0, 5.0), (2.0, 6.0)]);
    assert!(
        matches!(
            decode_matrix(200, &body),
            Err(PrometheusError::TooManyPoints | PrometheusError::TooManySamples)
        ),
        "unfiltered, the same answer is over the caps"
    );
}
