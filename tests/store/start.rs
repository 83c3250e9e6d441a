//! Starting on a store: migrations run once among concurrent starts; a corrupt
//! file, a database that is not ferroserve's or an unreachable URL stops the start;
//! `ferroserve db status` and `db migrate`.

use super::*;

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

/// A command's error is a message, not a debugger's dump: with `RUST_BACKTRACE=1`
/// set (as many shells of developers have it), `ferroserve db status` on a file
/// that is not there printed the error then 40 frames of backtrace. It reads as
/// the client commands' errors do (`error: `, causes on the same line).
#[test]
fn errors_print_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("none.db").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args(["db", "status", "--database-url", &url])
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: there is no database at "),
        "{stderr}"
    );
    assert!(!stderr.contains("acktrace"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
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
