//! What training refuses or leaves undone: bad data, a model it did not make, bad
//! specs at submission, a cancel mid-training.

use super::*;

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
