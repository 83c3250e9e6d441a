//! Versions of a deployed model: an upload answered once its worker serves it, the
//! status of a stopped model, a label not served.

use super::*;

/// Uploads `file` as a new version of `model`; the answer.
async fn upload(server: &common::child::ChildServer, model: &str, file: &str) -> (u16, Value) {
    let bytes = std::fs::read(root_path(file)).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("model_id", model.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("model.onnx"),
        );
    send(
        reqwest::Client::new()
            .post(server.url("/upload_model"))
            .multipart(form),
    )
    .await
}

/// An upload to a deployed model answers as one to an in-process model does: once
/// the worker serves the new version ("uploaded and served", and a predict on it
/// works at once; it answered "the model's worker process loads it" and the
/// version was 404 for a second or more), and, for a version its policy does not
/// select, "its version policy does not serve it".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_a_deployed_model_answers_once_its_worker_serves_it() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(
        repo.path(),
        "pinned",
        "examples/models/iris_lr/1/model.onnx",
    );
    std::fs::write(
        repo.path().join("pinned/config.toml"),
        "version_policy = { specific = [1] }\n",
    )
    .unwrap();
    let server = start_server(repo.path(), port_range(20), &[]).await;
    for model in ["iris", "pinned"] {
        let (code, answer) = deploy(&server, json!({"model_id": model})).await;
        assert_eq!(code, 200, "{answer}");
    }

    let (code, body) = upload(&server, "iris", "examples/models/iris_dt/1/model.onnx").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["message"], "model iris version 2 uploaded and served",
        "{body}"
    );
    assert_eq!(body["model"]["served_versions"], json!([2]), "{body}");
    let (code, answer) = post(
        server.url("/v1/models/iris/versions/2:predict"),
        &json!({"instances": [ROW]}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");

    let (code, body) = upload(&server, "pinned", "examples/models/iris_dt/1/model.onnx").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["message"], "model pinned version 2 uploaded; its version policy does not serve it",
        "{body}"
    );
    assert_eq!(body["model"]["served_versions"], json!([1]), "{body}");
}

/// TF Serving's status calls name a stopped model as every other route does
/// ("is stopped: a reload ... or a deploy serves it again"), still 404 /
/// NOT_FOUND; they said "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_of_a_stopped_model_says_it_is_stopped() {
    use ferroserve_proto::tensorflow::serving::model_service_client::ModelServiceClient;
    use ferroserve_proto::tensorflow::serving::{self as tfs};

    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "dt", "examples/models/iris_dt/1/model.onnx");
    let (server, grpc_port) = start_server_with_grpc(repo.path(), port_range(20), &[]).await;
    wait_predicts(&server, "dt").await;
    let (code, body) = send(reqwest::Client::new().post(server.url("/stop_deployment/dt"))).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["stopped"], true, "{body}");
    let stopped = "model \"dt\" is stopped: a reload";
    for path in ["/v1/models/dt", "/v1/models/dt/versions/1"] {
        let (code, body) = get(server.url(path)).await;
        assert_eq!(code, 404, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(stopped),
            "{path}: {body}"
        );
    }
    let mut models = ModelServiceClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .unwrap();
    let status = models
        .get_model_status(tfs::GetModelStatusRequest {
            model_spec: Some(tfs::ModelSpec {
                name: "dt".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(status.message().contains(stopped), "{status:?}");
}

/// A label whose version the policy does not serve names the versions actually
/// served: a newer version that failed to load is not among them (it said "it
/// serves versions [3, 4]" with 4 in END, failed, and only 3 served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_not_served_names_only_the_versions_served() {
    let repo = tempfile::tempdir().unwrap();
    for v in [2, 3] {
        let dir = repo.path().join("lab").join(v.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            root_path("examples/models/iris_lr/1/model.onnx"),
            dir.join("model.onnx"),
        )
        .unwrap();
    }
    std::fs::write(
        repo.path().join("lab/config.toml"),
        "version_policy = { latest = 2 }\n\n[labels]\nstable = 2\n",
    )
    .unwrap();
    let server = start_server(repo.path(), port_range(20), &[]).await;
    wait_predicts(&server, "lab").await;
    std::fs::create_dir_all(repo.path().join("lab/4")).unwrap();
    std::fs::write(repo.path().join("lab/4/model.onnx"), b"not a model").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        let (code, body) = post(
            server.url("/v1/models/lab/labels/stable:predict"),
            &json!({"instances": [ROW]}),
        )
        .await;
        if code != 200 {
            break body["error"].as_str().unwrap_or_default().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "label stable still served\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status = model_status(&server, "lab").await;
    assert_eq!(status["served_versions"], json!([3]), "{status}");
    assert!(
        error.contains("(it serves versions [3]; version 4 failed to load)"),
        "{error}\n{status}"
    );
}
