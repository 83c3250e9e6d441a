//! Requests in flight when a worker goes: drained for the deployment's timeout,
//! told why when cut off, and bodies still arriving answered 503 (a slow model,
//! `slow_loop`, keeps them in flight).

use super::*;

/// Installs the `slow_loop` fixture as model `slow` (it loops `n` times for input
/// `n`, about a microsecond an iteration).
fn install_slow(repo: &std::path::Path) {
    install(repo, "slow", "tests/fixtures/onnx/slow_loop/model.onnx");
}

/// One prediction of the deployed `slow` model that loops `n` times, with the
/// client's own generous timeout; the answer and how long it took.
async fn slow_predict(server: &common::child::ChildServer, n: u64) -> (u16, Value, Duration) {
    let started = Instant::now();
    let (code, text) = post_slow(server.url("/v1/models/slow:predict"), n).await;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, body, started.elapsed())
}

/// POSTs a loop of `n` to `url` (the `slow` model's predict): status and text.
async fn post_slow(url: String, n: u64) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&json!({"inputs": {"n": n}}))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// [`post_slow`] in a task of its own, for a request in flight while the test
/// redeploys or signals the worker.
fn spawn_slow_predict(
    server: &common::child::ChildServer,
    n: u64,
) -> tokio::task::JoinHandle<(u16, String)> {
    tokio::spawn(post_slow(server.url("/v1/models/slow:predict"), n))
}

/// The loop count that keeps the deployed `slow` model busy for about `secs`,
/// measured on its worker.
async fn iterations_for(server: &common::child::ChildServer, secs: f64) -> u64 {
    const PROBE: u64 = 1_000_000;
    let (code, body, took) = slow_predict(server, PROBE).await;
    assert_eq!(code, 200, "{body}");
    (PROBE as f64 * secs / took.as_secs_f64().max(0.01)) as u64
}

/// A redeploy drains the old worker for as long as a request to it may last (the
/// deployment's timeout, past `--shutdown-timeout`): a request in flight that runs
/// longer than the old fixed 10 s finishes on the old worker (it was cut off with
/// a 503 "did not answer" after 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_drains_the_old_worker_for_the_deployment_timeout() {
    let repo = tempfile::tempdir().unwrap();
    install_slow(repo.path());
    let server = start_server(repo.path(), port_range(20), &["--shutdown-timeout", "2"]).await;
    let deployment = json!({"model_id": "slow", "resources": {"timeout": 60}});
    let (code, answer) = deploy(&server, deployment.clone()).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    let n = iterations_for(&server, 16.0).await;
    let request = {
        let url = server.url("/v1/models/slow:predict");
        tokio::spawn(async move {
            let started = Instant::now();
            let r = reqwest::Client::new()
                .post(url)
                .json(&json!({"inputs": {"n": n}}))
                .timeout(Duration::from_secs(120))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.text().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, answer) = deploy(&server, deployment).await;
    assert_eq!(code, 200, "{answer}");
    assert_ne!(pid_of(&answer), pid);
    let (code, body, took) = request.await.unwrap();
    assert_eq!(code, 200, "after {took:?}: {body}\n{}", server.log());
    assert!(
        took > Duration::from_secs(11),
        "the request took only {took:?}"
    );
    assert_gone(&[pid], Duration::from_secs(10));
}

/// A request that outlasts the old worker's drain (no deployment timeout: the
/// drain is `--shutdown-timeout`) is answered 503 saying so, not as a
/// connection fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_off_by_a_drain_is_told_so() {
    let repo = tempfile::tempdir().unwrap();
    install_slow(repo.path());
    let server = start_server(repo.path(), port_range(20), &["--shutdown-timeout", "1"]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "slow"})).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    let n = iterations_for(&server, 9.0).await;
    let request = spawn_slow_predict(&server, n);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, answer) = deploy(&server, json!({"model_id": "slow"})).await;
    assert_eq!(code, 200, "{answer}");
    let (code, body) = request.await.unwrap();
    assert_eq!(code, 503, "{body}\n{}", server.log());
    assert!(
        body.contains("drain") && body.contains("replaced or stopped"),
        "{body}"
    );
    assert_gone(&[pid], Duration::from_secs(10));
}

/// A worker sent SIGTERM from outside (an operator, a container runtime) drains:
/// its supervision does not kill it for failing health checks meanwhile (a request
/// in flight got 503 "failed 3 health checks ... killed" after 3 s); once it exits
/// it is restarted like any worker that ended, and its last exit names the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_from_outside_drains_then_restarts() {
    let repo = tempfile::tempdir().unwrap();
    install_slow(repo.path());
    let server = start_server(repo.path(), port_range(20), &[]).await;
    let (code, answer) = deploy(
        &server,
        json!({"model_id": "slow", "resources": {"timeout": 60}}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    let n = iterations_for(&server, 6.0).await;
    let request = spawn_slow_predict(&server, n);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let (code, body) = request.await.unwrap();
    assert_eq!(code, 200, "{body}\n{}", server.log());
    let entry = wait_registry(&server, "slow", Duration::from_secs(30), |e| {
        e["state"] == "ready" && e["pid"].as_u64().is_some_and(|p| p != pid)
    })
    .await;
    let reason = entry["last_exit"]["reason"].as_str().unwrap();
    assert!(reason.contains("SIGTERM"), "{entry}");
    assert!(!reason.contains("health checks"), "{entry}");
    assert_eq!(entry["last_exit"]["exit_code"], 0, "{entry}");
    let (code, body, _) = slow_predict(&server, 3).await;
    assert_eq!(code, 200, "{body}");
}

/// A large body sent whole to a deployed model while its worker restarts, by a
/// client that reads the answer only then (Python's http.client), reads its 503
/// and `Retry-After`: the forwarding layer answered at once and closed the
/// connection on the unread body, a broken pipe for such a client (44 of 125
/// requests while a worker held to `10m` restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_sent_while_the_worker_restarts_reads_its_503() {
    let repo = tempfile::tempdir().unwrap();
    // A model that takes seconds to load (its warm-up), so that its restart
    // leaves a window.
    install_slow(repo.path());
    std::fs::write(
        repo.path().join("slow/1/warmup.json"),
        json!([{ "n": 3_000_000 }]).to_string(),
    )
    .unwrap();
    let server = start_server(repo.path(), port_range(4), &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "slow"})).await;
    assert_eq!(code, 200, "{answer}");
    kill9(pid_of(&answer));
    wait_registry(&server, "slow", Duration::from_secs(10), |e| {
        e["state"] != "ready"
    })
    .await;
    // More than the loopback sockets' buffers hold.
    let head = common::post_answer_head(
        server.rest,
        "/v1/models/slow:predict",
        "application/json",
        vec![b' '; 12 << 20],
        common::Sending::WholeBodyFirst,
    )
    .await;
    assert!(head.starts_with("http/1.1 503"), "{head}\n{}", server.log());
    assert!(head.contains("retry-after"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
}

/// A body whose worker dies while it receives it, sent whole by a client that
/// reads the answer only then (Python's http.client), reads its 503: the
/// forwarding layer answered as soon as the worker's connection failed, and closed
/// on the rest of the body, a broken pipe for such a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_whose_worker_dies_while_receiving_it_reads_its_503() {
    let repo = tempfile::tempdir().unwrap();
    install_slow(repo.path());
    let server = start_server(repo.path(), port_range(4), &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "slow"})).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    // More than the loopback sockets' buffers hold, after the part sent first.
    let body = vec![b' '; 12 << 20];
    let head = common::post_in_two_parts(
        server.rest,
        "/v1/models/slow:predict",
        "application/json",
        &body,
        1 << 20,
        async {
            // Time for the part to be on its way to the worker, so that the kill
            // comes mid-body. Nothing waits on it: killed before the forwarding
            // connected, or seen gone before it began, the request is refused by
            // the same layer and must read its 503 just the same.
            tokio::time::sleep(Duration::from_millis(300)).await;
            kill9(pid);
        },
    )
    .await;
    assert!(head.starts_with("http/1.1 503"), "{head}\n{}", server.log());
    assert!(!head.contains("connection: close"), "{head}");
    let entry = wait_registry(&server, "slow", Duration::from_secs(30), |e| {
        e["state"] == "ready" && e["pid"].as_u64().is_some_and(|p| p != pid)
    })
    .await;
    drop(server);
    assert_gone(&[pid_of(&entry)], Duration::from_secs(10));
}
