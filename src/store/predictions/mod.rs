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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::pool::on_pool;
use super::Store;
use crate::model_config::LogConfig;
use crate::tensor::{NamedTensor, TensorData};

mod writer;

pub(super) use writer::{start_writer, write_in_halves, WriteError};

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

/// Most bytes of a client's own request id the log keeps: the `request_id`
/// column's size (`VARCHAR(64)` in every database's schema).
pub const MAX_CLIENT_REQUEST_ID_BYTES: usize = 64;

/// The id a logged request is stored under, and that its answer tells the client
/// (`x-request-id`): the client's own when it gave one the log can keep
/// ([`RequestId::client`]), else 128 random bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestId {
    /// The client's own id, checked by [`RequestId::client`]. Shared, so that the
    /// entry and the answer hold one copy.
    Client(Arc<str>),
    /// Made here, written as 32 hex digits.
    Generated(u128),
}

impl RequestId {
    /// A client's id as the log keeps it: 1 to [`MAX_CLIENT_REQUEST_ID_BYTES`]
    /// bytes of visible ASCII (letters, digits, punctuation; no space or control
    /// character), so that it fits the column and goes back in a header or gRPC
    /// metadata as it came. `None` for any other: the request is then logged under
    /// a generated id, which its answer tells; a prediction is never refused for
    /// the log's sake.
    pub fn client(id: &str) -> Option<RequestId> {
        let fits = !id.is_empty()
            && id.len() <= MAX_CLIENT_REQUEST_ID_BYTES
            && id.bytes().all(|b| b.is_ascii_graphic());
        fits.then(|| RequestId::Client(id.into()))
    }

    /// A new random id.
    pub fn generated() -> RequestId {
        RequestId::Generated(fastrand::u128(..))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Client(id) => f.write_str(id),
            RequestId::Generated(bits) => write!(f, "{bits:032x}"),
        }
    }
}

/// What the request path hands over: cheap to build (the tensors it already has,
/// moved; no text), encoded later by the writer.
pub struct PendingPrediction {
    at_ms: i64,
    model: Arc<str>,
    version: u64,
    protocol: &'static str,
    latency_us: i64,
    /// The client's id, or 128 random bits written as 32 hex digits by the writer.
    request_id: RequestId,
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
    /// The entry for one sampled prediction, under a generated id (see
    /// [`PendingPrediction::with_request_id`]): the request's inputs (a copy the
    /// log owns), its answer, and the model's `[log]` retention as it is now.
    /// Tensors whose JSON would surely pass [`MAX_ENTRY_JSON_BYTES`] are not kept
    /// (nor the outputs copied): only their description.
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
            request_id: RequestId::generated(),
            inputs,
            outputs,
            omitted,
            bytes,
            max_rows: log.max_rows,
            max_age_days: log.max_age_days,
        }
    }

    /// The entry, logged under the client's own id (one [`RequestId::client`]
    /// made) in place of the generated one.
    pub fn with_request_id(mut self, request_id: RequestId) -> PendingPrediction {
        self.request_id = request_id;
        self
    }

    /// The id the entry is logged under.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
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
    /// The (model, kind of error) refusals already warned about: shared by the
    /// writer and the move of workers' logs into this store, so that the process
    /// tells each once. Locked only to check and insert, never across an await.
    refusals_told: Mutex<std::collections::HashSet<(Arc<str>, String)>>,
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
            refusals_told: Mutex::default(),
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
        request_id: match p.request_id {
            RequestId::Client(id) => id,
            generated @ RequestId::Generated(_) => generated.to_string().into(),
        },
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

    /// A client's id is kept when it fits the column and a header as it came:
    /// 1 to 64 bytes of visible ASCII; the entry is then written under it.
    #[test]
    fn a_client_id_is_kept_only_as_visible_ascii_of_64_bytes_at_most() {
        for good in [
            "abc",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "a:b/c=d+e_f.g~",
        ] {
            assert_eq!(
                RequestId::client(good),
                Some(RequestId::Client(good.into()))
            );
        }
        let longest = "a".repeat(MAX_CLIENT_REQUEST_ID_BYTES);
        assert!(RequestId::client(&longest).is_some());
        let too_long = "a".repeat(MAX_CLIENT_REQUEST_ID_BYTES + 1);
        for bad in [
            "",
            &too_long,
            "a b",
            " a",
            "a\t",
            "a\n",
            "caf\u{e9}",
            "\u{7f}",
        ] {
            assert_eq!(RequestId::client(bad), None, "{bad:?}");
        }
        let p = entry("m", Vec::new(), &[]);
        assert!(matches!(p.request_id(), RequestId::Generated(_)));
        let (e, _) = encode(p.with_request_id(RequestId::client("mine").unwrap()));
        assert_eq!(&*e.request_id, "mine");
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
}
