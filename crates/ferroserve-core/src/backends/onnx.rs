//! ONNX models on ONNX Runtime, through the `ort` crate with a dynamically loaded
//! `libonnxruntime.so`.
//!
//! The runtime library is located once per process ([`locate_runtime`]) and loaded
//! with `ort::init_from`, so a missing or broken library is an error on each ONNX
//! model (it goes to ERROR) rather than a panic, and other formats keep working.
//!
//! ONNX Runtime describes a tensor of unknown rank (a graph input or output whose type
//! has no `shape`) as it does a scalar, with no dimensions; the model file tells them
//! apart ([`unshaped_tensors`]), and such a tensor is [`ANY_RANK`], as ONNX Runtime
//! runs it with any shape.
//!
//! A classifier's classes are those its metadata names ([`CLASS_KEY`], written by
//! ferroserve's training jobs), else those of the ai.onnx.ml classifier node of its
//! graph whose scores its probabilities are (`classlabels_strings` /
//! `classlabels_int64s` / `classlabels_ints`, as skl2onnx writes them, of the label output's kind; [`graph::class_labels`]), else
//! none (classes are named by their column). The model file is streamed for that,
//! never held whole ([`graph::read`]).
//!
//! A run honours its deadline ([`super::run_deadline`]) as TensorFlow's does: one
//! process-wide thread ([`Watchdog`]) sets the run's `RunOptions` terminate flag when
//! the deadline passes, and ONNX Runtime stops before the next node it runs (inside a
//! `Loop` body too), so a run nobody waits for stops holding its inference thread.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};
use parking_lot::Mutex;

use super::{Backend, BackendError, BackendOptions, ModelTraits, Signature};

mod graph;
mod runtime;
mod watchdog;
use crate::tensor::{DataType, NamedTensor, Tensor, TensorData, TensorSpec, ANY_RANK};
use runtime::environment;
pub use runtime::{locate_runtime, RUNTIME_FILE_NAME};
use watchdog::{Armed, Watchdog};

/// One ONNX Runtime session, with the options its runs go under: their terminate
/// flag is what ends a run at its deadline. One run at a time uses them (the
/// session's lock), so they are made once, not per run.
struct PooledSession {
    session: Session,
    run_options: Arc<RunOptions>,
}

pub struct OnnxBackend {
    /// `Session::run` needs `&mut`, so each session is behind its own lock and a
    /// request takes whichever is free. Several sessions let one model run on
    /// several inference threads at once.
    sessions: Vec<Mutex<PooledSession>>,
    next_session: AtomicUsize,
    signature: Signature,
    traits: ModelTraits,
    /// The model file and options the sessions were built from, to build a
    /// session anew after a run that ran out of memory (see [`OnnxBackend::predict`]).
    artifact: PathBuf,
    options: BackendOptions,
}

impl OnnxBackend {
    pub fn load(artifact: &Path, options: &BackendOptions) -> Result<OnnxBackend, BackendError> {
        let env = environment(options).map_err(BackendError::Load)?;
        let count = options.onnx_sessions.max(1);
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            let run_options = RunOptions::new().map_err(|e| {
                BackendError::Load(format!("cannot create ONNX Runtime run options: {e}"))
            })?;
            sessions.push(Mutex::new(PooledSession {
                session: build_session(env, artifact, options)?,
                run_options: Arc::new(run_options),
            }));
        }
        let (signature, traits) = describe(&sessions[0].lock().session, artifact)?;
        Ok(OnnxBackend {
            sessions,
            next_session: AtomicUsize::new(0),
            signature,
            traits,
            artifact: artifact.to_path_buf(),
            options: options.clone(),
        })
    }
}

fn build_session(
    env: &ort::environment::Environment,
    artifact: &Path,
    options: &BackendOptions,
) -> Result<Session, BackendError> {
    let load_err = |e: ort::Error| {
        BackendError::Load(format!(
            "cannot load ONNX model {}: {e}",
            artifact.display()
        ))
    };
    let recover = |e: ort::Error<ort::session::builder::SessionBuilder>| load_err(e.into());
    Session::builder(env)
        .map_err(load_err)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(recover)?
        .with_intra_threads(options.onnx_intra_threads.max(1))
        .map_err(recover)?
        .with_inter_threads(1)
        .map_err(recover)?
        .commit_from_file(artifact)
        .map_err(load_err)
}

fn element_type(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::Float16 => DataType::F16,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

/// `unshaped`: whether the model declares the tensor with no shape at all (unknown
/// rank), which ONNX Runtime reports as no dimensions, like a scalar's.
fn spec(name: &str, ty: &ValueType, unshaped: bool) -> Result<TensorSpec, BackendError> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => {
            let dtype = element_type(*ty).ok_or_else(|| {
                BackendError::Load(format!("tensor {name:?} has unsupported element type {ty}"))
            })?;
            // A rank ONNX Runtime's shape inference found is kept, even for a tensor
            // the model declares without a shape.
            let shape = if shape.is_empty() && unshaped {
                vec![ANY_RANK]
            } else {
                shape.iter().copied().collect()
            };
            Ok(TensorSpec {
                name: name.to_string(),
                dtype,
                shape,
            })
        }
        other => Err(BackendError::Load(format!(
            "tensor {name:?} is a {other}, not a tensor; export classifiers with \
             zipmap=False (skl2onnx options={{'zipmap': False}})"
        ))),
    }
}

fn describe(session: &Session, artifact: &Path) -> Result<(Signature, ModelTraits), BackendError> {
    // skl2onnx names classifier outputs `label` / `probabilities` (or
    // `output_label` / `output_probability`); regressors give `variable`.
    const PROBABILITIES: [&str; 2] = ["probabilities", "output_probability"];
    let metadata_classes = class_labels(session);
    // The model file is read again only when a tensor may be of unknown rank (one
    // ONNX Runtime reports with no dimensions), or when the classes of a
    // classifier's probabilities are not named in its metadata: its graph's
    // classifier node may name them.
    let dimensionless = |o: &ort::value::Outlet| matches!(o.dtype(), ValueType::Tensor { shape, .. } if shape.is_empty());
    let any_dimensionless = session
        .inputs()
        .iter()
        .chain(session.outputs())
        .any(dimensionless);
    let unnamed_classes = metadata_classes.is_none()
        && session
            .outputs()
            .iter()
            .any(|o| PROBABILITIES.contains(&o.name()));
    let graph = if any_dimensionless || unnamed_classes {
        read_graph(artifact)
    } else {
        None
    };
    let unshaped = graph.as_ref().map(unshaped_tensors).unwrap_or_default();
    let inputs = session
        .inputs()
        .iter()
        .map(|o| spec(o.name(), o.dtype(), unshaped.inputs.contains(o.name())))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = session
        .outputs()
        .iter()
        .map(|o| spec(o.name(), o.dtype(), unshaped.outputs.contains(o.name())))
        .collect::<Result<Vec<_>, _>>()?;
    let find = |names: &[&str]| {
        outputs
            .iter()
            .find(|o| names.contains(&o.name.as_str()))
            .map(|o| o.name.clone())
    };
    let probabilities_output = find(&PROBABILITIES);
    let prediction_output = find(&["label", "output_label", "variable"])
        .or_else(|| outputs.first().map(|o| o.name.clone()));
    // Without the metadata's classes, those of the graph's classifier node whose
    // scores the probabilities are, when unambiguous and as many as its columns.
    let graph_classes = || {
        let graph = graph.as_ref()?;
        let probabilities = outputs
            .iter()
            .find(|o| Some(&o.name) == probabilities_output.as_ref())?;
        let width = match probabilities.shape.as_slice() {
            [_, width] => *width,
            _ => return None,
        };
        // Text classes for a text label, numbers for a number label (skl2onnx's
        // `label` / `output_label`).
        let label_is_text = outputs
            .iter()
            .find(|o| Some(&o.name) == prediction_output.as_ref())
            .filter(|o| matches!(o.name.as_str(), "label" | "output_label"))
            .map(|o| o.dtype == DataType::Bytes);
        graph::class_labels(graph, &probabilities.name, width, label_is_text)
    };
    let class_labels = metadata_classes.or_else(graph_classes);
    let traits = ModelTraits {
        prediction_output,
        probabilities_output: probabilities_output.clone(),
        class_labels,
        feature_names: None,
        missing_inputs: flagged_inputs(session, &inputs, IMPUTES_KEY),
        numeric_category_inputs: flagged_inputs(session, &inputs, NUMERIC_CATEGORY_KEY),
        ignored_inputs: Vec::new(),
        trained: session
            .metadata()
            .ok()
            .and_then(|m| m.producer())
            .is_some_and(|p| p == "ferroserve"),
        ranked_output: None,
    };
    Ok((Signature { inputs, outputs }, traits))
}

/// The names of the graph's tensor inputs and outputs declared without a shape.
#[derive(Debug, Default)]
struct Unshaped {
    inputs: HashSet<String>,
    outputs: HashSet<String>,
}

/// The top-level graph of the model at `artifact` ([`graph::read`]). A file that
/// cannot be read or decoded (ONNX Runtime loaded it, so that is a race with a
/// writer) gives none: its tensors keep the shapes ONNX Runtime reports and its
/// classes are named by their column.
fn read_graph(artifact: &Path) -> Option<graph::Graph> {
    graph::read(artifact)
        .inspect_err(|e| {
            tracing::warn!(
                artifact = %artifact.display(),
                error = %e,
                "cannot read the ONNX graph: tensors ONNX Runtime reports with no \
                 dimensions are taken as scalars, and classes not named in the \
                 metadata are named by their column"
            );
        })
        .ok()
}

/// The graph inputs and outputs whose tensor type has no `shape` (unknown rank; a
/// scalar's has a shape with no dimensions).
fn unshaped_tensors(graph: &graph::Graph) -> Unshaped {
    let names = |infos: &[graph::proto::ValueInfoProto]| -> HashSet<String> {
        infos
            .iter()
            .filter(|info| {
                info.r#type
                    .as_ref()
                    .and_then(|t| t.tensor_type.as_ref())
                    .is_some_and(|t| t.shape.is_none())
            })
            .map(|info| info.name.clone())
            .collect()
    };
    Unshaped {
        inputs: names(&graph.inputs),
        outputs: names(&graph.outputs),
    }
}

/// The prefix of the ONNX metadata keys (`metadata_props`) that mark an input whose
/// missing values the graph fills (`<prefix><input name>` = `"1"`): a training job
/// writes one per feature with a `missing` policy other than `error` (its graph maps
/// NaN through an `Imputer`, `""` through a `LabelEncoder`).
pub const IMPUTES_KEY: &str = "ferroserve.imputes.";

/// The prefix of the ONNX metadata keys that mark a categorical input whose
/// categories are numbers (`<prefix><input name>` = `"1"`): a training job writes
/// one per such feature ([`ModelTraits::numeric_category_inputs`]).
pub const NUMERIC_CATEGORY_KEY: &str = "ferroserve.numeric_category.";

/// The prefix of the ONNX metadata keys that name a classifier's classes in the
/// order of its probabilities' columns (`<prefix><i>` = the class of column `i`,
/// from 0): a training job writes them, so that answers name the classes.
pub const CLASS_KEY: &str = "ferroserve.class.";

/// The classes [`CLASS_KEY`]'s entries name, when they name columns 0..n, each once.
/// (A model without them may name its classes in its graph: [`graph::class_labels`].)
fn class_labels(session: &Session) -> Option<Vec<String>> {
    let metadata = session.metadata().ok()?;
    let mut classes: Vec<(usize, String)> = metadata
        .custom_keys()
        .ok()?
        .iter()
        .filter_map(|key| {
            let index = key.strip_prefix(CLASS_KEY)?.parse().ok()?;
            Some((index, metadata.custom(key)?))
        })
        .collect();
    classes.sort_by_key(|(i, _)| *i);
    let in_order = classes.iter().enumerate().all(|(j, (i, _))| *i == j);
    (in_order && !classes.is_empty()).then(|| classes.into_iter().map(|(_, c)| c).collect())
}

/// The inputs the metadata marks with `<prefix><input name>` = `"1"`.
fn flagged_inputs(session: &Session, inputs: &[TensorSpec], prefix: &str) -> Vec<String> {
    let Ok(metadata) = session.metadata() else {
        return Vec::new();
    };
    let keys = metadata.custom_keys().unwrap_or_default();
    inputs
        .iter()
        .filter(|i| {
            let key = format!("{prefix}{}", i.name);
            keys.contains(&key) && metadata.custom(&key).as_deref() == Some("1")
        })
        .map(|i| i.name.clone())
        .collect()
}

fn invalid(e: ort::Error) -> BackendError {
    BackendError::InvalidInput(runtime_message(e))
}

/// ONNX Runtime's message without its source locations (see
/// [`super::client_message`]); the whole one goes to the log.
fn runtime_message(e: ort::Error) -> String {
    let raw = e.to_string();
    tracing::debug!(error = %raw, "ONNX Runtime error");
    super::client_message(&raw, None)
}

/// Wraps a tensor's buffer for ONNX Runtime without copying it (strings are copied,
/// as ONNX Runtime needs its own null-terminated copies).
fn to_ort<'a>(
    name: &str,
    tensor: &'a Tensor,
) -> Result<ort::session::SessionInputValue<'a>, BackendError> {
    let shape: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
    macro_rules! view {
        ($v:expr) => {
            TensorRef::from_array_view((shape, $v.as_slice()))
                .map_err(invalid)?
                .into()
        };
    }
    Ok(match tensor.data() {
        TensorData::Bool(v) => view!(v),
        TensorData::U8(v) => view!(v),
        TensorData::U16(v) => view!(v),
        TensorData::U32(v) => view!(v),
        TensorData::U64(v) => view!(v),
        TensorData::I8(v) => view!(v),
        TensorData::I16(v) => view!(v),
        TensorData::I32(v) => view!(v),
        TensorData::I64(v) => view!(v),
        TensorData::F32(v) => view!(v),
        TensorData::F64(v) => view!(v),
        TensorData::F16(v) => {
            use half::slice::HalfBitsSliceExt;
            let halves: &[half::f16] = v.as_slice().reinterpret_cast();
            TensorRef::from_array_view((shape, halves))
                .map_err(invalid)?
                .into()
        }
        TensorData::Bytes(v) => {
            let strings = v
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    // ONNX Runtime copies each string as a C string: a NUL would end
                    // it (ort refused it with "Attempted to pass invalid string to C").
                    if b.contains(&0) {
                        return Err(BackendError::InvalidInput(format!(
                            "input {name:?} element {i} holds a NUL byte, which ONNX \
                             Runtime's string tensors cannot carry"
                        )));
                    }
                    String::from_utf8(b.clone()).map_err(|_| {
                        BackendError::InvalidInput(format!(
                            "input {name:?} element {i} is not valid UTF-8, which ONNX \
                             strings must be"
                        ))
                    })
                })
                .collect::<Result<Vec<String>, _>>()?;
            ort::value::Tensor::from_string_array((shape, strings.as_slice()))
                .map_err(invalid)?
                .into()
        }
    })
}

fn from_ort(name: &str, value: &DynValue) -> Result<Tensor, BackendError> {
    let fail =
        |e: ort::Error| BackendError::Inference(format!("output {name:?}: {}", runtime_message(e)));
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => {
            return Err(BackendError::Inference(format!(
                "output {name:?} is a {other}, not a tensor"
            )))
        }
    };
    macro_rules! extract {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(fail)?;
            (
                shape.iter().map(|&d| d as usize).collect::<Vec<_>>(),
                TensorData::$variant(data.to_vec()),
            )
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Float32 => extract!(f32, F32),
        TensorElementType::Float64 => extract!(f64, F64),
        TensorElementType::Int64 => extract!(i64, I64),
        TensorElementType::Int32 => extract!(i32, I32),
        TensorElementType::Int16 => extract!(i16, I16),
        TensorElementType::Int8 => extract!(i8, I8),
        TensorElementType::Uint8 => extract!(u8, U8),
        TensorElementType::Uint16 => extract!(u16, U16),
        TensorElementType::Uint32 => extract!(u32, U32),
        TensorElementType::Uint64 => extract!(u64, U64),
        TensorElementType::Bool => extract!(bool, Bool),
        TensorElementType::Float16 => {
            let (shape, data) = value.try_extract_tensor::<half::f16>().map_err(fail)?;
            (
                shape.iter().map(|&d| d as usize).collect::<Vec<_>>(),
                TensorData::F16(data.iter().map(|h| h.to_bits()).collect()),
            )
        }
        TensorElementType::String => {
            let (shape, strings) = value.try_extract_strings().map_err(fail)?;
            (
                shape.iter().map(|&d| d as usize).collect(),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => {
            return Err(BackendError::Inference(format!(
                "output {name:?} has unsupported element type {other}"
            )))
        }
    };
    Tensor::new(shape, data).map_err(|e| BackendError::Inference(e.to_string()))
}

impl OnnxBackend {
    /// Runs `inputs` on the session `pooled` (held) and reads `output_names`.
    fn run_on(
        &self,
        pooled: &mut PooledSession,
        ort_inputs: Vec<(&str, ort::session::SessionInputValue<'_>)>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        let PooledSession {
            session,
            run_options,
        } = &mut *pooled;
        // Armed once the session is ours: the flag belongs to the session's options,
        // so it may only be set while this run is the one using them.
        let armed = super::run_deadline()
            .and_then(|deadline| Some(Watchdog::get()?.arm(deadline, run_options)));
        let ran = session.run_with_options(ort_inputs, &**run_options);
        // Taken off the watch before the session is free for another run.
        let terminated = armed.is_some_and(Armed::disarm);
        let outputs = match ran {
            Ok(outputs) => outputs,
            Err(e) => {
                let message = runtime_message(e);
                let error = if terminated {
                    BackendError::DeadlineExceeded(format!(
                        "ONNX Runtime stopped the run at its deadline: {message}"
                    ))
                } else {
                    BackendError::from_run_message(message)
                };
                return Err(error);
            }
        };
        let wanted: Vec<&str> = if output_names.is_empty() {
            self.signature
                .outputs
                .iter()
                .map(|o| o.name.as_str())
                .collect()
        } else {
            output_names.iter().map(String::as_str).collect()
        };
        wanted
            .into_iter()
            .map(|name| {
                let value = outputs.get(name).ok_or_else(|| {
                    BackendError::InvalidInput(format!("model has no output {name:?}"))
                })?;
                Ok((name.to_string(), from_ort(name, value)?))
            })
            .collect()
    }

    /// Replaces `session` with one built anew from the model file. After a run
    /// that could not allocate what it asked for (a client's input asking for a
    /// terabyte), ONNX Runtime's CPU arena made its next run of any size reserve
    /// tens of gigabytes of address space and touch most of a gigabyte, for good:
    /// the process could then no longer fork a worker, and a worker under a memory
    /// limit was killed by the next small request. A fresh session has a fresh
    /// arena. A file that cannot be read any more (the version deleted meanwhile)
    /// keeps the old session, logged.
    fn renew(&self, session: &mut Session) {
        let fresh = environment(&self.options)
            .map_err(|e| e.to_string())
            .and_then(|env| {
                build_session(env, &self.artifact, &self.options).map_err(|e| e.to_string())
            });
        match fresh {
            Ok(fresh) => *session = fresh,
            Err(e) => tracing::warn!(
                path = %self.artifact.display(),
                error = %e,
                "a run ran out of memory and its ONNX Runtime session cannot be built anew; \
                 the old one serves on"
            ),
        }
    }
}

impl Backend for OnnxBackend {
    fn format(&self) -> &'static str {
        "onnx"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn traits(&self) -> &ModelTraits {
        &self.traits
    }

    fn predict(
        &self,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        let ort_inputs = inputs
            .iter()
            .map(|(name, t)| Ok((name.as_str(), to_ort(name, t)?)))
            .collect::<Result<Vec<_>, BackendError>>()?;
        // Prefer a free session; if all are busy, queue on one in turn.
        let mut pooled = self
            .sessions
            .iter()
            .find_map(|s| s.try_lock())
            .unwrap_or_else(|| {
                let i = self.next_session.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
                self.sessions[i].lock()
            });
        let result = self.run_on(&mut pooled, ort_inputs, output_names);
        if let Err(BackendError::OutOfMemory(_)) = &result {
            self.renew(&mut pooled.session);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/onnx")
            .join(name)
            .join("model.onnx")
    }

    /// `slow_loop` run for `n` iterations (about a microsecond each).
    fn run_loop(backend: &OnnxBackend, n: i64) -> Result<Vec<NamedTensor>, BackendError> {
        let n = Tensor::new(vec![], TensorData::I64(vec![n])).unwrap();
        backend.predict(vec![("n".to_string(), n)], &[])
    }

    /// A run past its deadline ends there with `DeadlineExceeded`, and the session's
    /// next runs (none with a deadline, one with a far one) run to their end.
    #[test]
    fn a_run_past_its_deadline_is_ended_and_the_session_runs_on() {
        let options = BackendOptions {
            onnx_intra_threads: 1,
            onnx_sessions: 1,
            ..BackendOptions::default()
        };
        let backend = match OnnxBackend::load(&fixture("slow_loop"), &options) {
            Ok(b) => b,
            Err(BackendError::Load(e)) if e.contains("not found") => {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let started = Instant::now();
        let deadline = started + std::time::Duration::from_millis(200);
        let ended =
            super::super::with_run_deadline(Some(deadline), || run_loop(&backend, 1_000_000_000));
        let took = started.elapsed();
        assert!(
            matches!(ended, Err(BackendError::DeadlineExceeded(_))),
            "{ended:?}"
        );
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        let y = |out: Vec<NamedTensor>| match out[0].1.data() {
            TensorData::F32(v) => v[0],
            other => panic!("{other:?}"),
        };
        assert_eq!(y(run_loop(&backend, 3).unwrap()), 3.0);
        let far = Instant::now() + std::time::Duration::from_secs(3600);
        let ran = super::super::with_run_deadline(Some(far), || run_loop(&backend, 1000));
        assert_eq!(y(ran.unwrap()), 1000.0);
        // A deadline already passed ends the run at once.
        let past = super::super::with_run_deadline(Some(Instant::now()), || {
            run_loop(&backend, 1_000_000_000)
        });
        assert!(
            matches!(past, Err(BackendError::DeadlineExceeded(_))),
            "{past:?}"
        );
        assert_eq!(y(run_loop(&backend, 3).unwrap()), 3.0);
    }

    #[test]
    fn a_tensor_without_a_shape_is_told_from_a_scalar() {
        let any = unshaped_tensors(&read_graph(&fixture("any_rank")).unwrap());
        assert_eq!(any.inputs, HashSet::from(["x".to_string()]));
        assert_eq!(
            any.outputs,
            HashSet::from(["y".to_string(), "squeezed".to_string()])
        );
        let scalar = unshaped_tensors(&read_graph(&fixture("scalar")).unwrap());
        assert!(
            scalar.inputs.is_empty() && scalar.outputs.is_empty(),
            "{scalar:?}"
        );
        // Shapes with dimensions are not unknown rank either.
        let shaped = unshaped_tensors(&read_graph(&fixture("half_io")).unwrap());
        assert!(
            shaped.inputs.is_empty() && shaped.outputs.is_empty(),
            "{shaped:?}"
        );
        // A file that cannot be read gives no graph (ONNX Runtime's shapes stay).
        assert!(read_graph(&fixture("no_such_model")).is_none());
    }

    #[test]
    fn only_a_dimensionless_tensor_declared_without_a_shape_is_any_rank() {
        let ty = |shape: Vec<i64>| ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape: ort::value::Shape::new(shape.clone()),
            dimension_symbols: ort::value::SymbolicDimensions::empty(shape.len()),
        };
        assert!(spec("x", &ty(vec![]), true).unwrap().any_rank());
        assert_eq!(
            spec("x", &ty(vec![]), false).unwrap().shape,
            Vec::<i64>::new()
        );
        // A rank ONNX Runtime inferred stays.
        assert_eq!(
            spec("x", &ty(vec![-1, 3]), true).unwrap().shape,
            vec![-1, 3]
        );
    }
}
