//! Redeploys and main-server restarts: the worker replaced, restored, or served in
//! process when it cannot start; not ready during the shutdown delay.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploys_replace_the_worker_and_a_restart_restores_it() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let ports = port_range(20);
    let mut server = start_server(repo.path(), ports, &[]).await;
    let (code, first) = deploy(
        &server,
        json!({"model_id": "iris", "resources": {"cpu_limit": "1"}}),
    )
    .await;
    assert_eq!(code, 200, "{first}");

    // Deploying again with new resources: a new worker, no failed request meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client_task = {
        let (stop, url) = (stop.clone(), server.url("/predict"));
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut codes = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client
                    .post(&url)
                    .json(&json!({"model_id": "iris", "features": ROW}))
                    .send()
                    .await
                    .unwrap();
                codes.push(r.status().as_u16());
            }
            codes
        })
    };
    let (code, second) = deploy(
        &server,
        json!({"model_id": "iris", "resources": {"cpu_limit": "2", "memory_limit": "1Gi"}}),
    )
    .await;
    assert_eq!(code, 200, "{second}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let codes = client_task.await.unwrap();
    assert!(
        !codes.is_empty() && codes.iter().all(|c| *c == 200),
        "{codes:?}"
    );
    assert_ne!(second["pid"], first["pid"]);
    assert_eq!(second["resources"]["memory_limit"], "1Gi");
    assert_gone(&[pid_of(&first)], Duration::from_secs(15));
    let port = second["port"].clone();

    // The main server stops: so does its worker. It starts again: so does the worker,
    // on the same port.
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
    assert_gone(&[pid_of(&second)], Duration::from_secs(5));
    drop(server);
    let restarted = now_ms();
    let server = start_server(repo.path(), ports, &[]).await;
    let entry = wait_registry(&server, "iris", Duration::from_secs(30), |e| {
        e["state"] == "ready"
    })
    .await;
    // Served by its worker alone: the main server never loaded it (its initial load
    // is over once it answers ready).
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(server.url("/v2/health/ready")).await.0 != 200 {
        assert!(Instant::now() < deadline, "main server never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let states = in_process_states(&server, "iris", restarted).await;
    assert!(states.is_empty(), "loaded in-process: {states:?}");
    assert_eq!(entry["port"], port, "{entry}");
    assert_eq!(entry["resources"]["memory_limit"], "1Gi");
    let (code, _) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200);
    let pid = pid_of(&entry);
    drop(server);
    assert_gone(&[pid], Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_whose_worker_cannot_start_at_a_restart_is_served_in_process() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let ports = port_range(1);
    let mut server = start_server(repo.path(), ports, &[]).await;
    let (code, first) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{first}");
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
    assert_gone(&[pid_of(&first)], Duration::from_secs(5));
    drop(server);

    // Something else holds the one worker port when the server starts again: the
    // model is served here rather than not at all, and the audit trail says why.
    let taken = std::net::TcpListener::bind(("127.0.0.1", ports.0)).unwrap();
    let server = start_server(repo.path(), ports, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(server.url("/v2/health/ready")).await.0 != 200 {
        assert!(Instant::now() < deadline, "main server never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, answer) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    let status = model_status(&server, "iris").await;
    assert_eq!(status["served"], true, "{status}");
    assert!(
        status["recent_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "deploy"
                && e["detail"]["worker"]
                    .as_str()
                    .is_some_and(|w| w.contains("no free worker port"))),
        "{status}"
    );
    // Deployed again once the port is free: in its worker.
    drop(taken);
    let (code, second) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{second}");
    let (code, _) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200);
    let pid = pid_of(&second);
    drop(server);
    assert_gone(&[pid], Duration::from_secs(10));
}

/// From SIGTERM, through the shutdown delay, a deployed model is not ready either
/// (the main server is not): REST model readiness is answered 503 by the main
/// server, not forwarded to the still-serving worker; gRPC `ModelReady` is false
/// and its health NOT_SERVING; predictions are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_shutdown_delay_a_deployed_model_is_not_ready() {
    use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use ferroserve_proto::inference::ModelReadyRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let (mut server, grpc_port) =
        start_server_with_grpc(repo.path(), port_range(20), &["--shutdown-delay", "4"]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let mut v2 = GrpcInferenceServiceClient::new(channel);
    let health_of = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let model_ready = || ModelReadyRequest {
        name: "iris".into(),
        version: String::new(),
    };
    assert_eq!(get(server.url("/v2/models/iris/ready")).await.0, 200);
    assert!(v2.model_ready(model_ready()).await.unwrap().get_ref().ready);
    let status = health.check(health_of("iris")).await.unwrap();
    assert_eq!(status.get_ref().status, ServingStatus::Serving as i32);

    server.terminate();
    let deadline = Instant::now() + Duration::from_secs(3);
    while get(server.url("/v2/health/ready")).await.0 != 503 {
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for path in ["/v2/models/iris/ready", "/v2/models/iris/versions/1/ready"] {
        let (code, body) = get(server.url(path)).await;
        assert_eq!(code, 503, "{path}: {body}");
    }
    assert!(!v2.model_ready(model_ready()).await.unwrap().get_ref().ready);
    let status = health.check(health_of("iris")).await.unwrap();
    assert_eq!(status.get_ref().status, ServingStatus::NotServing as i32);
    let (code, body) = post(
        server.url("/v1/models/iris:predict"),
        &json!({"instances": [ROW]}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0));
}
