//! Label `values` maps read as pandas reads the column, whatever the format; maps
//! that could not name a class are refused; and the words of a few failures (a
//! number too large, a model over `--max-upload-bytes`).

use super::*;

/// A train spec on `path` with label `y`, one numeric feature `x`, and the label
/// map `values`.
fn labelled(model: &str, path: &str, values: Value) -> Value {
    json!({"kind": "train", "spec": {
        "model": model, "source": {"path": path},
        "schema": {"label": {"key": "y", "values": values}, "features": [{"key": "x"}]},
        "algorithm": {"name": "logistic_regression"}, "cv": {"folds": 2}}})
}

/// A float label column (`1.0`, `0.0`, as pandas writes one) meets a map's keys
/// `"1"` and `"0"` from a CSV as from JSON lines; a CSV mixing `1` and `1.0` is one
/// class, so a map giving both fails the job instead of splitting the class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_map_meets_a_column_of_numbers_in_every_format() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let (mut csv, mut jsonl, mut mixed) =
        (String::from("x,y\n"), String::new(), String::from("x,y\n"));
    for i in 0..40 {
        let x = (i % 10) as f64;
        let y = if i % 10 < 5 { 0.0 } else { 1.0 };
        csv.push_str(&format!("{x},{y:?}\n"));
        jsonl.push_str(&format!("{}\n", json!({"x": x, "y": y})));
        mixed.push_str(&format!("{x},{}\n", ["1", "1.0", "2"][i % 3]));
    }
    std::fs::write(env.data.join("floats.csv"), csv).unwrap();
    std::fs::write(env.data.join("floats.jsonl"), jsonl).unwrap();
    std::fs::write(env.data.join("mixed.csv"), mixed).unwrap();
    for (model, path) in [("from_csv", "floats.csv"), ("from_jsonl", "floats.jsonl")] {
        let result = succeeded(
            &server,
            labelled(model, path, json!({"1": "yes", "0": "no"})),
        )
        .await;
        assert_eq!(result["classes"], json!(["no", "yes"]), "{path}: {result}");
    }
    let error = failed(
        &server,
        labelled("split", "mixed.csv", json!({"1": 1, "1.0": 0, "2": 2})),
    )
    .await;
    assert!(
        error.starts_with(
            "label column \"y\": its values map gives \"1\" and \"1.0\", which are the same number"
        ),
        "{error}"
    );
    server.stop().await;
}

/// A label map sending two values to one class is a 400 naming the field and the
/// values, on `POST /v1/jobs` and the old service's `POST /train/` alike, as a
/// feature's map with two categories on one index is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_map_of_two_values_to_one_class_is_refused() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let values = json!({"yes": 1, "no": 0, "maybe": 0});
    let want = "spec.schema.label.values: \"maybe\" and \"no\" both map to the class 0";
    let mut spec = labelled("m", "bank.csv", values.clone());
    spec["spec"]["schema"]["features"] = json!([{"key": "age"}]);
    let (status, answer) = server.post_json("/v1/jobs", &spec).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().starts_with(want),
        "{answer}"
    );
    let job_json = json!({
        "schema": {"label": {"key": "y", "values": values}, "features": [{"key": "age"}]},
        "inputCollection": "bank.csv", "model": "bank_old", "algorithm": "LogisticRegression",
    });
    let (status, answer) = server.post_json("/train/", &job_json).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains(want), "{answer}");
    let (_, jobs) = server.get("/v1/jobs").await;
    assert_eq!(jobs["jobs"], json!([]), "{jobs}");
    server.stop().await;
}

/// A number too large for the model's 32-bit floats is named as written, not in
/// its 309 digits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_too_large_is_named_as_written() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    std::fs::write(env.data.join("huge.csv"), "x,y\n1,0\n2,1\n1e308,0\n").unwrap();
    let error = failed(
        &server,
        json!({"kind": "train", "spec": {
            "model": "huge", "source": {"path": "huge.csv"},
            "schema": {"label": {"key": "y"}, "features": [{"key": "x"}]},
            "algorithm": {"name": "logistic_regression"}, "cv": {"folds": 2}}}),
    )
    .await;
    assert!(
        error.starts_with("column \"x\", row 3: 1e308 is not a finite 32-bit float"),
        "{error}"
    );
    server.stop().await;
}

/// A trained model is bounded by `--max-upload-bytes` as an uploaded one is, and
/// the failure says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_over_the_upload_limit_fails_naming_the_setting() {
    let env = env();
    let mut s = settings(&env);
    s.max_upload_bytes = 10_000;
    let server = TestServer::start_with(s).await;
    let error = failed(
        &server,
        bank_spec(
            json!({"path": "bank.csv"}),
            json!({"name": "random_forest", "seed": 7,
                   "grid": {"max_depth": [8], "n_estimators": [50]}}),
            json!({"folds": 2}),
        ),
    )
    .await;
    assert!(
        error.starts_with("cannot save the model: ")
            && error.contains("--max-upload-bytes (10000 bytes)"),
        "{error}"
    );
    server.stop().await;
}
