//! TF Serving's REST predict, status and metadata, compared with scikit-learn's
//! answers; NaN and infinity; string labels and float64 regression.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_status_and_metadata() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let (status, body) = server.get("/v1/models/iris_lr").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    );
    let (status, body) = server.get("/v1/models/iris_lr/versions/1").await;
    assert_eq!(status, 200);
    assert_eq!(body["model_version_status"][0]["version"], "1");

    let (status, meta) = server.get("/v1/models/iris_lr/metadata").await;
    assert_eq!(status, 200);
    assert_eq!(meta["model_spec"]["name"], "iris_lr");
    assert_eq!(meta["model_spec"]["version"], "1");
    let sig = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["inputs"]["input"]["dtype"], "DT_FLOAT");
    assert_eq!(
        sig["inputs"]["input"]["tensor_shape"]["dim"][0]["size"],
        "-1"
    );
    assert_eq!(
        sig["inputs"]["input"]["tensor_shape"]["dim"][1]["size"],
        "4"
    );
    assert_eq!(sig["outputs"]["label"]["dtype"], "DT_INT64");
    assert_eq!(sig["outputs"]["probabilities"]["dtype"], "DT_FLOAT");
    let (_, meta) = server.get("/v1/models/iris_str/versions/1/metadata").await;
    let sig = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["outputs"]["label"]["dtype"], "DT_STRING");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_predict_matches_sklearn_in_both_formats() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    for model in ["iris_lr", "iris_dt"] {
        let exp = expected(&format!("examples/models/{model}/1/expected.json"));
        let rows = exp["rows"].clone();
        // Row format: one object per instance, as there are several outputs.
        let (status, body) = server
            .post_json(
                &format!("/v1/models/{model}:predict"),
                &json!({"instances": rows}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let preds = body["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), rows.as_array().unwrap().len());
        for (i, p) in preds.iter().enumerate() {
            assert_eq!(p["label"], exp["sklearn_predict"][i], "{model} row {i}");
            for (j, prob) in f64s(&p["probabilities"]).into_iter().enumerate() {
                let ort = exp["onnxruntime"]["probabilities"][i][j].as_f64().unwrap();
                assert_eq!(
                    prob as f32, ort as f32,
                    "{model} row {i} class {j} vs onnxruntime"
                );
                let skl = exp["sklearn_predict_proba"][i][j].as_f64().unwrap();
                assert!(
                    (prob - skl).abs() < 1e-5,
                    "{model} row {i} class {j} vs sklearn"
                );
            }
        }
        // Columnar format, with the signature named and a specific version.
        let (status, body) = server
            .post_json(
                &format!("/v1/models/{model}/versions/1:predict"),
                &json!({"signature_name": "serving_default", "inputs": {"input": rows}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"]["label"], exp["sklearn_predict"]);
        assert_eq!(
            body["outputs"]["probabilities"].as_array().unwrap().len(),
            preds.len()
        );
    }
    server.stop().await;
}

/// NaN and the infinities over TF Serving REST: bare, as Python's `json.dumps` and
/// TF Serving's parser write and read them, or as the strings the answers carry
/// (both were 400: malformed JSON, "expected a string, found a number").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_rest_takes_nan_and_infinity() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let path = "/v1/models/iris_lr:predict";
    let (status, bare) = server
        .post_raw(
            path,
            br#"{"instances": [[NaN, Infinity, 1.0, -Infinity]]}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{bare}");
    for body in [
        json!({"instances": [["NaN", "Infinity", 1.0, "-Infinity"]]}),
        json!({"instances": [[f64::NAN.to_string(), "Infinity", 1, "-Infinity"]]}),
    ] {
        let (status, answer) = server.post_json(path, &body).await;
        assert_eq!(status, 200, "{body}: {answer}");
        assert_eq!(answer, bare, "{body}");
    }
    // Nothing but names of floats: still floats for a float input.
    let (status, answer) = server
        .post_json(
            path,
            &json!({"inputs": [["NaN", "Infinity", "inf", "-Infinity"]]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // A bare word inside a string stays text; a body that is broken stays refused.
    let (status, answer) = server
        .post_raw(
            path,
            br#"{"signature_name": "NaN", "instances": [[NaN, 1, 2, 3]]}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("\"NaN\""),
        "{answer}"
    );
    let (status, answer) = server
        .post_raw(path, br#"{"instances": [[NaNa, 1, 2, 3]]}"#.to_vec())
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("malformed JSON"),
        "{answer}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_labels_and_float64_regression() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let exp = expected("tests/fixtures/onnx/iris_str/expected.json");
    let (status, body) = server
        .post_json(
            "/v1/models/iris_str:predict",
            &json!({"instances": exp["rows"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let labels: Vec<Value> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].clone())
        .collect();
    assert_eq!(Value::Array(labels), exp["sklearn_predict"]);

    let exp = expected("tests/fixtures/onnx/diabetes_f64/expected.json");
    let (status, body) = server
        .post_json(
            "/v1/models/diabetes_f64:predict",
            &json!({"inputs": exp["rows"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = f64s(&body["outputs"]);
    for (i, (g, e)) in got.iter().zip(f64s(&exp["sklearn_predict"])).enumerate() {
        assert_close(*g, e, 1e-12, &format!("diabetes row {i}"));
    }
    server.stop().await;
}
