//! A restart on the same store keeps what management decided and the history, on
//! every database; a refused deploy records nothing.

use super::*;

/// Stop one model, deploy another with a timeout, upload a version; restart on the
/// same store: stopped stays stopped, the timeout is in force, the history whole.
async fn restart_keeps_decisions_and_history(database_url: Option<String>) {
    let repo = repo();
    let settings = store_settings(repo.path(), database_url);
    let again = settings.clone();
    let server = TestServer::start_with(settings.clone()).await;

    let (code, body) = server
        .post_json("/stop_deployment/iris_lr", &json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    // A deadline no request can meet: every prediction of iris_dt is 504 while the
    // deployment is in force.
    let (code, body) = server
        .post_json(
            "/deploy",
            &json!({ "model_id": "iris_dt", "resources": { "timeout": 0.000001 } }),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(predict(&server, "iris_dt").await.0, 504);
    let file = std::fs::read(root_path("examples/models/iris_lr/1/model.onnx")).unwrap();
    let sha256: String = sha2::Sha256::digest(&file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (code, body) = server
        .upload(&[("model_id", "uploaded")], "lr.onnx", file)
        .await;
    assert_eq!(code, 200, "{body}");
    // Status names each event by the id the history gives it, once it is written
    // (every event recorded since the start said 0).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, status) = server.get("/models/status").await;
        let ids: Vec<i64> = model_status(&status, "iris_lr")["recent_events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        let stored: Vec<i64> = history(&server, "iris_lr")
            .await
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .take(ids.len())
            .collect();
        if !ids.is_empty() && !ids.contains(&0) && ids == stored {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status {ids:?}, history {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;

    let server = TestServer::start_with(settings).await;
    let (_, status) = server.get("/models/status").await;
    let lr = model_status(&status, "iris_lr");
    assert_eq!(lr["stopped"], true, "{lr}");
    assert_eq!(lr["served"], false, "{lr}");
    assert_eq!(predict(&server, "iris_lr").await.0, 404);
    let dt = model_status(&status, "iris_dt");
    assert_eq!(dt["deployment"]["resources"]["timeout"], 0.000001, "{dt}");
    assert_eq!(
        predict(&server, "iris_dt").await.0,
        504,
        "the timeout is in force"
    );
    assert_eq!(predict(&server, "uploaded").await.0, 200);
    // Status shows the latest events without asking the database.
    assert_eq!(lr["recent_events"][0]["kind"], "stop", "{lr}");

    let lr = history(&server, "iris_lr").await;
    let stop = lr
        .iter()
        .find(|e| e["kind"] == "stop")
        .expect("a stop event");
    assert!(
        stop["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{stop}"
    );
    let states: Vec<(&str, &str)> = lr
        .iter()
        .filter(|e| e["kind"] == "state")
        .map(|e| {
            (
                e["detail"]["from"].as_str().unwrap(),
                e["detail"]["to"].as_str().unwrap(),
            )
        })
        .rev()
        .collect();
    assert!(
        states.ends_with(&[("AVAILABLE", "UNLOADING"), ("UNLOADING", "END")]),
        "{states:?}"
    );
    let dt = history(&server, "iris_dt").await;
    let deploy = dt
        .iter()
        .find(|e| e["kind"] == "deploy")
        .expect("a deploy event");
    assert_eq!(deploy["detail"]["timeout_secs"], 0.000001, "{deploy}");
    let up = history(&server, "uploaded").await;
    let upload = up
        .iter()
        .find(|e| e["kind"] == "upload")
        .expect("an upload event");
    assert_eq!(upload["version"], 1);
    assert_eq!(upload["detail"]["sha256"], sha256.as_str());
    assert_eq!(upload["detail"]["file_name"], "lr.onnx");
    assert!(upload["detail"]["bytes"].as_u64().unwrap() > 0);

    // Reloading starts the stopped model again, and that too survives a restart.
    let (code, body) = server
        .post_json("/reload_model?modelname=iris_lr", &json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    server.stop().await;
    let server = TestServer::start_with(again).await;
    assert_eq!(predict(&server, "iris_lr").await.0, 200);
    // Paged newest first.
    let (code, page) = server.get("/v1/models/iris_lr/history?limit=2").await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let before = page["next_before"].as_i64().expect("more pages");
    let (_, older) = server
        .get(&format!(
            "/v1/models/iris_lr/history?limit=2&before={before}"
        ))
        .await;
    assert!(
        older["events"][0]["id"].as_i64().unwrap() < before,
        "{older}"
    );
    let (code, body) = server.get("/v1/models/iris_lr/history?limit=x").await;
    assert_eq!(code, 400, "{body}");
    // A parameter given twice: which one counts is not guessed.
    let (code, body) = server
        .get("/v1/models/iris_lr/history?limit=1&limit=2")
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"limit\" is given twice"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_restart_keeps_decisions_and_history() {
    restart_keeps_decisions_and_history(None).await;
}

#[tokio::test(flavor = "current_thread")]
async fn postgres_restart_keeps_decisions_and_history() {
    let db = start_db(DbKind::Postgres).await;
    restart_keeps_decisions_and_history(Some(db.url())).await;
}

#[tokio::test(flavor = "current_thread")]
async fn mariadb_restart_keeps_decisions_and_history() {
    let db = start_db(DbKind::MariaDb).await;
    restart_keeps_decisions_and_history(Some(db.url())).await;
}

/// A deploy of a model the server does not have is a 404 that records nothing:
/// no settings row is left for the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_deploy_leaves_no_row() {
    let repo = repo();
    let server = TestServer::start_with(store_settings(repo.path(), None)).await;
    let (code, body) = server
        .post_json("/deploy", &json!({"model_id": "nope"}))
        .await;
    assert_eq!(code, 404, "{body}");
    server.stop().await;
    assert_eq!(common::stored_settings_rows(repo.path(), "nope").await, 0);
}
