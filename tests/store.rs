//! The metadata store (issue 12) against every database it supports: SQLite (the
//! default, embedded), and throwaway PostgreSQL and MariaDB servers started by
//! `common::db_servers` on free loopback ports. The same tests run against each:
//! a restart keeps what management decided and the history; the database killed
//! while clients predict fails no prediction, refuses management writes with 503
//! and recovers by itself; a write that lands after its call answered 503 is
//! written back (PostgreSQL and MariaDB: another client's lock makes it late; a
//! SQLite write gives up waiting with the same timeout); a corrupt SQLite file or an unreachable URL stops the
//! start with a clear message and is never overwritten.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::db_servers::{DbKind, DbServer, MARIADB_PASSWORD};
use common::{install_model, root_path, store_settings, TestServer};
use ferroserve::settings::Settings;
use serde_json::{json, Value};
use sha2::Digest;

/// A repository with two ONNX models.
fn repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    for model in ["iris_lr", "iris_dt"] {
        install_model(
            repo.path(),
            model,
            1,
            &root_path(&format!("examples/models/{model}/1/model.onnx")),
        );
    }
    repo
}

async fn start_db(kind: DbKind) -> DbServer {
    tokio::task::spawn_blocking(move || DbServer::start(kind))
        .await
        .unwrap()
}

async fn predict(server: &TestServer, model: &str) -> (u16, Value) {
    server
        .post_json(
            &format!("/v1/models/{model}:predict"),
            &json!({ "instances": [[5.1, 3.5, 1.4, 0.2]] }),
        )
        .await
}

fn model_status<'a>(status: &'a Value, model: &str) -> &'a Value {
    status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == model)
        .unwrap_or_else(|| panic!("{model} not in {status}"))
}

async fn history(server: &TestServer, model: &str) -> Vec<Value> {
    let (code, body) = server.get(&format!("/v1/models/{model}/history")).await;
    assert_eq!(code, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

/// Stop one model, deploy another with a timeout, upload a version; restart on the
/// same store: stopped stays stopped, the timeout is in force, the history whole.
async fn restart_keeps_decisions_and_history(database_url: Option<String>) {
    let repo = repo();
    let settings = store_settings(repo.path(), database_url);
    let again = settings.clone();
    let server = TestServer::start_with(settings.clone()).await;

    let (code, body) = server
        .post_json("/stop_deployment/iris_lr", &json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    // A deadline no request can meet: every prediction of iris_dt is 504 while the
    // deployment is in force.
    let (code, body) = server
        .post_json(
            "/deploy",
            &json!({ "model_id": "iris_dt", "resources": { "timeout": 0.000001 } }),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(predict(&server, "iris_dt").await.0, 504);
    let file = std::fs::read(root_path("examples/models/iris_lr/1/model.onnx")).unwrap();
    let sha256: String = sha2::Sha256::digest(&file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (code, body) = server
        .upload(&[("model_id", "uploaded")], "lr.onnx", file)
        .await;
    assert_eq!(code, 200, "{body}");
    // Status names each event by the id the history gives it, once it is written
    // (every event recorded since the start said 0).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, status) = server.get("/models/status").await;
        let ids: Vec<i64> = model_status(&status, "iris_lr")["recent_events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        let stored: Vec<i64> = history(&server, "iris_lr")
            .await
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .take(ids.len())
            .collect();
        if !ids.is_empty() && !ids.contains(&0) && ids == stored {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status {ids:?}, history {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;

    let server = TestServer::start_with(settings).await;
    let (_, status) = server.get("/models/status").await;
    let lr = model_status(&status, "iris_lr");
    assert_eq!(lr["stopped"], true, "{lr}");
    assert_eq!(lr["served"], false, "{lr}");
    assert_eq!(predict(&server, "iris_lr").await.0, 404);
    let dt = model_status(&status, "iris_dt");
    assert_eq!(dt["deployment"]["resources"]["timeout"], 0.000001, "{dt}");
    assert_eq!(
        predict(&server, "iris_dt").await.0,
        504,
        "the timeout is in force"
    );
    assert_eq!(predict(&server, "uploaded").await.0, 200);
    // Status shows the latest events without asking the database.
    assert_eq!(lr["recent_events"][0]["kind"], "stop", "{lr}");

    let lr = history(&server, "iris_lr").await;
    let stop = lr
        .iter()
        .find(|e| e["kind"] == "stop")
        .expect("a stop event");
    assert!(
        stop["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{stop}"
    );
    let states: Vec<(&str, &str)> = lr
        .iter()
        .filter(|e| e["kind"] == "state")
        .map(|e| {
            (
                e["detail"]["from"].as_str().unwrap(),
                e["detail"]["to"].as_str().unwrap(),
            )
        })
        .rev()
        .collect();
    assert!(
        states.ends_with(&[("AVAILABLE", "UNLOADING"), ("UNLOADING", "END")]),
        "{states:?}"
    );
    let dt = history(&server, "iris_dt").await;
    let deploy = dt
        .iter()
        .find(|e| e["kind"] == "deploy")
        .expect("a deploy event");
    assert_eq!(deploy["detail"]["timeout_secs"], 0.000001, "{deploy}");
    let up = history(&server, "uploaded").await;
    let upload = up
        .iter()
        .find(|e| e["kind"] == "upload")
        .expect("an upload event");
    assert_eq!(upload["version"], 1);
    assert_eq!(upload["detail"]["sha256"], sha256.as_str());
    assert_eq!(upload["detail"]["file_name"], "lr.onnx");
    assert!(upload["detail"]["bytes"].as_u64().unwrap() > 0);

    // Reloading starts the stopped model again, and that too survives a restart.
    let (code, body) = server
        .post_json("/reload_model?modelname=iris_lr", &json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    server.stop().await;
    let server = TestServer::start_with(again).await;
    assert_eq!(predict(&server, "iris_lr").await.0, 200);
    // Paged newest first.
    let (code, page) = server.get("/v1/models/iris_lr/history?limit=2").await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let before = page["next_before"].as_i64().expect("more pages");
    let (_, older) = server
        .get(&format!(
            "/v1/models/iris_lr/history?limit=2&before={before}"
        ))
        .await;
    assert!(
        older["events"][0]["id"].as_i64().unwrap() < before,
        "{older}"
    );
    let (code, body) = server.get("/v1/models/iris_lr/history?limit=x").await;
    assert_eq!(code, 400, "{body}");
    // A parameter given twice: which one counts is not guessed.
    let (code, body) = server
        .get("/v1/models/iris_lr/history?limit=1&limit=2")
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("\"limit\" is given twice"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_restart_keeps_decisions_and_history() {
    restart_keeps_decisions_and_history(None).await;
}

#[tokio::test(flavor = "current_thread")]
async fn postgres_restart_keeps_decisions_and_history() {
    let db = start_db(DbKind::Postgres).await;
    restart_keeps_decisions_and_history(Some(db.url())).await;
}

#[tokio::test(flavor = "current_thread")]
async fn mariadb_restart_keeps_decisions_and_history() {
    let db = start_db(DbKind::MariaDb).await;
    restart_keeps_decisions_and_history(Some(db.url())).await;
}

/// Kills the database while a client predicts: no prediction fails; management
/// writes answer 503 and change nothing; state changes meanwhile are kept and
/// written once the database is back, and management works again by itself.
async fn database_killed_under_load(kind: DbKind) {
    let mut db = start_db(kind).await;
    let repo = repo();
    let server =
        Arc::new(TestServer::start_with(store_settings(repo.path(), Some(db.url()))).await);
    let stop = tokio_util::sync::CancellationToken::new();
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (server, stop, answered, failed) = (
            server.clone(),
            stop.clone(),
            answered.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                match predict(&server, "iris_lr").await.0 {
                    200 => answered.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let mut db = tokio::task::spawn_blocking(move || {
        db.kill();
        db
    })
    .await
    .unwrap();
    for (path, body) in [
        ("/stop_deployment/iris_lr", json!({})),
        ("/deploy", json!({ "model_id": "iris_dt" })),
    ] {
        let (code, body) = server.post_json(path, &body).await;
        assert_eq!(code, 503, "{path}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains("metadata store"), "{message}");
        assert!(!message.contains(MARIADB_PASSWORD), "{message}");
    }
    let (code, body) = server
        .upload(&[("model_id", "up")], "m.onnx", vec![1, 2, 3])
        .await;
    assert_eq!(code, 503, "{body}");
    // Nothing changed: the stop was refused.
    assert_eq!(predict(&server, "iris_lr").await.0, 200);
    // A reload of a model that is not stopped records nothing, so it works (it
    // waited for the store, then answered 503); so does V2's load.
    for path in [
        "/reload_model?modelname=iris_lr",
        "/v2/repository/models/iris_lr/load",
    ] {
        let (code, body) = server.post_json(path, &json!({})).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    // A version copied in while the database is down loads; its state changes wait
    // in the audit buffer.
    install_model(
        repo.path(),
        "iris_dt",
        2,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while predict_version(&server, "iris_dt", 2).await != 200 {
        assert!(Instant::now() < deadline, "version 2 not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _) = server.get("/v1/models/iris_dt/history").await;
    assert_eq!(code, 503, "reading the history needs the database");

    let db = tokio::task::spawn_blocking(move || {
        db.restart();
        db
    })
    .await
    .unwrap();
    // The pool reconnects by itself: management works again (on a model the client
    // does not predict with).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = server
            .post_json("/stop_deployment/iris_dt", &json!({}))
            .await;
        if code == 200 {
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "management still refused: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    client.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed predictions");
    assert!(answered.load(Ordering::Relaxed) > 20);
    // The state changes recorded while the database was down were written.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = server.get("/v1/models/iris_dt/history").await;
        let written = code == 200
            && body["events"].as_array().unwrap().iter().any(|e| {
                e["kind"] == "state" && e["version"] == 2 && e["detail"]["to"] == "AVAILABLE"
            });
        if written {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "buffered events not written: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(db);
}

async fn predict_version(server: &TestServer, model: &str, version: u64) -> u16 {
    server
        .post_json(
            &format!("/v1/models/{model}/versions/{version}:predict"),
            &json!({ "instances": [[5.1, 3.5, 1.4, 0.2]] }),
        )
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_under_load() {
    database_killed_under_load(DbKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_killed_under_load() {
    database_killed_under_load(DbKind::MariaDb).await;
}

/// Another client's lock on `model_settings`, taken on a connection of its own:
/// the server's writes to the table wait for it.
enum SettingsLock {
    Postgres(sqlx::PgConnection),
    MariaDb(sqlx::MySqlConnection),
}

impl SettingsLock {
    async fn take(kind: DbKind, url: &str) -> SettingsLock {
        use sqlx::Connection;
        match kind {
            DbKind::Postgres => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql("BEGIN; LOCK TABLE model_settings IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                SettingsLock::Postgres(c)
            }
            DbKind::MariaDb => {
                let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
                sqlx::raw_sql("LOCK TABLES model_settings WRITE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                SettingsLock::MariaDb(c)
            }
        }
    }

    async fn release(self) {
        use sqlx::Connection;
        match self {
            SettingsLock::Postgres(mut c) => {
                sqlx::raw_sql("COMMIT").execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
            SettingsLock::MariaDb(mut c) => {
                sqlx::raw_sql("UNLOCK TABLES")
                    .execute(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
            }
        }
    }
}

/// What `model_settings` says of `model`: `None` without a row.
async fn stored_stopped(kind: DbKind, url: &str, model: &str) -> Option<i64> {
    use sqlx::{Connection, Row};
    let row = match kind {
        DbKind::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("SELECT stopped FROM model_settings WHERE model = $1")
                .bind(model)
                .fetch_optional(&mut c)
                .await
                .unwrap()
                .map(|r| r.get::<i64, _>(0))
        }
        DbKind::MariaDb => {
            let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
            sqlx::query("SELECT stopped FROM model_settings WHERE model = ?")
                .bind(model)
                .fetch_optional(&mut c)
                .await
                .unwrap()
                .map(|r| r.get::<i64, _>(0))
        }
    };
    row
}

/// A stop whose write outlives the database timeout answers 503 and stops nothing.
/// The database applies the write once another client's lock goes: the row is
/// written back, so a restart serves the model; meanwhile the model's settings
/// cannot change (503), so nothing newer is overwritten.
async fn a_late_settings_write_is_written_back(kind: DbKind) {
    let db = start_db(kind).await;
    let repo = repo();
    let settings = store_settings(repo.path(), Some(db.url()));
    let server = TestServer::start_with(settings.clone()).await;
    let lock = SettingsLock::take(kind, &db.url()).await;
    let (code, body) = server
        .post_json("/stop_deployment/iris_lr", &json!({}))
        .await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("did not answer"),
        "{body}"
    );
    // Meanwhile its settings cannot change: another stop is refused at once.
    let (code, body) = server
        .post_json("/stop_deployment/iris_lr", &json!({}))
        .await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not settled"),
        "{body}"
    );
    // A reload of the model, which is not stopped, records nothing: it works.
    let (code, body) = server
        .post_json("/reload_model?modelname=iris_lr", &json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(predict(&server, "iris_lr").await.0, 200, "nothing stopped");

    lock.release().await;
    // The late stop lands, and is written back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_stopped(kind, &db.url(), "iris_lr").await != Some(0) {
        assert!(Instant::now() < deadline, "the late stop stays recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then the model's settings can change again: a stop, and the reload that
    // starts it again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = server
            .post_json("/stop_deployment/iris_lr", &json!({}))
            .await;
        if code == 200 {
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(Instant::now() < deadline, "still unsettled: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = server
        .post_json("/reload_model?modelname=iris_lr", &json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(predict(&server, "iris_lr").await.0, 200);
    server.stop().await;
    let server = TestServer::start_with(settings).await;
    assert_eq!(
        predict(&server, "iris_lr").await.0,
        200,
        "a restart serves the model the stop was refused for"
    );
    server.stop().await;
}

async fn delete(server: &TestServer, path: &str) -> (u16, Value) {
    common::status_and_body(server.client.delete(server.url(path)).send().await.unwrap()).await
}

/// A delete forgets the model's stored settings before it moves the files: when the
/// store cannot forget them (another client's lock outlasts the timeout), the delete
/// answers 503 and the model stays, files and all; once the store has settled, the
/// delete goes through.
async fn a_delete_the_store_cannot_record_deletes_nothing(kind: DbKind) {
    let db = start_db(kind).await;
    let repo = repo();
    let server = TestServer::start_with(store_settings(repo.path(), Some(db.url()))).await;
    let lock = SettingsLock::take(kind, &db.url()).await;
    let (code, body) = delete(&server, "/delete_model/iris_lr").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("metadata store"),
        "{body}"
    );
    assert!(repo.path().join("iris_lr/1/model.onnx").is_file());
    assert_eq!(predict(&server, "iris_lr").await.0, 200);
    lock.release().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = delete(&server, "/delete_model/iris_lr").await;
        if code == 200 {
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(Instant::now() < deadline, "still refused: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!repo.path().join("iris_lr").exists());
    assert_eq!(stored_stopped(kind, &db.url(), "iris_lr").await, None);
    // A deleted model keeps its history. Events are written in the background: the
    // writer, held back by the lock, retries after a pause that grew meanwhile.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = server.get("/v1/models/iris_lr/history").await;
        assert_eq!(code, 200, "{body}");
        if body["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "delete")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no delete event: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_delete_the_store_cannot_record_deletes_nothing() {
    a_delete_the_store_cannot_record_deletes_nothing(DbKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_late_settings_write_is_written_back() {
    a_late_settings_write_is_written_back(DbKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_late_settings_write_is_written_back() {
    a_late_settings_write_is_written_back(DbKind::MariaDb).await;
}

/// Replicas starting together on one fresh database each migrate it safely.
async fn concurrent_starts_migrate_once(url: String) {
    let opens = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            ferroserve::store::Store::open(&url, Duration::from_secs(10), true).await
        })
    });
    for open in futures::future::join_all(opens).await {
        let store = open.unwrap().unwrap_or_else(|e| panic!("{e}"));
        let status = store.status().await.unwrap();
        assert_eq!(status.schema_version, status.schema_version_known);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_migrate_once_on_every_database() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_starts_migrate_once(format!("sqlite://{}/s.db", dir.path().display())).await;
    let pg = start_db(DbKind::Postgres).await;
    concurrent_starts_migrate_once(pg.url()).await;
    let maria = start_db(DbKind::MariaDb).await;
    concurrent_starts_migrate_once(maria.url()).await;
}

/// A file that is not SQLite, or a SQLite file whose pages are garbage, stops the
/// start with a clear message and is left byte for byte as it was.
#[tokio::test]
async fn a_corrupt_sqlite_file_is_reported_and_kept() {
    let repo = repo();
    let state = repo.path().join(".ferroserve");
    std::fs::create_dir_all(&state).unwrap();
    let db = state.join("ferroserve.db");

    std::fs::write(&db, b"PK\x03\x04 this is a zip, not a database").unwrap();
    let before = std::fs::read(&db).unwrap();
    let e = start_fails(store_settings(repo.path(), None)).await;
    assert!(e.contains("is not a SQLite database"), "{e}");
    assert_eq!(std::fs::read(&db).unwrap(), before);

    // A real database, then its pages overwritten.
    std::fs::remove_file(&db).unwrap();
    let server = TestServer::start_with(store_settings(repo.path(), None)).await;
    server.stop().await;
    assert!(
        !state.join("ferroserve.db-wal").exists(),
        "a clean stop folds the write-ahead log into the file"
    );
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 4096, "{}", bytes.len());
    for b in &mut bytes[100..] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let e = start_fails(store_settings(repo.path(), None)).await;
    assert!(e.contains("metadata store"), "{e}");
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "the file was changed");

    // Its first page whole and the others overwritten: the migrations find it
    // malformed, which no wait mends (the start waited 30 s for other replicas).
    std::fs::remove_file(&db).unwrap();
    let server = TestServer::start_with(store_settings(repo.path(), None)).await;
    server.stop().await;
    let mut bytes = std::fs::read(&db).unwrap();
    for b in &mut bytes[4096..] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let asked = Instant::now();
    let e = start_fails(store_settings(repo.path(), None)).await;
    assert!(e.contains("corrupt") || e.contains("malformed"), "{e}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "the file was changed");
}

/// A database that is not ferroserve's is refused before anything is written to
/// it: a SQLite file of another program's (its tables were joined by ferroserve's),
/// or tables named as ferroserve's on a shared server (the migration failed half way
/// and left its history behind). A shared PostgreSQL or MariaDB database with other
/// tables is fine. `db status` says what is wrong with a half-applied migration (it
/// read as a new, empty database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_is_not_ferroserves_is_refused_and_left_as_it_is() {
    use ferroserve::store::Store;
    use sqlx::Connection;
    let open = |url: String| async move {
        match Store::open(&url, Duration::from_secs(2), true).await {
            Ok(_) => panic!("{url}: opened"),
            Err(e) => e.to_string(),
        }
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, table) in [("other.db", "foo"), ("clash.db", "events")] {
        let path = dir.path().join(name);
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {table} (x)")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let before = std::fs::read(&path).unwrap();
        let e = open(format!("sqlite://{}", path.display())).await;
        assert!(e.contains("not ferroserve's metadata store"), "{e}");
        assert!(e.contains(table), "{e}");
        // `db status` says so too.
        let status = Store::open_for_status(
            &format!("sqlite://{}", path.display()),
            Duration::from_secs(2),
        )
        .await;
        let e = status.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("not ferroserve's metadata store"), "{e}");
        // Byte for byte as it was (the store's pool switched it to the write-ahead
        // log), and nothing beside it.
        assert_eq!(std::fs::read(&path).unwrap(), before, "{name} was changed");
        let beside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(name) && n != name)
            .collect();
        assert!(beside.is_empty(), "{beside:?}");
    }

    // A migration recorded as failed part way.
    let url = format!("sqlite://{}/dirty.db", dir.path().display());
    Store::open(&url, Duration::from_secs(2), true)
        .await
        .unwrap()
        .close()
        .await;
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET success = 0")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let store = Store::open_for_status(&url, Duration::from_secs(2))
        .await
        .unwrap();
    let e = store.status().await.unwrap_err().to_string();
    assert!(e.contains("half-applied"), "{e}");
    store.close().await;
    // Starting on it (or `db migrate`) says so at once: no other server's migration
    // can be in progress under the file lock (it waited 30 s in silence).
    let started = std::time::Instant::now();
    let e = open(url.clone()).await;
    assert!(e.contains("half-applied"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let pg = start_db(DbKind::Postgres).await;
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::query("CREATE TABLE events (x int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let e = open(pg.url()).await;
    assert!(e.contains("not ferroserve's metadata store"), "{e}");
    // `db status` says so too, and exits non-zero (it answered schema version 0
    // and no rows, exit 0).
    let e = status_refused(pg.url()).await;
    assert!(
        e.contains("not ferroserve's metadata store") && e.contains("events"),
        "{e}"
    );
    let history: (bool,) = sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!history.0, "a migration history was left behind");
    sqlx::query("ALTER TABLE events RENAME TO other_programs_table")
        .execute(&mut conn)
        .await
        .unwrap();
    Store::open(&pg.url(), Duration::from_secs(5), true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let maria = start_db(DbKind::MariaDb).await;
    let mut conn = sqlx::MySqlConnection::connect(&maria.url()).await.unwrap();
    sqlx::query("CREATE TABLE jobs (x int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let e = open(maria.url()).await;
    assert!(e.contains("not ferroserve's metadata store"), "{e}");
    assert!(e.contains("jobs"), "{e}");
    let e = status_refused(maria.url()).await;
    assert!(
        e.contains("not ferroserve's metadata store") && e.contains("jobs"),
        "{e}"
    );
    sqlx::query("RENAME TABLE jobs TO other_programs_table")
        .execute(&mut conn)
        .await
        .unwrap();
    Store::open(&maria.url(), Duration::from_secs(5), true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `ferroserve db status` on `url`, expecting it to fail (exit non-zero); what it
/// printed on stderr. The store's own status says the same.
async fn status_refused(url: String) -> String {
    use ferroserve::store::Store;
    let store = Store::open_for_status(&url, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let e = match store.status().await {
        Ok(status) => panic!("{url}: {status:?}"),
        Err(e) => e.to_string(),
    };
    store.close().await;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
            .args(["db", "status", "--database-url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("not ferroserve's metadata store"),
        "{e}: {stderr}"
    );
    e
}

/// Runs the server expecting it to refuse to start; answers its error.
async fn start_fails(settings: Settings) -> String {
    let rest = ferroserve::server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let grpc = ferroserve::server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let listeners = ferroserve::server::Listeners {
        rest,
        grpc: Some(grpc),
    };
    let run = ferroserve::server::run(settings, listeners, std::future::pending());
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(())) => panic!("the server started and stopped"),
        Err(_) => panic!("the server started"),
    }
}

/// An explicit URL nobody answers at: the server exits non-zero, naming the host
/// but never the password.
#[test]
fn an_unreachable_database_stops_the_start() {
    let repo = repo();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again: nothing listens there
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["serve", "--model-repository"])
        .arg(repo.path())
        .args(["--rest-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .args(["--database-timeout-secs", "2"])
        .arg("--database-url")
        .arg(format!(
            "postgres://ferro:topsecret@127.0.0.1:{port}/models"
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("topsecret"), "{stderr}");
    // Why, not the pool's "timed out waiting for a connection".
    assert!(stderr.contains("refused"), "{stderr}");
}

/// `ferroserve db status` reports what it finds; `db migrate` brings the schema up.
#[test]
fn db_status_and_migrate() {
    let repo = repo();
    let db = |command: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
            .args(["db", command, "--model-repository"])
            .arg(repo.path())
            .output()
            .unwrap()
    };
    let json = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    // Status creates nothing: without a database it says so.
    let out = db("status");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!repo.path().join(".ferroserve/ferroserve.db").exists());
    let after = json(db("migrate"));
    assert_eq!(
        after["schema_version"], after["schema_version_known"],
        "{after}"
    );
    assert_eq!(after["rows"]["events"], 0, "{after}");
    assert!(repo.path().join(".ferroserve/ferroserve.db").is_file());
    let status = json(db("status"));
    assert_eq!(status["kind"], "sqlite");
    assert_eq!(
        status["schema_version"], after["schema_version"],
        "{status}"
    );
}

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

/// A deploy of a model the server does not have is a 404 that records nothing:
/// no settings row is left for the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_deploy_leaves_no_row() {
    let repo = repo();
    let server = TestServer::start_with(store_settings(repo.path(), None)).await;
    let (code, body) = server
        .post_json("/deploy", &json!({"model_id": "nope"}))
        .await;
    assert_eq!(code, 404, "{body}");
    server.stop().await;
    assert_eq!(common::stored_settings_rows(repo.path(), "nope").await, 0);
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
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(dropped(&metrics) >= 400, "{}", dropped(&metrics));
    drop(db);
}

/// The settings in force written back after a refused change, while the database
/// refuses writes (another connection holds SQLite's write lock past the timeout):
/// the write-back answers an error, the model stays unsettled, and the write is
/// tried until it lands, so the row ends saying what is in force (a restart would
/// otherwise apply the refused change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_back_the_database_refuses_is_tried_until_it_lands() {
    use ferroserve::store::{ModelSettings, Store};
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/s.db", dir.path().display());
    let store = Store::open(&url, Duration::from_secs(1), true)
        .await
        .unwrap();
    let before = ModelSettings {
        model: "m".into(),
        stopped: false,
        deployment: None,
    };
    let refused = ModelSettings {
        stopped: true,
        ..before.clone()
    };
    store.save_model_settings(&refused, &before).await.unwrap();
    let stored_stopped = || async {
        store
            .model_settings()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.model == "m")
            .map(|s| s.stopped)
    };
    assert_eq!(stored_stopped().await, Some(true));

    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    assert!(store.write_back_model_settings(&before).await.is_err());
    let e = store
        .save_model_settings(&refused, &before)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not settled"), "{e}");
    // Held past SQLite's busy timeout (the database timeout), so that the first
    // attempt is refused outright (SQLITE_BUSY), not just late.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    while stored_stopped().await != Some(false) {
        assert!(Instant::now() < deadline, "the refused stop stays recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then the model settles: its settings can change again.
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Err(e) = store.save_model_settings(&before, &before).await {
        assert!(Instant::now() < deadline, "still unsettled: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.close().await;
}

/// A database a newer ferroserve migrated (a migration this binary lacks), or one
/// whose migration was changed after it was applied, is refused at once saying so:
/// it was retried for 30 s (the wait other replicas' migrations get) whatever
/// `--database-timeout-secs` said, with sqlx's words only. (A half-applied one is
/// still waited for: on MySQL, which cannot roll DDL back, another replica's
/// migration in progress looks so.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_error_no_wait_mends_is_reported_at_once() {
    use ferroserve::store::Store;
    use sqlx::Connection;
    for (change, words) in [
        (
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (999999, 'from the future', 1, x'00', 0)",
            "newer ferroserve migrated it",
        ),
        (
            "UPDATE _sqlx_migrations SET checksum = x'00' \
             WHERE version = (SELECT MIN(version) FROM _sqlx_migrations)",
            "changed after it was applied",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/m.db", dir.path().display());
        let store = Store::open(&url, Duration::from_secs(2), true)
            .await
            .unwrap();
        store.close().await;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(change))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let started = Instant::now();
        let e = match Store::open(&url, Duration::from_secs(2), true).await {
            Ok(_) => panic!("{change}: opened"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(words), "{change}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{change}: {:?}",
            started.elapsed()
        );
    }
}
