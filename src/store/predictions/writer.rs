//! The prediction log's writer: a background task that takes entries from the
//! buffer, encodes them, and inserts them in batches (one transaction each,
//! [`ROWS_PER_INSERT`] rows a statement); it holds its batch through an outage, and
//! writes a refused batch in halves down to single rows, dropping and counting the
//! rows still refused (see the invariants in `super`). It applies each model's
//! `max_rows` and `max_age_days` every [`RETENTION_EVERY`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::{encode, Encoded, PendingPrediction, Retention, LOG_BUFFER, MAX_ENTRY_JSON_BYTES};
use crate::store::pool::on_pool;
use crate::store::{Store, StoreError};

/// Most rows written in one transaction.
const BATCH: usize = 256;

/// Most JSON text one transaction carries (more rows wait for the next one).
const BATCH_BYTES: usize = 8 << 20;

/// How long the writer waits for more entries when a batch is not full.
const LINGER: Duration = Duration::from_millis(20);

/// Rows per INSERT statement (8 parameters each: far below every database's limit).
const ROWS_PER_INSERT: usize = 64;

/// Most text one INSERT statement carries (4 MiB, under MariaDB's default
/// `max_allowed_packet` of 16 MiB); a row larger than this gets a statement of its own.
const STATEMENT_BYTES: usize = 4 << 20;

/// How often the writer applies each model's `max_rows` and `max_age_days`.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// When it first does, after the start: once the models have loaded, so that the
/// limits of a config changed while the server was down apply soon.
const RETENTION_FIRST: Duration = Duration::from_secs(5);

/// Kinds of refusal (model, error code) warned about at most; past this, refused
/// rows are only counted.
const REFUSALS_TOLD: usize = 1000;

/// Starts the writer unless it already runs.
pub(in crate::store) fn start_writer(
    store: Arc<Store>,
    stop: CancellationToken,
    drain: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let rx = store
        .predictions
        .rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()?;
    Some(tokio::spawn(write_predictions(store, rx, stop, drain)))
}

/// Why a write of rows failed.
pub(in crate::store) enum WriteError {
    /// The database answered an error, or the connection failed.
    Sql(sqlx::Error),
    /// No answer within the database timeout.
    TimedOut(Duration),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Sql(e) => f.write_str(&crate::store::pool::describe_error(e)),
            WriteError::TimedOut(t) => write!(f, "no answer within {t:?}"),
        }
    }
}

impl WriteError {
    /// The outage as the error of `doing`, for a caller that answers a
    /// [`StoreError`]; the database is noted down, as [`Store::unavailable`] does
    /// (the failure itself was counted by [`write_in_halves`]).
    pub(in crate::store) fn into_store_error(self, store: &Store, doing: &str) -> StoreError {
        store.up.store(false, std::sync::atomic::Ordering::Relaxed);
        StoreError::Unavailable(format!(
            "the metadata store ({} at {}) could not {doing}: {self}",
            store.kind(),
            store.url
        ))
    }

    /// Names the kind of error, for the warning told once per kind and model.
    fn kind(&self) -> String {
        match self {
            WriteError::Sql(sqlx::Error::Database(db)) => {
                format!("database error {}", db.code().unwrap_or_default())
            }
            WriteError::Sql(_) => "connection".to_string(),
            WriteError::TimedOut(_) => "timeout".to_string(),
        }
    }
}

/// What the writer remembers between batches, for what it tells the log.
#[derive(Default)]
struct WriterNotes {
    /// Whether the last write failed for an outage (told once per outage).
    in_outage: bool,
    /// The models whose entries were already said to be too large to log.
    oversized_told: HashSet<Arc<str>>,
}

async fn write_predictions(
    store: Arc<Store>,
    mut rx: tokio::sync::mpsc::Receiver<PendingPrediction>,
    stop: CancellationToken,
    drain: Duration,
) {
    // Entries taken from the channel, newest first (the writer pops the oldest from
    // the end), not yet encoded: still counted in the buffer's bytes.
    let mut pending: Vec<PendingPrediction> = Vec::with_capacity(BATCH);
    let mut batch: Vec<Encoded> = Vec::with_capacity(BATCH);
    let mut notes = WriterNotes::default();
    // Each model's latest retention, applied every RETENTION_EVERY: that of its
    // entries, and the served models' configs' (which win).
    let mut retention: std::collections::HashMap<Arc<str>, Retention> =
        std::collections::HashMap::new();
    let mut next_retention = tokio::time::Instant::now() + RETENTION_FIRST;
    let mut pause = Duration::from_millis(100);
    loop {
        if batch.is_empty() && pending.is_empty() {
            tokio::select! {
                n = rx.recv_many(&mut pending, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    // A short wait gathers a fuller batch: fewer transactions.
                    if n < BATCH {
                        tokio::time::sleep(LINGER).await;
                        while pending.len() < BATCH {
                            match rx.try_recv() {
                                Ok(p) => pending.push(p),
                                Err(_) => break,
                            }
                        }
                    }
                    pending.reverse();
                }
                () = tokio::time::sleep_until(next_retention) => {}
                () = stop.cancelled() => break,
            }
        }
        fill_batch(&store, &mut pending, &mut batch, &mut retention, &mut notes);
        if !batch.is_empty() {
            match write_batch(&store, &mut batch).await {
                Ok(()) => {
                    store.worked();
                    if std::mem::take(&mut notes.in_outage) {
                        tracing::info!("the prediction log writes to the metadata store again");
                    }
                    pause = Duration::from_millis(100);
                }
                Err(e) => {
                    // An outage: the same rows are tried again once it may have
                    // passed. Retention waits too (it would fail the same way) and
                    // is applied as soon as a write works again.
                    if !std::mem::replace(&mut notes.in_outage, true) {
                        tracing::warn!(
                            "the prediction log cannot write to the metadata store ({e}); \
                             its entries wait in the buffer (up to {LOG_BUFFER}) and are \
                             written when the database answers again"
                        );
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = stop.cancelled() => break,
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        if tokio::time::Instant::now() >= next_retention {
            if let Some(source) = store.predictions.retention.get() {
                retention.extend(source());
            }
            for (model, (max_rows, max_age_days)) in &retention {
                if let Err(e) = store.apply_retention(model, *max_rows, *max_age_days).await {
                    tracing::warn!(%model, "prediction log retention: {e}");
                }
            }
            next_retention = tokio::time::Instant::now() + RETENTION_EVERY;
        }
    }
    let _ = tokio::time::timeout(drain, async {
        rx.close();
        // Newer than those pending: written after them (popped from the end).
        let mut rest = Vec::new();
        while let Some(p) = rx.recv().await {
            rest.push(p);
        }
        rest.reverse();
        rest.append(&mut pending);
        pending = rest;
        while !(pending.is_empty() && batch.is_empty()) {
            fill_batch(&store, &mut pending, &mut batch, &mut retention, &mut notes);
            if write_batch(&store, &mut batch).await.is_err() {
                break;
            }
        }
    })
    .await;
}

/// Encodes entries from `pending` (oldest last) into `batch` while it has room
/// ([`BATCH`] rows, [`BATCH_BYTES`] of text; always one row at least).
fn fill_batch(
    store: &Store,
    pending: &mut Vec<PendingPrediction>,
    batch: &mut Vec<Encoded>,
    retention: &mut std::collections::HashMap<Arc<str>, Retention>,
    notes: &mut WriterNotes,
) {
    let mut text: usize = batch.iter().map(Encoded::text_len).sum();
    while batch.len() < BATCH && (batch.is_empty() || text < BATCH_BYTES) {
        let Some(p) = pending.pop() else { break };
        store.predictions.taken(&p);
        retention.insert(p.model.clone(), (p.max_rows, p.max_age_days));
        let (row, oversized) = encode(p);
        if oversized {
            metrics::counter!(
                "ferroserve_prediction_log_oversized_total",
                "model" => row.model.to_string()
            )
            .increment(1);
            if notes.oversized_told.len() < REFUSALS_TOLD
                && notes.oversized_told.insert(row.model.clone())
            {
                tracing::warn!(
                    model = %row.model,
                    "the prediction log of model {}: a request's inputs and outputs are \
                     over {MAX_ENTRY_JSON_BYTES} bytes of JSON; such entries are logged \
                     with a marker in place of their tensors (counted in \
                     ferroserve_prediction_log_oversized_total; told once per model)",
                    row.model
                );
            }
        }
        text += row.text_len();
        batch.push(row);
    }
}

/// Writes `batch` and empties it, or answers the outage that stopped it, leaving
/// in it the rows not written. Rows the database refuses as such (not an outage)
/// are dropped ([`write_in_halves`]).
async fn write_batch(store: &Store, batch: &mut Vec<Encoded>) -> Result<(), WriteError> {
    let (done, result) = store.write_log_rows(batch).await;
    batch.drain(..done);
    result
}

/// Writes `rows` in order, each call of `insert` a range of them (its own
/// transaction), or stops at the outage that cuts it short. Rows the database
/// refuses as such (not an outage) are found by writing the rows in halves, down to
/// single rows, and handed to `refused` in place of being written. Answers how
/// many of the rows, from the first, are done (written or refused): all of them,
/// or those before the outage, which it answers too (the rest are to be tried
/// again once it may have passed). The first failure counts in
/// `ferroserve_store_errors_total`.
///
/// Shared by the prediction log's writer and the move of a worker's records into
/// the main store ([`Store::take_records_from`]), so that a row one refuses holds
/// neither.
pub(in crate::store) async fn write_in_halves<T, Written>(
    store: &Store,
    rows: &[T],
    mut insert: impl FnMut(std::ops::Range<usize>) -> Written,
    mut refused: impl FnMut(&T, &WriteError),
) -> (usize, Result<(), WriteError>)
where
    Written: std::future::Future<Output = Result<(), WriteError>>,
{
    if rows.is_empty() {
        return (0, Ok(()));
    }
    let first = match insert(0..rows.len()).await {
        Ok(()) => return (rows.len(), Ok(())),
        Err(e) => e,
    };
    crate::metrics::record_store_error();
    if store.is_outage(&first).await {
        return (0, Err(first));
    }
    // A connection lost during the statement while the database answers now: the
    // statement may be what it refused (MySQL closes the connection past
    // `max_allowed_packet`), or the outage that cut it may have just passed. The
    // whole batch is tried once more before it is taken for a refusal.
    let first = match first {
        WriteError::Sql(ref e) if crate::store::pool::is_transient(e) => None,
        refusal => Some(refusal),
    };
    // Ranges still to write, the first to write last; each with the error it
    // already failed with, if any. They are written in order, so the rows done
    // are always those before the range being written.
    let mut ranges: Vec<(usize, usize, Option<WriteError>)> = vec![(0, rows.len(), first)];
    while let Some((start, end, failed)) = ranges.pop() {
        let error = match failed {
            Some(e) => e,
            None => match insert(start..end).await {
                Ok(()) => continue,
                Err(e) if store.is_outage(&e).await => return (start, Err(e)),
                Err(e) => e,
            },
        };
        if end - start == 1 {
            refused(&rows[start], &error);
            continue;
        }
        let middle = start + (end - start) / 2;
        ranges.push((middle, end, None));
        ranges.push((start, middle, None));
    }
    (rows.len(), Ok(()))
}

/// Drops a row the database refused, counting it and (once per model and kind of
/// error) saying so: the writer's rows and those moved from a worker's log alike.
fn refused(store: &Store, row: &Encoded, error: &WriteError) {
    metrics::counter!(
        "ferroserve_prediction_log_refused_total",
        "model" => row.model.to_string()
    )
    .increment(1);
    let key = (row.model.clone(), error.kind());
    let first_of_its_kind = {
        let mut told = store
            .predictions
            .refusals_told
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        told.len() < REFUSALS_TOLD && told.insert(key)
    };
    if first_of_its_kind {
        tracing::warn!(
            model = %row.model,
            "the prediction log of model {}: the database refused an entry ({error}; {} \
             bytes of JSON); it was dropped, and so are further entries it refuses so \
             (counted in ferroserve_prediction_log_refused_total, told once per model and \
             kind of error); later entries are logged",
            row.model,
            row.inputs.len() + row.outputs.len()
        );
    }
}

impl Store {
    /// Inserts `rows` in one transaction, [`ROWS_PER_INSERT`] rows and at most
    /// [`STATEMENT_BYTES`] of text per statement (a larger row alone): a statement's
    /// own cost (a round trip to SQLite's thread, or to the server) is what a
    /// row-per-statement insert spends most on.
    pub(in crate::store) async fn insert_predictions(
        &self,
        rows: &[Encoded],
    ) -> Result<(), sqlx::Error> {
        let mut statements: Vec<&[Encoded]> = Vec::new();
        let (mut start, mut text) = (0, 0);
        for (i, row) in rows.iter().enumerate() {
            if i > start
                && (i - start == ROWS_PER_INSERT || text + row.text_len() > STATEMENT_BYTES)
            {
                statements.push(&rows[start..i]);
                (start, text) = (i, 0);
            }
            text += row.text_len();
        }
        if start < rows.len() {
            statements.push(&rows[start..]);
        }
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            for chunk in &statements {
                let mut sql = String::from(
                    "INSERT INTO predictions (at_ms, model, version, protocol, latency_us, \
                     request_id, inputs, outputs) VALUES ",
                );
                for i in 0..chunk.len() {
                    sql.push_str(if i == 0 { "" } else { ", " });
                    sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?)");
                }
                let sql = self.sql(&sql).into_owned();
                let mut q = sqlx::query(sqlx::AssertSqlSafe(&*sql));
                for r in chunk.iter() {
                    q = q
                        .bind(r.at_ms)
                        .bind(r.model.clone())
                        .bind(r.version as i64)
                        .bind(r.protocol.clone())
                        .bind(r.latency_us)
                        .bind(r.request_id.clone())
                        .bind(r.inputs.clone())
                        .bind(r.outputs.clone());
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }

    /// Writes `rows` of the prediction log in order, dropping and counting those the
    /// database refuses as such ([`write_in_halves`]); answers how many of them,
    /// from the first, are done (written or dropped), and the outage that stopped
    /// the rest, if any.
    pub(in crate::store) async fn write_log_rows(
        &self,
        rows: &[Encoded],
    ) -> (usize, Result<(), WriteError>) {
        write_in_halves(
            self,
            rows,
            |range| self.try_insert_predictions(&rows[range]),
            |row, error| refused(self, row, error),
        )
        .await
    }

    /// [`Store::insert_predictions`] within the database timeout.
    async fn try_insert_predictions(&self, rows: &[Encoded]) -> Result<(), WriteError> {
        match tokio::time::timeout(self.timeout, self.insert_predictions(rows)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WriteError::Sql(e)),
            Err(_) => Err(WriteError::TimedOut(self.timeout)),
        }
    }

    /// Whether a failed write is an outage, which passes by itself (then the rows
    /// are tried again later), rather than the database refusing these rows (then
    /// trying them again changes nothing). The database's own answer says which
    /// ([`crate::store::pool::is_transient`]: busy, locked, a deadlock, shutting down…
    /// are outages; a value, size or constraint it rejects is a refusal). No answer
    /// (the timeout, the pool's timeout for a connection, the pool closed) is an
    /// outage whatever a probe after it finds: the statement never reached the
    /// database, which may have come back in between (it was taken for a refusal
    /// then, and the row dropped). A lost connection is one only if the database
    /// does not answer a trivial query now either: a server may close the
    /// connection of a statement it refuses (MySQL and MariaDB do, past
    /// `max_allowed_packet`, and the client may see the connection go before it
    /// reads the error) while it is well; [`write_batch`] tries such a batch once
    /// more before it takes it for a refusal.
    async fn is_outage(&self, e: &WriteError) -> bool {
        match e {
            WriteError::TimedOut(_) => true,
            WriteError::Sql(e @ sqlx::Error::Database(_)) => crate::store::pool::is_transient(e),
            WriteError::Sql(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed,
            ) => true,
            WriteError::Sql(e) if crate::store::pool::is_transient(e) => !self.answers().await,
            WriteError::Sql(_) => false,
        }
    }

    /// Whether the database answers `SELECT 1` within the timeout.
    async fn answers(&self) -> bool {
        let probe = async {
            on_pool!(&self.pool, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))
        };
        matches!(tokio::time::timeout(self.timeout, probe).await, Ok(Ok(())))
    }

    /// Deletes `model`'s rows older than `max_age_days` and beyond the newest
    /// `max_rows`.
    async fn apply_retention(
        &self,
        model: &str,
        max_rows: Option<u64>,
        max_age_days: Option<f64>,
    ) -> Result<(), StoreError> {
        if let Some(days) = max_age_days {
            let cutoff = crate::store::now_ms() - (days * 86_400_000.0) as i64;
            let sql = self.sql("DELETE FROM predictions WHERE model = ? AND at_ms < ?");
            self.must_write("apply the log's max_age_days", async {
                on_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
                    .bind(model)
                    .bind(cutoff)
                    .execute(p)
                    .await
                    .map(|_| ()))
            })
            .await?;
        }
        if let Some(rows) = max_rows {
            // The id of the oldest row kept; everything older goes.
            let sql = self
                .sql(&format!(
                    "SELECT id FROM predictions WHERE model = ? ORDER BY id DESC LIMIT 1 OFFSET {}",
                    rows.saturating_sub(1)
                ))
                .into_owned();
            let oldest_kept: Option<i64> = self
                .must_write("apply the log's max_rows", async {
                    on_pool!(&self.pool, p => match sqlx::query(sqlx::AssertSqlSafe(&*sql)).bind(model).fetch_optional(p).await {
                        Ok(Some(row)) => row.try_get::<i64, _>("id").map(Some),
                        Ok(None) => Ok(None),
                        Err(e) => Err(e),
                    })
                })
                .await?;
            if let Some(id) = oldest_kept {
                let sql = self.sql("DELETE FROM predictions WHERE model = ? AND id < ?");
                self.must_write("apply the log's max_rows", async {
                    on_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
                        .bind(model)
                        .bind(id)
                        .execute(p)
                        .await
                        .map(|_| ()))
                })
                .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::PredictionQuery;
    use super::*;

    fn row(model: &str, inputs: &str) -> Encoded {
        Encoded {
            at_ms: 1,
            model: model.into(),
            version: 1,
            protocol: "v2".into(),
            latency_us: 1,
            request_id: "00".into(),
            inputs: inputs.into(),
            outputs: "{}".into(),
        }
    }

    async fn stored_inputs(store: &Store) -> Vec<String> {
        let q = PredictionQuery {
            limit: 1000,
            ..PredictionQuery::default()
        };
        let rows = store.prediction_page("m", &q, None, 1000).await.unwrap();
        rows.into_iter()
            .map(|r| r.parsed().inputs.to_string())
            .collect()
    }

    /// A batch holding rows the database refuses (a trigger's refusal, as a value
    /// or size it rejects) is written but for those: they are dropped, the rest
    /// written in order, and the batch is done (it was tried again forever). An
    /// outage (the pool closed: no connection, no answer to a probe) keeps every
    /// row for the next try.
    #[tokio::test]
    async fn refused_rows_are_dropped_and_an_outage_keeps_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/p.db", dir.path().display());
        let store = Store::open(&url, Duration::from_secs(2), true)
            .await
            .unwrap();
        on_pool!(&store.pool, p => sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON predictions WHEN NEW.inputs LIKE '%bad%' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(p)
        .await
        .map(|_| ()))
        .unwrap();
        let mut batch: Vec<Encoded> = (0..9)
            .map(|i| {
                let text = if i % 4 == 1 {
                    format!("{{\"bad\":{i}}}")
                } else {
                    format!("{{\"ok\":{i}}}")
                };
                row("m", &text)
            })
            .collect();
        assert!(write_batch(&store, &mut batch).await.is_ok());
        assert!(batch.is_empty());
        let want: Vec<String> = [0, 2, 3, 4, 6, 7, 8]
            .iter()
            .map(|i| format!("{{\"ok\":{i}}}"))
            .collect();
        assert_eq!(stored_inputs(&store).await, want);
        let told = store.predictions.refusals_told.lock().unwrap().len();
        assert_eq!(told, 1);

        store.close().await;
        let mut batch = vec![row("m", "{\"ok\":9}"), row("m", "{\"bad\":10}")];
        assert!(write_batch(&store, &mut batch).await.is_err());
        assert_eq!(batch.len(), 2);
    }

    /// A write that got no answer (a pool or statement timeout, the pool closed) is
    /// an outage whatever a probe after it finds: the database may have come back
    /// in between (it was taken as a refusal then, and a row dropped). Only the
    /// database's own answer may be a refusal.
    #[tokio::test]
    async fn no_answer_is_an_outage_even_when_the_database_answers_again() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/p.db", dir.path().display());
        let store = Store::open(&url, Duration::from_secs(2), true)
            .await
            .unwrap();
        assert!(store.answers().await);
        for e in [
            WriteError::Sql(sqlx::Error::PoolTimedOut),
            WriteError::Sql(sqlx::Error::PoolClosed),
            WriteError::Sql(sqlx::Error::WorkerCrashed),
            WriteError::TimedOut(Duration::from_secs(3)),
        ] {
            assert!(store.is_outage(&e).await, "{e}");
        }
    }
}
