//! Isolated deployments (issue 14), black-box against the real binary: the old
//! service's workflow with real worker processes, restarts after a kill, OOM past a
//! memory limit, crash-loop, port exhaustion, redeploys, a main-server restart, and
//! no worker outliving its server.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::child::{free_port, ChildServer};
use common::{raw_post, root_path, timeless};
use serde_json::{json, Value};

const ROW: [f64; 4] = [5.1, 3.5, 1.4, 0.2];

/// A range of ports for one test's workers.
fn port_range(n: u16) -> (u16, u16) {
    common::child::worker_ports(n)
}

async fn start_server(repo: &Path, ports: (u16, u16), extra: &[&str]) -> ChildServer {
    start_server_with_grpc(repo, ports, extra).await.0
}

/// A server and its gRPC port. Its REST and gRPC ports are free when chosen, but
/// another test's process (a worker on a port the system picked) may take one
/// before the server binds it: then it starts again on others.
async fn start_server_with_grpc(
    repo: &Path,
    ports: (u16, u16),
    extra: &[&str],
) -> (ChildServer, u16) {
    for _ in 0..5 {
        let rest: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let grpc_port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
        command
            .arg("serve")
            .arg("--model-repository")
            .arg(repo)
            .arg("--rest-addr")
            .arg(rest.to_string())
            .arg("--grpc-addr")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--worker-ports")
            .arg(format!("{}-{}", ports.0, ports.1))
            .arg("--inference-threads")
            .arg("1")
            .args(extra);
        match ChildServer::try_start(command, rest).await {
            Ok(server) => return (server, grpc_port),
            Err(log) if log.contains("Address already in use") => continue,
            Err(log) => panic!("{log}"),
        }
    }
    panic!("the server found its ports taken 5 times in a row");
}

fn install(repo: &Path, model: &str, fixture: &str) {
    let dir = repo.join(model).join("1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root_path(fixture), dir.join("model.onnx")).unwrap();
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let r = request
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(url: String) -> (u16, Value) {
    send(reqwest::Client::new().get(url)).await
}

async fn post(url: String, body: &Value) -> (u16, Value) {
    send(reqwest::Client::new().post(url).json(body)).await
}

async fn deploy(server: &ChildServer, body: Value) -> (u16, Value) {
    post(server.url("/deploy"), &body).await
}

async fn registry(server: &ChildServer, model: &str) -> Value {
    let (code, body) = get(server.url(&format!("/registry/services/{model}"))).await;
    assert_eq!(code, 200, "{body}");
    body
}

/// Polls the registry until `done` holds for the model's entry, up to `limit`.
async fn wait_registry(
    server: &ChildServer,
    model: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let entry = registry(server, model).await;
        if done(&entry) {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "registry entry of {model} not as expected within {limit:?}: {entry}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alive(pid: u64) -> bool {
    // A reaped process has no /proc entry; a zombie counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn kill9(pid: u64) {
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// Waits until none of `pids` runs, up to `limit`.
fn assert_gone(pids: &[u64], limit: Duration) {
    let deadline = Instant::now() + limit;
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "worker processes outlived their server: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid_of(entry: &Value) -> u64 {
    entry["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid: {entry}"))
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_for_a_deployed_model_reach_its_worker() {
    use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use ferroserve_proto::inference::model_infer_request::InferInputTensor;
    use ferroserve_proto::inference::{InferTensorContents, ModelInferRequest};

    let repo = tempfile::tempdir().unwrap();
    install(
        repo.path(),
        "hog",
        "tests/fixtures/onnx/memory_hog/model.onnx",
    );
    let (server, grpc_port) = start_server_with_grpc(repo.path(), port_range(20), &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "hog"})).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    let mut client = GrpcInferenceServiceClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .unwrap();
    let request = || ModelInferRequest {
        model_name: "hog".into(),
        inputs: vec![InferInputTensor {
            name: "mib".into(),
            datatype: "INT64".into(),
            shape: vec![1],
            contents: Some(InferTensorContents {
                int64_contents: vec![2],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let answer = client.model_infer(request()).await.unwrap().into_inner();
    assert_eq!(answer.model_name, "hog");
    assert_eq!(
        answer.outputs[0].contents.as_ref().unwrap().fp32_contents,
        vec![524288.0]
    );
    // Forwarded, not answered by the main server's own copy: with the worker down
    // the call is UNAVAILABLE, and it answers again once the worker is back.
    kill9(pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_unavailable = false;
    loop {
        match client.model_infer(request()).await {
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                saw_unavailable = true;
            }
            Ok(_) if saw_unavailable => break,
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "no UNAVAILABLE then recovery");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let entry = registry(&server, "hog").await;
    assert_ne!(pid_of(&entry), pid);
    assert!(entry["grpc_port"].as_u64().unwrap() > 0, "{entry}");
}

/// A deployed model's gRPC answer over 4 MiB (tonic's default for what a client
/// decodes) reaches the client through the main server, over both gRPC APIs, as
/// the same model's answer does in process: the main server forwards within its
/// own message limits (`--grpc-max-send-bytes`, 64 MiB by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_models_grpc_answer_over_4_mib_is_forwarded() {
    use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use ferroserve_proto::inference::model_infer_request::InferInputTensor;
    use ferroserve_proto::inference::{InferTensorContents, ModelInferRequest};
    use ferroserve_proto::tensorflow as tf;
    use ferroserve_proto::tensorflow::serving as tfs;
    use tfs::prediction_service_client::PredictionServiceClient;

    // 360,000 rows: 4.3 MB of probabilities (3 floats a row) in either answer.
    const ROWS: usize = 360_000;
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let (server, grpc_port) = start_server_with_grpc(
        repo.path(),
        port_range(20),
        &["--max-request-rows", "400000"],
    )
    .await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let url = format!("http://127.0.0.1:{grpc_port}");
    let values: Vec<f32> = ROW
        .iter()
        .map(|&v| v as f32)
        .cycle()
        .take(ROWS * 4)
        .collect();

    let mut v2 = GrpcInferenceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let answer = v2
        .model_infer(ModelInferRequest {
            model_name: "iris".into(),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![ROWS as i64, 4],
                contents: Some(InferTensorContents {
                    fp32_contents: values.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("V2 ModelInfer: {s:?}\n{}", server.log()))
        .into_inner();
    assert!(prost::Message::encoded_len(&answer) > 4 << 20);
    let probabilities = answer
        .outputs
        .iter()
        .find(|o| o.name == "probabilities")
        .unwrap_or_else(|| panic!("no probabilities: {:?}", answer.outputs.len()));
    assert_eq!(probabilities.shape, [ROWS as i64, 3]);
    let scores = &probabilities.contents.as_ref().unwrap().fp32_contents;
    assert_eq!(scores.len(), ROWS * 3);
    // Every row is the same setosa row.
    assert!(
        scores[0] > 0.9 && scores[ROWS * 3 - 3] == scores[0],
        "{:?}",
        &scores[..3]
    );

    let mut tf_client = PredictionServiceClient::connect(url)
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let dims = [ROWS as i64, 4]
        .iter()
        .map(|&size| tf::tensor_shape_proto::Dim {
            size,
            name: String::new(),
        })
        .collect();
    let answer = tf_client
        .predict(tfs::PredictRequest {
            model_spec: Some(tfs::ModelSpec {
                name: "iris".into(),
                ..Default::default()
            }),
            inputs: std::collections::HashMap::from([(
                "input".to_string(),
                tf::TensorProto {
                    dtype: tf::DataType::DtFloat as i32,
                    tensor_shape: Some(tf::TensorShapeProto {
                        dim: dims,
                        unknown_rank: false,
                    }),
                    float_val: values,
                    ..Default::default()
                },
            )]),
            output_filter: vec![],
        })
        .await
        .unwrap_or_else(|s| panic!("TF Predict: {s:?}\n{}", server.log()))
        .into_inner();
    assert!(prost::Message::encoded_len(&answer) > 4 << 20);
    let probabilities = &answer.outputs["probabilities"];
    let count = if probabilities.tensor_content.is_empty() {
        probabilities.float_val.len()
    } else {
        probabilities.tensor_content.len() / 4
    };
    assert_eq!(count, ROWS * 3);
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

/// The main server's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or_else(|| panic!("no VmHWM: {status}"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// The model's entry of the main server's `/models/status`.
async fn model_status(server: &ChildServer, model: &str) -> Value {
    let (code, status) = get(server.url("/models/status")).await;
    assert_eq!(code, 200, "{status}");
    status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == model)
        .unwrap_or_else(|| panic!("{model} not in {status}"))
        .clone()
}

/// The main server's own version state changes of `model` (its audit trail, kept
/// in memory: every load and unload in this process, recorded by it, not by a
/// worker), at or after `since_ms`.
async fn in_process_states(server: &ChildServer, model: &str, since_ms: i64) -> Vec<Value> {
    let main = format!(":{}", server.pid());
    model_status(server, model).await["recent_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["kind"] == "state"
                && e["at_ms"].as_i64().unwrap() >= since_ms
                && e["replica"].as_str().unwrap().ends_with(&main)
        })
        .cloned()
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
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
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("worker process loads it"),
        "{body}"
    );
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
async fn grpc_metadata_status_and_classify_are_forwarded() {
    use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use ferroserve_proto::inference::{ModelMetadataRequest, ModelReadyRequest};
    use ferroserve_proto::tensorflow as tf;
    use ferroserve_proto::tensorflow::serving as tfs;
    use tfs::model_service_client::ModelServiceClient;
    use tfs::prediction_service_client::PredictionServiceClient;

    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    std::fs::write(
        repo.path().join("iris/config.toml"),
        "feature_names = [\"sl\", \"sw\", \"pl\", \"pw\"]\n[labels]\nstable = 1\n",
    )
    .unwrap();
    let (server, grpc_port) = start_server_with_grpc(repo.path(), port_range(20), &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let entry = registry(&server, "iris").await;
    let main_url = format!("http://127.0.0.1:{grpc_port}");
    let worker_url = format!("http://127.0.0.1:{}", entry["grpc_port"]);
    let mut main = PredictionServiceClient::connect(main_url.clone())
        .await
        .unwrap();
    let mut direct = PredictionServiceClient::connect(worker_url.clone())
        .await
        .unwrap();
    let mut main_models = ModelServiceClient::connect(main_url.clone()).await.unwrap();
    let mut direct_models = ModelServiceClient::connect(worker_url.clone())
        .await
        .unwrap();
    let mut main_health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(main_url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let mut main_v2 = GrpcInferenceServiceClient::connect(main_url).await.unwrap();
    let mut direct_v2 = GrpcInferenceServiceClient::connect(worker_url)
        .await
        .unwrap();

    let spec = |label: Option<&str>| {
        Some(tfs::ModelSpec {
            name: "iris".into(),
            version_label: label.map(str::to_string),
            ..Default::default()
        })
    };
    let example = tf::Example {
        features: Some(tf::Features {
            feature: ["sl", "sw", "pl", "pw"]
                .iter()
                .zip(ROW)
                .map(|(name, v)| {
                    let value = vec![v as f32];
                    let kind = tf::feature::Kind::FloatList(tf::FloatList { value });
                    (name.to_string(), tf::Feature { kind: Some(kind) })
                })
                .collect(),
        }),
    };
    let input = Some(tfs::Input {
        kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
            examples: vec![example],
        })),
    });
    // Each answer (or error) through the main server is the worker's own.
    macro_rules! same {
        ($main:expr, $direct:expr) => {{
            let (m, d) = ($main.await, $direct.await);
            match (&m, &d) {
                (Ok(m), Ok(d)) => assert_eq!(m.get_ref(), d.get_ref()),
                (Err(m), Err(d)) => {
                    assert_eq!((m.code(), m.message()), (d.code(), d.message()))
                }
                _ => panic!("main {m:?}, worker {d:?}"),
            }
            m
        }};
    }
    let metadata = || tfs::GetModelMetadataRequest {
        model_spec: spec(None),
        metadata_field: vec!["signature_def".into()],
    };
    // The signature map's encoding follows a hash map's order: compared decoded.
    let signatures = |r: tonic::Response<tfs::GetModelMetadataResponse>| {
        let r = r.into_inner();
        let any = &r.metadata["signature_def"];
        let map = <tfs::SignatureDefMap as prost::Message>::decode(any.value.as_slice()).unwrap();
        (r.model_spec, any.type_url.clone(), map)
    };
    let meta = signatures(main.get_model_metadata(metadata()).await.unwrap());
    assert_eq!(
        meta,
        signatures(direct.get_model_metadata(metadata()).await.unwrap())
    );
    assert!(
        meta.2.signature_def.contains_key("serving_default"),
        "{meta:?}"
    );
    let status = || tfs::GetModelStatusRequest {
        model_spec: spec(Some("stable")),
    };
    let status = same!(
        main_models.get_model_status(status()),
        direct_models.get_model_status(status())
    )
    .unwrap();
    assert_eq!(status.get_ref().model_version_status[0].version, 1);
    let classify = || tfs::ClassificationRequest {
        model_spec: spec(None),
        input: input.clone(),
    };
    let classified = same!(main.classify(classify()), direct.classify(classify())).unwrap();
    let classes = &classified
        .get_ref()
        .result
        .as_ref()
        .unwrap()
        .classifications[0]
        .classes;
    assert_eq!(classes.len(), 3, "{classified:?}");
    let regress = || tfs::RegressionRequest {
        model_spec: spec(None),
        input: input.clone(),
    };
    let _ = same!(main.regress(regress()), direct.regress(regress()));
    let multi = || tfs::MultiInferenceRequest {
        tasks: vec![tfs::InferenceTask {
            model_spec: spec(None),
            method_name: "tensorflow/serving/classify".into(),
        }],
        input: input.clone(),
    };
    same!(
        main.multi_inference(multi()),
        direct.multi_inference(multi())
    )
    .unwrap();
    let v2_meta = || ModelMetadataRequest {
        name: "iris".into(),
        version: String::new(),
    };
    same!(
        main_v2.model_metadata(v2_meta()),
        direct_v2.model_metadata(v2_meta())
    )
    .unwrap();
    let ready = || ModelReadyRequest {
        name: "iris".into(),
        version: String::new(),
    };
    let ready = same!(main_v2.model_ready(ready()), direct_v2.model_ready(ready())).unwrap();
    assert!(ready.get_ref().ready);
    // Its gRPC health is its worker's word (the main server holds no copy of it).
    let health = main_health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "iris".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        health.get_ref().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // A worker that is down: UNAVAILABLE (a client retries), never the main
    // server's own answer (it holds no copy: NOT_FOUND).
    kill9(pid_of(&entry));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_unavailable = false;
    loop {
        match main_models.get_model_status(status_request()).await {
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                saw_unavailable = true;
            }
            Ok(_) if saw_unavailable => break,
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "no UNAVAILABLE then recovery");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    fn status_request() -> tfs::GetModelStatusRequest {
        tfs::GetModelStatusRequest {
            model_spec: Some(tfs::ModelSpec {
                name: "iris".into(),
                ..Default::default()
            }),
        }
    }
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

const MANAGER: &str = "fst_workers-test-manager-token";
const READER: &str = "fst_workers-test-reader-token";
const PROMETHEUS: &str = "fst_workers-test-metrics-token";

/// A tokens file (issue 10's format) with a manager, an inference-only reader and
/// a metrics-only scraper.
fn write_tokens(path: &Path) {
    let entry = |name: &str, token: &str, scopes: &str| {
        format!(
            "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{scopes}]\n",
            ferroserve::auth::to_hex(&ferroserve::auth::token_sha256(token))
        )
    };
    let text = entry("manager", MANAGER, r#""inference", "management""#)
        + &entry("reader", READER, r#""inference""#)
        + &entry("prometheus", PROMETHEUS, r#""metrics""#);
    std::fs::write(path, text).unwrap();
}

/// `POST /deploy` of iris with the manager's token, on a server with tokens: its answer.
async fn deploy_iris_as_manager(server: &ChildServer, client: &reqwest::Client) -> Value {
    let (code, answer) = send_with(
        client
            .post(server.url("/deploy"))
            .json(&json!({"model_id": "iris"})),
        Some(MANAGER),
    )
    .await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    answer
}

async fn send_with(request: reqwest::RequestBuilder, token: Option<&str>) -> (u16, Value) {
    match token {
        Some(t) => send(request.bearer_auth(t)).await,
        None => send(request).await,
    }
}

/// The value of `name` in the environment `pid` started with.
fn initial_env(pid: u64, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ.split(|b| *b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(&format!("{name}=")).map(str::to_string)
    })
}

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

/// A repository with the scikit-learn iris model (named features) as `iris`, and a
/// data directory holding `in.csv` (four rows of its features).
fn scoring_repo() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let version = repo.join("iris/1");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::copy(
        root_path("examples/models/iris_sklearn/1/model.joblib"),
        version.join("model.joblib"),
    )
    .unwrap();
    std::fs::write(
        repo.join("iris/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("in.csv"),
        "id,sepal_length,sepal_width,petal_length,petal_width\n\
         1,5.1,3.5,1.4,0.2\n2,6.2,2.9,4.3,1.3\n3,7.7,3.0,6.1,2.3\n4,5.9,3.0,5.1,1.8\n",
    )
    .unwrap();
    (dir, repo)
}

async fn wait_job(server: &ChildServer, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, job) = get(server.url(&format!("/v1/jobs/{id}"))).await;
        assert_eq!(code, 200, "{job}");
        if matches!(
            job["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return job;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoring_job_on_a_deployed_model_scores_through_its_worker() {
    let (dir, repo) = scoring_repo();
    let data = dir.path().join("data");
    let server = start_server(
        &repo,
        port_range(20),
        &["--data-dir", data.to_str().unwrap()],
    )
    .await;
    let job = |sink: &str| {
        json!({"kind": "score", "spec": {
            "model": "iris", "source": {"path": "in.csv"}, "sink": {"path": sink},
            "carry": ["id"], "batch_size": 3,
        }})
    };
    let score = |sink: &'static str| {
        let (url, body) = (server.url("/v1/jobs"), job(sink));
        let (server, data) = (&server, data.clone());
        async move {
            let (code, body) = post(url, &body).await;
            assert_eq!(code, 202, "{body}");
            let done = wait_job(server, body["job_id"].as_str().unwrap()).await;
            assert_eq!(done["state"], "succeeded", "{done}\n{}", server.log());
            assert_eq!(done["result"]["version"], 1, "{done}");
            assert_eq!(done["progress"]["rows_written"], 4, "{done}");
            std::fs::read_to_string(data.join(sink)).unwrap()
        }
    };
    // Served in-process.
    let in_process = score("before.csv").await;
    assert!(
        in_process.starts_with("id,predict,predict_proba_setosa,"),
        "{in_process}"
    );

    // Deployed: the job's batches go to the worker, the main server never loads
    // the model, and the output is the same, value for value.
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let pid = pid_of(&answer);
    let deployed_at = now_ms();
    assert_eq!(score("during.csv").await, in_process);
    let loads: Vec<Value> = in_process_states(&server, "iris", deployed_at)
        .await
        .into_iter()
        .filter(|e| e["detail"]["to"] == "LOADING")
        .collect();
    assert!(loads.is_empty(), "the main server loaded iris: {loads:?}");
    assert_eq!(registry(&server, "iris").await["pid"], json!(pid));
    // Its batches (4 rows, 3 a batch) were the worker's V2 requests.
    let port = answer["port"].as_u64().unwrap();
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v2_requests: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("ferroserve_requests_total")
                && l.contains("protocol=\"v2_rest\"")
                && l.contains("model=\"iris\"")
        })
        .collect();
    assert!(
        v2_requests.iter().any(|l| l.ends_with(" 2")),
        "{v2_requests:?}\n{metrics}"
    );
    // The plan the job used is the worker's, through the main server too.
    let (code, plan) = get(server.url("/v1/scoring-plans/iris")).await;
    assert_eq!(code, 200, "{plan}");
    assert_eq!(
        (code, &plan),
        (
            200,
            &get(format!("http://127.0.0.1:{port}/v1/scoring-plans/iris"))
                .await
                .1
        )
    );
    assert_eq!(plan["inputs"][0]["features"][0], "sepal_length", "{plan}");
    assert_eq!(
        plan["class_labels"],
        json!(["setosa", "versicolor", "virginica"]),
        "{plan}"
    );
    // Checked at submission against the worker's model.
    for (bad, what) in [
        (json!({"outputs": ["nope"]}), "spec.outputs"),
        (json!({"version": 7}), "spec.version"),
    ] {
        let mut body = job("never.csv");
        for (k, v) in bad.as_object().unwrap() {
            body["spec"][k] = v.clone();
        }
        let (code, answer) = post(server.url("/v1/jobs"), &body).await;
        assert_eq!(code, 400, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(what), "{answer}");
    }

    // Back in process: the same again.
    let (code, body) = send(reqwest::Client::new().post(server.url("/stop_deployment/iris"))).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(score("after.csv").await, in_process);
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

/// A delete refused because the model comes from the model config list (409) leaves
/// its deployment alone: the worker keeps serving it (the worker used to be stopped
/// before the refusal, and the model then served nowhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delete_of_a_deployed_listed_model_keeps_its_worker() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("models.config");
    std::fs::write(
        &config,
        format!(
            "model_config_list {{\n  config {{ name: \"iris\" base_path: \"{}\" model_platform: \"onnx\" }}\n}}\n",
            repo.path().join("iris").display()
        ),
    )
    .unwrap();
    let server = start_server(
        repo.path(),
        port_range(20),
        &["--model-config-file", config.to_str().unwrap()],
    )
    .await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let pid = pid_of(&answer);

    let r = reqwest::Client::new()
        .delete(server.url("/delete_model/iris"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409, "{}", r.text().await.unwrap());
    let entry = registry(&server, "iris").await;
    assert_eq!(entry["state"], "ready", "{entry}");
    assert_eq!(pid_of(&entry), pid);
    let body = json!({"model_id": "iris", "features": ROW});
    let (code, answer) = post(server.url("/predict"), &body).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    assert!(repo.path().join("iris/1/model.onnx").is_file());
}

/// With workers, a deploy of a model folder that holds only an upload in progress
/// is 404 and says why, and records nothing: once the upload lands the model serves
/// in this process, with no deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_of_an_upload_in_progress_is_404_with_workers_too() {
    let repo = tempfile::tempdir().unwrap();
    let server = start_server(repo.path(), port_range(20), &[]).await;
    // Made after the start, which clears staging left by an earlier process.
    let staging = repo.path().join("m/.tmp-upload-1");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), b"half").unwrap();
    let (code, answer) = deploy(&server, json!({"model_id": "m"})).await;
    assert_eq!(code, 404, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("only an upload in progress"),
        "{answer}"
    );
    std::fs::remove_dir_all(&staging).unwrap();
    install(repo.path(), "m", "examples/models/iris_lr/1/model.onnx");
    let (code, answer) = post(server.url("/reload_model?modelname=m"), &json!({})).await;
    assert_eq!(code, 200, "{answer}");
    assert!(model_status(&server, "m").await["deployment"].is_null());
    let (code, answer) = post(
        server.url("/predict"),
        &json!({"model_id": "m", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_models_log_and_events_reach_the_main_store_and_outlive_its_worker() {
    let (_dir, repo) = scoring_repo();
    let mut config = std::fs::read_to_string(repo.join("iris/config.toml")).unwrap();
    config.push_str("[log]\nsample_rate = 1.0\n");
    std::fs::write(repo.join("iris/config.toml"), config).unwrap();
    let server = start_server(&repo, port_range(20), &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let port = answer["port"].as_u64().unwrap();
    let worker_dir = repo.join(format!(".ferroserve/workers/iris-{port}"));
    assert!(worker_dir.join("worker.db").is_file());
    for row in [
        [5.1, 3.5, 1.4, 0.2],
        [6.2, 2.9, 4.3, 1.3],
        [7.7, 3.0, 6.1, 2.3],
    ] {
        let (code, body) = post(
            server.url("/v1/models/iris:predict"),
            &json!({"instances": [row]}),
        )
        .await;
        assert_eq!(code, 200, "{body}");
    }
    let logged = || async {
        let (code, text) = send_text(server.url("/v1/models/iris/predictions")).await;
        assert_eq!(code, 200, "{text}");
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    // The worker logged them; within a few seconds they are the main server's.
    let deadline = Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let rows = logged().await;
        if rows.len() == 3 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows.len(), 3, "{rows:?}\n{}", server.log());
    assert_eq!(
        rows[2]["inputs"]["input"],
        json!([[7.7, 3.0, 6.1, 2.3]]),
        "{rows:?}"
    );
    assert_eq!(rows[0]["version"], 1, "{rows:?}");
    // So are the worker's version state changes, recorded by the worker.
    let (code, history) = get(server.url("/v1/models/iris/history")).await;
    assert_eq!(code, 200, "{history}");
    let main = format!(":{}", server.pid());
    let by_worker: Vec<&Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state" && !e["replica"].as_str().unwrap().ends_with(&main))
        .collect();
    assert!(
        by_worker.iter().any(|e| e["detail"]["to"] == "AVAILABLE"),
        "{history}"
    );

    // One more, then the deployment ends: its records are moved before its state
    // directory goes, and stay.
    let (code, body) = post(
        server.url("/v1/models/iris:predict"),
        &json!({"instances": [[5.9, 3.0, 5.1, 1.8]]}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send(reqwest::Client::new().post(server.url("/stop_deployment/iris"))).await;
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while worker_dir.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!worker_dir.exists(), "{}", server.log());
    let rows = logged().await;
    assert_eq!(rows.len(), 4, "{rows:?}\n{}", server.log());
    assert_eq!(
        rows[3]["inputs"]["input"],
        json!([[5.9, 3.0, 5.1, 1.8]]),
        "{rows:?}"
    );
}

async fn send_text(url: String) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
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

/// The main server's bounds on one request hold for a deployed model as for an
/// in-process one, through the main server and on the worker's port: too many
/// rows, too large a body (declared, or chunked with no length), too large an
/// answer. The worker got none of them, so it took what the main server refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_keeps_the_main_servers_request_bounds() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(repo.path(), "local", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(
        repo.path(),
        port_range(20),
        &[
            "--max-request-rows",
            "10",
            "--max-request-bytes",
            "4000",
            "--max-response-bytes",
            "600",
        ],
    )
    .await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let port = answer["port"].as_u64().unwrap();
    let main: std::net::SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let worker: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rows = |n: usize| json!({"instances": vec![ROW; n]}).to_string();
    let padded = format!(
        r#"{{"instances": [{:?}], "pad": "{}"}}"#,
        ROW,
        "x".repeat(5000)
    );
    // (what, body, chunked, status, words)
    let cases = [
        ("one row", rows(1), false, 200, ""),
        ("11 rows", rows(11), false, 413, "rows"),
        (
            "a 5 kB body",
            padded.clone(),
            false,
            413,
            "larger than the limit of 4000 bytes",
        ),
        (
            "a chunked 5 kB body",
            padded,
            true,
            413,
            "larger than the limit of 4000 bytes",
        ),
        ("a 10-row answer", rows(10), false, 413, ""),
    ];
    for (what, body, chunked, status, words) in cases {
        let (in_process, _, local_body) =
            raw_post(main, "/v1/models/local:predict", &body, chunked).await;
        assert_eq!(in_process, status, "in-process, {what}: {local_body}");
        for (addr, via) in [(main, "the main server"), (worker, "the worker's port")] {
            let (code, _, text) = raw_post(addr, "/v1/models/iris:predict", &body, chunked).await;
            assert_eq!(code, status, "deployed, {what}, via {via}: {text}");
            assert!(text.contains(words), "deployed, {what}, via {via}: {text}");
            if status != 200 {
                // The same words as the in-process model's answer.
                assert_eq!(
                    text.replace("iris", "local"),
                    local_body,
                    "deployed, {what}, via {via}"
                );
            }
        }
    }
}

/// A deployed model reads a request body as an in-process one does: a JSON body
/// labelled a form (what `curl -d '{…}'` sends) reaches its worker (it was 404,
/// the forwarding layer read the body as a form), and a body that stops arriving
/// is the client's 408, not a 503 that blames (and names as restarting) the worker,
/// which keeps serving, unrestarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_reads_request_bodies_as_an_in_process_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(repo.path(), "local", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(
        repo.path(),
        port_range(20),
        &["--body-read-timeout-secs", "1"],
    )
    .await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    let client = reqwest::Client::new();
    for model in ["local", "iris"] {
        let (code, body) = send(
            client
                .post(server.url("/predict"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(json!({"model_id": model, "features": ROW}).to_string()),
        )
        .await;
        assert_eq!(code, 200, "{model}: {body}");
        assert_eq!(body["model_id"], model, "{body}");
    }

    let main: std::net::SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let stalled = |path: String| async move {
        let mut stream = tokio::net::TcpStream::connect(main).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {main}\r\nContent-Type: application/json\r\n\
             Content-Length: 200\r\nConnection: close\r\n\r\n{{\"instances\": ["
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
            .await
            .expect("no answer to a stalled body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status: u16 = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    };
    let (code, local) = stalled("/v1/models/local:predict".into()).await;
    assert_eq!(code, 408, "{local}");
    for path in ["/v1/models/iris:predict", "/v2/models/iris/infer"] {
        let (code, body) = stalled(path.into()).await;
        assert_eq!(code, 408, "{path}: {body}");
        assert!(body.contains("stopped arriving for 1s"), "{path}: {body}");
    }
    // The worker was never blamed: it serves on, the same process, no restarts.
    let entry = registry(&server, "iris").await;
    assert_eq!(pid_of(&entry), pid, "{entry}");
    assert_eq!(entry["restarts"], 0, "{entry}");
    assert_eq!(entry["state"], "ready", "{entry}");
    let (code, body) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

/// The `workers` table's rows as (model, port), read from the server's own store
/// (its default place under the repository) while no server runs.
async fn stored_worker_rows(repo: &Path) -> Vec<(String, i64)> {
    let db = format!(
        "sqlite://{}",
        repo.join(".ferroserve/ferroserve.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT model, port FROM workers ORDER BY model")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

/// A deploy refused because its worker cannot start changes nothing, in the store
/// either: the failed attempt's row (its port, `crash-loop`) overwrote the serving
/// worker's, so after a restart the model came back on the failed attempt's port,
/// and a model whose first deploy failed kept a row for a worker it never had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_deploy_leaves_the_stored_worker_as_it_was() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(repo.path(), "other", "examples/models/iris_dt/1/model.onnx");
    let ports = port_range(20);
    let mut server = start_server(repo.path(), ports, &[]).await;
    let (code, first) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{first}");
    let port = first["port"].as_u64().unwrap();

    // No worker starts in 16 MiB: both deploys are refused.
    let starved = |model: &str| json!({"model_id": model, "resources": {"memory_limit": "16Mi"}});
    let (code, body) = deploy(&server, starved("iris")).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("worker did not start"),
        "{body}"
    );
    let (code, body) = deploy(&server, starved("other")).await;
    assert_eq!(code, 503, "{body}");
    let entry = registry(&server, "iris").await;
    assert_eq!(entry["port"], json!(port), "{entry}");
    assert_eq!(entry["pid"], first["pid"], "{entry}");
    assert_eq!(
        get(server.url("/registry/services/other")).await.0,
        404,
        "never deployed"
    );

    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
    assert_gone(&[pid_of(&first)], Duration::from_secs(5));
    drop(server);
    assert_eq!(
        stored_worker_rows(repo.path()).await,
        vec![("iris".to_string(), port as i64)]
    );

    // Back on its old port (free), with its old settings; `other` has no worker.
    let server = start_server(repo.path(), ports, &[]).await;
    let entry = wait_registry(&server, "iris", Duration::from_secs(30), |e| {
        e["state"] == "ready"
    })
    .await;
    assert_eq!(entry["port"], json!(port), "{entry}");
    assert!(entry["resources"]["memory_limit"].is_null(), "{entry}");
    assert_eq!(get(server.url("/registry/services/other")).await.0, 404);
    let pid = pid_of(&entry);
    drop(server);
    assert_gone(&[pid], Duration::from_secs(10));
}

/// Every `resources` field of the wrong kind is a 400 that names it (`timeout` as
/// a string was a serde message about an f64 at some column), and a memory limit
/// that comes to a fraction of a byte is refused, not rounded down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_resources_of_the_wrong_kind_are_a_400_naming_the_field() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(repo.path(), port_range(4), &[]).await;
    for (resources, field, says) in [
        (
            json!({"timeout": "5"}),
            "resources.timeout",
            "number of seconds",
        ),
        (
            json!({"timeout": [5]}),
            "resources.timeout",
            "number of seconds",
        ),
        (
            json!({"memory_limit": "268435456.5"}),
            "resources.memory_limit",
            "whole number of bytes",
        ),
        (
            json!({"memory_limit": 268435456.5}),
            "resources.memory_limit",
            "whole number of bytes",
        ),
        (
            json!({"memory_limit": "0.1Gi"}),
            "resources.memory_limit",
            "whole number of bytes",
        ),
    ] {
        let (code, body) = deploy(
            &server,
            json!({"model_id": "iris", "resources": resources.clone()}),
        )
        .await;
        assert_eq!(code, 400, "{resources}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(field) && error.contains(says),
            "{resources}: {body}"
        );
    }
    assert!(registry_entries(&server).await.is_empty());
}

async fn registry_entries(server: &ChildServer) -> Vec<Value> {
    let (code, list) = get(server.url("/registry/services")).await;
    assert_eq!(code, 200, "{list}");
    list["services"].as_array().unwrap().clone()
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

/// Turns on `[log] sample_rate = 1.0` for the scoring repository's `iris`.
fn log_every_prediction(repo: &Path) {
    let mut config = std::fs::read_to_string(repo.join("iris/config.toml")).unwrap();
    config.push_str("[log]\nsample_rate = 1.0\n");
    std::fs::write(repo.join("iris/config.toml"), config).unwrap();
}

/// Waits until the main store's prediction log of `iris` holds `n` rows, up to 15 s.
async fn wait_logged(server: &ChildServer, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, text) = send_text(server.url("/v1/models/iris/predictions")).await;
        assert_eq!(code, 200, "{text}");
        let rows: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect();
        if rows.len() == n || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A main server killed before it moved its worker's records left them in the
/// worker's state directory; restarted with the worker on another port (the old one
/// taken), nothing read that directory again: the records were stranded for good.
/// At start, every state directory no restored deployment claims has its records
/// moved into the main store and goes; one whose store cannot be read stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_workers_records_reach_the_main_store_at_the_next_start() {
    let (_dir, repo) = scoring_repo();
    log_every_prediction(&repo);
    let ports = port_range(20);
    let server = start_server(&repo, ports, &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let port = answer["port"].as_u64().unwrap();
    for row in [
        [5.1, 3.5, 1.4, 0.2],
        [6.2, 2.9, 4.3, 1.3],
        [7.7, 3.0, 6.1, 2.3],
    ] {
        let (code, body) = post(
            server.url("/v1/models/iris:predict"),
            &json!({"instances": [row]}),
        )
        .await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(wait_logged(&server, 3).await.len(), 3, "{}", server.log());
    kill9(u64::from(server.pid()));
    assert_gone(
        &[u64::from(server.pid()), pid_of(&answer)],
        Duration::from_secs(10),
    );
    drop(server);

    // What a kill before the harvest leaves: the rows in the worker's store, none
    // in the main one (moved back, as they were before the harvest).
    let old_dir = repo.join(format!(".ferroserve/workers/iris-{port}"));
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", old_dir.join("worker.db").display());
        let mut worker = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let main = repo.join(".ferroserve/ferroserve.db");
        sqlx::query("ATTACH DATABASE ? AS main_store")
            .bind(main.display().to_string())
            .execute(&mut worker)
            .await
            .unwrap();
        sqlx::query("INSERT INTO predictions SELECT * FROM main_store.predictions")
            .execute(&mut worker)
            .await
            .unwrap();
        sqlx::query("DELETE FROM main_store.predictions")
            .execute(&mut worker)
            .await
            .unwrap();
        worker.close().await.unwrap();
    }
    // A former worker's directory whose store cannot be read, and one with none.
    let unreadable = repo.join(".ferroserve/workers/other-1");
    std::fs::create_dir_all(&unreadable).unwrap();
    std::fs::write(
        unreadable.join("worker.db"),
        b"not a database at all, not one page",
    )
    .unwrap();
    let empty = repo.join(".ferroserve/workers/other-2");
    std::fs::create_dir_all(&empty).unwrap();

    // The old port is taken: the worker comes back elsewhere.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port as u16)).unwrap();
    let server = start_server(&repo, ports, &[]).await;
    let entry = wait_registry(&server, "iris", Duration::from_secs(30), |e| {
        e["state"] == "ready"
    })
    .await;
    assert_ne!(entry["port"].as_u64(), Some(port), "{entry}");
    let rows = wait_logged(&server, 3).await;
    assert_eq!(rows.len(), 3, "{rows:?}\n{}", server.log());
    assert_eq!(rows[2]["inputs"]["input"], json!([[7.7, 3.0, 6.1, 2.3]]));
    assert!(!old_dir.exists(), "{}", server.log());
    assert!(!empty.exists());
    assert!(unreadable.join("worker.db").is_file());
    // The restored worker keeps its own directory.
    let new_dir = repo.join(format!(
        ".ferroserve/workers/iris-{}",
        entry["port"].as_u64().unwrap()
    ));
    assert!(new_dir.join("worker.db").is_file());
    let pid = pid_of(&entry);
    drop(server);
    assert_gone(&[pid], Duration::from_secs(10));
}

/// A delete of a deployed model killed while its worker drained: the model was gone,
/// but its `delete` event (recorded last) was lost, and its `workers` row (dead
/// pid, state ready) survived every restart. Now the event is in the database
/// before the worker is stopped, and a start forgets the rows of models with no
/// deployment, and moves the stopped worker's records out of its directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_killed_while_its_worker_drains_leaves_its_event_and_no_worker_row() {
    let (_dir, repo) = scoring_repo();
    log_every_prediction(&repo);
    let ports = port_range(20);
    let server = start_server(&repo, ports, &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let port = answer["port"].as_u64().unwrap();
    let (code, body) = post(
        server.url("/v1/models/iris:predict"),
        &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(wait_logged(&server, 1).await.len(), 1, "{}", server.log());
    // The worker cannot drain (stopped): the delete waits for it, and is killed.
    let worker = pid_of(&answer);
    assert!(Command::new("kill")
        .args(["-STOP", &worker.to_string()])
        .status()
        .unwrap()
        .success());
    let url = server.url("/delete_model/iris");
    let delete = tokio::spawn(async move {
        let _ = reqwest::Client::new()
            .delete(url)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill9(u64::from(server.pid()));
    kill9(worker);
    assert_gone(&[u64::from(server.pid()), worker], Duration::from_secs(10));
    let _ = delete.await;
    drop(server);
    assert!(!repo.join("iris").exists(), "the delete had not started");

    let server = start_server(&repo, ports, &[]).await;
    assert_eq!(stored_worker_rows(&repo).await, vec![]);
    let db = format!(
        "sqlite://{}",
        repo.join(".ferroserve/ferroserve.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let deletes: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE model = 'iris' AND kind = 'delete'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(deletes, 1, "{}", server.log());
    let old_dir = repo.join(format!(".ferroserve/workers/iris-{port}"));
    assert!(!old_dir.exists(), "{}", server.log());
}

/// The stored events of `kind` for `model` (their details), read from the server's
/// own store; polled, since most events reach the database within seconds.
async fn stored_event_details(repo: &Path, model: &str, kind: &str, least: usize) -> Vec<Value> {
    let db = format!(
        "sqlite://{}",
        repo.join(".ferroserve/ferroserve.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let details = loop {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT detail FROM events WHERE model = ? AND kind = ? ORDER BY id",
        )
        .bind(model)
        .bind(kind)
        .fetch_all(&pool)
        .await
        .unwrap();
        if rows.len() >= least || Instant::now() >= deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    pool.close().await;
    details
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Waits until the model is served (in-process or not) on the main server.
async fn wait_predicts(server: &ChildServer, model: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = post(
            server.url("/predict"),
            &json!({"model_id": model, "features": ROW}),
        )
        .await;
        if code == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{model} never served: {code} {body}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A deployed model whose directory is removed by hand can still have its
/// deployment ended: `stop_deployment` (which used to load it back in-process,
/// a 404 without its directory, so the worker kept its port until a restart)
/// stops its worker and forgets the deployment, says that nothing serves it, and
/// records why; should its directory come back it is an ordinary in-process model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_deployment_of_a_model_whose_directory_is_gone_ends_its_worker() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "gone", "examples/models/iris_lr/1/model.onnx");
    let ports = port_range(3);
    let server = start_server(repo.path(), ports, &[]).await;
    let (code, deployed) = deploy(&server, json!({"model_id": "gone"})).await;
    assert_eq!(code, 200, "{deployed}");
    let pid = pid_of(&deployed);
    std::fs::remove_dir_all(repo.path().join("gone")).unwrap();
    // Its worker sees the directory go: it serves nothing, and is still deployed.
    wait_registry(&server, "gone", Duration::from_secs(30), |e| {
        e["served_versions"] == json!([])
    })
    .await;

    let (code, body) = send(reqwest::Client::new().post(server.url("/stop_deployment/gone"))).await;
    assert_eq!(code, 200, "{body}\n{}", server.log());
    assert_eq!(body["in_process"], false, "{body}");
    assert_eq!(body["stopped"], false, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("directory is gone")),
        "{body}"
    );
    assert_gone(&[pid], Duration::from_secs(15));
    let (code, body) = get(server.url("/registry/services/gone")).await;
    assert_eq!(code, 404, "{body}");
    let stops = stored_event_details(repo.path(), "gone", "stop", 1).await;
    assert!(
        stops.iter().any(|d| d["serving"] == "nowhere"
            && d["reason"]
                .as_str()
                .is_some_and(|r| r.contains("directory is gone"))),
        "{stops:?}\n{}",
        server.log()
    );

    // The directory comes back: an ordinary model, served in-process, with no
    // deployment anywhere.
    install(repo.path(), "gone", "examples/models/iris_lr/1/model.onnx");
    wait_predicts(&server, "gone").await;
    let status = model_status(&server, "gone").await;
    assert_eq!(status["deployment"], Value::Null, "{status}");
    let (code, body) = get(server.url("/registry/services/gone")).await;
    assert_eq!(code, 404, "{body}");
    drop(server);
    assert_eq!(stored_worker_rows(repo.path()).await, vec![]);
}

/// A deployed model whose directory is removed by hand can be deleted (its worker
/// goes, its deployment is forgotten, the delete recorded) or unloaded (V2: it is
/// stopped, its worker goes); both were a 404 that left the worker running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_whose_directory_is_gone_can_be_deleted_or_unloaded() {
    let repo = tempfile::tempdir().unwrap();
    install(
        repo.path(),
        "deleted",
        "examples/models/iris_lr/1/model.onnx",
    );
    install(
        repo.path(),
        "unloaded",
        "examples/models/iris_lr/1/model.onnx",
    );
    let ports = port_range(4);
    let mut server = start_server(repo.path(), ports, &[]).await;
    let mut pids = Vec::new();
    for model in ["deleted", "unloaded"] {
        let (code, deployed) = deploy(&server, json!({ "model_id": model })).await;
        assert_eq!(code, 200, "{deployed}");
        pids.push(pid_of(&deployed));
        std::fs::remove_dir_all(repo.path().join(model)).unwrap();
    }

    let (code, body) =
        send(reqwest::Client::new().delete(server.url("/delete_model/deleted"))).await;
    assert_eq!(code, 200, "{body}\n{}", server.log());
    assert_gone(&pids[..1], Duration::from_secs(15));
    let (code, body) = get(server.url("/registry/services/deleted")).await;
    assert_eq!(code, 404, "{body}");
    let deletes = stored_event_details(repo.path(), "deleted", "delete", 1).await;
    assert_eq!(deletes.len(), 1, "{deletes:?}");

    let (code, body) = post(
        server.url("/v2/repository/models/unloaded/unload"),
        &json!({}),
    )
    .await;
    assert_eq!(code, 200, "{body}\n{}", server.log());
    assert_gone(&pids[1..], Duration::from_secs(15));
    let (code, body) = get(server.url("/registry/services/unloaded")).await;
    assert_eq!(code, 404, "{body}");

    // Nothing of either deployment is left for a restart to bring back.
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
    drop(server);
    assert_eq!(stored_worker_rows(repo.path()).await, vec![]);
}

/// A deployed model whose directory went while the server was down gets no worker
/// at the next start, and its deployment is forgotten there and then (a `stop`
/// event says why) rather than left in the store: should its directory come back,
/// it is an ordinary in-process model, and `/models/status` and the registry agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_whose_directory_went_while_the_server_was_down_is_forgotten() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "gone", "examples/models/iris_lr/1/model.onnx");
    let ports = port_range(3);
    let mut server = start_server(repo.path(), ports, &[]).await;
    let (code, deployed) = deploy(&server, json!({"model_id": "gone"})).await;
    assert_eq!(code, 200, "{deployed}");
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
    assert_gone(&[pid_of(&deployed)], Duration::from_secs(5));
    drop(server);
    std::fs::remove_dir_all(repo.path().join("gone")).unwrap();

    let mut server = start_server(repo.path(), ports, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(server.url("/v2/health/ready")).await.0 != 200 {
        assert!(Instant::now() < deadline, "main server never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stops = stored_event_details(repo.path(), "gone", "stop", 1).await;
    assert!(
        stops.iter().any(|d| d["reason"]
            .as_str()
            .is_some_and(|r| r.contains("directory is gone"))),
        "{stops:?}\n{}",
        server.log()
    );
    install(repo.path(), "gone", "examples/models/iris_lr/1/model.onnx");
    wait_predicts(&server, "gone").await;
    let status = model_status(&server, "gone").await;
    assert_eq!(status["deployment"], Value::Null, "{status}");
    let (code, body) = get(server.url("/registry/services/gone")).await;
    assert_eq!(code, 404, "{body}");
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(30)).is_some());
    drop(server);
    assert_eq!(stored_worker_rows(repo.path()).await, vec![]);
}
