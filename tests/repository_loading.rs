//! Start-up loading from the model repository: what is found, what fails, and
//! that a failure never stops other models from serving.

mod common;

use common::{install_model, root_path, TestServer};
use serde_json::json;

fn lr() -> std::path::PathBuf {
    root_path("examples/models/iris_lr/1/model.onnx")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_repository_is_ready_with_no_models() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start(repo.path()).await;
    assert_eq!(server.get("/v2/health/ready").await.0, 200);
    assert_eq!(server.get("/v1/models/anything").await.0, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_version_is_the_highest_integer() {
    let repo = tempfile::tempdir().unwrap();
    for v in [1, 2, 10] {
        install_model(repo.path(), "m", v, &lr());
    }
    // Ignored: not an integer, hidden, staging.
    for ignored in ["latest", ".hidden", ".tmp-upload", "0", "+11"] {
        let d = repo.path().join("m").join(ignored);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(lr(), d.join("model.onnx")).unwrap();
    }
    install_model(repo.path(), ".git", 1, &lr());
    let server = TestServer::start(repo.path()).await;
    let (_, body) = server.get("/v1/models/m").await;
    assert_eq!(
        body["model_version_status"],
        json!([{"version": "10", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}])
    );
    let (status, body) = server
        .post_json(
            "/v1/models/m:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, meta) = server.get("/v2/models/m").await;
    assert_eq!(meta["versions"], json!(["10"]));
    assert_eq!(server.get("/v1/models/.git").await.0, 404);
    server.stop().await;
}

/// TF Serving reads a version directory's name as an integer: its own test models
/// (and its Docker guide) live in `00000123/`, version 123. So does ferroserve; an
/// upload of a version a zero-padded directory holds is a conflict, and the next
/// version after it is 124.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_padded_version_directories_are_their_number() {
    let repo = tempfile::tempdir().unwrap();
    let padded = repo.path().join("m/00000123");
    std::fs::create_dir_all(&padded).unwrap();
    std::fs::copy(lr(), padded.join("model.onnx")).unwrap();
    let server = TestServer::start(repo.path()).await;
    let (_, body) = server.get("/v1/models/m").await;
    assert_eq!(body["model_version_status"][0]["version"], "123", "{body}");
    assert_eq!(
        body["model_version_status"][0]["state"], "AVAILABLE",
        "{body}"
    );
    let row = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]});
    for path in [
        "/v1/models/m/versions/123:predict",
        "/v1/models/m/versions/00000123:predict",
    ] {
        let (status, body) = server.post_json(path, &row).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let file = std::fs::read(lr()).unwrap();
    let (status, body) = server
        .upload(
            &[("model_id", "m"), ("version", "123")],
            "model.onnx",
            file.clone(),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(padded.join("model.onnx").exists());
    assert!(!repo.path().join("m/123").exists());
    let (status, body) = server
        .upload(&[("model_id", "m")], "model.onnx", file)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 124, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_policy_serves_every_version() {
    let repo = tempfile::tempdir().unwrap();
    for v in [1, 2, 10] {
        install_model(repo.path(), "m", v, &lr());
    }
    std::fs::write(
        repo.path().join("m/config.toml"),
        "version_policy = \"all\"\n[labels]\nstable = 2\n",
    )
    .unwrap();
    let server = TestServer::start(repo.path()).await;
    let (_, meta) = server.get("/v2/models/m").await;
    assert_eq!(meta["versions"], json!(["1", "2", "10"]));
    for path in [
        "/v1/models/m/versions/1:predict",
        "/v1/models/m/labels/stable:predict",
    ] {
        let (status, _) = server
            .post_json(path, &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}))
            .await;
        assert_eq!(status, 200, "{path}");
    }
    let (_, meta) = server.get("/v1/models/m/labels/stable/metadata").await;
    assert_eq!(meta["model_spec"]["version"], "2");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_missing_artifacts_go_to_error_while_others_serve() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "good", 1, &lr());
    // Corrupt artifact.
    let bad = repo.path().join("corrupt/1");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("model.onnx"), b"this is not a protobuf").unwrap();
    // Version directory without an artifact.
    std::fs::create_dir_all(repo.path().join("empty/3")).unwrap();
    std::fs::write(repo.path().join("empty/3/notes.txt"), b"nothing here").unwrap();
    // Broken config.toml.
    install_model(repo.path(), "badconfig", 1, &lr());
    std::fs::write(
        repo.path().join("badconfig/config.toml"),
        "version_policy = 7\n",
    )
    .unwrap();

    let server = TestServer::start(repo.path()).await;
    let (status, _) = server
        .post_json(
            "/v1/models/good:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, 200);

    let (status, body) = server.get("/v1/models/corrupt").await;
    assert_eq!(status, 200);
    let v = &body["model_version_status"][0];
    assert_eq!(v["state"], "END");
    assert_eq!(v["status"]["error_code"], "UNKNOWN");
    assert!(
        v["status"]["error_message"]
            .as_str()
            .unwrap()
            .contains("cannot load ONNX model"),
        "{v}"
    );
    let (status, body) = server
        .post_json(
            "/v1/models/corrupt:predict",
            &json!({"instances": [[1, 2, 3, 4]]}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("no available version"));

    let (_, body) = server.get("/v1/models/empty").await;
    let v = &body["model_version_status"][0];
    assert_eq!(v["state"], "END");
    assert!(v["status"]["error_message"]
        .as_str()
        .unwrap()
        .contains("no model artifact"));

    let (status, body) = server
        .post_json(
            "/v1/models/badconfig:predict",
            &json!({"instances": [[1, 2, 3, 4]]}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("config.toml"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_artifact_goes_to_error() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "good", 1, &lr());
    // A directory where the model file should be: present but not loadable.
    std::fs::create_dir_all(repo.path().join("weird/1/model.onnx/inner")).unwrap();
    install_model(repo.path(), "weird", 2, &lr());
    std::fs::write(repo.path().join("weird/2/model.onnx"), b"").unwrap();
    let server = TestServer::start(repo.path()).await;
    let (_, body) = server.get("/v1/models/weird").await;
    assert_eq!(body["model_version_status"][0]["version"], "2");
    assert_eq!(body["model_version_status"][0]["state"], "END");
    let (status, _) = server
        .post_json(
            "/v1/models/good:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// A version directory with several files that could each be the model, none with a
/// known name, loads none, and its error names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_unnamed_candidate_files_are_named_in_the_error() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path().join("two/2");
    std::fs::create_dir_all(&dir).unwrap();
    let onnx = std::fs::read(root_path("examples/models/iris_lr/1/model.onnx")).unwrap();
    std::fs::write(dir.join("a.bin"), &onnx).unwrap();
    std::fs::write(dir.join("b.bin"), &onnx).unwrap();
    let server = TestServer::start(repo.path()).await;
    let (_, body) = server.get("/v1/models/two").await;
    let error = body["model_version_status"][0]["status"]["error_message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("several candidate files (a.bin, b.bin)"),
        "{body}"
    );
    server.stop().await;
}
