//! SQL sources and sinks: a MariaDB query into a MariaDB table, a cancel while the
//! job waits on its database, databases named as given, a locked SQLite sink.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_a_mariadb_query_into_a_mariadb_table() {
    let env = env();
    let db = tokio::task::spawn_blocking(|| DbServer::start(DbKind::MariaDb))
        .await
        .unwrap();
    let url = db.url();
    let server = TestServer::start_with(settings(&env)).await;
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    sqlx::query(
        // An unsigned id: sqlx reads it into no signed integer, and it was read
        // as a boolean (every id but 0 carried as 1).
        "CREATE TABLE flowers (id INT UNSIGNED, sepal_length DOUBLE, sepal_width DOUBLE, \
         petal_length FLOAT, petal_width DECIMAL(4,2))",
    )
    .execute(&pool)
    .await
    .unwrap();
    let rows = iris_rows(120);
    for (i, r) in rows.iter().enumerate() {
        sqlx::query("INSERT INTO flowers VALUES (?, ?, ?, ?, ?)")
            .bind(i as u32)
            .bind(r[0])
            .bind(r[1])
            .bind(r[2] as f32)
            .bind(format!("{:.2}", r[3]))
            .execute(&pool)
            .await
            .unwrap();
    }
    let stored: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| vec![r[0], r[1], r[2] as f32 as f64, r[3]])
        .collect();
    let answers = model_answers(&server, &stored).await;
    let query = json!({"url": url, "query": "SELECT * FROM flowers ORDER BY id"});
    let read = || async {
        let rows = sqlx::query("SELECT id, predict, predict_proba_setosa FROM scores ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (
                    r.get::<i64, _>(0),
                    r.get::<String, _>(1),
                    r.get::<f64, _>(2),
                )
            })
            .collect::<Vec<_>>()
    };
    // Overwrite twice: one copy of the rows.
    for _ in 0..2 {
        let id = submit(
            &server,
            score_spec(
                query.clone(),
                json!({"url": url, "table": "scores", "mode": "overwrite"}),
                32,
            ),
        )
        .await;
        let job = finished(&server, &id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let table = read().await;
    assert_eq!(table.len(), 120);
    for (id, label, p0) in &table {
        let (want_label, want_p) = &answers[*id as usize];
        assert_eq!(label, want_label, "row {id}");
        assert!((p0 - want_p[0]).abs() < 1e-9, "row {id}");
    }
    // Append: a second copy.
    let id = submit(
        &server,
        score_spec(
            query.clone(),
            json!({"url": url, "table": "scores", "mode": "append"}),
            50,
        ),
    )
    .await;
    assert_eq!(finished(&server, &id).await["state"], "succeeded");
    assert_eq!(read().await.len(), 240);
    // A failed job (an SQL error) leaves the table as it was.
    let id = submit(
        &server,
        score_spec(
            json!({"url": url, "query": "SELECT * FROM no_such_table"}),
            json!({"url": url, "table": "scores", "mode": "overwrite"}),
            50,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("no_such_table"),
        "{job}"
    );
    assert_eq!(read().await.len(), 240);
    // A job that fails after writing some rows (a bad value at row 100) leaves the
    // table as it was too, in either mode: MySQL's DDL commits at once, so an
    // overwrite fills a new table and swaps it in only at the end.
    let mut text = format!("id,{}\n", FEATURES.join(","));
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r.iter().map(|v| v.to_string()).collect();
        let cells = if i == 100 {
            "lots,1,1,1".to_string()
        } else {
            cells.join(",")
        };
        text.push_str(&format!("{i},{cells}\n"));
    }
    std::fs::write(env.data.join("bad.csv"), text).unwrap();
    for mode in ["overwrite", "append"] {
        let id = submit(
            &server,
            score_spec(
                json!({"path": "bad.csv"}),
                json!({"url": url, "table": "scores", "mode": mode}),
                32,
            ),
        )
        .await;
        let job = finished(&server, &id).await;
        assert_eq!(job["state"], "failed", "{job}");
        // It had got past its first batches, and says that it wrote nothing.
        assert!(
            job["progress"]["rows_read"].as_u64().unwrap() >= 32,
            "{job}"
        );
        assert_eq!(job["progress"]["rows_written"], 0, "{job}");
        assert_eq!(job["progress"]["stage"], "failed", "{job}");
        assert_eq!(read().await.len(), 240, "{mode}");
    }
    // A source's session is read only: a query that writes fails, changing nothing.
    let id = submit(
        &server,
        score_spec(
            json!({"url": url, "query": "DROP TABLE flowers"}),
            json!({"path": "never.csv"}),
            50,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("READ ONLY"),
        "{job}"
    );
    // Overwrite into a table that does not exist yet; no work table is left.
    let id = submit(
        &server,
        score_spec(
            query.clone(),
            json!({"url": url, "table": "fresh", "mode": "overwrite"}),
            64,
        ),
    )
    .await;
    assert_eq!(finished(&server, &id).await["state"], "succeeded");
    let tables: Vec<String> = sqlx::query("SHOW TABLES")
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    let mut tables = tables;
    tables.sort();
    assert_eq!(tables, ["flowers", "fresh", "scores"]);
    pool.close().await;
    server.stop().await;
}

/// A TCP port that takes connections and never answers: a database that hangs. A
/// driver connecting to it waits out its timeout (10 s, then 2 s to learn why).
fn silent_database() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://job:s3cr3t@127.0.0.1:{}/jobs",
        listener.local_addr().unwrap().port()
    );
    (listener, url)
}

/// Cancels the running job `id` and waits at most `limit` for it to be recorded
/// cancelled; answers the job.
async fn cancel_within(server: &TestServer, id: &str, limit: Duration) -> Value {
    wait_for(server, id, Duration::from_secs(60), |j| {
        j["state"] == "running"
    })
    .await;
    // Into the wait on the database.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, answer) = server
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    wait_for(server, id, limit, |j| {
        j["state"] != "running" && j["state"] != "queued"
    })
    .await
}

/// A cancel was not seen while a SQL source connected or ran its query, nor
/// while a SQL sink connected: the job ran on until the database answered (9 to
/// 19 s), and ended `failed` when that answer was an error. It stops at once now,
/// recorded `cancelled`, and leaves no output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_a_job_waiting_on_its_database() {
    let env = env();
    std::fs::write(env.data.join("in.csv"), csv_text(&iris_rows(10))).unwrap();
    // An empty file is an empty SQLite database.
    std::fs::write(env.data.join("empty.db"), b"").unwrap();
    let (_listener, silent) = silent_database();
    let server = TestServer::start_with(settings(&env)).await;
    let limit = Duration::from_secs(3);

    // A source connecting.
    let id = submit(
        &server,
        score_spec(
            json!({"url": silent, "query": "SELECT 1"}),
            json!({"path": "a.csv"}),
            8,
        ),
    )
    .await;
    let job = cancel_within(&server, &id, limit).await;
    assert_eq!(job["state"], "cancelled", "{job}");

    // A sink connecting (the first batch is scored, then written).
    let id = submit(
        &server,
        score_spec(
            json!({"path": "in.csv"}),
            json!({"url": silent, "table": "scores"}),
            8,
        ),
    )
    .await;
    let job = cancel_within(&server, &id, limit).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(job["progress"]["rows_written"], 0, "{job}");

    // A SQLite query that computes for seconds before its first row, and then
    // fails (abs of the smallest integer overflows).
    let query = format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000000) \
         SELECT 'id0' AS id, 5.1 AS {}, 3.5 AS {}, 1.4 AS {}, 0.2 AS {}, \
         abs(m - m - 9223372036854775807 - 1) AS boom FROM (SELECT max(x) AS m FROM c)",
        FEATURES[0], FEATURES[1], FEATURES[2], FEATURES[3]
    );
    let id = submit(
        &server,
        score_spec(
            json!({"url": "sqlite://empty.db", "query": query}),
            json!({"path": "c.csv"}),
            8,
        ),
    )
    .await;
    let job = cancel_within(&server, &id, limit).await;
    assert_eq!(job["state"], "cancelled", "{job}");

    assert_eq!(dir_entries(&env.data), ["empty.db", "in.csv"]);
    server.stop().await;
}

/// Errors, messages and results named a SQLite database by the server's path to
/// it (`/srv/data/x.db is not a SQLite database`, `the query on
/// sqlite:///srv/data/x.db failed`, `sqlite:///srv/data/s.db table t`), and a
/// `%2e%2e` in a sink's URL was shown resolved, as a file that was not written.
/// They name it as the spec gave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_name_databases_as_given_never_by_the_server_path() {
    let env = env();
    std::fs::write(env.data.join("in.csv"), csv_text(&iris_rows(10))).unwrap();
    std::fs::write(env.data.join("x.db"), b"").unwrap();
    std::fs::write(env.data.join("afile"), b"").unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    let data_dir = env.data.display().to_string();
    let run = |source: Value, sink: Value| {
        let server = &server;
        let data_dir = &data_dir;
        async move {
            let id = submit(server, score_spec(source, sink, 8)).await;
            let job = finished(server, &id).await;
            assert!(!job.to_string().contains(data_dir.as_str()), "{job}");
            job
        }
    };
    let csv = || json!({"path": "in.csv"});

    let job = run(
        json!({"url": "sqlite://in.csv", "query": "SELECT 1"}),
        json!({"path": "o.csv"}),
    )
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.starts_with("sqlite://in.csv is not a SQLite database"),
        "{error}"
    );

    let job = run(
        json!({"url": "sqlite://x.db", "query": "SELECT * FROM nosuch"}),
        json!({"path": "o.csv"}),
    )
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("the query on sqlite://x.db failed: no such table: nosuch"),
        "{error}"
    );

    let job = run(csv(), json!({"url": "sqlite://s.db", "table": "t"})).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["sink"], "sqlite://s.db table t", "{job}");
    assert!(job["messages"]
        .to_string()
        .contains("to sqlite://s.db table t"));

    // Written where the name leads, and said so.
    let job = run(csv(), json!({"url": "sqlite://%2e%2e/y.db", "table": "t"})).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["result"]["sink"], "sqlite://%2e%2e/y.db table t",
        "{job}"
    );
    assert!(env.data.join("%2e%2e/y.db").is_file());

    // A directory that cannot be made (a file is in the way).
    let job = run(csv(), json!({"url": "sqlite://afile/z.db", "table": "t"})).await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("sqlite://afile/z.db"), "{error}");
    server.stop().await;
}

/// A SQLite sink whose file another connection keeps a read lock on fails with a
/// clear error, within a bounded time: SQLite's cache spills each waited the whole
/// busy timeout and then went on, so such a job used to insert one page every 10 s,
/// for ever, holding a job worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_sink_locked_by_a_reader_fails_instead_of_hanging() {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use sqlx::{ConnectOptions, Connection};
    let env = env();
    std::fs::write(env.data.join("in.csv"), csv_text(&iris_rows(40_000))).unwrap();
    let options = SqliteConnectOptions::new()
        .filename(env.data.join("locked.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Delete);
    let mut reader = options.connect().await.unwrap();
    sqlx::query("CREATE TABLE other (a INTEGER)")
        .execute(&mut reader)
        .await
        .unwrap();
    // A read transaction: its shared lock stays until it ends.
    let mut read = reader.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM other")
        .fetch_one(&mut *read)
        .await
        .unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    let id = submit(
        &server,
        score_spec(
            json!({"path": "in.csv"}),
            json!({"url": "sqlite://locked.db", "table": "scores"}),
            4096,
        ),
    )
    .await;
    let job = wait_for(&server, &id, Duration::from_secs(120), |j| {
        matches!(
            j["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    })
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("sqlite://locked.db")
            && error.contains("stayed locked by another connection"),
        "{error}"
    );
    read.rollback().await.unwrap();
    // Nothing was written.
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut reader)
            .await
            .unwrap();
    assert_eq!(tables, ["other"]);
    server.stop().await;
}
