//! How a deployed model's supervisor reads its worker: a stop signal from outside
//! (an operator's `kill -TERM`) is told apart from a crash however fast the worker
//! exits, and never counts toward crash-loop; a readiness probe that gets no answer
//! in time is no answer "not ready", so a slow start (a low CPU limit) is waited
//! for until the start deadline, and one past it is told so, never "no version
//! that loads". The first test runs the real binary; the others a supervisor in
//! this process whose "worker" is a small Python HTTP server (stdlib only) that
//! answers its model's readiness probe slowly, or never, so that the slowness is
//! certain rather than left to CPU throttling.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::workers::*;
use ferroserve::sources::Deployment;
use ferroserve::workers::{Supervisor, WorkerConfig};
use serde_json::json;

/// Five `kill -TERM`s of an idle worker, about 2.5 s apart (fewer than the
/// crash-loop window's five failures allow): each is restarted and reported as a
/// stop from outside, and the deployment never goes into crash-loop. An idle worker
/// drains and exits within milliseconds, well inside one health-check interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_signals_from_outside_restart_the_worker_and_never_crash_loop_it() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(repo.path(), port_range(4), &[]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let mut pid = pid_of(&answer);
    for i in 0..6 {
        let started = std::time::Instant::now();
        assert!(Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success());
        let entry = wait_registry(&server, "iris", Duration::from_secs(30), |e| {
            e["state"] == "crash-loop"
                || (e["state"] == "ready" && e["pid"].as_u64().is_some_and(|p| p != pid))
        })
        .await;
        assert_eq!(
            entry["state"],
            "ready",
            "kill {i}: {entry}\n{}",
            server.log()
        );
        let exit = &entry["last_exit"];
        let reason = exit["reason"].as_str().unwrap();
        assert!(
            reason.contains("stop signal") && reason.contains("from outside"),
            "kill {i}: {entry}"
        );
        assert_eq!(exit["exit_code"], 0, "kill {i}: {entry}");
        assert_eq!(exit["oom"], false, "kill {i}: {entry}");
        pid = pid_of(&entry);
        let (code, body) = post(
            server.url("/predict"),
            &json!({"model_id": "iris", "features": ROW}),
        )
        .await;
        assert_eq!(code, 200, "kill {i}: {body}");
        // About 2.5 s between kills, as the probe that found it did.
        tokio::time::sleep(Duration::from_millis(2500).saturating_sub(started.elapsed())).await;
    }
    // Stops from outside are restarts, not failures: a crash afterwards is the
    // first failure of the window, and is restarted too.
    kill9(pid);
    let entry = wait_registry(&server, "iris", Duration::from_secs(30), |e| {
        e["state"] == "crash-loop"
            || (e["state"] == "ready" && e["pid"].as_u64().is_some_and(|p| p != pid))
    })
    .await;
    assert_eq!(entry["state"], "ready", "{entry}");
    assert_eq!(entry["last_exit"]["signal"], 9, "{entry}");
}

/// `--worker-start-timeout` is the deadline the real server gives a worker: a model
/// whose warm-up takes seconds (10 M loop iterations; the main server runs it too
/// as it starts) is refused at 1 s, the deploy's answer saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_start_timeout_flag_sets_the_start_deadline() {
    let repo = tempfile::tempdir().unwrap();
    install(
        repo.path(),
        "slow",
        "tests/fixtures/onnx/slow_loop/model.onnx",
    );
    std::fs::write(
        repo.path().join("slow/1/warmup.json"),
        json!([{ "n": 10_000_000 }]).to_string(),
    )
    .unwrap();
    let server = start_server(repo.path(), port_range(4), &["--worker-start-timeout", "1"]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "slow"})).await;
    assert_eq!(code, 503, "{answer}");
    assert!(
        answer
            .to_string()
            .contains("did not become ready within 1 s"),
        "{answer}"
    );
}

/// A fake `ferroserve worker`: serves `/v2/health/ready` and `/models/status` at
/// once (version 1 AVAILABLE), its model's readiness route as `ready_route` says
/// and its liveness route as `live_route` says (Python statements; `model` and
/// `age()`, the seconds since it started, are in scope), then answers 200.
fn fake_worker(dir: &Path, ready_route: &str, live_route: &str) -> PathBuf {
    let indented = |route: &str| {
        route
            .lines()
            .map(|l| format!("            {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let script = format!(
        r#"#!/usr/bin/env python3
import http.server, json, sys, time
args = sys.argv[1:]
model = args[args.index("--model") + 1]
host, port = args[args.index("--rest-addr") + 1].rsplit(":", 1)
started = time.monotonic()
def age():
    return time.monotonic() - started
status = json.dumps({{"models": [{{"model_id": model, "served_versions": [1],
    "versions": [{{"version": 1, "state": "AVAILABLE"}}]}}]}}).encode()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/v2/models/%s/ready" % model:
{ready_route}
            self.answer(200, b"")
        elif self.path == "/v2/health/live":
{live_route}
            self.answer(200, b"")
        elif self.path == "/v2/health/ready":
            self.answer(200, b"")
        elif self.path == "/models/status":
            self.answer(200, status)
        else:
            self.answer(404, b"")
    def answer(self, code, body):
        try:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the supervisor gave up on this probe
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
"#,
        ready_route = indented(ready_route),
        live_route = indented(live_route),
    );
    let path = dir.join("fake-worker");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A supervisor in this process that starts `binary` as its workers.
fn supervisor(binary: PathBuf, state: &Path, startup_timeout: Duration) -> Arc<Supervisor> {
    Supervisor::new(config(binary, state, startup_timeout), None).unwrap()
}

/// The configuration of [`supervisor`].
fn config(binary: PathBuf, state: &Path, startup_timeout: Duration) -> WorkerConfig {
    WorkerConfig {
        binary,
        ports: port_range(2),
        bind: "127.0.0.1".parse().unwrap(),
        state_dir: state.join("workers"),
        onnxruntime_path: None,
        tensorflow_path: None,
        auth_tokens: None,
        metrics_require_token: false,
        main_auth: None,
        metrics_path: None,
        main_server_url: None,
        inherited: Default::default(),
        startup_timeout,
        stop_timeout: Duration::from_secs(1),
        crash_loop_failures: 5,
        crash_loop_window: Duration::from_secs(60),
        cgroups: false,
    }
}

/// A worker whose model turns ready but whose readiness probe answers slowly (as
/// under CFS throttling: 1.5 s, past the health checks' 1 s, while the health
/// routes answer at once) is waited for, not killed as a model that cannot load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_probe_answered_slowly_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let binary = fake_worker(dir.path(), "if age() < 4:\n    time.sleep(1.5)", "pass");
    let supervisor = supervisor(binary, dir.path(), Duration::from_secs(60));
    let deployment = Deployment {
        cpu_limit: Some("10m".into()),
        ..Deployment::default()
    };
    let status = supervisor
        .deploy("sk", dir.path().join("sk"), deployment)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.state.as_str(), "ready", "{status:?}");
    supervisor.shutdown().await;
}

/// A worker whose model's readiness probe never answers is killed at the start
/// deadline, and the deploy says so (naming the CPU limit, the likely cause), not
/// that its model has no version that loads: its status says version 1 loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_past_its_deadline_says_so_and_names_the_cpu_limit() {
    let dir = tempfile::tempdir().unwrap();
    let binary = fake_worker(dir.path(), "time.sleep(3600)", "pass");
    let supervisor = supervisor(binary, dir.path(), Duration::from_secs(3));
    let deployment = Deployment {
        cpu_limit: Some("10m".into()),
        ..Deployment::default()
    };
    let error = supervisor
        .deploy("sk", dir.path().join("sk"), deployment)
        .await
        .expect_err("the worker never serves its model")
        .to_string();
    assert!(!error.contains("no version"), "{error}");
    assert!(error.contains("did not become ready within 3 s"), "{error}");
    assert!(
        error.contains("CPU limit") && error.contains("10m"),
        "{error}"
    );
    supervisor.shutdown().await;
}

/// A worker that answers its liveness checks in 2.5 s once serving, as one held to
/// a fraction of a core does while it decodes a large body (at `10m`, a 60,000-row
/// JSON request kept a real worker's async thread for seconds, and the supervisor
/// killed it as hung, failing the requests it was answering). Under a CPU limit of
/// `200m` its checks wait 5 s (1 s / cpu), so it serves on; with no limit they
/// wait 1 s, so three late answers still kill it, as they should a hung worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_worker_that_answers_its_health_checks_late_is_not_killed() {
    for (cpu_limit, killed) in [(Some("200m"), false), (None, true)] {
        let dir = tempfile::tempdir().unwrap();
        let binary = fake_worker(dir.path(), "pass", "if age() > 2:\n    time.sleep(2.5)");
        let supervisor = supervisor(binary, dir.path(), Duration::from_secs(60));
        let deployment = Deployment {
            cpu_limit: cpu_limit.map(String::from),
            ..Deployment::default()
        };
        let status = supervisor
            .deploy("sk", dir.path().join("sk"), deployment)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let first = status.pid;
        // Three checks past the first late one: about 3 x (1 s apart + 1 s) with
        // no limit.
        let deadline = std::time::Instant::now() + Duration::from_secs(14);
        let mut restarted = false;
        while std::time::Instant::now() < deadline && !restarted {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = supervisor.status("sk").unwrap();
            restarted = now.restarts > 0 || now.pid != first;
        }
        let now = supervisor.status("sk").unwrap();
        assert_eq!(restarted, killed, "cpu_limit {cpu_limit:?}: {now:?}");
        if killed {
            let exit = now.last_exit.expect("an exit is recorded");
            assert!(exit.reason.contains("health checks"), "{exit:?}");
        }
        supervisor.shutdown().await;
    }
}

/// A restored deployment (no deploy call waits for it) whose worker never serves
/// before its start deadline is started five times, then left in crash-loop, its
/// last exit saying why. Each start takes the whole deadline, so five of them never
/// fall within the crash-loop window: before these were counted in a row, such a
/// deployment was started again forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_deployment_that_never_starts_in_time_ends_in_crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    let binary = fake_worker(dir.path(), "time.sleep(3600)", "pass");
    let config = WorkerConfig {
        crash_loop_window: Duration::from_secs(2),
        ..config(binary, dir.path(), Duration::from_secs(1))
    };
    let supervisor = Supervisor::new(config, None).unwrap();
    supervisor
        .restore("sk", dir.path().join("sk"), Deployment::default(), None)
        .await
        .unwrap();
    // Five starts of 1 s each and the backoffs between them (0.1 to 0.8 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = supervisor.status("sk").unwrap();
        if status.state.as_str() == "crash-loop" || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.state.as_str(), "crash-loop", "{status:?}");
    assert_eq!(status.restarts, 4, "{status:?}");
    let reason = status.last_exit.expect("an exit is recorded").reason;
    assert!(
        reason.contains("did not become ready within 1 s")
            && reason.contains("last 5 starts in a row did not serve"),
        "{reason}"
    );
    supervisor.shutdown().await;
}
