//! Scoring from and into files and SQL tables (SQLite, PostgreSQL): progress, carried
//! columns, read-only sources, and sinks no two jobs may share.

use super::*;

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
    // A `?` in a carried column's name is the name's: it was
    // numbered as a placeholder too (`"ok$1"`), and the insert failed.
    let mut spec = score_spec(
        json!({"url": db.url(),
               "query": "SELECT *, id * 2 AS \"ok?\" FROM flowers ORDER BY id"}),
        json!({"url": db.url(), "table": "marked", "mode": "overwrite"}),
        16,
    );
    spec["spec"]["carry"] = json!(["id", "ok?"]);
    let id = submit(&server, spec).await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let marks: Vec<i64> = sqlx::query_scalar("SELECT \"ok?\" FROM marked ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(marks, (0..50).map(|i| i * 2).collect::<Vec<i64>>());
    pool.close().await;
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
