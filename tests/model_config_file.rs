//! Black-box tests of `--model-config-file` re-read every poll: a file that holds no
//! list takes no action, an edit naming a base path that is not there yet applies
//! as at start, and the file wins over a gRPC `HandleReloadConfigRequest` at its
//! next read (TF Serving's `--model_config_file_poll_wait_seconds`).

mod common;

use common::eventually;
use std::time::{Duration, Instant};

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use ferroserve_proto::tensorflow::serving as tfs;
use ferroserve_proto::tensorflow::serving::model_service_client::ModelServiceClient;
use serde_json::json;

const POLL: Duration = Duration::from_millis(100);

fn model_file() -> std::path::PathBuf {
    root_path("examples/models/iris_lr/1/model.onnx")
}

/// A repository with models `a` and `b` (version 1 each) and a config file beside
/// them, re-read every [`POLL`].
fn setup(text: &str) -> (tempfile::TempDir, Settings) {
    let repo = tempfile::tempdir().unwrap();
    for m in ["a", "b"] {
        install_model(repo.path(), m, 1, &model_file());
    }
    let config = repo.path().join("models.config");
    std::fs::write(&config, text).unwrap();
    let settings = Settings {
        model_config_file: Some(config),
        model_config_file_poll_wait: POLL,
        file_system_poll_wait: POLL,
        ..test_settings(repo.path())
    };
    (repo, settings)
}

fn list(names: &[&str]) -> String {
    let configs: String = names
        .iter()
        .map(|n| format!("  config {{ name: \"{n}\" base_path: \"{n}\" }}\n"))
        .collect();
    format!("model_config_list {{\n{configs}}}\n")
}

async fn predict(server: &TestServer, model: &str) -> u16 {
    let body = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]});
    server
        .post_json(&format!("/v1/models/{model}:predict"), &body)
        .await
        .0
}

/// Checks for many polls of the file that `model` keeps answering 200.
async fn keeps_serving(server: &TestServer, model: &str, what: &str) {
    let until = Instant::now() + POLL * 8;
    while Instant::now() < until {
        assert_eq!(predict(server, model).await, 200, "{model}, {what}");
        tokio::time::sleep(POLL / 2).await;
    }
}

/// Was: an empty (or comment-only) file was applied as an empty list at its next
/// read and every model was unloaded (404). Now it takes no action, as TF Serving
/// takes none for an empty config; `model_config_list { }` still unloads all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_comment_only_config_file_keeps_the_models_served() {
    let (repo, settings) = setup(&list(&["a", "b"]));
    let config = settings.model_config_file.clone().unwrap();
    let server = TestServer::start_with(settings).await;
    assert_eq!(predict(&server, "a").await, 200);

    std::fs::write(&config, "").unwrap();
    keeps_serving(&server, "a", "the file emptied").await;
    std::fs::write(&config, "# models moved elsewhere\n\n").unwrap();
    keeps_serving(&server, "b", "only a comment").await;

    std::fs::write(&config, "# nothing served\nmodel_config_list { }\n").unwrap();
    eventually(
        "an explicit empty list unloads a",
        Duration::from_secs(20),
        || {
            let server = &server;
            async move { predict(server, "a").await == 404 }
        },
    )
    .await;
    assert_eq!(predict(&server, "b").await, 404);
    server.stop().await;
    drop(repo);
}

/// The same for the TOML form: an empty file takes no action, `models = []` is an
/// empty list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_toml_list_file_keeps_the_models_served() {
    let (repo, mut settings) = setup("");
    let config = repo.path().join("list.toml");
    std::fs::write(
        &config,
        "[[models]]\nname = \"a\"\nbase_path = \"a\"\n[[models]]\nname = \"b\"\nbase_path = \"b\"\n",
    )
    .unwrap();
    settings.model_config_file = Some(config.clone());
    let server = TestServer::start_with(settings).await;
    assert_eq!(predict(&server, "a").await, 200);

    std::fs::write(&config, "# later\n").unwrap();
    keeps_serving(&server, "a", "a comment-only TOML file").await;
    std::fs::write(&config, "models = []\n").unwrap();
    eventually("models = [] unloads a", Duration::from_secs(20), || {
        let server = &server;
        async move { predict(server, "a").await == 404 }
    })
    .await;
    server.stop().await;
}

/// Was: a base path that is not there was accepted at start, but every later edit
/// of the file was refused whole while it was still missing. Now an edit applies
/// (here a label on `a`), and the missing model serves once its directory appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_applies_while_a_listed_base_path_is_still_missing() {
    let (repo, settings) = setup(&list(&["a", "later"]));
    let config = settings.model_config_file.clone().unwrap();
    let server = TestServer::start_with(settings).await;
    assert_eq!(predict(&server, "a").await, 200);
    assert_eq!(predict(&server, "later").await, 404);

    let edited = list(&["a", "later"]).replace(
        "name: \"a\" base_path: \"a\"",
        "name: \"a\" base_path: \"a\" version_labels { key: \"stable\" value: 1 }",
    );
    std::fs::write(&config, edited).unwrap();
    eventually("the label of the edit", Duration::from_secs(20), || {
        let server = &server;
        async move { predict(server, "a/labels/stable").await == 200 }
    })
    .await;

    install_model(repo.path(), "later", 1, &model_file());
    eventually(
        "later, once its directory is there",
        Duration::from_secs(20),
        || {
            let server = &server;
            async move { predict(server, "later").await == 200 }
        },
    )
    .await;
    server.stop().await;
}

/// Was: after a gRPC `HandleReloadConfigRequest` dropped `b`, the file (still
/// listing it) was not applied again until its contents changed. Now the file's
/// list is compared with the list in force, whoever set it: it wins at its next
/// read, as TF Serving's poll does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_wins_over_a_grpc_reload_at_its_next_read() {
    let (repo, settings) = setup(&list(&["a", "b"]));
    let server = TestServer::start_with(settings).await;
    assert_eq!(predict(&server, "b").await, 200);

    let channel = server.grpc_channel().await;
    let only_a = tfs::ReloadConfigRequest {
        config: Some(tfs::ModelServerConfig {
            config: Some(tfs::model_server_config::Config::ModelConfigList(
                tfs::ModelConfigList {
                    config: vec![tfs::ModelConfig {
                        name: "a".into(),
                        base_path: repo.path().join("a").display().to_string(),
                        ..Default::default()
                    }],
                },
            )),
        }),
    };
    ModelServiceClient::new(channel)
        .handle_reload_config_request(only_a)
        .await
        .unwrap();
    eventually(
        "b served again from the file",
        Duration::from_secs(20),
        || {
            let server = &server;
            async move { predict(server, "b").await == 200 }
        },
    )
    .await;
    keeps_serving(&server, "b", "the file's list in force").await;
    server.stop().await;
}

/// Was: a base path holding a NUL byte (`base_path: "a\000y"`) was accepted: the model
/// was unloaded, status showed the path, and the log line carried the raw NUL. Now
/// it is refused like any invalid entry, naming the model, and the list in force
/// stays; gRPC `HandleReloadConfigRequest` refuses it the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_path_with_a_nul_byte_is_refused() {
    let (repo, settings) = setup(&list(&["a", "b"]));
    let config = settings.model_config_file.clone().unwrap();
    let server = TestServer::start_with(settings).await;
    assert_eq!(predict(&server, "a").await, 200);

    std::fs::write(
        &config,
        list(&["a", "b"]).replace("base_path: \"a\"", "base_path: \"a\\000y\""),
    )
    .unwrap();
    keeps_serving(&server, "a", "a base path with a NUL").await;
    let (_, status) = server.get("/models/status").await;
    assert!(!status.to_string().contains("\\u0000"), "{status}");

    let channel = server.grpc_channel().await;
    let with_nul = tfs::ReloadConfigRequest {
        config: Some(tfs::ModelServerConfig {
            config: Some(tfs::model_server_config::Config::ModelConfigList(
                tfs::ModelConfigList {
                    config: vec![tfs::ModelConfig {
                        name: "a".into(),
                        base_path: repo.path().join("a\0y").display().to_string(),
                        ..Default::default()
                    }],
                },
            )),
        }),
    };
    let refused = ModelServiceClient::new(channel)
        .handle_reload_config_request(with_nul)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let message = refused.message();
    assert!(
        message.contains("model \"a\"") && message.contains("U+0000") && !message.contains('\0'),
        "{message}"
    );
    assert_eq!(predict(&server, "a").await, 200);
    assert_eq!(predict(&server, "b").await, 200);
    server.stop().await;
}

/// Iterations of the `slow_loop` fixture's warm-up that keep version 1 of `slow`
/// loading for a few seconds (about a microsecond an iteration).
const LONG_WARMUP: u64 = 3_000_000;

/// Adds model `slow` to `repo`: versions 1 and 2 of the `slow_loop` fixture, version
/// 1 with a warm-up of [`LONG_WARMUP`] iterations, version 2 with a short one, and a
/// `config.toml` that serves the latest version only.
fn add_slow_model(repo: &std::path::Path) {
    let fixture = root_path("tests/fixtures/onnx/slow_loop/model.onnx");
    for (v, n) in [(1, LONG_WARMUP), (2, 1000)] {
        let model = install_model(repo, "slow", v, &fixture);
        let warmup = json!([{ "n": n }]).to_string();
        std::fs::write(model.parent().unwrap().join("warmup.json"), warmup).unwrap();
    }
    std::fs::write(
        repo.join("slow/config.toml"),
        "version_policy = { latest = 1 }\n",
    )
    .unwrap();
}

/// Makes `slow` busy: its `config.toml` asks for every version, and this waits
/// until the watcher is loading version 1 (its long warm-up under way).
async fn make_slow_busy(server: &TestServer, repo: &std::path::Path) {
    std::fs::write(repo.join("slow/config.toml"), "version_policy = \"all\"\n").unwrap();
    eventually("slow/1 loading", Duration::from_secs(20), || async move {
        let (_, status) = server.get("/v1/models/slow").await;
        status["model_version_status"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["version"] == "1" && v["state"] == "LOADING")
    })
    .await;
}

/// Waits until `/v1/models/slow/labels/stable` serves, well past the warm-up.
async fn stable_label_applies(server: &TestServer, what: &str) {
    eventually(what, Duration::from_secs(20), || async move {
        server.get("/v1/models/slow/labels/stable").await.0 == 200
    })
    .await;
    let (_, status) = server.get("/v1/models/slow/labels/stable").await;
    assert_eq!(
        status["model_version_status"][0]["version"], "2",
        "{status}"
    );
}

/// Was: a gRPC `HandleReloadConfigRequest` that came while `slow` was busy (a long
/// warm-up) answered OK and logged "reload skipped busy models", and the list's
/// labels never took effect: the load that held the model recorded its own view
/// when it ended, over the mark asking for another reconcile. Now the watcher's
/// view holds the list entry the model was reconciled with, so the first poll after
/// the load applies the list in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_list_that_finds_a_model_busy_applies_once_its_load_ends() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "x", 1, &model_file());
    add_slow_model(repo.path());
    let settings = Settings {
        file_system_poll_wait: POLL,
        ..test_settings(repo.path())
    };
    let server = TestServer::start_with(settings).await;
    make_slow_busy(&server, repo.path()).await;

    let entry = |name: &str| tfs::ModelConfig {
        name: name.into(),
        base_path: repo.path().join(name).display().to_string(),
        ..Default::default()
    };
    let request = tfs::ReloadConfigRequest {
        config: Some(tfs::ModelServerConfig {
            config: Some(tfs::model_server_config::Config::ModelConfigList(
                tfs::ModelConfigList {
                    config: vec![
                        entry("x"),
                        tfs::ModelConfig {
                            version_labels: [("stable".to_string(), 2)].into(),
                            ..entry("slow")
                        },
                    ],
                },
            )),
        }),
    };
    let channel = server.grpc_channel().await;
    ModelServiceClient::new(channel)
        .handle_reload_config_request(request)
        .await
        .expect("the list applies to slow once its load ends");
    stable_label_applies(&server, "the list's label on slow after its warm-up").await;
    server.stop().await;
}

/// The same for `--model-config-file`: an edit read while `slow` was busy lost its
/// labels until the file was edited again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_edit_that_finds_a_model_busy_applies_once_its_load_ends() {
    let (repo, settings) = setup(&list(&["a", "slow"]));
    add_slow_model(repo.path());
    let config = settings.model_config_file.clone().unwrap();
    let server = TestServer::start_with(settings).await;
    make_slow_busy(&server, repo.path()).await;

    std::fs::write(
        &config,
        "model_config_list {\n  config { name: \"a\" base_path: \"a\" }\n  \
         config { name: \"slow\" base_path: \"slow\" \
         version_labels { key: \"stable\" value: 2 } }\n}\n",
    )
    .unwrap();
    stable_label_applies(&server, "the file's label on slow after its warm-up").await;
    server.stop().await;
}
