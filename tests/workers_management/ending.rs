//! Ending a deployment: `stop_deployment` under load, past the management timeout,
//! with its client gone, during a deploy; config lists that leave a deployed model
//! out.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_deployment_under_load_brings_the_model_back_in_process() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(repo.path(), port_range(20), &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);

    // An upload to a deployed model reaches its worker, never this process.
    let uploaded = now_ms();
    let model_file = std::fs::read(root_path("examples/models/iris_dt/1/model.onnx")).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("model_id", "iris")
        .part(
            "file",
            reqwest::multipart::Part::bytes(model_file).file_name("iris.onnx"),
        );
    let (code, body) = send(
        reqwest::Client::new()
            .post(server.url("/upload_model"))
            .multipart(form),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 2, "{body}");
    // Answered once the worker serves it, as in-process.
    assert_eq!(
        body["message"], "model iris version 2 uploaded and served",
        "{body}"
    );
    assert_eq!(body["model"]["served_versions"], json!([2]), "{body}");
    wait_registry(&server, "iris", Duration::from_secs(20), |e| {
        e["served_versions"] == json!([2])
    })
    .await;
    let states = in_process_states(&server, "iris", uploaded).await;
    assert!(states.is_empty(), "loaded in-process: {states:?}");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for path in ["/predict", "/v1/models/iris:predict", "/v1/models/iris"] {
        let (stop, url) = (stop.clone(), server.url(path));
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let request = if url.ends_with(":predict") {
                    client.post(&url).json(&json!({"instances": [ROW]}))
                } else if url.ends_with("/predict") {
                    client
                        .post(&url)
                        .json(&json!({"model_id": "iris", "features": ROW}))
                } else {
                    client.get(&url)
                };
                let r = request.send().await.unwrap();
                let code = r.status().as_u16();
                answers.push((code, r.text().await.unwrap()));
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let since = now_ms();
    let (code, body) = send(reqwest::Client::new().post(server.url("/stop_deployment/iris"))).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["in_process"], true, "{body}");
    assert_eq!(body["stopped"], false, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.unwrap());
    }
    let failed: Vec<_> = answers.iter().filter(|(code, _)| *code != 200).collect();
    assert!(!answers.is_empty() && failed.is_empty(), "{failed:?}");

    // The worker is gone; the model is this process's again (loaded before the
    // switch), and stays so after a restart of the main server.
    assert_gone(&[pid], Duration::from_secs(15));
    assert_eq!(get(server.url("/registry/services/iris")).await.0, 404);
    let status = model_status(&server, "iris").await;
    assert!(status["worker"].is_null(), "{status}");
    assert!(status["deployment"].is_null(), "{status}");
    assert_eq!(status["served_versions"], json!([2]), "{status}");
    let states = in_process_states(&server, "iris", since).await;
    assert!(
        states.iter().any(|e| e["detail"]["to"] == "AVAILABLE"),
        "not loaded in-process: {states:?}"
    );
    // stop_deployment of a model served in-process stops it, as before.
    let (code, body) = send(reqwest::Client::new().post(server.url("/stop_deployment/iris"))).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["stopped"], true, "{body}");
    let (code, _) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_left_out_of_a_reloaded_config_loses_its_worker() {
    use ferroserve_proto::tensorflow::serving::model_service_client::ModelServiceClient;
    use ferroserve_proto::tensorflow::serving::{self as tfs};

    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(repo.path(), "other", "examples/models/iris_dt/1/model.onnx");
    let (server, grpc_port) = start_server_with_grpc(repo.path(), port_range(20), &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    let mut models = ModelServiceClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .unwrap();
    let reload = |names: &[&str]| tfs::ReloadConfigRequest {
        config: Some(tfs::ModelServerConfig {
            config: Some(tfs::model_server_config::Config::ModelConfigList(
                tfs::ModelConfigList {
                    config: names
                        .iter()
                        .map(|n| tfs::ModelConfig {
                            name: n.to_string(),
                            model_platform: "onnx".into(),
                            ..Default::default()
                        })
                        .collect(),
                },
            )),
        }),
    };
    let predict = |model: &str| {
        let url = server.url("/predict");
        let body = json!({"model_id": model, "features": ROW});
        async move { post(url, &body).await.0 }
    };

    // A list without iris: its worker goes, with its deployment, as a stop would.
    models
        .handle_reload_config_request(reload(&["other"]))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", server.log()));
    assert_gone(&[pid], Duration::from_secs(15));
    assert_eq!(get(server.url("/registry/services/iris")).await.0, 404);
    let (code, list) = get(server.url("/registry/services")).await;
    assert_eq!((code, &list["services"]), (200, &json!([])), "{list}");
    assert_eq!(predict("iris").await, 404);
    assert_eq!(predict("other").await, 200);

    // Listed again, it serves again, in this process (its deployment ended).
    models
        .handle_reload_config_request(reload(&["iris", "other"]))
        .await
        .unwrap();
    assert_eq!(predict("iris").await, 200);
    let status = model_status(&server, "iris").await;
    assert!(status["worker"].is_null(), "{status}");
    assert!(status["deployment"].is_null(), "{status}");
    assert_eq!(get(server.url("/registry/services/iris")).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_deployment_past_the_management_timeout_changes_nothing() {
    let repo = tempfile::tempdir().unwrap();
    install(
        repo.path(),
        "hog",
        "tests/fixtures/onnx/memory_hog/model.onnx",
    );
    // A slow load: its warm-up is 100 requests that each allocate and fill 64 MiB.
    let warmup: Vec<Value> = (0..100).map(|_| json!({"mib": [64]})).collect();
    std::fs::write(
        repo.path().join("hog/1/warmup.json"),
        serde_json::to_string(&warmup).unwrap(),
    )
    .unwrap();
    let server = start_server(
        repo.path(),
        port_range(20),
        &["--management-timeout", "0.2"],
    )
    .await;
    let (code, answer) = deploy(&server, json!({"model_id": "hog"})).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let pid = pid_of(&answer);
    let predict = || {
        let url = server.url("/v2/models/hog/infer");
        let body =
            json!({"inputs": [{"name": "mib", "datatype": "INT64", "shape": [1], "data": [1]}]});
        async move { post(url, &body).await }
    };
    assert_eq!(predict().await.0, 200);

    let since = now_ms();
    let (code, body) = send(reqwest::Client::new().post(server.url("/stop_deployment/hog"))).await;
    assert_eq!(code, 504, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("nothing changed"), "{body}");
    assert!(error.contains("stays deployed"), "{body}");
    // What the answer says holds while the load runs on (the model is busy: the
    // worker serves it), and after it finished (it is undone: loaded, then
    // unloaded here).
    let consistent = |when: &str, entry: &Value, status: &Value| {
        assert_eq!(entry["pid"], json!(pid), "{when}: {entry}");
        assert_eq!(entry["state"], "ready", "{when}: {entry}");
        assert!(!status["worker"].is_null(), "{when}: {status}");
    };
    let status = model_status(&server, "hog").await;
    consistent("at once", &registry(&server, "hog").await, &status);
    assert_eq!(status["busy"], true, "{status}");
    assert_eq!(predict().await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = in_process_states(&server, "hog", since).await;
        let to = |s: &str| states.iter().any(|e| e["detail"]["to"] == s);
        // Undone, and the model's lock released.
        if to("AVAILABLE") && to("END") && model_status(&server, "hog").await["busy"] == false {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the in-process load was not undone: {states:?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = model_status(&server, "hog").await;
    consistent("after the load", &registry(&server, "hog").await, &status);
    assert!(!status["deployment"].is_null(), "{status}");
    assert_eq!(predict().await.0, 200);
    assert!(alive(pid));

    // The store says so too: after a restart of the main server the model is
    // deployed again, in a worker.
    drop(server);
    assert_gone(&[pid], Duration::from_secs(15));
    let server = start_server(repo.path(), port_range(20), &[]).await;
    let entry = wait_registry(&server, "hog", Duration::from_secs(60), |e| {
        e["state"] == "ready"
    })
    .await;
    assert_ne!(pid_of(&entry), pid);
    assert!(!model_status(&server, "hog").await["deployment"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_left_out_of_a_changed_config_file_loses_its_worker() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(repo.path(), "other", "examples/models/iris_dt/1/model.onnx");
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("models.config");
    let write_config = |names: &[&str]| {
        let entries: String = names
            .iter()
            .map(|n| {
                format!(
                    "  config {{ name: \"{n}\" base_path: \"{}\" model_platform: \"onnx\" }}\n",
                    repo.path().join(n).display()
                )
            })
            .collect();
        // Written whole, then renamed: the watcher never reads half a file.
        let staged = config_dir.path().join("models.config.new");
        std::fs::write(&staged, format!("model_config_list {{\n{entries}}}\n")).unwrap();
        std::fs::rename(&staged, &config).unwrap();
    };
    write_config(&["iris", "other"]);
    let server = start_server(
        repo.path(),
        port_range(20),
        &[
            "--model-config-file",
            config.to_str().unwrap(),
            "--model-config-file-poll-wait-seconds",
            "0.2",
        ],
    )
    .await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let pid = pid_of(&answer);

    write_config(&["other"]);
    assert_gone(&[pid], Duration::from_secs(15));
    assert_eq!(get(server.url("/registry/services/iris")).await.0, 404);
    let predict = |model: &str| {
        let url = server.url("/predict");
        let body = json!({"model_id": model, "features": ROW});
        async move { post(url, &body).await.0 }
    };
    assert_eq!(predict("iris").await, 404);
    assert_eq!(predict("other").await, 200);
}

/// A management call whose client leaves once it has begun to change things runs to
/// its end: here `stop_deployment`, whose client gives up after the model loaded back
/// in process, while the worker is handed back (forwarding stops, then a grace
/// moment, then the worker drains). The worker must go, the model serve in process,
/// the audit trail and the store say so (a restart keeps it in process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_deployment_whose_client_leaves_still_ends_its_worker() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let ports = port_range(20);
    let server = start_server(repo.path(), ports, &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let pid = pid_of(&answer);

    // The client's own timeout fires before the hand-back's grace moment is over.
    let gave_up = reqwest::Client::new()
        .post(server.url("/stop_deployment/iris"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        gave_up.as_ref().is_err_and(|e| e.is_timeout()),
        "the stop answered before its client left: {gave_up:?}"
    );

    assert_gone(&[pid], Duration::from_secs(15));
    // The stop's last step is its audit event, after the worker is gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let status = model_status(&server, "iris").await;
        let audited = status["recent_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "stop" && e["detail"]["deployment"] == "ended");
        if audited {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the stop is not in the audit trail: {status}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status["worker"].is_null(), "{status}");
    assert!(status["deployment"].is_null(), "{status}");
    assert_eq!(status["served_versions"], json!([1]), "{status}");
    assert_eq!(get(server.url("/registry/services/iris")).await.0, 404);
    let body = json!({"model_id": "iris", "features": ROW});
    assert_eq!(post(server.url("/predict"), &body).await.0, 200);

    // The store says so too: after a restart the model serves in process.
    drop(server);
    let server = start_server(repo.path(), ports, &[]).await;
    assert_eq!(post(server.url("/predict"), &body).await.0, 200);
    let status = model_status(&server, "iris").await;
    assert!(status["worker"].is_null(), "{status}");
    assert!(status["deployment"].is_null(), "{status}");
}

/// `stop_deployment` sent while a deploy of the model is starting its worker waits
/// for that deploy (the model's lock) and then decides: the model is deployed by
/// then, so it comes back in-process. It used to decide before the lock ("not
/// deployed"), then stop the new worker and mark the model stopped: every predict
/// 404 "is stopped". Either order leaves the model served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_deployment_during_a_deploy_leaves_the_model_served() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "dt", "examples/models/iris_dt/1/model.onnx");
    let server = start_server(repo.path(), port_range(20), &[]).await;
    wait_predicts(&server, "dt").await;
    let deploying = {
        let url = server.url("/deploy");
        tokio::spawn(async move { post(url, &json!({"model_id": "dt"})).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (code, stop) = send(reqwest::Client::new().post(server.url("/stop_deployment/dt"))).await;
    assert_eq!(code, 200, "{stop}");
    let (code, deployed) = deploying.await.unwrap();
    assert_eq!(code, 200, "{deployed}");
    // The deploy had the lock first: the stop found the model deployed.
    assert_eq!(stop["stopped"], false, "{stop}");
    assert_eq!(stop["in_process"], true, "{stop}");
    let (code, body) = post(
        server.url("/predict"),
        &json!({"model_id": "dt", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_gone(&[pid_of(&deployed)], Duration::from_secs(15));
    assert_eq!(get(server.url("/registry/services/dt")).await.0, 404);
    let status = model_status(&server, "dt").await;
    assert!(status["deployment"].is_null(), "{status}");
}
