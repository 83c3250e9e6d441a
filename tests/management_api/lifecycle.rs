//! Reload, status, stop, deploy and delete.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_status_stop_deploy_and_delete() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris_lr",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    let m = status_of(&server, "iris_lr").await.unwrap();
    assert_eq!(m["served_versions"], json!([1]));
    assert_eq!(m["versions"][0]["state"], "AVAILABLE");
    assert!(m["endpoints"]["tf_serving"]
        .as_str()
        .unwrap()
        .ends_with("/v1/models/iris_lr"));

    // New files are not seen until a reload (the watcher is off here).
    install_model(
        repo.path(),
        "iris_dt",
        1,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    install_model(
        repo.path(),
        "iris_lr",
        2,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    assert_eq!(predict_version(&server, "iris_dt").await.0, 404);
    let (code, body) = server
        .request(reqwest::Method::GET, "/reload_model?modelname=iris_dt")
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["served_versions"], json!({"iris_dt": [1]}), "{body}");
    assert_eq!(body["models"][0]["busy"], false, "{body}");
    assert_eq!(
        predict_version(&server, "iris_lr").await.1["version"],
        1,
        "only the one named"
    );
    let (code, body) = server.request(reqwest::Method::POST, "/reload_model").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["served_versions"]["iris_lr"], json!([2]), "{body}");
    assert_eq!(predict_version(&server, "iris_lr").await.1["version"], 2);
    let (code, _) = server
        .request(reqwest::Method::GET, "/reload_model?modelname=nope")
        .await;
    assert_eq!(code, 404);
    let (code, _) = server
        .request(reqwest::Method::GET, "/reload_model?modelname=../x")
        .await;
    assert_eq!(code, 400);
    // An empty modelname is a mistake, not a reload of every model.
    let (code, body) = server
        .request(reqwest::Method::POST, "/reload_model?modelname=")
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(error_text(&body).contains("modelname"), "{body}");

    // Stop: 404 on predict, files kept, status says stopped, reload-all leaves it.
    let (code, body) = server
        .request(reqwest::Method::POST, "/stop_deployment/iris_dt")
        .await;
    assert_eq!(code, 200, "{body}");
    // Told it is stopped and how to serve it again (the simple API, TF Serving REST),
    // not "not found" as a model that does not exist.
    let (code, body) = predict_version(&server, "iris_dt").await;
    assert_eq!(code, 404, "{body}");
    assert!(
        error_text(&body).contains("\"iris_dt\" is stopped: a reload"),
        "{body}"
    );
    let (code, body) = server
        .post_json("/v1/models/iris_dt:predict", &json!({"instances": [ROW]}))
        .await;
    assert_eq!(code, 404, "{body}");
    assert!(error_text(&body).contains("is stopped"), "{body}");
    assert!(repo.path().join("iris_dt/1/model.onnx").is_file());
    let m = status_of(&server, "iris_dt").await.unwrap();
    assert_eq!(
        (m["stopped"].clone(), m["served"].clone()),
        (json!(true), json!(false)),
        "{m}"
    );
    server.request(reqwest::Method::POST, "/reload_model").await;
    assert_eq!(
        predict_version(&server, "iris_dt").await.0,
        404,
        "a stopped model stays stopped"
    );
    assert_eq!(
        server
            .request(reqwest::Method::POST, "/stop_deployment/nope")
            .await
            .0,
        404
    );

    // Deploy brings it back with its settings, reported.
    let (code, body) = server
        .post_json(
            "/deploy",
            &json!({"model_id": "iris_dt", "environment": "staging",
                    "resources": {"cpu_limit": "500m", "memory_limit": "1Gi", "timeout": 5}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(body["message"].as_str().unwrap().contains("deployed"));
    assert!(
        body["service_url"]
            .as_str()
            .unwrap()
            .ends_with("/predict/iris_dt"),
        "{body}"
    );
    assert_eq!(body["port"], server.rest_addr.port());
    assert_eq!(body["deployment"]["resources"]["memory_limit"], "1Gi");
    assert_eq!(body["deployment"]["enforced"]["timeout"], true);
    assert_eq!(body["deployment"]["enforced"]["cpu_limit"], false);
    assert_eq!(body["busy"], false, "{body}");
    assert_eq!(predict_version(&server, "iris_dt").await.0, 200);
    let m = status_of(&server, "iris_dt").await.unwrap();
    assert_eq!(m["deployment"]["environment"], "staging");
    assert_eq!(
        server
            .post_json("/deploy", &json!({"model_id": "nope"}))
            .await
            .0,
        404
    );
    assert_eq!(
        server.post_json("/deploy", &json!({"model": "x"})).await.0,
        400
    );
    let bad_timeout = json!({"model_id": "iris_dt", "resources": {"timeout": -1}});
    assert_eq!(server.post_json("/deploy", &bad_timeout).await.0, 400);

    // Delete: 404 on predict, files gone, gone from status.
    let (code, body) = server
        .request(reqwest::Method::DELETE, "/delete_model/iris_dt")
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(predict_version(&server, "iris_dt").await.0, 404);
    assert!(!repo.path().join("iris_dt").exists());
    assert!(status_of(&server, "iris_dt").await.is_none());
    assert_eq!(
        server
            .request(reqwest::Method::DELETE, "/delete_model/iris_dt")
            .await
            .0,
        404
    );
    assert_eq!(
        server
            .request(reqwest::Method::DELETE, "/delete_model/.hidden")
            .await
            .0,
        400
    );
    assert!(tree(repo.path()).iter().all(|p| !p.starts_with(".tmp")));
    assert_eq!(
        predict_version(&server, "iris_lr").await.0,
        200,
        "others unaffected"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_models_are_not_reloaded_by_the_watcher() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "m",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start_with(Settings {
        file_system_poll_wait: Duration::from_millis(20),
        ..test_settings(repo.path())
    })
    .await;
    assert_eq!(
        server
            .request(reqwest::Method::POST, "/stop_deployment/m")
            .await
            .0,
        200
    );
    // A new version on disk must not bring it back either, over many polls.
    install_model(
        repo.path(),
        "m",
        2,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    let until = Instant::now() + Duration::from_millis(400);
    while Instant::now() < until {
        assert_eq!(predict_version(&server, "m").await.0, 404);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The V2 repository extension loads it again, and unloads it. A load's
    // overrides (Triton's config and files) are refused, as is a malformed body:
    // they were ignored, and the model loaded as it was on disk.
    for bad in [
        json!({"parameters": {"config": "{\"max_batch_size\": 8}"}}),
        json!({"parameters": {"file:1/model.onnx": "AAAA"}}),
        json!({"params": {}}),
        json!([]),
    ] {
        let (code, body) = server.post_json("/v2/repository/models/m/load", &bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert_eq!(predict_version(&server, "m").await.0, 404, "{bad}");
    }
    let (code, body) = server
        .post_json("/v2/repository/models/m/load", &json!({"parameters": {}}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(predict_version(&server, "m").await.1["version"], 2);
    let (code, index) = server
        .post_json("/v2/repository/index", &json!({"ready": true}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        index,
        json!([{"name": "m", "version": "2", "state": "AVAILABLE", "reason": ""}])
    );
    let (code, body) = server
        .post_json(
            "/v2/repository/models/m/unload",
            &json!({"parameters": {"unload_dependents": "yes"}}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    // A parameter an unload does not take is told as an unload's.
    let (code, body) = server
        .post_json(
            "/v2/repository/models/m/unload",
            &json!({"parameters": {"x": true}}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(
            "unload parameter \"x\" is not supported: an unload takes only unload_dependents"
        ),
        "{body}"
    );
    let (code, _) = server
        .post_json(
            "/v2/repository/models/m/unload",
            &json!({"parameters": {"unload_dependents": false}}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(server.get("/v2/models/m/ready").await.0, 404);
    // The index lists the unloaded model, UNAVAILABLE with why; the ready one does not.
    let (code, index) = server.post_json("/v2/repository/index", &json!({})).await;
    assert_eq!(code, 200, "{index}");
    assert_eq!(index[0]["name"], "m", "{index}");
    assert_eq!(index[0]["state"], "UNAVAILABLE", "{index}");
    assert!(
        index[0]["reason"].as_str().unwrap().contains("unloaded"),
        "{index}"
    );
    let (_, ready) = server
        .post_json("/v2/repository/index", &json!({"ready": true}))
        .await;
    assert_eq!(ready, json!([]));
    assert_eq!(
        server
            .post_json("/v2/repository/models/nope/load", &json!({}))
            .await
            .0,
        404
    );
    let (_, meta) = server.get("/v2").await;
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("model_repository")));
    server.stop().await;
}

/// A reload refused because the model's folder is gone (404) leaves a stopped model
/// stopped, in the store too: once the folder is back, a restart does not serve it
/// (the reload used to record the model as started before it was refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_leaves_a_stopped_model_stopped_across_a_restart() {
    let repo = tempfile::tempdir().unwrap();
    let away = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "m",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    let (code, body) = server
        .request(reqwest::Method::POST, "/stop_deployment/m")
        .await;
    assert_eq!(code, 200, "{body}");
    std::fs::rename(repo.path().join("m"), away.path().join("m")).unwrap();
    let (code, body) = server
        .request(reqwest::Method::POST, "/reload_model?modelname=m")
        .await;
    assert_eq!(code, 404, "{body}");
    std::fs::rename(away.path().join("m"), repo.path().join("m")).unwrap();
    server.stop().await;

    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    assert_eq!(
        predict_version(&server, "m").await.0,
        404,
        "the refused reload started the model after a restart"
    );
    // A reload that finds it starts it.
    let (code, body) = server
        .request(reqwest::Method::POST, "/reload_model?modelname=m")
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(predict_version(&server, "m").await.0, 200);
    server.stop().await;
}

/// A delete that cannot move the model's files out of sight changes nothing: it
/// answers 500 naming the cause, and the model serves on with its files and its
/// stored settings; once the cause is gone the delete works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_cannot_move_the_files_changes_nothing() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "d",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start(repo.path()).await;
    // A deployment, so that the store holds a row for d that the refused delete,
    // which forgets it first, must write back.
    let (code, body) = server
        .post_json(
            "/deploy",
            &json!({"model_id": "d", "resources": {"timeout": 30}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // Every name the delete could move the model to is a directory that is not
    // empty (rename(2) refuses to replace one). Made after the start, whose sweep
    // removes such debris; young, so the watcher's sweep leaves them for now.
    let blockers: Vec<_> = (0..2048)
        .map(|n| {
            let dir = repo
                .path()
                .join(format!(".tmp-delete-{}-{n}", std::process::id()));
            std::fs::create_dir_all(dir.join("x")).unwrap();
            dir
        })
        .collect();
    let (code, body) = server
        .request(reqwest::Method::DELETE, "/delete_model/d")
        .await;
    assert_eq!(code, 500, "{body}");
    assert!(
        error_text(&body).contains("cannot delete model \"d\""),
        "{body}"
    );
    assert!(repo.path().join("d/1/model.onnx").is_file());
    let (code, body) = server
        .post_json("/predict", &json!({"model_id": "d", "features": ROW}))
        .await;
    assert_eq!(code, 200, "the refused delete stopped serving d: {body}");
    let status = status_of(&server, "d")
        .await
        .expect("d is gone from status");
    assert_eq!(status["served_versions"], json!([1]), "{status}");
    assert_eq!(status["stopped"], false, "{status}");
    assert_eq!(
        status["deployment"]["resources"]["timeout"], 30.0,
        "{status}"
    );
    // The store still records the deployment: a restart brings it back (and its
    // start sweeps the blockers away).
    server.stop().await;
    let server = TestServer::start(repo.path()).await;
    let status = status_of(&server, "d").await.expect("d after a restart");
    assert_eq!(
        status["deployment"]["resources"]["timeout"], 30.0,
        "{status}"
    );

    for dir in blockers {
        let _ = std::fs::remove_dir_all(dir);
    }
    let (code, body) = server
        .request(reqwest::Method::DELETE, "/delete_model/d")
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(!repo.path().join("d").exists());
    let (code, _) = server
        .post_json("/predict", &json!({"model_id": "d", "features": ROW}))
        .await;
    assert_eq!(code, 404);
    server.stop().await;
}

/// `POST /reload_model` with a body, a content type (`None`: none sent) and the
/// query in `path`.
async fn post_reload(
    server: &TestServer,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut r = server.client.post(server.url(path)).body(body.to_string());
    if let Some(content_type) = content_type {
        r = r.header("content-type", content_type);
    }
    common::status_and_body(r.send().await.unwrap()).await
}

/// A `POST /reload_model` that is refused: what it shows, its path, content type,
/// body, and the status and words of its answer.
type RefusedReload<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, u16, &'a str);

/// `POST /reload_model` takes the model from a JSON body `{"modelname": NAME}` as
/// from the query: a body it cannot read, or one that disagrees with the query, is
/// a 400 and reloads nothing (it reloaded every model, the body unread); no body
/// keeps reloading every model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_model_reads_the_model_from_a_json_body() {
    let repo = tempfile::tempdir().unwrap();
    for model in ["iris_lr", "iris_dt"] {
        let onnx = root_path(&format!("examples/models/{model}/1/model.onnx"));
        install_model(repo.path(), model, 1, &onnx);
    }
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    // New versions, seen only by a reload of their model.
    for model in ["iris_lr", "iris_dt"] {
        let onnx = root_path(&format!("examples/models/{model}/1/model.onnx"));
        install_model(repo.path(), model, 2, &onnx);
    }
    let json = Some("application/json");

    let (code, body) =
        post_reload(&server, "/reload_model", json, r#"{"modelname":"iris_dt"}"#).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["message"], "model iris_dt reloaded", "{body}");
    assert_eq!(body["served_versions"], json!({"iris_dt": [2]}), "{body}");
    assert_eq!(predict_version(&server, "iris_dt").await.1["version"], 2);

    let refused: [RefusedReload; 10] = [
        (
            "unknown model",
            "/reload_model",
            json,
            r#"{"modelname":"nosuch"}"#,
            404,
            "nosuch",
        ),
        (
            "bad JSON",
            "/reload_model",
            json,
            "{not json",
            400,
            "malformed JSON body",
        ),
        (
            "not an object",
            "/reload_model",
            json,
            "[1,2]",
            400,
            "must be a JSON object ({\"modelname\": \"NAME\"}), not a list",
        ),
        (
            "unknown field",
            "/reload_model",
            json,
            r#"{"model_name":"iris_lr"}"#,
            400,
            "unknown field \"model_name\"",
        ),
        (
            "a number",
            "/reload_model",
            json,
            r#"{"modelname":5}"#,
            400,
            "modelname must be a string naming a model (leave it out to reload every model), \
             not a number",
        ),
        (
            "null",
            "/reload_model",
            json,
            r#"{"modelname":null}"#,
            400,
            "not null",
        ),
        (
            "empty name",
            "/reload_model",
            json,
            r#"{"modelname":""}"#,
            400,
            "modelname is empty",
        ),
        (
            "no content type",
            "/reload_model",
            None,
            "{not json",
            400,
            "malformed JSON body",
        ),
        (
            "query disagrees",
            "/reload_model?modelname=iris_dt",
            json,
            r#"{"modelname":"iris_lr"}"#,
            400,
            "name the model once",
        ),
        (
            "not JSON",
            "/reload_model",
            Some("text/plain"),
            "iris_lr",
            415,
            "application/json",
        ),
    ];
    for (case, path, content_type, body_text, want, words) in refused {
        let (code, body) = post_reload(&server, path, content_type, body_text).await;
        assert_eq!(code, want, "{case}: {body}");
        assert!(error_text(&body).contains(words), "{case}: {body}");
    }
    assert_eq!(
        predict_version(&server, "iris_lr").await.1["version"],
        1,
        "no refused request reloaded every model"
    );

    // A body and a query that agree; `{}` leaves the choice to the query.
    let (code, body) = post_reload(
        &server,
        "/reload_model?modelname=iris_dt",
        json,
        r#"{"modelname":"iris_dt"}"#,
    )
    .await;
    assert_eq!(
        (code, body["served_versions"].clone()),
        (200, json!({"iris_dt": [2]})),
        "{body}"
    );
    let (code, body) = post_reload(&server, "/reload_model?modelname=iris_dt", json, " {} ").await;
    assert_eq!(
        (code, body["served_versions"].clone()),
        (200, json!({"iris_dt": [2]})),
        "{body}"
    );
    assert_eq!(predict_version(&server, "iris_lr").await.1["version"], 1);

    // No body (Content-Length 0) reloads every model, as before.
    let (code, body) = post_reload(&server, "/reload_model", json, "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["message"], "2 models reloaded", "{body}");
    assert_eq!(predict_version(&server, "iris_lr").await.1["version"], 2);
    server.stop().await;
}
