//! Dynamic batching and overload control, end to end: a full queue is refused at
//! once with 429 and `Retry-After`, batched requests each get their own rows
//! back, and a version that is unloaded drains its queue first.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::api::{self, ApiError, PredictRequest, Protocol, ServerState};
use ferroserve::manager::{Manager, VersionRequest, VersionState};
use ferroserve::tensor::{Tensor, TensorData};
use serde_json::{json, Value};

const IRIS_ROWS: [[f32; 4]; 3] = [
    [5.1, 3.5, 1.4, 0.2],
    [7.0, 3.2, 4.7, 1.4],
    [6.3, 3.3, 6.0, 2.5],
];

/// A repository with the iris logistic regression as `model` and the given
/// `config.toml`. Each test names its model differently, as metrics are global
/// to the test process.
fn repo_with_config(model: &str, config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    install_model(
        dir.path(),
        model,
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    std::fs::write(dir.path().join(model).join("config.toml"), config).unwrap();
    dir
}

/// Polls a condition with a deadline; a hang guard, not a speed check.
async fn wait_until<F, Fut>(what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let limit = Instant::now() + Duration::from_secs(30);
    while !ok().await {
        assert!(Instant::now() < limit, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `ferroserve_queue_length` of `overloaded` version 1, from `/metrics`.
async fn queue_length(server: &TestServer) -> Option<f64> {
    let (_, text) = server.get("/metrics").await;
    let text = text.as_str()?.to_string();
    text.lines()
        .find(|l| {
            l.starts_with("ferroserve_queue_length{")
                && l.contains("model=\"overloaded\"")
                && l.contains("version=\"1\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn predict_body(row: [f32; 4]) -> Value {
    json!({ "instances": [row] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_at_once_with_429() {
    // Requests wait up to 2 s for a batch of 64 that never fills, so the queue
    // of 2 stays full long enough for a third request to find it full.
    let repo = repo_with_config(
        "overloaded",
        "[batching]\nenabled = true\nmax_batch_size = 64\nmax_queue_delay_micros = 2000000\nmax_queue_length = 2\n",
    );
    let server = Arc::new(TestServer::start(repo.path()).await);
    let waiting: Vec<_> = IRIS_ROWS[..2]
        .iter()
        .map(|&row| {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .post_json("/v1/models/overloaded:predict", &predict_body(row))
                    .await
            })
        })
        .collect();
    wait_until("two queued requests", || async {
        queue_length(&server).await == Some(2.0)
    })
    .await;

    let refused = server
        .client
        .post(server.url("/v1/models/overloaded:predict"))
        .json(&predict_body(IRIS_ROWS[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("overloaded"),
        "{body}"
    );
    // The V2 endpoint refuses before it even reads the body.
    let (status, body) = server
        .post_json(
            "/v2/models/overloaded/infer",
            &json!({ "inputs": [{ "name": "input", "datatype": "FP32", "shape": [1, 4], "data": IRIS_ROWS[2] }] }),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    // Refused promptly: the requests ahead of it are still waiting for their batch.
    assert!(waiting.iter().all(|w| !w.is_finished()));

    // A keep-alive HTTP/1.1 client that sends a large body without waiting for
    // `100 Continue` reads the 429 too (its body is read and discarded, not left to
    // a reset), and its connection serves its next request.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut body = serde_json::to_vec(&json!({ "inputs": [{ "name": "input",
            "datatype": "FP32", "shape": [1, 4], "data": IRIS_ROWS[2] }] }))
        .unwrap();
        body.extend(std::iter::repeat_n(b' ', 2 << 20));
        let mut conn = tokio::net::TcpStream::connect(server.rest_addr)
            .await
            .unwrap();
        let head = format!(
            "POST /v2/models/overloaded/infer HTTP/1.1\r\nhost: localhost\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&body)
            .await
            .expect("the server read the body");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("overloaded") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(text.starts_with("http/1.1 429"), "{text}");
        assert!(text.contains("retry-after: 1"), "{text}");
        assert!(!text.contains("connection: close"), "{text}");
        conn.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut next = Vec::new();
        while !String::from_utf8_lossy(&next).contains("\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed after the 429");
            next.extend_from_slice(&buf[..n]);
        }
        assert!(
            String::from_utf8_lossy(&next).starts_with("HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&next)
        );
    }

    // Both queued requests ran as one batch, each getting its own row back.
    let mut labels = Vec::new();
    for w in waiting {
        let (status, body) = w.await.unwrap();
        assert_eq!(status, 200, "{body}");
        labels.push(body["predictions"][0].clone());
    }
    assert_ne!(labels[0], labels[1], "setosa and versicolor rows");

    // The batch's run time is recorded once its answers are sent: read until it is.
    let wanted = [
        "ferroserve_rejected_total{model=\"overloaded\",version=\"1\"} 3",
        // Refused once a version was chosen: the metric names it.
        "ferroserve_requests_total{model=\"overloaded\",version=\"1\",protocol=\"v2_rest\",outcome=\"resource_exhausted\"} 2",
        "ferroserve_requests_total{model=\"overloaded\",version=\"1\",protocol=\"tfs_rest\",outcome=\"resource_exhausted\"} 1",
        "ferroserve_batch_size_bucket{model=\"overloaded\",version=\"1\",le=\"2\"} 1",
        "ferroserve_queue_duration_seconds_count{model=\"overloaded\",version=\"1\"} 2",
        "ferroserve_compute_duration_seconds_count{model=\"overloaded\",version=\"1\"} 1",
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, metrics) = server.get("/metrics").await;
        let metrics = metrics.as_str().unwrap().to_string();
        let missing: Vec<_> = wanted.iter().filter(|w| !metrics.contains(*w)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing:?} not in\n{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Arc::try_unwrap(server).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_answers_match_unbatched_ones() {
    let plain = repo_with_config("iris_lr", "");
    let batched = repo_with_config(
        "iris_lr",
        "[batching]\nenabled = true\nmax_batch_size = 8\nmax_queue_delay_micros = 20000\n",
    );
    let mut answers = Vec::new();
    for repo in [&plain, &batched] {
        let server = Arc::new(TestServer::start(repo.path()).await);
        let calls: Vec<_> = (0..12)
            .map(|i| {
                let server = server.clone();
                let row = IRIS_ROWS[i % 3];
                tokio::spawn(async move {
                    server
                        .post_json(
                            "/v2/models/iris_lr/infer",
                            &json!({ "inputs": [{ "name": "input", "datatype": "FP32", "shape": [1, 4], "data": row }] }),
                        )
                        .await
                })
            })
            .collect();
        let mut outputs = Vec::new();
        for c in calls {
            let (status, body) = c.await.unwrap();
            assert_eq!(status, 200, "{body}");
            outputs.push(body["outputs"].clone());
        }
        answers.push(outputs);
        Arc::try_unwrap(server).ok().unwrap().stop().await;
    }
    // The same labels; probabilities equal to float rounding (ONNX Runtime may
    // take another vectorised path for a batch than for one row).
    for (plain, batched) in answers[0].iter().zip(&answers[1]) {
        assert_eq!(plain[0], batched[0], "labels");
        let probs = |v: &Value| -> Vec<f64> {
            v[1]["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        for (p, b) in probs(plain).iter().zip(probs(batched)) {
            common::assert_close(b, *p, 1e-5, "probability");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unloaded_version_drains_its_queue() {
    // Requests wait 1 s for a batch; the model is unloaded while they wait.
    let repo = repo_with_config(
        "draining",
        "[batching]\nenabled = true\nmax_batch_size = 64\nmax_queue_delay_micros = 1000000\n",
    );
    let settings = test_settings(repo.path());
    let manager = Arc::new(Manager::new(ferroserve::server::backend_options(&settings)));
    {
        let sources = ferroserve::sources::Sources::new(manager.clone(), repo.path().to_path_buf());
        tokio::task::spawn_blocking(move || sources.initial_load())
            .await
            .unwrap();
    }
    let state = Arc::new(ServerState::new(settings, manager.clone()));
    let handle = manager
        .resolve("draining", &VersionRequest::Latest)
        .expect("draining loaded");
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let state = state.clone();
            tokio::spawn(async move {
                let mut request =
                    PredictRequest::new("draining", VersionRequest::Latest, Protocol::V2Rest);
                let row = Tensor::new(vec![1, 4], TensorData::F32(IRIS_ROWS[i % 3].to_vec()));
                request.inputs = vec![("input".into(), row.unwrap())];
                api::predict(&state, request).await
            })
        })
        .collect();
    wait_until("five queued requests", || {
        let n = handle.queue.len();
        async move { n == 5 }
    })
    .await;
    drop(handle);

    let unloader = manager.clone();
    tokio::task::spawn_blocking(move || unloader.unload_model("draining"))
        .await
        .unwrap();
    let version_state = |m: &Manager| {
        m.model_record("draining")
            .and_then(|r| r.versions.get(&1).map(|v| v.state))
    };
    assert_eq!(version_state(&manager), Some(VersionState::Unloading));
    // New requests no longer reach it...
    let mut late = PredictRequest::new("draining", VersionRequest::Latest, Protocol::V2Rest);
    late.inputs = vec![(
        "input".into(),
        Tensor::new(vec![1, 4], TensorData::F32(IRIS_ROWS[0].to_vec())).unwrap(),
    )];
    assert!(matches!(
        api::predict(&state, late).await,
        Err(ApiError::NotFound(_))
    ));
    // ...but every queued one is answered by it.
    for c in calls {
        let response = c.await.unwrap().expect("a queued request finishes");
        assert_eq!(response.version(), 1);
    }
    assert!(matches!(
        version_state(&manager),
        Some(VersionState::End) | None
    ));
    state.inference.shutdown();
}
