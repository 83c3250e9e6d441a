//! SQL table sinks: one table by any of its names is one output, and a job whose
//! SQLite sink created its file leaves no file when it does not succeed.

use super::*;

/// A SQLite table named in its default schema (`main.bigt`) is the table named
/// alone: while one job overwrites it, another writing it by either name is a 409
/// naming that job. Cancelled, the job leaves no database file it created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sqlite_table_by_any_name_and_a_cancel_leaves_no_new_file() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    write_csv(&env.data.join("big.csv"), &iris_rows(200_000));
    let job = |table: &str| {
        score_spec(
            json!({"path": "big.csv"}),
            json!({"url": "sqlite://fresh.sqlite", "table": table, "mode": "overwrite"}),
            1,
        )
    };
    let busy = submit(&server, job("bigt")).await;
    wait_for(&server, &busy, Duration::from_secs(60), |j| {
        j["progress"]["rows_read"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert!(env.data.join("fresh.sqlite").exists());
    for table in ["main.bigt", "MAIN.BIGT", "bigt"] {
        let (status, answer) = server.post_json("/v1/jobs", &job(table)).await;
        assert_eq!(status, 409, "{table}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with("spec.sink.table: ") && error.contains(&busy),
            "{error}"
        );
    }
    let (status, answer) = server
        .post_json(&format!("/v1/jobs/{busy}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    wait_for(&server, &busy, Duration::from_secs(10), |j| {
        j["state"] == "cancelled"
    })
    .await;
    // The writer rolls back and removes the file it created as it ends.
    let deadline = Instant::now() + Duration::from_secs(20);
    while data_files(&env) != ["big.csv"] {
        assert!(Instant::now() < deadline, "{:?}", data_files(&env));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
