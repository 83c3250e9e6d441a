//! Workers that fail: killed, out of memory, crash-looping, out of ports, starved
//! of CPU, no longer answering, past their memory limit without cgroups.

use super::*;

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
