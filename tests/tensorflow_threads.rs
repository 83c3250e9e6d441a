//! TensorFlow's thread pools between models, and shutdown with a run that does not
//! end. Each test is a ferroserve process of its own: TensorFlow's process-wide
//! pools are made by the first session a process creates, so an in-process server
//! sharing a test binary with other TensorFlow tests would see theirs.
//!
//! The TensorFlow libraries come from `FERROSERVE_TENSORFLOW_PATH`, else from the
//! `.venv-tf` environment `scripts/setup.sh` makes.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::child::{free_port, ChildServer};
use common::{copy_dir, root_path, tensorflow_dir};
use serde_json::{json, Value};

/// Installs fixture `fixture` as version 1 of `model` in `repo`, with `config`
/// as its config.toml, whole at once (the watcher never sees half of it).
fn install(repo: &Path, fixture: &str, model: &str, config: &str) {
    let staging = tempfile::tempdir_in(repo).unwrap();
    let dir = staging.path().join(model);
    copy_dir(
        &root_path(&format!("tests/fixtures/tensorflow/{fixture}/1")),
        &dir.join("1"),
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    std::fs::rename(&dir, repo.join(model)).unwrap();
}

/// The real binary serving `repo` with `flags`.
async fn serve(repo: &Path, flags: &[&str]) -> ChildServer {
    let rest: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    command
        .arg("serve")
        .arg("--model-repository")
        .arg(repo)
        .args(["--rest-addr", &rest.to_string()])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(flags)
        .env("FERROSERVE_TENSORFLOW_PATH", tensorflow_dir());
    ChildServer::start(command, rest).await
}

async fn wait_available(client: &reqwest::Client, server: &ChildServer, model: &str) {
    let (state, message) = settled(client, server, model).await;
    assert_eq!(state, "AVAILABLE", "{model}: {message}\n{}", server.log());
}

async fn predict(client: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    match client.post(url).json(&body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        // The connection closed with no answer (the server shutting down).
        Err(e) => (0, json!(e.to_string())),
    }
}

/// Issue: without `use_per_session_threads` TensorFlow ran every session on one
/// process-wide inter-op pool, sized by the first session created; a model with
/// `inter_op_threads = 1` loaded first made another model's run wait for its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_models_inter_op_threads_neither_size_nor_block_another_models_runs() {
    let repo = tempfile::tempdir().unwrap();
    install(
        repo.path(),
        "slow",
        "slow",
        "timeout_secs = 60\n[tensorflow]\ninter_op_threads = 1\n",
    );
    let server = serve(
        repo.path(),
        &[
            "--inference-threads",
            "4",
            "--file-system-poll-wait-seconds",
            "0.2",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    // `slow`'s session is the process's first; `mlp` comes after it.
    wait_available(&client, &server, "slow").await;
    install(repo.path(), "mlp", "mlp", "timeout_secs = 30\n");
    wait_available(&client, &server, "mlp").await;

    let mlp = || {
        let features = json!([[1.0, 0.5, -0.5, 0.25]]);
        predict(
            &client,
            server.url("/v1/models/mlp:predict"),
            json!({"instances": features}),
        )
    };
    let (status, answer) = mlp().await;
    assert_eq!(status, 200, "{answer}");

    // `slow` loops n times: a short run measures this machine's speed, so that the
    // long one lasts about four seconds.
    let slow_url = server.url("/v1/models/slow:predict");
    let started = Instant::now();
    let (status, answer) =
        predict(&client, slow_url.clone(), json!({"instances": [200_000]})).await;
    assert_eq!(status, 200, "{answer}");
    let per_loop = started.elapsed().as_secs_f64() / 200_000.0;
    let n = ((4.0 / per_loop) as i64).clamp(200_000, i32::MAX as i64);

    let slow = tokio::spawn({
        let client = client.clone();
        async move {
            let started = Instant::now();
            let answer = predict(&client, slow_url, json!({"instances": [n]})).await;
            (answer, started.elapsed())
        }
    });
    // Let the long run begin before asking `mlp`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, answer) = mlp().await;
    let mlp_took = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    let ((status, answer), slow_took) = slow.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(
        mlp_took < Duration::from_millis(1500),
        "mlp took {mlp_took:?} beside a run of `slow` that took {slow_took:?}: it waited \
         for the other model's inter-op thread"
    );
    // Asked 0.3 s into a run of at least 2 s and answered within 1.5 s: `mlp` ran
    // while `slow` did.
    assert!(
        slow_took > Duration::from_secs(2),
        "the slow run took {slow_took:?}: the test proves nothing"
    );
}

/// Issue: shutdown joined the inference threads with no time limit, so a thread
/// inside a run that never ends kept the process up after SIGTERM for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_while_an_inference_thread_is_stuck_in_a_run() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "slow", "slow", "timeout_secs = 600\n");
    let mut server = serve(repo.path(), &["--shutdown-timeout", "1"]).await;
    let client = reqwest::Client::new();
    wait_available(&client, &server, "slow").await;
    // 2^31 - 1 loops: far longer than this test.
    let stuck = tokio::spawn({
        let client = client.clone();
        let url = server.url("/v1/models/slow:predict");
        async move { predict(&client, url, json!({"instances": [i32::MAX]})).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stuck.is_finished());
    let signalled = Instant::now();
    server.terminate();
    let code = server.wait_exit(Duration::from_secs(10));
    let took = signalled.elapsed();
    assert!(
        code.is_some(),
        "still running {took:?} after SIGTERM with --shutdown-timeout 1: {}",
        server.log()
    );
    assert_eq!(code, Some(0), "{}", server.log());
    let log = server.log();
    assert!(
        log.contains("1 inference thread(s) still inside a model's run"),
        "{log}"
    );
    stuck.abort();
}

/// The threads of process `pid`.
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// The state of `model`'s version 1 once it has settled (AVAILABLE or ERROR) and
/// its error message.
async fn settled(client: &reqwest::Client, server: &ChildServer, model: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = match client
            .get(server.url(&format!("/v1/models/{model}")))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let status = &body["model_version_status"][0];
        if let Some(state @ ("AVAILABLE" | "END")) = status["state"].as_str() {
            let message = status["status"]["error_message"].as_str().unwrap_or("");
            return (state.to_string(), message.to_string());
        }
        assert!(
            Instant::now() < deadline,
            "{model} not settled within 60 s: {body}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue: TF Serving's `--tensorflow_inter_op_parallelism` and
/// `--tensorflow_session_parallelism` were refused unless 0, and
/// `--saved_model_tags` unless `serve`, though a drop-in's SavedModels are what
/// they are for; `--tensorflow_intra_op_parallelism` reached only ONNX Runtime. They
/// now give every SavedModel whose `[tensorflow]` table leaves them out its tags
/// and threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_servings_session_flags_reach_savedmodels() {
    let client = reqwest::Client::new();

    // Tags: the flag's tag set for a model whose table gives none, the table's
    // own for one that does.
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "mlp", "flagged", "");
    install(
        repo.path(),
        "mlp",
        "own",
        "[tensorflow]\ntags = [\"serve\"]\n",
    );
    let server = serve(repo.path(), &["--saved_model_tags=serve,gpu"]).await;
    let (state, message) = settled(&client, &server, "flagged").await;
    assert_eq!(state, "END", "{message}");
    assert!(
        message.contains("gpu") && message.contains("serve"),
        "{message}"
    );
    assert_eq!(settled(&client, &server, "own").await.0, "AVAILABLE");
    drop(server);

    // Threads: an inter-op pool of the flag's size, made when the SavedModel
    // loads (TensorFlow's pools start their threads at once).
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "mlp", "mlp", "");
    let plain = serve(repo.path(), &[]).await;
    assert_eq!(settled(&client, &plain, "mlp").await.0, "AVAILABLE");
    let with_flag = serve(repo.path(), &["--tensorflow_inter_op_parallelism=48"]).await;
    assert_eq!(settled(&client, &with_flag, "mlp").await.0, "AVAILABLE");
    let (without, with) = (thread_count(plain.pid()), thread_count(with_flag.pid()));
    assert!(
        with >= without + 40,
        "{with} threads with an inter-op pool of 48, {without} without"
    );
    drop(plain);
    drop(with_flag);

    // TF Serving refuses all three thread flags given at once; so does the drop-in.
    let repo = tempfile::tempdir().unwrap();
    let (code, out) = common::child::run_refused({
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
        c.arg("serve")
            .arg("--model-repository")
            .arg(repo.path())
            .args([
                "--tensorflow_intra_op_parallelism=2",
                "--tensorflow_inter_op_parallelism=2",
                "--tensorflow_session_parallelism=2",
            ]);
        c
    });
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("You cannot configure all"), "{out}");
}
