//! Files in the data directory: CSV, Parquet and JSON lines both ways, and Parquet
//! problems failing clearly with a cancel leaving no file.

use super::*;

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
