//! The prediction log: sampling, reading back, limits across a restart, and a full
//! buffer dropping and counting.

use super::*;

fn write_config(repo: &Path, model: &str, toml: &str) {
    std::fs::write(repo.join(model).join("config.toml"), toml).unwrap();
}

/// Waits until the log holds `n` rows for `model` (the writer works in the
/// background); answers them as JSON lines.
async fn logged(server: &TestServer, model: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = server
            .client
            .get(server.url(&format!("/v1/models/{model}/predictions?limit=100000")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/x-ndjson");
        let rows: Vec<Value> = r
            .text()
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} rows logged",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `[log] max_rows` applies to the rows already stored: those logged before a
/// restart, by a model that logs no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_limits_apply_to_rows_logged_before_a_restart() {
    let repo = repo();
    write_config(repo.path(), "iris_lr", "[log]\nsample_rate = 1.0\n");
    let server = TestServer::start_with(store_settings(repo.path(), None)).await;
    for _ in 0..5 {
        assert_eq!(predict(&server, "iris_lr").await.0, 200);
    }
    let rows = logged(&server, "iris_lr", 5).await;
    assert_eq!(rows.len(), 5);
    server.stop().await;
    write_config(
        repo.path(),
        "iris_lr",
        "[log]\nsample_rate = 0.0\nmax_rows = 2\n",
    );
    let server = TestServer::start_with(store_settings(repo.path(), None)).await;
    let mut newest: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    newest.sort_unstable();
    let newest = newest.split_off(3);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let kept: Vec<i64> = logged(&server, "iris_lr", 0)
            .await
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        if kept.len() <= 2 {
            assert_eq!(kept, newest, "the newest two are kept");
            break;
        }
        assert!(Instant::now() < deadline, "{} rows still kept", kept.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

/// Sampled predictions come back with their inputs, outputs, version and protocol,
/// as JSON lines or CSV, filtered by time; the sample rate holds; `[log]` edits
/// apply to the version already serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prediction_log_keeps_a_sample_and_reads_back() {
    let repo = repo();
    write_config(repo.path(), "iris_lr", "[log]\nsample_rate = 1.0\n");
    write_config(repo.path(), "iris_dt", "[log]\nsample_rate = 0.5\n");
    let server = TestServer::start_with(store_settings(repo.path(), None)).await;
    let started_ms = ferroserve::store::now_ms();
    let (code, answer) = predict(&server, "iris_lr").await;
    assert_eq!(code, 200);
    let rows = logged(&server, "iris_lr", 1).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["version"], 1);
    assert_eq!(row["protocol"], "tfs_rest");
    let inputs = row["inputs"].as_object().unwrap();
    assert_eq!(inputs.len(), 1);
    let input = inputs.values().next().unwrap();
    assert_eq!(input[0][0].as_f64().unwrap() as f32, 5.1f32, "{row}");
    assert!(row["at_ms"].as_i64().unwrap() >= started_ms);
    assert_eq!(row["request_id"].as_str().unwrap().len(), 32);
    // The logged outputs are the answer's.
    let outputs = row["outputs"].as_object().unwrap();
    let first = &answer["predictions"][0];
    match first.as_object() {
        Some(named) => {
            for (name, value) in named {
                assert_eq!(&outputs[name][0], value, "{row} vs {answer}");
            }
        }
        None => assert_eq!(
            &outputs.values().next().unwrap()[0],
            first,
            "{row} vs {answer}"
        ),
    }

    // CSV and time filters.
    let csv = server
        .client
        .get(server.url("/v1/models/iris_lr/predictions?format=csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    // Named as the JSON lines name it.
    assert!(lines[0].starts_with("id,at_ms,model,version"), "{csv}");
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].contains(",iris_lr,1,tfs_rest,"), "{csv}");
    let future = ferroserve::store::now_ms() + 60_000;
    let (code, _) = server
        .get(&format!("/v1/models/iris_lr/predictions?since={future}"))
        .await;
    assert_eq!(code, 200);
    let empty = server
        .client
        .get(server.url(&format!("/v1/models/iris_lr/predictions?since={future}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(empty, "");
    let (code, body) = server
        .get("/v1/models/iris_lr/predictions?format=xml")
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = server
        .get("/v1/models/iris_lr/predictions?since=yesterday")
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = server
        .get("/v1/models/iris_lr/predictions?since=1&since=2")
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = server
        .get("/v1/models/iris_lr/predictions?since=2030-01-01T00:00:00Z&until=2020-01-01T00:00:00Z")
        .await;
    assert_eq!(code, 400, "{body}");
    // A name the server never knew is a 404, not an empty log or history, whatever
    // time window or page is asked for (tests/prediction_log.rs: a deleted
    // model's empty window is answered as it is).
    for path in [
        "/v1/models/nope/predictions",
        "/v1/models/nope/predictions?since=0",
        "/v1/models/nope/history",
        "/v1/models/nope/history?before=5",
    ] {
        let (code, body) = server.get(path).await;
        assert_eq!(code, 404, "{path}: {body}");
    }

    // A sample rate of 0.5 over 400 requests: 200 expected, sd 10.
    for _ in 0..400 {
        assert_eq!(predict(&server, "iris_dt").await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = logged(&server, "iris_dt", 1).await.len();
    assert!((140..=260).contains(&n), "{n} of 400 logged at rate 0.5");

    // Turned off live, for the version already serving.
    write_config(repo.path(), "iris_lr", "[log]\nsample_rate = 0.0\n");
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..20 {
        predict(&server, "iris_lr").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(logged(&server, "iris_lr", 1).await.len(), 1);
    server.stop().await;
}

/// With the database down the log's buffer fills: the entries past it are dropped
/// and counted, and every prediction is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_prediction_log_drops_and_counts() {
    let mut db = start_db(DbKind::Postgres).await;
    let repo = repo();
    write_config(repo.path(), "iris_lr", "[log]\nsample_rate = 1.0\n");
    let server =
        Arc::new(TestServer::start_with(store_settings(repo.path(), Some(db.url()))).await);
    let db_gone = tokio::task::spawn_blocking(move || {
        db.kill();
        db
    });
    let db = db_gone.await.unwrap();
    let dropped = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with("ferroserve_store_dropped_total{buffer=\"predictions\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let requests = ferroserve::store::predictions::LOG_BUFFER + 500;
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..8 {
        let server = server.clone();
        clients.spawn(async move {
            for _ in (c..requests).step_by(8) {
                assert_eq!(predict(&server, "iris_lr").await.0, 200);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let metrics = server.scrape().await;
    assert!(dropped(&metrics) >= 400, "{}", dropped(&metrics));
    drop(db);
}
