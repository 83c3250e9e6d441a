//! Several replicas as one service (issue 18): three ferroserve processes sharing
//! one model repository, one PostgreSQL store and one Redis cache, behind nginx,
//! all real servers started here on free loopback ports and removed at the end.

mod common;

use common::eventually;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::{free_port, ChildServer};
use common::db_servers::{DbKind, DbServer};
use common::nginx::Nginx;
use common::redis_server::RedisServer;
use common::{install_model, root_path};
use serde_json::{json, Value};

const ROW: [f64; 4] = [5.1, 3.5, 1.4, 0.2];

struct Cluster {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    data: PathBuf,
    replicas: Vec<ChildServer>,
    nginx: Nginx,
    _db: DbServer,
    _redis: RedisServer,
}

fn replica_command(
    dir: &Path,
    n: usize,
    repo: &Path,
    data: &Path,
    db: &str,
    redis: &str,
) -> (Command, String) {
    let rest = format!("127.0.0.1:{}", free_port());
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    c.arg("serve")
        .arg("--model-repository")
        .arg(repo)
        .arg("--state-dir")
        .arg(dir.join(format!("state{n}")))
        .arg("--data-dir")
        .arg(data)
        .args(["--rest-addr", &rest])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--database-url", db])
        .args(["--redis-url", redis])
        .args(["--file-system-poll-wait-seconds", "0.2"])
        .args(["--inference-threads", "1"])
        .args(["--shutdown-delay", "1.5"]);
    (c, rest)
}

async fn start_cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let iris = root_path("examples/models/iris_lr/1/model.onnx");
    install_model(&repo, "iris", 1, &iris);
    std::fs::write(repo.join("iris/config.toml"), "[cache]\nenabled = true\n").unwrap();
    install_model(&repo, "labelled", 1, &iris);
    install_model(
        &repo,
        "labelled",
        2,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    std::fs::write(
        repo.join("labelled/config.toml"),
        "version_policy = \"all\"\n[labels]\nstable = 1\n",
    )
    .unwrap();
    let db = DbServer::start(DbKind::Postgres);
    let redis = RedisServer::start();
    let mut replicas = Vec::new();
    // One at a time: the first migrates the store (the others would wait on the
    // migration lock anyway).
    for n in 0..3 {
        let (c, rest) = replica_command(dir.path(), n, &repo, &data, &db.url(), &redis.url());
        replicas.push(ChildServer::start(c, rest.parse().unwrap()).await);
    }
    let upstreams: Vec<String> = replicas.iter().map(|r| r.rest.to_string()).collect();
    let nginx = Nginx::start(&upstreams);
    Cluster {
        _dir: dir,
        repo,
        data,
        replicas,
        nginx,
        _db: db,
        _redis: redis,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn get(url: String) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn predict(url: String, row: [f64; 4]) -> reqwest::Response {
    client()
        .post(url)
        .json(&json!({"instances": [row]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_nginx_behave_as_one_service() {
    let mut cluster = start_cluster().await;
    let n = cluster.replicas.len();

    // Through nginx, every replica answers.
    for _ in 0..6 {
        let r = predict(cluster.nginx.url("/v1/models/iris:predict"), ROW).await;
        assert_eq!(r.status(), 200);
    }

    // An upload through one replica is served by all within the poll interval.
    let form = reqwest::multipart::Form::new()
        .text("model_id", "uploaded")
        .part(
            "file",
            reqwest::multipart::Part::bytes(
                std::fs::read(root_path("examples/models/iris_lr/1/model.onnx")).unwrap(),
            )
            .file_name("model.onnx"),
        );
    let r = client()
        .post(cluster.replicas[0].url("/upload_model"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for replica in &cluster.replicas {
        let url = replica.url("/v1/models/uploaded");
        eventually(
            "the upload served everywhere",
            Duration::from_secs(20),
            || {
                let url = url.clone();
                async move {
                    let (s, v) = get(url).await;
                    s == 200 && v["model_version_status"][0]["state"] == "AVAILABLE"
                }
            },
        )
        .await;
    }
    // The store's history says which replica took it.
    let (_, history) = get(cluster.replicas[2].url("/v1/models/uploaded/history")).await;
    let upload = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "upload")
        .unwrap_or_else(|| panic!("{history}"))
        .clone();
    assert!(
        upload["replica"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", cluster.replicas[0].pid())),
        "{upload}"
    );

    // A label moved in the config file moves on every replica.
    std::fs::write(
        cluster.repo.join("labelled/config.toml"),
        "version_policy = \"all\"\n[labels]\nstable = 2\n",
    )
    .unwrap();
    for replica in &cluster.replicas {
        let url = replica.url("/v1/models/labelled/labels/stable");
        eventually(
            "the label moved everywhere",
            Duration::from_secs(20),
            || {
                let url = url.clone();
                async move {
                    let (s, v) = get(url).await;
                    s == 200 && v["model_version_status"][0]["version"] == "2"
                }
            },
        )
        .await;
    }

    // The response cache is shared: a miss on one replica is a hit on another.
    let row = [6.3, 2.9, 5.6, 1.8];
    let first = predict(cluster.replicas[0].url("/v1/models/iris:predict"), row).await;
    assert_eq!(first.headers()["x-ferroserve-cache"], "miss");
    let first: Value = first.json().await.unwrap();
    for replica in &cluster.replicas[1..] {
        let url = replica.url("/v1/models/iris:predict");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = predict(url.clone(), row).await;
            let cached = r.headers()["x-ferroserve-cache"] == "hit";
            let answer: Value = r.json().await.unwrap();
            if cached {
                assert_eq!(answer, first);
                break;
            }
            assert!(Instant::now() < deadline, "no hit from the shared cache");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Jobs: each runs exactly once, whichever replica takes it, and every replica
    // answers its status.
    let mut csv = String::from("id,a,b,c,d\n");
    for i in 0..200 {
        csv.push_str(&format!("r{i},5.1,3.5,1.4,0.2\n"));
    }
    std::fs::write(cluster.data.join("rows.csv"), csv).unwrap();
    std::fs::write(
        cluster.repo.join("iris/config.toml"),
        "feature_names = [\"a\", \"b\", \"c\", \"d\"]\n[cache]\nenabled = true\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ids = Vec::new();
    for j in 0..6 {
        let body = json!({"kind": "score", "spec": {
            "model": "iris", "source": {"path": "rows.csv"}, "sink": {"path": format!("out{j}.csv")},
            "carry": ["id"], "batch_size": 16}});
        let r = client()
            .post(cluster.nginx.url("/v1/jobs"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(
            r.json::<Value>().await.unwrap()["job_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for id in &ids {
        for replica in &cluster.replicas {
            let url = replica.url(&format!("/v1/jobs/{id}"));
            eventually(
                "the job succeeded, seen from every replica",
                Duration::from_secs(60),
                || {
                    let url = url.clone();
                    async move { get(url).await.1["state"] == "succeeded" }
                },
            )
            .await;
        }
    }
    for j in 0..6 {
        let text = std::fs::read_to_string(cluster.data.join(format!("out{j}.csv"))).unwrap();
        assert_eq!(text.lines().count(), 201, "out{j}.csv: every row once");
    }
    // Exactly once: each job was claimed once (one start, recorded by one replica),
    // and together the replicas' job metrics count six finished jobs.
    let mut finished = 0.0;
    for replica in &cluster.replicas {
        let r = client().get(replica.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(text.contains("ferroserve_requests_total"), "{text}");
        finished += text
            .lines()
            .filter(|l| l.starts_with("ferroserve_jobs_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert_eq!(finished, 6.0);

    // Stopping one replica under load fails no request: it turns not ready, drains
    // and exits; nginx sends the rest elsewhere.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let url = cluster.nginx.url("/v1/models/iris:predict");
        load.push(tokio::spawn(async move {
            let c = client();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 20_000 {
                i += 1;
                // Distinct rows, so that the cache does not answer them all.
                let row = [5.0 + (i % 97) as f64 / 100.0, 3.5, 1.4, 0.2];
                match c.post(&url).json(&json!({"instances": [row]})).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leaving = cluster.replicas.pop().unwrap();
    leaving.terminate();
    // Not ready as soon as the signal is handled (the shutdown delay), still
    // answering. The signal arrives asynchronously, so a first look may still see
    // it ready; it must turn 503 well within the 1.5 s delay.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let (status, _) = get(leaving.url("/v2/health/ready")).await;
        if status == 503 {
            break;
        }
        assert_eq!(status, 200, "still serving while it drains");
        assert!(
            std::time::Instant::now() < deadline,
            "still ready 1 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut leaving = leaving;
    let code = tokio::task::spawn_blocking(move || {
        let code = leaving.wait_exit(Duration::from_secs(30));
        (code, leaving)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1.log());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("under the stop: {ok} answered, {failed} failed");
    assert!(ok > 100, "{ok} answered");
    assert_eq!(
        failed,
        0,
        "{failed} of {} failed; nginx: {}",
        ok + failed,
        cluster.nginx.log()
    );
    assert_eq!(cluster.replicas.len(), n - 1);
}
