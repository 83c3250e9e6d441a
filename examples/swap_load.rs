//! Hot-swap benchmark client (issue 3), run by `bench/swap/run.sh`; an example target
//! so that it builds with the dev-dependencies (reqwest) and no extra manifest entry.
//!
//! Against a running ferroserve whose repository holds model `m`:
//! 1. steady load with no swaps for `--seconds`: requests per second, p50, p99;
//! 2. the same load while a new version of `m` is added every second (copy into a
//!    hidden staging directory, atomic rename; the previous version is removed once
//!    the new one serves), picked up by the repository watcher;
//! 3. 100 swaps back to back (add a version, `POST /reload_model?modelname=m`, remove
//!    the old one), reading the server's resident memory after the first and the last.
//!
//! Every request must succeed; the client counts failures and exits non-zero on any.
//!
//! usage: swap_load --url http://127.0.0.1:8501 --repo DIR --pid PID
//!        [--seconds 10] [--clients 8] [--swaps 100]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Args {
    url: String,
    repo: PathBuf,
    pid: u32,
    seconds: u64,
    clients: usize,
    swaps: u64,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8501".into(),
        repo: PathBuf::from("models"),
        pid: 0,
        seconds: 10,
        clients: 8,
        swaps: 100,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--url" => a.url = value,
            "--repo" => a.repo = value.into(),
            "--pid" => a.pid = value.parse().expect("--pid"),
            "--seconds" => a.seconds = value.parse().expect("--seconds"),
            "--clients" => a.clients = value.parse().expect("--clients"),
            "--swaps" => a.swaps = value.parse().expect("--swaps"),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// The artifacts the versions alternate between (same signature, different answers).
fn artifacts(repo: &Path) -> [PathBuf; 2] {
    [
        repo.join("../artifacts/a.onnx"),
        repo.join("../artifacts/b.onnx"),
    ]
}

fn add_version(repo: &Path, version: u64) {
    let staging = repo.join(format!("m/.tmp-bench-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    let src = &artifacts(repo)[(version % 2) as usize];
    std::fs::copy(src, staging.join("model.onnx")).unwrap();
    std::fs::rename(&staging, repo.join(format!("m/{version}"))).unwrap();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn served(client: &reqwest::Client, url: &str) -> Vec<u64> {
    let status: Value = client
        .get(format!("{url}/models/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == "m")
        .map(|m| {
            m["served_versions"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_u64)
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    failures: u64,
    first_failure: Option<String>,
    versions_seen: std::collections::BTreeSet<u64>,
}

async fn load(url: &str, clients: usize, stop: Arc<AtomicBool>) -> Phase {
    let phase = Arc::new(Mutex::new(Phase::default()));
    let body = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                  "data": [5.1, 3.5, 1.4, 0.2]}]});
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (phase, stop, body) = (phase.clone(), stop.clone(), body.clone());
            let url = format!("{url}/v2/models/m/infer");
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut local = Phase::default();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = client.post(&url).json(&body).send().await;
                    let ok = match r {
                        Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                            Ok(v) => {
                                if let Some(version) =
                                    v["model_version"].as_str().and_then(|s| s.parse().ok())
                                {
                                    local.versions_seen.insert(version);
                                }
                                Ok(())
                            }
                            Err(e) => Err(e.to_string()),
                        },
                        Ok(r) => Err(format!(
                            "{}: {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => Err(e.to_string()),
                    };
                    match ok {
                        Ok(()) => local.latencies.push(t.elapsed()),
                        Err(e) => {
                            local.failures += 1;
                            local.first_failure.get_or_insert(e);
                        }
                    }
                }
                let mut p = phase.lock().unwrap();
                p.latencies.extend(local.latencies);
                p.failures += local.failures;
                if p.first_failure.is_none() {
                    p.first_failure = local.first_failure;
                }
                p.versions_seen.extend(local.versions_seen);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(phase).ok().unwrap().into_inner().unwrap()
}

fn report(name: &str, p: &mut Phase, seconds: f64) -> String {
    p.latencies.sort();
    let pct = |q: f64| {
        p.latencies
            .get(((p.latencies.len() as f64 * q) as usize).min(p.latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(f64::NAN)
    };
    format!(
        "| {name} | {:.0} | {:.2} | {:.2} | {} | {} |",
        p.latencies.len() as f64 / seconds,
        pct(0.50),
        pct(0.99),
        p.failures,
        p.versions_seen.len()
    )
}

#[tokio::main]
async fn main() {
    let a = args();
    let client = reqwest::Client::new();
    let mut next_version = 2u64;
    let mut current = 1u64;

    // 1. No swaps.
    let stop = Arc::new(AtomicBool::new(false));
    let t = Instant::now();
    let handle = tokio::spawn(load_owned(a.url.clone(), a.clients, stop.clone()));
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut steady = handle.await.unwrap();
    let steady_secs = t.elapsed().as_secs_f64();

    // 2. A new version every second, picked up by the watcher.
    let stop = Arc::new(AtomicBool::new(false));
    let t = Instant::now();
    let handle = tokio::spawn(load_owned(a.url.clone(), a.clients, stop.clone()));
    let mut swaps_done = 0;
    while t.elapsed() < Duration::from_secs(a.seconds) {
        let tick = Instant::now();
        let v = next_version;
        next_version += 1;
        add_version(&a.repo, v);
        let deadline = Instant::now() + Duration::from_secs(30);
        while served(&client, &a.url).await != vec![v] {
            assert!(Instant::now() < deadline, "version {v} never took over");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::fs::remove_dir_all(a.repo.join(format!("m/{current}"))).unwrap();
        current = v;
        swaps_done += 1;
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut swapping = handle.await.unwrap();
    let swapping_secs = t.elapsed().as_secs_f64();

    // 3. Back-to-back swaps, forced by reload, for memory.
    let mut rss_first = 0;
    for i in 0..a.swaps {
        let v = next_version;
        next_version += 1;
        add_version(&a.repo, v);
        let r = client
            .post(format!("{}/reload_model?modelname=m", a.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        std::fs::remove_dir_all(a.repo.join(format!("m/{current}"))).unwrap();
        current = v;
        if i == 0 {
            rss_first = rss_kib(a.pid);
        }
    }
    // Let the last unloads finish (freed when the last handle drops).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_last = rss_kib(a.pid);

    println!(
        "| load (c = {}) | req/s | p50 ms | p99 ms | failed | versions answering |",
        a.clients
    );
    println!("|---|---|---|---|---|---|");
    println!("{}", report("no swaps", &mut steady, steady_secs));
    println!(
        "{}",
        report(
            &format!("a new version every second ({swaps_done} swaps)"),
            &mut swapping,
            swapping_secs
        )
    );
    println!();
    println!(
        "RSS after the first of {} back-to-back swaps: {:.1} MiB; after the last: {:.1} MiB ({:+.1} MiB)",
        a.swaps,
        rss_first as f64 / 1024.0,
        rss_last as f64 / 1024.0,
        (rss_last as f64 - rss_first as f64) / 1024.0
    );
    if steady.failures + swapping.failures > 0 {
        eprintln!(
            "FAILED requests: {:?} / {:?}",
            steady.first_failure, swapping.first_failure
        );
        std::process::exit(1);
    }
}

async fn load_owned(url: String, clients: usize, stop: Arc<AtomicBool>) -> Phase {
    load(&url, clients, stop).await
}
