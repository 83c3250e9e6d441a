//! Real pickle and joblib files written by CPython, numpy and joblib
//! (`tests/fixtures/make_pickle_fixtures.py`), read back and compared with the JSON
//! form of the value Python pickled.

mod common;

use std::fs;

use ferroserve_sklearn::{read_model_file, read_pickle};

#[test]
fn every_fixture_reads_back_to_the_value_python_pickled() {
    let dir = common::crate_dir().join("tests/fixtures/pickle");
    let expected: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let files = expected["files"].as_object().unwrap();
    assert!(files.len() >= 20, "fixtures missing");
    for (file, case) in files {
        let bytes = fs::read(dir.join(file)).unwrap();
        let value = read_model_file(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        let want = &expected["values"][case.as_str().unwrap()];
        let got = common::to_json(&value);
        if &got != want {
            // Narrow the difference down to the first differing dict entry for a readable failure.
            if let (Some(g), Some(w)) = (got["dict"].as_array(), want["dict"].as_array()) {
                for (g, w) in g.iter().zip(w) {
                    assert_eq!(g, w, "{file}: first differing entry");
                }
            }
            assert_eq!(&got, want, "{file}");
        }
        if file.ends_with(".pkl") {
            let direct = read_pickle(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
            // Compared as JSON because NaN != NaN in `Value`'s PartialEq.
            assert_eq!(common::to_json(&direct), got, "{file}: read_pickle differs");
        }
    }
}

/// Tiny fitted scikit-learn models (gradient boosting with its numpy random state and
/// Cython loss objects, HistGradientBoosting, KNN with a KDTree, ColumnTransformer with a
/// slice, SGD with its Cython loss) load as the right class with every attribute.
#[test]
fn sklearn_models_load_with_all_their_attributes() {
    use ferroserve_sklearn::value::Value;

    let dir = common::crate_dir().join("tests/fixtures/pickle");
    let expected: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let models = expected["sklearn"].as_object().unwrap();
    assert!(models.len() >= 10, "sklearn fixtures missing");
    for (file, want) in models {
        let bytes = fs::read(dir.join(file)).unwrap();
        let value = read_model_file(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        let Value::Object {
            module,
            name,
            state: Some(state),
            ..
        } = &value
        else {
            panic!("{file}: not an object with state: {value:?}")
        };
        assert_eq!(format!("{module}.{name}"), want["class"], "{file}");
        let Value::Dict(attrs) = &**state else {
            panic!("{file}: state is not a dict")
        };
        let mut keys: Vec<&str> = attrs
            .iter()
            .map(|(k, _)| match k {
                Value::Str(s) => s.as_str(),
                other => panic!("{file}: attribute key {other:?}"),
            })
            .collect();
        keys.sort_unstable();
        let want_keys: Vec<&str> = want["attrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(keys, want_keys, "{file}");
    }
}
