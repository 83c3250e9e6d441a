//! Without the ONNX Runtime library, ONNX models go to ERROR with a clear message;
//! the server does not panic and keeps answering. (Its own test binary: the
//! runtime is loaded once per process.)

mod common;

use common::{install_model, root_path, test_settings, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_onnxruntime_is_a_model_error_not_a_crash() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris_lr",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let mut settings = test_settings(repo.path());
    settings.onnxruntime_path = Some(repo.path().join("no-such-libonnxruntime.so"));
    let server = TestServer::start_with(settings).await;
    let (status, body) = server.get("/v1/models/iris_lr").await;
    assert_eq!(status, 200);
    let v = &body["model_version_status"][0];
    assert_eq!(v["state"], "END");
    assert!(
        v["status"]["error_message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{v}"
    );
    let (status, body) = server
        .post_json(
            "/v1/models/iris_lr:predict",
            &json!({"instances": [[1, 2, 3, 4]]}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(server.get("/v2/health/live").await.0, 200);
    server.stop().await;
}
