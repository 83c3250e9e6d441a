//! Refused deploys and deletes, and what the store keeps of each: the worker, its
//! row and its events as they were.

use super::*;

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
