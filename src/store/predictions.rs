//! The prediction log: sampled requests with their answers, written to the
//! `predictions` table in batches by a background task, read back for reports.
//!
//! Invariants:
//! * logging never slows or fails a prediction. The request path only tries to
//!   put an entry in a buffer bounded by entries ([`LOG_BUFFER`]) and by the bytes
//!   of the tensors it holds ([`LOG_BUFFER_BYTES`]) ([`PredictionLog::offer`]); a
//!   full buffer drops the entry and counts it
//!   (`ferroserve_store_dropped_total{buffer="predictions"}`). Inputs and outputs are
//!   turned into JSON by the writer, not by the request;
//! * one entry's inputs and outputs take at most [`MAX_ENTRY_JSON_BYTES`] of JSON
//!   together: a larger entry is logged with a marker in place of its tensors
//!   (`ferroserve_prediction_log_oversized_total{model}`);
//! * an outage (the database cannot be reached or answer, or answers that it cannot
//!   take the statement now) holds the writer, which tries its batch again until the
//!   database is back: nothing logged during an outage is lost to it. A row the
//!   database refuses as such (too large for it, a value or constraint it rejects)
//!   never holds the log: the batch is written in halves down to single rows, and
//!   the rows still refused are dropped and counted
//!   (`ferroserve_prediction_log_refused_total{model}`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::pool::on_pool;
use super::{Store, StoreError};
use crate::model_config::LogConfig;
use crate::tensor::{NamedTensor, TensorData};

/// Entries waiting for the writer; past this they are dropped and counted.
pub const LOG_BUFFER: usize = 4096;
/// Bytes of tensors the entries waiting for the writer may hold (64 MiB); past this
/// they are dropped and counted, as past [`LOG_BUFFER`] entries.
pub const LOG_BUFFER_BYTES: usize = 64 << 20;
/// Most JSON one entry's inputs and outputs may take together (1 MiB). A larger
/// entry is logged with a marker (a JSON string saying so and naming each tensor's
/// type and shape) in place of its inputs and outputs: the row still says that the
/// request was made, when, by which version and how fast. A row this size stays
/// far below what every database takes in one statement (MySQL's and MariaDB's
/// `max_allowed_packet` is 16 MiB by default or more).
pub const MAX_ENTRY_JSON_BYTES: usize = 1 << 20;
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

/// What the request path hands over: cheap to build (the tensors it already has,
/// moved; no text), encoded later by the writer.
pub struct PendingPrediction {
    at_ms: i64,
    model: Arc<str>,
    version: u64,
    protocol: &'static str,
    latency_us: i64,
    /// 128 random bits, written as 32 hex digits by the writer.
    request_id: u128,
    inputs: Vec<NamedTensor>,
    outputs: Vec<NamedTensor>,
    /// Set, and the tensors left out, when their JSON cannot fit
    /// [`MAX_ENTRY_JSON_BYTES`] (seen without writing it): what they were, for the
    /// marker.
    omitted: Option<Omitted>,
    /// What the entry holds in the buffer, counted against [`LOG_BUFFER_BYTES`].
    bytes: usize,
    /// The model's retention when the entry was made.
    max_rows: Option<u64>,
    max_age_days: Option<f64>,
}

/// The inputs and outputs of an entry too large to log, described.
struct Omitted {
    inputs: String,
    outputs: String,
}

impl PendingPrediction {
    /// The entry for one sampled prediction: the request's inputs (a copy the log
    /// owns), its answer, and the model's `[log]` retention as it is now. Tensors
    /// whose JSON would surely pass [`MAX_ENTRY_JSON_BYTES`] are not kept (nor the
    /// outputs copied): only their description.
    pub fn new(
        model: Arc<str>,
        version: u64,
        protocol: &'static str,
        latency: Duration,
        inputs: Vec<NamedTensor>,
        outputs: &[NamedTensor],
        log: &LogConfig,
    ) -> PendingPrediction {
        let (inputs, outputs, omitted) =
            if json_floor(&inputs) + json_floor(outputs) > MAX_ENTRY_JSON_BYTES {
                let omitted = Omitted {
                    inputs: describe(&inputs),
                    outputs: describe(outputs),
                };
                (Vec::new(), Vec::new(), Some(omitted))
            } else {
                (inputs, outputs.to_vec(), None)
            };
        let bytes = match &omitted {
            Some(o) => o.inputs.len() + o.outputs.len(),
            None => tensor_bytes(&inputs) + tensor_bytes(&outputs),
        };
        PendingPrediction {
            at_ms: super::now_ms(),
            model,
            version,
            protocol,
            latency_us: latency.as_micros() as i64,
            request_id: fastrand::u128(..),
            inputs,
            outputs,
            omitted,
            bytes,
            max_rows: log.max_rows,
            max_age_days: log.max_age_days,
        }
    }
}

/// Fewest bytes of JSON `tensors` can take, without writing it: each element is
/// at least one character and a separator; a string is its bytes and two quotes
/// at least (base64 takes more).
fn json_floor(tensors: &[NamedTensor]) -> usize {
    tensors
        .iter()
        .map(|(name, t)| {
            name.len()
                + match t.data() {
                    TensorData::Bytes(v) => v.iter().map(|b| b.len() + 3).sum(),
                    other => 2 * other.len(),
                }
        })
        .sum()
}

/// The memory `tensors` hold, about.
fn tensor_bytes(tensors: &[NamedTensor]) -> usize {
    tensors
        .iter()
        .map(|(name, t)| {
            name.len()
                + match t.data() {
                    TensorData::Bytes(v) => v.iter().map(|b| b.len() + 24).sum(),
                    other => other.len() * other.dtype().fixed_size().unwrap_or(8),
                }
        })
        .sum()
}

/// `x: FP32 [30000, 4]; y: INT64 [30000]`: each tensor's name, type and shape.
fn describe(tensors: &[NamedTensor]) -> String {
    let mut parts: Vec<String> = tensors
        .iter()
        .map(|(name, t)| format!("{name}: {} {:?}", t.dtype(), t.shape()))
        .collect();
    parts.sort_unstable();
    parts.join("; ")
}

/// What is logged in place of tensors too large to log: a JSON string saying so.
fn omitted_json(what: &str, tensors: &str) -> String {
    let tensors = if tensors.is_empty() { "none" } else { tensors };
    let text = format!(
        "not logged: the {what} of this request are over the prediction log's limit of \
         {MAX_ENTRY_JSON_BYTES} bytes of JSON per entry (inputs and outputs together); \
         they were {tensors}"
    );
    serde_json::Value::String(text).to_string()
}

/// `{"name": nested values, …}` as JSON text, names in order, written straight
/// from the tensors' buffers (no `Value` tree).
fn tensors_json(tensors: &mut [NamedTensor]) -> String {
    tensors.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(64);
    out.push(b'{');
    for (i, (name, t)) in tensors.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a string or a tensor to a Vec cannot fail (non-finite floats are
        // written as the strings "NaN", "Infinity", "-Infinity").
        let _ = serde_json::to_writer(&mut out, name);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, &crate::json_tensor::NestedJson::whole(t));
    }
    out.push(b'}');
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_else(|_| "null".to_string())
}

/// One row read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedPrediction {
    pub id: i64,
    pub at_ms: i64,
    pub model: String,
    pub version: u64,
    pub protocol: String,
    pub latency_us: i64,
    pub request_id: String,
    pub inputs: Value,
    pub outputs: Value,
}

/// What `GET /v1/models/{m}/predictions` asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PredictionQuery {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: usize,
}

/// The buffer between requests and the writer.
pub struct PredictionLog {
    tx: tokio::sync::mpsc::Sender<PendingPrediction>,
    rx: Mutex<Option<tokio::sync::mpsc::Receiver<PendingPrediction>>>,
    /// What the entries offered and not yet encoded by the writer hold (their
    /// `bytes`): the channel bounds entries, this bounds their size, so that large
    /// tensors cannot fill memory while the database is down.
    bytes: AtomicUsize,
    /// Every served model's `[log]` retention as its config says now.
    retention: std::sync::OnceLock<RetentionSource>,
}

/// Each served model's `max_rows` and `max_age_days` as its config says now.
pub type RetentionSource = Arc<dyn Fn() -> Vec<(Arc<str>, Retention)> + Send + Sync>;

/// A model's `[log]` limits: `max_rows`, `max_age_days`.
pub type Retention = (Option<u64>, Option<f64>);

impl PredictionLog {
    pub(super) fn new() -> PredictionLog {
        let (tx, rx) = tokio::sync::mpsc::channel(LOG_BUFFER);
        PredictionLog {
            tx,
            rx: Mutex::new(Some(rx)),
            bytes: AtomicUsize::new(0),
            retention: std::sync::OnceLock::new(),
        }
    }

    /// Where the writer reads the models' limits when it applies them: without
    /// it, only the limits of entries logged since the start apply (a model that
    /// logs no more, or logged before a restart, would keep its rows).
    pub fn set_retention_source(&self, source: RetentionSource) {
        let _ = self.retention.set(source);
    }

    /// Hands an entry to the writer, or drops and counts it when the buffer is
    /// full (of entries or of bytes). Never waits.
    pub fn offer(&self, entry: PendingPrediction) {
        let bytes = entry.bytes;
        let held = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if held > LOG_BUFFER_BYTES || self.tx.try_send(entry).is_err() {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            crate::metrics::record_store_dropped("predictions");
        }
    }

    /// The writer took `entry` out of the buffer.
    fn taken(&self, entry: &PendingPrediction) {
        self.bytes.fetch_sub(entry.bytes, Ordering::Relaxed);
    }
}

/// Starts the writer unless it already runs.
pub(super) fn start_writer(
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

/// A row ready to insert. Its text is shared (`Arc<str>`) or static, so that binding
/// it to a statement, again when a failed batch is retried, copies nothing.
pub(super) struct Encoded {
    at_ms: i64,
    model: Arc<str>,
    version: u64,
    protocol: Arc<str>,
    latency_us: i64,
    request_id: Arc<str>,
    inputs: Arc<str>,
    outputs: Arc<str>,
}

impl Encoded {
    /// About the text the row puts in a statement.
    fn text_len(&self) -> usize {
        self.inputs.len() + self.outputs.len() + self.model.len() + 96
    }
}

/// Why a write of rows failed.
enum WriteError {
    /// The database answered an error, or the connection failed.
    Sql(sqlx::Error),
    /// No answer within the database timeout.
    TimedOut(Duration),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Sql(e) => f.write_str(&super::pool::describe_error(e)),
            WriteError::TimedOut(t) => write!(f, "no answer within {t:?}"),
        }
    }
}

impl WriteError {
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
    /// The (model, kind of error) refusals already warned about.
    refusals_told: HashSet<(Arc<str>, String)>,
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
            match write_batch(&store, &mut batch, &mut notes).await {
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
            if write_batch(&store, &mut batch, &mut notes).await.is_err() {
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
/// are found by writing the batch in halves, down to single rows, and dropped.
async fn write_batch(
    store: &Store,
    batch: &mut Vec<Encoded>,
    notes: &mut WriterNotes,
) -> Result<(), WriteError> {
    let first = match store.try_insert_predictions(batch).await {
        Ok(()) => {
            batch.clear();
            return Ok(());
        }
        Err(e) => e,
    };
    crate::metrics::record_store_error();
    if store.is_outage(&first).await {
        return Err(first);
    }
    // Ranges still to write, the first to write last; each with the error it
    // already failed with, if any.
    let mut done = vec![false; batch.len()];
    let mut ranges: Vec<(usize, usize, Option<WriteError>)> = vec![(0, batch.len(), Some(first))];
    let mut result = Ok(());
    while let Some((start, end, failed)) = ranges.pop() {
        let error = match failed {
            Some(e) => e,
            None => match store.try_insert_predictions(&batch[start..end]).await {
                Ok(()) => {
                    done[start..end].fill(true);
                    continue;
                }
                Err(e) if store.is_outage(&e).await => {
                    result = Err(e);
                    break;
                }
                Err(e) => e,
            },
        };
        if end - start == 1 {
            refused(&batch[start], &error, notes);
            done[start] = true;
            continue;
        }
        let middle = start + (end - start) / 2;
        ranges.push((middle, end, None));
        ranges.push((start, middle, None));
    }
    let mut done = done.into_iter();
    batch.retain(|_| !done.next().unwrap_or(true));
    result
}

/// Drops a row the database refused, counting it and (once per model and kind of
/// error) saying so.
fn refused(row: &Encoded, error: &WriteError, notes: &mut WriterNotes) {
    metrics::counter!(
        "ferroserve_prediction_log_refused_total",
        "model" => row.model.to_string()
    )
    .increment(1);
    let key = (row.model.clone(), error.kind());
    if notes.refusals_told.len() < REFUSALS_TOLD && notes.refusals_told.insert(key) {
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

/// The row for an entry, and whether its tensors were too large to log (then
/// replaced by a marker, [`MAX_ENTRY_JSON_BYTES`]).
fn encode(mut p: PendingPrediction) -> (Encoded, bool) {
    let (inputs, outputs, oversized) = match p.omitted.take() {
        Some(o) => (
            omitted_json("inputs", &o.inputs),
            omitted_json("outputs", &o.outputs),
            true,
        ),
        None => {
            let inputs = tensors_json(&mut p.inputs);
            let outputs = tensors_json(&mut p.outputs);
            if inputs.len() + outputs.len() > MAX_ENTRY_JSON_BYTES {
                (
                    omitted_json("inputs", &describe(&p.inputs)),
                    omitted_json("outputs", &describe(&p.outputs)),
                    true,
                )
            } else {
                (inputs, outputs, false)
            }
        }
    };
    let row = Encoded {
        at_ms: p.at_ms,
        model: p.model,
        version: p.version,
        protocol: p.protocol.into(),
        latency_us: p.latency_us,
        request_id: format!("{:032x}", p.request_id).into(),
        inputs: inputs.into(),
        outputs: outputs.into(),
    };
    (row, oversized)
}

impl Store {
    /// Offers an entry to the prediction log (never waits; see [`PredictionLog`]).
    pub fn log_prediction(&self, entry: PendingPrediction) {
        self.predictions.offer(entry);
    }

    /// Inserts `rows` in one transaction, [`ROWS_PER_INSERT`] rows and at most
    /// [`STATEMENT_BYTES`] of text per statement (a larger row alone): a statement's
    /// own cost (a round trip to SQLite's thread, or to the server) is what a
    /// row-per-statement insert spends most on.
    pub(super) async fn insert_predictions(&self, rows: &[Encoded]) -> Result<(), sqlx::Error> {
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
    /// ([`super::pool::is_transient`]: busy, locked, a deadlock, shutting down…
    /// are outages; a value, size or constraint it rejects is a refusal); no answer
    /// within the timeout is an outage. A lost connection is one only if the
    /// database does not answer a trivial query now either: a server may close the
    /// connection of a statement it refuses (MySQL and MariaDB do, past
    /// `max_allowed_packet`, and the client may see the connection go before it
    /// reads the error) while it is well.
    async fn is_outage(&self, e: &WriteError) -> bool {
        match e {
            WriteError::TimedOut(_) => true,
            WriteError::Sql(e @ sqlx::Error::Database(_)) => super::pool::is_transient(e),
            WriteError::Sql(e) if super::pool::is_transient(e) => !self.answers().await,
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
            let cutoff = super::now_ms() - (days * 86_400_000.0) as i64;
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

    /// The `limit` oldest rows of the log, with their ids, as they are stored (a
    /// worker's log, moved into the main server's: `imports`).
    pub(super) async fn oldest_predictions(
        &self,
        limit: usize,
    ) -> Result<Vec<(i64, Encoded)>, sqlx::Error> {
        let sql = format!(
            "SELECT id, at_ms, model, version, protocol, latency_us, request_id, inputs, \
             outputs FROM predictions ORDER BY id LIMIT {limit}"
        );
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(&*sql)).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    let text = |column: &str| r.try_get::<String, _>(column).map(Arc::<str>::from);
                    Ok((
                        r.try_get("id")?,
                        Encoded {
                            at_ms: r.try_get("at_ms")?,
                            model: text("model")?,
                            version: r.try_get::<i64, _>("version")? as u64,
                            protocol: text("protocol")?,
                            latency_us: r.try_get("latency_us")?,
                            request_id: text("request_id")?,
                            inputs: text("inputs")?,
                            outputs: text("outputs")?,
                        },
                    ))
                })
                .collect()
        })
    }

    /// `model`'s logged predictions in time order (oldest first) within the query.
    pub async fn predictions(
        &self,
        model: &str,
        query: &PredictionQuery,
    ) -> Result<Vec<LoggedPrediction>, StoreError> {
        let mut sql = String::from(
            "SELECT id, at_ms, model, version, protocol, latency_us, request_id, inputs, outputs \
             FROM predictions WHERE model = ?",
        );
        if query.since_ms.is_some() {
            sql.push_str(" AND at_ms >= ?");
        }
        if query.until_ms.is_some() {
            sql.push_str(" AND at_ms < ?");
        }
        sql.push_str(&format!(
            " ORDER BY at_ms, id LIMIT {}",
            query.limit.clamp(1, 100_000)
        ));
        let sql = self.sql(&sql).into_owned();
        let rows: Result<Vec<LoggedPrediction>, sqlx::Error> = on_pool!(&self.pool, p => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(&*sql)).bind(model);
            if let Some(s) = query.since_ms {
                q = q.bind(s);
            }
            if let Some(u) = query.until_ms {
                q = q.bind(u);
            }
            match tokio::time::timeout(self.timeout * 6, q.fetch_all(p)).await {
                Err(_) => Err(sqlx::Error::PoolTimedOut),
                Ok(Err(e)) => Err(e),
                Ok(Ok(rows)) => rows
                    .iter()
                    .map(|r| {
                        let inputs: String = r.try_get("inputs")?;
                        let outputs: String = r.try_get("outputs")?;
                        Ok(LoggedPrediction {
                            id: r.try_get("id")?,
                            at_ms: r.try_get("at_ms")?,
                            model: r.try_get("model")?,
                            version: r.try_get::<i64, _>("version")? as u64,
                            protocol: r.try_get("protocol")?,
                            latency_us: r.try_get("latency_us")?,
                            request_id: r.try_get("request_id")?,
                            inputs: serde_json::from_str(&inputs).unwrap_or(Value::Null),
                            outputs: serde_json::from_str(&outputs).unwrap_or(Value::Null),
                        })
                    })
                    .collect(),
            }
        });
        let rows = rows.map_err(|e| self.unavailable("read the prediction log", e))?;
        self.worked();
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    /// The log's JSON is what a map from names to nested values serialises to:
    /// names in order, nested by shape, non-finite floats and raw bytes as the
    /// answers write them.
    #[test]
    fn tensors_json_equals_a_sorted_map_of_nested_values() {
        let mut tensors: Vec<NamedTensor> = vec![
            (
                "probabilities".to_string(),
                Tensor::new(
                    vec![2, 2],
                    TensorData::F32(vec![0.25, f32::NAN, f32::INFINITY, -1.5]),
                )
                .unwrap(),
            ),
            (
                "label".to_string(),
                Tensor::new(vec![2], TensorData::I64(vec![3, -4])).unwrap(),
            ),
            (
                "text \"quoted\"".to_string(),
                Tensor::new(
                    vec![2],
                    TensorData::Bytes(vec![b"caf\xc3\xa9".to_vec(), vec![0xff, 0x00]]),
                )
                .unwrap(),
            ),
        ];
        let reference: std::collections::BTreeMap<&str, crate::json_tensor::NestedJson<'_>> =
            tensors
                .iter()
                .map(|(n, t)| (n.as_str(), crate::json_tensor::NestedJson::whole(t)))
                .collect();
        let reference = serde_json::to_string(&reference).unwrap();
        let written = tensors_json(&mut tensors);
        assert_eq!(written, reference);
        assert!(
            written.starts_with(
                r#"{"label":[3,-4],"probabilities":[[0.25,"NaN"],["Infinity",-1.5]],"#
            ),
            "{written}"
        );
        assert_eq!(tensors_json(&mut []), "{}");
    }

    /// The request id is 32 hex digits, as before it was kept as a number.
    #[test]
    fn a_pending_entry_encodes_its_request_id_as_32_hex_digits() {
        let row = Tensor::new(vec![1, 1], TensorData::F64(vec![1.0])).unwrap();
        let p = PendingPrediction::new(
            "m".into(),
            3,
            "v2",
            Duration::from_micros(1500),
            vec![("x".to_string(), row.clone())],
            &[("y".to_string(), row)],
            &LogConfig::default(),
        );
        let (e, oversized) = encode(p);
        assert!(!oversized);
        assert_eq!(e.request_id.len(), 32);
        assert!(e.request_id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            (&*e.inputs, &*e.outputs),
            (r#"{"x":[[1.0]]}"#, r#"{"y":[[1.0]]}"#)
        );
        assert_eq!((e.version, e.latency_us, &*e.protocol), (3, 1500, "v2"));
    }

    fn entry(model: &str, inputs: Vec<NamedTensor>, outputs: &[NamedTensor]) -> PendingPrediction {
        PendingPrediction::new(
            model.into(),
            1,
            "v2",
            Duration::from_micros(10),
            inputs,
            outputs,
            &LogConfig::default(),
        )
    }

    fn f64_tensor(name: &str, shape: Vec<usize>, value: f64) -> NamedTensor {
        let n = shape.iter().product();
        (
            name.to_string(),
            Tensor::new(shape, TensorData::F64(vec![value; n])).unwrap(),
        )
    }

    /// Tensors whose JSON cannot fit the limit are not kept past the request (nor
    /// the outputs copied): the entry holds their description, and is logged with
    /// a marker naming each one's type and shape.
    #[test]
    fn tensors_surely_too_large_are_described_not_kept() {
        let p = entry(
            "m",
            vec![f64_tensor("x", vec![300_000, 2], 0.0)],
            &[f64_tensor("y", vec![300_000], 1.0)],
        );
        assert!(p.inputs.is_empty() && p.outputs.is_empty());
        assert!(p.bytes < 1000, "{}", p.bytes);
        let (row, oversized) = encode(p);
        assert!(oversized);
        let inputs: Value = serde_json::from_str(&row.inputs).unwrap();
        let outputs: Value = serde_json::from_str(&row.outputs).unwrap();
        let (inputs, outputs) = (inputs.as_str().unwrap(), outputs.as_str().unwrap());
        assert!(inputs.starts_with("not logged: the inputs"), "{inputs}");
        assert!(
            inputs.ends_with("they were x: FP64 [300000, 2]"),
            "{inputs}"
        );
        assert!(outputs.ends_with("they were y: FP64 [300000]"), "{outputs}");
    }

    /// Tensors whose JSON turns out too large once written get the same marker;
    /// those within the limit are logged whole.
    #[test]
    fn tensors_too_large_once_written_get_the_marker() {
        // Under the floor (2 bytes an element), over the limit once written.
        let p = entry(
            "m",
            vec![f64_tensor("x", vec![100_000, 2], 0.123_456_789)],
            &[],
        );
        assert_eq!(p.inputs.len(), 1);
        let (row, oversized) = encode(p);
        assert!(oversized);
        assert!(row.inputs.contains("x: FP64 [100000, 2]"), "{}", row.inputs);
        assert!(row.outputs.contains("they were none"), "{}", row.outputs);
        let p = entry(
            "m",
            vec![f64_tensor("x", vec![1000, 2], 0.123_456_789)],
            &[],
        );
        let (row, oversized) = encode(p);
        assert!(!oversized);
        assert!(row.inputs.starts_with(r#"{"x":[[0.123456789,"#));
    }

    /// The buffer is bounded by the bytes of the tensors it holds too: past
    /// LOG_BUFFER_BYTES an entry is dropped (it was bounded by entries only, 4096
    /// of any size), and the writer taking entries frees room.
    #[test]
    fn the_buffer_is_bounded_by_bytes() {
        let log = PredictionLog::new();
        // 4 MB each (zeroed pages the test never touches); 16 fit in 64 MiB.
        let large = || entry("m", vec![f64_tensor("x", vec![500_000], 0.0)], &[]);
        for _ in 0..20 {
            log.offer(large());
        }
        let mut rx = log.rx.lock().unwrap().take().unwrap();
        assert_eq!(rx.len(), 16);
        assert_eq!(log.bytes.load(Ordering::Relaxed), 16 * 4_000_001);
        let taken = rx.try_recv().unwrap();
        log.taken(&taken);
        log.offer(large());
        assert_eq!(rx.len(), 16);
        // Small entries still go in while large ones are refused.
        log.offer(entry("m", vec![f64_tensor("x", vec![1], 0.0)], &[]));
        assert_eq!(rx.len(), 17);
    }

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
        let rows = store.predictions("m", &q).await.unwrap();
        rows.into_iter().map(|r| r.inputs.to_string()).collect()
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
        let mut notes = WriterNotes::default();
        assert!(write_batch(&store, &mut batch, &mut notes).await.is_ok());
        assert!(batch.is_empty());
        let want: Vec<String> = [0, 2, 3, 4, 6, 7, 8]
            .iter()
            .map(|i| format!("{{\"ok\":{i}}}"))
            .collect();
        assert_eq!(stored_inputs(&store).await, want);
        assert_eq!(notes.refusals_told.len(), 1);

        store.close().await;
        let mut batch = vec![row("m", "{\"ok\":9}"), row("m", "{\"bad\":10}")];
        assert!(write_batch(&store, &mut batch, &mut notes).await.is_err());
        assert_eq!(batch.len(), 2);
    }
}
