//! Tokens between the server and its workers, and what a worker answers on its own
//! port.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_server_reads_its_workers_and_clients_keep_their_scope() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let tokens = repo.path().join("tokens.toml");
    write_tokens(&tokens);
    let server = start_server(
        repo.path(),
        port_range(20),
        &["--auth-tokens", tokens.to_str().unwrap()],
    )
    .await;
    let client = reqwest::Client::new();
    let answer = deploy_iris_as_manager(&server, &client).await;
    let (pid, port) = (pid_of(&answer), answer["port"].as_u64().unwrap());

    // The registry shows what the worker says of its model: the main server reads
    // its status past the worker's tokens file, now and at every health check.
    let registry_entry = || async {
        let (code, entry) = send_with(
            client.get(server.url("/registry/services/iris")),
            Some(READER),
        )
        .await;
        assert_eq!(code, 200, "{entry}");
        entry
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let checked_after = Instant::now() + Duration::from_millis(2500);
    loop {
        let entry = registry_entry().await;
        let good = entry["state"] == "ready"
            && entry["healthy"] == true
            && entry["served_versions"] == json!([1])
            && entry["versions"][0]["state"] == "AVAILABLE";
        if good && Instant::now() > checked_after {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the registry does not show the worker's model: {entry}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, status) = send_with(client.get(server.url("/models/status")), Some(READER)).await;
    assert_eq!(code, 200, "{status}");
    let iris = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == "iris")
        .unwrap();
    assert_eq!(iris["served_versions"], json!([1]), "{status}");

    // Clients' tokens pass through: the main server and the worker both enforce them.
    let predict = json!({"model_id": "iris", "features": ROW});
    let worker = |path: &str| format!("http://127.0.0.1:{port}{path}");
    for url in [server.url("/predict"), worker("/predict")] {
        let (code, body) = send_with(client.post(&url).json(&predict), Some(READER)).await;
        assert_eq!(code, 200, "{url}: {body}");
        let (code, body) = send_with(client.post(&url).json(&predict), None).await;
        assert_eq!(code, 401, "{url}: {body}");
        let (code, body) = send_with(client.post(&url).json(&predict), Some("fst_wrong")).await;
        assert_eq!(code, 401, "{url}: {body}");
    }
    let instances = json!({"instances": [ROW]});
    let url = server.url("/v1/models/iris:predict");
    let (code, body) = send_with(client.post(&url).json(&instances), Some(READER)).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send_with(client.post(&url).json(&instances), None).await;
    assert_eq!(code, 401, "{body}");
    for path in ["/models/status", "/v1/models/iris"] {
        let (code, body) = send_with(client.get(worker(path)), None).await;
        assert_eq!(code, 401, "{path}: {body}");
    }
    // Open routes stay open through the main server.
    let (code, body) = send_with(client.get(server.url("/v2/models/iris/ready")), None).await;
    assert_eq!(code, 200, "{body}");

    // The supervisor's token reaches the worker in its environment only: not on its
    // command line, not in the registry, not in the logs, and it opens nothing on
    // the main server.
    let token = initial_env(pid, "FERROSERVE_SUPERVISOR_TOKEN").expect("the worker got a token");
    assert!(token.len() >= 40, "a short token");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&token));
    let (_, list) = send_with(client.get(server.url("/registry/services")), Some(READER)).await;
    assert!(!list.to_string().contains(&token), "{list}");
    assert!(!server.log().contains(&token));
    let (code, body) = send_with(client.get(worker("/models/status")), Some(&token)).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send_with(client.get(server.url("/models/status")), Some(&token)).await;
    assert_eq!(code, 401, "{body}");
}

/// `--metrics-require-token` holds on a worker's port as on the main server's: its
/// `/metrics`, the metrics' second path (`--monitoring_config_file`) and the
/// console's chart data need the `metrics` scope. A worker was started without the
/// setting (and without the second path), so they answered anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_the_metrics_behind_a_token() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let tokens = repo.path().join("tokens.toml");
    write_tokens(&tokens);
    let monitoring = repo.path().join("monitoring.config");
    std::fs::write(
        &monitoring,
        "prometheus_config { enable: true, path: \"/monitoring/prometheus/metrics\" }\n",
    )
    .unwrap();
    let server = start_server(
        repo.path(),
        port_range(20),
        &[
            "--auth-tokens",
            tokens.to_str().unwrap(),
            "--metrics-require-token",
            &format!("--monitoring_config_file={}", monitoring.display()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let answer = deploy_iris_as_manager(&server, &client).await;
    let port = answer["port"].as_u64().unwrap();
    let worker = format!("http://127.0.0.1:{port}");
    for base in [server.url(""), worker] {
        for path in [
            "/metrics",
            "/monitoring/prometheus/metrics",
            "/console/api/models/iris/metrics",
        ] {
            let url = format!("{base}{path}");
            // (token, status): none, a token without the scope, the scraper's.
            for (token, status) in [(None, 401), (Some(READER), 403), (Some(PROMETHEUS), 200)] {
                let (code, body) = send_with(client.get(&url), token).await;
                assert_eq!(code, status, "{url} with {token:?}: {body}");
            }
        }
    }
}

/// A worker's own port serves its model, never management: a deploy, a stop, a
/// reload, an upload, a delete or a repository load/unload sent to it (REST or
/// gRPC) is refused, whatever the token (a manager's, the supervisor's, none),
/// naming the main server, and the main server's deployment is untouched. A worker
/// took them with a management token (or from loopback): a deploy there changed the
/// worker's timeout behind the registry's back, a stop there left the main server
/// answering 404 for a model its registry called ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refuses_management_on_its_own_port() {
    use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use ferroserve_proto::inference::RepositoryModelUnloadRequest;
    use ferroserve_proto::tensorflow::serving as tfs;
    use ferroserve_proto::tensorflow::serving::model_service_client::ModelServiceClient;

    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let tokens = repo.path().join("tokens.toml");
    write_tokens(&tokens);
    let server = start_server(
        repo.path(),
        port_range(20),
        &["--auth-tokens", tokens.to_str().unwrap()],
    )
    .await;
    let client = reqwest::Client::new();
    let answer = deploy_iris_as_manager(&server, &client).await;
    let (pid, port) = (pid_of(&answer), answer["port"].as_u64().unwrap());
    let supervisor = initial_env(pid, "FERROSERVE_SUPERVISOR_TOKEN").unwrap();
    let worker = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let registry_entry = || async {
        let request = client.get(server.url("/registry/services/iris"));
        let (code, entry) = send_with(request, Some(READER)).await;
        assert_eq!(code, 200, "{entry}");
        entry
    };
    let main_url = server.url("");
    let refused = |code: u16, body: &Value, what: &str| {
        assert_eq!(code, 403, "{what}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("management goes through the main server at")
                && message.contains(main_url.trim_end_matches('/')),
            "{what}: {body}"
        );
    };
    let model_file = std::fs::read(root_path("examples/models/iris_lr/1/model.onnx")).unwrap();
    for token in [Some(MANAGER), Some(supervisor.as_str()), None] {
        let what = |route: &str| format!("{route} with {:?}", token.map(|t| &t[..8]));
        let requests = [
            (
                "deploy",
                client
                    .post(worker("/deploy"))
                    .json(&json!({"model_id": "iris", "resources": {"timeout": 0.5}})),
            ),
            ("stop", client.post(worker("/stop_deployment/iris"))),
            ("reload", client.post(worker("/reload_model"))),
            ("delete", client.delete(worker("/delete_model/iris"))),
            (
                "unload",
                client.post(worker("/v2/repository/models/iris/unload")),
            ),
            (
                "upload",
                client.post(worker("/upload_model")).multipart(
                    reqwest::multipart::Form::new()
                        .text("model_id", "iris")
                        .part(
                            "file",
                            reqwest::multipart::Part::bytes(model_file.clone())
                                .file_name("iris.onnx"),
                        ),
                ),
            ),
        ];
        for (route, request) in requests {
            let (code, body) = send_with(request, token).await;
            refused(code, &body, &what(route));
        }
    }
    // gRPC too, on the worker's own gRPC port.
    let grpc_port = registry_entry().await["grpc_port"].as_u64().unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    fn with_manager<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {MANAGER}").parse().unwrap(),
        );
        request
    }
    let status = ModelServiceClient::new(channel.clone())
        .handle_reload_config_request(with_manager(tfs::ReloadConfigRequest {
            config: Some(tfs::ModelServerConfig {
                config: Some(tfs::model_server_config::Config::ModelConfigList(
                    tfs::ModelConfigList { config: vec![] },
                )),
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("main server"), "{status:?}");
    let status = GrpcInferenceServiceClient::new(channel)
        .repository_model_unload(with_manager(RepositoryModelUnloadRequest {
            model_name: "iris".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // What the main server needs of its worker still answers it, and the
    // deployment is as the main server made it: same worker, no timeout, serving.
    let (code, body) = send_with(client.get(worker("/models/status")), Some(&supervisor)).await;
    assert_eq!(code, 200, "{body}");
    let entry = registry_entry().await;
    assert_eq!(pid_of(&entry), pid, "{entry}");
    assert_eq!(entry["state"], "ready", "{entry}");
    assert_eq!(entry["limits"]["timeout_secs"], Value::Null, "{entry}");
    let predict = json!({"model_id": "iris", "features": ROW});
    for url in [server.url("/predict"), worker("/predict")] {
        let (code, body) = send_with(client.post(&url).json(&predict), Some(READER)).await;
        assert_eq!(code, 200, "{url}: {body}");
    }
    let (code, history) = send_with(
        client.get(server.url("/v1/models/iris/history")),
        Some(MANAGER),
    )
    .await;
    assert_eq!(code, 200, "{history}");
    let deploys = history.to_string().matches("\"deploy\"").count();
    assert!(
        deploys <= 1,
        "a deploy on the worker reached the history: {history}"
    );
}

/// A worker tells what it is on its own port, where clients may call it. Its
/// `/models/status` shows its model's deployment as the supervisor applied it to
/// the worker (the main server's word: CPU and memory limits given and enforced;
/// they were shown absent and not enforced). Its console says whose worker it is,
/// links the main server and offers no management (it offered Deploy and Upload
/// forms that could only be refused, and said workers were off with the limits
/// not applied). Its `/registry/services` points at the main server's registry (it
/// said `--worker-ports off`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_describes_itself_on_its_own_port() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(repo.path(), port_range(4), &[]).await;
    let (code, answer) = deploy(
        &server,
        json!({"model_id": "iris", "environment": "staging",
               "resources": {"cpu_limit": "500m", "memory_limit": "256Mi", "timeout": 2}}),
    )
    .await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let port = answer["port"].as_u64().unwrap();
    let worker = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let main_url = server.url("").trim_end_matches('/').to_string();

    // Its status: the deployment as the main server and its registry report it.
    let main_entry = model_status(&server, "iris").await;
    let registry_entry = registry(&server, "iris").await;
    let (code, status) = get(worker("/models/status")).await;
    assert_eq!(code, 200, "{status}");
    let own = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == "iris")
        .unwrap_or_else(|| panic!("iris not in {status}"))
        .clone();
    let deployment = &own["deployment"];
    assert_eq!(deployment, &main_entry["deployment"], "{own}");
    assert_eq!(deployment["environment"], "staging", "{own}");
    assert_eq!(
        deployment["resources"],
        json!({"cpu_limit": "500m", "memory_limit": "256Mi", "timeout": 2.0}),
        "{own}"
    );
    assert_eq!(
        deployment["enforced"],
        json!({"cpu_limit": true, "memory_limit": true, "timeout": true}),
        "{own}"
    );
    assert_eq!(deployment["enforcement"], registry_entry["enforcement"]);
    assert_eq!(deployment["resources"], registry_entry["resources"]);

    // Its console: whose worker it is, the main server's link, no management.
    let (code, page) = send_text(worker("/console/models/iris")).await;
    assert_eq!(code, 200, "{page}");
    for says in [
        "worker process of model <span class=\"mono\">iris</span>",
        &format!("href=\"{main_url}/console\""),
        &format!("href=\"{main_url}/console/models/iris\""),
        "goes through the main server",
    ] {
        assert!(page.contains(says), "{says:?} not in {page}");
    }
    for offer in [
        "id=\"deploy-form\"",
        "data-action=\"reload\"",
        "data-action=\"stop\"",
        "data-action=\"delete\"",
        "Workers are off",
        "not applied",
    ] {
        assert!(!page.contains(offer), "{offer:?} in {page}");
    }
    let (code, page) = send_text(worker("/console")).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("id=\"worker-note\""), "{page}");
    assert!(!page.contains("id=\"upload-form\""), "{page}");
    let (code, page) = send_text(worker("/console/jobs")).await;
    assert_eq!(code, 200, "{page}");
    assert!(!page.contains("/console/fragments/jobs"), "{page}");
    let (code, fragment) = send_text(worker("/console/fragments/models/iris")).await;
    assert_eq!(code, 200, "{fragment}");
    assert!(!fragment.contains("not applied"), "{fragment}");
    for applied in [
        "500m (enforced",
        "256Mi (enforced",
        "2 s (enforced",
        "staging",
    ] {
        assert!(fragment.contains(applied), "{applied:?} not in {fragment}");
    }

    // Its registry routes name the main server's registry.
    for path in ["/registry/services", "/registry/services/iris"] {
        let (code, body) = get(worker(path)).await;
        assert_eq!(code, 404, "{path}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("model \"iris\"'s worker process")
                && message.contains(&format!("{main_url}/registry/services"))
                && !message.contains("--worker-ports off"),
            "{path}: {body}"
        );
    }

    // The main server's own console still offers what it takes.
    let (code, page) = send_text(server.url("/console/models/iris")).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("id=\"deploy-form\""), "{page}");
    assert!(!page.contains("worker-note"), "{page}");
}
