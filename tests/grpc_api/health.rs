//! grpc.health.v1 (Check and Watch) and model status over gRPC.

use super::*;

/// The next status a health `Watch` stream sends, within 10 s (after `what`).
async fn next_status(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    what: &str,
) -> i32 {
    tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .unwrap_or_else(|_| panic!("no Watch message after {what}"))
        .unwrap()
        .unwrap()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_server_and_models() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut health = HealthClient::new(server.grpc_channel().await);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    for service in [
        "",
        "inference.GRPCInferenceService",
        "tensorflow.serving.PredictionService",
        "iris_lr",
    ] {
        let r = health.check(check(service)).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    assert_eq!(
        health.check(check("nope")).await.unwrap_err().code(),
        Code::NotFound
    );
    let mut watch = health.watch(check("iris_lr")).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let mut unknown = health.watch(check("nope")).await.unwrap().into_inner();
    let first = unknown.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);

    // A model the server knew and unloaded is NOT_SERVING (a watcher was told of
    // it), not unknown; loaded again, it is SERVING again.
    let mut watch_dt = health.watch(check("iris_dt")).await.unwrap().into_inner();
    let first = watch_dt.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let mut repository = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    repository
        .repository_model_unload(v2::RepositoryModelUnloadRequest {
            model_name: "iris_dt".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next_status(&mut watch_dt, "the unload").await,
        ServingStatus::NotServing as i32
    );
    let r = health.check(check("iris_dt")).await.unwrap().into_inner();
    assert_eq!(r.status, ServingStatus::NotServing as i32);
    repository
        .repository_model_load(v2::RepositoryModelLoadRequest {
            model_name: "iris_dt".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next_status(&mut watch_dt, "the load").await,
        ServingStatus::Serving as i32
    );
    // An open Watch stream must not hold the server's shutdown open.
    server.stop().await;
}

/// From the stop signal, through the shutdown delay, no model is ready, as the
/// server is not: gRPC health of a model (as of the server), V2 `ModelReady` and
/// the REST model-ready routes, while requests are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_shutdown_delay_no_model_is_ready() {
    use ferroserve::server::{listen, run, Listeners};

    let repo = repo();
    let settings = Settings {
        shutdown_delay: Duration::from_secs(4),
        ..test_settings(repo.path())
    };
    let rest = listen(settings.rest_addr).unwrap();
    let grpc = listen(settings.grpc_addr).unwrap();
    let rest_url = format!("http://{}", rest.local_addr().unwrap());
    let grpc_url = format!("http://{}", grpc.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        settings,
        Listeners {
            rest,
            grpc: Some(grpc),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let status = |path: &'static str| {
        let request = http.get(format!("{rest_url}{path}"));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while status("/v2/health/ready").await != 200 {
        assert!(std::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = Channel::from_shared(grpc_url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let mut v2_client = GrpcInferenceServiceClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let model_ready = || v2::ModelReadyRequest {
        name: "iris_lr".into(),
        version: String::new(),
    };
    let health_of = |r: tonic_health::pb::HealthCheckResponse| r.status;
    assert_eq!(
        health_of(health.check(check("iris_lr")).await.unwrap().into_inner()),
        ServingStatus::Serving as i32
    );
    assert!(
        v2_client
            .model_ready(model_ready())
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert_eq!(status("/v2/models/iris_lr/ready").await, 200);

    stop.send(()).unwrap();
    while health_of(health.check(check("")).await.unwrap().into_inner())
        != ServingStatus::NotServing as i32
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for service in ["iris_lr", "iris_dt", "inference.GRPCInferenceService"] {
        assert_eq!(
            health_of(health.check(check(service)).await.unwrap().into_inner()),
            ServingStatus::NotServing as i32,
            "{service}"
        );
    }
    assert!(
        !v2_client
            .model_ready(model_ready())
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !v2_client
            .server_ready(v2::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    for path in [
        "/v2/health/ready",
        "/v2/models/iris_lr/ready",
        "/v2/models/iris_lr/versions/1/ready",
    ] {
        assert_eq!(status(path).await, 503, "{path}");
    }
    // Still answering for the delay.
    v2_client
        .model_infer(infer_request(
            "iris_lr",
            vec![v2_input(
                "input",
                "FP32",
                &[1, 4],
                f32_contents(&[vec![5.1, 3.5, 1.4, 0.2]]),
            )],
        ))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the server did not stop after its delay")
        .unwrap()
        .unwrap();
}

/// A model the server knows that serves no version (a `specific` policy naming
/// none on disk): TF Serving's GetModelStatus answers NOT_FOUND "Could not find any
/// versions of model <name>", and its REST status 404 with the same words;
/// ferroserve's own `/models/status` lists the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_model_serving_no_version_is_not_found() {
    let repo = repo();
    install_model(
        repo.path(),
        "none_served",
        1,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    std::fs::write(
        repo.path().join("none_served/config.toml"),
        "version_policy = { specific = [7] }\n",
    )
    .unwrap();
    let server = TestServer::start(repo.path()).await;
    let mut models = ModelServiceClient::new(server.grpc_channel().await);
    let status = models
        .get_model_status(tfs::GetModelStatusRequest {
            model_spec: spec("none_served"),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("Could not find any versions of model none_served"),
        "{status:?}"
    );
    let (code, body) = server.get("/v1/models/none_served").await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("Could not find any versions of model none_served"),
        "{body}"
    );
    let (code, body) = server.get("/models/status").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.to_string().contains("none_served"), "{body}");
    // A model that serves is listed as before.
    let ok = models
        .get_model_status(tfs::GetModelStatusRequest {
            model_spec: spec("iris_dt"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.model_version_status.len(), 1);
    server.stop().await;
}
