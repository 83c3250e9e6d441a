//! The metadata store: the only module that talks to the database (issue 12).
//!
//! One [`Store`] owns every table through `sqlx` with runtime queries (no database
//! at build time): the audit trail (`events`), what management decided per model
//! (`model_settings`: stopped, deployment), the prediction log (`predictions`), and
//! the tables the jobs and isolated-deployments features use (`jobs`, `workers`).
//! SQLite is the default (bundled: nothing to install); PostgreSQL and MySQL/MariaDB
//! work the same way. Migrations are embedded per dialect (`migrations/<dialect>/`)
//! and applied at start under a lock, so replicas starting together never race:
//! sqlx takes an advisory lock on PostgreSQL and MySQL, and a lock file beside the
//! database serialises processes sharing one SQLite file.
//!
//! Invariants:
//! * the store is never on the prediction path: nothing a prediction does waits on
//!   it. Audit events and prediction-log rows go through bounded buffers to
//!   background writers; a full buffer drops and counts, never blocks;
//! * a write management depends on (a stop, a deployment) is made before the change
//!   it records, bounded by `Settings::database_timeout`, so with the database down
//!   the call answers 503 and changes nothing, and one the database applies after
//!   the call gave up on it is undone (`late`, `settings`); the pool reconnects by
//!   itself;
//! * a database that cannot be read at start is an error, never repaired: a file
//!   that is not SQLite is reported and left as it is.

mod audit;
mod imports;
mod jobs;
mod late;
// Shared with `crate::jobs::io::sql`, which reads and writes the user's databases
// (sources and sinks of jobs) with the same connection code and `on_pool!`.
pub(crate) mod pool;
pub mod prediction_pages;
pub mod predictions;
mod replica;
mod settings;
mod workers;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

pub use audit::{Event, EventKind, HistoryPage};
pub use jobs::{ClaimedJob, JobQuery, JobRow};
use pool::{on_pool, DbKind, Pool};
pub use predictions::{LoggedPrediction, PredictionQuery};
pub use replica::ReplicaName;
pub use settings::ModelSettings;
pub use workers::WorkerRow;

/// Why the store could not do something.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached now (down, refusing, too slow).
    #[error("{0}")]
    Unavailable(String),
    /// The database is there but not usable: not a database, a failed migration.
    #[error("{0}")]
    Broken(String),
    /// The URL or a request is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// Counts and versions for `ferroserve db status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DbStatus {
    /// `sqlite`, `postgres` or `mysql`.
    pub kind: &'static str,
    /// The URL without its password.
    pub url: String,
    /// The highest migration applied, and the highest this binary knows.
    pub schema_version: i64,
    pub schema_version_known: i64,
    /// Rows per table.
    pub rows: BTreeMap<String, i64>,
}

/// How many of a model's latest events status shows, kept in memory so status never
/// waits on the database.
const RECENT_EVENTS: usize = 10;
/// Audit events waiting for the writer; past this they are dropped and counted.
const EVENT_BUFFER: usize = 10_000;

pub struct Store {
    pool: Pool,
    kind: DbKind,
    /// The URL without its password, for messages.
    url: String,
    timeout: Duration,
    /// Names the replica in audit rows (host name and pid).
    replica: String,
    /// Names this process in the jobs it claims (see [`ReplicaName`]).
    claimant: ReplicaName,
    /// Whether the last attempt to use the database worked; set by every write, so a
    /// management call can refuse quickly while the writer keeps retrying.
    up: AtomicBool,
    events: tokio::sync::mpsc::Sender<Event>,
    /// The writer's receiving end until [`Store::start_writers`] takes it.
    events_rx: Mutex<Option<tokio::sync::mpsc::Receiver<Event>>>,
    /// The last few events per model, for status (see [`RECENT_EVENTS`]).
    recent: Mutex<HashMap<String, VecDeque<Event>>>,
    /// Models whose last settings write has not settled (see `settings`).
    unsettled: settings::Unsettled,
    /// Late writes and their undoes still running ([`Store::settle_pending`]).
    settling: tokio_util::task::TaskTracker,
    pub(crate) predictions: predictions::PredictionLog,
}

/// The migrations of each dialect, embedded in the binary.
static MIGRATE_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static MIGRATE_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static MIGRATE_MYSQL: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");

/// Every table ferroserve's migrations create.
const TABLES: [&str; 5] = ["events", "model_settings", "jobs", "workers", "predictions"];

/// Whether an error says the database file is damaged (SQLite's words).
fn is_corrupt(e: &StoreError) -> bool {
    let text = e.to_string();
    text.contains("malformed") || text.contains("file is not a database")
}

impl Store {
    /// Connects to `url`. With `migrate`, applies the migrations this binary has
    /// (under a lock); without, checks that the schema is current. A database that
    /// cannot be reached within `timeout`, or cannot be read, is an error whose
    /// message names the host, never a password.
    pub async fn open(url: &str, timeout: Duration, migrate: bool) -> Result<Store, StoreError> {
        let (pool, kind, shown) =
            pool::connect(url, timeout, pool::Use::Store { create: true }).await?;
        let store = Store::with_pool(pool, kind, shown, timeout);
        if migrate {
            store.migrate_while_others_may().await?;
        }
        let (applied, known) = store.schema_versions().await?;
        if applied < known {
            return Err(StoreError::Broken(format!(
                "the database at {} has schema version {applied}, this server needs {known}: \
                 run `ferroserve db migrate`",
                store.url
            )));
        }
        if applied > known {
            return Err(StoreError::Broken(format!(
                "the database at {} has schema version {applied}, newer than this server \
                 knows ({known}): a newer ferroserve migrated it",
                store.url
            )));
        }
        store.load_recent_events().await?;
        Ok(store)
    }

    /// Connects without migrating or checking the schema version, for
    /// `ferroserve db status`: it reports what it finds.
    pub async fn open_for_status(url: &str, timeout: Duration) -> Result<Store, StoreError> {
        let (pool, kind, shown) =
            pool::connect(url, timeout, pool::Use::Store { create: false }).await?;
        Ok(Store::with_pool(pool, kind, shown, timeout))
    }

    fn with_pool(pool: Pool, kind: DbKind, url: String, timeout: Duration) -> Store {
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_BUFFER);
        let host = hostname().unwrap_or_else(|| "localhost".into());
        let claimant = ReplicaName::this_process(&host);
        Store {
            pool,
            kind,
            url,
            timeout,
            replica: format!("{host}:{}", std::process::id()),
            claimant,
            up: AtomicBool::new(true),
            events: tx,
            events_rx: Mutex::new(Some(rx)),
            recent: Mutex::new(HashMap::new()),
            unsettled: Default::default(),
            settling: tokio_util::task::TaskTracker::new(),
            predictions: predictions::PredictionLog::new(),
        }
    }

    /// `sqlite`, `postgres` or `mysql`.
    pub fn kind(&self) -> &'static str {
        self.kind.as_str()
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the last use of the database worked.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.kind {
            DbKind::Sqlite => &MIGRATE_SQLITE,
            DbKind::Postgres => &MIGRATE_POSTGRES,
            DbKind::MySql => &MIGRATE_MYSQL,
        }
    }

    /// Applies the embedded migrations not yet applied. PostgreSQL and MySQL lock
    /// the database for this (sqlx's advisory lock); SQLite files are locked with a
    /// lock file beside them, so replicas starting together take turns.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_once().await.map_err(|(e, _)| e)
    }

    /// [`Store::migrate`], telling apart (`true` beside the error) what another
    /// replica's migration in progress may explain from what no wait mends: a
    /// migration applied that this binary lacks (a newer ferroserve migrated the
    /// database), one changed since it was applied.
    async fn migrate_once(&self) -> Result<(), (StoreError, bool)> {
        use sqlx::migrate::MigrateError;
        let migrator = self.migrator();
        let _file_lock = match &self.pool {
            Pool::Sqlite(_) => Some(self.lock_sqlite_file().await.map_err(|e| (e, true))?),
            _ => None,
        };
        self.check_ours().await.map_err(|e| (e, false))?;
        let result = on_pool!(&self.pool, p => migrator.run(p).await);
        result.map_err(|e| {
            let url = &self.url;
            let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
            let (message, may_pass) = match &e {
                MigrateError::VersionMissing(v) => (
                    format!(
                        "the database at {url} has migration {v} applied, which this \
                         ferroserve does not have (it knows up to {known}): a newer \
                         ferroserve migrated it; run that version, or restore a backup \
                         taken before"
                    ),
                    false,
                ),
                MigrateError::VersionMismatch(v) => (
                    format!(
                        "the database at {url} has migration {v} applied in another form \
                         than this ferroserve's (its checksum differs): it was changed after \
                         it was applied"
                    ),
                    false,
                ),
                // Also what another replica's migration in progress looks like on
                // MySQL (DDL is not transactional there): waited for, as before.
                // SQLite's migrations run under the file lock this one holds: no
                // other server's is in progress, so it failed part way: said at once.
                MigrateError::Dirty(v) if matches!(self.pool, Pool::Sqlite(_)) => (
                    format!(
                        "the database at {url} has migration {v} half-applied: a migration \
                         failed part way; repair the database or restore a backup"
                    ),
                    false,
                ),
                MigrateError::Dirty(v) => (
                    format!(
                        "the database at {url} has migration {v} half-applied (another \
                         server's migration still running, or one that failed part way: \
                         then repair or restore it)"
                    ),
                    true,
                ),
                other => (
                    format!("cannot apply the database migrations at {url}: {other}"),
                    true,
                ),
            };
            (StoreError::Broken(message), may_pass)
        })
    }

    /// [`Store::migrate`] for a server starting beside others (replicas): while
    /// another one's migration is in progress this one may fail or see the schema
    /// behind, so it tries again for up to 30 s.
    async fn migrate_while_others_may(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut told = false;
        loop {
            let result = match self.migrate_once().await {
                Ok(()) => match self.schema_versions().await {
                    Ok((applied, known)) if applied < known => Err(StoreError::Broken(format!(
                        "the database at {} stays at schema version {applied} of {known}",
                        self.url
                    ))),
                    other => other.map(|_| ()),
                },
                // No replica's migration mends it: said at once.
                Err((e, false)) => return Err(e),
                Err((e, true)) => Err(e),
            };
            match result {
                // A corrupt file stays corrupt: no other replica's migration mends it.
                Err(e) if is_corrupt(&e) => {
                    return Err(StoreError::Broken(format!(
                        "{e}; the database is corrupt and was left as it is"
                    )))
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    // Told once, so that a wait of up to 30 s is not a silent one.
                    if !told {
                        told = true;
                        tracing::warn!(
                            "migration not done yet ({e}); trying again for up to 30 s, \
                             in case another server's migration is in progress"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                done => return done,
            }
        }
    }

    /// Closes the connections: SQLite folds its write-ahead log into the database
    /// file, so the file alone holds everything.
    pub async fn close(&self) {
        on_pool!(&self.pool, p => p.close().await);
    }

    async fn lock_sqlite_file(&self) -> Result<std::fs::File, StoreError> {
        let Some(path) = pool::sqlite_path(&self.url) else {
            return Err(StoreError::Invalid(format!("no file in {}", self.url)));
        };
        let lock_path = PathBuf::from(format!("{}.migrate-lock", path.display()));
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot open {}: {e}", lock_path.display()))
                })?;
            file.lock().map_err(|e| {
                StoreError::Unavailable(format!("cannot lock {}: {e}", lock_path.display()))
            })?;
            Ok(file)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the migration lock failed: {e}")))?
    }

    /// The highest migration applied (0: none) and the highest this binary has.
    async fn schema_versions(&self) -> Result<(i64, i64), StoreError> {
        let known = self.migrator().iter().map(|m| m.version).max().unwrap_or(0);
        let sql = match self.kind {
            DbKind::Sqlite => "SELECT MAX(version) AS v FROM _sqlx_migrations WHERE success = 1",
            _ => "SELECT MAX(version) AS v FROM _sqlx_migrations WHERE success = TRUE",
        };
        let applied = self.history_value(sql, "read the schema version").await?;
        Ok((applied.unwrap_or(0), known))
    }

    /// The one value (`v`) `sql` reads from the migration history; `None` when
    /// it finds none, or there is no history yet (no migrations table).
    async fn history_value(&self, sql: &str, doing: &str) -> Result<Option<i64>, StoreError> {
        let result: Result<Option<i64>, sqlx::Error> = on_pool!(&self.pool, p => {
            match sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(p).await {
                Ok(row) => row.try_get::<Option<i64>, _>("v"),
                Err(e) => Err(e),
            }
        });
        match result {
            Ok(v) => Ok(v),
            Err(sqlx::Error::Database(e))
                if e.message().contains("_sqlx_migrations")
                    || e.message().contains("no such table")
                    || e.message().contains("doesn't exist")
                    || e.message().contains("does not exist") =>
            {
                Ok(None)
            }
            Err(e) => Err(self.unavailable(doing, e)),
        }
    }

    /// The tables of the current schema of a PostgreSQL or MySQL database, the
    /// migration history aside.
    async fn tables(&self) -> Result<Vec<String>, StoreError> {
        let sql = match self.kind {
            DbKind::Sqlite => unreachable!("SQLite files are checked by the pool"),
            DbKind::Postgres => {
                "SELECT table_name::text AS name FROM information_schema.tables \
                 WHERE table_schema = current_schema()"
            }
            DbKind::MySql => {
                "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables \
                 WHERE table_schema = DATABASE()"
            }
        };
        let names: Result<Vec<String>, sqlx::Error> = on_pool!(&self.pool, p => {
            match sqlx::query(sql).fetch_all(p).await {
                Ok(rows) => rows.iter().map(|r| r.try_get::<String, _>("name")).collect(),
                Err(e) => Err(e),
            }
        });
        let mut names = names.map_err(|e| self.unavailable("list its tables", e))?;
        names.retain(|n| n != "_sqlx_migrations");
        names.sort();
        Ok(names)
    }

    /// Refuses, before any migration writes to it, a shared PostgreSQL or MySQL
    /// database holding tables named as ferroserve's but no migration history:
    /// migrating it would fail half way on the clash and leave a history behind.
    /// (Other programs' tables beside ferroserve's are fine there; a SQLite file
    /// holding any table but no history is refused before the pool opens it,
    /// `pool::refuse_foreign_sqlite`.)
    async fn check_ours(&self) -> Result<(), StoreError> {
        if self.kind == DbKind::Sqlite {
            return Ok(());
        }
        let (applied, _) = self.schema_versions().await?;
        if applied > 0 || self.failed_migration().await?.is_some() {
            return Ok(());
        }
        let clash: Vec<String> = self
            .tables()
            .await?
            .into_iter()
            .filter(|t| TABLES.contains(&t.as_str()))
            .collect();
        match clash.is_empty() {
            true => Ok(()),
            false => Err(pool::not_ours(&self.url, clash)),
        }
    }

    /// A migration recorded as failed part way (`success` false), if any.
    async fn failed_migration(&self) -> Result<Option<i64>, StoreError> {
        let sql = match self.kind {
            DbKind::Sqlite => "SELECT MIN(version) AS v FROM _sqlx_migrations WHERE success = 0",
            _ => "SELECT MIN(version) AS v FROM _sqlx_migrations WHERE success = FALSE",
        };
        self.history_value(sql, "read the migration history").await
    }

    /// Schema version, database kind and rows per table. A database that would not
    /// serve is an error saying why: a migration half-applied, a database that is
    /// not ferroserve's (as `serve` and `db migrate` refuse it; a SQLite file of
    /// another program's is refused by the pool), or (SQLite) a file whose pages
    /// fail SQLite's `quick_check`; the database is left as it is.
    pub async fn status(&self) -> Result<DbStatus, StoreError> {
        if let Some(v) = self.failed_migration().await? {
            return Err(StoreError::Broken(format!(
                "the database at {} has migration {v} half-applied (a migration that \
                 failed part way): repair it or restore a backup",
                self.url
            )));
        }
        self.check_ours().await?;
        if let Pool::Sqlite(p) = &self.pool {
            let check: Result<Vec<String>, sqlx::Error> =
                match sqlx::query("PRAGMA quick_check(5)").fetch_all(p).await {
                    Ok(rows) => rows.iter().map(|r| r.try_get::<String, _>(0)).collect(),
                    Err(e) => Err(e),
                };
            let check = check.map_err(|e| self.unavailable("check the file", e))?;
            if check != ["ok"] {
                return Err(StoreError::Broken(format!(
                    "the database at {} is corrupt (SQLite's quick_check: {}); it was left \
                     as it is",
                    self.url,
                    check.join("; ")
                )));
            }
        }
        let (applied, known) = self.schema_versions().await?;
        let mut rows = BTreeMap::new();
        if applied > 0 {
            for table in TABLES {
                let sql = format!("SELECT COUNT(*) AS n FROM {table}");
                let n: Result<i64, sqlx::Error> = on_pool!(&self.pool, p => {
                    match sqlx::query(sqlx::AssertSqlSafe(&*sql)).fetch_one(p).await {
                        Ok(row) => row.try_get::<i64, _>("n"),
                        Err(e) => Err(e),
                    }
                });
                rows.insert(
                    table.to_string(),
                    n.map_err(|e| self.unavailable("count rows", e))?,
                );
            }
        }
        Ok(DbStatus {
            kind: self.kind(),
            url: self.url.clone(),
            schema_version: applied,
            schema_version_known: known,
            rows,
        })
    }

    /// Turns a database error into [`StoreError::Unavailable`] with what was being
    /// done, and notes that the database is down.
    fn unavailable(&self, doing: &str, e: sqlx::Error) -> StoreError {
        self.up.store(false, Ordering::Relaxed);
        crate::metrics::record_store_error();
        StoreError::Unavailable(format!(
            "the metadata store ({} at {}) could not {doing}: {}",
            self.kind(),
            self.url,
            pool::describe_error(&e)
        ))
    }

    fn worked(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(url = %self.url, "the metadata store is reachable again");
        }
    }

    /// Rewrites `?` placeholders for PostgreSQL (`$1`, `$2`, …).
    fn sql<'a>(&self, sql: &'a str) -> std::borrow::Cow<'a, str> {
        pool::placeholders(self.kind, sql)
    }

    /// Runs a write management depends on, bounded by the database timeout.
    async fn must_write<T>(
        &self,
        doing: &str,
        write: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(v)) => {
                self.worked();
                Ok(v)
            }
            Ok(Err(e)) => Err(self.unavailable(doing, e)),
            Err(_) => Err(self.timed_out(doing)),
        }
    }

    /// The error of a write that did not answer within the database timeout.
    fn timed_out(&self, doing: &str) -> StoreError {
        self.up.store(false, Ordering::Relaxed);
        crate::metrics::record_store_error();
        StoreError::Unavailable(format!(
            "the metadata store ({} at {}) did not answer within {:?} to {doing}",
            self.kind(),
            self.url,
            self.timeout
        ))
    }

    /// Records an event and waits until the database has it (or its timeout):
    /// for a step whose record must survive this process being killed right after
    /// (a delete, whose files are already gone). When the database does not take
    /// it now, it goes to the buffered writer ([`Store::record`]), which retries.
    pub async fn record_now(
        &self,
        kind: EventKind,
        model: &str,
        version: Option<u64>,
        detail: serde_json::Value,
        client: Option<String>,
        actor: Option<String>,
    ) {
        let mut event = self.new_event(kind, model, version, detail, client, actor);
        let written = self
            .must_write(
                "record the event",
                self.insert_events(std::slice::from_ref(&event)),
            )
            .await;
        match written.map(|ids| ids.first().copied()) {
            Ok(Some(id)) => {
                event.id = id;
                self.remember_events(&[event]);
            }
            Ok(None) | Err(_) => self.record_event(event),
        }
    }

    /// Checks that the database answers now (before a management call whose record
    /// must not be lost, such as an upload).
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        self.must_write("answer", async {
            on_pool!(&self.pool, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
        })
        .await
    }

    /// Starts the background writers (audit events, prediction log) on the current
    /// runtime; they stop, after writing what they hold (for at most `drain`), when
    /// `stop` is cancelled. The returned handles end when they have.
    pub fn start_writers(
        self: &Arc<Self>,
        stop: CancellationToken,
        drain: Duration,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = Vec::new();
        if let Some(rx) = self
            .events_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            handles.push(tokio::spawn(audit::write_events(
                self.clone(),
                rx,
                stop.clone(),
                drain,
            )));
        }
        if let Some(h) = predictions::start_writer(self.clone(), stop, drain) {
            handles.push(h);
        }
        handles
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// This machine's host name, as the kernel has it.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}
