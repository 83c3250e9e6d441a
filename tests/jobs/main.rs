//! Jobs (issue 13): scoring jobs end to end over REST, the old service's routes and
//! the CLI, against a real server on 127.0.0.1:0.

#[path = "../common/mod.rs"]
mod common;
mod shared_store;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_csv_to_csv_with_progress_and_carried_ids() {
    let env = env();
    let rows = iris_rows(300);
    write_csv(&env.data.join("in.csv"), &rows);
    let server = TestServer::start_with(settings(&env)).await;
    let id = submit(
        &server,
        score_spec(
            json!({"path": "in.csv"}),
            json!({"path": "out/scores.csv"}),
            32,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["kind"], "score");
    assert_eq!(job["progress"]["rows_read"], 300, "{job}");
    assert_eq!(job["progress"]["rows_written"], 300, "{job}");
    assert_eq!(job["progress"]["fraction"], 1.0, "{job}");
    assert_eq!(job["result"]["version"], 1, "{job}");
    assert!(job["started_ms"].as_i64().unwrap() >= job["created_ms"].as_i64().unwrap());
    assert!(job["finished_ms"].as_i64().is_some());

    let mut reader = csv::Reader::from_path(env.data.join("out/scores.csv")).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(
        header,
        [
            "id",
            "predict",
            "predict_proba_setosa",
            "predict_proba_versicolor",
            "predict_proba_virginica"
        ]
    );
    let answers = model_answers(&server, &rows).await;
    let mut n = 0;
    for (i, record) in reader.records().enumerate() {
        let record = record.unwrap();
        assert_eq!(&record[0], format!("id{i}"));
        assert_eq!(&record[1], answers[i].0, "row {i}");
        for j in 0..3 {
            let got: f64 = record[2 + j].parse().unwrap();
            assert!(
                (got - answers[i].1[j]).abs() < 1e-9,
                "row {i}: {got} vs {:?}",
                answers[i].1
            );
        }
        n += 1;
    }
    assert_eq!(n, 300);
    // The listing shows it, filtered by state and kind.
    let (status, list) = server.get("/v1/jobs?state=succeeded&kind=score").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1);
    assert_eq!(list["jobs"][0]["job_id"], id.as_str());
    let (_, none) = server.get("/v1/jobs?state=failed").await;
    assert_eq!(none["total"], 0);
    server.stop().await;
}

async fn score_jsonl_into_table(
    env: &Env,
    server: &TestServer,
    url: &str,
) -> Vec<(i64, String, f64)> {
    let rows = iris_rows(200);
    write_jsonl(&env.data.join("in.jsonl"), &rows);
    let id = submit(
        server,
        score_spec(
            json!({"path": "in.jsonl"}),
            json!({"url": url, "table": "scores", "mode": "overwrite"}),
            64,
        ),
    )
    .await;
    let job = finished(server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    // Twice: overwrite replaces the table's rows.
    let id = submit(
        server,
        score_spec(
            json!({"path": "in.jsonl"}),
            json!({"url": url, "table": "scores", "mode": "overwrite"}),
            64,
        ),
    )
    .await;
    assert_eq!(finished(server, &id).await["state"], "succeeded");
    let answers = model_answers(server, &rows).await;
    // A relative sqlite:// file is in the data directory.
    let read_url = match url.strip_prefix("sqlite://") {
        Some(file) => format!("sqlite://{}", env.data.join(file).display()),
        None => url.to_string(),
    };
    let table = read_table(&read_url).await;
    assert_eq!(table.len(), 200);
    for (id, label, p0) in &table {
        let (want_label, want_p) = &answers[*id as usize];
        assert_eq!(label, want_label, "row {id}");
        assert!((p0 - want_p[0]).abs() < 1e-9, "row {id}");
    }
    table
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_jsonl_into_a_sqlite_table() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let url = "sqlite://scores.db";
    score_jsonl_into_table(&env, &server, url).await;
    // The sink's file is in the data directory, named relative to it.
    assert!(env.data.join("scores.db").is_file());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_source_is_read_only_and_reaches_no_other_file() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    score_jsonl_into_table(&env, &server, "sqlite://scores.db").await;
    let db = format!("sqlite://{}", env.data.join("scores.db").display());
    let outside = env.state.parent().unwrap().join("outside.db");
    let store = env.state.join("ferroserve.db");
    // A query can neither attach another file (the server's store, a new file
    // outside the data directory) nor change the data it reads.
    for (query, expected) in [
        (
            format!(
                "ATTACH DATABASE '{}' AS e; CREATE TABLE e.x(a); SELECT * FROM scores",
                outside.display()
            ),
            "not authorized",
        ),
        (
            format!(
                "ATTACH DATABASE '{}' AS s; SELECT * FROM s.jobs",
                store.display()
            ),
            "not authorized",
        ),
        ("DROP TABLE scores".to_string(), "readonly database"),
        ("PRAGMA journal_mode = WAL".to_string(), "not authorized"),
        (
            "PRAGMA temp_store_directory = '/tmp'; SELECT * FROM scores".to_string(),
            "not authorized",
        ),
    ] {
        let id = submit(
            &server,
            score_spec(
                json!({"url": "sqlite://scores.db", "query": query}),
                json!({"path": "out.csv"}),
                8,
            ),
        )
        .await;
        let job = finished(&server, &id).await;
        assert_eq!(job["state"], "failed", "{query}: {job}");
        let error = job["error"].as_str().unwrap();
        assert!(error.contains(expected), "{query}: {error}");
    }
    assert!(
        !outside.exists(),
        "nothing created outside the data directory"
    );
    assert_eq!(read_table(&db).await.len(), 200, "the table is still there");
    // The sink and the source leave the file's journal mode as it was.
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "delete");
    pool.close().await;
    // A link to nothing inside the data directory is no way out of it: SQLite
    // would create the link's target.
    std::os::unix::fs::symlink(&outside, env.data.join("link.db")).unwrap();
    let (status, answer) = server
        .post_json(
            "/v1/jobs",
            &score_spec(
                json!({"path": "in.jsonl"}),
                json!({"url": "sqlite://link.db", "table": "scores"}),
                8,
            ),
        )
        .await;
    assert_error(status, &answer, 400, "not inside the data directory");
    assert!(!outside.exists());
    // A temporary table would go with the job's connection, its rows with it.
    let (status, answer) = server
        .post_json(
            "/v1/jobs",
            &score_spec(
                json!({"path": "in.jsonl"}),
                json!({"url": "sqlite://scores.db", "table": "temp.scores"}),
                8,
            ),
        )
        .await;
    assert_error(status, &answer, 400, "spec.sink.table");
    // A carried column whose name holds a dot is one column.
    let mut text = format!("a.b,{}\n", FEATURES.join(","));
    for (i, r) in iris_rows(3).iter().enumerate() {
        let cells: Vec<String> = r.iter().map(|v| v.to_string()).collect();
        text.push_str(&format!("{i},{}\n", cells.join(",")));
    }
    std::fs::write(env.data.join("dotted.csv"), text).unwrap();
    let mut spec = score_spec(
        json!({"path": "dotted.csv"}),
        json!({"url": "sqlite://scores.db", "table": "dotted"}),
        8,
    );
    spec["spec"]["carry"] = json!(["a.b"]);
    let id = submit(&server, spec).await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT \"a.b\" FROM dotted ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(ids, ["0", "1", "2"]);
    pool.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_jsonl_into_a_postgres_table_and_read_a_query() {
    let env = env();
    let db = tokio::task::spawn_blocking(|| DbServer::start(DbKind::Postgres))
        .await
        .unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    score_jsonl_into_table(&env, &server, &db.url()).await;

    // A query as the source: the features from a table, streamed.
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    sqlx::query("CREATE TABLE flowers (id INT, sepal_length FLOAT8, sepal_width FLOAT8, petal_length REAL, petal_width FLOAT8)")
        .execute(&pool)
        .await
        .unwrap();
    let rows = iris_rows(50);
    for (i, r) in rows.iter().enumerate() {
        sqlx::query("INSERT INTO flowers VALUES ($1, $2, $3, $4, $5)")
            .bind(i as i32)
            .bind(r[0])
            .bind(r[1])
            .bind(r[2] as f32)
            .bind(r[3])
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let id = submit(
        &server,
        score_spec(
            json!({"url": db.url(), "query": "SELECT * FROM flowers ORDER BY id"}),
            json!({"path": "from_pg.jsonl"}),
            16,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let text = std::fs::read_to_string(env.data.join("from_pg.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 50);
    assert_eq!(lines[7]["id"], 7);
    // An SQL error is a failed job that says what the database said.
    let id = submit(
        &server,
        score_spec(
            json!({"url": db.url(), "query": "SELECT * FROM no_such_table"}),
            json!({"path": "never.jsonl"}),
            16,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("no_such_table"),
        "{job}"
    );
    assert!(!env.data.join("never.jsonl").exists());
    // A source's session is read only: a query that writes fails, changing nothing.
    let id = submit(
        &server,
        score_spec(
            json!({"url": db.url(), "query": "DROP TABLE flowers"}),
            json!({"path": "never.jsonl"}),
            16,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("read-only transaction"),
        "{job}"
    );
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM flowers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 50);
    pool.close().await;
    server.stop().await;
}

/// A job long enough to cancel: many small batches.
fn slow_job(env: &Env, sink: &str) -> Value {
    write_csv(&env.data.join("big.csv"), &iris_rows(200_000));
    score_spec(json!({"path": "big.csv"}), json!({"path": sink}), 4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_job_and_leaves_no_output() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let id = submit(&server, slow_job(&env, "cancelled.csv")).await;

    // The events stream delivers progress while it runs.
    let response = server
        .client
        .get(server.url(&format!("/v1/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    use futures::StreamExt;
    while text.matches("event: progress").count() < 3 {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .expect("progress events")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("\"rows_read\""), "{text}");

    wait_for(&server, &id, Duration::from_secs(60), |j| {
        j["progress"]["rows_read"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let asked = Instant::now();
    let (status, answer) = server
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let job = wait_for(&server, &id, Duration::from_secs(5), |j| {
        j["state"] == "cancelled"
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
    assert!(
        job["progress"]["rows_read"].as_u64().unwrap() < 200_000,
        "{job}"
    );
    // The stream ends with the cancelled state.
    while !text.contains("event: end") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("end event");
        match chunk {
            Some(Ok(c)) => text.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    assert!(
        text.contains("event: end") && text.contains("\"cancelled\""),
        "{text}"
    );
    // Nothing half-written: no output, no temporary file.
    assert_eq!(data_files(&env), ["big.csv"]);
    // A finished job cannot be cancelled again.
    let (status, _) = server
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409);
    server.stop().await;
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

/// A job queued on this server that another replica cancels (its row only, as
/// that replica's cancel writes it; a cancel that lands after its 503 looks the
/// same) is shown cancelled here within a heartbeat, and its event stream here
/// ends with that state, while this server's one job worker is still busy with
/// another job (before, it stayed "queued" here until the worker came to it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_cancelled_elsewhere_is_shown_cancelled_here() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let (busy, queued) = queued_behind_a_busy_worker(&server, &env).await;
    let (_, job) = server.get(&format!("/v1/jobs/{queued}")).await;
    assert_eq!(job["state"], "queued", "{job}");
    let response = server
        .client
        .get(server.url(&format!("/v1/jobs/{queued}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let db = format!("sqlite://{}", env.state.join("ferroserve.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let cancelled = sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_ms = 1, cancel_requested = 1 \
         WHERE id = ? AND state = 'queued'",
    )
    .bind(&queued)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(cancelled.rows_affected(), 1);
    pool.close().await;

    // The heartbeat runs every 5 s.
    wait_for(&server, &queued, Duration::from_secs(15), |j| {
        j["state"] == "cancelled"
    })
    .await;
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("the event stream ends")
        .unwrap();
    assert!(
        text.contains("event: end") && text.contains("\"cancelled\""),
        "{text}"
    );
    // The busy job was left alone, and the cancelled one never runs.
    let (_, job) = server.get(&format!("/v1/jobs/{busy}")).await;
    assert_eq!(job["state"], "running", "{job}");
    let (status, _) = server
        .post_json(&format!("/v1/jobs/{busy}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    finished(&server, &busy).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!env.data.join("later.csv").exists());
    server.stop().await;
}

/// Jobs another replica runs: this server shows them as the store has them, and
/// a job's event stream here follows the store until the job ends. Before, a job
/// queued here showed "queued" while it ran elsewhere, and the stream of a job not
/// held here sent one event and closed without `end`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_running_elsewhere_are_followed_through_the_store() {
    use futures::StreamExt;
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let (busy, queued) = queued_behind_a_busy_worker(&server, &env).await;

    let db = format!("sqlite://{}", env.state.join("ferroserve.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let now = ferroserve::store::now_ms();
    // Another replica claims the job queued here...
    let claimed = sqlx::query(
        "UPDATE jobs SET state = 'running', started_ms = ?, claimed_by = 'other-host:42', \
         heartbeat_ms = ? WHERE id = ? AND state = 'queued'",
    )
    .bind(now)
    .bind(now)
    .bind(&queued)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(claimed.rows_affected(), 1);
    let (_, job) = server.get(&format!("/v1/jobs/{queued}")).await;
    assert_eq!(job["state"], "running", "{job}");
    // ... and runs one this server never knew.
    sqlx::query(
        "INSERT INTO jobs (id, kind, state, spec, progress, messages, created_ms, started_ms, \
         claimed_by, heartbeat_ms, cancel_requested) \
         VALUES ('elsewhere', 'score', 'running', ?, '{}', '[]', ?, ?, 'other-host:43', ?, 0)",
    )
    .bind(later_job()["spec"].to_string())
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(&pool)
    .await
    .unwrap();
    let response = server
        .client
        .get(server.url("/v1/jobs/elsewhere/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("\"running\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a first event")
            .expect("the stream goes on")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains("event: end"), "{text}");
    sqlx::query("UPDATE jobs SET state = 'succeeded', finished_ms = ? WHERE id = 'elsewhere'")
        .bind(now + 1)
        .execute(&pool)
        .await
        .unwrap();
    while !text.contains("event: end") {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the end event")
        {
            Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
            None => break,
        }
    }
    assert!(
        text.contains("event: end") && text.contains("\"succeeded\""),
        "{text}"
    );
    pool.close().await;
    let (status, _) = server
        .post_json(&format!("/v1/jobs/{busy}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    finished(&server, &busy).await;
    server.stop().await;
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

/// A model deleted while a job scores with it: the job holds the version it resolved
/// at its start (every row scored by the same model), so it finishes on that version
/// with every row written, and the delete neither waits for it nor breaks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_deleted_while_a_job_scores_with_it_finishes_the_job_whole() {
    let (env, server, id) = running_job(ROWS_OF_A_LONG_JOB).await;
    let n = ROWS_OF_A_LONG_JOB;
    let response = server
        .client
        .delete(server.url("/delete_model/iris"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let (_, job) = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "running", "the delete came too late: {job}");
    // New requests no longer reach it; the version drains while the job holds it.
    let row = json!({"model_id": "iris", "features": iris_rows(1)[0]});
    let (code, answer) = server.post_json("/predict", &row).await;
    assert_eq!(code, 404, "{answer}");
    let (_, status) = server.get("/v1/models/iris").await;
    assert_eq!(
        status["model_version_status"][0]["state"], "UNLOADING",
        "{status}"
    );

    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["version"], 1, "{job}");
    assert_eq!(job["progress"]["rows_written"], n, "{job}");
    let rows = csv::Reader::from_path(env.data.join("out.csv"))
        .unwrap()
        .records()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(rows.len(), n);
    assert_eq!(data_files(&env), ["big.csv", "out.csv"]);
    // Once the job let it go, the version is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get("/v1/models/iris").await.0 != 404 {
        assert!(
            Instant::now() < deadline,
            "the version never finished unloading"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// A new version uploaded while a job scores: "latest" moves to it and the old one
/// unloads, but the job keeps the version it began with to its last row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_during_a_job_leaves_the_job_on_its_version() {
    let (_env, server, id) = running_job(ROWS_OF_A_LONG_JOB).await;
    let n = ROWS_OF_A_LONG_JOB;
    let model = std::fs::read(common::root_path(
        "examples/models/iris_sklearn/1/model.joblib",
    ))
    .unwrap();
    let (code, body) = server
        .upload(&[("model_id", "iris")], "model.joblib", model)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["model"]["served_versions"], json!([2]), "{body}");
    let (_, job) = server.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "running", "the upload came too late: {job}");

    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["version"], 1, "{job}");
    assert_eq!(job["progress"]["rows_written"], n, "{job}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_fails_the_running_job_and_runs_the_queued_one() {
    let env = env();
    write_csv(&env.data.join("small.csv"), &iris_rows(20));
    let server = TestServer::start_with(settings(&env)).await;
    let running = submit(&server, slow_job(&env, "slow.csv")).await;
    // One job worker: this one waits queued.
    let queued = submit(
        &server,
        score_spec(
            json!({"path": "small.csv"}),
            json!({"path": "small_out.csv"}),
            8,
        ),
    )
    .await;
    wait_for(&server, &running, Duration::from_secs(60), |j| {
        j["progress"]["rows_read"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let (_, q) = server.get(&format!("/v1/jobs/{queued}")).await;
    assert_eq!(q["state"], "queued", "{q}");
    // A graceful stop records the running job as interrupted.
    server.stop().await;
    // Pretend the process died instead: the record still says running.
    let db = format!("sqlite://{}", env.state.join("ferroserve.db").display());
    {
        let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
        let row = sqlx::query("SELECT state, error FROM jobs WHERE id = ?")
            .bind(&running)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>(0), "failed");
        assert!(row.get::<String, _>(1).contains("interrupted by restart"));
        // As a killed process leaves it: a stage and rows written by then.
        let progress = json!({"stage": "scoring", "rows_read": 16, "rows_written": 16,
                              "elapsed_ms": 5, "remaining_ms": 900});
        sqlx::query("UPDATE jobs SET state = 'running', error = NULL, progress = ? WHERE id = ?")
            .bind(progress.to_string())
            .bind(&running)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    assert!(!env.data.join("slow.csv").exists());
    // A process killed mid-job leaves its temporary output behind; another name
    // beside it is no job's to remove.
    let left = env.data.join(format!(".slow.csv.{running}.tmp"));
    let other = env.data.join(".slow.csv.0123456789abcdef.tmp");
    std::fs::write(&left, "id,predict\n").unwrap();
    std::fs::write(&other, "kept").unwrap();

    let server = TestServer::start_with(settings(&env)).await;
    let (_, job) = server.get(&format!("/v1/jobs/{running}")).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"], "interrupted by restart", "{job}");
    // Its progress says how it ended: nothing of its output is kept.
    assert_eq!(job["progress"]["stage"], "failed", "{job}");
    assert_eq!(job["progress"]["rows_read"], 16, "{job}");
    assert_eq!(job["progress"]["rows_written"], 0, "{job}");
    assert!(job["progress"].get("remaining_ms").is_none(), "{job}");
    assert!(!left.exists(), "the interrupted job's output is discarded");
    assert!(other.exists());
    let job = finished(&server, &queued).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(env.data.join("small_out.csv").is_file());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_are_refused_at_once_naming_the_field() {
    let env = env();
    write_csv(&env.data.join("in.csv"), &iris_rows(5));
    let server = TestServer::start_with(settings(&env)).await;
    let data_dir = env.data.display().to_string();
    let cases = [
        (
            json!({"kind": "score", "spec": {"model": "nope", "source": {"path": "in.csv"}, "sink": {"path": "o.csv"}}}),
            "spec.model",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "../../etc/passwd.csv"}, "sink": {"path": "o.csv"}}}),
            "../../etc/passwd.csv",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "in.csv"}, "sink": {"path": "/tmp/o.csv"}}}),
            "spec.sink.path",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "sink": {"path": "o.csv"}}}),
            "spec.source: missing",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "absent.csv"}, "sink": {"path": "o.csv"}}}),
            "spec.source.path",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"url": "mongodb://db/bank", "query": "x"}, "sink": {"path": "o.csv"}}}),
            "MongoDB is not supported",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "in.csv"}, "sink": {"path": "o.csv"}, "outputs": ["nope"]}}),
            "spec.outputs",
        ),
        (json!({"kind": "score"}), "spec: missing"),
        // The version or label the model does not have is named as the version.
        (
            json!({"kind": "score", "spec": {"model": "iris", "version": 99, "source": {"path": "in.csv"}, "sink": {"path": "o.csv"}}}),
            "spec.version: model \"iris\" has no version 99",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "version": "nolabel", "source": {"path": "in.csv"}, "sink": {"path": "o.csv"}}}),
            "spec.version: model \"iris\" has no label \"nolabel\"",
        ),
        // A CSV dialect that cannot be read: a line break, or the quote as delimiter.
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "in.csv", "delimiter": "\n"}, "sink": {"path": "o.csv"}}}),
            "spec.source.delimiter: '\\n' is a line break",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "in.csv", "quote": "\r"}, "sink": {"path": "o.csv"}}}),
            "spec.source.quote: '\\r' is a line break",
        ),
        (
            json!({"kind": "score", "spec": {"model": "iris", "source": {"path": "in.csv", "delimiter": ";", "quote": ";"}, "sink": {"path": "o.csv"}}}),
            "spec.source.quote: ';' is also the delimiter",
        ),
        (
            json!({"kind": "train", "spec": {"model": "bank", "source": {"path": "in.csv"}, "schema": {"label": {"key": "y"}, "features": [{"key": "age"}]}, "algorithm": {"name": "logistic_regression"}}}),
            "spec.schema: no column",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = server.post_json("/v1/jobs", &body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(expected), "{body} → {message}");
        assert!(
            !message.contains(&data_dir),
            "{message} shows the data directory"
        );
    }
    let (_, list) = server.get("/v1/jobs").await;
    assert_eq!(list["total"], 0, "{list}");
    let (status, _) = server.get("/v1/jobs/0123").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_found_while_reading_fail_the_job_clearly() {
    let env = env();
    let mut text = format!("id,{}\n", FEATURES.join(","));
    text.push_str("a,5.1,3.5,1.4,0.2\nb,5.0,lots,1.4,0.2\n");
    std::fs::write(env.data.join("words.csv"), text).unwrap();
    std::fs::write(
        env.data.join("empty.csv"),
        format!("id,{}\n", FEATURES.join(",")),
    )
    .unwrap();
    std::fs::write(env.data.join("short.csv"), "id,sepal_length\n1,2\n").unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    // A quote left open in a record's first cell runs to the end of the file.
    std::fs::write(
        env.data.join("open.csv"),
        format!(
            "id,{}\na,5.1,3.5,1.4,0.2\n\"b,5.1,3.5,1.4,0.2\nc,4.9,3.0,1.4,0.2\n",
            FEATURES.join(",")
        ),
    )
    .unwrap();
    // A JSON line giving a key twice (its first value was dropped).
    std::fs::write(
        env.data.join("twice.jsonl"),
        "{\"id\": 1, \"sepal_length\": 5.1, \"sepal_width\": 3.5, \"petal_length\": 1.4, \"petal_width\": 0.2}\n\
         {\"id\": 2, \"sepal_length\": 5.1, \"sepal_width\": 3.5, \"petal_length\": 1.4, \"petal_width\": 0.2, \"sepal_width\": 9}\n",
    )
    .unwrap();
    let cases = [
        ("words.csv", "\"lots\" is not a number"),
        ("empty.csv", "empty data"),
        ("short.csv", "sepal_width"),
        (
            "open.csv",
            "\"open.csv\": line 3: a quoted cell is not closed before the end of the file",
        ),
        (
            "twice.jsonl",
            "\"twice.jsonl\" line 2: key \"sepal_width\" appears twice",
        ),
    ];
    for (file, expected) in cases {
        let id = submit(
            &server,
            score_spec(json!({"path": file}), json!({"path": "out.csv"}), 8),
        )
        .await;
        let job = finished(&server, &id).await;
        assert_eq!(job["state"], "failed", "{job}");
        let error = job["error"].as_str().unwrap();
        assert!(error.contains(expected), "{file}: {error}");
        assert!(!env.data.join("out.csv").exists(), "{file}");
    }
    // A column named twice is refused, naming it (the second was never read).
    std::fs::write(
        env.data.join("dup.csv"),
        format!(
            "id,{},sepal_length\n1,5.1,3.5,1.4,0.2,9\n",
            FEATURES.join(",")
        ),
    )
    .unwrap();
    let (status, answer) = server
        .post_json(
            "/v1/jobs",
            &score_spec(json!({"path": "dup.csv"}), json!({"path": "out.csv"}), 8),
        )
        .await;
    let message = match status {
        400 => answer["error"].as_str().unwrap().to_string(),
        _ => {
            let job = finished(&server, answer["job_id"].as_str().unwrap()).await;
            assert_eq!(job["state"], "failed", "{job}");
            job["error"].as_str().unwrap().to_string()
        }
    };
    assert!(
        message.contains("two columns named \"sepal_length\""),
        "{message}"
    );
    // An SQL error (SQLite here) fails the job with the database's words.
    std::fs::write(env.data.join("words.db"), b"").unwrap();
    let id = submit(
        &server,
        score_spec(
            json!({"url": "sqlite://words.db", "query": "SELECT * FROM missing"}),
            json!({"path": "out.csv"}),
            8,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("no such table"),
        "{job}"
    );
    // The database file must exist for a source.
    let (status, answer) = server
        .post_json(
            "/v1/jobs",
            &score_spec(
                json!({"url": "sqlite://nothing.db", "query": "SELECT 1"}),
                json!({"path": "out.csv"}),
                8,
            ),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    server.stop().await;
}

/// A carried column named like one of the model's output columns (a ground-truth
/// `label` carried beside a model's own `label`) would be written twice: a JSON
/// line kept one of the two values, a Parquet file had two fields of one name
/// (unreadable), a CSV two header cells, a SQLite table refused it only once the
/// job ran. Refused at submission (400 naming spec.carry) where the signature's
/// shapes and class labels tell the output columns, and when the job starts, before
/// anything is written, where a version that came since has such a column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carried_column_named_like_an_output_column_is_refused() {
    let env = env();
    let mut text = format!("predict,label,{}\n", FEATURES.join(","));
    for r in iris_rows(20) {
        let cells: Vec<String> = r.iter().map(|v| v.to_string()).collect();
        text.push_str(&format!("setosa,setosa,{}\n", cells.join(",")));
    }
    std::fs::write(env.data.join("truth.csv"), text).unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    let job = |carry: Value, sink: Value| {
        json!({"kind": "score", "spec": {
            "model": "iris", "source": {"path": "truth.csv"}, "sink": sink, "carry": carry,
        }})
    };
    // The iris pickle answers `predict` and `predict_proba` (its classes' columns).
    for (carry, sink, named) in [
        (
            json!(["predict"]),
            json!({"path": "out.jsonl"}),
            "\"predict\"",
        ),
        (
            json!(["predict"]),
            json!({"path": "out.csv"}),
            "\"predict\"",
        ),
        (
            json!(["label", "predict"]),
            json!({"path": "out.parquet"}),
            "\"predict\"",
        ),
        (
            json!(["predict_proba_setosa"]),
            json!({"path": "out.csv"}),
            "\"predict_proba_setosa\"",
        ),
        // A SQLite table takes `PREDICT` and `predict` for one column.
        (
            json!(["PREDICT"]),
            json!({"url": "sqlite://out.db", "table": "scores"}),
            "\"PREDICT\"",
        ),
    ] {
        let (status, answer) = server.post_json("/v1/jobs", &job(carry, sink)).await;
        assert_eq!(status, 400, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with("spec.carry: carry column ") && error.contains(named),
            "{error}"
        );
    }
    // Only the outputs written count: with `outputs`, `predict` may be carried.
    let mut only_proba = job(json!(["predict"]), json!({"path": "proba.csv"}));
    only_proba["spec"]["outputs"] = json!(["predict_proba"]);
    let id = submit(&server, only_proba).await;
    let done = finished(&server, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let written = std::fs::read_to_string(env.data.join("proba.csv")).unwrap();
    assert!(
        written.starts_with("predict,predict_proba_setosa,"),
        "{written}"
    );

    // Queued against the pickle, whose outputs have no `label`; run against an
    // ONNX version uploaded meanwhile, whose have: the job fails as it starts.
    let (busy, _) = queued_behind_a_busy_worker(&server, &env).await;
    let late = submit(
        &server,
        job(json!(["label"]), json!({"path": "late.jsonl"})),
    )
    .await;
    let onnx = std::fs::read(root_path("examples/models/iris_lr/1/model.onnx")).unwrap();
    let (status, answer) = server
        .upload(&[("model_id", "iris")], "model.onnx", onnx)
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = server
        .post_json(&format!("/v1/jobs/{busy}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let done = finished(&server, &late).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["result"]["version"], Value::Null, "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "carry column \"label\" has the name of one of the model's output columns"
        ) && error.contains("\"probabilities_0\""),
        "{error}"
    );
    assert_eq!(done["progress"]["rows_read"], 0, "{done}");
    assert!(!env.data.join("late.jsonl").exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_predictall_and_training_status_routes() {
    let env = env();
    write_csv(&env.data.join("new.csv"), &iris_rows(40));
    // A served classifier that names no classes (ONNX): POST /predict/ answers its
    // probabilities by class position, as classify does.
    install_model(
        &env.repo,
        "iris_onnx",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    std::fs::write(
        env.repo.join("iris_onnx/config.toml"),
        format!("feature_names = {:?}\n", FEATURES),
    )
    .unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    let record: serde_json::Map<String, Value> = FEATURES
        .iter()
        .zip([5.1, 3.5, 1.4, 0.2])
        .map(|(f, v)| (f.to_string(), json!(v)))
        .collect();
    let (status, answer) = server
        .post_json(
            "/predict/",
            &json!({"modelkey": "iris_onnx", "record": record}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let probabilities = answer["probabilities"].as_object().unwrap();
    assert_eq!(
        probabilities.keys().collect::<Vec<_>>(),
        ["0", "1", "2"],
        "{answer}"
    );
    assert!(probabilities["0"].as_f64().unwrap() > 0.9, "{answer}");
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": "iris", "inputCollection": "new.csv", "outputCollection": "scored.csv", "carry": ["id"]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, s) = server.get(&format!("/training/status/{id}")).await;
        assert_eq!(status, 200, "{s}");
        let state = s["status"].as_str().unwrap();
        assert!(["PENDING", "PROGRESS", "SUCCESS"].contains(&state), "{s}");
        if state == "SUCCESS" {
            assert!(s["message"].as_str().unwrap().contains("40 rows"), "{s}");
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(env.data.join("scored.csv").is_file());
    // A database URL as inputCollection is read with inputQuery, as /train/ reads
    // it: new.csv's rows, written to SQLite by /predictall/ itself, score alike.
    let carry: Vec<&str> = std::iter::once("id").chain(FEATURES).collect();
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": "iris", "inputCollection": "new.csv",
                    "outputCollection": "sqlite://new.db", "outputTable": "src", "carry": carry}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let job = finished(&server, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": "iris", "inputCollection": "sqlite://new.db",
                    "inputQuery": "SELECT * FROM src",
                    "outputCollection": "from_db.csv", "carry": ["id"]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let job = finished(&server, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["spec"]["source"],
        json!({"url": "sqlite://new.db", "query": "SELECT * FROM src"}),
        "{job}"
    );
    assert_eq!(
        std::fs::read_to_string(env.data.join("from_db.csv")).unwrap(),
        std::fs::read_to_string(env.data.join("scored.csv")).unwrap()
    );
    // A query beside a file would go unread, and a database URL needs one.
    for (job, expected) in [
        (
            json!({"modelkey": "iris", "inputCollection": "new.csv", "inputQuery": "SELECT 1", "outputCollection": "x.csv"}),
            "inputQuery: is only for a database URL",
        ),
        (
            json!({"modelkey": "iris", "inputCollection": "sqlite://new.db", "outputCollection": "x.csv"}),
            "inputQuery: missing",
        ),
    ] {
        let (status, answer) = server.post_json("/predictall/", &job).await;
        assert_error(status, &answer, 400, expected);
    }
    // A failure says why.
    let (_, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": "iris", "inputCollection": "new.csv", "outputCollection": "x.csv", "carry": ["no_such"]}),
        )
        .await;
    let id = answer["job_id"].as_str().unwrap().to_string();
    finished(&server, &id).await;
    let (_, s) = server.get(&format!("/training/status/{id}")).await;
    assert_eq!(s["status"], "FAILURE", "{s}");
    assert!(s["message"].as_str().unwrap().contains("no_such"), "{s}");
    // MongoDB collections are refused with a clear message.
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": "iris", "inputCollection": "mongodb://localhost/bank.new", "outputCollection": "x.csv"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("MongoDB is not supported"));
    let (status, _) = server.get("/training/status/unknown").await;
    assert_eq!(status, 404);
    // The OpenAPI document lists what /predictall/ answers for a training job's
    // modelkey: 404 (its version is served no more), 409 (it saved no model).
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let responses = &doc["paths"]["/predictall"]["post"]["responses"];
    for code in ["200", "400", "404", "409", "503"] {
        assert!(responses.get(code).is_some(), "{code}: {responses}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_watch_exits_by_the_job_outcome() {
    let env = env();
    write_csv(&env.data.join("in.csv"), &iris_rows(50));
    std::fs::write(
        env.data.join("bad.csv"),
        format!("id,{}\nx,1,2,three,4\n", FEATURES.join(",")),
    )
    .unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    let specs = env.state.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let good = specs.join("good.json");
    std::fs::write(
        &good,
        score_spec(json!({"path": "in.csv"}), json!({"path": "cli.csv"}), 16).to_string(),
    )
    .unwrap();
    let bad = specs.join("bad.json");
    std::fs::write(
        &bad,
        score_spec(
            json!({"path": "bad.csv"}),
            json!({"path": "cli_bad.csv"}),
            16,
        )
        .to_string(),
    )
    .unwrap();
    let cli = |spec: &Path| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
            .args(["jobs", "submit"])
            .arg(spec)
            .args(["--watch", "--url", &server.base])
            .output()
    };
    let out = cli(&good).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.data.join("cli.csv").is_file());
    let out = cli(&bad).await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a number"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // list and status work against the same server.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["jobs", "list", "--url", &server.base])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    server.stop().await;
}

/// Submitting and cancelling a job is in the model's audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_submissions_and_cancels_are_audited() {
    let env = env();
    write_csv(&env.data.join("small.csv"), &iris_rows(20));
    let server = TestServer::start_with(settings(&env)).await;
    let id = submit(&server, slow_job(&env, "slow.csv")).await;
    let (status, job) = server
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{job}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, history) = server.get("/v1/models/iris/history").await;
        assert_eq!(status, 200, "{history}");
        let kinds: Vec<(String, String)> = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["detail"]["job_id"] == id.as_str())
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["detail"]["kind"].to_string(),
                )
            })
            .collect();
        if kinds.len() == 2 {
            assert!(
                kinds.contains(&("job_submit".into(), "\"score\"".into())),
                "{kinds:?}"
            );
            assert!(
                kinds.contains(&("job_cancel".into(), "\"score\"".into())),
                "{kinds:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{history}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
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

/// Jobs yield the CPU to online requests: the server's job threads run
/// `JOB_NICE` steps below the rest of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_threads_run_at_a_lower_priority() {
    let env = env();
    let _server = TestServer::start_with(settings(&env)).await;
    // Thread names are cut to 15 bytes: "ferroserve-job-0" reads "ferroserve-job-".
    let (main, jobs) = thread_nices("ferroserve-job");
    assert!(!jobs.is_empty(), "no job thread found");
    let expected = (main + ferroserve::jobs::JOB_NICE).min(19);
    assert!(
        jobs.iter().all(|&n| n == expected),
        "main {main}, job threads {jobs:?}"
    );
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

/// A shutdown stops the running jobs at once, before the drain of the requests in
/// flight (recorded interrupted, nothing written), and ends every events stream:
/// a running job's with its end, any other's with `shutdown`. An open stream held
/// the drain for the whole shutdown timeout, and its job went on scoring
/// meanwhile, beside a server started in this one's place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_stops_running_jobs_and_ends_event_streams_at_once() {
    let env = env();
    let server = TestServer::start_with(ferroserve::settings::Settings {
        shutdown_timeout: Duration::from_secs(20),
        ..settings(&env)
    })
    .await;
    let (busy, queued) = queued_behind_a_busy_worker(&server, &env).await;
    wait_for(&server, &busy, Duration::from_secs(60), |j| {
        j["progress"]["rows_read"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let (mut running_events, mut queued_events) = (
        events_of(&server, &busy).await,
        events_of(&server, &queued).await,
    );
    let (mut running_text, mut queued_text) = (String::new(), String::new());
    let first = |t: &str| t.contains("event: progress");
    read_events(
        &mut running_events,
        &mut running_text,
        Duration::from_secs(30),
        first,
    )
    .await;
    read_events(
        &mut queued_events,
        &mut queued_text,
        Duration::from_secs(30),
        first,
    )
    .await;
    assert!(queued_text.contains("\"queued\""), "{queued_text}");

    let asked = Instant::now();
    server.stop().await;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(10), "the shutdown took {took:?}");
    // Both streams end: the running job's with its end, the queued one's with
    // the server's word.
    let ended = read_events(
        &mut running_events,
        &mut running_text,
        Duration::from_secs(10),
        |_| false,
    )
    .await;
    assert!(ended, "{running_text}");
    let end = running_text
        .split("event: end\ndata: ")
        .nth(1)
        .expect("an end event");
    let end: Value = serde_json::from_str(end.lines().next().unwrap()).unwrap();
    assert_eq!(end["state"], "failed", "{end}");
    assert_eq!(
        end["error"], "interrupted by restart (the server shut down)",
        "{end}"
    );
    let ended = read_events(
        &mut queued_events,
        &mut queued_text,
        Duration::from_secs(10),
        |_| false,
    )
    .await;
    assert!(ended, "{queued_text}");
    let last = queued_text
        .split("event: shutdown\ndata: ")
        .nth(1)
        .expect("a shutdown event");
    let last: Value = serde_json::from_str(last.lines().next().unwrap()).unwrap();
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .starts_with("the server is shutting down"),
        "{last}"
    );
    assert_eq!(last["job"]["state"], "queued", "{last}");
    // The running job was recorded interrupted, its output discarded; the queued
    // one waits for the next start.
    let db = format!("sqlite://{}", env.state.join("ferroserve.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    for (id, state) in [(&busy, "failed"), (&queued, "queued")] {
        let row: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(row, state, "{id}");
    }
    pool.close().await;
    assert_eq!(data_files(&env), ["big.csv", "small.csv"]);
}

/// A job of one-row batches changes its progress thousands of times a second: its
/// events stream sends the latest at most every 100 ms (it sent ~2000 events a
/// second), and a change of state at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_stream_sends_progress_at_a_bounded_pace() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let (busy, queued) = queued_behind_a_busy_worker(&server, &env).await;
    wait_for(&server, &busy, Duration::from_secs(60), |j| {
        j["progress"]["rows_read"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let mut events = events_of(&server, &busy).await;
    let mut text = String::new();
    let watched = Instant::now();
    read_events(&mut events, &mut text, Duration::from_secs(2), |_| false).await;
    let seconds = watched.elapsed().as_secs_f64();
    let progress = text.matches("event: progress").count();
    assert!(
        progress as f64 <= seconds * 10.0 + 3.0,
        "{progress} progress events in {seconds:.1} s"
    );
    assert!(progress >= 3, "{progress} progress events: {text}");
    // Each shows the job as it is: its rows move on from event to event.
    let rows: Vec<u64> = text
        .split("event: progress\ndata: ")
        .skip(1)
        .map(|e| serde_json::from_str::<Value>(e.lines().next().unwrap()).unwrap())
        .map(|v| v["progress"]["rows_read"].as_u64().unwrap())
        .collect();
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "{rows:?}");
    // The end comes at once, not after the pace's wait.
    text.clear();
    let (status, answer) = server
        .post_json(&format!("/v1/jobs/{busy}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let ended = read_events(&mut events, &mut text, Duration::from_secs(10), |_| false).await;
    assert!(ended && text.contains("event: end"), "{text}");
    assert!(text.contains("\"cancelled\""), "{text}");
    let (status, _) = server
        .post_json(&format!("/v1/jobs/{queued}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// Two jobs writing one output at once both succeeded and one's rows were lost: a
/// job whose sink is the sink of a job queued or running (one file by any name,
/// or one table that either overwrites) is a 409 naming that job; once it has
/// ended the sink is free. A sink the job could never create is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_sink_another_job_writes_is_refused_naming_it() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let (busy, queued) = queued_behind_a_busy_worker(&server, &env).await;
    let small = || json!({"path": "small.csv"});
    let absolute = env.data.join("busy.csv").display().to_string();
    for (sink, holder, field) in [
        (
            json!({"path": "busy.csv"}),
            (&busy, "running"),
            "spec.sink.path",
        ),
        (
            json!({"path": absolute}),
            (&busy, "running"),
            "spec.sink.path",
        ),
        (
            json!({"path": "later.csv"}),
            (&queued, "queued"),
            "spec.sink.path",
        ),
    ] {
        let (status, answer) = server
            .post_json("/v1/jobs", &score_spec(small(), sink.clone(), 8))
            .await;
        assert_error(
            status,
            &answer,
            409,
            &format!("job {} ({})", holder.0, holder.1),
        );
        assert!(
            answer["error"].as_str().unwrap().starts_with(field),
            "{sink}: {answer}"
        );
    }
    // The old service's route too.
    let (status, answer) = server
        .post_json(
            "/predictall/",
            &json!({"modelkey": "iris", "inputCollection": "small.csv",
                    "outputCollection": "later.csv"}),
        )
        .await;
    assert_error(status, &answer, 409, &queued);
    // Tables: appends keep both jobs' rows; an overwrite beside them would not.
    let table = |mode: &str| json!({"url": "sqlite://out.db", "table": "scores", "mode": mode});
    let appends = [
        submit(&server, score_spec(small(), table("append"), 8)).await,
        submit(&server, score_spec(small(), table("append"), 8)).await,
    ];
    let (status, answer) = server
        .post_json("/v1/jobs", &score_spec(small(), table("overwrite"), 8))
        .await;
    assert_eq!(status, 409, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(message.starts_with("spec.sink.table: "), "{message}");
    assert!(
        appends.iter().any(|id| message.contains(id.as_str())),
        "{message}"
    );
    // A sink the job could never create: a 400 naming only the path given.
    let (status, answer) = server
        .post_json(
            "/v1/jobs",
            &score_spec(small(), json!({"path": "small.csv/x.csv"}), 8),
        )
        .await;
    assert_error(
        status,
        &answer,
        400,
        "spec.sink.path: \"small.csv/x.csv\" cannot be created: a directory on its way is a file",
    );
    let long = format!("{}.csv", "a".repeat(300));
    let (status, answer) = server
        .post_json("/v1/jobs", &score_spec(small(), json!({"path": long}), 8))
        .await;
    assert_error(status, &answer, 400, "at most 255 bytes");
    assert!(
        !answer.to_string().contains(&*env.data.to_string_lossy()),
        "{answer}"
    );
    // Another file is free, and so is the busy job's once it has ended.
    let other = submit(
        &server,
        score_spec(small(), json!({"path": "other.csv"}), 8),
    )
    .await;
    let (status, _) = server
        .post_json(&format!("/v1/jobs/{busy}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    finished(&server, &busy).await;
    let again = submit(&server, score_spec(small(), json!({"path": "busy.csv"}), 8)).await;
    for id in [queued.as_str(), &appends[0], &appends[1], &other, &again] {
        let job = finished(&server, id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    // The description says so: a path outside the data directory is a 400 (it
    // listed it as a 403, which no route answers for it), a sink another job
    // holds a 409.
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    for path in ["/v1/jobs", "/predictall", "/train"] {
        let responses = &doc["paths"][path]["post"]["responses"];
        assert!(
            !responses.to_string().contains("data roots"),
            "{path}: {responses}"
        );
        assert!(
            responses["400"]["description"]
                .as_str()
                .unwrap()
                .contains("outside the data directory"),
            "{path}: {responses}"
        );
    }
    for path in ["/v1/jobs", "/predictall"] {
        let conflict = doc["paths"][path]["post"]["responses"]["409"]["description"]
            .as_str()
            .unwrap();
        assert!(conflict.contains("sink"), "{path}: {conflict}");
    }
    server.stop().await;
}

/// `/train/` fields that name one thing (`model` and `modelName`, `folds` and
/// `numFolds`) must agree, as the algorithm's parameters must: the one that came
/// last won silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_train_fields_that_disagree_are_a_400_naming_both() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let schema = json!({"label": {"key": "y"}, "features": [{"key": "age"}]});
    for (fields, words) in [
        (
            json!({"model": "old2", "modelName": "old1"}),
            "modelName: \"old1\" conflicts with model = \"old2\"",
        ),
        (
            json!({"folds": 3, "numFolds": 4}),
            "numFolds: 4 conflicts with folds = 3",
        ),
    ] {
        let mut job = json!({"schema": schema, "inputCollection": "bank.csv"});
        job.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let (status, answer) = server.post_json("/train/", &job).await;
        assert_error(status, &answer, 400, words);
    }
    server.stop().await;
}

/// A SQLite source column holding a BLOB fails the job naming BLOB, whether the
/// column declares the type or holds it with no declared type (it said "NULL").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_column_is_named_by_its_type() {
    let env = env();
    let url = format!("sqlite://{}?mode=rwc", env.data.join("blobs.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE t (id INTEGER, sepal_length REAL, sepal_width REAL, \
         petal_length REAL, petal_width REAL, typed BLOB, untyped)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO t VALUES (1, 5.1, 3.5, 1.4, 0.2, x'0001', x'02')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let server = TestServer::start_with(settings(&env)).await;
    for (column, query) in [
        ("typed", "SELECT * FROM t"),
        (
            "untyped",
            "SELECT id, untyped, sepal_length, sepal_width, petal_length, petal_width FROM t",
        ),
        (
            "e",
            "SELECT id, sepal_length, sepal_width, petal_length, petal_width, x'00' AS e FROM t",
        ),
    ] {
        let id = submit(
            &server,
            score_spec(
                json!({"url": "sqlite://blobs.db", "query": query}),
                json!({"path": "out.csv"}),
                8,
            ),
        )
        .await;
        let job = finished(&server, &id).await;
        assert_eq!(job["state"], "failed", "{job}");
        let error = job["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("column \"{column}\" has the type BLOB")),
            "{query}: {error}"
        );
    }
    server.stop().await;
}
