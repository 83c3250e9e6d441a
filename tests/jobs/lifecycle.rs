//! A job's life: cancelled, queued, followed by another replica, a model deleted or
//! replaced under it, a restart or shutdown, its threads' priority, its events.

use super::*;

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
