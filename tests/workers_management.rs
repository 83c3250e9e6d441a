//! Isolated deployments (issue 14): management of deployed models against the real
//! binary: ending a deployment (under load, past the management timeout, with its
//! client gone, its directory gone), config lists that leave a deployed model out,
//! refused deploys and deletes, and what the store keeps of each.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::root_path;
use common::workers::*;
use serde_json::{json, Value};

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

/// A deployed model whose directory is removed while the server runs loses its
/// deployment by itself: within a poll or two the watcher has its worker stopped
/// (it kept running, holding its port, with the registry saying `ready`, while
/// `/models/status` no longer listed the model and predict was a 404), the
/// registry forgets it, the store's history says why; should the directory come
/// back, it is an ordinary in-process model. A second model plays a replica whose
/// model another replica sharing the repository and the store deleted (its stored
/// settings gone before its files): its worker goes too, and nothing is written
/// for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_whose_directory_goes_while_serving_loses_its_worker() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "gone", "examples/models/iris_lr/1/model.onnx");
    install(
        repo.path(),
        "elsewhere",
        "examples/models/iris_lr/1/model.onnx",
    );
    let ports = port_range(4);
    let server = start_server(repo.path(), ports, &[]).await;
    let mut pids = Vec::new();
    for model in ["gone", "elsewhere"] {
        let (code, deployed) = deploy(&server, json!({ "model_id": model })).await;
        assert_eq!(code, 200, "{deployed}");
        pids.push(pid_of(&deployed));
    }
    let db = format!(
        "sqlite://{}",
        repo.path().join(".ferroserve/ferroserve.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    sqlx::query("DELETE FROM model_settings WHERE model = 'elsewhere'")
        .execute(&pool)
        .await
        .unwrap();
    for model in ["gone", "elsewhere"] {
        std::fs::remove_dir_all(repo.path().join(model)).unwrap();
    }

    // The watcher polls every second and ends a deployment gone for 5 s.
    assert_gone(&pids, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    for model in ["gone", "elsewhere"] {
        loop {
            let (code, body) = get(server.url(&format!("/registry/services/{model}"))).await;
            if code == 404 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{model} still registered: {code} {body}\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stops = stored_event_details(repo.path(), "gone", "stop", 1).await;
    assert!(
        stops.iter().any(|d| d["serving"] == "nowhere"
            && d["reason"].as_str().is_some_and(|r| r.contains(
                "its directory is gone from the model repository, so nothing serves it"
            ))),
        "{stops:?}\n{}",
        server.log()
    );
    assert_eq!(
        stored_event_details(repo.path(), "elsewhere", "stop", 0).await,
        Vec::<Value>::new()
    );
    let rows: Vec<String> = sqlx::query_scalar("SELECT model FROM model_settings ORDER BY model")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows, vec!["gone".to_string()], "{}", server.log());
    pool.close().await;

    // The directory comes back: an ordinary model, served in-process.
    install(repo.path(), "gone", "examples/models/iris_lr/1/model.onnx");
    wait_predicts(&server, "gone").await;
    let status = model_status(&server, "gone").await;
    assert_eq!(status["deployment"], Value::Null, "{status}");
    let (code, body) = get(server.url("/registry/services/gone")).await;
    assert_eq!(code, 404, "{body}");
    drop(server);
    assert_eq!(stored_worker_rows(repo.path()).await, vec![]);
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

/// Uploads `file` as a new version of `model`; the answer.
async fn upload(server: &common::child::ChildServer, model: &str, file: &str) -> (u16, Value) {
    let bytes = std::fs::read(root_path(file)).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("model_id", model.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("model.onnx"),
        );
    send(
        reqwest::Client::new()
            .post(server.url("/upload_model"))
            .multipart(form),
    )
    .await
}

/// An upload to a deployed model answers as one to an in-process model does: once
/// the worker serves the new version ("uploaded and served", and a predict on it
/// works at once; it answered "the model's worker process loads it" and the
/// version was 404 for a second or more), and, for a version its policy does not
/// select, "its version policy does not serve it".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_a_deployed_model_answers_once_its_worker_serves_it() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(
        repo.path(),
        "pinned",
        "examples/models/iris_lr/1/model.onnx",
    );
    std::fs::write(
        repo.path().join("pinned/config.toml"),
        "version_policy = { specific = [1] }\n",
    )
    .unwrap();
    let server = start_server(repo.path(), port_range(20), &[]).await;
    for model in ["iris", "pinned"] {
        let (code, answer) = deploy(&server, json!({"model_id": model})).await;
        assert_eq!(code, 200, "{answer}");
    }

    let (code, body) = upload(&server, "iris", "examples/models/iris_dt/1/model.onnx").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["message"], "model iris version 2 uploaded and served",
        "{body}"
    );
    assert_eq!(body["model"]["served_versions"], json!([2]), "{body}");
    let (code, answer) = post(
        server.url("/v1/models/iris/versions/2:predict"),
        &json!({"instances": [ROW]}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");

    let (code, body) = upload(&server, "pinned", "examples/models/iris_dt/1/model.onnx").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["message"], "model pinned version 2 uploaded; its version policy does not serve it",
        "{body}"
    );
    assert_eq!(body["model"]["served_versions"], json!([1]), "{body}");
}

/// TF Serving's status calls name a stopped model as every other route does
/// ("is stopped: a reload ... or a deploy serves it again"), still 404 /
/// NOT_FOUND; they said "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_of_a_stopped_model_says_it_is_stopped() {
    use ferroserve_proto::tensorflow::serving::model_service_client::ModelServiceClient;
    use ferroserve_proto::tensorflow::serving::{self as tfs};

    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "dt", "examples/models/iris_dt/1/model.onnx");
    let (server, grpc_port) = start_server_with_grpc(repo.path(), port_range(20), &[]).await;
    wait_predicts(&server, "dt").await;
    let (code, body) = send(reqwest::Client::new().post(server.url("/stop_deployment/dt"))).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["stopped"], true, "{body}");
    let stopped = "model \"dt\" is stopped: a reload";
    for path in ["/v1/models/dt", "/v1/models/dt/versions/1"] {
        let (code, body) = get(server.url(path)).await;
        assert_eq!(code, 404, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(stopped),
            "{path}: {body}"
        );
    }
    let mut models = ModelServiceClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .unwrap();
    let status = models
        .get_model_status(tfs::GetModelStatusRequest {
            model_spec: Some(tfs::ModelSpec {
                name: "dt".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(status.message().contains(stopped), "{status:?}");
}

/// A label whose version the policy does not serve names the versions actually
/// served: a newer version that failed to load is not among them (it said "it
/// serves versions [3, 4]" with 4 in END, failed, and only 3 served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_not_served_names_only_the_versions_served() {
    let repo = tempfile::tempdir().unwrap();
    for v in [2, 3] {
        let dir = repo.path().join("lab").join(v.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            root_path("examples/models/iris_lr/1/model.onnx"),
            dir.join("model.onnx"),
        )
        .unwrap();
    }
    std::fs::write(
        repo.path().join("lab/config.toml"),
        "version_policy = { latest = 2 }\n\n[labels]\nstable = 2\n",
    )
    .unwrap();
    let server = start_server(repo.path(), port_range(20), &[]).await;
    wait_predicts(&server, "lab").await;
    std::fs::create_dir_all(repo.path().join("lab/4")).unwrap();
    std::fs::write(repo.path().join("lab/4/model.onnx"), b"not a model").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        let (code, body) = post(
            server.url("/v1/models/lab/labels/stable:predict"),
            &json!({"instances": [ROW]}),
        )
        .await;
        if code != 200 {
            break body["error"].as_str().unwrap_or_default().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "label stable still served\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status = model_status(&server, "lab").await;
    assert_eq!(status["served_versions"], json!([3]), "{status}");
    assert!(
        error.contains("(it serves versions [3]; version 4 failed to load)"),
        "{error}\n{status}"
    );
}
