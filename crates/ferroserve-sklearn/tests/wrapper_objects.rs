//! The user's own wrapper classes (`tests/fixtures/wrapper/make_wrapper_fixtures.py`):
//! a `LogisticRegressionTrain` object holding the estimator in `self.model` is served
//! with the opt-in (`LoadOptions::wrapper_attribute`) and refused without it; hostile
//! variants of that shape are refused with the opt-in too.

mod common;

use std::fs;

use ferroserve_sklearn::{ClassLabels, Input, LoadOptions, Prediction, SklearnModel};
use serde_json::Value as Json;

fn opt_in() -> LoadOptions {
    LoadOptions {
        wrapper_attribute: Some("model".into()),
    }
}

#[test]
fn wrapper_object_is_served_with_the_opt_in_and_equals_sklearn() {
    let dir = common::crate_dir().join("tests/fixtures/wrapper");
    let case: Json =
        serde_json::from_slice(&fs::read(dir.join("lr_wrapper.json")).unwrap()).unwrap();
    let rows = case["input"].as_array().unwrap();
    let n_cols = rows[0].as_array().unwrap().len();
    let data: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let input = Input::dense(&data, rows.len(), n_cols);
    let want_labels: Vec<String> = case["predict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let want_proba: Vec<f64> = case["predict_proba"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let files = case["files"].as_array().unwrap();
    assert_eq!(files.len(), 5);
    for file in files {
        let file = file.as_str().unwrap();
        let bytes = fs::read(dir.join(file)).unwrap();

        // Without the opt-in: refused by the wrapper class's name, as before.
        let err = SklearnModel::load(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("__main__.LogisticRegressionTrain") && err.contains("not an allowlisted"),
            "{file}: {err}"
        );

        let model =
            SklearnModel::load_with(&bytes, &opt_in()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(model.description(), "LogisticRegression", "{file}");
        assert_eq!(
            model.predict(&input).unwrap(),
            Prediction::Labels(ClassLabels::Str(want_labels.clone())),
            "{file}"
        );
        let proba = model.predict_proba(&input).unwrap();
        assert_eq!(proba.len(), want_proba.len());
        for (a, b) in proba.iter().zip(&want_proba) {
            assert!((a - b).abs() <= 1e-12, "{file}: {a} != {b}");
        }
    }
}

#[test]
fn an_attribute_other_than_the_configured_one_is_refused_by_name() {
    let dir = common::crate_dir().join("tests/fixtures/wrapper");
    let bytes = fs::read(dir.join("lr_wrapper.p2.pkl")).unwrap();
    let options = LoadOptions {
        wrapper_attribute: Some("clf".into()),
    };
    let err = SklearnModel::load_with(&bytes, &options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no attribute \"clf\"") && err.contains("\"model\""),
        "{err}"
    );
}

#[test]
fn plain_estimators_still_load_with_the_opt_in() {
    let dir = common::crate_dir().join("tests/fixtures/sklearn/1.9.1");
    let bytes = fs::read(dir.join("decision_tree_classifier.z3.joblib")).unwrap();
    SklearnModel::load_with(&bytes, &opt_in()).unwrap();
}

#[test]
fn hostile_wrappers_are_refused_with_the_opt_in() {
    let dir = common::crate_dir().join("tests/fixtures/wrapper/hostile");
    let expected: serde_json::Map<String, Json> =
        serde_json::from_slice(&fs::read(dir.join("expected_errors.json")).unwrap()).unwrap();
    assert!(expected.len() >= 9);
    for (file, want) in &expected {
        let want = want.as_str().unwrap();
        let bytes = fs::read(dir.join(file)).unwrap();
        let message = match SklearnModel::load_with(&bytes, &opt_in()) {
            Ok(_) => panic!("{file}: loaded, but must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(
            message.contains(want),
            "{file}: {message:?} does not mention {want:?}"
        );
        // And without the opt-in, every one is refused at its first unknown class.
        let plain = SklearnModel::load(&bytes).unwrap_err().to_string();
        assert!(
            plain.contains("not an allowlisted class"),
            "{file}: {plain}"
        );
    }
    assert!(
        !std::path::Path::new("/tmp/ferroserve-canary-wrapper").exists(),
        "a payload ran"
    );
}

/// The deterministic mutation run of `fuzz_regressions.rs`, over the wrapper fixtures
/// read with the opt-in: never a panic.
#[test]
fn mutated_wrappers_never_panic_with_the_opt_in() {
    let dir = common::crate_dir().join("tests/fixtures/wrapper");
    let seeds: Vec<Vec<u8>> = [
        "lr_wrapper.p0.pkl",
        "lr_wrapper.p2.pkl",
        "lr_wrapper.joblib",
    ]
    .iter()
    .map(|n| fs::read(dir.join(n)).unwrap())
    .collect();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    };
    let interesting: [u8; 10] = [0x00, 0xff, b'(', b')', b'.', b'R', b'b', b'c', 0x81, 0x93];
    for round in 0..1500 {
        let mut bytes = seeds[round % seeds.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 3 {
                0 => bytes[at] = interesting[(next() % 10) as usize],
                1 => bytes[at] ^= 1 << (next() % 8),
                _ => {
                    if bytes.len() > 1 {
                        bytes.remove(at);
                    }
                }
            }
        }
        let _ = SklearnModel::load_with(&bytes, &opt_in());
    }
}
