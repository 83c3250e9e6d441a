//! SQL sources and sinks (SQLite, PostgreSQL, MySQL/MariaDB) through the store's
//! connection code (`store::pool`). The async driver runs in a task on the runtime;
//! the job's thread talks to it over bounded channels, so a query's rows are
//! streamed (never fetched whole) and a sink's rows wait in one transaction until
//! commit. The job's thread never waits on the driver unboundedly: it asks the
//! job's [`StopCheck`] every [`STOP_POLL`] while it waits (connecting, the query
//! running, rows being inserted), and a job told to stop leaves the wait at once;
//! dropping its end of the channel then makes the task roll back and close.
//! Messages name the database as the client gave its URL (`name`), never by the
//! server's path to a SQLite file.
//!
//! PostgreSQL and SQLite make the table's creation part of the transaction. MySQL
//! commits DDL at once: on MySQL a failed job leaves no rows, but may leave the
//! table it created (empty), or, with `overwrite`, the emptied table.

use std::time::Duration;

use futures::StreamExt;
use sqlx::{Column, Row, TypeInfo, ValueRef};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::{IoError, Sink, Source, StopCheck, Value, STOPPED, STOP_POLL};
use crate::jobs::spec::SinkMode;
use crate::store::pool::{self, on_pool, DbKind};

/// Longest wait for a connection to the data's database.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows buffered between the query and the job.
const ROW_BUFFER: usize = 1024;
/// How long one INSERT into a SQLite sink may take before the sink fails. SQLite
/// writes pages to the file (spills its cache) mid-transaction; when another
/// connection holds a read lock on the file, each spill waits the whole busy
/// timeout (`CONNECT_TIMEOUT`, set by `pool::connect_as`), then carries on in
/// memory, and the next spill waits again: without this bound such a job would
/// insert one page every busy timeout, for ever. An INSERT of at most
/// [`MAX_PARAMS`] values that took a busy timeout waited for a lock it did not
/// get.
const SQLITE_LOCK_WAIT: Duration = CONNECT_TIMEOUT;
/// Placeholders per INSERT statement (SQLite's historical limit is 999).
const MAX_PARAMS: usize = 900;

enum SourceMsg {
    Columns(Vec<String>),
    Row(Vec<Value>),
    Error(String),
}

/// The rows of a query, streamed.
pub struct SqlSource {
    rx: mpsc::Receiver<SourceMsg>,
    /// The runtime the query's task runs on, to wait for its rows with a timeout.
    runtime: Handle,
    /// Asked while no row is there yet (see [`SqlSource::recv`]).
    stop: StopCheck,
    columns: Vec<String>,
    /// The first row, read to learn the columns.
    first: Option<Vec<Value>>,
    rows: u64,
    done: bool,
}

impl SqlSource {
    /// Connects to `url` and runs `query`, waiting for its first row (which tells
    /// the columns) unless `stop` says the job is to stop first. Messages call the
    /// database `name`.
    pub fn open(
        url: &str,
        name: &str,
        query: &str,
        runtime: &Handle,
        stop: StopCheck,
    ) -> Result<SqlSource, IoError> {
        let (tx, rx) = mpsc::channel(ROW_BUFFER);
        runtime.spawn(stream_rows(
            url.to_string(),
            name.to_string(),
            query.to_string(),
            tx,
        ));
        let mut source = SqlSource {
            rx,
            runtime: runtime.clone(),
            stop,
            columns: Vec::new(),
            first: None,
            rows: 0,
            done: false,
        };
        match source.recv()? {
            Some(SourceMsg::Columns(c)) => source.columns = c,
            Some(SourceMsg::Error(e)) => return Err(IoError(e)),
            Some(SourceMsg::Row(_)) | None => {}
        }
        if !source.columns.is_empty() {
            match source.recv()? {
                Some(SourceMsg::Row(r)) => source.first = Some(r),
                Some(SourceMsg::Error(e)) => return Err(IoError(e)),
                _ => {}
            }
        }
        if source.first.is_none() {
            return Err(IoError("the query returned no rows (empty data)".into()));
        }
        Ok(source)
    }

    /// The query task's next message (`None` once it ended), waiting as long as
    /// the database takes, unless the job is to stop: `stop` is asked every
    /// [`STOP_POLL`] while nothing has come.
    fn recv(&mut self) -> Result<Option<SourceMsg>, IoError> {
        loop {
            // Rows already buffered cost no wait (and no timer).
            match self.rx.try_recv() {
                Ok(msg) => return Ok(Some(msg)),
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(None),
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if (self.stop)() {
                return Err(IoError(STOPPED.into()));
            }
            let rx = &mut self.rx;
            // The timer is made inside the runtime (`block_on` enters it).
            let waited = self
                .runtime
                .block_on(async { tokio::time::timeout(STOP_POLL, rx.recv()).await });
            if let Ok(msg) = waited {
                return Ok(msg);
            }
        }
    }
}

impl Source for SqlSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>, IoError> {
        let mut rows = Vec::with_capacity(max);
        if let Some(first) = self.first.take() {
            rows.push(first);
        }
        while rows.len() < max && !self.done {
            match self.recv()? {
                Some(SourceMsg::Row(r)) => rows.push(r),
                Some(SourceMsg::Error(e)) => return Err(IoError(e)),
                Some(SourceMsg::Columns(_)) => {}
                None => self.done = true,
            }
        }
        self.rows += rows.len() as u64;
        Ok((!rows.is_empty()).then_some(rows))
    }

    fn fraction(&self) -> Option<f64> {
        None
    }

    fn describe_position(&self) -> String {
        format!("row {}", self.rows)
    }
}

async fn stream_rows(url: String, shown: String, query: String, tx: mpsc::Sender<SourceMsg>) {
    let connected = pool::connect_as(&url, Some(&shown), CONNECT_TIMEOUT, pool::Use::ReadData);
    let (db, kind, _) = match connected.await {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(SourceMsg::Error(e.to_string())).await;
            return;
        }
    };
    // The query runs read only: in a read-only transaction on PostgreSQL (whose
    // DDL is transactional too), in a read-only session on MySQL (whose DDL would
    // commit a transaction and run outside it); a SQLite source's file is opened
    // read-only. The extended protocol sqlx speaks runs one statement, so the
    // query cannot end the transaction itself. The connection is this job's alone
    // and closes with it.
    let begin = match kind {
        DbKind::Postgres => Some("BEGIN READ ONLY"),
        DbKind::MySql => Some("SET SESSION TRANSACTION READ ONLY"),
        DbKind::Sqlite => None,
    };
    on_pool!(&db, p => {
        let mut conn = match p.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                let _ = tx
                    .send(SourceMsg::Error(format!(
                        "cannot connect to {shown}: {}",
                        pool::describe_error(&e)
                    )))
                    .await;
                return;
            }
        };
        if let Some(begin) = begin {
            if let Err(e) = sqlx::query(begin).execute(&mut *conn).await {
                let _ = tx
                    .send(SourceMsg::Error(format!(
                        "cannot make the session read only on {shown}: {}",
                        pool::describe_error(&e)
                    )))
                    .await;
                return;
            }
        }
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(query.as_str())).fetch(&mut *conn);
        let mut first = true;
        while let Some(row) = rows.next().await {
            let msg = match row {
                Err(e) => SourceMsg::Error(format!(
                    "the query on {shown} failed: {}",
                    pool::describe_error(&e)
                )),
                Ok(row) => {
                    if first {
                        first = false;
                        let columns = row.columns().iter().map(|c| c.name().to_string()).collect();
                        if tx.send(SourceMsg::Columns(columns)).await.is_err() {
                            break;
                        }
                    }
                    match decode_row(&row) {
                        Ok(values) => SourceMsg::Row(values),
                        Err(e) => SourceMsg::Error(e),
                    }
                }
            };
            let stop = matches!(msg, SourceMsg::Error(_));
            // The job stopped reading (cancelled, failed): stop the query.
            if tx.send(msg).await.is_err() || stop {
                break;
            }
        }
        drop(rows);
        if kind == DbKind::Postgres {
            // Nothing was written; the connection closes with the pool below anyway.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
    });
    db_close(db).await;
}

async fn db_close(db: pool::Pool) {
    on_pool!(&db, p => p.close().await);
}

/// MySQL's unsigned integer columns, which sqlx reads into no signed integer
/// (and into `bool` through an `i8`: 200 read as -56, then `true`).
trait UnsignedCells {
    /// Cell `i` when its column is an unsigned integer: an integer, or, past an
    /// `i64`, its digits as text.
    fn unsigned(&self, _i: usize) -> Option<Value> {
        None
    }
}

impl UnsignedCells for sqlx::postgres::PgRow {}
impl UnsignedCells for sqlx::sqlite::SqliteRow {}

impl UnsignedCells for sqlx::mysql::MySqlRow {
    fn unsigned(&self, i: usize) -> Option<Value> {
        // The integer types only: BIT (a flag) and YEAR read as before.
        let name = self.columns().get(i)?.type_info().name();
        if !name.ends_with("INT UNSIGNED") {
            return None;
        }
        let v = self.try_get::<Option<u64>, _>(i).ok()?;
        Some(match v {
            None => Value::Null,
            Some(v) => i64::try_from(v).map_or_else(|_| Value::Text(v.to_string()), Value::Int),
        })
    }
}

/// A row's cells, each read as the first of integer, float, text or boolean its
/// column's type allows.
fn decode_row<R: Row + UnsignedCells>(row: &R) -> Result<Vec<Value>, String>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i16: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    (0..row.columns().len())
        .map(|i| {
            if let Some(v) = row.unsigned(i) {
                return Ok(v);
            }
            if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                return Ok(v.map_or(Value::Null, Value::Int));
            }
            if let Ok(v) = row.try_get::<Option<i32>, _>(i) {
                return Ok(v.map_or(Value::Null, |v| Value::Int(v.into())));
            }
            if let Ok(v) = row.try_get::<Option<i16>, _>(i) {
                return Ok(v.map_or(Value::Null, |v| Value::Int(v.into())));
            }
            if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
                return Ok(v.map_or(Value::Null, Value::Float));
            }
            if let Ok(v) = row.try_get::<Option<f32>, _>(i) {
                return Ok(v.map_or(Value::Null, |v| Value::Float(v.into())));
            }
            if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                return Ok(v.map_or(Value::Null, Value::Text));
            }
            if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
                return Ok(v.map_or(Value::Null, Value::Bool));
            }
            let column = &row.columns()[i];
            // MySQL/MariaDB send DECIMAL as its decimal text (in both protocols),
            // which sqlx decodes only into decimal crates: read the text, as a
            // float (a model takes floats; a value past f64's precision rounds).
            if column.type_info().name() == "DECIMAL" {
                if let Ok(v) = row.try_get_unchecked::<Option<String>, _>(i) {
                    return Ok(match v {
                        None => Value::Null,
                        Some(text) => text
                            .trim()
                            .parse::<f64>()
                            .map_or(Value::Text(text), Value::Float),
                    });
                }
            }
            // The column's declared type, or, where it has none (SQLite: an
            // expression, a column declared without a type), the value's own: a
            // null was read above whatever the type, so this value has one.
            let declared = column.type_info();
            let type_name = if declared.is_null() {
                row.try_get_raw(i)
                    .map(|v| v.type_info().name().to_string())
                    .unwrap_or_else(|_| declared.name().to_string())
            } else {
                declared.name().to_string()
            };
            Err(format!(
                "column {:?} has the type {type_name}, which cannot be read: cast it in the \
                 query to an integer, a float or text",
                column.name(),
            ))
        })
        .collect()
}

enum SinkMsg {
    Rows(Vec<Vec<Value>>, oneshot::Sender<Result<(), String>>),
    Commit(oneshot::Sender<Result<(), String>>),
}

/// Rows inserted into a table in one transaction, committed at the end.
pub struct SqlSink {
    tx: mpsc::Sender<SinkMsg>,
    /// The runtime the writer task runs on, to wait for its answers with a timeout.
    runtime: Handle,
    /// Asked while the writer works on rows (see [`SqlSink::ask`]).
    stop: StopCheck,
}

impl SqlSink {
    /// A writer of `columns` into `table` of `url`, connecting at once; messages call
    /// the database `name`.
    pub fn open(
        url: &str,
        name: &str,
        table: &str,
        mode: SinkMode,
        columns: Vec<String>,
        runtime: &Handle,
        stop: StopCheck,
    ) -> Result<SqlSink, IoError> {
        if let Some(c) = columns
            .iter()
            .find(|c| c.contains(['"', '`', '\0']) || c.is_empty())
        {
            return Err(IoError(format!(
                "column name {c:?} cannot be a SQL column name"
            )));
        }
        let (tx, rx) = mpsc::channel(1);
        runtime.spawn(write_rows(
            url.to_string(),
            name.to_string(),
            table.to_string(),
            mode,
            columns,
            rx,
        ));
        Ok(SqlSink {
            tx,
            runtime: runtime.clone(),
            stop,
        })
    }

    /// Sends `msg` to the writer and waits for its answer. A `stoppable` wait (rows:
    /// connecting, creating the table, inserting) is left with [`STOPPED`] once the
    /// job is to stop, `stop` being asked every [`STOP_POLL`]; the sink is then
    /// dropped, and the writer rolls back. A commit is waited for to its end: left
    /// midway, it could show the rows of a job recorded as cancelled.
    fn ask(
        &self,
        msg: impl FnOnce(oneshot::Sender<Result<(), String>>) -> SinkMsg,
        stoppable: bool,
    ) -> Result<(), IoError> {
        let writer_stopped = || IoError("the database writer stopped".into());
        let (reply, mut answer) = oneshot::channel();
        // The writer answers each message before the job sends the next: there
        // is always room.
        self.tx
            .blocking_send(msg(reply))
            .map_err(|_| writer_stopped())?;
        if !stoppable {
            return answer
                .blocking_recv()
                .map_err(|_| writer_stopped())?
                .map_err(IoError);
        }
        loop {
            match answer.try_recv() {
                Ok(result) => return result.map_err(IoError),
                Err(oneshot::error::TryRecvError::Closed) => return Err(writer_stopped()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            if (self.stop)() {
                return Err(IoError(STOPPED.into()));
            }
            let answer = &mut answer;
            // The timer is made inside the runtime (`block_on` enters it).
            let waited = self
                .runtime
                .block_on(async { tokio::time::timeout(STOP_POLL, answer).await });
            if let Ok(result) = waited {
                return result.map_err(|_| writer_stopped())?.map_err(IoError);
            }
        }
    }
}

impl Sink for SqlSink {
    fn write(&mut self, rows: &[Vec<Value>]) -> Result<(), IoError> {
        self.ask(|reply| SinkMsg::Rows(rows.to_vec(), reply), true)
    }

    fn commit(self: Box<Self>) -> Result<(), IoError> {
        self.ask(SinkMsg::Commit, false)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ColumnKind {
    Int,
    Float,
    Text,
}

fn column_kinds(columns: usize, rows: &[Vec<Value>]) -> Vec<ColumnKind> {
    (0..columns)
        .map(|i| {
            let values = rows.iter().filter_map(|r| r.get(i));
            let mut kind = None;
            for v in values {
                kind = match (kind, v) {
                    (_, Value::Text(_)) => return ColumnKind::Text,
                    (_, Value::Float(_)) => Some(ColumnKind::Float),
                    (None, Value::Int(_) | Value::Bool(_)) => Some(ColumnKind::Int),
                    (k, _) => k,
                };
            }
            kind.unwrap_or(ColumnKind::Text)
        })
        .collect()
}

/// A table's name (`table` or `schema.table`, checked by the spec), quoted.
fn quote(kind: DbKind, name: &str) -> String {
    name.split('.')
        .map(|part| quote_column(kind, part))
        .collect::<Vec<_>>()
        .join(".")
}

/// A column's name, quoted whole: a dot in it is part of the name. Names that hold
/// a quote character are refused before a sink opens.
fn quote_column(kind: DbKind, name: &str) -> String {
    match kind {
        DbKind::MySql => format!("`{name}`"),
        _ => format!("\"{name}\""),
    }
}

fn type_name(db: DbKind, kind: ColumnKind) -> &'static str {
    match (db, kind) {
        (_, ColumnKind::Int) => "BIGINT",
        (DbKind::Sqlite, ColumnKind::Float) => "REAL",
        (DbKind::Postgres, ColumnKind::Float) => "DOUBLE PRECISION",
        (DbKind::MySql, ColumnKind::Float) => "DOUBLE",
        (_, ColumnKind::Text) => "TEXT",
    }
}

/// A cell as its column's kind: `Some(Ok(..))` per kind, an error for a value the
/// column cannot hold.
enum Cell {
    Int(Option<i64>),
    Float(Option<f64>),
    Text(Option<String>),
}

fn cell(kind: ColumnKind, value: &Value, column: &str) -> Result<Cell, String> {
    Ok(match (kind, value) {
        (ColumnKind::Int, Value::Null) => Cell::Int(None),
        (ColumnKind::Float, Value::Null) => Cell::Float(None),
        (ColumnKind::Text, Value::Null) => Cell::Text(None),
        (ColumnKind::Int, Value::Int(i)) => Cell::Int(Some(*i)),
        (ColumnKind::Int, Value::Bool(b)) => Cell::Int(Some(i64::from(*b))),
        (ColumnKind::Float, Value::Int(i)) => Cell::Float(Some(*i as f64)),
        (ColumnKind::Float, Value::Float(f)) => Cell::Float(Some(*f)),
        (ColumnKind::Float, Value::Bool(b)) => Cell::Float(Some(f64::from(u8::from(*b)))),
        (ColumnKind::Text, v) => Cell::Text(Some(v.to_text())),
        (_, v) => {
            return Err(format!(
                "column {column:?}: the value {} does not fit the column's type",
                v.to_text()
            ))
        }
    })
}

/// The sink's writer task: [`write_rows_committed`], then, when the rows were not
/// committed (the job failed or was cancelled), the SQLite file removed again if
/// this sink created it (see [`remove_created_sqlite_file`]).
async fn write_rows(
    url: String,
    shown: String,
    table: String,
    mode: SinkMode,
    columns: Vec<String>,
    rx: mpsc::Receiver<SinkMsg>,
) {
    // Told before connecting, which creates a missing file.
    let created = pool::sqlite_path(&url).filter(|path| !path.exists());
    let committed = write_rows_committed(url, shown, table, mode, columns, rx).await;
    if let (Some(path), false) = (created, committed) {
        remove_created_sqlite_file(&path);
    }
}

/// Removes a SQLite database file a sink created and committed nothing to, so
/// that a job that did not succeed leaves no output. Only while the file is still
/// empty (a rolled-back transaction leaves a new file at 0 bytes) and no journal
/// or write-ahead log is beside it: a file another job's sink has since written
/// to, or is writing to now, stays.
fn remove_created_sqlite_file(path: &std::path::Path) {
    let beside = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    let empty = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0);
    if !empty || ["-journal", "-wal"].iter().any(|s| beside(s).exists()) {
        return;
    }
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(
            "cannot remove the empty database file {}: {e}",
            path.display()
        );
    }
    // An empty write-ahead log's shared-memory index, if one was left.
    let _ = std::fs::remove_file(beside("-shm"));
}

/// Writes the rows the job sends, answering each message; whether they were
/// committed.
async fn write_rows_committed(
    url: String,
    shown: String,
    table: String,
    mode: SinkMode,
    columns: Vec<String>,
    mut rx: mpsc::Receiver<SinkMsg>,
) -> bool {
    let connected = pool::connect_as(&url, Some(&shown), CONNECT_TIMEOUT, pool::Use::WriteData);
    let (db, kind, _) = match connected.await {
        Ok(c) => c,
        Err(e) => {
            // Answer whatever comes first with the connection error.
            if let Some(SinkMsg::Rows(_, reply) | SinkMsg::Commit(reply)) = rx.recv().await {
                let _ = reply.send(Err(e.to_string()));
            }
            return false;
        }
    };
    let sql_error = |doing: &str, e: sqlx::Error| {
        format!("{doing} on {shown} failed: {}", pool::describe_error(&e))
    };
    // MySQL commits DDL at once (DROP and CREATE end the transaction), so an
    // overwrite there fills a work table and swaps it in at commit
    // (`swap_in_work_table`); the old table stays whole until then.
    let work_table =
        (kind == DbKind::MySql && mode == SinkMode::Overwrite).then(|| mysql_work_table(&table));
    let target_table = quote(kind, &table);
    let quoted_table = match &work_table {
        Some(work) => quote(kind, work),
        None => target_table.clone(),
    };
    let column_list = columns
        .iter()
        .map(|c| quote_column(kind, c))
        .collect::<Vec<_>>()
        .join(", ");
    let rows_per_insert = (MAX_PARAMS / columns.len().max(1)).max(1);
    on_pool!(&db, p => {
        let mut tx = match p.begin().await {
            Ok(tx) => tx,
            Err(e) => {
                if let Some(SinkMsg::Rows(_, reply) | SinkMsg::Commit(reply)) = rx.recv().await {
                    let _ = reply.send(Err(sql_error("starting a transaction", e)));
                }
                db_close(db).await;
                return false;
            }
        };
        let mut kinds: Option<Vec<ColumnKind>> = None;
        while let Some(msg) = rx.recv().await {
            let (rows, reply) = match msg {
                SinkMsg::Rows(rows, reply) => (rows, reply),
                SinkMsg::Commit(reply) => {
                    let mut result = Ok(());
                    if kinds.is_none() {
                        let k = vec![ColumnKind::Text; columns.len()];
                        result = create_table(&mut tx, kind, mode, &quoted_table, &columns, &k)
                            .await
                            .map_err(|e| sql_error("creating the table", e));
                    }
                    if result.is_ok() {
                        result = tx.commit().await.map_err(|e| sql_error("committing", e));
                    } else {
                        let _ = tx.rollback().await;
                    }
                    if let Some(work) = &work_table {
                        if result.is_ok() {
                            let old = quote(kind, &mysql_work_table(&table));
                            result = swap_in_work_table(p, &target_table, &quote(kind, work), &old)
                                .await
                                .map_err(|e| sql_error("replacing the table", e));
                        }
                        drop_table(p, &quote(kind, work)).await;
                    }
                    let committed = result.is_ok();
                    let _ = reply.send(result);
                    db_close(db).await;
                    return committed;
                }
            };
            if kinds.is_none() {
                let k = column_kinds(columns.len(), &rows);
                if let Err(e) = create_table(&mut tx, kind, mode, &quoted_table, &columns, &k).await {
                    let _ = reply.send(Err(sql_error("creating the table", e)));
                    break;
                }
                kinds = Some(k);
            }
            let kinds = kinds.as_ref().expect("set above");
            let mut result = Ok(());
            for chunk in rows.chunks(rows_per_insert) {
                let one = format!("({})", vec!["?"; columns.len()].join(", "));
                // Numbered in the values only: a `?` in a quoted table or column
                // name (a CSV header's `ok?`) is that name's.
                let values = vec![one.as_str(); chunk.len()].join(", ");
                let values = pool::placeholders(kind, &values);
                let sql = format!("INSERT INTO {quoted_table} ({column_list}) VALUES {values}");
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                let mut bad = None;
                'rows: for row in chunk {
                    for (i, v) in row.iter().enumerate() {
                        match cell(kinds[i], v, &columns[i]) {
                            Ok(Cell::Int(x)) => q = q.bind(x),
                            Ok(Cell::Float(x)) => q = q.bind(x),
                            Ok(Cell::Text(x)) => q = q.bind(x),
                            Err(e) => {
                                bad = Some(e);
                                break 'rows;
                            }
                        }
                    }
                }
                if let Some(e) = bad {
                    result = Err(e);
                    break;
                }
                let started = std::time::Instant::now();
                if let Err(e) = q.execute(&mut *tx).await {
                    result = Err(sql_error("inserting rows", e));
                    break;
                }
                if kind == DbKind::Sqlite && started.elapsed() >= SQLITE_LOCK_WAIT {
                    result = Err(sqlite_locked(&shown));
                    break;
                }
            }
            let failed = result.is_err();
            let _ = reply.send(result);
            if failed {
                break;
            }
        }
        // Not committed (failed, cancelled, or the job dropped the sink): nothing
        // written stays.
        let _ = tx.rollback().await;
        if let Some(work) = &work_table {
            drop_table(p, &quote(kind, work)).await;
        }
    });
    db_close(db).await;
    false
}

/// The error of a SQLite sink whose file stayed locked (see [`SQLITE_LOCK_WAIT`]).
fn sqlite_locked(shown: &str) -> String {
    format!(
        "inserting rows on {shown} failed: the database file stayed locked by another \
         connection (a query reading it, or another writer) for more than {} s",
        SQLITE_LOCK_WAIT.as_secs()
    )
}

/// The work table a MySQL overwrite of `table` fills: `table` plus a random
/// suffix, within MySQL's 64 characters.
fn mysql_work_table(table: &str) -> String {
    let (schema, name) = match table.rsplit_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, table),
    };
    let suffix = format!("__ferroserve_{:08x}", fastrand::u32(..));
    let keep = name.len().min(64 - suffix.len());
    let work = format!("{}{suffix}", &name[..keep]);
    match schema {
        Some(schema) => format!("{schema}.{work}"),
        None => work,
    }
}

/// Puts the filled work table in the place of `target` in one atomic `RENAME
/// TABLE` (or renames it when there is no `target` yet), then drops the old one,
/// renamed `old` meanwhile.
async fn swap_in_work_table<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    target: &str,
    work: &str,
    old: &str,
) -> Result<(), sqlx::Error>
where
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    let swapped = sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
        "RENAME TABLE {target} TO {old}, {work} TO {target}"
    )))
    .execute(pool)
    .await;
    match swapped {
        Ok(_) => {
            drop_table(pool, old).await;
            Ok(())
        }
        // No table to replace.
        Err(_) => sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
            "RENAME TABLE {work} TO {target}"
        )))
        .execute(pool)
        .await
        .map(|_| ()),
    }
}

async fn drop_table<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, table: &str)
where
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    if let Err(e) = sqlx::query::<DB>(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(pool)
        .await
    {
        tracing::warn!("cannot drop {table}: {e}");
    }
}

async fn create_table<'c, DB: sqlx::Database>(
    tx: &mut sqlx::Transaction<'c, DB>,
    db: DbKind,
    mode: SinkMode,
    table: &str,
    columns: &[String],
    kinds: &[ColumnKind],
) -> Result<(), sqlx::Error>
where
    for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    let definition = columns
        .iter()
        .zip(kinds)
        .map(|(c, k)| format!("{} {}", quote_column(db, c), type_name(db, *k)))
        .collect::<Vec<_>>()
        .join(", ");
    if mode == SinkMode::Overwrite {
        sqlx::query::<DB>(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {table} ({definition})"
    )))
    .execute(&mut **tx)
    .await?;
    if db == DbKind::MySql {
        // MySQL commits the transaction at any DDL (even a CREATE ... IF NOT EXISTS
        // that finds the table), leaving the connection in autocommit: every
        // INSERT after it would commit at once. Nothing is written yet: begin the
        // transaction again, so the rows stay invisible until the sink commits.
        sqlx::query::<DB>(sqlx::AssertSqlSafe("START TRANSACTION".to_string()))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a sink's writer on `file` until its job sends `rows` and then commits
    /// (`commit`) or drops the sink (a cancel, a failure).
    async fn write_then(file: &std::path::Path, rows: Vec<Vec<Value>>, commit: bool) {
        let (tx, rx) = mpsc::channel(1);
        let url = format!("sqlite://{}", file.display());
        let columns = vec!["x".to_string()];
        let writer = tokio::spawn(write_rows(
            url,
            "sqlite://f.sqlite".into(),
            "t".into(),
            SinkMode::Overwrite,
            columns,
            rx,
        ));
        if !rows.is_empty() {
            let (reply, answer) = oneshot::channel();
            tx.send(SinkMsg::Rows(rows, reply)).await.unwrap();
            answer.await.unwrap().unwrap();
        }
        if commit {
            let (reply, answer) = oneshot::channel();
            tx.send(SinkMsg::Commit(reply)).await.unwrap();
            answer.await.unwrap().unwrap();
        }
        drop(tx);
        writer.await.unwrap();
    }

    /// A SQLite file the sink created goes again when the job does not commit;
    /// one that was there before stays, as does a committed one.
    #[tokio::test]
    async fn an_uncommitted_sink_removes_only_the_sqlite_file_it_created() {
        let dir = tempfile::tempdir().unwrap();
        let rows = || vec![vec![Value::Int(1)], vec![Value::Int(2)]];
        let created = dir.path().join("created.sqlite");
        write_then(&created, rows(), false).await;
        assert!(!created.exists());
        write_then(&created, Vec::new(), false).await;
        assert!(!created.exists());
        let there = dir.path().join("there.sqlite");
        std::fs::write(&there, b"").unwrap();
        write_then(&there, rows(), false).await;
        assert!(there.is_file());
        let committed = dir.path().join("committed.sqlite");
        write_then(&committed, rows(), true).await;
        assert!(committed.metadata().unwrap().len() > 0);
        let entries: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries.len(), 2, "{entries:?}");
    }
}
