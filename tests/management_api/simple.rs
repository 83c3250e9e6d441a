//! The simple `/predict` API and `/description`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_predict_by_position_and_by_name() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    std::fs::write(
        repo.path().join("iris/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n\
         [feature_defaults]\nsepal_width = 3.5\n",
    )
    .unwrap();
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    let (code, one) = server
        .post_json("/predict", &json!({"model_id": "iris", "features": ROW}))
        .await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["model_id"], "iris");
    assert_eq!(one["version"], 1);
    assert_eq!(one["prediction"], 0, "setosa: {one}");
    let probabilities = one["probabilities"].as_array().unwrap();
    assert_eq!(probabilities.len(), 3);
    let sum: f64 = probabilities.iter().map(|p| p.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-4, "{one}");
    assert!(one["latency"].as_f64().unwrap() >= 0.0);
    assert!(one["timestamp"].as_f64().unwrap() > 1.6e9, "{one}");
    assert!(one["time"].as_str().unwrap().ends_with('Z'));

    let (code, many) = server
        .post_json(
            "/predict",
            &json!({"model_id": "iris", "features": [ROW, [6.7, 3.0, 5.2, 2.3]], "version": 1}),
        )
        .await;
    assert_eq!(code, 200, "{many}");
    assert_eq!(many["prediction"], json!([0, 2]));
    for (a, b) in many["probabilities"][0]
        .as_array()
        .unwrap()
        .iter()
        .zip(probabilities)
    {
        common::assert_close(
            a.as_f64().unwrap(),
            b.as_f64().unwrap(),
            1e-5,
            "batched row 0",
        );
    }

    // By name, with a default for sepal_width, over POST and GET.
    let named = json!({"model_id": "iris", "features": {"sepal_length": 5.1, "petal_length": 1.4, "petal_width": 0.2}});
    let (code, by_name) = server.post_json("/predict", &named).await;
    assert_eq!(code, 200, "{by_name}");
    assert_eq!(by_name["probabilities"], one["probabilities"]);
    let (code, by_query) = server
        .get("/predict/iris?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2")
        .await;
    assert_eq!(code, 200, "{by_query}");
    assert_eq!(by_query["prediction"], 0);
    assert_eq!(by_query["probabilities"], one["probabilities"]);

    // Unknown and missing features are named.
    let (code, body) = server.get("/predict/iris?sepal_length=5.1&colour=3").await;
    assert_eq!(code, 400);
    let e = error_text(&body);
    assert!(
        e.contains("colour") && e.contains("petal_length") && e.contains("petal_width"),
        "{e}"
    );
    assert!(
        !e.contains("\"sepal_width\"]"),
        "sepal_width has a default: {e}"
    );
    for (bad, code) in [
        (json!({"model_id": "iris", "features": [1, 2, 3]}), 400),
        (json!({"model_id": "iris", "features": []}), 400),
        (
            json!({"model_id": "iris", "features": [[1, 2, 3, 4], [1, 2]]}),
            400,
        ),
        (
            json!({"model_id": "iris", "features": ["a", "b", "c", "d"]}),
            400,
        ),
        (json!({"model_id": "iris"}), 400),
        (json!({"features": ROW}), 400),
        (
            json!({"model_id": "iris", "features": ROW, "extra": 1}),
            400,
        ),
        (
            json!({"model_id": "iris", "features": ROW, "version": 9}),
            404,
        ),
        (json!({"model_id": "nope", "features": ROW}), 404),
    ] {
        let (got, body) = server.post_json("/predict", &bad).await;
        assert_eq!(got, code, "{bad}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(
        server.post_raw("/predict", b"{not json".to_vec()).await.0,
        400
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn description_lists_the_endpoints() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    let (code, body) = server.get("/description").await;
    assert_eq!(code, 200);
    assert_eq!(body["service"], "ferroserve");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let paths: Vec<&str> = body["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for p in [
        "/upload_model",
        "/models/status",
        "/predict",
        "/deploy",
        "/v2/repository/index",
    ] {
        assert!(
            paths.iter().any(|x| x.starts_with(p)),
            "{p} missing from {paths:?}"
        );
    }
    server.stop().await;
}
