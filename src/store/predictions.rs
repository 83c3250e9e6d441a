//! The prediction log: sampled requests with their answers, written to the
//! `predictions` table in batches by a background task, read back for reports.
//!
//! Invariant: logging never slows or fails a prediction. The request path only
//! tries to put an entry in a bounded buffer ([`PredictionLog::offer`]); a full
//! buffer drops the entry and counts it (`ferroserve_prediction_log_dropped_total`).
//! Inputs and outputs are turned into JSON by the writer, not by the request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::pool::on_pool;
use super::{Store, StoreError};
use crate::model_config::LogConfig;
use crate::tensor::NamedTensor;

/// Entries waiting for the writer; past this they are dropped and counted.
pub const LOG_BUFFER: usize = 4096;
/// Most rows written in one transaction.
const BATCH: usize = 256;
/// How long the writer waits for more entries when a batch is not full.
const LINGER: Duration = Duration::from_millis(20);
/// Rows per INSERT statement (8 parameters each: far below every database's limit).
const ROWS_PER_INSERT: usize = 64;
/// How often the writer applies each model's `max_rows` and `max_age_days`.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// When it first does, after the start: once the models have loaded, so that the
/// limits of a config changed while the server was down apply soon.
const RETENTION_FIRST: Duration = Duration::from_secs(5);

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
    /// The model's retention when the entry was made.
    max_rows: Option<u64>,
    max_age_days: Option<f64>,
}

impl PendingPrediction {
    /// The entry for one sampled prediction: the request's inputs (a copy the log
    /// owns), its answer, and the model's `[log]` retention as it is now.
    pub fn new(
        model: Arc<str>,
        version: u64,
        protocol: &'static str,
        latency: Duration,
        inputs: Vec<NamedTensor>,
        outputs: &[NamedTensor],
        log: &LogConfig,
    ) -> PendingPrediction {
        PendingPrediction {
            at_ms: super::now_ms(),
            model,
            version,
            protocol,
            latency_us: latency.as_micros() as i64,
            request_id: fastrand::u128(..),
            inputs,
            outputs: outputs.to_vec(),
            max_rows: log.max_rows,
            max_age_days: log.max_age_days,
        }
    }
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
    /// full. Never waits.
    pub fn offer(&self, entry: PendingPrediction) {
        if self.tx.try_send(entry).is_err() {
            crate::metrics::record_store_dropped("predictions");
        }
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

async fn write_predictions(
    store: Arc<Store>,
    mut rx: tokio::sync::mpsc::Receiver<PendingPrediction>,
    stop: CancellationToken,
    drain: Duration,
) {
    let mut pending: Vec<PendingPrediction> = Vec::with_capacity(BATCH);
    let mut batch: Vec<Encoded> = Vec::with_capacity(BATCH);
    // Each model's latest retention, applied every RETENTION_EVERY: that of its
    // entries, and the served models' configs' (which win).
    let mut retention: std::collections::HashMap<Arc<str>, Retention> =
        std::collections::HashMap::new();
    let mut next_retention = tokio::time::Instant::now() + RETENTION_FIRST;
    let mut pause = Duration::from_millis(100);
    loop {
        if batch.is_empty() {
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
                }
                () = tokio::time::sleep_until(next_retention) => {}
                () = stop.cancelled() => break,
            }
            for p in pending.drain(..) {
                retention.insert(p.model.clone(), (p.max_rows, p.max_age_days));
                batch.push(encode(p));
            }
        }
        if !batch.is_empty() {
            match tokio::time::timeout(store.timeout, store.insert_predictions(&batch)).await {
                Ok(Ok(())) => {
                    store.worked();
                    batch.clear();
                    pause = Duration::from_millis(100);
                }
                _ => {
                    crate::metrics::record_store_error();
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
        while let Some(p) = rx.recv().await {
            batch.push(encode(p));
        }
        if !batch.is_empty() {
            let _ = store.insert_predictions(&batch).await;
        }
    })
    .await;
}

fn encode(mut p: PendingPrediction) -> Encoded {
    Encoded {
        at_ms: p.at_ms,
        model: p.model,
        version: p.version,
        protocol: p.protocol.into(),
        latency_us: p.latency_us,
        request_id: format!("{:032x}", p.request_id).into(),
        inputs: tensors_json(&mut p.inputs).into(),
        outputs: tensors_json(&mut p.outputs).into(),
    }
}

impl Store {
    /// Offers an entry to the prediction log (never waits; see [`PredictionLog`]).
    pub fn log_prediction(&self, entry: PendingPrediction) {
        self.predictions.offer(entry);
    }

    /// Inserts `rows` in one transaction, [`ROWS_PER_INSERT`] rows per statement:
    /// a statement's own cost (a round trip to SQLite's thread, or to the server)
    /// is what a row-per-statement insert spends most on.
    pub(super) async fn insert_predictions(&self, rows: &[Encoded]) -> Result<(), sqlx::Error> {
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            for chunk in rows.chunks(ROWS_PER_INSERT) {
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
                for r in chunk {
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
    use crate::tensor::{Tensor, TensorData};

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
        let e = encode(p);
        assert_eq!(e.request_id.len(), 32);
        assert!(e.request_id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            (&*e.inputs, &*e.outputs),
            (r#"{"x":[[1.0]]}"#, r#"{"y":[[1.0]]}"#)
        );
        assert_eq!((e.version, e.latency_us, &*e.protocol), (3, 1500, "v2"));
    }
}
