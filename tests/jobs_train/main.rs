//! Training jobs (issue 13): train on CSV, Parquet, JSON-lines, SQLite, PostgreSQL
//! and MariaDB sources, compare with scikit-learn's GridSearchCV on the same folds
//! (tests/fixtures/training, made by python/make_training_fixtures.py), serve the
//! trained ONNX model over TF Serving REST, V2 and the simple API, and fail clearly
//! on bad data; against a real server on 127.0.0.1:0.

#[path = "../common/mod.rs"]
mod common;
mod label_maps;
mod old_service;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_training_matches_scikit_learn_and_serves_what_it_predicted() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let exp = expected();
    let result = succeeded(
        &server,
        bank_spec(
            json!({"path": "bank.csv"}),
            json!({"name": "logistic_regression", "grid": {"C": exp["bank"]["grid"]}}),
            json!({"folds": 5, "scoring": "roc_auc"}),
        ),
    )
    .await;
    assert_eq!(result["model"], "bank");
    assert_eq!(result["version"], 1);
    assert_eq!(result["rows"], 1200);
    assert_eq!(result["scoring"], "roc_auc");
    assert_eq!(result["classes"], json!([0, 1]));
    assert_eq!(result["data_hash"].as_str().unwrap().len(), 64);
    // Saved whole, with its record, and nothing left staged.
    let version_dir = env.repo.join("bank/1");
    assert!(version_dir.join("model.onnx").is_file());
    let training: Value =
        serde_json::from_slice(&std::fs::read(version_dir.join("training.json")).unwrap()).unwrap();
    assert_eq!(training["best_params"], result["best_params"]);
    assert_eq!(training["data_hash"], result["data_hash"]);
    let names: Vec<String> = std::fs::read_dir(env.repo.join("bank"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["1"]);

    // Served at once.
    let (status, body) = server.get("/v1/models/bank").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["model_version_status"][0]["state"], "AVAILABLE",
        "{body}"
    );
    let numeric = ["age", "balance", "duration", "campaign"];
    let cats = ["job", "marital", "education"];
    let (labels, proba) =
        served(&server, "bank", &env.data.join("bank.csv"), &numeric, &cats).await;
    assert_same_as_job(&result, &labels, &proba);
    assert_like_scikit_learn(&result, &exp["bank"], &labels, &proba);

    // V2 answers the same for the first rows.
    let (header, rows) = read_csv(&env.data.join("bank.csv"));
    let rows = &rows[..5];
    let inputs: Vec<Value> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.as_str() != "y")
        .map(|(j, h)| {
            if numeric.contains(&h.as_str()) {
                json!({"name": h, "datatype": "FP32", "shape": [5, 1],
                       "data": rows.iter().map(|r| r[j].parse::<f64>().unwrap()).collect::<Vec<_>>()})
            } else {
                json!({"name": h, "datatype": "BYTES", "shape": [5, 1],
                       "data": rows.iter().map(|r| r[j].clone()).collect::<Vec<_>>()})
            }
        })
        .collect();
    let (status, body) = server
        .post_json("/v2/models/bank/infer", &json!({ "inputs": inputs }))
        .await;
    assert_eq!(status, 200, "{body}");
    let outputs = body["outputs"].as_array().unwrap();
    let label = outputs.iter().find(|o| o["name"] == "label").unwrap();
    let p = outputs
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    for i in 0..5 {
        assert_eq!(label["data"][i], labels[i], "{body}");
        assert!((p["data"][2 * i + 1].as_f64().unwrap() - proba[i][1]).abs() < 1e-6);
    }

    // The simple API with named features.
    let features: serde_json::Map<String, Value> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.as_str() != "y")
        .map(|(j, h)| {
            let v = if numeric.contains(&h.as_str()) {
                json!(rows[0][j].parse::<f64>().unwrap())
            } else {
                json!(rows[0][j])
            };
            (h.clone(), v)
        })
        .collect();
    let (status, got) = server
        .post_json(
            "/predict",
            &json!({"model_id": "bank", "features": features}),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["prediction"], labels[0], "{got}");

    // Training again makes version 2.
    let again = succeeded(
        &server,
        bank_spec(
            json!({"path": "bank.csv"}),
            json!({"name": "logistic_regression", "grid": {"C": [1.0]}}),
            json!({"holdout": 0.2, "seed": 3}),
        ),
    )
    .await;
    assert_eq!(again["version"], 2);
    let holdout = &again["holdout"];
    assert_eq!(holdout["rows"], 240, "{again}");
    assert!(holdout["accuracy"].as_f64().unwrap() > 0.6, "{holdout}");
    let confusion: u64 = holdout["confusion_matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(confusion, 240);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multinomial_training_matches_scikit_learn() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let exp = expected();
    let result = succeeded(&server, three_spec()).await;
    assert_eq!(result["classes"], json!(["a", "b", "c"]));
    assert_eq!(result["scoring"], "neg_log_loss");
    let (labels, proba) = served(
        &server,
        "three",
        &env.data.join("three.csv"),
        &["x1", "x2", "x3"],
        &["region"],
    )
    .await;
    assert_eq!(proba[0].len(), 3);
    assert_same_as_job(&result, &labels, &proba);
    assert_like_scikit_learn(&result, &exp["three"], &labels, &proba);

    // A forest with three classes serves what it predicted too.
    let mut spec = three_spec();
    spec["spec"]["algorithm"] = json!({"name": "random_forest",
        "grid": {"max_depth": [4], "n_estimators": [5]}});
    spec["spec"]["cv"] = json!({"folds": 3});
    let forest = succeeded(&server, spec.clone()).await;
    assert_eq!(forest["version"], 2);
    let (labels, proba) = served(
        &server,
        "three",
        &env.data.join("three.csv"),
        &["x1", "x2", "x3"],
        &["region"],
    )
    .await;
    assert_same_as_job(&forest, &labels, &proba);

    // A training job for a stopped model saves the version, leaves the model
    // stopped, and says so.
    let (code, body) = server.post_json("/stop_deployment/three", &json!({})).await;
    assert_eq!(code, 200, "{body}");
    let id = submit(&server, spec).await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["version"], 3, "{job}");
    let saved = job["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .find(|m| m.starts_with("saved three version 3"))
        .unwrap_or_else(|| panic!("no saved message: {job}"));
    assert!(
        saved.ends_with("; the model is stopped: reload, load or deploy it to serve this version"),
        "{saved}"
    );
    assert!(env.repo.join("three/3").is_dir());
    let (code, body) = server
        .post_json(
            "/v1/models/three:predict",
            &json!({"instances": [{"x1": 0.1, "x2": 0.2, "x3": 0.3, "region": "east"}]}),
        )
        .await;
    assert_eq!(code, 404, "the stopped model answered: {body}");
    server.stop().await;
}

/// Writes the bank CSV into a SQLite table `bank` in the data directory.
async fn bank_table(env: &Env) -> String {
    let path = env.data.join("bank.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "create table bank (age integer, job text, marital text, education text, \
         balance real, duration real, campaign integer, y text)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (_, rows) = read_csv(&env.data.join("bank.csv"));
    let mut tx = pool.begin().await.unwrap();
    for r in &rows {
        sqlx::query("insert into bank values (?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(r[0].parse::<i64>().unwrap())
            .bind(&r[1])
            .bind(&r[2])
            .bind(&r[3])
            .bind(r[4].parse::<f64>().unwrap())
            .bind(r[5].parse::<f64>().unwrap())
            .bind(r[6].parse::<i64>().unwrap())
            .bind(&r[7])
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    pool.close().await;
    "sqlite://bank.db".to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_source_and_a_random_forest_train_and_serve() {
    let env = env();
    let url = bank_table(&env).await;
    let server = TestServer::start_with(settings(&env)).await;
    let numeric = ["age", "balance", "duration", "campaign"];
    let cats = ["job", "marital", "education"];

    // Logistic regression from a query gives what it gives from the CSV.
    let result = succeeded(
        &server,
        bank_spec(
            json!({"url": url, "query": "select * from bank"}),
            json!({"name": "logistic_regression", "grid": {"C": [0.1]}}),
            json!({"scoring": "accuracy"}),
        ),
    )
    .await;
    assert_eq!(result["rows"], 1200);
    let (labels, proba) =
        served(&server, "bank", &env.data.join("bank.csv"), &numeric, &cats).await;
    assert_same_as_job(&result, &labels, &proba);

    // A random forest: a second family behind the same trait, served the same way.
    let forest = succeeded(
        &server,
        bank_spec(
            json!({"url": url, "query": "select * from bank"}),
            json!({"name": "random_forest", "seed": 7,
                   "grid": {"max_depth": [3, 5], "n_estimators": [8]}}),
            json!({"folds": 3}),
        ),
    )
    .await;
    assert_eq!(forest["version"], 2);
    assert_eq!(forest["cv_results"].as_array().unwrap().len(), 2);
    let (labels, proba) =
        served(&server, "bank", &env.data.join("bank.csv"), &numeric, &cats).await;
    assert_same_as_job(&forest, &labels, &proba);
    let accuracy = forest["best_score"].as_f64().unwrap();
    assert!(accuracy > 0.6, "{forest}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_fails_the_job_with_a_clear_message() {
    let env = env();
    let server = TestServer::start_with(Settings {
        train_max_rows: 1000,
        max_categories: 5,
        ..settings(&env)
    })
    .await;
    let lr = json!({"name": "logistic_regression"});
    let spec = |path: &str, label: Value, features: Value, cats: Value| {
        json!({"kind": "train", "spec": {
            "model": "m", "source": {"path": path},
            "schema": {"label": label, "features": features, "categorical": cats},
            "algorithm": lr,
        }})
    };
    let write = |name: &str, text: &str| std::fs::write(env.data.join(name), text).unwrap();

    write("unmapped.csv", "x,y\n1,yes\n2,no\n3,maybe\n4,yes\n");
    let e = failed(
        &server,
        spec(
            "unmapped.csv",
            json!({"key": "y", "values": {"yes": 1, "no": 0}}),
            json!([{"key": "x"}]),
            json!([]),
        ),
    )
    .await;
    assert!(
        e.contains("\"maybe\"") && e.contains("schema.label.values"),
        "{e}"
    );

    write("text.csv", "x,y\n1,a\n2,b\nabc,a\n");
    let e = failed(
        &server,
        spec(
            "text.csv",
            json!({"key": "y"}),
            json!([{"key": "x"}]),
            json!([]),
        ),
    )
    .await;
    assert!(
        e.contains("\"x\"") && e.contains("row 3") && e.contains("not a number"),
        "{e}"
    );

    write("empty.csv", "x,y\n");
    let e = failed(
        &server,
        spec(
            "empty.csv",
            json!({"key": "y"}),
            json!([{"key": "x"}]),
            json!([]),
        ),
    )
    .await;
    assert!(e.contains("no rows"), "{e}");

    write("single.csv", "x,y\n1,a\n2,a\n3,a\n");
    let e = failed(
        &server,
        spec(
            "single.csv",
            json!({"key": "y"}),
            json!([{"key": "x"}]),
            json!([]),
        ),
    )
    .await;
    assert!(e.contains("single class"), "{e}");

    write("missing.csv", "x,y\n1,a\n,b\n3,a\n");
    let e = failed(
        &server,
        spec(
            "missing.csv",
            json!({"key": "y"}),
            json!([{"key": "x"}]),
            json!([]),
        ),
    )
    .await;
    assert!(e.contains("row 2") && e.contains("missing"), "{e}");

    // Values no float input holds: the job once succeeded and saved a model that
    // answered NaN for every row.
    write("huge.csv", "x,y\n1e308,a\n-1e308,b\n1,a\n2,b\n");
    let e = failed(
        &server,
        spec(
            "huge.csv",
            json!({"key": "y"}),
            json!([{"key": "x"}]),
            json!([]),
        ),
    )
    .await;
    assert!(
        e.contains("row 1") && e.contains("not a finite 32-bit float"),
        "{e}"
    );

    // A category column with no value at all: once ONNX Runtime's refusal of the
    // saved model ("num_categories_ > 0").
    write("no_categories.csv", "x,y\n,a\n,b\n,a\n,b\n");
    let e = failed(
        &server,
        spec(
            "no_categories.csv",
            json!({"key": "y"}),
            json!([{"key": "x", "missing": "most_frequent"}]),
            json!(["x"]),
        ),
    )
    .await;
    assert!(e.contains("no values to learn its categories"), "{e}");

    // The bank's job column has 6 values; the limit here is 5.
    let e = failed(
        &server,
        bank_spec(json!({"path": "bank.csv"}), lr.clone(), Value::Null),
    )
    .await;
    assert!(
        e.contains("more than 1000 rows") && e.contains("--train-max-rows"),
        "{e}"
    );
    let (_, rows) = read_csv(&env.data.join("bank.csv"));
    let mut small = String::from("age,job,marital,education,balance,duration,campaign,y\n");
    for r in rows.iter().take(500) {
        small.push_str(&r.join(","));
        small.push('\n');
    }
    write("small.csv", &small);
    let e = failed(
        &server,
        bank_spec(json!({"path": "small.csv"}), lr.clone(), Value::Null),
    )
    .await;
    assert!(
        e.contains("\"job\"") && e.contains("more than 5") && e.contains("--max-categories"),
        "{e}"
    );
    // A values map of more categories than --max-categories: its categories are
    // the design matrix's columns as learned ones are (before, unbounded). Refused
    // at submission.
    let values: serde_json::Map<String, Value> =
        (0..6).map(|i| (format!("k{i}"), json!(i))).collect();
    let (status, answer) = server
        .post_json(
            "/v1/jobs",
            &spec(
                "unmapped.csv",
                json!({"key": "y"}),
                json!([{"key": "x", "values": values}]),
                json!([]),
            ),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"],
        "spec.schema.features[0].values: feature \"x\" has 6 categories, more than 5, the \
         most a training job encodes (--max-categories)",
        "{answer}"
    );
    // Nothing was saved by any of them.
    assert!(std::fs::read_dir(&env.repo).unwrap().next().is_none());
    server.stop().await;
}

/// Training into a model no training job made would replace what its clients
/// call with a model of other inputs: 409 at submission. A model trained before
/// trains again. Before, the job saved its version over the served model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_never_replaces_a_model_it_did_not_make() {
    let env = env();
    common::install_model(
        &env.repo,
        "iris",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start_with(settings(&env)).await;
    std::fs::write(
        env.data.join("xy.csv"),
        "x,y\n1,a\n2,b\n3,a\n4,b\n5,a\n6,b\n",
    )
    .unwrap();
    let spec = |model: &str| {
        json!({"kind": "train", "spec": {
            "model": model, "source": {"path": "xy.csv"},
            "schema": {"label": {"key": "y"}, "features": [{"key": "x"}]},
            "algorithm": {"name": "logistic_regression"},
            "cv": {"folds": 2},
        }})
    };
    let (status, answer) = server.post_json("/v1/jobs", &spec("iris")).await;
    assert_eq!(status, 409, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("training.json") && error.contains("\"iris\""),
        "{error}"
    );
    assert!(!env.repo.join("iris/2").exists());
    let (status, body) = server
        .post_json(
            "/v1/models/iris:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A model of its own, trained twice.
    for version in [1, 2] {
        let result = succeeded(&server, spec("xy")).await;
        assert_eq!(result["version"], version, "{result}");
    }
    // A version uploaded while the job trains is not replaced either: the job
    // looks again when it stores its own, under the model's lock.
    let rows: String = (0..20_000)
        .map(|i| format!("{},{}\n", i % 97, if i % 3 == 0 { "a" } else { "b" }))
        .collect();
    std::fs::write(env.data.join("long.csv"), format!("x,y\n{rows}")).unwrap();
    let mut long = spec("late");
    long["spec"]["source"]["path"] = json!("long.csv");
    long["spec"]["algorithm"]["grid"] = json!({"C": [0.01, 0.1, 1, 10]});
    long["spec"]["cv"] = json!({"folds": 5});
    let id = submit(&server, long).await;
    let (status, body) = server
        .upload(
            &[("model_id", "late")],
            "model.onnx",
            std::fs::read(root_path("examples/models/iris_lr/1/model.onnx")).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("training.json"), "{error}");
    assert!(!env.repo.join("late/2").exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused_at_submission_naming_the_field() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let refused = |body: Value| {
        let server = &server;
        async move {
            let (status, answer) = server.post_json("/v1/jobs", &body).await;
            assert_eq!(status, 400, "{answer}");
            answer["error"].as_str().unwrap_or_default().to_string()
        }
    };
    let cv = json!({"folds": 5});
    let e = refused(bank_spec(
        json!({"path": "bank.csv"}),
        json!({"name": "logistic_regression", "grid": {"C": [-1]}}),
        cv.clone(),
    ))
    .await;
    assert!(e.contains("spec.algorithm.grid.C[0]"), "{e}");
    let e = refused(bank_spec(
        json!({"path": "bank.csv"}),
        json!({"name": "logistic_regression", "grid": {"C": "x"}}),
        cv.clone(),
    ))
    .await;
    assert!(e.contains("spec.algorithm.grid.C"), "{e}");
    let e = refused(bank_spec(
        json!({"path": "bank.csv"}),
        json!({"name": "random_forest", "grid": {"max_depth": [0]}}),
        cv.clone(),
    ))
    .await;
    assert!(e.contains("spec.algorithm.grid.max_depth[0]"), "{e}");
    let e = refused(bank_spec(
        json!({"path": "bank.csv"}),
        json!({"name": "svm"}),
        cv.clone(),
    ))
    .await;
    assert!(
        e.contains("spec.algorithm.name") && e.contains("svm"),
        "{e}"
    );
    let e = refused(bank_spec(
        json!({"path": "bank.csv"}),
        json!({"name": "logistic_regression"}),
        json!({"scoring": "f1"}),
    ))
    .await;
    assert!(e.contains("spec.cv.scoring"), "{e}");
    // A column the CSV's header lacks.
    let mut body = bank_spec(
        json!({"path": "bank.csv"}),
        json!({"name": "logistic_regression"}),
        cv.clone(),
    );
    body["spec"]["schema"]["features"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "salary"}));
    let e = refused(body).await;
    assert!(e.contains("spec.schema") && e.contains("\"salary\""), "{e}");
    let mut body = bank_spec(
        json!({"path": "bank.csv"}),
        json!({"name": "logistic_regression"}),
        cv,
    );
    body["spec"]["schema"]["features"][0]["missing"] = json!("sometimes");
    let e = refused(body).await;
    assert!(e.contains("spec.schema.features[0].missing"), "{e}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_training_leaves_no_version() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let id = submit(
        &server,
        bank_spec(
            json!({"path": "bank.csv"}),
            json!({"name": "random_forest",
                   "grid": {"max_depth": [32], "n_estimators": [1000]}}),
            json!({"folds": 5}),
        ),
    )
    .await;
    wait_for(&server, &id, Duration::from_secs(60), |j| {
        j["progress"]["stage"] == "cross-validating"
    })
    .await;
    let asked = Instant::now();
    let (status, answer) = server
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    wait_for(&server, &id, Duration::from_secs(10), |j| {
        j["state"] == "cancelled"
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
    // No version, no staging.
    let left: Vec<String> = std::fs::read_dir(&env.repo)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_values_are_imputed_and_unknown_categories_encode_as_zeros() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let mut text = String::from("x,z,colour,y\n");
    for i in 0..60 {
        let x = if i % 10 == 3 {
            String::new()
        } else {
            (i % 7).to_string()
        };
        let colour = if i % 10 == 5 {
            ""
        } else {
            ["red", "green", "blue"][i % 3]
        };
        let y = if i % 7 > 2 { "b" } else { "a" };
        text.push_str(&format!("{x},{},{colour},{y}\n", i % 5));
    }
    std::fs::write(env.data.join("gaps.csv"), text).unwrap();
    let result = succeeded(
        &server,
        json!({"kind": "train", "spec": {
            "model": "gaps", "source": {"path": "gaps.csv"},
            "schema": {"label": {"key": "y"},
                       "features": [{"key": "x", "missing": "mean"}, {"key": "z"},
                                    {"key": "colour", "missing": "most_frequent"}],
                       "categorical": ["colour"]},
            "algorithm": {"name": "logistic_regression"},
            "cv": {"folds": 3}}}),
    )
    .await;
    assert_eq!(result["classes"], json!(["a", "b"]));
    let training: Value =
        serde_json::from_slice(&std::fs::read(env.repo.join("gaps/1/training.json")).unwrap())
            .unwrap();
    let encodings = training["encodings"].as_array().unwrap();
    assert!(encodings[0]["impute"].as_f64().is_some(), "{training}");
    assert!(encodings[1]["impute"].is_null(), "{training}");
    assert_eq!(encodings[2]["categories"], json!(["blue", "green", "red"]));
    let (mean, most_frequent) = (
        encodings[0]["impute"].as_f64().unwrap(),
        encodings[2]["impute"].as_str().unwrap(),
    );

    // The served model fills missing values as training did: a score job over the
    // training rows (empty cells included) answers the job's own predictions. The
    // graph left a missing colour all zeros, and an empty x failed the job.
    let scored = finished(
        &server,
        &submit(
            &server,
            json!({"kind": "score", "spec": {"model": "gaps", "source": {"path": "gaps.csv"},
                   "sink": {"path": "gaps_scored.csv"}}}),
        )
        .await,
    )
    .await;
    assert_eq!(scored["state"], "succeeded", "{scored}");
    let (header, rows) = read_csv(&env.data.join("gaps_scored.csv"));
    let label = header.iter().position(|h| h == "label").unwrap();
    let labels: Vec<Value> = rows.iter().map(|r| json!(r[label])).collect();
    let proba: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            header
                .iter()
                .zip(r)
                .filter(|(h, _)| h.starts_with("probabilities_"))
                .map(|(_, v)| v.parse().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(proba[0].len(), 2, "{header:?}");
    assert_same_as_job(&result, &labels, &proba);
    // /predict: null (and an empty string) is the imputed value, for a number and a
    // category alike; a feature the model does not impute still refuses null.
    let answer = |features: Value| {
        let server = &server;
        async move {
            let (status, got) = server
                .post_json(
                    "/predict",
                    &json!({"model_id": "gaps", "features": features}),
                )
                .await;
            (status, got)
        }
    };
    let (status, filled) = answer(json!({"x": mean, "z": 1, "colour": most_frequent})).await;
    assert_eq!(status, 200, "{filled}");
    for missing in [
        json!({"x": null, "z": 1, "colour": null}),
        json!({"x": "", "z": 1, "colour": ""}),
        json!({"x": " ", "z": 1, "colour": "  "}),
    ] {
        let (status, got) = answer(missing.clone()).await;
        assert_eq!(status, 200, "{missing}: {got}");
        assert_eq!(got["probabilities"], filled["probabilities"], "{missing}");
    }
    let (status, got) = answer(json!({"x": 1.0, "z": null, "colour": "red"})).await;
    assert_eq!(status, 400, "{got}");
    assert!(got["error"].as_str().unwrap().contains("\"z\""), "{got}");
    // Over TF Serving REST a missing category is "": the graph itself fills it.
    let (status, tfs) = server
        .post_json(
            "/v1/models/gaps:predict",
            &json!({"inputs": {"x": [[mean]], "z": [[1.0]], "colour": [[""]]}}),
        )
        .await;
    assert_eq!(status, 200, "{tfs}");
    let (a, b) = (
        tfs["outputs"]["probabilities"][0][1].as_f64().unwrap(),
        filled["probabilities"][1].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-6, "{tfs} {filled}");

    // A colour never seen: all zeros, still an answer.
    let (status, got) = server
        .post_json(
            "/predict",
            &json!({"model_id": "gaps", "features": {"x": 2.0, "z": 1, "colour": "purple"}}),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    let p: f64 = got["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 1e-5, "{got}");
    server.stop().await;
}

/// A feature whose `missing` policy is `error` (the default) refuses in scoring what
/// training refused: the text NaN for a number, an empty cell for a category (not
/// an unseen category). The failed job names the row and its file's line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_that_refuses_missing_values_refuses_them_in_scoring_too() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let mut text = String::from("x,cat,y\n");
    for i in 0..40 {
        let y = if i % 4 > 1 { "pos" } else { "neg" };
        text.push_str(&format!("{},{},{y}\n", i % 7, ["g", "h"][i % 2]));
    }
    std::fs::write(env.data.join("strict.csv"), text).unwrap();
    succeeded(
        &server,
        json!({"kind": "train", "spec": {
            "model": "strict", "source": {"path": "strict.csv"},
            "schema": {"label": {"key": "y"}, "features": [{"key": "x"}, {"key": "cat"}],
                       "categorical": ["cat"]},
            "algorithm": {"name": "logistic_regression"}, "cv": {"folds": 2}}}),
    )
    .await;
    let score = |file: &str| {
        json!({"kind": "score", "spec": {"model": "strict", "source": {"path": file},
               "sink": {"path": format!("{file}.out.csv")}}})
    };
    std::fs::write(env.data.join("nan.csv"), "x,cat\n1,g\nNaN,g\n").unwrap();
    let error = failed(&server, score("nan.csv")).await;
    assert!(
        error.starts_with(
            "row 2 (\"nan.csv\" line 3): column \"x\": feature value \"NaN\" is a missing value"
        ),
        "{error}"
    );
    std::fs::write(env.data.join("blank.csv"), "x,cat\n1,g\n2,\n").unwrap();
    let error = failed(&server, score("blank.csv")).await;
    assert!(
        error.starts_with("row 2 (\"blank.csv\" line 3): column \"cat\": the value is missing"),
        "{error}"
    );
    // A JSON-lines source names the line too.
    std::fs::write(
        env.data.join("nan.jsonl"),
        "{\"x\": 1, \"cat\": \"g\"}\n{\"x\": \"nan\", \"cat\": \"g\"}\n",
    )
    .unwrap();
    let error = failed(&server, score("nan.jsonl")).await;
    assert!(
        error.starts_with("row 2 (\"nan.jsonl\" line 2): "),
        "{error}"
    );
    assert!(!env.data.join("nan.csv.out.csv").exists());
    // The simple API refuses NaN as it refuses null.
    let (status, got) = server
        .post_json(
            "/predict",
            &json!({"model_id": "strict", "features": {"x": "NaN", "cat": "g"}}),
        )
        .await;
    assert_eq!(status, 400, "{got}");
    assert!(
        got["error"].as_str().unwrap().contains("missing value"),
        "{got}"
    );
    // Values that are there still score.
    std::fs::write(env.data.join("fine.csv"), "x,cat\n1,g\n2,h\n").unwrap();
    assert_eq!(succeeded(&server, score("fine.csv")).await["rows"], 2);
    server.stop().await;
}

/// A model trained on one feature takes it by name, as one of several features is
/// (its one input is `[N, 1]` named after the feature; it knew no feature names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_of_one_feature_serves_by_its_name() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    for (model, key, categorical, value) in [
        ("one_number", "x1", false, json!(0.25)),
        ("one_category", "region", true, json!("north")),
    ] {
        let categorical: Vec<&str> = if categorical { vec![key] } else { vec![] };
        succeeded(
            &server,
            json!({"kind": "train", "spec": {
                "model": model, "source": {"path": "three.csv"},
                "schema": {"label": {"key": "kind"}, "features": [{"key": key}],
                           "categorical": categorical},
                "algorithm": {"name": "logistic_regression"}, "cv": {"folds": 2}}}),
        )
        .await;
        let (status, named) = server
            .post_json(
                "/predict",
                &json!({"model_id": model, "features": {key: value.clone()}}),
            )
            .await;
        assert_eq!(status, 200, "{model}: {named}");
        let (status, positional) = server
            .post_json("/predict", &json!({"model_id": model, "features": [value]}))
            .await;
        assert_eq!(status, 200, "{model}: {positional}");
        assert_eq!(
            named["probabilities"], positional["probabilities"],
            "{model}"
        );
        let scored = finished(
            &server,
            &submit(
                &server,
                json!({"kind": "score", "spec": {"model": model, "source": {"path": "three.csv"},
                       "sink": {"path": format!("{model}.csv")}}}),
            )
            .await,
        )
        .await;
        assert_eq!(scored["state"], "succeeded", "{model}: {scored}");
    }
    server.stop().await;
}

/// A model trained on text labels scores into columns named by class
/// (`probabilities_a`), as a pickle's are (`predict_proba_setosa`): the classes
/// are its `training.json`'s (before, `probabilities_0`). A ground-truth `label`
/// column carried beside the model's own `label` output is refused at submission,
/// naming spec.carry (before, a JSON line kept one of the two values).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_model_scores_into_columns_named_by_class() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let mut spec = three_spec();
    spec["spec"]["algorithm"]["grid"] = json!({"C": [1.0]});
    spec["spec"]["cv"] = json!({"folds": 2});
    let result = succeeded(&server, spec).await;
    assert_eq!(result["classes"], json!(["a", "b", "c"]));
    let score = |carry: Value, source: &str, sink: &str| {
        json!({"kind": "score", "spec": {"model": "three", "source": {"path": source},
               "sink": {"path": sink}, "carry": carry}})
    };
    let id = submit(&server, score(json!(["kind"]), "three.csv", "scores.csv")).await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let columns = json!([
        "kind",
        "label",
        "probabilities_a",
        "probabilities_b",
        "probabilities_c"
    ]);
    assert_eq!(job["result"]["columns"], columns, "{job}");
    let (header, rows) = read_csv(&env.data.join("scores.csv"));
    assert_eq!(json!(header), columns);
    assert_eq!(rows.len(), 900);
    // The saved graph names its classes (ONNX metadata): the simple API's answer
    // says which probability is which, as for a scikit-learn classifier.
    let (status, answer) = server
        .post_json(
            "/predict",
            &json!({"model_id": "three",
                    "features": {"x1": -0.4148, "x2": 4.5297, "x3": 8.2517, "region": "east"}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["classes"], json!(["a", "b", "c"]), "{answer}");

    let three = std::fs::read_to_string(env.data.join("three.csv")).unwrap();
    std::fs::write(
        env.data.join("truth.csv"),
        three.replacen(",kind\n", ",label\n", 1),
    )
    .unwrap();
    for carry in [json!(["label"]), json!(["probabilities_b"])] {
        let (status, answer) = server
            .post_json(
                "/v1/jobs",
                &score(carry.clone(), "truth.csv", "truth.jsonl"),
            )
            .await;
        assert_eq!(status, 400, "{carry}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("spec.carry: carry column {}", carry[0])),
            "{error}"
        );
    }
    assert!(!env.data.join("truth.jsonl").exists());
    server.stop().await;
}

/// The saved graph names its own values (the numeric block, each one-hot block,
/// the design matrix) apart from every feature: features called `features`,
/// `numeric_imputed` or `job_onehot` train and serve (before, the job failed after
/// its whole cross-validation and refit with "Duplicate definition of name").
/// A feature named like one of the graph's outputs is refused at submission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_may_have_the_names_of_the_graphs_own_values() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let numeric = [
        "features",
        "numeric_columns",
        "numeric_imputed",
        "numeric_scaled",
        "job_encoded",
        "job_shape",
    ];
    let categorical = ["job", "job_onehot", "job_imputed"];
    let mut text = format!("{},{},y\n", numeric.join(","), categorical.join(","));
    for i in 0..60 {
        let x = |k: usize| ((i * (k + 3) + k) % 11) as f64 / 2.0;
        let numbers: Vec<String> = (0..numeric.len())
            // A few gaps, which the mean fills (an Imputer in the graph).
            .map(|k| match (i % 13 == 5, k) {
                (true, 0) => String::new(),
                _ => x(k).to_string(),
            })
            .collect();
        let job = ["admin", "blue", "tech"][i % 3];
        let job = if i % 17 == 4 { "" } else { job };
        let y = if x(0) + x(2) > 5.0 { "yes" } else { "no" };
        text.push_str(&format!(
            "{},{job},{},{},{y}\n",
            numbers.join(","),
            ["p", "q"][i % 2],
            ["r", "s", "t", "u"][i % 4],
        ));
    }
    std::fs::write(env.data.join("odd.csv"), &text).unwrap();
    let features: Vec<Value> = numeric
        .iter()
        .chain(&categorical)
        .map(|k| json!({"key": k, "missing": if *k == "features" { "mean" } else if *k == "job" { "most_frequent" } else { "error" }}))
        .collect();
    let spec = json!({"kind": "train", "spec": {
        "model": "odd", "source": {"path": "odd.csv"},
        "schema": {"label": {"key": "y"}, "features": features, "categorical": categorical},
        "algorithm": {"name": "logistic_regression"}, "cv": {"folds": 2}}});
    let result = succeeded(&server, spec.clone()).await;
    assert_eq!(result["classes"], json!(["no", "yes"]));
    // The served model answers the first row as the job's own model did.
    let (header, rows) = read_csv(&env.data.join("odd.csv"));
    let row: serde_json::Map<String, Value> = header
        .iter()
        .zip(&rows[0])
        .filter(|(h, _)| *h != "y")
        .map(|(h, v)| match numeric.contains(&h.as_str()) {
            true => (h.clone(), json!(v.parse::<f64>().unwrap())),
            false => (h.clone(), json!(v)),
        })
        .collect();
    let (status, got) = server
        .post_json("/predict", &json!({"model_id": "odd", "features": row}))
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["prediction"], result["sample_predictions"]["labels"][0]);
    for (c, p) in got["probabilities"].as_array().unwrap().iter().enumerate() {
        let own = result["sample_predictions"]["probabilities"][0][c]
            .as_f64()
            .unwrap();
        assert!((p.as_f64().unwrap() - own).abs() < 1e-5, "{got}");
    }

    // The graph's outputs keep their names: a feature may not have one.
    for output in ["label", "probabilities"] {
        let mut body = spec.clone();
        body["spec"]["schema"]["features"][2]["key"] = json!(output);
        let (status, answer) = server.post_json("/v1/jobs", &body).await;
        assert_eq!(status, 400, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!(
                "spec.schema.features[2].key: \"{output}\" is the name of one of the saved \
                 model's outputs"
            )),
            "{error}"
        );
    }
    server.stop().await;
}

/// A label column of numbers gives the same classes from every format, as pandas
/// reads them: the CSV text `1` and `1.0` and the JSON float 1.0 are the integer
/// class 1 (before, the CSV gave three classes, "0", "1" and "1.0").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_labels_give_the_same_classes_from_every_format() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let (mut csv, mut jsonl) = (String::from("x,y\n"), String::new());
    for i in 0..40 {
        let x = (i % 10) as f64;
        let y = ["0", "1", "1.0", "0.0"][i % 4];
        csv.push_str(&format!("{x},{y}\n"));
        jsonl.push_str(&format!(
            "{}\n",
            json!({"x": x, "y": y.parse::<f64>().unwrap()})
        ));
    }
    std::fs::write(env.data.join("numbers.csv"), csv).unwrap();
    std::fs::write(env.data.join("numbers.jsonl"), jsonl).unwrap();
    for (model, path) in [("from_csv", "numbers.csv"), ("from_jsonl", "numbers.jsonl")] {
        let result = succeeded(
            &server,
            json!({"kind": "train", "spec": {
                "model": model, "source": {"path": path},
                "schema": {"label": {"key": "y"}, "features": [{"key": "x"}]},
                "algorithm": {"name": "logistic_regression"}, "cv": {"folds": 2}}}),
        )
        .await;
        assert_eq!(result["classes"], json!([0, 1]), "{path}: {result}");
        let (status, got) = server
            .post_json(
                "/predict",
                &json!({"model_id": model, "features": {"x": 3}}),
            )
            .await;
        assert_eq!(status, 200, "{got}");
        assert!(got["prediction"].is_i64(), "{path}: {got}");
    }
    server.stop().await;
}

/// The committed example (examples/jobs/): its data script, its train and score
/// specs through `POST /v1/jobs`, and its old-service job.json through `/train/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_specs_train_and_score() {
    let env = env();
    let status = std::process::Command::new("python3")
        .arg(root_path("examples/jobs/make_bank.py"))
        .args(["--rows", "1500", "--new", "40", "--out"])
        .arg(&env.data)
        .status()
        .unwrap();
    assert!(status.success());
    let server = TestServer::start_with(settings(&env)).await;
    let spec = |name: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(root_path(&format!("examples/jobs/{name}"))).unwrap(),
        )
        .unwrap()
    };
    let result = succeeded(&server, spec("train.json")).await;
    assert_eq!(result["model"], "bank", "{result}");
    assert_eq!(result["rows"], 1500, "{result}");
    let scored = finished(&server, &submit(&server, spec("score.json")).await).await;
    assert_eq!(scored["state"], "succeeded", "{scored}");
    let (header, rows) = read_csv(&env.data.join("scores.csv"));
    assert_eq!(rows.len(), 40);
    assert_eq!(header[0], "id", "{header:?}");
    let (status, answer) = server.post_json("/train/", &spec("job.json")).await;
    assert_eq!(status, 200, "{answer}");
    let job = finished(&server, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    server.stop().await;
}
