//! A deployed model whose directory is gone: stopped, deleted or unloaded, forgotten
//! when it went while the server was down, its worker ended when it goes while
//! serving.

use super::*;

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
