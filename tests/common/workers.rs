//! Helpers of the isolated-deployment tests (`tests/workers*.rs`): a server with a
//! range of worker ports, deploys, the registry, worker processes' pids.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::child::{free_port, ChildServer};
use super::root_path;

pub const ROW: [f64; 4] = [5.1, 3.5, 1.4, 0.2];

/// A range of ports for one test's workers.
pub fn port_range(n: u16) -> (u16, u16) {
    super::child::worker_ports(n)
}

pub async fn start_server(repo: &Path, ports: (u16, u16), extra: &[&str]) -> ChildServer {
    start_server_with_grpc(repo, ports, extra).await.0
}

/// A server and its gRPC port. Its REST and gRPC ports are free when chosen, but
/// another test's process (a worker on a port the system picked) may take one
/// before the server binds it: then it starts again on others.
pub async fn start_server_with_grpc(
    repo: &Path,
    ports: (u16, u16),
    extra: &[&str],
) -> (ChildServer, u16) {
    for _ in 0..5 {
        let rest: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let grpc_port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
        command
            .arg("serve")
            .arg("--model-repository")
            .arg(repo)
            .arg("--rest-addr")
            .arg(rest.to_string())
            .arg("--grpc-addr")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--worker-ports")
            .arg(format!("{}-{}", ports.0, ports.1))
            .arg("--inference-threads")
            .arg("1")
            .args(extra);
        match ChildServer::try_start(command, rest).await {
            Ok(server) => return (server, grpc_port),
            Err(log) if log.contains("Address already in use") => continue,
            Err(log) => panic!("{log}"),
        }
    }
    panic!("the server found its ports taken 5 times in a row");
}

pub fn install(repo: &Path, model: &str, fixture: &str) {
    let dir = repo.join(model).join("1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root_path(fixture), dir.join("model.onnx")).unwrap();
}

pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let r = request
        .timeout(Duration::from_secs(30))
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

pub async fn get(url: String) -> (u16, Value) {
    send(reqwest::Client::new().get(url)).await
}

pub async fn post(url: String, body: &Value) -> (u16, Value) {
    send(reqwest::Client::new().post(url).json(body)).await
}

pub async fn deploy(server: &ChildServer, body: Value) -> (u16, Value) {
    post(server.url("/deploy"), &body).await
}

pub async fn registry(server: &ChildServer, model: &str) -> Value {
    let (code, body) = get(server.url(&format!("/registry/services/{model}"))).await;
    assert_eq!(code, 200, "{body}");
    body
}

/// Polls the registry until `done` holds for the model's entry, up to `limit`.
pub async fn wait_registry(
    server: &ChildServer,
    model: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let entry = registry(server, model).await;
        if done(&entry) {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "registry entry of {model} not as expected within {limit:?}: {entry}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn alive(pid: u64) -> bool {
    // A reaped process has no /proc entry; a zombie counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

pub fn kill9(pid: u64) {
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// Waits until none of `pids` runs, up to `limit`.
pub fn assert_gone(pids: &[u64], limit: Duration) {
    let deadline = Instant::now() + limit;
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "worker processes outlived their server: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn pid_of(entry: &Value) -> u64 {
    entry["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid: {entry}"))
}

/// The main server's peak resident memory (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or_else(|| panic!("no VmHWM: {status}"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// The model's entry of the main server's `/models/status`.
pub async fn model_status(server: &ChildServer, model: &str) -> Value {
    let (code, status) = get(server.url("/models/status")).await;
    assert_eq!(code, 200, "{status}");
    status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == model)
        .unwrap_or_else(|| panic!("{model} not in {status}"))
        .clone()
}

/// The main server's own version state changes of `model` (its audit trail, kept
/// in memory: every load and unload in this process, recorded by it, not by a
/// worker), at or after `since_ms`.
pub async fn in_process_states(server: &ChildServer, model: &str, since_ms: i64) -> Vec<Value> {
    let main = format!(":{}", server.pid());
    model_status(server, model).await["recent_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["kind"] == "state"
                && e["at_ms"].as_i64().unwrap() >= since_ms
                && e["replica"].as_str().unwrap().ends_with(&main)
        })
        .cloned()
        .collect()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub const MANAGER: &str = "fst_workers-test-manager-token";

pub const READER: &str = "fst_workers-test-reader-token";

pub const PROMETHEUS: &str = "fst_workers-test-metrics-token";

/// A tokens file (issue 10's format) with a manager, an inference-only reader and
/// a metrics-only scraper.
pub fn write_tokens(path: &Path) {
    let entry = |name: &str, token: &str, scopes: &str| {
        format!(
            "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{scopes}]\n",
            ferroserve::auth::to_hex(&ferroserve::auth::token_sha256(token))
        )
    };
    let text = entry("manager", MANAGER, r#""inference", "management""#)
        + &entry("reader", READER, r#""inference""#)
        + &entry("prometheus", PROMETHEUS, r#""metrics""#);
    std::fs::write(path, text).unwrap();
}

/// `POST /deploy` of iris with the manager's token, on a server with tokens: its answer.
pub async fn deploy_iris_as_manager(server: &ChildServer, client: &reqwest::Client) -> Value {
    let (code, answer) = send_with(
        client
            .post(server.url("/deploy"))
            .json(&json!({"model_id": "iris"})),
        Some(MANAGER),
    )
    .await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    answer
}

pub async fn send_with(request: reqwest::RequestBuilder, token: Option<&str>) -> (u16, Value) {
    match token {
        Some(t) => send(request.bearer_auth(t)).await,
        None => send(request).await,
    }
}

/// The value of `name` in the environment `pid` started with.
pub fn initial_env(pid: u64, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ.split(|b| *b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(&format!("{name}=")).map(str::to_string)
    })
}

/// A repository with the scikit-learn iris model (named features) as `iris`, and a
/// data directory holding `in.csv` (four rows of its features).
pub fn scoring_repo() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let version = repo.join("iris/1");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::copy(
        root_path("examples/models/iris_sklearn/1/model.joblib"),
        version.join("model.joblib"),
    )
    .unwrap();
    std::fs::write(
        repo.join("iris/config.toml"),
        "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("in.csv"),
        "id,sepal_length,sepal_width,petal_length,petal_width\n\
         1,5.1,3.5,1.4,0.2\n2,6.2,2.9,4.3,1.3\n3,7.7,3.0,6.1,2.3\n4,5.9,3.0,5.1,1.8\n",
    )
    .unwrap();
    (dir, repo)
}

pub async fn wait_job(server: &ChildServer, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, job) = get(server.url(&format!("/v1/jobs/{id}"))).await;
        assert_eq!(code, 200, "{job}");
        if matches!(
            job["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return job;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn send_text(url: String) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The `workers` table's rows as (model, port), read from the server's own store
/// (its default place under the repository) while no server runs.
pub async fn stored_worker_rows(repo: &Path) -> Vec<(String, i64)> {
    let db = format!(
        "sqlite://{}",
        repo.join(".ferroserve/ferroserve.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT model, port FROM workers ORDER BY model")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

pub async fn registry_entries(server: &ChildServer) -> Vec<Value> {
    let (code, list) = get(server.url("/registry/services")).await;
    assert_eq!(code, 200, "{list}");
    list["services"].as_array().unwrap().clone()
}

/// Turns on `[log] sample_rate = 1.0` for the scoring repository's `iris`.
pub fn log_every_prediction(repo: &Path) {
    let mut config = std::fs::read_to_string(repo.join("iris/config.toml")).unwrap();
    config.push_str("[log]\nsample_rate = 1.0\n");
    std::fs::write(repo.join("iris/config.toml"), config).unwrap();
}

/// Waits until the main store's prediction log of `iris` holds `n` rows, up to 15 s.
pub async fn wait_logged(server: &ChildServer, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, text) = send_text(server.url("/v1/models/iris/predictions")).await;
        assert_eq!(code, 200, "{text}");
        let rows: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect();
        if rows.len() == n || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stored events of `kind` for `model` (their details), read from the server's
/// own store; polled, since most events reach the database within seconds.
pub async fn stored_event_details(
    repo: &Path,
    model: &str,
    kind: &str,
    least: usize,
) -> Vec<Value> {
    let db = format!(
        "sqlite://{}",
        repo.join(".ferroserve/ferroserve.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let details = loop {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT detail FROM events WHERE model = ? AND kind = ? ORDER BY id",
        )
        .bind(model)
        .bind(kind)
        .fetch_all(&pool)
        .await
        .unwrap();
        if rows.len() >= least || Instant::now() >= deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    pool.close().await;
    details
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Waits until the model is served (in-process or not) on the main server.
pub async fn wait_predicts(server: &ChildServer, model: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = post(
            server.url("/predict"),
            &json!({"model_id": model, "features": ROW}),
        )
        .await;
        if code == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{model} never served: {code} {body}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
