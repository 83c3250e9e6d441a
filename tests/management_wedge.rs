//! Management must not wedge (issue 10): a stalled upload holds no model, every
//! operation has a deadline and never runs after its caller left, a stop wins over a
//! reload of every model, a deployment's timeout applies at once, shutdown ends with
//! a stalled client, crash debris goes at start, and loads are bounded.
//!
//! A model's lock is held for as long as a test wants by putting `config.toml.hold`
//! beside its `config.toml`: in debug builds a reload of that model waits reading the
//! file, under the lock, until the test removes it (as on a hung network file system;
//! `model_config::hold_for_tests`). A FIFO did this once; FIFOs are refused now.

mod common;

use common::eventually_some;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{install_model, onnxruntime_path, root_path, test_settings, TestServer};
use ferroserve::backends::BackendOptions;
use ferroserve::manager::{LoadLimits, Manager, VersionRequest};
use ferroserve::settings::Settings;
use ferroserve::sources::Sources;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const ROW: [f64; 4] = [5.1, 3.5, 1.4, 0.2];

fn iris() -> PathBuf {
    root_path("examples/models/iris_lr/1/model.onnx")
}

/// The watcher off (only the API changes what is served), a short management timeout.
fn settings(repo: &Path) -> Settings {
    Settings {
        file_system_poll_wait: Duration::ZERO,
        management_timeout: Duration::from_secs(5),
        ..test_settings(repo)
    }
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

/// A request with a client timeout; `None` when the client gave up.
async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    timeout: Duration,
) -> Option<(u16, Value)> {
    let r = client(timeout)
        .request(method, server.url(path))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let text = r.text().await.ok()?;
    Some((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn upload(server: &TestServer, model: &str, timeout: Duration) -> Option<(u16, Value)> {
    let form = reqwest::multipart::Form::new()
        .text("model_id", model.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(std::fs::read(iris()).unwrap())
                .file_name("m.onnx".to_string()),
        );
    let r = client(timeout)
        .post(server.url("/upload_model"))
        .multipart(form)
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let text = r.text().await.ok()?;
    Some((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
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

/// A client that sends the headers of an upload of `model` and part of the file,
/// then nothing more; it leaves when the stream is dropped.
async fn stalled_upload(server: &TestServer, model: &str) -> tokio::net::TcpStream {
    let file = std::fs::read(iris()).unwrap();
    let mut body = format!(
        "--XB\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\n{model}\r\n\
         --XB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.onnx\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&file[..file.len() / 2]);
    let head = format!(
        "POST /upload_model HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: multipart/form-data; boundary=XB\r\nContent-Length: {}\r\n\r\n",
        server.rest_addr,
        body.len() + 100_000
    );
    let mut stream = tokio::net::TcpStream::connect(server.rest_addr)
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

fn staging_dirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends a request, waits a little for an answer, then closes its side of the
/// connection (a client whose own timeout fired) and waits until the server has
/// closed the connection too, i.e. dropped the request. Returns what was answered
/// before the client gave up, if anything.
async fn give_up_on(server: &TestServer, method: &str, path: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(server.rest_addr)
        .await
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
        server.rest_addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut answer)).await;
    if let Ok(Ok(n)) = read {
        return String::from_utf8_lossy(&answer[..n]).into_owned();
    }
    stream.shutdown().await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server keeps a connection its client closed");
    match closed {
        Ok(0) | Err(_) => String::new(),
        Ok(n) => String::from_utf8_lossy(&answer[..n]).into_owned(),
    }
}

/// Holds reads of a model's `config.toml` (see the module's docs) until
/// [`Hold::release`], or until dropped (a test that failed before releasing must not
/// leave a reload waiting).
struct Hold(PathBuf);

impl Hold {
    fn new(model_dir: &Path) -> Hold {
        let path = model_dir.join("config.toml.hold");
        std::fs::write(&path, b"").unwrap();
        Hold(path)
    }

    /// Lets the waiting reader go on (no config.toml: every default).
    fn release(&self) {
        std::fs::remove_file(&self.0).unwrap();
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts `GET /reload_model?modelname=MODEL`, which waits on the model's hold while
/// holding its lock, and waits until a reload of every model reports it busy.
async fn hold_lock(
    server: &TestServer,
    model: &str,
) -> tokio::task::JoinHandle<Option<(u16, Value)>> {
    let url = format!("/reload_model?modelname={model}");
    let holder = {
        let path = url.clone();
        let base = server.base.clone();
        tokio::spawn(async move {
            let r = client(Duration::from_secs(60))
                .post(format!("{base}{path}"))
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            Some((status, r.json().await.unwrap_or(Value::Null)))
        })
    };
    eventually_some(
        "the reload holds the model's lock",
        Duration::from_secs(10),
        || async {
            let m = status_of(server, model).await?;
            (m["busy"] == true).then_some(())
        },
    )
    .await;
    // A reload of every model answers at once and names the busy model.
    let (code, body) = call(
        server,
        reqwest::Method::POST,
        "/reload_model",
        Duration::from_secs(3),
    )
    .await
    .expect("a reload of every model answers while one model is busy");
    assert_eq!(code, 200, "{body}");
    assert!(
        body["busy"].as_array().unwrap().iter().any(|m| m == model),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("busy"), "{body}");
    holder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_holds_no_model() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "b", 1, &iris());
    install_model(repo.path(), "c", 1, &iris());
    let server = TestServer::start_with(settings(repo.path())).await;

    let stalled = stalled_upload(&server, "a").await;
    eventually_some(
        "the stalled upload is staging",
        Duration::from_secs(10),
        || async { (!staging_dirs(&repo.path().join("a")).is_empty()).then_some(()) },
    )
    .await;

    let prompt = Duration::from_secs(3);
    // Other models answer at once: upload, reload, delete.
    let (code, body) = upload(&server, "b", prompt)
        .await
        .expect("upload of b answers");
    assert_eq!((code, body["version"].clone()), (200, json!(2)), "{body}");
    let (code, body) = call(
        &server,
        reqwest::Method::POST,
        "/reload_model?modelname=b",
        prompt,
    )
    .await
    .expect("reload of b answers");
    assert_eq!(code, 200, "{body}");
    let (code, body) = call(&server, reqwest::Method::DELETE, "/delete_model/c", prompt)
        .await
        .expect("delete of c answers");
    assert_eq!(code, 200, "{body}");
    // The model being uploaded too: the upload holds no lock while it waits.
    let (code, body) = call(&server, reqwest::Method::POST, "/reload_model", prompt)
        .await
        .expect("a reload of every model answers");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["busy"], json!([]), "{body}");
    // A directory holding only the upload's staging is not a model.
    assert!(status_of(&server, "a").await.is_none(), "no ghost model a");
    let (code, body) = upload(&server, "a", prompt)
        .await
        .expect("upload of a answers");
    assert_eq!((code, body["version"].clone()), (200, json!(1)), "{body}");

    // The stalled client leaves: its staging goes, the model uploaded meanwhile stays.
    drop(stalled);
    eventually_some(
        "the stalled upload's staging is removed",
        Duration::from_secs(10),
        || async {
            staging_dirs(&repo.path().join("a"))
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert!(repo.path().join("a/1/model.onnx").is_file());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_whose_client_gave_up_never_runs() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "d", 1, &iris());
    let server = TestServer::start_with(settings(repo.path())).await;
    let hold = Hold::new(&repo.path().join("d"));
    let holder = hold_lock(&server, "d").await;

    // The client gives up long before the lock is free (and before the management
    // timeout): the delete must never happen.
    let gave_up = give_up_on(&server, "DELETE", "/delete_model/d").await;
    assert!(
        gave_up.is_empty(),
        "the delete answered while d was busy: {gave_up}"
    );

    tokio::task::spawn_blocking(move || hold.release())
        .await
        .unwrap();
    let (code, body) = holder.await.unwrap().expect("the holding reload answers");
    assert_eq!(code, 200, "{body}");
    // The lock is fair: a reload queued now runs after anything queued before it.
    let (code, body) = call(
        &server,
        reqwest::Method::POST,
        "/reload_model?modelname=d",
        Duration::from_secs(10),
    )
    .await
    .expect("reload answers");
    assert_eq!(code, 200, "{body}");
    assert!(
        repo.path().join("d/1/model.onnx").is_file(),
        "d was deleted after its client left"
    );
    let (code, _) = server
        .post_json("/predict", &json!({"model_id": "d", "features": ROW}))
        .await;
    assert_eq!(code, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_past_its_deadline_is_refused_and_never_runs() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "e", 1, &iris());
    let server = TestServer::start_with(Settings {
        management_timeout: Duration::from_millis(500),
        ..settings(repo.path())
    })
    .await;
    let hold = Hold::new(&repo.path().join("e"));
    let holder = hold_lock(&server, "e").await;

    let started = Instant::now();
    let (code, body) = call(
        &server,
        reqwest::Method::DELETE,
        "/delete_model/e",
        Duration::from_secs(10),
    )
    .await
    .expect("the delete answers within the management timeout");
    assert_eq!(code, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("busy"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));

    tokio::task::spawn_blocking(move || hold.release())
        .await
        .unwrap();
    let _ = holder.await.unwrap();
    let (code, body) = call(
        &server,
        reqwest::Method::POST,
        "/reload_model?modelname=e",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        repo.path().join("e/1/model.onnx").is_file(),
        "a refused delete ran later"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_wins_over_a_reload_of_every_model() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "s", 1, &iris());
    install_model(repo.path(), "other", 1, &iris());
    let server = TestServer::start_with(settings(repo.path())).await;
    let hold = Hold::new(&repo.path().join("s"));
    let holder = hold_lock(&server, "s").await;

    // The stop waits for the lock; reloads of every model come after it.
    let stop = {
        let base = server.base.clone();
        tokio::spawn(async move {
            let r = client(Duration::from_secs(30))
                .post(format!("{base}/stop_deployment/s"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    for _ in 0..3 {
        let (code, body) = call(
            &server,
            reqwest::Method::POST,
            "/reload_model",
            Duration::from_secs(3),
        )
        .await
        .expect("a reload of every model answers");
        assert_eq!(code, 200, "{body}");
        assert!(
            !body["served_versions"]
                .as_object()
                .unwrap()
                .contains_key("s"),
            "reload-all reloaded s while a stop waited: {body}"
        );
    }
    tokio::task::spawn_blocking(move || hold.release())
        .await
        .unwrap();
    let _ = holder.await.unwrap();
    let (code, text) = stop.await.unwrap();
    assert_eq!(code, 200, "{text}");
    let (code, body) = call(
        &server,
        reqwest::Method::POST,
        "/reload_model",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let s = status_of(&server, "s").await.unwrap();
    assert_eq!(
        (s["stopped"].clone(), s["served"].clone()),
        (json!(true), json!(false)),
        "{s}"
    );
    let (code, _) = server
        .post_json("/predict", &json!({"model_id": "s", "features": ROW}))
        .await;
    assert_ne!(code, 200, "a stopped model must not serve");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_timeout_applies_to_the_served_version_at_once() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "t", 1, &iris());
    let server = TestServer::start_with(settings(repo.path())).await;
    let predict = json!({"model_id": "t", "features": ROW});
    assert_eq!(server.post_json("/predict", &predict).await.0, 200);

    // One microsecond: no request can finish within it.
    let (code, body) = server
        .post_json(
            "/deploy",
            &json!({"model_id": "t", "resources": {"timeout": 0.000001}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["served_versions"],
        json!([1]),
        "the same version serves: {body}"
    );
    let (code, body) = server.post_json("/predict", &predict).await;
    assert_eq!(
        code, 504,
        "the deployment's timeout must apply at once: {body}"
    );

    // A new deployment with a generous timeout applies at once too.
    let (code, body) = server
        .post_json(
            "/deploy",
            &json!({"model_id": "t", "resources": {"timeout": 30}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(server.post_json("/predict", &predict).await.0, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_within_its_deadline_with_a_stalled_client() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "m", 1, &iris());
    let server = TestServer::start_with(Settings {
        shutdown_timeout: Duration::from_millis(500),
        ..settings(repo.path())
    })
    .await;
    let _stalled = stalled_upload(&server, "u").await;
    eventually_some(
        "the stalled request is in flight",
        Duration::from_secs(10),
        || async { (!staging_dirs(&repo.path().join("u")).is_empty()).then_some(()) },
    )
    .await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("shutdown waited for the stalled client past its deadline");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "drained first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_debris_is_removed_at_start_and_ghosts_are_not_models() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    install_model(root, "g", 1, &iris());
    let debris = [
        root.join("g/.tmp-upload-999999-0"),
        root.join(".tmp-delete-gone-123"),
        root.join("ghost/.tmp-upload-999999-1"),
    ];
    for d in &debris {
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/model.onnx"), b"partial").unwrap();
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(d)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
    }
    // Staging of someone else's, not ours: a hidden directory that is not ours to clean.
    std::fs::create_dir_all(root.join("g/.tmp-copy-7")).unwrap();

    let server = TestServer::start_with(settings(root)).await;
    for d in &debris {
        assert!(!d.exists(), "{} left after start", d.display());
    }
    assert!(
        !root.join("ghost").exists(),
        "a model directory of debris only goes too"
    );
    assert!(root.join("g/.tmp-copy-7").exists());
    let (code, body) = server.get("/models/status").await;
    assert_eq!(code, 200);
    let names: Vec<&str> = body["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["g"], "{body}");

    // A directory made now with staging only (an upload of a new model, say) is not
    // listed either.
    std::fs::create_dir_all(root.join("fresh/.tmp-upload-1-1")).unwrap();
    assert!(
        status_of(&server, "fresh").await.is_none(),
        "no ghost model"
    );
    let (code, body) = call(
        &server,
        reqwest::Method::POST,
        "/reload_model",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(!body["served_versions"]
        .as_object()
        .unwrap()
        .contains_key("fresh"));
    server.stop().await;
}

#[test]
fn loads_are_bounded_and_a_policy_serves_at_most_the_cap() {
    let repo = tempfile::tempdir().unwrap();
    let model = repo.path().join("many");
    for v in 1..=300u64 {
        install_model(repo.path(), "many", v, &iris());
    }
    std::fs::write(model.join("config.toml"), "version_policy = \"all\"\n").unwrap();
    let manager = Arc::new(
        Manager::new(BackendOptions {
            onnxruntime_path: onnxruntime_path(),
            onnx_intra_threads: 1,
            onnx_sessions: 1,
            tensorflow_path: None,
        })
        .with_limits(LoadLimits {
            max_concurrent_loads: 3,
            max_served_versions: 50,
        }),
    );
    let sources = Sources::new(manager.clone(), repo.path().to_path_buf());
    sources.initial_load();

    let served: Vec<u64> = manager.serving().models["many"]
        .versions
        .keys()
        .copied()
        .collect();
    assert_eq!(
        served,
        (251..=300).collect::<Vec<_>>(),
        "the highest 50 serve"
    );
    let record = manager.model_record("many").unwrap();
    let warning = record
        .policy_warning
        .expect("status says versions were left out");
    assert!(
        warning.contains("300") && warning.contains("50"),
        "{warning}"
    );
    let peak = manager.peak_concurrent_loads();
    assert!(
        (1..=3).contains(&peak),
        "{peak} loads at once, over the bound of 3"
    );
    assert_eq!(
        manager
            .resolve("many", &VersionRequest::Latest)
            .unwrap()
            .version,
        300
    );
}

/// A stop refused because the model stayed busy past the deadline changes nothing,
/// in the store either: after a restart the model still serves (the stop used to be
/// recorded before it waited for the model's lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_refused_while_the_model_is_busy_records_nothing() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "f", 1, &iris());
    let settings = || Settings {
        management_timeout: Duration::from_millis(500),
        ..settings(repo.path())
    };
    let server = TestServer::start_with(settings()).await;
    let hold = Hold::new(&repo.path().join("f"));
    let holder = hold_lock(&server, "f").await;
    let (code, body) = call(
        &server,
        reqwest::Method::POST,
        "/stop_deployment/f",
        Duration::from_secs(10),
    )
    .await
    .expect("the stop answers within the management timeout");
    assert_eq!(code, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("busy"), "{body}");
    tokio::task::spawn_blocking(move || hold.release())
        .await
        .unwrap();
    let _ = holder.await.unwrap();
    let predict = json!({"model_id": "f", "features": ROW});
    let (code, body) = server.post_json("/predict", &predict).await;
    assert_eq!(code, 200, "{body}");
    server.stop().await;

    let server = TestServer::start_with(settings()).await;
    let (code, body) = server.post_json("/predict", &predict).await;
    assert_eq!(
        code, 200,
        "the refused stop came back with the restart: {body}"
    );
    server.stop().await;
}
