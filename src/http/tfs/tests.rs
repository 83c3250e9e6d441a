use super::*;

/// TF Serving writes the strings of an output named `…_bytes` as `{"b64": …}`
/// always (they were plain text when UTF-8), in both formats.
#[test]
fn outputs_named_bytes_are_base64_in_both_formats() {
    use crate::tensor::{Tensor, TensorData};
    let text = |v: &[&str]| {
        Tensor::new(
            vec![v.len()],
            TensorData::Bytes(v.iter().map(|s| s.as_bytes().to_vec()).collect()),
        )
        .unwrap()
    };
    let outputs: Vec<NamedTensor> = vec![
        ("out_bytes".into(), text(&["abc", "d"])),
        ("label".into(), text(&["abc", "d"])),
    ];
    let rows = serde_json::to_value(Predictions {
        predictions: RowsJson {
            outputs: &outputs,
            batch: 2,
        },
    })
    .unwrap();
    assert_eq!(
        rows,
        json!({"predictions": [
            {"out_bytes": {"b64": "YWJj"}, "label": "abc"},
            {"out_bytes": {"b64": "ZA=="}, "label": "d"},
        ]})
    );
    let columns = serde_json::to_value(Outputs {
        outputs: ColumnsJson(&outputs),
    })
    .unwrap();
    assert_eq!(
        columns,
        json!({"outputs": {"out_bytes": [{"b64": "YWJj"}, {"b64": "ZA=="}], "label": ["abc", "d"]}})
    );
    let only = &outputs[..1];
    let rows = serde_json::to_value(Predictions {
        predictions: RowsJson {
            outputs: only,
            batch: 2,
        },
    })
    .unwrap();
    assert_eq!(
        rows,
        json!({"predictions": [{"b64": "YWJj"}, {"b64": "ZA=="}]})
    );
}

#[test]
fn paths_parse_like_tf_serving() {
    let p = parse_path("iris").unwrap();
    assert_eq!(
        (p.model, p.version, p.verb),
        ("iris", VersionRequest::Latest, None)
    );
    let p = parse_path("iris/versions/3:predict").unwrap();
    assert_eq!(
        (p.model, p.version, p.verb),
        ("iris", VersionRequest::Specific(3), Some("predict"))
    );
    let p = parse_path("iris/labels/stable/metadata").unwrap();
    assert_eq!(p.version, VersionRequest::Label("stable".into()));
    assert_eq!(p.verb, Some("metadata"));
    assert!(parse_path("iris/versions/x").is_err());
    assert!(parse_path("iris/versions/0").is_err());
    // Digits only, as TF Serving's `\d+` (leading zeros included).
    for bad in ["+1", "-1", " 1", "1 ", "", "0x1"] {
        assert!(
            parse_path(&format!("iris/versions/{bad}:predict")).is_err(),
            "{bad:?}"
        );
    }
    assert!(parse_path("iris/versions/01:predict").is_ok());
    assert!(parse_path("iris/other").is_err());
    assert!(parse_path("").is_err());
    let p = parse_path("iris/labels/stable:classify").unwrap();
    assert_eq!(p.verb, Some("classify"));
}

#[test]
fn example_features_read_like_tf_serving() {
    let strict = |v: Value| feature_from_json("a", &v, Literals::Strict);
    assert_eq!(strict(json!(3)).unwrap(), FeatureValues::Ints(vec![3]));
    assert_eq!(
        strict(json!([1, 2.5])).unwrap(),
        FeatureValues::Floats(vec![1.0, 2.5])
    );
    assert_eq!(
        strict(json!(["x", {"b64": "eQ=="}])).unwrap(),
        FeatureValues::Bytes(vec![b"x".to_vec(), b"y".to_vec()])
    );
    // Booleans are int64 1 and 0 (TF Serving's AddValueToFeature), beside
    // integers too.
    assert_eq!(strict(json!(true)).unwrap(), FeatureValues::Ints(vec![1]));
    assert_eq!(
        strict(json!([false, true, 7])).unwrap(),
        FeatureValues::Ints(vec![0, 1, 7])
    );
    for bad in [
        json!([1, "x"]),
        json!(null),
        json!({"a": 1}),
        json!([true, 2.5]),
        json!([true, "x"]),
    ] {
        assert!(strict(bad.clone()).is_err(), "{bad}");
    }
    // A context's feature is the example's own where the example has it, as the
    // gRPC adapter merges them (TF Serving merges the serialized protos).
    let body = ExamplesBody {
        signature_name: None,
        context: Some(json!({"c": 1, "d": "x"}).as_object().unwrap().clone()),
        examples: Some(vec![json!({"a": 1.5}), json!({"c": 2})]),
    };
    let examples = decode_examples(&body, Literals::Strict).unwrap();
    assert_eq!(examples[0]["c"], FeatureValues::Ints(vec![1]));
    assert_eq!(examples[1]["c"], FeatureValues::Ints(vec![2]));
    assert_eq!(examples[1]["d"], FeatureValues::Bytes(vec![b"x".to_vec()]));
    let empty = ExamplesBody {
        examples: Some(Vec::new()),
        ..body
    };
    let err = decode_examples(&empty, Literals::Strict).unwrap_err();
    assert!(err.to_string().contains("\"examples\" is empty"), "{err}");
}

/// Bare NaN and ±Infinity are float features, never text, as predict reads them.
#[test]
fn bare_nonfinite_literals_are_float_features() {
    let bounds = RequestBounds {
        max_rows: 8,
        limit_of: crate::api::bounds::RowLimitOf::Server,
        max_values: None,
    };
    let read = |text: &[u8]| {
        read_literals(
            text,
            |bytes| ExamplesBody::parse(bytes, &bounds),
            ExamplesBody::bare_literals_outside_features,
        )
    };
    let (body, literals) =
        read(br#"{"examples": [{"x": [1.5, NaN, Infinity, -Infinity], "n": NaN}]}"#).unwrap();
    assert_eq!(literals, Literals::Quoted);
    let examples = decode_examples(&body, literals).unwrap();
    let FeatureValues::Floats(x) = &examples[0]["x"] else {
        panic!("{:?}", examples[0]["x"]);
    };
    assert_eq!(x[0], 1.5);
    assert!(x[1].is_nan());
    assert_eq!(&x[2..], [f32::INFINITY, f32::NEG_INFINITY]);
    assert!(matches!(&examples[0]["n"], FeatureValues::Floats(n) if n[0].is_nan()));
    // Text stays text; a bare literal is no text, nor a signature name.
    let (body, literals) = read(br#"{"examples": [{"s": ["NaN"]}]}"#).unwrap();
    assert_eq!(
        decode_examples(&body, literals).unwrap()[0]["s"],
        FeatureValues::Bytes(vec![b"NaN".to_vec()])
    );
    let (body, literals) = read(br#"{"examples": [{"s": ["x", NaN]}]}"#).unwrap();
    assert!(decode_examples(&body, literals).is_err());
    let err = read(br#"{"signature_name": NaN, "examples": [{"x": 1}]}"#)
        .err()
        .unwrap();
    assert!(err.to_string().contains("malformed JSON"), "{err}");
}

/// A `:predict` body reads as serde's derive read it (unknown keys ignored, a
/// null field absent), its rows refused as they are read.
#[test]
fn predict_bodies_are_read_with_their_rows_bounded() {
    let bounds = RequestBounds {
        max_rows: 2,
        limit_of: crate::api::bounds::RowLimitOf::Server,
        max_values: None,
    };
    let body = PredictBody::parse(
            br#"{"model_name": {"x": [1]}, "signature_name": null, "instances": [[1, 2], [3, 4]], "k": 3}"#,
            &bounds,
        )
        .unwrap();
    assert_eq!(body.signature_name, None);
    assert_eq!(body.instances, Some(json!([[1, 2], [3, 4]])));
    assert_eq!((body.inputs, body.k), (None, Some(json!(3))));
    for (text, words) in [
        (
            &br#"{"instances": [1, 2, 3]}"#[..],
            "\"instances\" has at least 3 rows",
        ),
        (
            br#"{"inputs": {"a": [1, 2, 3]}}"#,
            "input \"a\" has at least 3 rows",
        ),
        (
            br#"{"inputs": [[1], [2], [3]]}"#,
            "\"inputs\" has at least 3 rows",
        ),
    ] {
        match PredictBody::parse(text, &bounds) {
            Err(ApiError::PayloadTooLarge(m)) => assert!(m.contains(words), "{m}"),
            _ => panic!("{}", String::from_utf8_lossy(text)),
        }
    }
    for text in [
        &br#"[1]"#[..],
        br#"{"signature_name": 3, "instances": [1]}"#,
    ] {
        assert!(matches!(
            PredictBody::parse(text, &bounds),
            Err(ApiError::InvalidArgument(_))
        ));
    }
    assert_eq!(allowed_methods(Some("predict")), Some("POST"));
    assert_eq!(allowed_methods(None), Some("GET,HEAD"));
    assert_eq!(allowed_methods(Some("explain")), None);
}

#[test]
fn named_instances_stack_per_input() {
    let v = json!([{"a": [1, 2], "b": "x"}, {"a": [3, 4], "b": "y"}]);
    let named = decode_instances(&v, Literals::Strict, None).unwrap();
    assert_eq!(named[0].0, "a");
    assert_eq!(named[0].1.shape(), &[2, 2]);
    assert_eq!(named[1].1.shape(), &[2]);
    assert!(decode_instances(&json!([{"a": 1}, {"b": 2}]), Literals::Strict, None).is_err());
    assert!(decode_instances(&json!([]), Literals::Strict, None).is_err());
}
