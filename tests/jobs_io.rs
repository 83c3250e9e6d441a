//! Jobs' data sources and sinks (issue 13): Parquet files, files uploaded with the
//! job (multipart), and MariaDB tables, end to end against a real server on
//! 127.0.0.1:0.

mod common;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{ArrayRef, Date32Array, Float32Array, Float64Array, RecordBatch, StringArray};
use common::db_servers::{DbKind, DbServer};
use common::jobs::{env, finished, iris_rows, model_answers, settings, submit, wait_for, FEATURES};
use common::{assert_error, TestServer};
use ferroserve::settings::Settings;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::{json, Value};
use sqlx::Row;

fn csv_text(rows: &[Vec<f64>]) -> String {
    let mut text = format!("id,{}\n", FEATURES.join(","));
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r.iter().map(|v| v.to_string()).collect();
        text.push_str(&format!("id{i},{}\n", cells.join(",")));
    }
    text
}

/// `rows` as Parquet: `id` strings, the first feature as float32 (a type the
/// source widens), the others float64; small row groups, so that the source
/// crosses several.
fn write_parquet(path: &Path, rows: &[Vec<f64>]) {
    let ids: StringArray = (0..rows.len()).map(|i| Some(format!("id{i}"))).collect();
    let mut columns: Vec<(&str, ArrayRef)> = vec![("id", Arc::new(ids))];
    columns.push((
        FEATURES[0],
        Arc::new(rows.iter().map(|r| r[0] as f32).collect::<Float32Array>()),
    ));
    for (j, name) in FEATURES.iter().enumerate().skip(1) {
        columns.push((
            name,
            Arc::new(rows.iter().map(|r| r[j]).collect::<Float64Array>()),
        ));
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(100))
        .build();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Every row of a Parquet file: column names, and cells as JSON.
fn read_parquet(path: &Path) -> (Vec<String>, Vec<Vec<Value>>) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut names = Vec::new();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        names = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        for r in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| match c.data_type() {
                        arrow_schema::DataType::Utf8 => json!(c.as_string::<i32>().value(r)),
                        arrow_schema::DataType::Float64 => {
                            json!(c.as_primitive::<Float64Type>().value(r))
                        }
                        other => panic!("unexpected column type {other}"),
                    })
                    .collect(),
            );
        }
    }
    (names, rows)
}

fn score_spec(source: Value, sink: Value, batch_size: usize) -> Value {
    json!({"kind": "score", "spec": {
        "model": "iris", "version": "latest",
        "source": source, "sink": sink,
        "carry": ["id"], "batch_size": batch_size,
    }})
}

const OUTPUT_COLUMNS: [&str; 5] = [
    "id",
    "predict",
    "predict_proba_setosa",
    "predict_proba_versicolor",
    "predict_proba_virginica",
];

/// Output rows `[id, label, p0, p1, p2]` equal the model's answers, in order.
fn assert_scores(rows: &[Vec<Value>], answers: &[(String, Vec<f64>)]) {
    assert_eq!(rows.len(), answers.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], json!(format!("id{i}")), "row {i}");
        assert_eq!(row[1], json!(answers[i].0), "row {i}");
        for j in 0..3 {
            let got = row[2 + j].as_f64().unwrap();
            assert!((got - answers[i].1[j]).abs() < 1e-9, "row {i}: {row:?}");
        }
    }
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_csv_to_parquet_and_parquet_to_csv_and_jsonl() {
    let env = env();
    let rows = iris_rows(1000);
    std::fs::write(env.data.join("in.csv"), csv_text(&rows)).unwrap();
    write_parquet(&env.data.join("in.parquet"), &rows);
    let server = TestServer::start_with(settings(&env)).await;
    let answers = model_answers(&server, &rows).await;

    // CSV to Parquet, read back with the parquet crate.
    let id = submit(
        &server,
        score_spec(
            json!({"path": "in.csv"}),
            json!({"path": "out/scores.parquet"}),
            128,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["progress"]["rows_written"], 1000, "{job}");
    let (names, written) = read_parquet(&env.data.join("out/scores.parquet"));
    assert_eq!(names, OUTPUT_COLUMNS);
    assert_scores(&written, &answers);
    assert_eq!(dir_entries(&env.data.join("out")), ["scores.parquet"]);

    // Parquet (several row groups, float32 and float64) to CSV, `format` given.
    let id = submit(
        &server,
        score_spec(
            json!({"path": "in.parquet"}),
            json!({"path": "from_parquet.txt", "format": "csv"}),
            96,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["progress"]["rows_read"], 1000, "{job}");
    assert_eq!(job["progress"]["fraction"], 1.0, "{job}");
    let mut reader = csv::Reader::from_path(env.data.join("from_parquet.txt")).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header, OUTPUT_COLUMNS);
    let from_csv: Vec<Vec<Value>> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let mut row = vec![json!(&r[0]), json!(&r[1])];
            row.extend((2..5).map(|j| json!(r[j].parse::<f64>().unwrap())));
            row
        })
        .collect();
    // The float32 column is widened exactly: the same answers as float64 rows of
    // the float32 values.
    let widened: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r[0] = r[0] as f32 as f64;
            r
        })
        .collect();
    let widened_answers = model_answers(&server, &widened).await;
    assert_scores(&from_csv, &widened_answers);

    // Parquet to JSON lines.
    let id = submit(
        &server,
        score_spec(
            json!({"path": "in.parquet"}),
            json!({"path": "from_parquet.jsonl"}),
            1000,
        ),
    )
    .await;
    assert_eq!(finished(&server, &id).await["state"], "succeeded");
    let text = std::fs::read_to_string(env.data.join("from_parquet.jsonl")).unwrap();
    let from_jsonl: Vec<Vec<Value>> = text
        .lines()
        .map(|l| {
            let o: Value = serde_json::from_str(l).unwrap();
            OUTPUT_COLUMNS.iter().map(|c| o[c].clone()).collect()
        })
        .collect();
    assert_scores(&from_jsonl, &widened_answers);
    server.stop().await;
}

/// A carried column of integers and floats is a float column in Parquet, as in a
/// SQL table (it failed on the first float after an integer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_of_integers_and_floats_is_written_as_floats() {
    let env = env();
    let mut text = String::new();
    for (i, r) in iris_rows(4).iter().enumerate() {
        let mut row = serde_json::Map::new();
        row.insert(
            "id".into(),
            json!(if i % 2 == 0 {
                json!(i)
            } else {
                json!(i as f64 + 0.5)
            }),
        );
        for (name, v) in FEATURES.iter().zip(r) {
            row.insert(name.to_string(), json!(v));
        }
        text.push_str(&Value::Object(row).to_string());
        text.push('\n');
    }
    std::fs::write(env.data.join("mixed.jsonl"), text).unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    let id = submit(
        &server,
        score_spec(
            json!({"path": "mixed.jsonl"}),
            json!({"path": "mixed.parquet"}),
            16,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let (names, rows) = read_parquet(&env.data.join("mixed.parquet"));
    assert_eq!(names[0], "id");
    let ids: Vec<f64> = rows.iter().map(|r| r[0].as_f64().unwrap()).collect();
    assert_eq!(ids, [0.0, 1.5, 2.0, 3.5]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_problems_fail_clearly_and_a_cancel_leaves_no_file() {
    let env = env();
    // A column of dates: no cell type for it.
    let batch = RecordBatch::try_from_iter(vec![
        (
            "sepal_length",
            Arc::new(Float64Array::from(vec![5.1])) as ArrayRef,
        ),
        ("when", Arc::new(Date32Array::from(vec![19000])) as ArrayRef),
    ])
    .unwrap();
    let mut w = ArrowWriter::try_new(
        File::create(env.data.join("dates.parquet")).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    std::fs::write(env.data.join("garbage.parquet"), "not parquet at all").unwrap();
    std::fs::write(env.data.join("big.csv"), csv_text(&iris_rows(200_000))).unwrap();
    let server = TestServer::start_with(settings(&env)).await;

    let id = submit(
        &server,
        score_spec(
            json!({"path": "dates.parquet"}),
            json!({"path": "x.csv"}),
            8,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("\"when\"") && error.contains("Date32"),
        "{error}"
    );

    let id = submit(
        &server,
        score_spec(
            json!({"path": "garbage.parquet"}),
            json!({"path": "x.csv"}),
            8,
        ),
    )
    .await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("not a readable Parquet file"),
        "{job}"
    );

    // Cancelled mid-run: no Parquet file, no temporary file.
    let id = submit(
        &server,
        score_spec(
            json!({"path": "big.csv"}),
            json!({"path": "big.parquet"}),
            4,
        ),
    )
    .await;
    wait_for(&server, &id, Duration::from_secs(60), |j| {
        j["progress"]["rows_written"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let (status, answer) = server
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let job = wait_for(&server, &id, Duration::from_secs(5), |j| {
        j["state"] == "cancelled"
    })
    .await;
    assert!(job["progress"]["rows_read"].as_u64().unwrap() < 200_000);
    assert_eq!(job["progress"]["rows_written"], 0, "{job}");
    assert_eq!(
        dir_entries(&env.data),
        ["big.csv", "dates.parquet", "garbage.parquet"]
    );
    server.stop().await;
}

/// `POST path` as multipart: a `spec` part and file parts `(part, file name, bytes)`.
async fn post_multipart(
    server: &TestServer,
    path: &str,
    spec: &Value,
    files: &[(&str, &str, Vec<u8>)],
) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new().text("spec", spec.to_string());
    for (part, file_name, bytes) in files {
        form = form.part(
            part.to_string(),
            reqwest::multipart::Part::bytes(bytes.clone()).file_name(file_name.to_string()),
        );
    }
    let response = server
        .client
        .post(server.url(path))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_files_are_scored_and_removed_after() {
    let env = env();
    let settings = Settings {
        max_upload_bytes: 200_000,
        ..settings(&env)
    };
    let server = TestServer::start_with(settings).await;
    let rows = iris_rows(300);
    let answers = model_answers(&server, &rows).await;
    let uploads = env.state.join("job-uploads");

    // A CSV part, its format from the file name, scored into Parquet.
    let (status, answer) = post_multipart(
        &server,
        "/v1/jobs",
        &score_spec(
            json!({"upload": "flowers"}),
            json!({"path": "up.parquet"}),
            64,
        ),
        &[("flowers", "new.csv", csv_text(&rows).into_bytes())],
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["spec"]["source"],
        json!({"upload": "flowers", "format": "csv"})
    );
    let (_, written) = read_parquet(&env.data.join("up.parquet"));
    assert_scores(&written, &answers);
    // The upload is gone once the job ended, and was never in the data directory.
    assert_eq!(dir_entries(&uploads), Vec::<String>::new());
    assert_eq!(dir_entries(&env.data), ["up.parquet"]);

    // A Parquet part through the old /predictall/ route.
    let parquet_path = env.data.join("tmp.parquet");
    write_parquet(&parquet_path, &rows);
    let parquet_bytes = std::fs::read(&parquet_path).unwrap();
    std::fs::remove_file(&parquet_path).unwrap();
    let (status, answer) = post_multipart(
        &server,
        "/predictall/",
        &json!({"modelkey": "iris", "inputCollection": {"upload": "data"},
                "outputCollection": "old.csv", "carry": ["id"]}),
        &[("data", "rows.parquet", parquet_bytes)],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["progress"]["rows_written"], 300);
    assert_eq!(dir_entries(&uploads), Vec::<String>::new());

    // Refusals, each leaving no staged files behind.
    let spec = score_spec(json!({"upload": "flowers"}), json!({"path": "x.csv"}), 64);
    let small = csv_text(&rows[..3]).into_bytes();
    let (status, answer) = post_multipart(&server, "/v1/jobs", &spec, &[]).await;
    assert_error(status, &answer, 400, "no part \"flowers\"");
    let (status, answer) = post_multipart(
        &server,
        "/v1/jobs",
        &spec,
        &[
            ("flowers", "a.csv", small.clone()),
            ("extra", "b.csv", small.clone()),
        ],
    )
    .await;
    assert_error(status, &answer, 400, "part \"extra\" is not used");
    let big = vec![b'x'; 300_000];
    let (status, answer) =
        post_multipart(&server, "/v1/jobs", &spec, &[("flowers", "a.csv", big)]).await;
    assert_eq!(status, 413, "{answer}");
    let (status, answer) = post_multipart(
        &server,
        "/v1/jobs",
        &spec,
        &[("flowers", "a.xlsx", small.clone())],
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("spec.source.upload"),
        "{answer}"
    );
    let (status, answer) = post_multipart(
        &server,
        "/v1/jobs",
        &spec,
        &[("../evil", "a.csv", small.clone())],
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    // No spec part.
    let form = reqwest::multipart::Form::new().part(
        "flowers",
        reqwest::multipart::Part::bytes(small.clone()).file_name("a.csv"),
    );
    let response = server
        .client
        .post(server.url("/v1/jobs"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // An upload source in a JSON body: there is nothing uploaded.
    let (status, answer) = server.post_json("/v1/jobs", &spec).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("multipart"),
        "{answer}"
    );
    assert_eq!(dir_entries(&uploads), Vec::<String>::new());
    server.stop().await;
}

/// A job with uploaded files still waiting when its server stops is held by that
/// server in the store (so replicas fail it if the server never comes back), and
/// runs when the server starts again on the same state directory: the new process
/// takes it over instead of taking its own files' job for an orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_job_waiting_at_a_stop_runs_after_the_restart() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    std::fs::write(env.data.join("big.csv"), csv_text(&iris_rows(200_000))).unwrap();
    let busy = submit(
        &server,
        score_spec(json!({"path": "big.csv"}), json!({"path": "busy.csv"}), 1),
    )
    .await;
    wait_for(&server, &busy, Duration::from_secs(60), |j| {
        j["state"] == "running"
    })
    .await;
    let rows = iris_rows(30);
    let (status, answer) = post_multipart(
        &server,
        "/v1/jobs",
        &score_spec(json!({"upload": "rows"}), json!({"path": "up.csv"}), 8),
        &[("rows", "new.csv", csv_text(&rows).into_bytes())],
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["job_id"].as_str().unwrap().to_string();
    let db = format!("sqlite://{}", env.state.join("ferroserve.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let holder = || async {
        sqlx::query("SELECT state, claimed_by FROM jobs WHERE id = ?")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .map(|r| (r.get::<String, _>(0), r.get::<Option<String>, _>(1)))
            .unwrap()
    };
    let (state, held_by) = holder().await;
    assert_eq!(state, "queued");
    assert!(
        held_by.is_some(),
        "a job with uploaded files is held by its server"
    );
    server.stop().await;

    let server = TestServer::start_with(settings(&env)).await;
    let job = finished(&server, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["progress"]["rows_written"], 30, "{job}");
    assert_eq!(
        dir_entries(&env.state.join("job-uploads")),
        Vec::<String>::new()
    );
    pool.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_uploads_are_removed_at_start() {
    let env = env();
    let uploads = env.state.join("job-uploads");
    std::fs::create_dir_all(uploads.join(".incoming-0123")).unwrap();
    std::fs::write(uploads.join(".incoming-0123/data"), "a\n").unwrap();
    std::fs::create_dir_all(uploads.join("00000000000000000000000000000000")).unwrap();
    let server = TestServer::start_with(settings(&env)).await;
    assert_eq!(dir_entries(&uploads), Vec::<String>::new());
    server.stop().await;
}

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
        "CREATE TABLE flowers (id INT, sepal_length DOUBLE, sepal_width DOUBLE, \
         petal_length FLOAT, petal_width DECIMAL(4,2))",
    )
    .execute(&pool)
    .await
    .unwrap();
    let rows = iris_rows(120);
    for (i, r) in rows.iter().enumerate() {
        sqlx::query("INSERT INTO flowers VALUES (?, ?, ?, ?, ?)")
            .bind(i as i32)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_bodies_keep_their_size_limits() {
    // The job routes read their bodies themselves (multipart may be as large as the
    // upload limit): a JSON body still stops at max_request_bytes, and so does the
    // spec part of a multipart body.
    let env = env();
    let settings = Settings {
        max_request_bytes: 2048,
        max_upload_bytes: 100_000,
        ..settings(&env)
    };
    let server = TestServer::start_with(settings).await;
    let mut spec = score_spec(json!({"path": "in.csv"}), json!({"path": "x.csv"}), 8);
    spec["spec"]["carry"] = json!(vec!["a".repeat(100); 40]);
    for path in ["/v1/jobs", "/predictall/"] {
        let (status, answer) = server.post_json(path, &spec).await;
        assert_eq!(status, 413, "{path}: {answer}");
    }
    let (status, answer) = post_multipart(&server, "/v1/jobs", &spec, &[]).await;
    assert_eq!(status, 413, "{answer}");
    // Files up to the upload limit, far above max_request_bytes, are taken.
    let rows = iris_rows(1000);
    let csv = csv_text(&rows).into_bytes();
    assert!(csv.len() > 2048 && csv.len() < 100_000);
    let (status, answer) = post_multipart(
        &server,
        "/v1/jobs",
        &score_spec(json!({"upload": "rows"}), json!({"path": "out.csv"}), 64),
        &[("rows", "rows.csv", csv)],
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let job = finished(&server, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    server.stop().await;
}

/// A job request refused on a part before its files (the spec sent twice) drains
/// the files the client is still sending before answering: the client sends its
/// whole body and reads the answer (without the drain, the server closed the
/// connection on 12 MiB unread, more than the sockets' buffers hold, and the
/// client's write failed with a broken pipe or a reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_files_are_read_reach_the_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = env();
    let settings = Settings {
        max_upload_bytes: 64 << 20,
        ..settings(&env)
    };
    let server = TestServer::start_with(settings).await;
    let spec = score_spec(json!({"upload": "rows"}), json!({"path": "out.csv"}), 64).to_string();
    let boundary = "ferroserve-test-boundary";
    let mut body = Vec::new();
    for _ in 0..2 {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{spec}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"rows\"; \
             filename=\"rows.csv\"\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend(std::iter::repeat_n(b'x', 12 << 20));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let addr = server
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut requests = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    requests.extend_from_slice(&body);
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // The write half is kept open until the answer is read: a half-closed
    // connection is a client gone to the server.
    let writer = tokio::spawn(async move { write.write_all(&requests).await.map(|()| write) });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut answer))
        .await
        .expect("the answer within 30 s")
        .expect("the answer read whole");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("part \\\"spec\\\" is sent twice"),
        "{answer}"
    );
    drop(
        writer
            .await
            .unwrap()
            .expect("the whole body sent, none of it refused by a closed connection"),
    );
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
