//! How models whose input or options need more than a numeric matrix are served, and
//! the refusals of valid models this crate does not reproduce: each must name what is
//! unsupported. The models are made by `make_sklearn_fixtures.py` (`--refused` for the
//! ones under `refused/`, one file per scikit-learn version).

mod common;

use std::path::PathBuf;

use ferroserve_sklearn::{
    ClassLabels, Column, ColumnKind, Input, InputSchema, Prediction, SklearnModel,
};
use serde_json::Value as Json;

fn fixture(path: &str) -> PathBuf {
    common::crate_dir()
        .join("tests/fixtures/sklearn")
        .join(path)
}

fn load(path: &str) -> SklearnModel {
    SklearnModel::load(&std::fs::read(fixture(path)).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The case's input columns and scikit-learn's labels.
fn case(name: &str) -> (Vec<(String, Column)>, Vec<String>) {
    let json: Json = serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap();
    let columns = common::fixture_columns(&json["input"]["columns"]);
    let labels = json["predict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (columns, labels)
}

fn labels(model: &SklearnModel, columns: Vec<(String, Column)>) -> Vec<String> {
    match model.predict(&Input::Columns(columns)).unwrap() {
        Prediction::Labels(ClassLabels::Str(v)) => v,
        other => panic!("unexpected prediction {other:?}"),
    }
}

/// A column of `feature_names_in_` that no transformer reads: scikit-learn requires it
/// in a DataFrame; here it may be given (and is ignored) or left out.
#[test]
fn a_dropped_training_column_may_be_given_or_left_out() {
    for version in ["1.9.1", "1.3.2"] {
        let model = load(&format!("{version}/ct_dropped_column_logreg.z3.joblib"));
        let InputSchema::Columns(schema) = model.input_schema() else {
            panic!("named columns expected");
        };
        let income = schema.iter().find(|c| c.name == "income").unwrap();
        assert!(!income.used, "{version}: income is dropped by the model");
        let (columns, want) = case(&format!("{version}/ct_dropped_column_logreg.json"));
        assert!(columns.iter().any(|(n, _)| n == "income"));
        assert_eq!(
            labels(&model, columns.clone()),
            want,
            "{version}, with income"
        );
        let without: Vec<_> = columns.into_iter().filter(|(n, _)| n != "income").collect();
        assert_eq!(labels(&model, without), want, "{version}, without income");
    }
}

/// Text columns chosen by position in a DataFrame are asked for by name (a request
/// carries text only in named columns); in an array without names they are refused.
#[test]
fn text_columns_chosen_by_position_are_named_or_refused() {
    for version in ["1.9.1", "1.3.2"] {
        let model = load(&format!(
            "{version}/ct_positions_on_strings_logreg.z3.joblib"
        ));
        let InputSchema::Columns(schema) = model.input_schema() else {
            panic!(
                "{version}: named columns expected, got {:?}",
                model.input_schema()
            );
        };
        let kinds: Vec<(&str, ColumnKind)> =
            schema.iter().map(|c| (c.name.as_str(), c.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("age", ColumnKind::Numeric),
                ("city", ColumnKind::String),
                ("income", ColumnKind::Numeric),
                ("color", ColumnKind::String),
            ]
        );
        let (columns, want) = case(&format!("{version}/ct_positions_on_strings_logreg.json"));
        assert_eq!(labels(&model, columns), want);
    }
}

#[test]
fn unsupported_models_are_refused_with_what_is_unsupported() {
    let expected = [
        (
            "ct_positions_object_array",
            "fit it on a pandas DataFrame with named columns",
        ),
        ("dt_multioutput", "multi-output"),
        ("knn_multioutput_regressor", "multi-output"),
        ("knn_sparse_fit", "fitted on sparse input"),
        ("hgb_categorical", "categorical features"),
    ];
    for version in ["1.9.1", "1.3.2"] {
        for (name, message) in expected {
            let path = format!("refused/{name}.{version}.z3.joblib");
            let err = SklearnModel::load(&std::fs::read(fixture(&path)).unwrap())
                .expect_err(&path)
                .to_string();
            assert!(err.contains(message), "{path}: {err}");
        }
    }
}

/// The labels scikit-learn gave for a case whose input is one text per row.
fn text_case(name: &str) -> (Vec<String>, Vec<String>) {
    let json: Json = serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap();
    let strings = |v: &Json| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    (strings(&json["input"]["docs"]), strings(&json["predict"]))
}

/// A pipeline whose first step is an encoder (or an imputer) fitted on text, with no
/// ColumnTransformer, takes the inputs a ColumnTransformer over those columns takes:
/// one per column, named and of the kind the step reads, when fitted on a DataFrame;
/// one text per row for a single column without a name. It was a numeric matrix that
/// no request could fill (text was "not FP64", numbers "must hold text").
#[test]
fn an_encoder_first_on_text_takes_named_text_columns() {
    use ColumnKind::{Numeric, String as Text};
    let cases: [(&str, &[(&str, ColumnKind)]); 5] = [
        (
            "pipeline_onehot_text_logreg",
            &[("city", Text), ("color", Text)],
        ),
        (
            "pipeline_onehot_drop_first_text_ridge",
            &[("city", Text), ("color", Text)],
        ),
        (
            "pipeline_onehot_if_binary_text_rf",
            &[("flag", Text), ("city", Text)],
        ),
        (
            "pipeline_ordinal_mixed_rf",
            &[("city", Text), ("age", Numeric), ("color", Text)],
        ),
        (
            "pipeline_impute_onehot_text_logreg",
            &[("city", Text), ("color", Text)],
        ),
    ];
    for (name, want) in cases {
        let json: Json =
            serde_json::from_slice(&std::fs::read(fixture(&format!("1.9.1/{name}.json"))).unwrap())
                .unwrap();
        for file in json["files"].as_array().unwrap() {
            let path = format!("1.9.1/{}", file.as_str().unwrap());
            let model = load(&path);
            let InputSchema::Columns(schema) = model.input_schema() else {
                panic!(
                    "{path}: named columns expected, got {:?}",
                    model.input_schema()
                );
            };
            let got: Vec<(&str, ColumnKind)> =
                schema.iter().map(|c| (c.name.as_str(), c.kind)).collect();
            assert_eq!(got, want, "{path}");
            assert!(schema.iter().all(|c| c.used), "{path}");
            let err = model
                .predict(&Input::dense(&[0.0; 2], 1, 2))
                .unwrap_err()
                .to_string();
            assert!(err.contains("named columns"), "{path}: {err}");
        }
        let columns = common::fixture_columns(&json["input"]["columns"]);
        let model = load(&format!("1.9.1/{}", json["files"][0].as_str().unwrap()));
        let prediction = model.predict(&Input::Columns(columns)).unwrap();
        match (prediction, json["predict"][0].is_string()) {
            (Prediction::Labels(ClassLabels::Str(got)), true) => {
                let want: Vec<&str> = json["predict"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                assert_eq!(got, want, "{name}");
            }
            (Prediction::Values(got), false) => {
                let want = json["predict"].as_array().unwrap();
                assert_eq!(got.len(), want.len(), "{name}");
                for (a, b) in got.iter().zip(want) {
                    let b = b.as_f64().unwrap();
                    assert!(
                        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                        "{name}: {a} != {b}"
                    );
                }
            }
            (other, _) => panic!("{name}: unexpected prediction {other:?}"),
        }
    }

    // One text column fitted without a name: one text per row.
    for file in [
        "pipeline_onehot_text_array_logreg.p5.pkl",
        "pipeline_onehot_text_array_logreg.z3.joblib",
    ] {
        let model = load(&format!("1.9.1/{file}"));
        assert_eq!(model.input_schema(), &InputSchema::Text, "{file}");
        let (docs, want) = text_case("1.9.1/pipeline_onehot_text_array_logreg.json");
        match model.predict(&Input::Text(docs)).unwrap() {
            Prediction::Labels(ClassLabels::Str(got)) => assert_eq!(got, want, "{file}"),
            other => panic!("{file}: unexpected prediction {other:?}"),
        }
    }
}

/// An encoder fitted on numbers as the first step still takes a numeric matrix.
#[test]
fn an_encoder_first_on_numbers_still_takes_a_matrix() {
    for version in ["1.9.1", "1.2.2"] {
        let model = load(&format!("{version}/pipeline_ordinal_numeric_rf.z3.joblib"));
        assert_eq!(
            model.input_schema(),
            &InputSchema::Dense { n_features: 4 },
            "{version}"
        );
    }
}

/// Valid models refused at load (fixtures of the installed scikit-learn only).
#[test]
fn text_read_where_no_request_can_bring_it_is_refused_at_load() {
    let expected = [
        (
            "pipeline_onehot_object_array",
            "OneHotEncoder: it reads text in 2 columns of an array without column names",
        ),
        (
            "calibrated_onehot_text_pipeline",
            "a pipeline whose first step reads text columns inside another estimator",
        ),
    ];
    for (name, message) in expected {
        let path = format!("refused/{name}.1.9.1.z3.joblib");
        let err = SklearnModel::load(&std::fs::read(fixture(&path)).unwrap())
            .expect_err(&path)
            .to_string();
        assert!(err.contains(message), "{path}: {err}");
    }
}
