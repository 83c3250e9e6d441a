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
