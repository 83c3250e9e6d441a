//! Isolated deployments (issue 14) with tokens (issue 10): a deployed model's worker
//! serves with the tokens in force in its main server, also when it starts while a
//! bad edit of the tokens file is in place (the main server keeps its tokens
//! through it; a worker that exited over it went into crash-loop).

mod common;

use std::time::{Duration, Instant};

use common::workers::*;
use serde_json::{json, Value};

/// A token that is in no file until the fixed one.
const NEW_READER: &str = "fst_workers-test-new-reader-token";

/// The model's registry entry, read with the reader's token.
async fn registry_as_reader(
    server: &common::child::ChildServer,
    client: &reqwest::Client,
    model: &str,
) -> Value {
    let url = server.url(&format!("/registry/services/{model}"));
    let (code, entry) = send_with(client.get(url), Some(READER)).await;
    assert_eq!(code, 200, "{entry}");
    entry
}

/// A prediction of `model` straight on its worker's `port` with `token`: its status.
async fn predict_on_worker(
    client: &reqwest::Client,
    port: u64,
    model: &str,
    token: &str,
) -> (u16, Value) {
    send_with(
        client
            .post(format!("http://127.0.0.1:{port}/predict"))
            .json(&json!({"model_id": model, "features": ROW})),
        Some(token),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_serve_with_the_tokens_in_force_while_the_tokens_file_is_bad() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(
        repo.path(),
        "iris_dt",
        "examples/models/iris_dt/1/model.onnx",
    );
    let tokens_dir = tempfile::tempdir().unwrap();
    let tokens = tokens_dir.path().join("tokens.toml");
    write_tokens(&tokens);
    let server = start_server(
        repo.path(),
        port_range(20),
        &["--auth-tokens", tokens.to_str().unwrap()],
    )
    .await;
    let client = reqwest::Client::new();
    let answer = deploy_iris_as_manager(&server, &client).await;
    let old_pid = pid_of(&answer);

    // A bad edit: the main server keeps its tokens (it polls the file every second).
    std::fs::write(&tokens, "not toml [[[\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // The worker, killed, comes back (no crash-loop) and serves with the tokens in
    // force in the main server.
    kill9(old_pid);
    let deadline = Instant::now() + Duration::from_secs(60);
    let entry = loop {
        let entry = registry_as_reader(&server, &client, "iris").await;
        if entry["state"] == "ready" && entry["pid"].as_u64().is_some_and(|p| p != old_pid) {
            break entry;
        }
        assert!(
            entry["state"] != "crash-loop" && Instant::now() < deadline,
            "the killed worker did not come back serving: {entry}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let iris_port = entry["port"].as_u64().unwrap();
    let (code, body) = predict_on_worker(&client, iris_port, "iris", READER).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = predict_on_worker(&client, iris_port, "iris", "fst_wrong").await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = send_with(client.post(server.url("/predict")), None).await;
    assert_eq!(code, 401, "the main server is never open: {body}");

    // A deploy while the file is bad starts a worker that serves with them too.
    let (code, answer) = send_with(
        client
            .post(server.url("/deploy"))
            .json(&json!({"model_id": "iris_dt"})),
        Some(MANAGER),
    )
    .await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let dt_port = answer["port"].as_u64().unwrap();
    let (code, body) = predict_on_worker(&client, dt_port, "iris_dt", READER).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = predict_on_worker(&client, dt_port, "iris_dt", NEW_READER).await;
    assert_eq!(code, 401, "{body}");

    // The file fixed with a new token: both workers take it within seconds, and
    // the reader's token, no longer in it, is refused.
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nname = \"new reader\"\nsha256 = \"{}\"\nscopes = [\"inference\"]\n",
            ferroserve::auth::to_hex(&ferroserve::auth::token_sha256(NEW_READER))
        ),
    )
    .unwrap();
    for (model, port) in [("iris", iris_port), ("iris_dt", dt_port)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (new, _) = predict_on_worker(&client, port, model, NEW_READER).await;
            let (old, _) = predict_on_worker(&client, port, model, READER).await;
            if (new, old) == (200, 401) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{model}'s worker did not take the fixed tokens file: new {new}, old {old}\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (code, body) = send_with(
        client
            .post(server.url("/predict"))
            .json(&json!({"model_id": "iris", "features": ROW})),
        Some(NEW_READER),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}
