//! Training jobs (issue 13): train on CSV, Parquet, JSON-lines, SQLite, PostgreSQL
//! and MariaDB sources, compare with scikit-learn's GridSearchCV on the same folds
//! (tests/fixtures/training, made by python/make_training_fixtures.py), serve the
//! trained ONNX model over TF Serving REST, V2 and the simple API, and fail clearly
//! on bad data; against a real server on 127.0.0.1:0.

#[path = "../common/mod.rs"]
mod common;
mod features;
mod fidelity;
mod label_maps;
mod old_service;
mod refusals;
mod sources;

use std::path::Path;
use std::time::{Duration, Instant};

use common::jobs::{finished, settings, submit, wait_for, Env};
use common::{copy_dir, root_path, status_and_body, TestServer};
use ferroserve::settings::Settings;
use serde_json::{json, Value};

/// An empty repository, the training fixtures in the data directory.
fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let state = dir.path().join("state");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    for f in ["bank.csv", "three.csv"] {
        std::fs::copy(
            root_path(&format!("tests/fixtures/training/{f}")),
            data.join(f),
        )
        .unwrap();
    }
    Env {
        repo,
        state,
        data,
        _dir: dir,
    }
}

fn expected() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root_path("tests/fixtures/training/expected.json")).unwrap(),
    )
    .unwrap()
}

/// The CSV as header and rows of text.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

async fn succeeded(server: &TestServer, body: Value) -> Value {
    let id = submit(server, body).await;
    let job = finished(server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    job["result"].clone()
}

async fn failed(server: &TestServer, body: Value) -> String {
    let id = submit(server, body).await;
    let job = finished(server, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    job["error"].as_str().unwrap().to_string()
}

fn bank_spec(source: Value, algorithm: Value, cv: Value) -> Value {
    let e = expected();
    let features: Vec<Value> = e["bank"]["numeric"]
        .as_array()
        .unwrap()
        .iter()
        .chain(e["bank"]["categorical"].as_array().unwrap())
        .map(|k| json!({"key": k}))
        .collect();
    json!({"kind": "train", "spec": {
        "model": "bank",
        "source": source,
        "schema": {"label": {"key": "y", "values": {"yes": 1, "no": 0}},
                   "features": features,
                   "categorical": e["bank"]["categorical"]},
        "algorithm": algorithm,
        "cv": cv,
    }})
}

fn three_spec() -> Value {
    json!({"kind": "train", "spec": {
        "model": "three",
        "source": {"path": "three.csv"},
        "schema": {"label": {"key": "kind"},
                   "features": [{"key": "x1"}, {"key": "x2"}, {"key": "x3"},
                                {"key": "region"}],
                   "categorical": ["region"]},
        "algorithm": {"name": "logistic_regression", "grid": {"C": expected()["three"]["grid"]}},
        "cv": {"folds": 5, "scoring": "log_loss"},
    }})
}

/// Rows of the CSV as TF Serving REST columnar inputs: one `[N, 1]` list per
/// feature, numbers for numeric ones, strings for categorical ones.
fn columnar(header: &[String], rows: &[Vec<String>], numeric: &[&str], cats: &[&str]) -> Value {
    let mut inputs = serde_json::Map::new();
    for (j, h) in header.iter().enumerate() {
        let column: Vec<Value> = if numeric.contains(&h.as_str()) {
            rows.iter()
                .map(|r| json!([r[j].parse::<f64>().unwrap()]))
                .collect()
        } else if cats.contains(&h.as_str()) {
            rows.iter().map(|r| json!([r[j]])).collect()
        } else {
            continue;
        };
        inputs.insert(h.clone(), Value::Array(column));
    }
    json!({ "inputs": inputs })
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The served model's labels and probabilities for every row of `csv`.
async fn served(
    server: &TestServer,
    model: &str,
    csv: &Path,
    numeric: &[&str],
    cats: &[&str],
) -> (Vec<Value>, Vec<Vec<f64>>) {
    let (header, rows) = read_csv(csv);
    let (status, body) = server
        .post_json(
            &format!("/v1/models/{model}:predict"),
            &columnar(&header, &rows, numeric, cats),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let labels = body["outputs"]["label"].as_array().unwrap().clone();
    let proba = body["outputs"]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    (labels, proba)
}

/// The served answers equal the job's own in-memory predictions (the first rows).
fn assert_same_as_job(result: &Value, labels: &[Value], proba: &[Vec<f64>]) {
    let sample = &result["sample_predictions"];
    let n = sample["labels"].as_array().unwrap().len();
    assert!(n >= 50, "{sample}");
    for i in 0..n {
        assert_eq!(labels[i], sample["labels"][i], "row {i}");
        for (c, p) in proba[i].iter().enumerate() {
            let own = sample["probabilities"][i][c].as_f64().unwrap();
            assert!((p - own).abs() <= 1e-5, "row {i} class {c}: {p} != {own}");
        }
    }
}

/// Checks the CV table and the refit's labels against scikit-learn's.
fn assert_like_scikit_learn(result: &Value, exp: &Value, labels: &[Value], proba: &[Vec<f64>]) {
    let table = result["cv_results"].as_array().unwrap();
    let grid = exp["grid"].as_array().unwrap();
    assert_eq!(table.len(), grid.len());
    for (i, row) in table.iter().enumerate() {
        assert_eq!(row["params"]["C"].as_f64(), grid[i].as_f64());
        let ours = row["mean"].as_f64().unwrap();
        let theirs = exp["mean"][i].as_f64().unwrap();
        eprintln!(
            "C = {}: CV mean {ours:.6}, scikit-learn's {theirs:.6}",
            grid[i]
        );
        assert!(
            (ours - theirs).abs() <= 0.01,
            "C = {}: CV mean {ours} vs scikit-learn's {theirs}",
            grid[i]
        );
        assert_eq!(row["scores"].as_array().unwrap().len(), 5);
    }
    assert_eq!(
        result["best_params"]["C"].as_f64(),
        exp["best_C"].as_f64(),
        "{result}"
    );
    // The refit's probabilities are scikit-learn's, up to where its lbfgs stopped.
    let sk_proba = exp["predict_proba"].as_array().unwrap();
    let worst = proba
        .iter()
        .zip(sk_proba)
        .flat_map(|(ours, theirs)| {
            ours.iter()
                .zip(theirs.as_array().unwrap())
                .map(|(a, b)| (a - b.as_f64().unwrap()).abs())
        })
        .fold(0.0f64, f64::max);
    eprintln!("largest probability difference from scikit-learn's: {worst:.2e}");
    assert!(worst < 0.01, "{worst}");
    let sk = strs(&exp["predict"]);
    assert_eq!(labels.len(), sk.len());
    let agree = labels
        .iter()
        .zip(&sk)
        .filter(|(ours, theirs)| match ours {
            Value::String(s) => s == *theirs,
            // The bank's label map: yes → 1, no → 0.
            Value::Number(n) => (n.as_i64() == Some(1)) == (*theirs == "yes"),
            _ => false,
        })
        .count();
    assert!(
        agree as f64 >= 0.995 * sk.len() as f64,
        "labels agree on {agree} of {} rows",
        sk.len()
    );
}
