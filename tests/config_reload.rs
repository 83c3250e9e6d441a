//! Issue 11, item 1: `config.toml` edits after a version has loaded take effect on
//! the next poll for the versions already serving (feature names and defaults,
//! input/output names, timeout), without a reload; settings that only apply at
//! load (`[batching]`, `warmup`) are named in `/models/status` until a reload.

mod common;

use std::time::{Duration, Instant};

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use serde_json::Value;

const QUERY: &str =
    "/predict/iris?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2";

/// Polls `path` until `done(status, body)` or the deadline.
async fn poll_until(
    server: &TestServer,
    path: &str,
    done: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = server.get(path).await;
        if done(status, &body) {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "{path}: still {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_edits_apply_to_served_versions_without_a_reload() {
    let repo = tempfile::tempdir().unwrap();
    // The ONNX iris model knows no feature names of its own.
    install_model(
        repo.path(),
        "iris",
        1,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    let server = TestServer::start_with(Settings {
        file_system_poll_wait: Duration::from_millis(100),
        ..test_settings(repo.path())
    })
    .await;
    let (status, body) = server.get(QUERY).await;
    assert_eq!(status, 400, "no feature names yet: {body}");

    // The README's example: write config.toml, then ask by name.
    std::fs::write(
        repo.path().join("iris/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n",
    )
    .unwrap();
    let (_, body) = poll_until(&server, QUERY, |s, _| s == 200).await;
    assert_eq!(body["prediction"], 0, "{body}");
    assert_eq!(body["version"], 1, "the same version, not a reload: {body}");

    // Defaults added later fill a missing feature.
    std::fs::write(
        repo.path().join("iris/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n\
         [feature_defaults]\nsepal_width = 3.5\n",
    )
    .unwrap();
    let partial = "/predict/iris?sepal_length=5.1&petal_length=1.4&petal_width=0.2";
    let (_, left_out) = poll_until(&server, partial, |s, _| s == 200).await;
    // A feature sent as null is missing too, for a model that takes no missing
    // values (it was a 400 "does not take missing values").
    let (status, nulled) = server
        .post_json(
            "/predict/iris",
            &serde_json::json!({"features": {"sepal_length": 5.1, "sepal_width": null,
                "petal_length": 1.4, "petal_width": 0.2}}),
        )
        .await;
    assert_eq!(status, 200, "{nulled}");
    assert_eq!(nulled["prediction"], left_out["prediction"], "{nulled}");
    assert_eq!(
        nulled["probabilities"], left_out["probabilities"],
        "{nulled}"
    );

    // A new request deadline applies at once: 1 µs makes every request time out.
    std::fs::write(
        repo.path().join("iris/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n\
         timeout_secs = 0.000001\n",
    )
    .unwrap();
    poll_until(&server, QUERY, |s, _| s == 504).await;

    // Batching needs a reload: status says so, and a reload clears it.
    std::fs::write(
        repo.path().join("iris/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n\
         [batching]\nenabled = true\nmax_batch_size = 8\n",
    )
    .unwrap();
    let (_, status) = poll_until(&server, "/models/status", |_, b| {
        b["models"][0]["settings_needing_reload"] == serde_json::json!(["batching"])
    })
    .await;
    assert_eq!(status["models"][0]["model_id"], "iris");
    let (code, _) = server.get(QUERY).await;
    assert_eq!(code, 200, "the timeout edit was undone with the rest");
    // A misspelt parameter is refused, not taken for a reload of every model.
    let (code, body) = server
        .post_json("/reload_model?model_name=iris", &serde_json::json!({}))
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("model_name"),
        "{body}"
    );
    let (code, body) = server
        .post_json("/reload_model?modelname=iris", &serde_json::json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = server.get("/models/status").await;
    assert_eq!(code, 200);
    let model = &body["models"][0];
    // A reload of an unchanged version keeps it; if it was kept, batching still needs
    // a new version to apply, and status keeps saying so.
    assert!(
        model["settings_needing_reload"] == serde_json::json!([])
            || model["settings_needing_reload"] == serde_json::json!(["batching"]),
        "{model}"
    );
    // Every table read at load is reported when it changes ([tensorflow] and
    // [fasttext] were not: an edit showed nothing to reload, and did nothing).
    std::fs::write(
        repo.path().join("iris/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n\
         [fasttext]\nk = 2\n[tensorflow]\ntags = [\"serve\", \"gpu\"]\n",
    )
    .unwrap();
    poll_until(&server, "/models/status", |_, b| {
        let listed = b["models"][0]["settings_needing_reload"]
            .as_array()
            .cloned();
        listed.is_some_and(|l| {
            l.contains(&serde_json::json!("fasttext"))
                && l.contains(&serde_json::json!("tensorflow"))
        })
    })
    .await;
    server.stop().await;
}

/// The entry of `model` in `/models/status`, once `done` holds for it.
async fn status_until(server: &TestServer, model: &str, done: impl Fn(&Value) -> bool) -> Value {
    let (_, status) = poll_until(server, "/models/status", |_, body| {
        body["models"]
            .as_array()
            .and_then(|models| models.iter().find(|m| m["model_id"] == model))
            .is_some_and(&done)
    })
    .await;
    status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == model)
        .unwrap()
        .clone()
}

fn mkfifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// A FIFO named `config.toml` or `warmup.json` held the thread that opened it until
/// something wrote to it: the repository watcher stopped, for every model, and a
/// version with such a warm-up file stayed LOADING. Neither is read now: the
/// model's config is in error (the config before stays), the version is ERROR,
/// and other models' new versions load as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_the_repository_holds_no_one() {
    let repo = tempfile::tempdir().unwrap();
    let model = root_path("examples/models/iris_dt/1/model.onnx");
    install_model(repo.path(), "a", 1, &model);
    install_model(repo.path(), "f", 1, &model);
    let server = TestServer::start_with(Settings {
        file_system_poll_wait: Duration::from_millis(100),
        ..test_settings(repo.path())
    })
    .await;
    status_until(&server, "f", |m| m["versions"][0]["state"] == "AVAILABLE").await;

    mkfifo(&repo.path().join("f/config.toml"));
    let f = status_until(&server, "f", |m| !m["config_error"].is_null()).await;
    let error = f["config_error"].as_str().unwrap();
    assert!(error.contains("FIFO"), "{f}");
    assert_eq!(f["versions"][0]["state"], "AVAILABLE", "{f}");

    // The watcher goes on: a new version of another model loads.
    let staging = repo.path().join("a/.copy");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(&model, staging.join("model.onnx")).unwrap();
    std::fs::rename(&staging, repo.path().join("a/2")).unwrap();
    status_until(&server, "a", |m| {
        m["versions"].as_array().is_some_and(|v| {
            v.iter()
                .any(|v| v["version"] == 2 && v["state"] == "AVAILABLE")
        })
    })
    .await;

    // A version whose warm-up file is a FIFO fails to load, saying why.
    let staging = repo.path().join("w.copy");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(&model, staging.join("model.onnx")).unwrap();
    mkfifo(&staging.join("warmup.json"));
    std::fs::create_dir_all(repo.path().join("w")).unwrap();
    std::fs::rename(&staging, repo.path().join("w/1")).unwrap();
    let w = status_until(&server, "w", |m| m["versions"][0]["state"] == "ERROR").await;
    let error = w["versions"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("warmup.json") && error.contains("FIFO"),
        "{w}"
    );
    server.stop().await;
}
