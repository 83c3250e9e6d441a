//! ONNX runs end at their deadline (the model's `timeout_secs`), as TensorFlow's do:
//! the `slow_loop` fixture loops `n` times for input `n` (about a microsecond an
//! iteration; `tests/fixtures/onnx/slow_loop/expected.json`, written by
//! `python/make_onnx_models.py --only slow_loop`, holds onnxruntime-Python's
//! outputs for small `n`).
//!
//! Before, ONNX Runtime ignored the deadline: a request past it was answered 504 but
//! its run went on, holding the version's inference thread, so the next request
//! waited for it (and timed out too); a warm-up request that ran long held its
//! version's load until it returned.

mod common;

use std::time::{Duration, Instant};

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use serde_json::{json, Value};

/// Iterations that take tens of seconds: far past a one-second deadline, but a run
/// that is never ended still returns before the test binary is given up on.
const LONG: i64 = 50_000_000;

fn expected() -> Value {
    let path = root_path("tests/fixtures/onnx/slow_loop/expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A repository with `slow_loop/1`, `config` as its `config.toml`, and
/// `warmup.json` when given.
fn repo(config: &str, warmup: Option<Value>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let model = install_model(
        dir.path(),
        "slow_loop",
        1,
        &root_path("tests/fixtures/onnx/slow_loop/model.onnx"),
    );
    std::fs::write(dir.path().join("slow_loop/config.toml"), config).unwrap();
    if let Some(warmup) = warmup {
        let warmup_path = model.parent().unwrap().join("warmup.json");
        std::fs::write(warmup_path, warmup.to_string()).unwrap();
    }
    dir
}

async fn predict(server: &TestServer, n: i64) -> (u16, Value) {
    server
        .post_json(
            "/v1/models/slow_loop:predict",
            &json!({ "inputs": { "n": n } }),
        )
        .await
}

/// A request whose run passes its deadline is answered 504 at the deadline, and its
/// run ends there: the next request runs at once on the version's only inference
/// thread and gets onnxruntime's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_deadline_is_ended_and_the_next_request_runs_at_once() {
    let repo = repo("timeout_secs = 1\n", None);
    let server = TestServer::start_with(Settings {
        inference_threads: 1,
        ..test_settings(repo.path())
    })
    .await;
    for case in expected()["cases"].as_array().unwrap() {
        let n = case["inputs"]["n"]["data"][0].as_i64().unwrap();
        let (status, answer) = predict(&server, n).await;
        assert_eq!(status, 200, "n = {n}: {answer}");
        assert_eq!(
            answer["outputs"], case["outputs"]["y"]["data"][0],
            "n = {n}: {answer}"
        );
    }

    let started = Instant::now();
    let (status, answer) = predict(&server, LONG).await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{answer}");
    assert!(took < Duration::from_secs(3), "504 after {took:?}");

    // The run ended at the deadline: the thread is free for the next request.
    let started = Instant::now();
    let (status, answer) = predict(&server, 3).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"], json!(3.0), "{answer}");
    assert!(
        took < Duration::from_millis(500),
        "the next request took {took:?}: it waited for the run past its deadline"
    );
    // And again: the session's terminate flag was cleared for the runs after.
    for _ in 0..3 {
        let (status, answer) = predict(&server, 1000).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["outputs"], json!(1000.0), "{answer}");
    }
    server.stop().await;
}

/// A warm-up request past the model's timeout is ended at it: the version's load
/// fails within about the limit, not once the run returns by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_run_past_the_limit_is_ended_at_it() {
    let repo = repo("timeout_secs = 1\n", Some(json!([{ "n": LONG }])));
    let started = Instant::now();
    let server = TestServer::start(repo.path()).await;
    let failed = loop {
        let (status, answer) = server.get("/v1/models/slow_loop").await;
        let version = &answer["model_version_status"][0];
        if status == 200 && ["END", "ERROR"].contains(&version["state"].as_str().unwrap_or("")) {
            break version.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "slow_loop/1 never failed: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = started.elapsed();
    let message = failed["status"]["error_message"].as_str().unwrap_or("");
    assert!(
        message.contains("warm-up request 0 of warmup.json"),
        "{failed}"
    );
    assert!(
        took < Duration::from_secs(4),
        "the warm-up failed after {took:?}: its run went on past the limit ({failed})"
    );
    server.stop().await;
}
