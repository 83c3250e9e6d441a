//! Black-box tests of what the model config list and the repository watch decide
//! for models that leave: an in-process deployment (`--worker-ports off`) the list
//! leaves out ends, and a stopped model whose directory is gone loses its stop.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use ferroserve_proto::tensorflow::serving as tfs;
use ferroserve_proto::tensorflow::serving::model_service_client::ModelServiceClient;
use serde_json::{json, Value};

fn model_file() -> std::path::PathBuf {
    root_path("examples/models/iris_lr/1/model.onnx")
}

/// Deployments in this process, a quick repository poll.
fn settings(repo: &Path) -> Settings {
    Settings {
        worker_ports: None,
        file_system_poll_wait: Duration::from_millis(100),
        ..test_settings(repo)
    }
}

async fn status_of(server: &TestServer, model: &str) -> Option<Value> {
    let (code, body) = server.get("/models/status").await;
    assert_eq!(code, 200, "{body}");
    body["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == model)
        .cloned()
}

async fn predict(server: &TestServer, model: &str) -> u16 {
    let body = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]});
    server
        .post_json(&format!("/v1/models/{model}:predict"), &body)
        .await
        .0
}

/// Puts `names` (directories of `repo`) in force with gRPC `HandleReloadConfigRequest`.
async fn reload_config(server: &TestServer, repo: &Path, names: &[&str]) {
    let channel = server.grpc_channel().await;
    let config = names
        .iter()
        .map(|n| tfs::ModelConfig {
            name: n.to_string(),
            base_path: repo.join(n).display().to_string(),
            ..Default::default()
        })
        .collect();
    let request = tfs::ReloadConfigRequest {
        config: Some(tfs::ModelServerConfig {
            config: Some(tfs::model_server_config::Config::ModelConfigList(
                tfs::ModelConfigList { config },
            )),
        }),
    };
    ModelServiceClient::new(channel)
        .handle_reload_config_request(request)
        .await
        .unwrap();
}

/// Was: with `--worker-ports off`, a list that left a deployed model out kept its
/// deployment (its timeout came back with the list that named it again, and after
/// a restart), though README says the list ends it. Now it ends as a worker's does:
/// forgotten here and in the store, not stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_leaves_an_in_process_deployment_out_ends_it() {
    let repo = tempfile::tempdir().unwrap();
    for m in ["a", "m"] {
        install_model(repo.path(), m, 1, &model_file());
    }
    let server = TestServer::start_with(settings(repo.path())).await;
    let deploy = json!({"model_id": "m", "resources": {"timeout": 7}});
    let (code, body) = server.post_json("/deploy", &deploy).await;
    assert_eq!(code, 200, "{body}");
    let m = status_of(&server, "m").await.unwrap();
    assert!(!m["deployment"].is_null(), "{m}");

    reload_config(&server, repo.path(), &["a"]).await;
    assert_eq!(predict(&server, "m").await, 404);
    reload_config(&server, repo.path(), &["a", "m"]).await;
    assert_eq!(predict(&server, "m").await, 200, "not stopped");
    let m = status_of(&server, "m").await.unwrap();
    assert!(m["deployment"].is_null(), "the deployment ended: {m}");
    server.stop().await;

    let server = TestServer::start_with(settings(repo.path())).await;
    let m = status_of(&server, "m").await.unwrap();
    assert!(m["deployment"].is_null(), "nor after a restart: {m}");
    assert_eq!(predict(&server, "m").await, 200);
    server.stop().await;
}

/// Was: a stop outlived its model's directory: a new directory of the same name
/// was never served (status `stopped: true`, requests 404). Now the stop is
/// forgotten once the directory has been gone for a few seconds (two polls), as a
/// gone deployment ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_directory_of_a_stopped_model_that_went_is_served() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "w", 1, &model_file());
    let server = TestServer::start_with(settings(repo.path())).await;
    let stopped = server
        .client
        .post(server.url("/stop_deployment/w"))
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 200);
    assert_eq!(predict(&server, "w").await, 404);

    std::fs::remove_dir_all(repo.path().join("w")).unwrap();
    // The grace a directory must stay gone for (`DEPLOYMENT_GONE_GRACE`), and a poll.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    install_model(repo.path(), "w", 1, &model_file());
    let deadline = Instant::now() + Duration::from_secs(20);
    while predict(&server, "w").await != 200 {
        assert!(
            Instant::now() < deadline,
            "the new w is not served: {:?}",
            status_of(&server, "w").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let w = status_of(&server, "w").await.unwrap();
    assert_eq!(w["stopped"], false, "{w}");
    server.stop().await;
}
