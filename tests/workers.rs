//! Isolated deployments (issue 14), black-box against the real binary: the old
//! service's workflow with real worker processes, restarts after a kill, OOM past a
//! memory limit, crash-loop, port exhaustion, redeploys, a main-server restart, and
//! no worker outliving its server. Management of deployed models is in
//! `workers_management.rs`, what reaches a worker and comes back in
//! `workers_forwarding/`; their helpers are `common/workers.rs`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::child::free_port;
use common::workers::*;
use common::{raw_post, root_path, timeless};
use serde_json::{json, Value};

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
async fn a_killed_worker_restarts_within_two_seconds_and_clients_see_only_503() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    // The registry on a listener of its own too, as the old service's was.
    let registry_addr = format!("127.0.0.1:{}", free_port());
    let server = start_server(
        repo.path(),
        port_range(20),
        &["--registry-addr", &registry_addr],
    )
    .await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    let (code, list) = get(format!("http://{registry_addr}/registry/services")).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["services"][0]["pid"], json!(pid), "{list}");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = server.url("/predict");
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut codes = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client
                    .post(&url)
                    .json(&json!({"model_id": "iris", "features": ROW}))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .unwrap();
                if r.status() == 503 {
                    assert!(r.headers().contains_key("retry-after"));
                }
                codes.push(r.status().as_u16());
            }
            codes
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Instant::now();
    kill9(pid);
    let entry = wait_registry(&server, "iris", Duration::from_secs(10), |e| {
        e["state"] == "ready" && e["pid"].as_u64().is_some_and(|p| p != pid)
    })
    .await;
    let restarted_in = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut codes = Vec::new();
    for c in clients {
        codes.extend(c.await.unwrap());
    }
    assert!(
        restarted_in < Duration::from_secs(2),
        "restarted in {restarted_in:?}"
    );
    assert!(codes.iter().all(|c| *c == 200 || *c == 503), "{codes:?}");
    assert_eq!(*codes.last().unwrap(), 200, "predictions resume");
    assert_eq!(entry["restarts"], 1, "{entry}");
    assert_eq!(entry["last_exit"]["signal"], 9, "{entry}");
    assert_eq!(entry["last_exit"]["oom"], false, "{entry}");
    let new_pid = pid_of(&entry);
    drop(server);
    assert_gone(&[new_pid], Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_past_its_memory_limit_is_reported_oom_and_others_carry_on() {
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
    assert_eq!(hog["enforced"]["memory_limit"], true, "{hog}");
    let (code, iris) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{iris}");
    let infer = |mib: i64| json!({"inputs": [{"name": "mib", "datatype": "INT64", "shape": [1], "data": [mib]}]});
    let (code, small) = post(server.url("/v2/models/hog/infer"), &infer(2)).await;
    assert_eq!(code, 200, "{small}");
    assert_eq!(small["outputs"][0]["data"], json!([524288.0]), "{small}");

    // 1 GiB in a worker limited to 256 MiB: the answer says the worker was killed
    // past its limit (it was "did not answer (client error (SendRequest))").
    let (code, body) = post(server.url("/v2/models/hog/infer"), &infer(1024)).await;
    assert_eq!(code, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("out of memory") && error.contains("past its memory limit (256Mi)"),
        "{body}"
    );
    let entry = wait_registry(&server, "hog", Duration::from_secs(10), |e| {
        e["last_exit"]["oom"] == true
    })
    .await;
    assert_ne!(entry["pid"], hog["pid"], "{entry}");
    // The main server and the other worker never noticed.
    let (code, _) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(registry(&server, "iris").await["pid"], iris["pid"]);
    assert_eq!(registry(&server, "iris").await["restarts"], 0);
    // And the hog serves again once restarted.
    wait_registry(&server, "hog", Duration::from_secs(10), |e| {
        e["state"] == "ready"
    })
    .await;
    let (code, small) = post(server.url("/v2/models/hog/infer"), &infer(1)).await;
    assert_eq!(code, 200, "{small}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_end_in_crash_loop_and_a_full_port_range_is_503() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(repo.path(), "other", "examples/models/iris_dt/1/model.onnx");
    let ports = port_range(1);
    let (server, grpc_port) = start_server_with_grpc(repo.path(), ports, &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");

    // One port: the next deployment has nowhere to go.
    let (code, body) = deploy(&server, json!({"model_id": "other"})).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no free worker port"),
        "{body}"
    );

    // Five deaths within the window: crash-loop, no restart, 503 on predict.
    let mut pid = pid_of(&answer);
    for i in 0..5 {
        kill9(pid);
        if i < 4 {
            let entry = wait_registry(&server, "iris", Duration::from_secs(20), |e| {
                e["state"] == "ready" && e["pid"].as_u64().is_some_and(|p| p != pid)
            })
            .await;
            pid = pid_of(&entry);
        }
    }
    let entry = wait_registry(&server, "iris", Duration::from_secs(10), |e| {
        e["state"] == "crash-loop"
    })
    .await;
    assert!(entry["pid"].is_null(), "{entry}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        registry(&server, "iris").await["state"],
        "crash-loop",
        "stays there"
    );
    let answer = reqwest::Client::new()
        .post(server.url("/predict"))
        .json(&json!({"model_id": "iris", "features": ROW}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    // It says what to do: retrying is no use, so no `Retry-After` invites it.
    assert!(
        !answer.headers().contains_key("retry-after"),
        "{:?}",
        answer.headers()
    );
    let body: Value = answer.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("crash-loop") && message.contains("deploy the model again"),
        "{body}"
    );
    // The repository index still lists it, as a model with nothing serving and why.
    let (code, index) = post(server.url("/v2/repository/index"), &json!({})).await;
    assert_eq!(code, 200, "{index}");
    let entry = index
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "iris")
        .unwrap_or_else(|| panic!("iris is missing from {index}"));
    assert_eq!(entry["state"], "UNAVAILABLE", "{entry}");
    assert!(
        entry["reason"].as_str().unwrap().contains("crash-loop"),
        "{entry}"
    );
    let (_, ready) = post(server.url("/v2/repository/index"), &json!({"ready": true})).await;
    assert!(
        !ready
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "iris"),
        "{ready}"
    );
    // Over gRPC, readiness is an answer: not ready (its other calls are UNAVAILABLE).
    {
        use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
        use ferroserve_proto::inference::{ModelMetadataRequest, ModelReadyRequest};
        let mut v2 = GrpcInferenceServiceClient::connect(format!("http://127.0.0.1:{grpc_port}"))
            .await
            .unwrap();
        let ready = v2
            .model_ready(ModelReadyRequest {
                name: "iris".into(),
                version: String::new(),
            })
            .await
            .unwrap();
        assert!(!ready.get_ref().ready);
        let metadata = v2
            .model_metadata(ModelMetadataRequest {
                name: "iris".into(),
                version: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(metadata.code(), tonic::Code::Unavailable, "{metadata:?}");
    }
    // Deploying again starts it afresh.
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["state"], "ready");
    let pid = pid_of(&answer);
    drop(server);
    assert_gone(&[pid], Duration::from_secs(10));
}

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

/// A cpu limit above the machine's cores gives the worker no more threads than
/// the cores it is pinned to (`"1000"` started a worker of 2008 threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_limit_past_the_machine_gives_no_more_threads_than_cores() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(repo.path(), port_range(20), &[]).await;
    let (code, entry) = deploy(
        &server,
        json!({"model_id": "iris", "resources": {"cpu_limit": "1000"}}),
    )
    .await;
    assert_eq!(code, 200, "{entry}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid_of(&entry))).unwrap();
    let threads: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        threads <= 4 * cores + 32,
        "{threads} threads on {cores} cores"
    );
    let (code, _) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200);
}

/// A worker that stops answering (here: stopped by SIGSTOP) is killed after three
/// failed health checks and restarted; its last exit says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_answering_is_killed_and_says_why() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(repo.path(), port_range(20), &[]).await;
    let (code, entry) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{entry}");
    let pid = pid_of(&entry);
    assert!(Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let entry = wait_registry(&server, "iris", Duration::from_secs(30), |e| {
        e["state"] == "ready" && e["pid"].as_u64().is_some_and(|p| p != pid)
    })
    .await;
    let reason = entry["last_exit"]["reason"].as_str().unwrap();
    assert!(reason.contains("failed 3 health checks"), "{entry}");
    assert_gone(&[pid], Duration::from_secs(5));
    let (code, _) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cgroups_the_rss_watchdog_enforces_the_memory_limit() {
    let repo = tempfile::tempdir().unwrap();
    install(
        repo.path(),
        "hog",
        "tests/fixtures/onnx/memory_hog/model.onnx",
    );
    std::fs::write(
        repo.path().join("hog/config.toml"),
        "feature_names = [\"mib\"]\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("big.csv"), "mib\n8000\n").unwrap();
    let server = start_server(
        repo.path(),
        port_range(20),
        &[
            "--worker-cgroups",
            "false",
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
    )
    .await;
    let (code, hog) = deploy(
        &server,
        json!({"model_id": "hog", "resources": {"memory_limit": "256Mi", "cpu_limit": "1"}}),
    )
    .await;
    assert_eq!(code, 200, "{hog}\n{}", server.log());
    assert_eq!(
        hog["enforcement"],
        json!({"memory_limit": "rlimit_and_watchdog", "cpu_limit": "affinity", "timeout": "none"}),
        "{hog}"
    );
    assert_eq!(hog["enforced"]["timeout"], false, "{hog}");
    let infer = |mib: i64| json!({"inputs": [{"name": "mib", "datatype": "INT64", "shape": [1], "data": [mib]}]});
    let (code, body) = post(server.url("/v2/models/hog/infer"), &infer(1024)).await;
    assert_eq!(code, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("out of memory")
            && error.contains("RSS watchdog stopped it past its memory limit (256Mi)"),
        "{body}"
    );
    let entry = wait_registry(&server, "hog", Duration::from_secs(10), |e| {
        e["last_exit"]["oom"] == true
    })
    .await;
    assert_eq!(entry["last_exit"]["exit_code"], 88, "{entry}");
    wait_registry(&server, "hog", Duration::from_secs(10), |e| {
        e["state"] == "ready"
    })
    .await;
    let (code, small) = post(server.url("/v2/models/hog/infer"), &infer(1)).await;
    assert_eq!(code, 200, "{small}");
    // Past the address-space limit the runtime's allocation fails at once: out of
    // memory, a 503 like the watchdog's, never the client's fault (a 400).
    let (code, body) = post(server.url("/v2/models/hog/infer"), &infer(8000)).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("out of memory"),
        "{body}"
    );
    // A scoring job's batch the worker has no memory for fails the job at once:
    // the same batch would only fail again (a restarting worker is waited for).
    let started = Instant::now();
    let (code, job) = post(
        server.url("/v1/jobs"),
        &json!({"kind": "score", "spec": {
            "model": "hog", "source": {"path": "big.csv"}, "sink": {"path": "out.csv"},
            "batch_size": 1,
        }}),
    )
    .await;
    assert_eq!(code, 202, "{job}");
    let done = wait_job(&server, job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("out of memory"),
        "{done}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{done}");
    assert!(!data.path().join("out.csv").exists());
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
