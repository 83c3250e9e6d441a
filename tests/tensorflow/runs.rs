//! Runs: requests of one signature batched together, a run past its deadline, and a
//! convolution of the wrong rank.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_a_named_signature_batch_together() {
    // Its own model name: the metrics registry is the process's, and other tests in
    // this binary serve "multi" at the same time.
    let repo = tempfile::tempdir().unwrap();
    copy_dir(
        &root_path("tests/fixtures/tensorflow/multi/1"),
        &repo.path().join("multi_batched/1"),
    );
    // Four one-row requests close a batch of four (a preferred size); the long delay
    // would show if they ran one by one.
    std::fs::write(
        repo.path().join("multi_batched/config.toml"),
        "[batching]\nenabled = true\nmax_batch_size = 4\npreferred_batch_sizes = [4]\n\
         max_queue_delay_micros = 5000000\n",
    )
    .unwrap();
    let server = TestServer::start_with(settings(repo.path())).await;
    assert_eq!(
        settled_status(&server, "multi_batched").await["state"],
        "AVAILABLE"
    );
    let started = Instant::now();
    let mut requests = Vec::new();
    for i in 0..4u8 {
        let (client, url) = (
            server.client.clone(),
            server.url("/v1/models/multi_batched:predict"),
        );
        let body = json!({
            "signature_name": "combine",
            "inputs": {"a": [[f64::from(i) + 0.5, -1.25]], "b": [[i, 200 - i]]},
        });
        requests.push(tokio::spawn(async move {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (
                status,
                serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap(),
            )
        }));
    }
    for (i, request) in requests.into_iter().enumerate() {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let i = i as f64;
        // Each request gets its own row back: a + b and max(b).
        assert_eq!(
            body["outputs"]["sum"],
            json!([[i + 0.5 + i, -1.25 + 200.0 - i]]),
            "{body}"
        );
        assert_eq!(body["outputs"]["max_b"], json!([200 - i as i64]), "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the batch waited for its delay: {:?}",
        started.elapsed()
    );
    let (_, metrics) = server.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("ferroserve_batch_size_count{model=\"multi_batched\",version=\"1\"} 1")
            && metrics
                .contains("ferroserve_batch_size_sum{model=\"multi_batched\",version=\"1\"} 4"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("batch_size"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    server.stop().await;
}

/// A run past its request's deadline is cancelled by TensorFlow (RunOptions'
/// timeout, as TF Serving passes it): it answered 504 but ran on, holding the
/// version's thread, so the next request waited for it (and timed out too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_deadline_is_cancelled_and_the_next_request_runs() {
    let repo = repo(&["slow"]);
    std::fs::write(repo.path().join("slow/config.toml"), "timeout_secs = 1.0\n").unwrap();
    let server = TestServer::start_with(Settings {
        inference_threads: 1,
        ..settings(repo.path())
    })
    .await;
    let exp = expected("slow");
    let (status, answer) = server
        .post_json("/v1/models/slow:predict", &json!({"instances": [3]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let mut got = Vec::new();
    flatten(&answer["predictions"], &mut got);
    assert_values(&got, &exp["serving_default"]["outputs"]["y"], "slow");
    // About a minute of matrix products, cut at the deadline.
    let started = std::time::Instant::now();
    let (status, answer) = server
        .post_json(
            "/v1/models/slow:predict",
            &json!({"instances": [50_000_000]}),
        )
        .await;
    assert_eq!(status, 504, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The thread is free again: a short run answers within its own second.
    let (status, answer) = server
        .post_json("/v1/models/slow:predict", &json!({"instances": [3]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await;
}

/// A convolution of a signature input of any rank, fed a tensor of rank 3, is
/// TensorFlow's 400, and the server goes on. TensorFlow's oneDNN kernels (on by
/// default in the tensorflow-cpu wheel) aborted the whole process on it (a CHECK in
/// `tensor_format.h`), and failed a max-pool of a 3x3 image with "could not create
/// a descriptor" (500), which TensorFlow's own kernels answer: the server turns
/// them off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_convolution_of_the_wrong_rank_is_400_and_the_server_goes_on() {
    let repo = repo(&["conv_any_rank"]);
    let mut server = child_server(repo.path()).await;
    let client = reqwest::Client::new();
    let url = server.url("/v1/models/conv_any_rank:predict");
    let post = |body: Value| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            match client.post(url).json(&body).send().await {
                Ok(r) => common::status_and_body(r).await,
                Err(e) => (0, json!({ "error": e.to_string() })),
            }
        }
    };
    let (status, answer) = post(json!({"inputs": {"x": [[[1.0], [2.0]], [[3.0], [4.0]]]}})).await;
    assert_eq!(status, 400, "{answer}; the server's log: {}", server.log());
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(message.contains("4-dimensional"), "{message}");

    let exp = expected("conv_any_rank");
    for signature in ["serving_default", "pool"] {
        let case = &exp[signature];
        let inputs: serde_json::Map<String, Value> = object(&case["inputs"], "inputs")
            .iter()
            .map(|(k, t)| (k.clone(), nest(data_of(t), &shape_of(t))))
            .collect();
        let (status, body) = post(json!({"signature_name": signature, "inputs": inputs})).await;
        assert_eq!(status, 200, "{signature}: {body}; {}", server.log());
        let outputs = object(&case["outputs"], "outputs");
        for (name, want) in outputs {
            let got = if outputs.len() == 1 {
                &body["outputs"]
            } else {
                &body["outputs"][name]
            };
            assert_nested(got, want, &format!("{signature} {name}"));
        }
    }
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "{}",
        server.log()
    );
}
