//! Brute-force KNeighbors on integer features, where many training rows are equally
//! distant from a query and scikit-learn's heap, not the lowest index, decides which of
//! them are neighbours.
//!
//! `knn_ties_*` (made by `tests/fixtures/sklearn/make_sklearn_fixtures.py`, 200
//! training rows) must match scikit-learn on every row to the last bit: the same
//! neighbours, summed in the same order as numpy sums them. `knn_threads_*` (made by
//! `tests/fixtures/knn_threads/make_knn_thread_fixtures.py`, 600 training rows) hold
//! scikit-learn's answers under every OpenMP thread count and strategy that can differ:
//! a row on which they all agree must be answered so, and a row on which they do not
//! must be refused.

mod common;

use std::path::Path;

use ferroserve_sklearn::{ClassLabels, Input, Prediction, SklearnModel};
use serde_json::Value as Json;

const TIE_CASES: &[&str] = &[
    "knn_ties_classifier",
    "knn_ties_classifier_distance",
    "knn_ties_classifier_manhattan",
    "knn_ties_classifier_l2",
    "knn_ties_regressor",
    "knn_ties_regressor_distance",
];

const THREAD_CASES: &[&str] = &[
    "knn_threads_classifier",
    "knn_threads_classifier_distance",
    "knn_threads_regressor",
];

fn read_json(path: &Path) -> Json {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(path: &Path) -> SklearnModel {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    SklearnModel::load(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rows_of(json: &Json) -> Vec<Vec<f64>> {
    json.as_array()
        .expect("a list of rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("a row")
                .iter()
                .map(|v| v.as_f64().expect("a number"))
                .collect()
        })
        .collect()
}

fn floats(json: &Json) -> Vec<f64> {
    json.as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

/// The predicted labels (integer classes here) or values, as numbers.
fn predict_numbers(model: &SklearnModel, input: &Input<'_>) -> Result<Vec<f64>, String> {
    match model.predict(input).map_err(|e| e.to_string())? {
        Prediction::Labels(ClassLabels::Int(v)) => Ok(v.iter().map(|&c| c as f64).collect()),
        Prediction::Labels(other) => panic!("integer classes expected, got {other:?}"),
        Prediction::Values(v) => Ok(v),
    }
}

fn tie_fixture(case: &str) -> (Json, Vec<std::path::PathBuf>) {
    let dir = common::crate_dir().join("tests/fixtures/sklearn/1.9.1");
    let json = read_json(&dir.join(format!("{case}.json")));
    let files = json["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| dir.join(f.as_str().expect("a file name")))
        .collect();
    (json, files)
}

#[test]
fn brute_ties_keep_the_rows_scikit_learn_keeps() {
    // Rows 3, 18, 20, 36 and 43 are all at distance 1 from [3, 1, 3] and compete for the
    // last two places; scikit-learn keeps 3 and 20 (its heap's choice), not 3 and 18.
    let (_, files) = tie_fixture("knn_ties_classifier");
    let model = load(&files[0]);
    let row = [3.0, 1.0, 3.0];
    let proba = model
        .predict_proba(&Input::dense(&row, 1, 3))
        .expect("predict_proba");
    assert_eq!(proba, vec![0.2, 0.8]);
}

#[test]
fn brute_ties_match_scikit_learn_to_the_last_bit() {
    for case in TIE_CASES {
        let (json, files) = tie_fixture(case);
        let rows = rows_of(&json["input"]["rows"]);
        let want_predict = floats(&json["predict"]);
        let want_proba: Option<Vec<Vec<f64>>> = json["predict_proba"]
            .as_array()
            .map(|_| rows_of(&json["predict_proba"]));
        for file in &files {
            let model = load(file);
            // Each row alone, and all of them at once, as scikit-learn predicted them.
            let data: Vec<f64> = rows.iter().flatten().copied().collect();
            let all = Input::dense(&data, rows.len(), 3);
            let got = predict_numbers(&model, &all).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_same(
                &got,
                &want_predict,
                &format!("{case} ({}): predict", file.display()),
            );
            for (i, row) in rows.iter().enumerate() {
                let one = Input::dense(row, 1, 3);
                let got = predict_numbers(&model, &one).unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_same(
                    &got,
                    &want_predict[i..=i],
                    &format!("{case}: predict row {i} {row:?}"),
                );
                if let Some(want) = &want_proba {
                    let got = model.predict_proba(&one).expect("predict_proba");
                    let what = format!("{case}: predict_proba row {i} {row:?}");
                    assert_same(&got, &want[i], &what);
                }
            }
        }
    }
}

/// Equal to the last bit.
fn assert_same(got: &[f64], want: &[f64], what: &str) {
    let same = got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "{what}: {got:?} != scikit-learn's {want:?}");
}

/// Whether scikit-learn's answers (one list of numbers per configuration) agree:
/// labels and counts exactly, values but for the last bits that the order of tied
/// neighbours moves.
fn agree(answers: &[Vec<f64>]) -> bool {
    answers.iter().all(|a| {
        a.len() == answers[0].len()
            && a.iter()
                .zip(&answers[0])
                .all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()))
    })
}

#[test]
fn rows_whose_answer_depends_on_the_thread_count_are_refused() {
    let dir = common::crate_dir().join("tests/fixtures/knn_threads");
    for case in THREAD_CASES {
        let json = read_json(&dir.join(format!("{case}.1.9.1.json")));
        let model = load(&dir.join(json["file"].as_str().expect("file")));
        let rows = rows_of(&json["input"]);
        let answers: Vec<&Json> = json["answers"]
            .as_object()
            .expect("answers")
            .values()
            .collect();
        let (mut answered, mut refused) = (0, 0);
        for (i, row) in rows.iter().enumerate() {
            let one = Input::dense(row, 1, 3);
            let sklearn_predict: Vec<f64> = answers
                .iter()
                .map(|a| a["predict"][i].as_f64().expect("a number"))
                .collect();
            let mut checks = vec![(
                "predict",
                sklearn_predict.iter().map(|&v| vec![v]).collect::<Vec<_>>(),
                predict_numbers(&model, &one),
            )];
            if answers[0].get("predict_proba").is_some() {
                let sklearn = answers
                    .iter()
                    .map(|a| floats(&a["predict_proba"][i]))
                    .collect();
                checks.push((
                    "predict_proba",
                    sklearn,
                    model.predict_proba(&one).map_err(|e| e.to_string()),
                ));
            }
            for (what, sklearn, got) in checks {
                if agree(&sklearn) {
                    let got = got.unwrap_or_else(|e| {
                        panic!(
                            "{case}: {what} of row {i} {row:?} refused, but scikit-learn always \
                             answers {:?}: {e}",
                            sklearn[0]
                        )
                    });
                    assert!(
                        agree(&[got.clone(), sklearn[0].clone()]),
                        "{case}: {what} of row {i} {row:?} is {got:?}, scikit-learn's {:?}",
                        sklearn[0]
                    );
                    answered += 1;
                } else {
                    match got {
                        Ok(v) => panic!(
                            "{case}: {what} of row {i} {row:?} answered {v:?}, but scikit-learn \
                             answers {sklearn:?} depending on its threads"
                        ),
                        Err(e) => assert!(e.contains("thread count"), "{case}: {e}"),
                    }
                    refused += 1;
                }
            }
        }
        assert!(
            answered > 0 && refused > 0,
            "{case}: {answered} answered, {refused} refused"
        );
    }
}
