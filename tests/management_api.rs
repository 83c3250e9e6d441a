//! The management REST API (upload, reload, status, deploy, stop, delete), the simple
//! `/predict` API, the KServe V2 repository extension and `/description`, black-box
//! over a real socket.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{install_model, root_path, test_settings, tree, TestServer};
use ferroserve::settings::Settings;
use serde_json::{json, Value};

const ROW: [f64; 4] = [5.1, 3.5, 1.4, 0.2];

fn iris(name: &str) -> Vec<u8> {
    std::fs::read(root_path(&format!("examples/models/{name}/1/model.onnx"))).unwrap()
}

/// The watcher off, so that only the API changes what is served.
fn unwatched(repo: &Path) -> Settings {
    Settings {
        file_system_poll_wait: Duration::ZERO,
        ..test_settings(repo)
    }
}

async fn request(server: &TestServer, method: reqwest::Method, path: &str) -> (u16, Value) {
    let r = server
        .client
        .request(method, server.url(path))
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

async fn status_of(server: &TestServer, model: &str) -> Option<Value> {
    let (code, body) = server.get("/models/status").await;
    assert_eq!(code, 200, "{body}");
    body["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == model)
        .cloned()
}

async fn predict_version(server: &TestServer, model: &str) -> (u16, Value) {
    let (code, body) = server
        .post_json("/predict", &json!({"model_id": model, "features": ROW}))
        .await;
    (code, body)
}

fn error_text(body: &Value) -> String {
    body["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_serves_the_new_version_at_once() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(unwatched(repo.path())).await;

    // model_id defaults to the file name without extension, version to 1.
    let (code, body) = server.upload(&[], "iris.onnx", iris("iris_lr")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (body["model_id"].clone(), body["version"].clone()),
        (json!("iris"), json!(1))
    );
    assert_eq!(body["model"]["served_versions"], json!([1]), "{body}");
    // Read while the upload held the model, but not "busy" on its account.
    assert_eq!(body["model"]["busy"], false, "{body}");
    let (code, answer) = predict_version(&server, "iris").await;
    assert_eq!(
        (code, answer["version"].clone()),
        (200, json!(1)),
        "{answer}"
    );

    // The next upload is the next version, and is what "latest" serves now.
    let (code, body) = server
        .upload(&[("model_id", "iris")], "dt.onnx", iris("iris_dt"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 2);
    let (_, answer) = predict_version(&server, "iris").await;
    assert_eq!(answer["version"], 2, "{answer}");

    // An existing version is a conflict and changes nothing.
    let (code, body) = server
        .upload(
            &[("model_id", "iris"), ("version", "2")],
            "x.onnx",
            iris("iris_lr"),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        std::fs::read(repo.path().join("iris/2/model.onnx")).unwrap(),
        iris("iris_dt")
    );
    // An explicit version works.
    let (code, body) = server
        .upload(
            &[("model_id", "iris"), ("version", "10")],
            "x.onnx",
            iris("iris_lr"),
        )
        .await;
    assert_eq!((code, body["version"].clone()), (200, json!(10)), "{body}");
    assert_eq!(
        tree(repo.path()),
        vec![
            "iris/",
            "iris/1/",
            "iris/1/model.onnx",
            "iris/10/",
            "iris/10/model.onnx",
            "iris/2/",
            "iris/2/model.onnx"
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_and_leave_nothing_behind() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let mut settings = unwatched(repo.path());
    settings.max_upload_bytes = 64 * 1024;
    let server = TestServer::start_with(settings).await;
    let before = tree(repo.path());

    for bad in ["../x", "", "a/b", ".", "..", ".hidden", "a b"] {
        let (code, body) = server
            .upload(&[("model_id", bad)], "m.onnx", iris("iris_lr"))
            .await;
        assert_eq!(code, 400, "{bad:?}: {body}");
        assert!(error_text(&body).contains("model_id"), "{bad:?}: {body}");
    }
    let (code, body) = server
        .upload(&[("version", "0")], "iris.onnx", iris("iris_lr"))
        .await;
    assert_eq!(code, 400, "{body}");
    // Any file name is accepted; content that is no model is refused.
    let (code, body) = server
        .upload(&[], "iris.txt", b"sepal,petal\n5.1,3.5\n".to_vec())
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(error_text(&body).contains("ONNX"), "{body}");

    // Too large: 413.
    let (code, body) = server
        .upload(&[("model_id", "big")], "big.onnx", vec![7u8; 200 * 1024])
        .await;
    assert_eq!(code, 413, "{body}");
    assert!(error_text(&body).contains("limit"), "{body}");

    // Not a model: 400, and the version that serves is untouched.
    let (code, body) = server
        .upload(&[("model_id", "iris")], "iris.onnx", b"garbage".to_vec())
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(error_text(&body).contains("not a model"), "{body}");
    let (code, body) = server
        .upload(&[("model_id", "new")], "new.onnx", b"garbage".to_vec())
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = server.upload(&[], "empty.onnx", Vec::new()).await;
    assert_eq!(code, 400, "{body}");
    let (code, answer) = predict_version(&server, "iris").await;
    assert_eq!((code, answer["version"].clone()), (200, json!(1)));

    // Not multipart at all (a 415 naming multipart, the only type it takes), no
    // file, fields after the file.
    let (code, body) = server.post_json("/upload_model", &json!({})).await;
    assert_eq!(code, 415, "{body}");
    assert!(error_text(&body).contains("multipart/form-data"), "{body}");
    let form = reqwest::multipart::Form::new().text("model_id", "x");
    let r = server
        .client
        .post(server.url("/upload_model"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(iris("iris_lr")).file_name("late.onnx"),
        )
        .text("model_id", "late");
    let r = server
        .client
        .post(server.url("/upload_model"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A field given twice (the last one named the model), an empty one too.
    for (field, first) in [("model_id", "twice"), ("version", "7"), ("version", "")] {
        let value = if field == "version" { "7" } else { "twice" };
        let form = reqwest::multipart::Form::new()
            .text(field, first)
            .text(field, value)
            .part(
                "file",
                reqwest::multipart::Part::bytes(iris("iris_lr")).file_name("twice.onnx"),
            );
        let r = server
            .client
            .post(server.url("/upload_model"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{field}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("is given twice"),
            "{body}"
        );
    }

    assert_eq!(
        tree(repo.path()),
        before,
        "nothing partial or stray is left"
    );

    // A file name that is a path does not become one: only its stem names the model.
    let (code, body) = server.upload(&[], "../../evil.onnx", iris("iris_lr")).await;
    assert_eq!(
        (code, body["model_id"].clone()),
        (200, json!("evil")),
        "{body}"
    );
    assert!(repo.path().join("evil/1/model.onnx").is_file());
    assert!(!repo.path().parent().unwrap().join("evil").exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_to_one_model_are_serialised() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(Settings {
        // The watcher on: it must not pick up a staging directory either.
        file_system_poll_wait: Duration::from_millis(20),
        ..test_settings(repo.path())
    })
    .await;
    let uploads = (0..4).map(|i| {
        let model = if i % 2 == 0 { "iris_lr" } else { "iris_dt" };
        server.upload(&[("model_id", "m")], "m.onnx", iris(model))
    });
    let results = futures::future::join_all(uploads).await;
    let mut versions: Vec<u64> = results
        .iter()
        .map(|(code, body)| {
            assert_eq!(*code, 200, "{body}");
            body["version"].as_u64().unwrap()
        })
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        vec![1, 2, 3, 4],
        "each upload got its own version"
    );
    // Every stored file is whole, and no staging directory is left.
    for v in 1..=4u64 {
        let stored = std::fs::read(repo.path().join(format!("m/{v}/model.onnx"))).unwrap();
        assert!(
            stored == iris("iris_lr") || stored == iris("iris_dt"),
            "version {v} is partial"
        );
    }
    assert!(
        tree(repo.path()).iter().all(|p| !p.contains(".tmp")),
        "{:?}",
        tree(repo.path())
    );
    let (_, answer) = predict_version(&server, "m").await;
    assert_eq!(answer["version"], 4);
    server.stop().await;
}

/// A model folder that holds only an upload's staging (an upload in progress) is
/// no model yet: a deploy of it is 404 and records nothing, neither in memory nor
/// in the store (a deployment recorded there would come back after a restart, or
/// apply to the model once uploaded), and a reload of it says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_of_a_folder_with_only_an_upload_in_progress_is_404_and_records_nothing() {
    // Deployed in this process (tests/management_races.rs checks the 404s of
    // deployments into worker processes).
    let settings = |repo: &Path| Settings {
        worker_ports: None,
        ..unwatched(repo)
    };
    let repo = tempfile::tempdir().unwrap();
    let staging = repo.path().join("m/.tmp-upload-1");
    let server = TestServer::start_with(settings(repo.path())).await;
    // Made after the start, which clears staging left by an earlier process.
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), b"half").unwrap();
    let deploy = json!({"model_id": "m", "resources": {"timeout": 5}});
    let (code, body) = server.post_json("/deploy", &deploy).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("only an upload in progress"),
        "{body}"
    );
    let (code, body) = request(&server, reqwest::Method::POST, "/reload_model?modelname=m").await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("only an upload in progress"),
        "no config list is in force: {body}"
    );

    // The upload lands: the model serves, with no deployment.
    std::fs::remove_dir_all(&staging).unwrap();
    install_model(
        repo.path(),
        "m",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let (code, body) = request(&server, reqwest::Method::POST, "/reload_model?modelname=m").await;
    assert_eq!(code, 200, "{body}");
    let m = status_of(&server, "m").await.unwrap();
    assert!(m["deployment"].is_null(), "{m}");
    server.stop().await;
    // Nor after a restart on the same store.
    let server = TestServer::start_with(settings(repo.path())).await;
    let m = status_of(&server, "m").await.unwrap();
    assert!(m["deployment"].is_null(), "{m}");
    assert_eq!(predict_version(&server, "m").await.0, 200);
    server.stop().await;
}

/// A delete of a model while an upload to it streams: the delete moves the model's
/// folder, the upload's staging directory with it. The delete wins; the upload
/// answers 409 and stores nothing (it answered 500 "cannot read the staging file"
/// when schemathesis sent the two side by side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_during_an_upload_wins_and_the_upload_answers_409() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start_with(unwatched(repo.path())).await;
    assert!(status_of(&server, "iris").await.is_some());

    let boundary = "ferroserve-test-boundary";
    let fields = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\niris\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"dt.onnx\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let end = format!("\r\n--{boundary}--\r\n");
    let model = iris("iris_dt");
    let (first, second) = model.split_at(model.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(server.rest_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /upload_model HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        server.rest_addr,
        fields.len() + model.len() + end.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(fields.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();

    // The first half is in the upload's staging directory inside the model's folder.
    let staged = |repo: &Path| {
        std::fs::read_dir(repo.join("iris"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-upload-"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !staged(repo.path()) {
        assert!(Instant::now() < deadline, "the upload never began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, body) = request(&server, reqwest::Method::DELETE, "/delete_model/iris").await;
    assert_eq!(code, 200, "{body}");

    stream.write_all(second).await.unwrap();
    stream.write_all(end.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 409"), "{answer}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert!(
        error_text(&body).contains("was deleted while this upload was in progress"),
        "{body}"
    );

    // Nothing was stored: no model, no staging, no trash.
    assert_eq!(tree(repo.path()), Vec::<String>::new());
    assert!(status_of(&server, "iris").await.is_none());
    // And the model can be uploaded again.
    let (code, body) = server
        .upload(&[("model_id", "iris")], "dt.onnx", iris("iris_dt"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 1, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_status_stop_deploy_and_delete() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris_lr",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start_with(unwatched(repo.path())).await;
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
    let (code, body) = request(
        &server,
        reqwest::Method::GET,
        "/reload_model?modelname=iris_dt",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["served_versions"], json!({"iris_dt": [1]}), "{body}");
    assert_eq!(body["models"][0]["busy"], false, "{body}");
    assert_eq!(
        predict_version(&server, "iris_lr").await.1["version"],
        1,
        "only the one named"
    );
    let (code, body) = request(&server, reqwest::Method::POST, "/reload_model").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["served_versions"]["iris_lr"], json!([2]), "{body}");
    assert_eq!(predict_version(&server, "iris_lr").await.1["version"], 2);
    let (code, _) = request(
        &server,
        reqwest::Method::GET,
        "/reload_model?modelname=nope",
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = request(
        &server,
        reqwest::Method::GET,
        "/reload_model?modelname=../x",
    )
    .await;
    assert_eq!(code, 400);
    // An empty modelname is a mistake, not a reload of every model.
    let (code, body) = request(&server, reqwest::Method::POST, "/reload_model?modelname=").await;
    assert_eq!(code, 400, "{body}");
    assert!(error_text(&body).contains("modelname"), "{body}");

    // Stop: 404 on predict, files kept, status says stopped, reload-all leaves it.
    let (code, body) = request(&server, reqwest::Method::POST, "/stop_deployment/iris_dt").await;
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
    request(&server, reqwest::Method::POST, "/reload_model").await;
    assert_eq!(
        predict_version(&server, "iris_dt").await.0,
        404,
        "a stopped model stays stopped"
    );
    assert_eq!(
        request(&server, reqwest::Method::POST, "/stop_deployment/nope")
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
    let (code, body) = request(&server, reqwest::Method::DELETE, "/delete_model/iris_dt").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(predict_version(&server, "iris_dt").await.0, 404);
    assert!(!repo.path().join("iris_dt").exists());
    assert!(status_of(&server, "iris_dt").await.is_none());
    assert_eq!(
        request(&server, reqwest::Method::DELETE, "/delete_model/iris_dt")
            .await
            .0,
        404
    );
    assert_eq!(
        request(&server, reqwest::Method::DELETE, "/delete_model/.hidden")
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
        request(&server, reqwest::Method::POST, "/stop_deployment/m")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_predict_by_position_and_by_name() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    std::fs::write(
        repo.path().join("iris/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n\
         [feature_defaults]\nsepal_width = 3.5\n",
    )
    .unwrap();
    let server = TestServer::start_with(unwatched(repo.path())).await;
    let (code, one) = server
        .post_json("/predict", &json!({"model_id": "iris", "features": ROW}))
        .await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["model_id"], "iris");
    assert_eq!(one["version"], 1);
    assert_eq!(one["prediction"], 0, "setosa: {one}");
    let probabilities = one["probabilities"].as_array().unwrap();
    assert_eq!(probabilities.len(), 3);
    let sum: f64 = probabilities.iter().map(|p| p.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-4, "{one}");
    assert!(one["latency"].as_f64().unwrap() >= 0.0);
    assert!(one["timestamp"].as_f64().unwrap() > 1.6e9, "{one}");
    assert!(one["time"].as_str().unwrap().ends_with('Z'));

    let (code, many) = server
        .post_json(
            "/predict",
            &json!({"model_id": "iris", "features": [ROW, [6.7, 3.0, 5.2, 2.3]], "version": 1}),
        )
        .await;
    assert_eq!(code, 200, "{many}");
    assert_eq!(many["prediction"], json!([0, 2]));
    for (a, b) in many["probabilities"][0]
        .as_array()
        .unwrap()
        .iter()
        .zip(probabilities)
    {
        common::assert_close(
            a.as_f64().unwrap(),
            b.as_f64().unwrap(),
            1e-5,
            "batched row 0",
        );
    }

    // By name, with a default for sepal_width, over POST and GET.
    let named = json!({"model_id": "iris", "features": {"sepal_length": 5.1, "petal_length": 1.4, "petal_width": 0.2}});
    let (code, by_name) = server.post_json("/predict", &named).await;
    assert_eq!(code, 200, "{by_name}");
    assert_eq!(by_name["probabilities"], one["probabilities"]);
    let (code, by_query) = server
        .get("/predict/iris?sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2")
        .await;
    assert_eq!(code, 200, "{by_query}");
    assert_eq!(by_query["prediction"], 0);
    assert_eq!(by_query["probabilities"], one["probabilities"]);

    // Unknown and missing features are named.
    let (code, body) = server.get("/predict/iris?sepal_length=5.1&colour=3").await;
    assert_eq!(code, 400);
    let e = error_text(&body);
    assert!(
        e.contains("colour") && e.contains("petal_length") && e.contains("petal_width"),
        "{e}"
    );
    assert!(
        !e.contains("\"sepal_width\"]"),
        "sepal_width has a default: {e}"
    );
    for (bad, code) in [
        (json!({"model_id": "iris", "features": [1, 2, 3]}), 400),
        (json!({"model_id": "iris", "features": []}), 400),
        (
            json!({"model_id": "iris", "features": [[1, 2, 3, 4], [1, 2]]}),
            400,
        ),
        (
            json!({"model_id": "iris", "features": ["a", "b", "c", "d"]}),
            400,
        ),
        (json!({"model_id": "iris"}), 400),
        (json!({"features": ROW}), 400),
        (
            json!({"model_id": "iris", "features": ROW, "extra": 1}),
            400,
        ),
        (
            json!({"model_id": "iris", "features": ROW, "version": 9}),
            404,
        ),
        (json!({"model_id": "nope", "features": ROW}), 404),
    ] {
        let (got, body) = server.post_json("/predict", &bad).await;
        assert_eq!(got, code, "{bad}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(
        server.post_raw("/predict", b"{not json".to_vec()).await.0,
        400
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn description_lists_the_endpoints() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(unwatched(repo.path())).await;
    let (code, body) = server.get("/description").await;
    assert_eq!(code, 200);
    assert_eq!(body["service"], "ferroserve");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let paths: Vec<&str> = body["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for p in [
        "/upload_model",
        "/models/status",
        "/predict",
        "/deploy",
        "/v2/repository/index",
    ] {
        assert!(
            paths.iter().any(|x| x.starts_with(p)),
            "{p} missing from {paths:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scikit_learn_files_can_be_uploaded_too() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(unwatched(repo.path())).await;
    let joblib = std::fs::read(root_path("examples/models/iris_sklearn/1/model.joblib")).unwrap();
    let (code, body) = server
        .upload(&[("model_id", "sk")], "iris.joblib", joblib)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["model"]["versions"][0]["format"], "sklearn", "{body}");
    assert!(repo.path().join("sk/1/model.joblib").is_file());
    let (code, answer) = predict_version(&server, "sk").await;
    assert_eq!(
        (code, answer["version"].clone()),
        (200, json!(1)),
        "{answer}"
    );
    // A pickle that is not a model is refused like any invalid artifact.
    let (code, body) = server
        .upload(&[("model_id", "sk")], "x.pkl", b"\x80\x04N.".to_vec())
        .await;
    assert_eq!(code, 400, "{body}");
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
    let server = TestServer::start_with(unwatched(repo.path())).await;
    let (code, body) = request(&server, reqwest::Method::POST, "/stop_deployment/m").await;
    assert_eq!(code, 200, "{body}");
    std::fs::rename(repo.path().join("m"), away.path().join("m")).unwrap();
    let (code, body) = request(&server, reqwest::Method::POST, "/reload_model?modelname=m").await;
    assert_eq!(code, 404, "{body}");
    std::fs::rename(away.path().join("m"), repo.path().join("m")).unwrap();
    server.stop().await;

    let server = TestServer::start_with(unwatched(repo.path())).await;
    assert_eq!(
        predict_version(&server, "m").await.0,
        404,
        "the refused reload started the model after a restart"
    );
    // A reload that finds it starts it.
    let (code, body) = request(&server, reqwest::Method::POST, "/reload_model?modelname=m").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(predict_version(&server, "m").await.0, 200);
    server.stop().await;
}

/// An upload to a stopped model stores the version and leaves the model stopped, as
/// the store keeps it (it used to start the model until the next restart stopped it
/// again); a reload then serves the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_to_a_stopped_model_stores_it_and_the_model_stays_stopped() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "m",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start_with(unwatched(repo.path())).await;
    let (code, body) = request(&server, reqwest::Method::POST, "/stop_deployment/m").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = server
        .upload(&[("model_id", "m")], "dt.onnx", iris("iris_dt"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 2, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("stopped"),
        "{body}"
    );
    assert_eq!(body["model"]["stopped"], true, "{body}");
    assert!(repo.path().join("m/2/model.onnx").is_file());
    assert_eq!(predict_version(&server, "m").await.0, 404);
    server.stop().await;

    let server = TestServer::start_with(unwatched(repo.path())).await;
    assert_eq!(
        predict_version(&server, "m").await.0,
        404,
        "stopped after a restart"
    );
    let (code, body) = request(&server, reqwest::Method::POST, "/reload_model?modelname=m").await;
    assert_eq!(code, 200, "{body}");
    let (code, answer) = predict_version(&server, "m").await;
    assert_eq!(
        (code, answer["version"].clone()),
        (200, json!(2)),
        "{answer}"
    );
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
    let (code, body) = request(&server, reqwest::Method::DELETE, "/delete_model/d").await;
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
    let (code, body) = request(&server, reqwest::Method::DELETE, "/delete_model/d").await;
    assert_eq!(code, 200, "{body}");
    assert!(!repo.path().join("d").exists());
    let (code, _) = server
        .post_json("/predict", &json!({"model_id": "d", "features": ROW}))
        .await;
    assert_eq!(code, 404);
    server.stop().await;
}

/// With a model config list in force, an upload of a model the list does not name
/// would never be served: it is refused with 409 before anything is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_of_a_model_outside_the_config_list_is_409_and_stores_nothing() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("models.toml");
    let base = repo.path().join("iris");
    std::fs::write(
        &config,
        format!(
            "[[models]]\nname = \"iris\"\nbase_path = {:?}\n",
            base.display().to_string()
        ),
    )
    .unwrap();
    let settings = Settings {
        model_config_file: Some(config),
        ..unwatched(repo.path())
    };
    let server = TestServer::start_with(settings).await;
    let before = tree(repo.path());
    for fields in [
        &[("model_id", "newm")][..],
        &[("model_id", "newm"), ("version", "1")],
    ] {
        let (code, body) = server.upload(fields, "m.onnx", iris("iris_lr")).await;
        assert_eq!(code, 409, "{body}");
        assert!(error_text(&body).contains("model config list"), "{body}");
    }
    assert_eq!(tree(repo.path()), before);
    // A model of the list still takes uploads.
    let (code, body) = server
        .upload(&[("model_id", "iris")], "m.onnx", iris("iris_dt"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 2, "{body}");
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
    let server = TestServer::start_with(unwatched(repo.path())).await;
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

/// An upload of the iris model as `m` with `assets`, each given by the whole
/// file name parameter of its part (`filename="labels.txt"`), so that the test
/// controls the bytes sent.
async fn upload_with_raw_asset_names(server: &TestServer, assets: &[&str]) -> (u16, Value) {
    let boundary = "ferroserve-asset-names";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\nm\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
         filename=\"model.onnx\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&iris("iris_lr"));
    for (i, filename) in assets.iter().enumerate() {
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"asset\"; \
                 {filename}\r\nContent-Type: text/plain\r\n\r\nasset {i}\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = server
        .client
        .post(server.url("/upload_model"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    common::status_and_body(r).await
}

/// Assets are stored under their own names or not at all: a name that would have
/// to be rewritten (it was, silently: `labels (1).txt` became `labels__1_.txt`,
/// `a b.txt` and `a:b.txt` both `a_b.txt`, a long name was cut and lost its
/// extension) is a 400 that names it and the rule, and stores nothing. A name
/// that is a path keeps only its last component: nothing lands outside the
/// version directory. The answer lists the files stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asset_names_are_stored_as_given_or_refused() {
    let outer = tempfile::tempdir().unwrap();
    let repo = outer.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let server = TestServer::start_with(unwatched(&repo)).await;

    let longest = format!("{}.txt", "n".repeat(196));
    let (code, body) = upload_with_raw_asset_names(
        &server,
        &[
            "filename=\"labels-1_v2.txt\"",
            &format!("filename=\"{longest}\""),
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["files"],
        json!(["model.onnx", "labels-1_v2.txt", longest]),
        "{body}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("m/1/labels-1_v2.txt")).unwrap(),
        "asset 0\n"
    );
    assert!(repo.join("m/1").join(&longest).is_file());
    let before = tree(&repo);

    let too_long = format!("{}.txt", "n".repeat(296));
    for (name, words) in [
        ("labels (1).txt", "' ', '(', ')'"),
        ("ünï.txt", "'ü', 'ï'"),
        ("a:b.txt", "':'"),
        ("a b.txt", "' '"),
        (&too_long, "300 characters long"),
        // A percent-encoded path is not decoded, nor stored under a new name.
        ("%2e%2e%2fescaped.txt", "'%'"),
    ] {
        let (code, body) =
            upload_with_raw_asset_names(&server, &[&format!("filename=\"{name}\"")]).await;
        assert_eq!(code, 400, "{name}: {body}");
        let message = error_text(&body);
        for w in [
            name,
            words,
            "ASCII letters, digits, '.', '_' and '-'",
            "200",
        ] {
            assert!(message.contains(w), "{name}: {w:?} not in {message}");
        }
        assert_eq!(tree(&repo), before, "{name}: nothing stored");
    }
    // `filename*` (RFC 5987) is not read: the part has no name, and says so.
    let (code, body) =
        upload_with_raw_asset_names(&server, &["filename*=UTF-8''..%2Fstar.txt"]).await;
    assert_eq!(code, 400, "{body}");
    assert!(error_text(&body).contains("needs a file name"), "{body}");
    assert_eq!(tree(&repo), before);

    // Paths: only the last component is the name, inside the version directory.
    let (code, body) = upload_with_raw_asset_names(
        &server,
        &[
            "filename=\"../up.txt\"",
            "filename=\"../../../root.txt\"",
            "filename=\"/etc/absolute.txt\"",
            "filename=\"..\\\\..\\\\back.txt\"",
            "filename=\"C:\\\\data\\\\windows.txt\"",
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let stored = [
        "up.txt",
        "root.txt",
        "absolute.txt",
        "back.txt",
        "windows.txt",
    ];
    let mut files = vec!["model.onnx"];
    files.extend(stored);
    assert_eq!(body["files"], json!(files), "{body}");
    for name in stored {
        assert!(repo.join("m/2").join(name).is_file(), "{name}");
    }
    // Nothing outside the model's version directories (but the server's state).
    let outside: Vec<String> = tree(outer.path())
        .into_iter()
        .filter(|p| {
            !["repo/", "repo/m/", "repo/m/1/", "repo/m/2/"].contains(&p.as_str())
                && !p.starts_with("repo/.ferroserve/")
                && !p.starts_with("repo/m/1/")
                && !p.starts_with("repo/m/2/")
        })
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
    server.stop().await;
}
