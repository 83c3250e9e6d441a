//! The prediction log when the database refuses what it is given: a row it refuses
//! as such (a SQLite trigger in the test's place; MariaDB's `max_allowed_packet`
//! for real) is dropped and counted, and the log goes on (it was retried forever,
//! and nothing was logged again); an entry too large to log is kept with a marker
//! in place of its tensors; and the read-back routes tell an unknown model (404)
//! from an empty window or page of a known one, whatever parameters are given.
//! Each test has a model of its own name, so that the counters (one registry per
//! process) are its own.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::db_servers::{DbKind, DbServer};
use common::{install_model, metric_value, root_path, store_settings, TestServer};
use serde_json::{json, Value};

/// A repository with iris_lr's ONNX model as `model`, logging every request, with
/// the `[log]` lines `extra` besides.
fn repo(model: &str, extra: &str) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        model,
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    std::fs::write(
        repo.path().join(model).join("config.toml"),
        format!("[log]\nsample_rate = 1.0\n{extra}"),
    )
    .unwrap();
    repo
}

/// A prediction of `rows` rows, the first feature of each `first`.
async fn predict(server: &TestServer, model: &str, first: f64, rows: usize) -> u16 {
    let instances: Vec<Value> = (0..rows).map(|_| json!([first, 3.5, 1.4, 0.2])).collect();
    let (code, body) = server
        .post_json(
            &format!("/v1/models/{model}:predict"),
            &json!({ "instances": instances }),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    code
}

/// The rows logged for `model` now, as JSON lines.
async fn logged(server: &TestServer, model: &str) -> Vec<Value> {
    let r = server
        .client
        .get(server.url(&format!("/v1/models/{model}/predictions?limit=100000")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The first feature of each logged row's (one-row) input, in log order.
fn firsts(rows: &[Value]) -> Vec<f64> {
    rows.iter()
        .map(|r| {
            let input = r["inputs"].as_object().unwrap().values().next().unwrap();
            assert_eq!(input.as_array().unwrap().len(), 1, "a refused row logged");
            input[0][0].as_f64().unwrap()
        })
        .collect()
}

/// Polls `check` until it answers `Ok`, for up to 60 s; `what` says what was
/// awaited.
async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    wait_up_to(Duration::from_secs(60), what, check).await
}

async fn wait_up_to<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(Instant::now() < deadline, "{what}: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `big` large requests (rows the database refuses) sent at once with two small
/// ones (first features 1 and 2): the small ones are logged, the large ones
/// dropped and counted under the model; then two more small ones (3 and 4) are
/// logged: the log goes on after a refusal. With `max_rows = 3`, retention is
/// still applied after it.
async fn a_refused_row_is_dropped_and_counted(server: Arc<TestServer>, model: &str, big: usize) {
    let refused = |text: &str| {
        metric_value(
            text,
            "ferroserve_prediction_log_refused_total",
            &[("model", model)],
        )
    };
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..big + 2 {
        let server = server.clone();
        let model = model.to_string();
        requests.spawn(async move {
            match i {
                0 | 1 => predict(&server, &model, (i + 1) as f64, 1).await,
                _ => predict(&server, &model, 7.0, 2000).await,
            }
        });
    }
    while let Some(done) = requests.join_next().await {
        assert_eq!(done.unwrap(), 200);
    }
    wait_for("the small rows sent with them are logged", || async {
        let mut got = firsts(&logged(&server, model).await);
        got.sort_by(f64::total_cmp);
        (got == [1.0, 2.0]).then_some(()).ok_or(format!("{got:?}"))
    })
    .await;
    predict(&server, model, 3.0, 1).await;
    predict(&server, model, 4.0, 1).await;
    wait_for("later rows are logged", || async {
        let got = firsts(&logged(&server, model).await);
        got.ends_with(&[3.0, 4.0])
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;
    let n = refused(&server.scrape().await);
    assert_eq!(n, big as f64, "the refused rows are counted");
    // Retention runs 5 s after the start, then every minute. It keeps the newest
    // three: 3, 4 and whichever of 1 and 2 (sent at the same moment) came last.
    wait_up_to(
        Duration::from_secs(100),
        "max_rows is still applied",
        || async {
            let got = firsts(&logged(&server, model).await);
            (got.len() == 3 && got.ends_with(&[3.0, 4.0]))
                .then_some(())
                .ok_or(format!("{got:?}"))
        },
    )
    .await;
}

/// SQLite: a trigger refuses rows whose inputs pass 2000 bytes (SQLITE_CONSTRAINT,
/// as the database would refuse a value or a size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_row_the_database_refuses_is_dropped_and_the_log_goes_on() {
    use sqlx::Connection;
    let model = "refused_sqlite";
    let repo = repo(model, "max_rows = 3\n");
    let server = Arc::new(TestServer::start_with(store_settings(repo.path(), None)).await);
    let url = format!(
        "sqlite://{}",
        repo.path().join(".ferroserve/ferroserve.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_large BEFORE INSERT ON predictions \
         WHEN length(NEW.inputs) > 2000 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    a_refused_row_is_dropped_and_counted(server.clone(), model, 3).await;
    Arc::into_inner(server).unwrap().stop().await;
}

/// MariaDB with a `max_allowed_packet` of 64 KiB: a row of about 100 KB is a
/// statement it refuses (and closes the connection of), while it answers well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_row_over_max_allowed_packet_is_dropped_and_the_log_goes_on() {
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
    let model = "refused_mariadb";
    let repo = repo(model, "max_rows = 3\n");
    let server =
        Arc::new(TestServer::start_with(store_settings(repo.path(), Some(db.url()))).await);
    a_refused_row_is_dropped_and_counted(server.clone(), model, 3).await;
    Arc::into_inner(server).unwrap().stop().await;
    drop(db);
}

/// An outage is not a refusal: entries logged while PostgreSQL is down wait and
/// are written, in order, once it is back; none is dropped as refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_logged_during_an_outage_are_written_when_the_database_is_back() {
    let mut db = tokio::task::spawn_blocking(|| DbServer::start(DbKind::Postgres))
        .await
        .unwrap();
    let model = "outage";
    let repo = repo(model, "");
    let server = TestServer::start_with(store_settings(repo.path(), Some(db.url()))).await;
    predict(&server, model, 1.0, 1).await;
    wait_for("the first row is logged", || async {
        let got = firsts(&logged(&server, model).await);
        (got == [1.0]).then_some(()).ok_or(format!("{got:?}"))
    })
    .await;
    let mut db = tokio::task::spawn_blocking(move || {
        db.kill();
        db
    })
    .await
    .unwrap();
    for first in [2.0, 3.0, 4.0] {
        predict(&server, model, first, 1).await;
    }
    // Long enough for the writer to fail and back off a few times.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let db = tokio::task::spawn_blocking(move || {
        db.restart();
        db
    })
    .await
    .unwrap();
    wait_for("the rows logged during the outage are written", || async {
        let got = firsts(&logged(&server, model).await);
        (got == [1.0, 2.0, 3.0, 4.0])
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;
    assert_none_refused(&server, model).await;
    server.stop().await;
    drop(db);
}

/// An entry whose inputs and outputs pass 1 MiB of JSON is logged with a marker
/// naming each tensor's type and shape in place of the tensors, and counted; a
/// small one after it is logged whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_too_large_is_logged_with_a_marker() {
    let model = "oversized";
    let repo = repo(model, "");
    let server = TestServer::start_with(store_settings(repo.path(), None)).await;
    predict(&server, model, 5.1, 30_000).await;
    predict(&server, model, 6.0, 1).await;
    let rows = wait_for("both rows are logged", || async {
        let rows = logged(&server, model).await;
        (rows.len() == 2)
            .then_some(rows.clone())
            .ok_or(format!("{rows:?}"))
    })
    .await;
    let (large, small) = (&rows[0], &rows[1]);
    for (column, shape) in [("inputs", "[30000, 4]"), ("outputs", "[30000, 3]")] {
        let marker = large[column].as_str().unwrap_or_else(|| {
            let start: String = large.to_string().chars().take(300).collect();
            panic!("{column} is not a marker: {start}…")
        });
        assert!(marker.starts_with("not logged: "), "{marker}");
        assert!(marker.contains("1048576 bytes of JSON"), "{marker}");
        assert!(marker.contains(shape), "{marker}");
    }
    assert_eq!(large["version"], 1);
    assert_eq!(large["protocol"], "tfs_rest");
    assert_eq!(firsts(std::slice::from_ref(small)), [6.0]);
    let text = server.scrape().await;
    let oversized = metric_value(
        &text,
        "ferroserve_prediction_log_oversized_total",
        &[("model", model)],
    );
    assert_eq!(oversized, 1.0, "{text}");
    server.stop().await;
}

/// A name the server does not know, with nothing stored under it, is a 404 whatever
/// time window or page is asked for; a deleted model's rows and events are still
/// read, an empty window or page of them answered as it is. The CSV header names
/// the time `at_ms`, as the JSON lines do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_are_404_whatever_the_parameters() {
    let model = "deleted_later";
    let repo = repo(model, "");
    let server = TestServer::start_with(store_settings(repo.path(), None)).await;
    for path in [
        "/v1/models/nosuch/predictions",
        "/v1/models/nosuch/predictions?since=0",
        "/v1/models/nosuch/predictions?until=1764633600000&format=csv",
        "/v1/models/nosuch/predictions?since=0&until=1764633600000&limit=5",
        "/v1/models/nosuch/history",
        "/v1/models/nosuch/history?before=5",
        "/v1/models/nosuch/history?before=5&limit=2",
    ] {
        let r = server.client.get(server.url(path)).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("\\\"nosuch\\\" not found"), "{path}: {body}");
    }

    predict(&server, model, 5.1, 1).await;
    wait_for("the row is logged", || async {
        let n = logged(&server, model).await.len();
        (n == 1).then_some(()).ok_or(format!("{n} rows"))
    })
    .await;
    let csv = server
        .client
        .get(server.url(&format!("/v1/models/{model}/predictions?format=csv")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let header = csv.lines().next().unwrap();
    assert_eq!(
        header,
        "id,at_ms,model,version,protocol,latency_us,request_id,inputs,outputs"
    );
    let row = &logged(&server, model).await[0];
    for column in header.split(',') {
        assert!(row.get(column).is_some(), "{column} not in {row}");
    }

    let (code, body) = common::status_and_body(
        server
            .client
            .delete(server.url(&format!("/delete_model/{model}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let future = ferroserve::store::now_ms() + 60_000;
    for (path, want) in [
        (format!("/v1/models/{model}/predictions"), 200),
        (
            format!("/v1/models/{model}/predictions?since={future}"),
            200,
        ),
        (format!("/v1/models/{model}/history?before=1"), 200),
        (format!("/v1/models/{model}/history"), 200),
    ] {
        let r = server.client.get(server.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), want, "{path}");
    }
    server.stop().await;
}

/// PostgreSQL killed, an entry logged during the outage, and PostgreSQL started
/// again while the writer's first try still waits for a connection (or probes the
/// database after it gave up): the entry is written once it is back, never taken
/// for a row the database refused (it was dropped in about 2 rounds of 5: the
/// pool's timeout was an outage only if a probe after it failed too). Rounds of
/// the timing the report gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_logged_as_the_database_comes_back_is_written() {
    let db = tokio::task::spawn_blocking(|| DbServer::start(DbKind::Postgres))
        .await
        .unwrap();
    let model = "comes_back";
    let repo = repo(model, "");
    let settings = ferroserve::settings::Settings {
        database_timeout: Duration::from_secs(3),
        ..store_settings(repo.path(), Some(db.url()))
    };
    let server = TestServer::start_with(settings).await;
    let mut db = Some(db);
    let mut want = Vec::new();
    for round in 0..3 {
        let mut taken = db.take().unwrap();
        taken = tokio::task::spawn_blocking(move || {
            taken.kill();
            taken
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let first = f64::from(round) + 1.0;
        predict(&server, model, first, 1).await;
        want.push(first);
        tokio::time::sleep(Duration::from_millis(4500)).await;
        taken = tokio::task::spawn_blocking(move || {
            taken.restart();
            taken
        })
        .await
        .unwrap();
        db = Some(taken);
        wait_up_to(
            Duration::from_secs(25),
            &format!("round {round}: the entry logged during the outage is written"),
            || async {
                let got = firsts(&logged(&server, model).await);
                (got == want).then_some(()).ok_or(format!("{got:?}"))
            },
        )
        .await;
    }
    assert_none_refused(&server, model).await;
    server.stop().await;
    drop(db);
}

/// Model lookup comes first: a name the server does not know, with nothing logged
/// or recorded under it, is a 404 even when a parameter is one it would refuse
/// (a 400 before); a known model's bad parameter is still a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_are_404_before_their_parameters_are_read() {
    let model = "known_params";
    let repo = repo(model, "");
    let server = TestServer::start_with(store_settings(repo.path(), None)).await;
    for (path, want) in [
        ("/v1/models/nosuch/predictions?limit=abc", 404),
        ("/v1/models/nosuch/predictions?since=xyz&format=xml", 404),
        ("/v1/models/nosuch/predictions?colour=red", 404),
        ("/v1/models/nosuch/history?before=abc", 404),
        ("/v1/models/nosuch/history?limit=0", 404),
        ("/v1/models/known_params/predictions?limit=abc", 400),
        (
            "/v1/models/known_params/predictions?since=xyz&format=xml",
            400,
        ),
        ("/v1/models/known_params/history?before=abc", 400),
    ] {
        let r = server.client.get(server.url(path)).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, want, "{path}: {body}");
    }
    server.stop().await;
}

/// A read of many large entries with a large `limit` is answered whole and in
/// order (`at_ms`, then `id`, across rows of one millisecond), while the server's
/// peak memory, after a smaller read of such entries, grows by far less than the
/// answer (it loaded every row, then built the whole answer: 460 MB for an answer
/// of 84 MB). The rows are written
/// to the server's SQLite file directly: the server's own memory then is its
/// read's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_read_is_streamed_in_bounded_memory() {
    use common::child::{free_port, ChildServer};
    use sqlx::Connection;
    let model = "streamed";
    let repo = repo(model, "");
    let rest: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    command
        .arg("serve")
        .arg("--model-repository")
        .arg(repo.path())
        .arg("--rest-addr")
        .arg(rest.to_string())
        .arg("--grpc-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--inference-threads")
        .arg("1");
    let server = ChildServer::start(command, rest).await;
    let file = repo.path().join(".ferroserve/ferroserve.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    // 60 entries of about 850 KB of JSON each, in no time order, three to a
    // millisecond.
    const ROWS: usize = 60;
    let mut written = Vec::new();
    for i in 0..ROWS {
        let data: Vec<String> = (0..85_000)
            .map(|j| format!("0.{:07}", (i * 85_000 + j) % 9_999_991))
            .collect();
        let inputs = format!("{{\"x\":[{}]}}", data.join(","));
        let at_ms = 1_000_000 + ((i * 7) % 20) as i64;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO predictions (at_ms, model, version, protocol, latency_us, \
             request_id, inputs, outputs) VALUES (?, ?, 1, 'v2', 5, ?, ?, '{\"y\":[1]}') \
             RETURNING id",
        )
        .bind(at_ms)
        .bind(model)
        .bind(format!("r{i}"))
        .bind(&inputs)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        written.push((at_ms, id, inputs));
    }
    conn.close().await.unwrap();
    written.sort_by_key(|(at_ms, id, _)| (*at_ms, *id));
    let answer_bytes: usize = written.iter().map(|(_, _, i)| i.len()).sum();

    // A read of a third of the rows first: what any read of large entries takes
    // (a page, a row's parsed tensors, the threads' allocator arenas) is taken by
    // then, so that what the full read adds is what grows with its size.
    let warm = reqwest::get(server.url(&format!("/v1/models/{model}/predictions?limit=20")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(warm.lines().count(), 20);
    std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5").unwrap();
    let before = common::workers::peak_rss(server.pid());
    let text = reqwest::get(server.url(&format!("/v1/models/{model}/predictions?limit=100000")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let grown = common::workers::peak_rss(server.pid()).saturating_sub(before);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), ROWS);
    for (line, (at_ms, id, inputs)) in lines.iter().zip(&written) {
        let row: Value = serde_json::from_str(line).unwrap();
        assert_eq!(row["at_ms"], *at_ms);
        assert_eq!(row["id"], *id);
        assert_eq!(
            row["inputs"],
            serde_json::from_str::<Value>(inputs).unwrap(),
            "row {id}"
        );
    }
    eprintln!(
        "answer {} bytes, the server's peak memory grew by {grown} bytes",
        text.len()
    );
    assert!(
        (grown as usize) < answer_bytes / 4,
        "the server's peak memory grew by {grown} bytes for an answer of {}",
        text.len()
    );
    // A limit and the CSV format page the same way.
    let csv = reqwest::get(server.url(&format!(
        "/v1/models/{model}/predictions?limit=7&format=csv"
    )))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let ids: Vec<i64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    let want: Vec<i64> = written.iter().take(7).map(|(_, id, _)| *id).collect();
    assert_eq!(ids, want);
}

/// No entry of `model` was dropped as refused by the database.
async fn assert_none_refused(server: &TestServer, model: &str) {
    let text = server.scrape().await;
    let refused = metric_value(
        &text,
        "ferroserve_prediction_log_refused_total",
        &[("model", model)],
    );
    assert_eq!(refused, 0.0);
}
