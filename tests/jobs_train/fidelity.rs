//! Training that matches scikit-learn's GridSearchCV on the same folds (binary,
//! multinomial), a random forest from a SQLite source, and the examples' specs
//! trained and scored.

use super::*;

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
