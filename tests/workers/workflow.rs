//! The old service's workflow in a worker process, and what a deployed model is:
//! served only by its worker, refused at once when its worker cannot load it.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_workflow_runs_in_a_worker_process() {
    let repo = tempfile::tempdir().unwrap();
    let ports = port_range(20);
    let server = start_server(repo.path(), ports, &[]).await;
    let client = reqwest::Client::new();

    // Upload, as the old client did.
    let model_file = std::fs::read(root_path("examples/models/iris_lr/1/model.onnx")).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("model_id", "iris")
        .part(
            "file",
            reqwest::multipart::Part::bytes(model_file).file_name("iris.onnx"),
        );
    let (code, body) = send(client.post(server.url("/upload_model")).multipart(form)).await;
    assert_eq!(code, 200, "{body}");
    let (code, in_process) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200, "{in_process}");

    // Bad resources name the field; unknown models are 404.
    let (code, body) = deploy(
        &server,
        json!({"model_id": "iris", "resources": {"memory_limit": "lots"}}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("resources.memory_limit"),
        "{body}"
    );
    let (code, body) = deploy(
        &server,
        json!({"model_id": "iris", "resources": {"cpu_limit": "two"}}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("resources.cpu_limit"),
        "{body}"
    );
    assert_eq!(deploy(&server, json!({"model_id": "nope"})).await.0, 404);
    // ... and leaves no row behind in the store.
    assert_eq!(common::stored_settings_rows(repo.path(), "nope").await, 0);

    // Deploy: the old service's answer, a process of its own on a port of the range.
    let (code, answer) = deploy(
        &server,
        json!({"model_id": "iris", "environment": "production",
               "resources": {"cpu_limit": "1", "memory_limit": "512Mi", "timeout": 10}}),
    )
    .await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    for field in [
        "message",
        "service_url",
        "port",
        "pid",
        "model_id",
        "environment",
        "resources",
    ] {
        assert!(!answer[field].is_null(), "{field} missing: {answer}");
    }
    assert_eq!(answer["model_id"], "iris");
    assert_eq!(answer["environment"], "production");
    assert_eq!(answer["resources"]["memory_limit"], "512Mi");
    let port = answer["port"].as_u64().unwrap() as u16;
    assert!((ports.0..=ports.1).contains(&port), "{answer}");
    let pid = pid_of(&answer);
    assert_ne!(
        pid,
        u64::from(server.pid()),
        "the worker is another process"
    );
    assert!(alive(pid));
    assert_eq!(
        answer["enforced"],
        json!({"cpu_limit": true, "memory_limit": true, "timeout": true})
    );
    assert_eq!(
        answer["service_url"],
        format!("http://127.0.0.1:{port}/predict/iris")
    );

    // Predict through the main service (forwarded) and on the worker's own port.
    let (code, forwarded) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200, "{forwarded}");
    assert_eq!(forwarded["prediction"], in_process["prediction"]);
    let (code, direct) = post(
        format!("http://127.0.0.1:{port}/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(
        (code, &direct["prediction"]),
        (200, &in_process["prediction"]),
        "{direct}"
    );
    let (code, tfs) = post(
        server.url("/v1/models/iris:predict"),
        &json!({"instances": [ROW]}),
    )
    .await;
    assert_eq!(code, 200, "{tfs}");
    // A small body with a declared length is forwarded from the predict fast path
    // (`http::fast`), a chunked one by the router's forwarding layer: the same
    // answers, from the worker (the main server holds no copy of the model).
    let row = "[5.1, 3.5, 1.4, 0.2]";
    let v2 = format!(
        r#"{{"inputs": [{{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": {row}}}]}}"#
    );
    for (path, body) in [
        (
            "/v1/models/iris:predict",
            format!(r#"{{"instances": [{row}]}}"#),
        ),
        (
            "/v1/models/iris/versions/1:predict",
            format!(r#"{{"instances": [{row}]}}"#),
        ),
        ("/v2/models/iris/infer", v2.clone()),
        ("/v2/models/iris/versions/1/infer", v2),
        ("/predict/iris", format!(r#"{{"features": {row}}}"#)),
        (
            "/v1/models/iris:predict",
            r#"{"instances": [[1.0]]}"#.to_string(),
        ),
    ] {
        let fast = timeless(raw_post(server.rest, path, &body, false).await);
        let routed = timeless(raw_post(server.rest, path, &body, true).await);
        assert_eq!(fast, routed, "{path} {body}");
        let worker = format!("127.0.0.1:{port}").parse().unwrap();
        let direct = timeless(raw_post(worker, path, &body, false).await);
        assert_eq!(fast, direct, "{path} {body}");
        assert!(matches!(fast.0, 200 | 400), "{path} {body}: {fast:?}");
    }
    let (code, meta) = get(server.url("/v2/models/iris")).await;
    assert_eq!(code, 200, "{meta}");
    // Errors pass through with the worker's status and body.
    let (code, bad) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": [1.0]}),
    )
    .await;
    assert_eq!(code, 400, "{bad}");
    assert!(bad["error"].is_string(), "{bad}");
    // Its own /metrics on its port.
    let (code, _) = get(format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(code, 200);

    // cpu_limit = 1 keeps the worker on one core.
    let entry = registry(&server, "iris").await;
    assert_eq!(entry["state"], "ready", "{entry}");
    let cores = entry["cores_allowed"].as_str().unwrap();
    assert!(
        !cores.contains(',') && !cores.contains('-'),
        "one core: {entry}"
    );
    assert!(entry["rss_bytes"].as_u64().unwrap() > 1 << 20, "{entry}");
    assert!(entry["cpu_seconds"].as_f64().is_some(), "{entry}");
    let (code, list) = get(server.url("/registry/services")).await;
    assert_eq!(code, 200);
    assert_eq!(list["services"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(get(server.url("/registry/services/nope")).await.0, 404);

    // Status and the main server's per-deployment metrics.
    let (code, status) = get(server.url("/models/status")).await;
    assert_eq!(code, 200);
    let m = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == "iris")
        .unwrap();
    assert_eq!(m["worker"]["pid"], json!(pid), "{m}");
    // The console shows the worker process and how its limits are held.
    let page = reqwest::get(server.url("/console/fragments/models/iris"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Worker process"), "{page}");
    assert!(page.contains(&format!("pid {pid}")), "{page}");
    assert!(!page.contains("recorded, not applied"), "{page}");
    assert!(page.contains("enforced"), "{page}");
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ferroserve_worker_up{model=\"iris\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ferroserve_worker_memory_limit_bytes{model=\"iris\"} 536870912"));

    // A new version on disk reaches the worker (it watches the model's directory).
    let v2 = repo.path().join("iris/2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::copy(
        root_path("examples/models/iris_dt/1/model.onnx"),
        v2.join("model.onnx"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = post(
            format!("http://127.0.0.1:{port}/predict"),
            &json!({"model_id": "iris", "features": ROW}),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        if body["version"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "version 2 never served: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stop: the model is served in-process again (loaded before forwarding stops),
    // the worker drains and goes, the files stay; deploying again isolates it again.
    assert!(repo
        .path()
        .join(format!(".ferroserve/workers/iris-{port}/worker.db"))
        .is_file());
    let (code, body) = send(client.post(server.url("/stop_deployment/iris"))).await;
    assert_eq!(code, 200, "{body}");
    assert_gone(&[pid], Duration::from_secs(15));
    assert_eq!(get(server.url("/registry/services/iris")).await.0, 404);
    assert!(repo.path().join("iris/1/model.onnx").is_file());
    let worker_state = repo.path().join(format!(".ferroserve/workers/iris-{port}"));
    assert!(!worker_state.exists(), "{}", worker_state.display());
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // A stopped deployment has no gauges left (`ferroserve_worker_up` stayed at 0
    // for good, with the last memory and restarts beside it).
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("ferroserve_worker_") && l.contains("model=\"iris\"")),
        "{metrics}"
    );
    let (code, body) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!((code, &body["version"]), (200, &json!(2)), "{body}");
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    assert_eq!(
        answer["enforced"],
        json!({"cpu_limit": false, "memory_limit": false, "timeout": false})
    );

    // Delete: the worker stops, the files go.
    let (code, body) = send(client.delete(server.url("/delete_model/iris"))).await;
    assert_eq!(code, 200, "{body}");
    assert_gone(&[pid], Duration::from_secs(15));
    assert!(!repo.path().join("iris").exists());
    assert_eq!(get(server.url("/registry/services/iris")).await.0, 404);
    let (code, _) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_lives_only_in_its_worker() {
    let repo = tempfile::tempdir().unwrap();
    install(
        repo.path(),
        "hog",
        "tests/fixtures/onnx/memory_hog/model.onnx",
    );
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(repo.path(), port_range(20), &[]).await;
    let (code, hog) = deploy(
        &server,
        json!({"model_id": "hog", "resources": {"memory_limit": "256Mi"}}),
    )
    .await;
    assert_eq!(code, 200, "{hog}\n{}", server.log());
    let port = hog["port"].as_u64().unwrap();
    let worker = |path: &str| format!("http://127.0.0.1:{port}{path}");

    // The copy this process loaded before the deployment is unloaded (its version
    // ends), and every per-model answer is the worker's.
    let status = model_status(&server, "hog").await;
    assert_eq!(status["served"], true, "{status}");
    assert_eq!(status["served_versions"], json!([1]), "{status}");
    assert_eq!(status["versions"][0]["state"], "AVAILABLE", "{status}");
    assert_eq!(status["versions"][0]["format"], "onnx", "{status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_process_states(&server, "hog", 0)
        .await
        .iter()
        .any(|e| e["detail"]["to"] == "END" && e["version"] == 1)
    {
        assert!(
            Instant::now() < deadline,
            "the in-process version was not unloaded: {}",
            model_status(&server, "hog").await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for path in [
        "/v1/models/hog",
        "/v1/models/hog/metadata",
        "/v2/models/hog",
        "/v2/models/hog/ready",
    ] {
        let (code, main) = get(server.url(path)).await;
        let (direct_code, direct) = get(worker(path)).await;
        assert_eq!((code, &main), (direct_code, &direct), "{path}");
        assert_eq!(code, 200, "{path}: {main}");
    }
    let (code, index) = post(server.url("/v2/repository/index"), &json!({})).await;
    assert_eq!(code, 200, "{index}");
    assert!(
        index
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "hog" && e["state"] == "AVAILABLE"),
        "{index}"
    );

    // A hostile version: loading it allocates 1 GiB (its warm-up request). Only the
    // worker, limited to 256 MiB, ever tries; the main server never opens it.
    let since = now_ms();
    let v2 = repo.path().join("hog/2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::copy(
        root_path("tests/fixtures/onnx/memory_hog/model.onnx"),
        v2.join("model.onnx"),
    )
    .unwrap();
    std::fs::write(v2.join("warmup.json"), r#"[{"mib": [1024]}]"#).unwrap();
    wait_registry(&server, "hog", Duration::from_secs(30), |e| {
        e["last_exit"]["oom"] == true
            || e["versions"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v["version"] == 2 && !v["error"].is_null()))
    })
    .await;
    // Two more polls of the main server's watcher (1 s each) for it to have erred.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let states = in_process_states(&server, "hog", since).await;
    assert!(states.is_empty(), "the main server loaded hog: {states:?}");
    let peak = peak_rss(server.pid());
    assert!(peak < 512 << 20, "main server peak RSS {peak} bytes");
    // The main server and its in-process models never noticed.
    let (code, _) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200);
    assert!(model_status(&server, "iris").await["worker"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_its_worker_cannot_load_is_refused_at_once() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    // A version whose file is no model at all, next to a good model: deployed, its
    // worker finishes its initial load with nothing to serve.
    let dir = repo.path().join("broken/1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.onnx"), b"not an onnx graph").unwrap();
    let server = start_server(repo.path(), port_range(20), &[]).await;
    let started = Instant::now();
    let (code, body) = deploy(&server, json!({"model_id": "broken"})).await;
    assert_eq!(code, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("cannot serve model broken"), "{body}");
    assert!(error.contains("version 1"), "{body}");
    // At once: not after the worker's start-up timeout (two minutes).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // Nothing changed: no worker, no deployment recorded, the other model serves.
    assert_eq!(get(server.url("/registry/services/broken")).await.0, 404);
    let status = model_status(&server, "broken").await;
    assert!(status["deployment"].is_null(), "{status}");
    assert!(status["worker"].is_null(), "{status}");
    // Not even the failed worker's state directory (it stayed, its worker.db with
    // it): its events, which say why, are the main store's.
    let workers_dir = repo.path().join(".ferroserve/workers");
    let left: Vec<String> = std::fs::read_dir(&workers_dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !left.iter().any(|name| name.starts_with("broken-")),
        "{left:?}"
    );
    let (code, _) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200);
}
