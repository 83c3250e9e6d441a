//! Warm-up: one inference on a freshly loaded version before it serves, so the first
//! client request does not pay for lazy initialisation (ONNX Runtime allocates its
//! arenas on the first run).
//!
//! The inputs come from `<version>/warmup.json` when the version has one, else they
//! are synthesised from the signature: zeros (empty strings for string inputs) of the
//! declared shape, with each variable dimension set to 1.
//!
//! `warmup.json` is a list of requests, each an object mapping an input name to a
//! nested array (or a single object for one request):
//! ```json
//! [{"input": [[5.1, 3.5, 1.4, 0.2]]}]
//! ```
//! A stored request that fails makes the load fail (its author meant it to work); a
//! synthetic input that fails is only logged, since a model may refuse zeros. A model
//! with an input of unknown rank gets no synthetic warm-up (logged): any shape made
//! up for it would be a guess.
//!
//! TF Serving's own warm-up file, `<version>/assets.extra/tf_serving_warmup_requests`
//! (a TFRecord file of `tensorflow.serving.PredictionLog` protos, read by
//! `crate::tfrecord`), is replayed too, before `warmup.json` when both exist: each
//! Predict, Classify, Regress and MultiInference record runs once on the version, on
//! the signature it names, its Predict inputs checked as a live request's are (names,
//! dtypes, shapes). As in TF Serving, a file that cannot be read (a bad
//! checksum, a truncated record, more than 1000 records, a record that is not a
//! PredictionLog) or a record that fails makes the load fail, with a message that
//! says which record and why.
//!
//! Every warm-up request (a `warmup.json` request, a TF Serving record, the
//! synthetic one) runs under a time limit, the model's request timeout
//! (`timeout_secs`, else the server's `--request-timeout-secs`): a stored request or
//! a TF Serving record still running at its limit makes the load fail, with a message
//! that names the request and the limit; the synthetic one is only logged, as any of
//! its failures. TensorFlow and ONNX Runtime end the run at the
//! limit (`RunOptions.timeout_in_ms`; ONNX Runtime's terminate flag), as for a live
//! request; the native runtimes (scikit-learn, fastText) cannot be interrupted, so
//! their request fails once it returns past the limit.

use std::path::Path;
use std::time::{Duration, Instant};

use ferroserve_proto::tensorflow::serving as tfs;
use prost::Message;
use serde_json::Value;

use crate::backends::tensorflow::examples::{
    self as tf_examples, ClassifySignature, RegressSignature,
};
use crate::backends::{Backend, BackendError, Signature};
use crate::tensor::{DataType, NamedTensor, Tensor, TensorData};

/// The file of stored warm-up requests in a version directory.
pub const WARMUP_FILE: &str = "warmup.json";

/// TF Serving's warm-up file, relative to the version directory.
pub const TF_SERVING_WARMUP_FILE: &str = "assets.extra/tf_serving_warmup_requests";

/// TF Serving's limit on warm-up records per file (`saved_model_warmup_util.cc`).
const MAX_TF_SERVING_RECORDS: usize = 1000;

/// Most bytes the padded tensors of one warm-up request may take once decoded.
const MAX_WARMUP_TENSOR_BYTES: usize = 256 << 20;
/// Most bytes of zeros a synthetic warm-up request may take, all inputs together.
const MAX_SYNTHETIC_BYTES: usize = 64 << 20;

/// Most requests taken from `warmup.json`, so a large file cannot stall a load.
const MAX_STORED_REQUESTS: usize = 100;

/// Largest `warmup.json` read: it is parsed whole into a JSON tree (about ten times
/// its size in memory), so a larger file fails the load instead.
pub const MAX_WARMUP_JSON_BYTES: u64 = 64 << 20;
/// Largest TF Serving warm-up file read (the upload limit's default): its records
/// are decoded one at a time, at about their own size.
pub const MAX_TF_SERVING_WARMUP_BYTES: u64 = 1 << 30;

/// Runs the warm-up of one version, each request under `time_limit` (the model's
/// request timeout, `Manager::warm_up_limit`). Errors are messages for the version's
/// status.
pub fn warm_up(
    model: &str,
    version: u64,
    backend: &dyn Backend,
    version_dir: &Path,
    time_limit: Duration,
) -> Result<(), String> {
    let limit = RunLimit(time_limit);
    let started = Instant::now();
    let tf_serving = version_dir.join(TF_SERVING_WARMUP_FILE);
    let replayed_tf_serving =
        match crate::regular_file::read(&tf_serving, MAX_TF_SERVING_WARMUP_BYTES) {
            Ok(bytes) => {
                let n = replay_tf_serving(backend, &bytes, limit).map_err(|e| {
                    format!("TF Serving warm-up file {TF_SERVING_WARMUP_FILE}: {e}")
                })?;
                tracing::info!(
                    model,
                    version,
                    records = n,
                    "replayed TF Serving warm-up records"
                );
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(format!("cannot read {TF_SERVING_WARMUP_FILE}: {e}")),
        };
    let path = version_dir.join(WARMUP_FILE);
    match crate::regular_file::read(&path, MAX_WARMUP_JSON_BYTES) {
        Ok(bytes) => {
            let requests = parse_requests(&bytes, backend.signature())
                .map_err(|e| format!("{WARMUP_FILE}: {e}"))?;
            for (i, inputs) in requests.into_iter().enumerate() {
                limit
                    .run(|| backend.predict(inputs, &[]))
                    .map_err(|e| format!("warm-up request {i} of {WARMUP_FILE} failed: {e}"))?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && replayed_tf_serving => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(spec) = backend.signature().inputs.iter().find(|s| s.any_rank()) {
                // Any made-up shape (a scalar, a vector) is a guess a kernel may abort
                // the process on (TensorFlow's oneDNN Conv2D on anything but rank 4).
                tracing::info!(
                    model,
                    version,
                    input = %spec.name,
                    "synthetic warm-up skipped: the input has no known shape (any rank), \
                     so no input can be made up for it; add a {WARMUP_FILE} with a valid \
                     request to warm the version up"
                );
                return Ok(());
            }
            let warmed = match synthetic_inputs(backend.signature()) {
                Ok(inputs) => limit.run(|| backend.predict(inputs, &[])),
                Err(e) => Err(WarmUpError::Refused(e)),
            };
            match warmed {
                Ok(_) => {}
                // A model may refuse zeros, or take longer on them than its timeout
                // (a timeout_secs far below a run's time, meant for live requests):
                // the run ended at the limit (or returned past it), so the load was
                // held no longer than that, and the version serves anyway.
                Err(e) => {
                    tracing::warn!(
                        model,
                        version,
                        "synthetic warm-up failed (the version serves anyway; add a \
                         {WARMUP_FILE} with a valid request to warm it up): {e}"
                    );
                    return Ok(());
                }
            }
        }
        Err(e) => {
            tracing::warn!(model, version, path = %path.display(), error = %e, "cannot read the warm-up file");
            return Err(format!("cannot read {WARMUP_FILE}: {e}"));
        }
    }
    tracing::debug!(
        model,
        version,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "warmed up"
    );
    Ok(())
}

/// The time limit of each warm-up request (`None`: none).
#[derive(Debug, Clone, Copy)]
struct RunLimit(Duration);

/// Why one warm-up request failed.
#[derive(Debug, thiserror::Error)]
enum WarmUpError {
    /// It ran past the time limit (cancelled there, or returned after it).
    #[error(
        "it did not finish within its time limit of {} s (the model's timeout_secs, \
         else the server's --request-timeout-secs)",
        .0.as_secs_f64()
    )]
    TimedOut(Duration),
    /// The model refused it or failed on it.
    #[error("{0}")]
    Refused(String),
}

impl RunLimit {
    /// Runs one warm-up request (`run`, a backend's run on this thread) with the
    /// limit as its run deadline, so that a runtime that can cancel a run does.
    fn run<T>(self, run: impl FnOnce() -> Result<T, BackendError>) -> Result<T, WarmUpError> {
        let limit = self.0;
        let started = Instant::now();
        let deadline = started.checked_add(limit);
        let result = crate::backends::with_run_deadline(deadline, run);
        match result {
            Err(BackendError::DeadlineExceeded(_)) => Err(WarmUpError::TimedOut(limit)),
            // A runtime that cannot cancel a run returns when it is done: past the
            // limit, the request did not finish in time whatever it answered.
            _ if started.elapsed() > limit => Err(WarmUpError::TimedOut(limit)),
            Ok(outputs) => Ok(outputs),
            Err(e) => Err(WarmUpError::Refused(e.to_string())),
        }
    }
}

/// The parts of `tensorflow.serving.PredictionLog` (`apis/prediction_log.proto`) that
/// warm-up replays; prost skips the rest (`log_metadata`, the logged responses).
#[derive(Clone, PartialEq, prost::Message)]
struct PredictionLog {
    #[prost(oneof = "LogType", tags = "2, 3, 4, 5, 6")]
    log_type: Option<LogType>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum LogType {
    #[prost(message, tag = "2")]
    Classify(ClassifyLog),
    #[prost(message, tag = "3")]
    Regress(RegressLog),
    #[prost(message, tag = "4")]
    MultiInference(MultiInferenceLog),
    /// TF1 `SessionService` runs, which ferroserve does not serve.
    #[prost(message, tag = "5")]
    SessionRun(SessionRunLog),
    #[prost(message, tag = "6")]
    Predict(PredictLog),
}

#[derive(Clone, PartialEq, prost::Message)]
struct ClassifyLog {
    #[prost(message, optional, tag = "1")]
    request: Option<tfs::ClassificationRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RegressLog {
    #[prost(message, optional, tag = "1")]
    request: Option<tfs::RegressionRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PredictLog {
    #[prost(message, optional, tag = "1")]
    request: Option<tfs::PredictRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MultiInferenceLog {
    #[prost(message, optional, tag = "1")]
    request: Option<tfs::MultiInferenceRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionRunLog {}

/// Replays every record of a TF Serving warm-up file; the number replayed.
fn replay_tf_serving(
    backend: &dyn Backend,
    bytes: &[u8],
    limit: RunLimit,
) -> Result<usize, String> {
    let records =
        crate::tfrecord::read_records(bytes, MAX_TF_SERVING_RECORDS).map_err(|e| e.to_string())?;
    for (i, record) in records.iter().enumerate() {
        let log = PredictionLog::decode(*record)
            .map_err(|e| format!("record {i} is not a PredictionLog: {e}"))?;
        replay_record(backend, log, limit).map_err(|e| format!("record {i}: {e}"))?;
    }
    Ok(records.len())
}

fn replay_record(backend: &dyn Backend, log: PredictionLog, limit: RunLimit) -> Result<(), String> {
    let signature_of =
        |spec: Option<&tfs::ModelSpec>| spec.map(|s| s.signature_name.clone()).unwrap_or_default();
    match log.log_type {
        Some(LogType::Predict(PredictLog {
            request: Some(request),
        })) => {
            let mut limits = crate::grpc::tf_tensor::DecodeLimits {
                max_bytes: MAX_WARMUP_TENSOR_BYTES,
                max_rows: usize::MAX,
            };
            let inputs = request
                .inputs
                .into_iter()
                .map(|(name, proto)| {
                    crate::grpc::tf_tensor::tensor_from_proto(&name, proto, &mut limits)
                        .map(|t| (name, t))
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<NamedTensor>, String>>()?;
            let signature = signature_of(request.model_spec.as_ref());
            // Checked as a live request's inputs are (names, dtypes cast, shapes):
            // TensorFlow may abort on a tensor its signature does not take.
            let spec = backend.signature_named(&signature).ok_or_else(|| {
                format!("Predict: serving signature name {signature:?} not found")
            })?;
            let inputs = crate::api::inputs::prepare_inputs(spec, None, inputs)
                .map_err(|e| format!("Predict: {e}"))?;
            limit
                .run(|| backend.predict_signature(&signature, inputs, &request.output_filter))
                .map(drop)
                .map_err(|e| format!("Predict failed: {e}"))
        }
        Some(LogType::Classify(ClassifyLog {
            request: Some(request),
        })) => replay_examples(
            backend,
            &signature_of(request.model_spec.as_ref()),
            request.input.as_ref(),
            true,
            limit,
        ),
        Some(LogType::Regress(RegressLog {
            request: Some(request),
        })) => replay_examples(
            backend,
            &signature_of(request.model_spec.as_ref()),
            request.input.as_ref(),
            false,
            limit,
        ),
        Some(LogType::MultiInference(MultiInferenceLog {
            request: Some(request),
        })) => request.tasks.iter().try_for_each(|task| {
            let classify = match task.method_name.as_str() {
                "tensorflow/serving/classify" => true,
                "tensorflow/serving/regress" => false,
                other => return Err(format!("unsupported MultiInference method {other:?}")),
            };
            replay_examples(
                backend,
                &signature_of(task.model_spec.as_ref()),
                request.input.as_ref(),
                classify,
                limit,
            )
        }),
        Some(LogType::SessionRun(_)) => Err(
            "SessionRun warm-up records are not supported (ferroserve has no SessionService)"
                .into(),
        ),
        _ => Err("no Predict, Classify, Regress or MultiInference request in it".into()),
    }
}

/// Replays one Classify (`classify`) or Regress request on a SavedModel signature.
fn replay_examples(
    backend: &dyn Backend,
    signature: &str,
    input: Option<&tfs::Input>,
    classify: bool,
    limit: RunLimit,
) -> Result<(), String> {
    let what = if classify { "Classify" } else { "Regress" };
    let wanted = backend
        .signature_named(signature)
        .ok_or_else(|| format!("{what}: serving signature name {signature:?} not found"))?;
    let named = backend
        .signatures()
        .iter()
        .find(|s| std::ptr::eq(&s.signature, wanted))
        .ok_or_else(|| format!("{what} warm-up records need a TensorFlow SavedModel"))?;
    let serialized = tf_examples::serialized_input(input).map_err(|e| format!("{what}: {e}"))?;
    let n = serialized.len();
    let (input, outputs) = if classify {
        let s = ClassifySignature::of(named)?;
        (s.input.clone(), s.outputs())
    } else {
        let s = RegressSignature::of(named)?;
        (s.input, vec![s.output])
    };
    let results = limit
        .run(|| {
            backend.predict_signature(
                signature,
                vec![(input, tf_examples::examples_tensor(serialized))],
                &outputs,
            )
        })
        .map_err(|e| format!("{what} failed: {e}"))?;
    let find = |key: &str| results.iter().find(|(k, _)| k == key).map(|(_, t)| t);
    if classify {
        let classes = find(tf_examples::CLASSIFY_OUTPUT_CLASSES);
        let scores = find(tf_examples::CLASSIFY_OUTPUT_SCORES);
        tf_examples::read_classifications(n, classes, scores).map(drop)
    } else {
        let output = find(tf_examples::REGRESS_OUTPUTS).ok_or("no regression output")?;
        tf_examples::read_regressions(n, output).map(drop)
    }
    .map_err(|e| format!("{what}: {e}"))
}

/// Zeros of each input's shape, with variable dimensions set to 1; none for an input
/// of any rank (an error: no shape is known to fill).
pub fn synthetic_inputs(signature: &Signature) -> Result<Vec<NamedTensor>, String> {
    let mut total: usize = 0;
    signature
        .inputs
        .iter()
        .map(|spec| {
            if spec.any_rank() {
                return Err(format!(
                    "input {:?} has no known shape (any rank): no input is made up for it",
                    spec.name
                ));
            }
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .map(|&d| if d < 0 { 1 } else { d as usize })
                .collect();
            // A fixed shape can be anything a model declares ([2^20, 2^20]): what
            // the zeros would take is checked before they are made.
            let bytes = shape
                .iter()
                .try_fold(spec.dtype.fixed_size().unwrap_or(24), |n, &d| {
                    n.checked_mul(d)
                })
                .and_then(|b| total.checked_add(b))
                .filter(|&t| t <= MAX_SYNTHETIC_BYTES)
                .ok_or_else(|| {
                    format!(
                        "input {:?} of shape {:?} would take more than {} MiB of zeros",
                        spec.name,
                        spec.shape,
                        MAX_SYNTHETIC_BYTES >> 20
                    )
                })?;
            total = bytes;
            let n: usize = shape.iter().product();
            let tensor = Tensor::new(shape, zeros(spec.dtype, n)).expect("zeros match their shape");
            Ok((spec.name.clone(), tensor))
        })
        .collect()
}

fn zeros(dtype: DataType, n: usize) -> TensorData {
    match dtype {
        DataType::Bool => TensorData::Bool(vec![false; n]),
        DataType::U8 => TensorData::U8(vec![0; n]),
        DataType::U16 => TensorData::U16(vec![0; n]),
        DataType::U32 => TensorData::U32(vec![0; n]),
        DataType::U64 => TensorData::U64(vec![0; n]),
        DataType::I8 => TensorData::I8(vec![0; n]),
        DataType::I16 => TensorData::I16(vec![0; n]),
        DataType::I32 => TensorData::I32(vec![0; n]),
        DataType::I64 => TensorData::I64(vec![0; n]),
        DataType::F16 => TensorData::F16(vec![0; n]),
        DataType::F32 => TensorData::F32(vec![0.0; n]),
        DataType::F64 => TensorData::F64(vec![0.0; n]),
        DataType::Bytes => TensorData::Bytes(vec![Vec::new(); n]),
    }
}

/// Reads stored requests, converting each input to the dtype the signature gives it.
fn parse_requests(bytes: &[u8], signature: &Signature) -> Result<Vec<Vec<NamedTensor>>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let requests = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err("expected a list of requests or one request object".into()),
    };
    if requests.len() > MAX_STORED_REQUESTS {
        return Err(format!(
            "{} requests; at most {MAX_STORED_REQUESTS} are allowed",
            requests.len()
        ));
    }
    requests
        .iter()
        .enumerate()
        .map(|(i, request)| {
            let Value::Object(inputs) = request else {
                return Err(format!("request {i} is not an object of inputs"));
            };
            inputs
                .iter()
                .map(|(name, value)| {
                    let spec = signature
                        .inputs
                        .iter()
                        .find(|s| s.name == *name)
                        .ok_or_else(|| format!("request {i}: the model has no input {name:?}"))?;
                    let tensor = json_tensor(value, spec.dtype)
                        .map_err(|e| format!("request {i}, input {name:?}: {e}"))?;
                    if !spec.accepts_shape(tensor.shape()) {
                        return Err(format!(
                            "request {i}, input {name:?}: shape {:?} does not fit {:?}",
                            tensor.shape(),
                            spec.shape
                        ));
                    }
                    Ok((name.clone(), tensor))
                })
                .collect()
        })
        .collect()
}

/// A rectangular nested JSON array as a tensor of the input's dtype.
fn json_tensor(value: &Value, dtype: DataType) -> Result<Tensor, String> {
    let (shape, leaves) = crate::json_tensor::flatten(value, "value").map_err(|e| e.to_string())?;
    crate::json_tensor::typed_tensor(shape, &leaves, dtype, "value").map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorSpec;

    /// A warm-up file past its bound is refused having read only the bound (a 6.6 MB
    /// `warmup.json` had raised the server's peak memory by 73 MB, and nothing
    /// bounded a larger one).
    #[test]
    fn warm_up_files_are_read_up_to_their_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warmup.json");
        std::fs::write(&path, vec![b' '; (1 << 20) + 1]).unwrap();
        let err = crate::regular_file::read(&path, 1 << 20).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("1 MiB"), "{err}");
        std::fs::write(&path, vec![b' '; 1 << 20]).unwrap();
        assert_eq!(
            crate::regular_file::read(&path, 1 << 20).unwrap().len(),
            1 << 20
        );
        let missing = crate::regular_file::read(&dir.path().join("none"), 1 << 20).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }

    fn sig() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "input".into(),
                dtype: DataType::F32,
                shape: vec![-1, 4],
            }],
            outputs: vec![],
        }
    }

    #[test]
    fn synthetic_inputs_fill_variable_dimensions_with_one() {
        let inputs = synthetic_inputs(&sig()).unwrap();
        assert_eq!(inputs[0].0, "input");
        assert_eq!(inputs[0].1.shape(), &[1, 4]);
        assert_eq!(inputs[0].1.dtype(), DataType::F32);
    }

    /// A model may declare any fixed shape: zeros too large to make are refused
    /// (the server aborted on a [2^20, 2^20] input, and panicked on [2^31, 2^31]).
    #[test]
    fn synthetic_inputs_too_large_to_make_are_refused() {
        for (shape, dtype) in [
            (vec![1 << 20, 1 << 20], DataType::F32),
            (vec![1 << 31, 1 << 31], DataType::F64),
            (vec![-1, 1 << 40, 1 << 40], DataType::Bytes),
            (vec![1 << 24, 8], DataType::U8),
        ] {
            let mut big = sig();
            big.inputs[0].shape = shape.clone();
            big.inputs[0].dtype = dtype;
            let e = synthetic_inputs(&big).unwrap_err();
            assert!(e.contains("64 MiB"), "{shape:?}: {e}");
        }
        // Below the limit one at a time, above it together.
        let mut two = sig();
        two.inputs[0].shape = vec![3 << 22, 1];
        two.inputs.push(TensorSpec {
            name: "other".into(),
            dtype: DataType::F32,
            shape: vec![3 << 22],
        });
        two.inputs[0].dtype = DataType::F32;
        assert!(synthetic_inputs(&two).is_err());
        two.inputs.pop();
        assert_eq!(synthetic_inputs(&two).unwrap()[0].1.len(), 3 << 22);
    }

    /// An input of any rank gets no made-up shape (a scalar zero made TensorFlow's
    /// oneDNN Conv2D abort the server while the version loaded).
    #[test]
    fn synthetic_inputs_refuse_an_input_of_any_rank() {
        let mut any = sig();
        any.inputs[0].shape = vec![crate::tensor::ANY_RANK];
        let e = synthetic_inputs(&any).unwrap_err();
        assert!(e.contains("\"input\" has no known shape"), "{e}");
    }

    #[test]
    fn stored_requests_are_parsed_and_checked() {
        let ok = parse_requests(br#"[{"input": [[5.1, 3.5, 1.4, 0.2]]}]"#, &sig()).unwrap();
        assert_eq!(ok[0][0].1.shape(), &[1, 4]);
        assert_eq!(ok[0][0].1.dtype(), DataType::F32);
        let one = parse_requests(br#"{"input": [[1, 2, 3, 4], [5, 6, 7, 8]]}"#, &sig()).unwrap();
        assert_eq!(one[0][0].1.shape(), &[2, 4]);
        for bad in [
            &br#"{"nope": [[1, 2, 3, 4]]}"#[..],
            br#"{"input": [[1, 2, 3]]}"#,
            br#"{"input": [[1, 2], [3]]}"#,
            br#"{"input": [["a", "b", "c", "d"]]}"#,
            br#"[1]"#,
            br#"not json"#,
        ] {
            assert!(
                parse_requests(bad, &sig()).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
