//! Jobs (issue 13): scoring jobs end to end over REST, the old service's routes and
//! the CLI, against a real server on 127.0.0.1:0.

mod clients;
#[path = "../common/mod.rs"]
mod common;
mod lifecycle;
mod shared_store;
mod sources_sinks;
mod specs;
mod sql_sinks;

use std::path::Path;
use std::time::{Duration, Instant};

use common::db_servers::{DbKind, DbServer};
use common::jobs::{
    env, finished, iris_rows, model_answers, settings, submit, wait_for, Env, FEATURES,
};
use common::{assert_error, install_model, root_path, TestServer};
use serde_json::{json, Value};
use sqlx::Row;

fn write_csv(path: &Path, rows: &[Vec<f64>]) {
    let mut text = format!("id,{}\n", FEATURES.join(","));
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r.iter().map(|v| v.to_string()).collect();
        text.push_str(&format!("id{i},{}\n", cells.join(",")));
    }
    std::fs::write(path, text).unwrap();
}

fn write_jsonl(path: &Path, rows: &[Vec<f64>]) {
    let mut text = String::new();
    for (i, r) in rows.iter().enumerate() {
        let mut o = serde_json::Map::new();
        o.insert("id".into(), json!(i));
        for (f, v) in FEATURES.iter().zip(r) {
            o.insert(f.to_string(), json!(v));
        }
        text.push_str(&Value::Object(o).to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn score_spec(source: Value, sink: Value, batch_size: usize) -> Value {
    json!({"kind": "score", "spec": {
        "model": "iris", "version": "latest",
        "source": source, "sink": sink,
        "carry": ["id"], "batch_size": batch_size,
    }})
}

/// Files in the data directory (temporary ones included).
fn data_files(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&env.data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

async fn read_table(url: &str) -> Vec<(i64, String, f64)> {
    let sql = "SELECT id, predict, predict_proba_setosa FROM scores ORDER BY id";
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
        let out = rows
            .iter()
            .map(|r| {
                (
                    r.get::<i64, _>(0),
                    r.get::<String, _>(1),
                    r.get::<f64, _>(2),
                )
            })
            .collect();
        pool.close().await;
        out
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
        let out = rows
            .iter()
            .map(|r| {
                (
                    r.get::<i64, _>(0),
                    r.get::<String, _>(1),
                    r.get::<f64, _>(2),
                )
            })
            .collect();
        pool.close().await;
        out
    }
}

/// A job long enough to cancel: many small batches.
fn slow_job(env: &Env, sink: &str) -> Value {
    write_csv(&env.data.join("big.csv"), &iris_rows(200_000));
    score_spec(json!({"path": "big.csv"}), json!({"path": sink}), 4)
}

/// The short job the tests of a queue behind a busy worker queue: `small.csv`
/// scored into `later.csv`.
fn later_job() -> Value {
    score_spec(
        json!({"path": "small.csv"}),
        json!({"path": "later.csv"}),
        8,
    )
}

/// Rows of [`running_job`]'s source: enough, at batch 4, to keep it running while a
/// test changes its model.
const ROWS_OF_A_LONG_JOB: usize = 40_000;

/// A server scoring `big.csv` (`n` rows, batch 4) into `out.csv` with "iris", once
/// the job has read its first rows: its environment, server and job id.
async fn running_job(n: usize) -> (Env, TestServer, String) {
    let env = env();
    write_csv(&env.data.join("big.csv"), &iris_rows(n));
    let server = TestServer::start_with(settings(&env)).await;
    let id = submit(
        &server,
        score_spec(json!({"path": "big.csv"}), json!({"path": "out.csv"}), 4),
    )
    .await;
    wait_for(&server, &id, Duration::from_secs(60), |j| {
        j["progress"]["rows_read"].as_u64().unwrap_or(0) > 0
    })
    .await;
    (env, server, id)
}

/// The nice value of each of this process's threads whose name starts with `prefix`
/// (Linux: `/proc/self/task/*/stat`, field 19), and of the process's main thread.
fn thread_nices(prefix: &str) -> (i32, Vec<i32>) {
    let nice = |stat: &str| -> i32 {
        // The name is in parentheses and may hold spaces: count fields after it.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(16).unwrap().parse().unwrap()
    };
    let main = nice(&std::fs::read_to_string("/proc/self/stat").unwrap());
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix) {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) {
                found.push(nice(&stat));
            }
        }
    }
    (main, found)
}

/// Reads the events stream into `text` until `until` holds for it, the stream
/// ends, or `limit` passes; answers whether the stream ended.
async fn read_events(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    text: &mut String,
    limit: Duration,
    until: impl Fn(&str) -> bool,
) -> bool {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + limit;
    while !until(text) {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
    false
}

/// The events stream of job `id`.
async fn events_of(
    server: &TestServer,
    id: &str,
) -> impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin {
    let response = server
        .client
        .get(server.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    Box::pin(response.bytes_stream())
}

/// Makes the server's one job worker busy with a long job (one row a batch: it
/// runs far longer than these tests, which cancel it) and queues [`later_job`]
/// behind it; answers both jobs' ids (busy, queued).
async fn queued_behind_a_busy_worker(server: &TestServer, env: &Env) -> (String, String) {
    write_csv(&env.data.join("small.csv"), &iris_rows(20));
    let mut busy = slow_job(env, "busy.csv");
    busy["spec"]["batch_size"] = json!(1);
    let busy = submit(server, busy).await;
    wait_for(server, &busy, Duration::from_secs(60), |j| {
        j["state"] == "running"
    })
    .await;
    let queued = submit(server, later_job()).await;
    (busy, queued)
}
