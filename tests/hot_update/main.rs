//! Hot update without dropping a request: versions swapping under load, unloading
//! that waits for held requests, failed and half-written versions, labels moving
//! under load, and the multi-model config file (TF Serving `model_config_list`).
//!
//! Every wait for a state polls with a deadline; the watcher polls every 50 ms.

#[path = "../common/mod.rs"]
mod common;

mod directories;
mod labels;
mod swaps;

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
