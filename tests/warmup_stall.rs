//! A warm-up that runs long or never ends (the `slow` SavedModel loops `n` times
//! for input `n`): each warm-up request is bounded by the model's request timeout,
//! and one model's load never holds up the repository watcher for the others.
//!
//! The TensorFlow libraries come from `FERROSERVE_TENSORFLOW_PATH`, else from the
//! `.venv-tf` environment `scripts/setup.sh` makes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{copy_dir, root_path, tensorflow_dir, test_settings, TestServer};
use ferroserve::settings::Settings;
use serde_json::{json, Value};

/// A repository with `iris_lr/1` (ONNX) and `slow/1` (a SavedModel), `slow`'s
/// `config.toml` being `slow_config`.
fn repo(slow_config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &root_path("examples/models/iris_lr/1"),
        &dir.path().join("iris_lr/1"),
    );
    copy_dir(
        &root_path("tests/fixtures/tensorflow/slow/1"),
        &dir.path().join("slow/1"),
    );
    std::fs::write(dir.path().join("slow/config.toml"), slow_config).unwrap();
    dir
}

async fn start(repo: &Path) -> TestServer {
    TestServer::start_with(Settings {
        tensorflow_path: Some(tensorflow_dir()),
        file_system_poll_wait: Duration::from_millis(300),
        ..test_settings(repo)
    })
    .await
}

/// Adds `slow/<version>` as a copy of `slow/1` with `warmup.json` asking for `n`
/// loops, staged beside it and moved in whole.
fn add_slow_version(repo: &Path, version: u64, n: i64) {
    let staging = repo.join(format!("slow/.tmp-{version}"));
    copy_dir(&root_path("tests/fixtures/tensorflow/slow/1"), &staging);
    std::fs::write(
        staging.join("warmup.json"),
        json!([{ "n": [n] }]).to_string(),
    )
    .unwrap();
    std::fs::rename(&staging, repo.join(format!("slow/{version}"))).unwrap();
}

/// The state and error message of one version, as status tells them.
async fn version_state(server: &TestServer, model: &str, version: u64) -> Option<(String, String)> {
    let (status, answer) = server.get(&format!("/v1/models/{model}")).await;
    if status != 200 {
        return None;
    }
    answer["model_version_status"]
        .as_array()?
        .iter()
        .find(|v| v["version"].as_str() == Some(version.to_string().as_str()))
        .map(|v| {
            (
                v["state"].as_str().unwrap_or_default().to_string(),
                v["status"]["error_message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
}

/// Waits until the version is in `state` (or `limit` passes: `None`).
async fn wait_for_state(
    server: &TestServer,
    model: &str,
    version: u64,
    state: &str,
    limit: Duration,
) -> Option<(String, String)> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(seen) = version_state(server, model, version).await {
            if seen.0 == state {
                return Some(seen);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn predict_slow(server: &TestServer, version: u64, n: i64) -> (u16, Value) {
    server
        .post_json(
            &format!("/v1/models/slow/versions/{version}:predict"),
            &json!({ "instances": [n] }),
        )
        .await
}

/// A warm-up request that runs past the model's `timeout_secs` fails its version
/// (ERROR, with a message that names the request and the limit), and the version
/// before it serves on. Before, the warm-up had no time limit: `slow/2` stayed
/// LOADING for ever (2^31 loops), holding its model's lock and the watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_past_the_models_timeout_fails_the_version() {
    let repo = repo("timeout_secs = 2\n");
    let server = start(repo.path()).await;
    let (status, answer) = predict_slow(&server, 1, 3).await;
    assert_eq!(status, 200, "{answer}");

    add_slow_version(repo.path(), 2, i64::from(i32::MAX));
    let failed = wait_for_state(&server, "slow", 2, "END", Duration::from_secs(15)).await;
    let Some((_, message)) = failed else {
        let now = version_state(&server, "slow", 2).await;
        panic!("slow/2 did not fail within 15 s: {now:?}");
    };
    assert!(
        message.contains("warm-up request 0 of warmup.json")
            && message.contains("time limit of 2 s"),
        "{message}"
    );
    // The version before it was never unloaded.
    let (status, answer) = predict_slow(&server, 1, 3).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = server
        .post_json("/v1/models/slow:predict", &json!({ "instances": [3] }))
        .await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await;
}

/// While one model's version warms up for seconds, a new version of another model
/// is loaded and served within a couple of polls. Before, each poll waited for
/// every load it started: `iris_lr/2` waited for `slow/2`'s whole warm-up (and for
/// ever behind one that never ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_warm_up_does_not_hold_up_other_models() {
    let repo = repo("timeout_secs = 20\n");
    let server = start(repo.path()).await;
    // How many loops take about five seconds here, measured on slow/1.
    let probe = 50_000;
    let started = Instant::now();
    let (status, answer) = predict_slow(&server, 1, probe).await;
    assert_eq!(status, 200, "{answer}");
    let per_loop = started.elapsed().as_secs_f64() / probe as f64;
    let n = ((5.0 / per_loop) as i64).clamp(probe, i64::from(i32::MAX));

    add_slow_version(repo.path(), 2, n);
    assert!(
        wait_for_state(&server, "slow", 2, "LOADING", Duration::from_secs(10))
            .await
            .is_some(),
        "slow/2 never started loading"
    );
    copy_dir(
        &root_path("examples/models/iris_lr/1"),
        &repo.path().join("iris_lr/.tmp-2"),
    );
    std::fs::rename(
        repo.path().join("iris_lr/.tmp-2"),
        repo.path().join("iris_lr/2"),
    )
    .unwrap();
    let added = Instant::now();
    let served = wait_for_state(&server, "iris_lr", 2, "AVAILABLE", Duration::from_secs(15)).await;
    let slow_now = version_state(&server, "slow", 2).await;
    assert!(
        served.is_some(),
        "iris_lr/2 was not served; slow/2: {slow_now:?}"
    );
    assert_eq!(
        slow_now.as_ref().map(|s| s.0.as_str()),
        Some("LOADING"),
        "slow/2 should still be warming up when iris_lr/2 serves ({:?} after it was added)",
        added.elapsed()
    );
    assert!(
        added.elapsed() < Duration::from_secs(3),
        "iris_lr/2 took {:?} to serve",
        added.elapsed()
    );
    let (status, answer) = server
        .post_json(
            "/v1/models/iris_lr/versions/2:predict",
            &json!({ "instances": [[5.1, 3.5, 1.4, 0.2]] }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // The long warm-up, within its limit, ends with the version serving.
    assert!(
        wait_for_state(&server, "slow", 2, "AVAILABLE", Duration::from_secs(60))
            .await
            .is_some(),
        "slow/2 never became AVAILABLE: {:?}",
        version_state(&server, "slow", 2).await
    );
    server.stop().await;
}
