//! The response cache (issue 12) of a deployed model (issue 14): a worker takes its
//! main server's cache tiers, so `[cache] enabled = true` means for a deployed model
//! what it means in process. Black-box against the real binary, with a throwaway
//! real `redis-server`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::child::ChildServer;
use common::redis_server::RedisServer;
use common::workers::{initial_env, start_server};
use common::{metric_value, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use serde_json::{json, Value};

const CACHE_ON: &str = "[cache]\nenabled = true\n";

/// The iris classifier under `model`, with the response cache on.
fn install_cached_iris(repo: &Path, model: &str) {
    let dir = repo.join(model).join("1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        root_path("examples/models/iris_lr/1/model.onnx"),
        dir.join("model.onnx"),
    )
    .unwrap();
    std::fs::write(repo.join(model).join("config.toml"), CACHE_ON).unwrap();
}

/// A TF Serving predict of one row: its status, its `x-ferroserve-cache` header
/// and its body.
async fn predict(url: &str, model: &str, row: [f32; 4]) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/models/{model}:predict"))
        .json(&json!({ "instances": [row] }))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-ferroserve-cache")
        .map(|v| v.to_str().unwrap().to_string());
    (status, cache, r.json().await.unwrap())
}

/// Deploys `model` on `server`: the worker's URL and pid.
async fn deploy(server: &ChildServer, model: &str) -> (String, u64) {
    let r = reqwest::Client::new()
        .post(server.url("/deploy"))
        .json(&json!({ "model_id": model }))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", server.log());
    let port = body["port"].as_u64().unwrap();
    let pid = body["pid"].as_u64().unwrap();
    (format!("http://127.0.0.1:{port}"), pid)
}

async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn eventually(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--cache-max-bytes 0` and no Redis: no model is cached, a deployed one neither
/// (its worker kept a 256 MiB tier of its own: `miss`, then `hit`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_has_no_cache_where_its_main_server_has_none() {
    let repo = tempfile::tempdir().unwrap();
    install_cached_iris(repo.path(), "iris");
    let ports = common::child::worker_ports(5);
    let server = start_server(repo.path(), ports, &["--cache-max-bytes", "0"]).await;
    let row = [5.1, 3.5, 1.4, 0.2];
    let main = server.url("");
    for _ in 0..2 {
        let (status, cache, body) = predict(&main, "iris", row).await;
        assert_eq!((status, cache), (200, None), "in process: {body}");
    }

    let (worker, _) = deploy(&server, "iris").await;
    for url in [&main, &main, &worker, &worker] {
        let (status, cache, body) = predict(url, "iris", row).await;
        assert_eq!((status, cache), (200, None), "{url}: {body}");
    }
    let text = metrics(&worker).await;
    assert_eq!(
        metric_value(&text, "ferroserve_cache_entries", &[("tier", "memory")]),
        0.0,
        "{text}"
    );
}

fn in_process_settings(repo: &Path, redis: &RedisServer) -> Settings {
    Settings {
        redis_url: Some(redis.url()),
        // Generous: the CI machine is busy, and a slow lookup is only a miss.
        redis_timeout: Duration::from_millis(500),
        worker_ports: None,
        ..test_settings(repo)
    }
}

/// With `--redis-url`, a deployed model uses the shared tier as an in-process one
/// does: its worker's answer is a hit for another server's in-process model, and
/// that one's answer a hit for the worker (a deployed model never used Redis). The
/// URL reaches the worker in its environment, never on its command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_shares_the_redis_tier_with_in_process_models() {
    let redis = RedisServer::start();
    let repo = tempfile::tempdir().unwrap();
    install_cached_iris(repo.path(), "iris");
    let ports = common::child::worker_ports(5);
    let url = redis.url();
    let server = start_server(
        repo.path(),
        ports,
        // The in-process tiers are off: every hit below comes from Redis.
        &[
            "--redis-url",
            &url,
            "--redis-timeout-ms",
            "500",
            "--cache-max-bytes",
            "0",
        ],
    )
    .await;
    let (worker, pid) = deploy(&server, "iris").await;
    assert_eq!(
        initial_env(pid, "FERROSERVE_WORKER_REDIS_URL").as_deref(),
        Some(url.as_str()),
        "the worker's environment"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(!cmdline.contains("redis://"), "{cmdline}");
    assert!(cmdline.contains("--cache-max-bytes=0"), "{cmdline}");
    assert!(cmdline.contains("--redis-timeout-ms=500"), "{cmdline}");

    let other = TestServer::start_with(Settings {
        cache_max_bytes: 0,
        ..in_process_settings(repo.path(), &redis)
    })
    .await;
    let other_url = other.url("");

    // The worker's answer (forwarded by the main server) is the other server's hit.
    let row = [5.1, 3.5, 1.4, 0.2];
    let (status, cache, miss) = predict(&server.url(""), "iris", row).await;
    assert_eq!((status, cache.as_deref()), (200, Some("miss")), "{miss}");
    eventually(
        "the worker's entry reaches Redis",
        Duration::from_secs(10),
        || redis.key_count() >= 1,
    )
    .await;
    let (status, cache, hit) = predict(&other_url, "iris", row).await;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")), "{hit}");
    assert_eq!(hit, miss);

    // And the other way: an in-process answer is the worker's hit.
    let row = [6.3, 3.3, 6.0, 2.5];
    let (status, cache, miss) = predict(&other_url, "iris", row).await;
    assert_eq!((status, cache.as_deref()), (200, Some("miss")), "{miss}");
    eventually(
        "the in-process entry reaches Redis",
        Duration::from_secs(10),
        || redis.key_count() >= 2,
    )
    .await;
    let (status, cache, hit) = predict(&worker, "iris", row).await;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")), "{hit}");
    assert_eq!(hit, miss);
    let text = metrics(&worker).await;
    assert!(
        metric_value(
            &text,
            "ferroserve_cache_hits_total",
            &[("model", "iris"), ("tier", "redis")]
        ) >= 1.0,
        "{text}"
    );
    other.stop().await;
}
