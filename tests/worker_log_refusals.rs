//! A deployed model's prediction log when the main store refuses one of its rows
//! as such: MariaDB with a `max_allowed_packet` of 64 KiB, and a request whose log
//! row is far over it (yet under the log's 1 MiB cap). The move of the worker's
//! rows into the main store stopped at that row at every pass, for good: no later
//! row reached the store, the worker's store grew, and its state directory was
//! kept when the deployment stopped. The row is dropped and counted, as the
//! in-process writer does, and the rows after it move.

mod common;

use std::time::{Duration, Instant};

use common::db_servers::{DbKind, DbServer};
use common::metric_value;
use common::workers::{
    deploy, log_every_prediction, port_range, post, scoring_repo, send, send_text, start_server,
};
use serde_json::{json, Value};

/// A prediction of `rows` rows on the main server, the first feature of each `first`.
async fn predict(server: &common::child::ChildServer, first: f64, rows: usize) {
    let instances: Vec<Value> = (0..rows).map(|_| json!([first, 3.5, 1.4, 0.2])).collect();
    let (code, body) = post(
        server.url("/v1/models/iris:predict"),
        &json!({ "instances": instances }),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

/// The first feature of each row of `iris`'s log in the main store, oldest first.
async fn logged_firsts(server: &common::child::ChildServer) -> Vec<f64> {
    let (code, text) = send_text(server.url("/v1/models/iris/predictions?limit=1000")).await;
    assert_eq!(code, 200, "{text}");
    text.lines()
        .map(|l| {
            let row: Value = serde_json::from_str(l).unwrap();
            let inputs = &row["inputs"];
            // However the inputs are keyed, the first number in them.
            let first = inputs
                .as_object()
                .and_then(|o| o.values().next())
                .unwrap_or(inputs);
            let mut v = first;
            while let Some(a) = v.as_array() {
                v = &a[0];
            }
            v.as_f64().unwrap_or(f64::NAN)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_models_row_over_max_allowed_packet_is_dropped_and_the_log_goes_on() {
    use sqlx::Connection;
    let db = tokio::task::spawn_blocking(|| DbServer::start(DbKind::MariaDb))
        .await
        .unwrap();
    // New connections (the server's) take the global value.
    let mut conn = sqlx::MySqlConnection::connect(&db.url()).await.unwrap();
    sqlx::query("SET GLOBAL max_allowed_packet = 65536")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let (_dir, repo) = scoring_repo();
    log_every_prediction(&repo);
    let url = db.url();
    let server = start_server(&repo, port_range(10), &["--database-url", &url]).await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}\n{}", server.log());
    let port = answer["port"].as_u64().unwrap();

    predict(&server, 5.1, 1).await;
    // About 300 KB of JSON: far over 64 KiB, under the log's 1 MiB cap.
    predict(&server, 7.7, 5000).await;
    predict(&server, 6.2, 1).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = logged_firsts(&server).await;
        if got == [5.1, 6.2] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log holds {got:?}, not [5.1, 6.2]\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, text) = send_text(server.url("/metrics")).await;
    assert_eq!(code, 200);
    let refused = metric_value(
        &text,
        "ferroserve_prediction_log_refused_total",
        &[("model", "iris")],
    );
    assert_eq!(refused, 1.0, "{text}");

    // Nothing is left in the worker's store: stopping the deployment moves the
    // rest and removes its state directory.
    let state_dir = repo.join(format!(".ferroserve/workers/iris-{port}"));
    let (code, body) = send(reqwest::Client::new().post(server.url("/stop_deployment/iris"))).await;
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while state_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} is kept\n{}",
            state_dir.display(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !server.log().contains("could not be moved"),
        "{}",
        server.log()
    );
    drop(server);
    drop(db);
}
