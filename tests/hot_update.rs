//! Hot update without dropping a request: versions swapping under load, unloading
//! that waits for held requests, failed and half-written versions, labels moving
//! under load, and the multi-model config file (TF Serving `model_config_list`).
//!
//! Every wait for a state polls with a deadline; the watcher polls every 50 ms.

mod common;

use common::eventually_some;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{install_model, onnxruntime_path, root_path, test_settings, TestServer};
use ferroserve::backends::BackendOptions;
use ferroserve::manager::{Manager, VersionRequest, VersionState};
use ferroserve::settings::Settings;
use ferroserve::sources::Sources;
use serde_json::{json, Value};

const POLL: Duration = Duration::from_millis(50);
const ROW: [f64; 4] = [5.1, 3.5, 1.4, 0.2];

fn model_file(i: u64) -> PathBuf {
    // Alternate two models with the same signature, so consecutive versions differ.
    let name = if i.is_multiple_of(2) {
        "iris_dt"
    } else {
        "iris_lr"
    };
    root_path(&format!("examples/models/{name}/1/model.onnx"))
}

/// A manager of its own, one ONNX Runtime thread and session per version.
fn one_thread_manager() -> Arc<Manager> {
    Arc::new(Manager::new(BackendOptions {
        onnxruntime_path: onnxruntime_path(),
        onnx_intra_threads: 1,
        onnx_sessions: 1,
        tensorflow_path: None,
    }))
}

fn watched(repo: &Path) -> Settings {
    Settings {
        file_system_poll_wait: POLL,
        ..test_settings(repo)
    }
}

/// Adds a version the way a careful deployment tool does: copy into a hidden staging
/// directory, then rename it into place in one step.
fn add_version_atomically(repo: &Path, model: &str, version: u64, artifact: &Path) {
    let staging = repo.join(model).join(format!(".tmp-copy-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(artifact, staging.join("model.onnx")).unwrap();
    std::fs::rename(&staging, repo.join(model).join(version.to_string())).unwrap();
}

/// Atomically replaces a file (write beside it, rename over it).
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn model_status(server: &TestServer, model: &str) -> Option<Value> {
    let (status, body) = server.get("/models/status").await;
    assert_eq!(status, 200, "{body}");
    body["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == model)
        .cloned()
}

async fn served_versions(server: &TestServer, model: &str) -> Vec<u64> {
    model_status(server, model)
        .await
        .map(|m| {
            m["served_versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn version_state(model: &Value, version: u64) -> Option<String> {
    model["versions"]
        .as_array()?
        .iter()
        .find(|v| v["version"] == version)
        .map(|v| v["state"].as_str().unwrap().to_string())
}

fn v2_infer_body() -> Value {
    json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]})
}

/// One answered request of a load client: when it was sent, what answered.
#[derive(Debug, Clone)]
struct Answer {
    sent: Instant,
    status: u16,
    version: Option<u64>,
    body: String,
}

/// Clients that send requests continuously until stopped, recording every answer.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `request` builds one request; `version_of` reads the answering version.
    fn start(
        clients: usize,
        request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync + 'static,
        version_of: fn(&Value) -> Option<u64>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let request = Arc::new(request);
        let tasks = (0..clients)
            .map(|_| {
                let (stop, answers, request) = (stop.clone(), answers.clone(), request.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let answer = match request(&client).send().await {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let body = r.text().await.unwrap_or_default();
                                let version = serde_json::from_str::<Value>(&body)
                                    .ok()
                                    .and_then(|v| version_of(&v));
                                Answer {
                                    sent,
                                    status,
                                    version,
                                    body,
                                }
                            }
                            Err(e) => Answer {
                                sent,
                                status: 0,
                                version: None,
                                body: e.to_string(),
                            },
                        };
                        answers.lock().unwrap().push(answer);
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            tasks,
        }
    }

    async fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let answers = self.answers.lock().unwrap().clone();
        answers
    }
}

fn v2_version(v: &Value) -> Option<u64> {
    v["model_version"].as_str()?.parse().ok()
}

fn simple_version(v: &Value) -> Option<u64> {
    v["version"].as_u64()
}

/// Checks that every answer succeeded and that no request sent after a switch
/// completed was answered by an older version.
fn check_answers(answers: &[Answer], switches: &[(Instant, u64)], min: usize) {
    assert!(
        answers.len() >= min,
        "only {} requests were sent; the load did not run",
        answers.len()
    );
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        answers.len(),
        failed.first().map(|a| (a.status, &a.body))
    );
    for a in answers {
        let floor = switches
            .iter()
            .filter(|(at, _)| a.sent >= *at)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0);
        let v = a.version.expect("every answer names its version");
        assert!(
            v >= floor,
            "a request sent after version {floor} took over was answered by version {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_swap_under_load_without_a_failed_request() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "m", 1, &model_file(1));
    let server = TestServer::start_with(watched(repo.path())).await;
    let url = server.url("/v2/models/m/infer");
    let load = Load::start(4, move |c| c.post(&url).json(&v2_infer_body()), v2_version);

    let mut switches = Vec::new();
    for v in 2..=21 {
        add_version_atomically(repo.path(), "m", v, &model_file(v));
        eventually_some(
            &format!("version {v} to replace {}", v - 1),
            Duration::from_secs(20),
            || {
                let server = &server;
                async move { (served_versions(server, "m").await == vec![v]).then_some(()) }
            },
        )
        .await;
        switches.push((Instant::now(), v));
        std::fs::remove_dir_all(repo.path().join("m").join((v - 1).to_string())).unwrap();
    }
    let answers = load.finish().await;
    check_answers(&answers, &switches, 100);
    let status = model_status(&server, "m").await.unwrap();
    assert_eq!(version_state(&status, 21).as_deref(), Some("AVAILABLE"));
    assert!(
        status["versions"].as_array().unwrap().len() <= 3,
        "ended versions that left the disk are forgotten: {status}"
    );
    server.stop().await;
}

#[test]
fn unloading_waits_for_the_request_that_holds_the_old_version() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "m", 1, &model_file(1));
    let manager = one_thread_manager();
    let sources = Sources::new(manager.clone(), repo.path().to_path_buf());
    sources.initial_load();
    let held = manager.resolve("m", &VersionRequest::Latest).unwrap();
    assert_eq!(held.version, 1);

    install_model(repo.path(), "m", 2, &model_file(2));
    sources.reload_model("m").unwrap();
    assert_eq!(
        manager
            .resolve("m", &VersionRequest::Latest)
            .unwrap()
            .version,
        2,
        "version 2 takes over"
    );
    let state = |v| manager.model_record("m").unwrap().versions[&v].state;
    assert_eq!(state(1), VersionState::Unloading, "held, so not freed yet");
    // The request holding version 1 still runs on version 1.
    let inputs = ferroserve::warmup::synthetic_inputs(held.backend.signature()).unwrap();
    let outputs = held.backend.predict(inputs, &[]).unwrap();
    assert!(!outputs.is_empty());
    assert_eq!(held.version, 1);
    drop(held);
    assert_eq!(
        state(1),
        VersionState::End,
        "freed when the last holder finished"
    );
    assert_eq!(state(2), VersionState::Available);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_version_goes_to_error_and_the_old_one_keeps_serving() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "m", 1, &model_file(1));
    let server = TestServer::start_with(watched(repo.path())).await;
    let staging = repo.path().join("m/.tmp-bad");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), b"this is not an onnx model").unwrap();
    std::fs::rename(&staging, repo.path().join("m/2")).unwrap();

    let status = eventually_some("version 2 to fail", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "m").await?;
            (version_state(&m, 2).as_deref() == Some("ERROR")).then_some(m)
        }
    })
    .await;
    let v2 = &status["versions"][0];
    assert_eq!(v2["version"], 2);
    assert!(!v2["error"].as_str().unwrap().is_empty(), "{status}");
    assert_eq!(version_state(&status, 1).as_deref(), Some("AVAILABLE"));
    assert_eq!(status["served_versions"], json!([1]));
    let (code, body) = server
        .post_json("/v2/models/m/infer", &v2_infer_body())
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["model_version"], "1");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_directory_still_being_written_is_not_loaded() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "m", 1, &model_file(1));
    let settings = Settings {
        // Slow polls, fast writes: the writer changes the file many times per poll.
        file_system_poll_wait: Duration::from_millis(200),
        ..test_settings(repo.path())
    };
    let server = TestServer::start_with(settings).await;
    let bytes = std::fs::read(model_file(2)).unwrap();
    let dir = repo.path().join("m/2");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.onnx");
    // Written in 40 pieces over about a second, as a slow copy would.
    let pieces: Vec<&[u8]> = bytes.chunks(bytes.len().div_ceil(40)).collect();
    for piece in pieces {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(piece).unwrap();
        drop(f);
        let m = model_status(&server, "m").await.unwrap();
        assert_eq!(
            version_state(&m, 2),
            None,
            "a half-written version was picked up: {m}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Complete now: it settles on the next polls and replaces version 1.
    eventually_some("the complete version 2", Duration::from_secs(20), || {
        let server = &server;
        async move { (served_versions(server, "m").await == vec![2]).then_some(()) }
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn labels_move_under_load_and_refuse_unavailable_versions() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "m", 1, &model_file(1));
    install_model(repo.path(), "m", 2, &model_file(2));
    let config = repo.path().join("m/config.toml");
    write_atomically(&config, "version_policy = \"all\"\n[labels]\nstable = 1\n");
    let server = TestServer::start_with(watched(repo.path())).await;
    let by_label = json!({"model_id": "m", "features": ROW, "version": "stable"});
    let (code, body) = server.post_json("/predict", &by_label).await;
    assert_eq!((code, body["version"].clone()), (200, json!(1)), "{body}");

    let url = server.url("/predict");
    let request = by_label.clone();
    let load = Load::start(4, move |c| c.post(&url).json(&request), simple_version);
    // Answers through the label's first version before it moves: on a busy machine
    // the watcher can see the edit before the load has sent anything.
    eventually_some(
        "requests through the label",
        Duration::from_secs(20),
        || {
            let answers = load.answers.clone();
            async move { (answers.lock().unwrap().len() >= 20).then_some(()) }
        },
    )
    .await;
    write_atomically(&config, "version_policy = \"all\"\n[labels]\nstable = 2\n");
    eventually_some(
        "stable to point at version 2",
        Duration::from_secs(20),
        || {
            let server = &server;
            async move {
                let m = model_status(server, "m").await?;
                (m["labels"]["stable"] == 2).then_some(())
            }
        },
    )
    .await;
    let switches = vec![(Instant::now(), 2)];
    // Let the load run on the new label a little before stopping it.
    eventually_some(
        "requests through the moved label",
        Duration::from_secs(20),
        || {
            let answers = load.answers.clone();
            let at = switches[0].0;
            async move {
                let n = answers
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|a| a.sent > at)
                    .count();
                (n >= 20).then_some(())
            }
        },
    )
    .await;
    let answers = load.finish().await;
    check_answers(&answers, &switches, 40);
    assert!(
        answers.iter().any(|a| a.version == Some(1)),
        "the label served 1 first"
    );

    // A label on a version that is not available is refused; stable stays at 2.
    write_atomically(&config, "version_policy = \"all\"\n[labels]\nstable = 7\n");
    let m = eventually_some("the refused label", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "m").await?;
            (!m["label_errors"].as_array()?.is_empty()).then_some(m)
        }
    })
    .await;
    assert!(
        m["label_errors"][0].as_str().unwrap().contains("stable"),
        "{m}"
    );
    assert_eq!(m["labels"]["stable"], 2, "{m}");
    let (code, body) = server.post_json("/predict", &by_label).await;
    assert_eq!((code, body["version"].clone()), (200, json!(2)), "{body}");

    // Unless the model allows it: then requests through the label are UNAVAILABLE.
    write_atomically(
        &config,
        "version_policy = \"all\"\nallow_unavailable_labels = true\n[labels]\nstable = 7\n",
    );
    eventually_some("the allowed label", Duration::from_secs(20), || {
        let server = &server;
        let by_label = &by_label;
        async move { (server.post_json("/predict", by_label).await.0 == 503).then_some(()) }
    })
    .await;

    // A config that does not parse keeps the one in force.
    write_atomically(&config, "version_policy = [[[ not toml");
    let m = eventually_some("the config error", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "m").await?;
            m["config_error"].is_string().then_some(m)
        }
    })
    .await;
    assert_eq!(m["served_versions"], json!([1, 2]), "{m}");
    assert_eq!(m["labels"]["stable"], 7, "{m}");
    server.stop().await;
}

const TFS_CONFIG: &str = r#"
model_config_list {
  config {
    name: "iris"
    base_path: "BASE"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 } }
    version_labels { key: "stable" value: 1 }
  }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_model_config_list_is_honoured_and_a_broken_one_keeps_the_old() {
    let models = tempfile::tempdir().unwrap();
    install_model(models.path(), "somewhere", 1, &model_file(1));
    install_model(models.path(), "somewhere", 2, &model_file(2));
    install_model(models.path(), "unlisted", 1, &model_file(1));
    let base = models.path().join("somewhere");
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("models.config");
    let text = TFS_CONFIG.replace("BASE", &base.display().to_string());
    write_atomically(&config, &text);
    let settings = Settings {
        model_config_file: Some(config.clone()),
        model_config_file_poll_wait: POLL,
        ..watched(models.path())
    };
    let server = TestServer::start_with(settings).await;

    // Only the listed model is served, with the listed policy and label.
    let m = model_status(&server, "iris").await.unwrap();
    assert_eq!(m["served_versions"], json!([1]), "{m}");
    assert_eq!(m["source"], "config_file");
    assert!(model_status(&server, "unlisted").await.is_none());
    assert_eq!(server.get("/v1/models/unlisted").await.0, 404);
    let by_label = json!({"model_id": "iris", "features": ROW, "version": "stable"});
    let (code, body) = server.post_json("/predict", &by_label).await;
    assert_eq!((code, body["version"].clone()), (200, json!(1)), "{body}");

    // The file changes: both versions, stable moves to 2.
    let text2 = text
        .replace("versions: 1 }", "versions: 1 versions: 2 }")
        .replace("value: 1", "value: 2");
    write_atomically(&config, &text2);
    eventually_some("the new config", Duration::from_secs(20), || {
        let server = &server;
        let by_label = &by_label;
        async move {
            let (_, body) = server.post_json("/predict", by_label).await;
            (body["version"] == 2).then_some(())
        }
    })
    .await;
    assert_eq!(served_versions(&server, "iris").await, vec![1, 2]);

    // A broken file is refused; the list in force stays. Watched for many polls.
    write_atomically(
        &config,
        "model_config_list { config { name: \"iris\" colour: 1 } }",
    );
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(served_versions(&server, "iris").await, vec![1, 2]);
        let (_, body) = server.post_json("/predict", &by_label).await;
        assert_eq!(body["version"], 2, "{body}");
        tokio::time::sleep(POLL).await;
    }
    server.stop().await;
}

/// A label config.toml declares whose version the policy stops serving (a newer
/// version arrived under `latest 1`) stays declared: requests through it are
/// UNAVAILABLE naming the label, its version and why, status says it, and it works
/// again once its version is served, with no change to the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_whose_version_the_policy_unloads_is_unavailable_not_unknown() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "lb", 1, &model_file(1));
    std::fs::write(repo.path().join("lb/config.toml"), "[labels]\nstable = 1\n").unwrap();
    let server = TestServer::start_with(watched(repo.path())).await;
    let body = json!({"instances": [ROW]});
    let by_label = "/v1/models/lb/labels/stable:predict";
    let (code, answer) = server.post_json(by_label, &body).await;
    assert_eq!(code, 200, "{answer}");

    add_version_atomically(repo.path(), "lb", 2, &model_file(2));
    eventually_some("version 2 alone served", Duration::from_secs(20), || {
        let server = &server;
        async move { (served_versions(server, "lb").await == [2]).then_some(()) }
    })
    .await;
    let (code, answer) = server.post_json(by_label, &body).await;
    assert_eq!(code, 503, "{answer}");
    let error = answer["error"].as_str().unwrap();
    for part in ["\"stable\"", "version 1", "version policy (latest 1)"] {
        assert!(error.contains(part), "{part} not in {error}");
    }
    // The label's status says the same (it was 404 "has no label").
    let (code, answer) = server.get("/v1/models/lb/labels/stable").await;
    assert_eq!(code, 503, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("version 1"),
        "{answer}"
    );
    let m = model_status(&server, "lb").await.unwrap();
    let label_error = m["label_errors"][0].as_str().unwrap_or_default();
    assert!(label_error.contains("version 1"), "{m}");

    // Version 2 goes: version 1 is served again, and so is the label.
    std::fs::rename(repo.path().join("lb/2"), repo.path().join("lb/.tmp-gone")).unwrap();
    eventually_some("the label to work again", Duration::from_secs(20), || {
        let (server, body) = (&server, &body);
        async move { (server.post_json(by_label, body).await.0 == 200).then_some(()) }
    })
    .await;
    let m = model_status(&server, "lb").await.unwrap();
    assert_eq!(m["labels"]["stable"], 1, "{m}");
    assert_eq!(m["label_errors"], json!([]), "{m}");
    server.stop().await;
}

/// An explicit reload loads again a served version whose files were replaced in
/// place (a different model moved over its file), and keeps one whose files did not
/// change; a request that holds the old load finishes on it.
#[test]
fn an_explicit_reload_loads_again_a_version_whose_files_changed() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "rf", 1, &model_file(1));
    let manager = one_thread_manager();
    let sources = Sources::new(manager.clone(), repo.path().to_path_buf());
    sources.initial_load();
    let first = manager.resolve("rf", &VersionRequest::Latest).unwrap();

    sources.reload_model("rf").unwrap();
    let again = manager.resolve("rf", &VersionRequest::Latest).unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "unchanged files: not loaded again"
    );
    drop(again);

    let file = repo.path().join("rf/1/model.onnx");
    let tmp = repo.path().join("rf/1/x.tmp");
    std::fs::copy(model_file(2), &tmp).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    sources.reload_model("rf").unwrap();
    let reloaded = manager.resolve("rf", &VersionRequest::Latest).unwrap();
    assert!(
        !Arc::ptr_eq(&first, &reloaded),
        "changed files: loaded again"
    );
    assert_eq!(reloaded.version, 1);
    let record = manager.model_record("rf").unwrap();
    assert_eq!(record.versions[&1].state, VersionState::Available);
    assert_eq!(record.versions[&1].error, None);
    // The two loads are different models (iris_lr and iris_dt), and the old one,
    // still held, still answers.
    let inputs = ferroserve::warmup::synthetic_inputs(first.backend.signature()).unwrap();
    assert!(!first.backend.predict(inputs, &[]).unwrap().is_empty());
    assert_ne!(
        std::fs::read(model_file(1)).unwrap(),
        std::fs::read(&file).unwrap()
    );
    drop(first);
    assert_eq!(
        manager.model_record("rf").unwrap().versions[&1].state,
        VersionState::Available,
        "freeing the old load leaves the version available"
    );

    // Reload of every model does the same.
    let held = reloaded;
    std::fs::copy(model_file(1), &tmp).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let _ = sources.reload_all(&Default::default());
    let latest = manager.resolve("rf", &VersionRequest::Latest).unwrap();
    assert!(!Arc::ptr_eq(&held, &latest), "reload-all: loaded again");
}

/// Over REST: `POST /reload_model` (one model, and all) serves the replaced file's
/// answers at once; requests sent meanwhile all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_model_serves_a_version_file_replaced_in_place() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "rf", 1, &model_file(1));
    let server = TestServer::start_with(Settings {
        file_system_poll_wait: Duration::ZERO,
        ..test_settings(repo.path())
    })
    .await;
    let row = json!({"instances": [[5.9, 3.0, 4.2, 1.5]]});
    let predict = || {
        let (server, row) = (&server, &row);
        async move {
            let (code, body) = server
                .post_json("/v1/models/rf/versions/1:predict", row)
                .await;
            assert_eq!(code, 200, "{body}");
            body["predictions"].clone()
        }
    };
    let before = predict().await;
    let url = server.url("/v1/models/rf/versions/1:predict");
    let request = row.clone();
    let load = Load::start(2, move |c| c.post(&url).json(&request), |_| Some(1));

    let file = repo.path().join("rf/1/model.onnx");
    let tmp = repo.path().join("rf/1/x.tmp");
    for (path, artifact) in [("/reload_model?modelname=rf", 2), ("/reload_model", 1)] {
        std::fs::copy(model_file(artifact), &tmp).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let (code, body) = server.post_json(path, &json!({})).await;
        assert_eq!(code, 200, "{body}");
        let now = predict().await;
        assert_eq!(now != before, artifact == 2, "{path}: {now} vs {before}");
    }
    let answers = load.finish().await;
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(failed.is_empty(), "failed during the swaps: {failed:?}");
    assert!(!answers.is_empty(), "the load did not run");
    server.stop().await;
}

/// A version policy naming versions that are not on disk says so in status, and when
/// it selects none of the versions on disk it serves none (as TF Serving does: the
/// versions served before are unloaded) and requests are told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_specific_policy_naming_missing_versions_is_reported() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "pa", 1, &model_file(1));
    install_model(repo.path(), "pa", 2, &model_file(2));
    install_model(repo.path(), "pb", 1, &model_file(1));
    std::fs::write(
        repo.path().join("pb/config.toml"),
        "version_policy = { specific = [7] }\n",
    )
    .unwrap();
    let server = TestServer::start_with(watched(repo.path())).await;
    let body = json!({"instances": [ROW]});
    assert_eq!(served_versions(&server, "pa").await, [2]);

    // A fresh model: nothing served, and the answer says why.
    let (code, answer) = server.post_json("/v1/models/pb:predict", &body).await;
    assert_eq!(code, 503, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("[7]") && error.contains("serves none of the versions on disk ([1])"),
        "{error}"
    );
    let m = model_status(&server, "pb").await.unwrap();
    assert!(m["policy_warning"].as_str().unwrap().contains("[7]"), "{m}");

    // A served model whose policy comes to name only missing versions stops serving.
    write_atomically(
        &repo.path().join("pa/config.toml"),
        "version_policy = { specific = [7] }\n",
    );
    let m = eventually_some("the policy warning", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "pa").await?;
            (m["policy_warning"].is_string() && m["served_versions"] == json!([])).then_some(m)
        }
    })
    .await;
    let warning = m["policy_warning"].as_str().unwrap();
    assert!(warning.contains("[7]") && warning.contains("[1, 2]"), "{m}");
    let (code, answer) = server.post_json("/v1/models/pa:predict", &body).await;
    assert_eq!(code, 503, "{answer}");

    // Some named versions missing: the others serve, and status names the missing.
    write_atomically(
        &repo.path().join("pa/config.toml"),
        "version_policy = { specific = [1, 7] }\n",
    );
    let m = eventually_some("version 1 served", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "pa").await?;
            (m["served_versions"] == json!([1])).then_some(m)
        }
    })
    .await;
    assert!(m["policy_warning"].as_str().unwrap().contains("[7]"), "{m}");
    server.stop().await;
}

/// Puts a version directory named `dir` (`2`, `0002`) in place with `artifact`,
/// atomically: copied into a hidden staging directory, then renamed.
fn put_version_dir(repo: &Path, model: &str, dir: &str, artifact: &Path) {
    let staging = repo.join(model).join(format!(".tmp-copy-{dir}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(artifact, staging.join("model.onnx")).unwrap();
    std::fs::rename(&staging, repo.join(model).join(dir)).unwrap();
}

/// Was: where a second directory came to name a served version (`2/` beside the
/// `0000…0002/` it was loaded from), the log said `2/` was the one served, but the
/// version kept answering from the old directory, even once that was deleted, until
/// an explicit reload (and a restart would have answered differently). Now the
/// version is loaded again from the directory the repository names, once it has
/// settled, and swapped in under load without a failed request; the same when the
/// directory it serves from goes while another (`02/`) names the version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_serves_from_the_directory_that_names_it_now() {
    let repo = tempfile::tempdir().unwrap();
    let padded = "00000000000000000000000000000002";
    put_version_dir(repo.path(), "f", padded, &model_file(2)); // iris_dt
    let server = TestServer::start_with(watched(repo.path())).await;
    // A row the two models answer differently.
    let row = json!({"instances": [[5.9, 3.0, 4.2, 1.5]]});
    let predict = || {
        let (server, row) = (&server, &row);
        async move {
            let (code, body) = server
                .post_json("/v1/models/f/versions/2:predict", row)
                .await;
            assert_eq!(code, 200, "{body}");
            body["predictions"].clone()
        }
    };
    let from_dt = predict().await;
    let url = server.url("/v1/models/f/versions/2:predict");
    let request = row.clone();
    let load = Load::start(2, move |c| c.post(&url).json(&request), |_| Some(2));

    // `2/` (iris_lr) comes beside the padded directory: it serves version 2 now.
    put_version_dir(repo.path(), "f", "2", &model_file(1));
    let from_lr = eventually_some(
        "version 2 to answer from 2/",
        Duration::from_secs(20),
        || {
            let predict = &predict;
            let from_dt = &from_dt;
            async move {
                let now = predict().await;
                (now != *from_dt).then_some(now)
            }
        },
    )
    .await;
    // The padded directory goes and `02/` (iris_dt) comes: `2/` still names the
    // version, so nothing changes.
    std::fs::remove_dir_all(repo.path().join("f").join(padded)).unwrap();
    put_version_dir(repo.path(), "f", "02", &model_file(2));
    let until = Instant::now() + POLL * 8;
    while Instant::now() < until {
        assert_eq!(predict().await, from_lr, "2/ names version 2");
        tokio::time::sleep(POLL / 2).await;
    }
    // `2/` goes while `02/` names the version: it serves from `02/`.
    std::fs::remove_dir_all(repo.path().join("f/2")).unwrap();
    eventually_some(
        "version 2 to answer from 02/",
        Duration::from_secs(20),
        || {
            let predict = &predict;
            let from_dt = &from_dt;
            async move { (predict().await == *from_dt).then_some(()) }
        },
    )
    .await;

    let answers = load.finish().await;
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(failed.is_empty(), "failed during the swaps: {failed:?}");
    assert!(!answers.is_empty(), "the load did not run");
    let status = model_status(&server, "f").await.unwrap();
    assert_eq!(status["served_versions"], json!([2]), "{status}");
    let v2 = status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == 2)
        .unwrap();
    assert_eq!(v2["state"], "AVAILABLE", "{status}");
    assert!(v2["error"].is_null(), "{status}");
    server.stop().await;
}

/// Was: a version that failed to load stayed ERROR in status and in the V2
/// repository index for good once its directory was removed (monitoring that alerts
/// on ERROR kept firing), where a served version's removal ends it. Now it ends too,
/// with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_in_error_whose_directory_goes_leaves_status() {
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), "h", 1, &model_file(1));
    let server = TestServer::start_with(watched(repo.path())).await;
    std::fs::create_dir_all(repo.path().join("h/3")).unwrap();
    eventually_some("version 3 in ERROR", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "h").await?;
            (version_state(&m, 3).as_deref() == Some("ERROR")).then_some(())
        }
    })
    .await;

    std::fs::remove_dir_all(repo.path().join("h/3")).unwrap();
    let m = eventually_some("version 3 to leave ERROR", Duration::from_secs(20), || {
        let server = &server;
        async move {
            let m = model_status(server, "h").await?;
            (version_state(&m, 3).as_deref() != Some("ERROR")).then_some(m)
        }
    })
    .await;
    let v3 = m["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == 3);
    if let Some(v3) = v3 {
        assert_eq!(v3["state"], "END", "{m}");
        assert!(v3["error"].is_null(), "{m}");
    }
    assert_eq!(m["served_versions"], json!([1]), "{m}");
    let (code, index) = server.post_json("/v2/repository/index", &json!({})).await;
    assert_eq!(code, 200, "{index}");
    for entry in index.as_array().unwrap() {
        assert_ne!(entry["state"], "ERROR", "{index}");
    }
    server.stop().await;
}

/// A directory that comes to name a served version is taken only once its files
/// are unchanged across two polls, as a new version is: one still being written
/// beside the directory the version serves from never replaces it half-written (a
/// failed load of it would leave the version serving the old files for good, since
/// nothing would change in the directory once the copy ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_still_being_written_does_not_replace_a_served_version() {
    let repo = tempfile::tempdir().unwrap();
    put_version_dir(repo.path(), "f", "0002", &model_file(2)); // iris_dt
    let server = TestServer::start_with(Settings {
        // Slow polls, fast writes: the writer changes the file many times per poll.
        file_system_poll_wait: Duration::from_millis(200),
        ..test_settings(repo.path())
    })
    .await;
    let row = json!({"instances": [[5.9, 3.0, 4.2, 1.5]]});
    let predict = || {
        let (server, row) = (&server, &row);
        async move {
            let (code, body) = server
                .post_json("/v1/models/f/versions/2:predict", row)
                .await;
            assert_eq!(code, 200, "{body}");
            body["predictions"].clone()
        }
    };
    let from_dt = predict().await;
    let bytes = std::fs::read(model_file(1)).unwrap(); // iris_lr
    let dir = repo.path().join("f/2");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.onnx");
    // Written in 40 pieces over about a second, as a slow copy would.
    for piece in bytes.chunks(bytes.len().div_ceil(40)) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(piece).unwrap();
        drop(f);
        let m = model_status(&server, "f").await.unwrap();
        assert_eq!(version_state(&m, 2).as_deref(), Some("AVAILABLE"), "{m}");
        assert!(
            m["versions"][0]["error"].is_null(),
            "half-written, tried: {m}"
        );
        assert_eq!(predict().await, from_dt, "half-written, served");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Complete now: it settles on the next polls and serves version 2.
    eventually_some(
        "version 2 to answer from 2/",
        Duration::from_secs(20),
        || {
            let predict = &predict;
            let from_dt = &from_dt;
            async move { (predict().await != *from_dt).then_some(()) }
        },
    )
    .await;
    let m = model_status(&server, "f").await.unwrap();
    assert!(m["versions"][0]["error"].is_null(), "{m}");
    server.stop().await;
}
