//! The database killed or locked while clients predict: no failed prediction,
//! management writes refused with 503, late writes written back, and recovery.

use super::*;

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

/// An audit event the database refuses as such (here a trigger refuses one model's
/// events; in the field, a value too long for its column or past MariaDB's
/// `max_allowed_packet`): it is dropped, and the events recorded after it are
/// written. The writer used to retry its whole batch for good, so that no event
/// recorded after it ever reached the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_database_refuses_does_not_hold_the_events_after_it() {
    use ferroserve::store::{EventKind, Store};
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/s.db", dir.path().display());
    let store = Arc::new(
        Store::open(&url, Duration::from_secs(1), true)
            .await
            .unwrap(),
    );
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_events BEFORE INSERT ON events WHEN NEW.model = 'refused' \
         BEGIN SELECT RAISE(ABORT, 'this event is refused'); END",
    )
    .execute(&mut other)
    .await
    .unwrap();
    other.close().await.unwrap();

    let stop = tokio_util::sync::CancellationToken::new();
    let writers = store.start_writers(stop.clone(), Duration::from_secs(5));
    // In one batch: the refused event between two others.
    for model in ["before", "refused", "after"] {
        store.record(EventKind::Reload, model, None, json!({}), None, None);
    }
    let written = |model: &'static str| {
        let store = store.clone();
        async move { store.history(model, None, 10).await.unwrap().events.len() }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while written("after").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the event after the refused one was never written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(written("before").await, 1);
    assert_eq!(written("refused").await, 0);
    // And the writer goes on with later events.
    store.record(EventKind::Stop, "later", None, json!({}), None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while written("later").await == 0 {
        assert!(Instant::now() < deadline, "a later event was never written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    for w in writers {
        w.await.unwrap();
    }
    store.close().await;
}
