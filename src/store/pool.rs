//! Connecting to one of the three databases, and the little that differs between
//! them (placeholders, URLs). Queries are written once with `?` placeholders and run
//! on whichever pool is open through [`on_pool!`].

use std::borrow::Cow;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
    MySql,
}

impl DbKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DbKind::Sqlite => "sqlite",
            DbKind::Postgres => "postgres",
            DbKind::MySql => "mysql",
        }
    }
}

/// An open pool of one of the three kinds (a clone shares the connections).
#[derive(Clone)]
pub enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
}

/// Runs `$body` with `$p` bound to whichever pool is open: the body is compiled
/// once per database, so it may use each driver's own types.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::store::pool::Pool::Sqlite($p) => $body,
            $crate::store::pool::Pool::Postgres($p) => $body,
            $crate::store::pool::Pool::MySql($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Most connections one server holds open to PostgreSQL or MySQL.
const MAX_CONNECTIONS: u32 = 8;

/// The kind a URL names: `sqlite:`, `postgres:`/`postgresql:`, `mysql:`/`mariadb:`.
fn kind_of(url: &str) -> Option<DbKind> {
    let scheme = url.split_once(':')?.0.to_ascii_lowercase();
    match scheme.as_str() {
        "sqlite" => Some(DbKind::Sqlite),
        "postgres" | "postgresql" => Some(DbKind::Postgres),
        "mysql" | "mariadb" => Some(DbKind::MySql),
        _ => None,
    }
}

/// Query parameters that hold a password: the PostgreSQL and MySQL drivers take
/// `password` there too, PostgreSQL `sslpassword` besides.
fn is_secret_parameter(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

/// Whether `text` is a URL that holds a password (see [`redact`]).
pub fn has_secret(text: &str) -> bool {
    match url::Url::parse(text) {
        Ok(u) if !misread(&u, text) => {
            u.password().is_some() || u.query_pairs().any(|(k, _)| is_secret_parameter(&k))
        }
        // A URL the parser reads otherwise (or not at all) may still be one a
        // driver takes, password included.
        Ok(_) | Err(_) => unparsed_has_secret(text),
    }
}

/// Whether the parser may have read a user part as something else: an `@` it did
/// not take as the end of a user part (`postgres:u:pw@h/db`, `postgres:/u:pw@h`,
/// `postgres://u:1234?x@h/db`, whose "port" ends the host early).
fn misread(parsed: &url::Url, text: &str) -> bool {
    text.contains('@')
        && (parsed.cannot_be_a_base()
            || parsed.host_str().is_none()
            || (parsed.username().is_empty() && parsed.password().is_none())
            || parsed.path().contains('@')
            || parsed.query().is_some_and(|q| q.contains('@'))
            || parsed.fragment().is_some_and(|f| f.contains('@')))
}

/// Whether text that is no URL the parser takes looks like one that carries a
/// password: a user part, or a query.
fn unparsed_has_secret(text: &str) -> bool {
    text.split_once(':').is_some_and(|(scheme, rest)| {
        is_scheme(scheme) && (rest.contains('@') || rest.contains('?'))
    })
}

fn is_scheme(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// What [`redact`] shows of text it cannot parse as a URL with a host: the scheme,
/// the host part after any user part, no query.
fn redact_unparsed(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once(':').filter(|(s, _)| is_scheme(s)) else {
        return "***".to_string();
    };
    let rest = rest.trim_start_matches('/');
    // The user part first (a password may hold `?` or `/`), then the query.
    let (user, rest) = match rest.rsplit_once('@') {
        Some((_, host)) => ("***@", host),
        None => ("", rest),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, _)) => (rest, "?***"),
        None => (rest, ""),
    };
    format!("{scheme}://{user}{rest}{query}")
}

/// `url` without its password (in its user part, or a `password` or `sslpassword`
/// query parameter), for messages and status.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        // `postgres:user:pw@host/db` parses, as a path: no password is seen in it.
        Ok(parsed) if misread(&parsed, url) => redact_unparsed(url),
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            if parsed.query_pairs().any(|(k, _)| is_secret_parameter(&k)) {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_parameter(&k) {
                            "***".to_string()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        // Not a URL the parser takes (a port out of range, say): the scheme and
        // the host alone.
        Err(_) => redact_unparsed(url),
    }
}

/// The file of a `sqlite:` URL.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// The server's store: a SQLite file is created when missing only with
    /// `create`, and switched to the write-ahead log.
    Store { create: bool },
    /// A job's data source: read only. A SQLite file is opened read-only with no
    /// other database attachable (a query could otherwise `ATTACH` any file the
    /// server can read, its store included) and no `PRAGMA` (some change settings
    /// of the whole process); the file's journal mode is left as it is. PostgreSQL
    /// and MySQL queries run in a read-only transaction (`jobs::io::sql`).
    ReadData,
    /// A job's sink: a SQLite file is created when missing; its journal mode is
    /// left as it is.
    WriteData,
}

/// Refuses, before anything writes to it (the store's pool switches a file to the
/// write-ahead log, which rewrites its header), a SQLite file that holds tables but
/// no ferroserve migration history: another program's database, given by mistake.
/// Read through a read-only connection; a file that cannot be read so is left to
/// the pool, whose errors say what is wrong (corrupt, not SQLite).
async fn refuse_foreign_sqlite(
    path: &std::path::Path,
    file: &str,
    timeout: Duration,
) -> Result<(), StoreError> {
    use sqlx::{Connection, Row};
    if !path.metadata().is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(timeout);
    let Ok(mut conn) = sqlx::SqliteConnection::connect_with(&options).await else {
        return Ok(());
    };
    let tables = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut conn)
    .await;
    let _ = conn.close().await;
    let Ok(rows) = tables else {
        return Ok(());
    };
    let mut names: Vec<String> = rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>("name").ok())
        .collect();
    if names.is_empty() || names.iter().any(|n| n == "_sqlx_migrations") {
        return Ok(());
    }
    names.sort();
    Err(not_ours(file, names))
}

/// The refusal of a database that is not ferroserve's (`shown`: its URL or file),
/// naming up to five of the `tables` that say so.
pub(super) fn not_ours(shown: &str, mut tables: Vec<String>) -> StoreError {
    let more = if tables.len() > 5 { ", …" } else { "" };
    tables.truncate(5);
    StoreError::Broken(format!(
        "the database at {shown} is not ferroserve's metadata store: it has no ferroserve \
         migration applied but holds tables ({}{more}); nothing was changed. Give an \
         empty database or a new file (--database-url)",
        tables.join(", ")
    ))
}

/// Opens a pool on `url` for `purpose`, waiting at most `timeout` for the first
/// connection. Answers the pool, its kind, and the URL without its password.
pub async fn connect(
    url: &str,
    timeout: Duration,
    purpose: Use,
) -> Result<(Pool, DbKind, String), StoreError> {
    connect_as(url, None, timeout, purpose).await
}

/// [`connect`], its messages calling the database `name` when one is given (a job's
/// URL as its client gave it, password masked) in place of the URL connected to
/// or a SQLite file's path: a client never sees where the server keeps its files.
pub async fn connect_as(
    url: &str,
    name: Option<&str>,
    timeout: Duration,
    purpose: Use,
) -> Result<(Pool, DbKind, String), StoreError> {
    let shown = name.map_or_else(|| redact(url), str::to_string);
    let kind = kind_of(url).ok_or_else(|| {
        StoreError::Invalid(format!(
            "database URL {shown:?}: use sqlite://FILE, postgres://… or mysql://…"
        ))
    })?;
    let unreachable = |e: sqlx::Error| {
        StoreError::Unavailable(format!(
            "cannot connect to the {} database at {shown}: {}",
            kind.as_str(),
            describe_error(&e)
        ))
    };
    let invalid = |e: sqlx::Error| {
        StoreError::Invalid(format!("database URL {shown}: {}", describe_error(&e)))
    };
    let pool = match kind {
        DbKind::Sqlite => {
            let path = sqlite_path(url).ok_or_else(|| {
                StoreError::Invalid(format!("database URL {shown:?} names no file"))
            })?;
            // What messages call the file.
            let file = name.map_or_else(|| path.display().to_string(), str::to_string);
            check_sqlite_file(&path, &file, purpose)?;
            match purpose {
                Use::Store { create: false } if !path.exists() => {
                    return Err(StoreError::Invalid(format!(
                        "there is no database at {} yet: the server creates it at start, \
                         or run `ferroserve db migrate`",
                        path.display()
                    )));
                }
                Use::ReadData if !path.exists() => {
                    return Err(StoreError::Invalid(format!(
                        "there is no SQLite database {file}"
                    )));
                }
                _ => {}
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if purpose != Use::ReadData {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Unavailable(match name {
                            Some(name) => format!("cannot create the directory of {name}: {e}"),
                            None => format!("cannot create {}: {e}", dir.display()),
                        })
                    })?;
                }
            }
            if let Use::Store { .. } = purpose {
                refuse_foreign_sqlite(&path, &file, timeout).await?;
            }
            let mut options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(purpose != Use::ReadData)
                .read_only(purpose == Use::ReadData)
                // Replicas sharing a file wait for each other's writes.
                .busy_timeout(timeout);
            if let Use::Store { .. } = purpose {
                options = options
                    .journal_mode(SqliteJournalMode::Wal)
                    // With the write-ahead log, NORMAL syncs at checkpoints, not at
                    // every commit: the file cannot be corrupted by a crash, and a
                    // power loss can lose only the last commits. A sync per commit
                    // cost the prediction log most of its time.
                    .synchronous(SqliteSynchronous::Normal);
            }
            // Switching a new file to WAL takes a lock that SQLite's busy handler
            // does not wait for: a server starting beside another tries again.
            let deadline = tokio::time::Instant::now() + timeout;
            let pool = loop {
                let pool_options = SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(timeout);
                let pool_options = if purpose == Use::ReadData {
                    pool_options.after_connect(|conn, _| Box::pin(forbid_attach(conn)))
                } else {
                    pool_options
                };
                match pool_options.connect_with(options.clone()).await {
                    Ok(pool) => break pool,
                    Err(e)
                        if describe_error(&e).contains("locked")
                            && tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(sqlite_error(&file, e)),
                }
            };
            Pool::Sqlite(pool)
        }
        DbKind::Postgres => {
            let options = PgConnectOptions::from_str(url).map_err(invalid)?;
            let pool = match PgPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .acquire_timeout(timeout)
                .connect_with(options.clone())
                .await
            {
                Ok(pool) => pool,
                Err(e) => {
                    let why = why_not(
                        e,
                        <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
                    )
                    .await;
                    return Err(unreachable(why));
                }
            };
            Pool::Postgres(pool)
        }
        DbKind::MySql => {
            let url = match url.strip_prefix("mariadb:") {
                Some(rest) => Cow::Owned(format!("mysql:{rest}")),
                None => Cow::Borrowed(url),
            };
            let options = MySqlConnectOptions::from_str(&url).map_err(invalid)?;
            let pool = match MySqlPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .acquire_timeout(timeout)
                .connect_with(options.clone())
                .await
            {
                Ok(pool) => pool,
                Err(e) => {
                    let why = why_not(
                        e,
                        <sqlx::MySqlConnection as sqlx::Connection>::connect_with(&options),
                    )
                    .await;
                    return Err(unreachable(why));
                }
            };
            Pool::MySql(pool)
        }
    };
    Ok((pool, kind, shown))
}

/// Why a pool could not connect: a pool that timed out says only that, so one
/// direct connection (given 2 s) tells the cause (refused, unknown host, bad
/// password); otherwise the pool's own error.
async fn why_not<C, F>(pool_error: sqlx::Error, direct: F) -> sqlx::Error
where
    F: std::future::Future<Output = Result<C, sqlx::Error>>,
{
    if !matches!(pool_error, sqlx::Error::PoolTimedOut) {
        return pool_error;
    }
    match tokio::time::timeout(Duration::from_secs(2), direct).await {
        Ok(Err(cause)) => cause,
        Ok(Ok(_)) | Err(_) => pool_error,
    }
}

/// No database may be attached to this connection (a job's query names a file
/// inside the data directory, and `ATTACH`, or `VACUUM INTO`, would reach any
/// other), and no `PRAGMA` runs (`temp_store_directory` changes a setting of the
/// whole process, the server's store included).
async fn forbid_attach(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: the handle is locked for these calls; sqlite3_limit sets a limit of
    // that open connection, and the authorizer is a plain function with no state.
    unsafe {
        libsqlite3_sys::sqlite3_limit(db, libsqlite3_sys::SQLITE_LIMIT_ATTACHED, 0);
        libsqlite3_sys::sqlite3_set_authorizer(db, Some(source_authorizer), std::ptr::null_mut());
    }
    Ok(())
}

/// SQLite's authorizer for job sources: no `PRAGMA`, `ATTACH` or `DETACH`.
unsafe extern "C" fn source_authorizer(
    _: *mut std::ffi::c_void,
    action: std::ffi::c_int,
    _: *const std::ffi::c_char,
    _: *const std::ffi::c_char,
    _: *const std::ffi::c_char,
    _: *const std::ffi::c_char,
) -> std::ffi::c_int {
    match action {
        libsqlite3_sys::SQLITE_PRAGMA
        | libsqlite3_sys::SQLITE_ATTACH
        | libsqlite3_sys::SQLITE_DETACH => libsqlite3_sys::SQLITE_DENY,
        _ => libsqlite3_sys::SQLITE_OK,
    }
}

/// SQLite files start with this header; an empty file is a new database.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Refuses a file that exists and is not a SQLite database, before SQLite opens it
/// (which could write to it), and anything that is not a regular file (a FIFO
/// would hold the open forever: [`crate::regular_file::open`]). The file is left
/// as it is. Messages call it `shown`.
fn check_sqlite_file(path: &std::path::Path, shown: &str, purpose: Use) -> Result<(), StoreError> {
    use std::io::Read;
    let mut file = match crate::regular_file::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Unavailable(format!(
                "cannot read the database file {shown}: {e}"
            )))
        }
    };
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot read the database file {shown}: {e}"
                )))
            }
        }
    }
    if read == 0 || (read == head.len() && &head == SQLITE_HEADER) {
        return Ok(());
    }
    let advice = match purpose {
        Use::Store { .. } => ": move it away or give another --database-url",
        Use::ReadData | Use::WriteData => "",
    };
    Err(StoreError::Broken(format!(
        "{shown} is not a SQLite database (corrupt, or another file); it was left as it is{advice}"
    )))
}

/// A SQLite file that would not open, called `shown`.
fn sqlite_error(shown: &str, e: sqlx::Error) -> StoreError {
    let text = describe_error(&e);
    if text.contains("malformed") || text.contains("not a database") {
        StoreError::Broken(format!(
            "the SQLite database {shown} is corrupt ({text}); it was left as it is"
        ))
    } else {
        StoreError::Unavailable(format!("cannot open the SQLite database {shown}: {text}"))
    }
}

/// A database error in one line, without the URL (which may hold a password).
pub fn describe_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection".to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// [`is_transient`] for a MySQL/MariaDB error number: too many connections,
/// shutdown in progress, lock wait timeout, deadlock, read-only (option,
/// transaction, mode), a cluster node not ready (Galera), the connection killed
/// (MariaDB), group replication stopped or not yet online, disconnected for
/// inactivity; and out of space or memory: the disk full (1021), a table full
/// (1114: InnoDB's answer when its disk fills), out of memory or resources (1037,
/// 1038, 1041), and the storage engine's error 28 (`ENOSPC`, in 1030).
fn mysql_is_transient(number: u16, message: &str) -> bool {
    matches!(
        number,
        1021 | 1037
            | 1038
            | 1040
            | 1041
            | 1047
            | 1053
            | 1114
            | 1205
            | 1213
            | 1290
            | 1792
            | 1836
            | 1927
            | 3100
            | 3101
            | 4031
    ) || (number == 1030 && message.contains("error 28 "))
}

/// Whether `e` may pass by itself: the database could not be reached or answer
/// (connection, pool, timeout), or answered that it cannot take the statement now
/// (busy, locked, a deadlock, read-only during a failover, shutting down, out of
/// connections or space). Any other answer (a statement it refuses as such) comes
/// again however often it is tried.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                return mysql_is_transient(mysql.number(), mysql.message());
            }
            let code = db.code().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Busy, locked, out of memory, read-only (a file remounted or
                // replaced), I/O error, cannot open, full, lock protocol (primary
                // result codes, from the extended code).
                return code
                    .parse::<i32>()
                    .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14 | 15));
            }
            // PostgreSQL's SQLSTATE: connection exception (08), transaction rollback
            // (40), insufficient resources (53), operator intervention (57),
            // read-only transaction, lock not available.
            matches!(code.get(..2), Some("08" | "40" | "53" | "57"))
                || code == "25006"
                || code == "55P03"
        }
        _ => false,
    }
}

/// `sql` with its `?` placeholders numbered for PostgreSQL (`$1`, `$2`, …); the
/// other databases take `?`. The queries of the store hold no `?` in literals.
pub fn placeholders(kind: DbKind, sql: &str) -> Cow<'_, str> {
    if kind != DbKind::Postgres || !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Was: a MySQL/MariaDB whose disk filled answered "The table is full"
    /// (1114) or "Disk full" (1021), read as a refusal of the rows: the
    /// prediction log split its batches down to single rows and dropped them, the
    /// audit trail its events, where SQLite's and PostgreSQL's full disks hold
    /// the batch until the database takes it again.
    #[test]
    fn a_full_mysql_disk_is_an_outage_not_a_refusal() {
        for number in [1021, 1114, 1041, 1205, 1213, 4031] {
            assert!(mysql_is_transient(number, "x"), "{number}");
        }
        let enospc = "Got error 28 \"No space left on device\" from storage engine InnoDB";
        assert!(mysql_is_transient(1030, enospc));
        assert!(mysql_is_transient(1030, "Got error 28 from storage engine"));
        assert!(!mysql_is_transient(
            1030,
            "Got error 165 from storage engine"
        ));
        // Refusals of the statement itself.
        for number in [1054, 1062, 1064, 1146, 1406] {
            assert!(!mysql_is_transient(number, "x"), "{number}");
        }
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://ferro:s3cret@db.example:5432/models"),
            "postgres://ferro:***@db.example:5432/models"
        );
        assert_eq!(
            redact("mysql://root@127.0.0.1:3306/x"),
            "mysql://root@127.0.0.1:3306/x"
        );
        assert!(!redact("postgres://u:p%40ss@h/db").contains("p%40ss"));
        assert_eq!(
            redact("postgres://db/x?user=u&password=s3cret&sslmode=require"),
            "postgres://db/x?user=u&password=***&sslmode=require"
        );
        assert!(has_secret("mysql://u@db/x?Password=s3cret"));
        assert!(has_secret("postgres://u:p@db/x"));
        assert!(!has_secret("postgres://u@db/x?sslmode=require"));
        assert!(!has_secret("scores.csv"));
        // Text the URL parser refuses, or reads as a path, still has its password
        // hidden (a port out of range; no `//` after the scheme).
        for (url, shown) in [
            (
                "postgres://127.0.0.1:99999/db?password=S3CRET",
                "postgres://127.0.0.1:99999/db?***",
            ),
            (
                "postgres://u:S3CRET@127.0.0.1:99999/db",
                "postgres://***@127.0.0.1:99999/db",
            ),
            (
                "postgres:u:S3CRET@127.0.0.1:5432/db",
                "postgres://***@127.0.0.1:5432/db",
            ),
            ("mysql:?password=S3CRET", "mysql:?password=***"),
            // A password holding `?`, a numeric password read as a port, one slash.
            (
                "postgres://app:s3cr?t@db.internal:5432/prod",
                "postgres://***@db.internal:5432/prod",
            ),
            ("postgres://app:1234?x@db/prod", "postgres://***@db/prod"),
            ("postgres:/u:pw@host/db", "postgres://***@host/db"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
            assert!(has_secret(url), "{url}");
        }
        assert!(!has_secret("postgres:db"));
        assert_eq!(redact("sqlite:state.db"), "sqlite:state.db");
    }

    #[test]
    fn placeholders_are_numbered_for_postgres_only() {
        let q = "UPDATE t SET a = ? WHERE b = ?";
        assert_eq!(
            placeholders(DbKind::Postgres, q),
            "UPDATE t SET a = $1 WHERE b = $2"
        );
        assert_eq!(placeholders(DbKind::MySql, q), q);
        assert_eq!(placeholders(DbKind::Sqlite, q), q);
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/f.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/f.db"))
        );
        assert_eq!(sqlite_path("sqlite:rel.db"), Some(PathBuf::from("rel.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(kind_of("mariadb://x"), Some(DbKind::MySql));
        assert_eq!(kind_of("redis://x"), None);
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        std::fs::write(&path, b"this is not a database at all").unwrap();
        let e = check_sqlite_file(&path, "f.db", Use::Store { create: true }).unwrap_err();
        assert!(matches!(e, StoreError::Broken(_)), "{e}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"this is not a database at all"
        );
        std::fs::write(&path, b"").unwrap();
        check_sqlite_file(&path, "f.db", Use::Store { create: true }).unwrap();
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_without_waiting() {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.db");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(check_sqlite_file(
                &path,
                "fifo.db",
                Use::Store { create: true },
            ));
        });
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the check waited for a writer")
            .unwrap_err();
        assert!(
            e.to_string().contains("fifo.db") && e.to_string().contains("FIFO"),
            "{e}"
        );
        let e = check_sqlite_file(
            std::path::Path::new("/dev/null"),
            "/dev/null",
            Use::ReadData,
        )
        .unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
        // Unblock the thread if the check ever waits again.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
    }
}
