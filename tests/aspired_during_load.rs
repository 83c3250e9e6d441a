//! A version that stops being aspired while it loads (its directory removed, or the
//! version policy no longer naming it) is never made available, and the version
//! that serves keeps serving throughout: as TF Serving's AspiredVersionsManager
//! does, the serving set only changes toward what is aspired now.
//!
//! Was: the reconcile decided from the scan it started with, so once the long
//! warm-up of the unwanted version ended it went live and the old version was
//! unloaded; the next poll loaded the old version again, and for that long
//! requests got the deleted version, and requests pinned to the old one 404, then
//! 503.
//!
//! Both cases use the `slow_loop` fixture, whose `warmup.json` sets how long a
//! version warms up (about a microsecond an iteration in a debug build).

mod common;

use common::eventually_some;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use serde_json::{json, Value};

/// Warm-up iterations of the version that serves: short, so the server starts fast.
const SERVING_WARMUP: u64 = 300_000;
/// Warm-up iterations of the version that stops being aspired while it loads:
/// long enough to change the repository under it.
const LONG_WARMUP: u64 = 3_000_000;

/// Installs `model/version` from the `slow_loop` fixture with a warm-up of `n`
/// iterations, staged in a hidden directory and renamed into place, as a careful
/// deployment tool does.
fn add_version(repo: &Path, model: &str, version: u64, n: u64) {
    let staging = repo.join(model).join(format!(".tmp-copy-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(
        root_path("tests/fixtures/onnx/slow_loop/model.onnx"),
        staging.join("model.onnx"),
    )
    .unwrap();
    std::fs::write(staging.join("warmup.json"), json!([{ "n": n }]).to_string()).unwrap();
    std::fs::rename(&staging, repo.join(model).join(version.to_string())).unwrap();
}

/// Atomically replaces a file (write beside it, rename over it).
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn watched(repo: &Path) -> Settings {
    Settings {
        file_system_poll_wait: Duration::from_millis(50),
        ..test_settings(repo)
    }
}

/// The state of each version of `model` in TF Serving's REST status.
async fn states(server: &TestServer, model: &str) -> Vec<(String, String, String)> {
    let (_, status) = server.get(&format!("/v1/models/{model}")).await;
    status["model_version_status"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["version"].as_str().unwrap_or_default().to_string(),
                v["state"].as_str().unwrap_or_default().to_string(),
                v["status"]["error_message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

async fn state_of(server: &TestServer, model: &str, version: &str) -> Option<(String, String)> {
    states(server, model)
        .await
        .into_iter()
        .find(|(v, _, _)| v == version)
        .map(|(_, s, e)| (s, e))
}

/// What the clients and the status poller saw while the repository changed.
#[derive(Default)]
struct Seen {
    /// Answers other than 200, by loop: (path, status, body).
    failures: Vec<(String, u16, Value)>,
    /// `model_version` of every 200 answer, by path.
    versions: Vec<(String, String)>,
    /// Every state the serving version was seen in, in order, without repeats.
    serving_states: Vec<String>,
    requests: usize,
}

/// Clients that keep asking `model` (unversioned, and pinned to `serving`) and a
/// poller that keeps reading `serving`'s state, until `stop`.
fn watch_traffic(
    server: &Arc<TestServer>,
    model: &str,
    serving: &str,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Mutex<Seen>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let body = json!({"inputs": [{"name": "n", "datatype": "INT64", "shape": [], "data": [1]}]});
    let mut tasks = Vec::new();
    for path in [
        format!("/v2/models/{model}/infer"),
        format!("/v2/models/{model}/versions/{serving}/infer"),
    ] {
        let (server, stop, seen, body) = (server.clone(), stop.clone(), seen.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (status, answer) = server.post_json(&path, &body).await;
                let mut seen = seen.lock().unwrap();
                seen.requests += 1;
                if status == 200 {
                    let version = answer["model_version"].as_str().unwrap_or("?").to_string();
                    seen.versions.push((path.clone(), version));
                } else {
                    seen.failures.push((path.clone(), status, answer));
                }
            }
        }));
    }
    let (server, stop, seen) = (server.clone(), stop.clone(), seen.clone());
    let (model, serving) = (model.to_string(), serving.to_string());
    tasks.push(tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let state = state_of(&server, &model, &serving)
                .await
                .map_or("absent".to_string(), |(s, _)| s);
            {
                let mut seen = seen.lock().unwrap();
                if seen.serving_states.last() != Some(&state) {
                    seen.serving_states.push(state);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }));
    tasks
}

/// Waits until `version` of `model` is LOADING, then a little longer, so that its
/// load has read its files and its warm-up runs (a warm-up of [`LONG_WARMUP`]
/// lasts seconds; the files are read in milliseconds).
async fn wait_until_warming_up(server: &TestServer, model: &str, version: &str) {
    eventually_some(
        &format!("{model}/{version} loading"),
        Duration::from_secs(20),
        || async {
            let state = state_of(server, model, version).await;
            state.filter(|(s, _)| s == "LOADING").map(|_| ())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
}

/// Waits until `version` of `model` has ended (or left status) and checks what
/// every client saw: only `serving` answered, every request got 200, and the
/// serving version was AVAILABLE throughout. Answers the ended version's error
/// message (why it was discarded).
async fn check_nothing_changed(
    server: &TestServer,
    model: &str,
    serving: &str,
    discarded: &str,
    stop: &AtomicBool,
    seen: &Mutex<Seen>,
) -> String {
    // The discarded version's warm-up runs to its end first: seconds on a quiet
    // machine, nearly 20 on a slow 2-vCPU one with both tests' warm-ups and
    // clients sharing it (20 s failed there), so the limit is far above that.
    let why = eventually_some(
        &format!("{model}/{discarded} ended"),
        Duration::from_secs(120),
        || async {
            match state_of(server, model, discarded).await {
                Some((s, e)) if s == "END" => Some(e),
                None => Some(String::new()),
                _ => None,
            }
        },
    )
    .await;
    // The next polls, which before reloaded the serving version, have run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    // Taken out, so that a failed check below poisons nothing the clients lock.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.requests > 10, "too few requests: {}", seen.requests);
    assert!(
        seen.failures.is_empty(),
        "{} of {} requests failed, the first: {:?}",
        seen.failures.len(),
        seen.requests,
        seen.failures.first()
    );
    let others: Vec<&(String, String)> =
        seen.versions.iter().filter(|(_, v)| v != serving).collect();
    assert!(
        others.is_empty(),
        "{} answers came from another version than {serving}, the first: {:?}",
        others.len(),
        others.first()
    );
    assert_eq!(
        seen.serving_states,
        ["AVAILABLE"],
        "version {serving}'s states"
    );
    why
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_whose_directory_is_removed_while_it_loads_never_serves() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("sl")).unwrap();
    std::fs::write(repo.path().join("sl/config.toml"), "timeout_secs = 30\n").unwrap();
    add_version(repo.path(), "sl", 1, SERVING_WARMUP);
    let server = Arc::new(TestServer::start_with(watched(repo.path())).await);
    assert_eq!(
        state_of(&server, "sl", "1")
            .await
            .map(|(s, _)| s)
            .as_deref(),
        Some("AVAILABLE")
    );
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks = watch_traffic(&server, "sl", "1", &stop, &seen);

    add_version(repo.path(), "sl", 5, LONG_WARMUP);
    wait_until_warming_up(&server, "sl", "5").await;
    std::fs::remove_dir_all(repo.path().join("sl/5")).unwrap();

    let why = check_nothing_changed(&server, "sl", "1", "5", &stop, &seen).await;
    for task in tasks {
        task.await.unwrap();
    }
    // Its record is forgotten once a later reconcile finds it gone from the disk;
    // until then it says why it ended.
    assert!(
        why.is_empty() || why.contains("directory was removed while it loaded"),
        "{why}"
    );
    let states = states(&server, "sl").await;
    assert!(
        states.iter().all(|(v, s, _)| v != "5" || s == "END"),
        "{states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_the_policy_stops_naming_while_it_loads_never_serves() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("sl")).unwrap();
    let config = repo.path().join("sl/config.toml");
    std::fs::write(&config, "timeout_secs = 30\n").unwrap();
    add_version(repo.path(), "sl", 1, SERVING_WARMUP);
    let server = Arc::new(TestServer::start_with(watched(repo.path())).await);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks = watch_traffic(&server, "sl", "1", &stop, &seen);

    add_version(repo.path(), "sl", 3, LONG_WARMUP);
    wait_until_warming_up(&server, "sl", "3").await;
    // A rollback: the operator pins the version that serves.
    write_atomically(
        &config,
        "timeout_secs = 30\nversion_policy = { specific = [1] }\n",
    );

    let why = check_nothing_changed(&server, "sl", "1", "3", &stop, &seen).await;
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        why.contains("version policy") && why.contains("no longer"),
        "{why}"
    );
    // Version 3 stays on disk, ended: nothing loads it again.
    let (state, _) = state_of(&server, "sl", "3").await.unwrap();
    assert_eq!(state, "END");
}
