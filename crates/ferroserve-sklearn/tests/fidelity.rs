//! Native predictions against scikit-learn's own, over the fixtures that
//! `tests/fixtures/sklearn/make_sklearn_fixtures.py` made with several scikit-learn
//! versions (one directory per version).
//!
//! Every `<case>.json` names the model files of one case (pickle protocols 2 and 5,
//! joblib plain / zlib / gzip), the held-out input and scikit-learn's `predict` and
//! `predict_proba`. Labels must be equal; numbers within 1e-9 relative. A 2-D
//! `predict` (a list per row) must be 2-D natively too, of the same width.
//!
//! The text and SVM cases of `make_text_fixtures.py` add an input of one document per
//! row (`"kind": "text"`), scikit-learn's `decision_function`, and `transform` (the
//! sparse output of the steps before the final estimator), compared the same way.
//!
//! `FERROSERVE_SKLEARN_FIXTURES=<dir>` runs the same comparison over another directory
//! (the fresh round of `python/sklearn_fresh_round.sh`, made by the current
//! scikit-learn at test time).

mod common;

use std::path::{Path, PathBuf};

use ferroserve_sklearn::{ClassLabels, Column, Input, Prediction, SklearnModel};
use serde_json::Value as Json;

/// Cases that do not load yet, with the reason (prefixes of case names). They must
/// fail at load time (a refusal, never a wrong prediction); entries are removed as
/// support lands. Empty: every fixture case loads and matches.
const PENDING: &[(&str, &str)] = &[];

fn pending_reason(case: &str) -> Option<&'static str> {
    PENDING
        .iter()
        .find(|(prefix, _)| case.starts_with(prefix))
        .map(|(_, why)| *why)
}

fn fixture_root() -> PathBuf {
    match std::env::var_os("FERROSERVE_SKLEARN_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sklearn"),
    }
}

/// Directories holding `<case>.json` files: the root and its subdirectories.
fn case_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    dirs.extend(subdirs);
    dirs
}

thread_local! {
    /// The relative tolerance of the case being checked: 1e-9, or 1e-6 for the
    /// `float32` cases, where scikit-learn 1.9 keeps the final estimator's arithmetic
    /// in float32 (numpy's float32 `exp` is not correctly rounded, so those cases agree
    /// to float32 precision, not to the last bit).
    static TOLERANCE: std::cell::Cell<f64> = const { std::cell::Cell::new(1e-9) };
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    let tol = TOLERANCE.with(|t| t.get());
    (a - b).abs() <= tol * a.abs().max(b.abs()) + 1e-300
}

/// The held-out input: a row-major matrix (data, rows, columns), named columns, or
/// one document per row.
type CaseInput = (
    Vec<f64>,
    usize,
    usize,
    Option<Vec<(String, Column)>>,
    Option<Vec<String>>,
);

fn input_of(case: &Json) -> CaseInput {
    let input = &case["input"];
    match input["kind"].as_str() {
        Some("dense") => {
            let rows = input["rows"].as_array().expect("rows");
            let n_cols = rows.first().map_or(0, |r| r.as_array().unwrap().len());
            let data = rows
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter())
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect();
            (data, rows.len(), n_cols, None, None)
        }
        Some("text") => {
            let docs = input["docs"]
                .as_array()
                .expect("docs")
                .iter()
                .map(|d| d.as_str().unwrap().to_string())
                .collect();
            (vec![], 0, 0, None, Some(docs))
        }
        Some("columns") => {
            let columns = common::fixture_columns(&input["columns"]);
            (vec![], 0, 0, Some(columns), None)
        }
        other => panic!("unknown input kind {other:?}"),
    }
}

fn labels_equal(got: &ClassLabels, want: &[Json]) -> Result<(), String> {
    let ok = match got {
        ClassLabels::Int(v) => {
            v.len() == want.len() && v.iter().zip(want).all(|(a, b)| b.as_i64() == Some(*a))
        }
        ClassLabels::Str(v) => {
            v.len() == want.len() && v.iter().zip(want).all(|(a, b)| b.as_str() == Some(a))
        }
        ClassLabels::Float(v) => {
            v.len() == want.len() && v.iter().zip(want).all(|(a, b)| b.as_f64() == Some(*a))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("labels {got:?} != expected {want:?}"))
    }
}

fn check_file(path: &Path, case: &Json) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let model = SklearnModel::load(&bytes).map_err(|e| format!("load: {e}"))?;
    let (data, n_rows, n_cols, columns, docs) = input_of(case);
    let input = match (columns, docs) {
        (Some(cols), _) => Input::Columns(cols),
        (None, Some(docs)) => Input::Text(docs),
        (None, None) => Input::dense(&data, n_rows, n_cols),
    };
    if model.is_classifier() != case["classifier"].as_bool().unwrap() {
        return Err("is_classifier differs".into());
    }
    if let Some(classes) = case["classes"].as_array() {
        labels_equal(model.classes().ok_or("no classes")?, classes)
            .map_err(|e| format!("classes_: {e}"))?;
    }
    if let Some(names) = case["feature_names"].as_array() {
        let got = model.feature_names().ok_or("no feature names")?;
        let want: Vec<&str> = names.iter().map(|n| n.as_str().unwrap()).collect();
        if got != want.as_slice() {
            return Err(format!("feature names {got:?} != {want:?}"));
        }
    }
    let want = case["predict"].as_array().unwrap();
    // scikit-learn's predict is 2-D for some regressors (a target of one column): its
    // rows are lists, and the model must say so (`predict_width`).
    let want_width = want.first().and_then(Json::as_array).map(Vec::len);
    if model.predict_width() != want_width {
        return Err(format!(
            "predict_width {:?}, but scikit-learn's predict has {want_width:?} columns",
            model.predict_width()
        ));
    }
    let want_values: Vec<Json>;
    let want = match want_width {
        Some(_) => {
            want_values = want
                .iter()
                .flat_map(|row| row.as_array().expect("a row of predict").clone())
                .collect();
            &want_values
        }
        None => want,
    };
    match model.predict(&input).map_err(|e| format!("predict: {e}"))? {
        Prediction::Labels(labels) => {
            labels_equal(&labels, want).map_err(|e| format!("predict: {e}"))?
        }
        Prediction::Values(values) => {
            if values.len() != want.len() {
                return Err(format!(
                    "predict: {} values for {} rows",
                    values.len(),
                    want.len()
                ));
            }
            for (i, (a, b)) in values.iter().zip(want).enumerate() {
                let b = b.as_f64().unwrap();
                if !close(*a, b) {
                    return Err(format!(
                        "predict row {i}: {a:e} != {b:e} (diff {:e})",
                        a - b
                    ));
                }
            }
        }
    }
    match case["predict_proba"].as_array() {
        Some(rows) => {
            let got = model
                .predict_proba(&input)
                .map_err(|e| format!("predict_proba: {e}"))?;
            let want: Vec<f64> = rows
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
                .collect();
            if got.len() != want.len() {
                return Err(format!(
                    "predict_proba: {} values, expected {}",
                    got.len(),
                    want.len()
                ));
            }
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                if !close(*a, *b) {
                    return Err(format!(
                        "predict_proba value {i}: {a:e} != {b:e} (diff {:e})",
                        a - b
                    ));
                }
            }
        }
        None => {
            if model.has_predict_proba() {
                return Err("offers predict_proba where scikit-learn has none".into());
            }
        }
    }
    if let Some(rows) = case.get("decision_function").and_then(Json::as_array) {
        let got = model
            .decision_function(&input)
            .map_err(|e| format!("decision_function: {e}"))?;
        let want: Vec<f64> = rows
            .iter()
            .flat_map(|r| match r.as_array() {
                Some(row) => row.iter().map(|v| v.as_f64().unwrap()).collect(),
                None => vec![r.as_f64().unwrap()],
            })
            .collect();
        close_all("decision_function", &got, &want)?;
    }
    if let Some(rows) = case.get("transform").and_then(Json::as_array) {
        let got = model
            .transform(&input)
            .map_err(|e| format!("transform: {e}"))?;
        if got.n_rows != rows.len() {
            return Err(format!(
                "transform: {} rows, expected {}",
                got.n_rows,
                rows.len()
            ));
        }
        for (i, row) in rows.iter().enumerate() {
            let (idx, val) = got.row(i);
            let nonzero: Vec<(usize, f64)> = idx
                .iter()
                .zip(val)
                .filter(|(_, v)| **v != 0.0)
                .map(|(j, v)| (*j, *v))
                .collect();
            let want: Vec<(usize, f64)> = row["indices"]
                .as_array()
                .unwrap()
                .iter()
                .zip(row["values"].as_array().unwrap())
                .map(|(j, v)| (j.as_u64().unwrap() as usize, v.as_f64().unwrap()))
                .filter(|(_, v)| *v != 0.0)
                .collect();
            let same = nonzero.len() == want.len()
                && nonzero
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.0 == b.0 && close(a.1, b.1));
            if !same {
                return Err(format!("transform row {i}: {nonzero:?} != {want:?}"));
            }
        }
    }
    Ok(())
}

fn close_all(what: &str, got: &[f64], want: &[f64]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
    }
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        if !close(*a, *b) {
            return Err(format!(
                "{what} value {i}: {a:e} != {b:e} (diff {:e})",
                a - b
            ));
        }
    }
    Ok(())
}

#[test]
fn native_predictions_equal_sklearn() {
    let root = fixture_root();
    let mut failures = Vec::new();
    let mut passed = 0;
    let mut pending = 0;
    let mut cases = 0;
    for dir in case_dirs(&root) {
        let mut jsons: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        jsons.sort();
        let mut dir_passed = 0;
        for json in jsons {
            let case: Json = serde_json::from_slice(&std::fs::read(&json).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", json.display()));
            cases += 1;
            let name = case["name"].as_str().unwrap_or_default();
            let tolerance = if name.contains("float32") { 1e-6 } else { 1e-9 };
            TOLERANCE.with(|t| t.set(tolerance));
            for file in case["files"].as_array().unwrap() {
                let path = dir.join(file.as_str().unwrap());
                match (check_file(&path, &case), pending_reason(name)) {
                    (Ok(()), _) => {
                        passed += 1;
                        dir_passed += 1;
                    }
                    (Err(e), Some(why)) if e.starts_with("load: ") => {
                        pending += 1;
                        eprintln!("pending {} ({why}): {e}", path.display());
                    }
                    (Err(e), _) => failures.push(format!("{}: {e}", path.display())),
                }
            }
        }
        if dir_passed > 0 {
            eprintln!(
                "{}: {dir_passed} model files match scikit-learn",
                dir.display()
            );
        }
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    eprintln!(
        "{passed} files passed, {} failed, {pending} pending, {cases} cases",
        failures.len()
    );
    assert!(cases > 0, "no fixtures under {}", root.display());
    assert!(
        failures.is_empty(),
        "{} of {} model files differ from scikit-learn",
        failures.len(),
        passed + failures.len()
    );
}
