//! TensorFlow SavedModels through TensorFlow's C API, loaded at run time from the
//! `tensorflow-cpu` wheel's libraries (see [`ffi`]).
//!
//! The libraries are located once per process ([`locate_library`]) and only when a
//! SavedModel is first loaded, so a repository without SavedModels never loads
//! TensorFlow, and a missing library is an error on each SavedModel version (it goes
//! to ERROR) rather than a crash.
//!
//! A SavedModel is loaded with `TF_LoadSessionFromSavedModel` under the tags of its
//! `[tensorflow]` config (default `serve`); the loader gives back the MetaGraphDef,
//! whose SignatureDefs say which graph tensors each signature's named inputs and
//! outputs are. `serving_default` (else the first signature by name) is the one
//! [`Backend::signature`] describes; the others are reached by name through
//! [`Backend::predict_signature`].

pub mod ffi;
mod files;
mod library;
mod proto;
mod tensor;

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;

use prost::Message;

use super::{Backend, BackendError, BackendOptions, ModelTraits, NamedSignature, Signature};
use crate::tensor::{DataType, NamedTensor, TensorSpec};
use ffi::Api;
use proto::{tensor_info, SignatureDef, TensorInfo};

pub use files::{check_regular_files, MAX_SAVED_MODEL_ENTRIES};
use library::{api, note_intra_op_pool};
pub use library::{
    default_onednn_off, locate_library, TensorflowConfig, MAX_THREADS, ONEDNN_VARIABLE,
};
use tensor::{dtype_from_tf, OwnedTensor};

/// The file that makes a version directory a SavedModel.
pub const SAVED_MODEL_FILE: &str = "saved_model.pb";

// TF Serving's default signature key, which the Backend trait's defaults answer to.
pub use super::DEFAULT_SIGNATURE;

/// A `TF_Status`, deleted on drop.
struct Status<'a> {
    api: &'a Api,
    raw: *mut ffi::TF_Status,
}

impl<'a> Status<'a> {
    fn new(api: &'a Api) -> Status<'a> {
        // SAFETY: plain constructor.
        Status {
            api,
            raw: unsafe { (api.TF_NewStatus)() },
        }
    }

    /// `Ok` when the status is OK, else TensorFlow's code and message.
    fn check(&self) -> Result<(), (c_int, String)> {
        // SAFETY: `raw` is a live status; the message lives as long as it.
        unsafe {
            let code = (self.api.TF_GetCode)(self.raw);
            if code == 0 {
                return Ok(());
            }
            let message = CStr::from_ptr((self.api.TF_Message)(self.raw))
                .to_string_lossy()
                .into_owned();
            Err((code, message))
        }
    }
}

impl Drop for Status<'_> {
    fn drop(&mut self) {
        // SAFETY: made by TF_NewStatus, deleted once.
        unsafe { (self.api.TF_DeleteStatus)(self.raw) }
    }
}

/// TensorFlow's `TF_Code` for INVALID_ARGUMENT.
const TF_INVALID_ARGUMENT: c_int = 3;
/// TensorFlow's code for an allocation that failed (`OOM when allocating ...`).
const TF_RESOURCE_EXHAUSTED: c_int = 8;
const TF_DEADLINE_EXCEEDED: c_int = 4;
/// The most dimensions a TensorFlow tensor has (`TensorShape::MaxDimensions()`).
const TF_MAX_DIMS: usize = 254;

/// A serialized `tensorflow.RunOptions` with `timeout_in_ms` (field 2, a varint) set
/// to `timeout`, at least 1 ms (0 would mean none).
fn run_options_with_timeout(timeout: std::time::Duration) -> Vec<u8> {
    let mut ms = timeout.as_millis().clamp(1, i64::MAX as u128) as u64;
    let mut out = vec![0x10];
    while ms >= 0x80 {
        out.push((ms as u8 & 0x7f) | 0x80);
        ms >>= 7;
    }
    out.push(ms as u8);
    out
}

/// One SignatureDef, resolved against the graph.
struct LoadedSignature {
    name: String,
    /// The graph tensor of each of `signature.inputs`, in the same order.
    inputs: Vec<ffi::TF_Output>,
    /// The graph tensor of each of `signature.outputs`, in the same order.
    outputs: Vec<ffi::TF_Output>,
}

pub struct TensorflowBackend {
    api: &'static Api,
    /// TensorFlow's sessions are safe to run from several threads at once, so one
    /// session serves every inference thread.
    session: *mut ffi::TF_Session,
    graph: *mut ffi::TF_Graph,
    /// Sorted by name, the default signature at `default`.
    signatures: Vec<LoadedSignature>,
    /// The same, as the model describes them (one entry per `signatures`).
    described: Vec<NamedSignature>,
    default: usize,
    traits: ModelTraits,
}

// SAFETY: a TF_Session may be run concurrently from several threads (c_api.h:
// "TF_SessionRun ... may be called concurrently"); the graph is only read after
// loading, and both are freed once, on drop.
unsafe impl Send for TensorflowBackend {}
unsafe impl Sync for TensorflowBackend {}

impl Drop for TensorflowBackend {
    fn drop(&mut self) {
        let status = Status::new(self.api);
        // SAFETY: made at load, freed once here.
        unsafe {
            (self.api.TF_CloseSession)(self.session, status.raw);
            (self.api.TF_DeleteSession)(self.session, status.raw);
            (self.api.TF_DeleteGraph)(self.graph);
        }
    }
}

/// TF Serving's output keys of a classification signature
/// (`signature_constants.h`): each row's class names, and their scores.
pub const CLASSIFY_OUTPUT_CLASSES: &str = "classes";
pub const CLASSIFY_OUTPUT_SCORES: &str = "scores";

/// The `classes` (strings) and `scores` (floats) outputs of a signature that has
/// both, as TF1 Estimators' `classification_signature_def` writes them: one class
/// name and one score per column, `[batch, classes]` each.
pub fn classification_outputs(signature: &Signature) -> Option<(&str, &str)> {
    let has = |name: &str, dtype_fits: fn(DataType) -> bool| {
        signature
            .outputs
            .iter()
            .any(|o| o.name == name && dtype_fits(o.dtype))
    };
    (has(CLASSIFY_OUTPUT_CLASSES, |d| d == DataType::Bytes)
        && has(CLASSIFY_OUTPUT_SCORES, |d| {
            matches!(d, DataType::F16 | DataType::F32 | DataType::F64)
        }))
    .then_some((CLASSIFY_OUTPUT_CLASSES, CLASSIFY_OUTPUT_SCORES))
}

/// A TensorInfo's graph tensor name, `op:index`.
fn tensor_name(info: &TensorInfo) -> Option<&str> {
    // Sparse and composite encodings are not declared (see `proto`): they decode as
    // no encoding at all.
    match info.encoding.as_ref()? {
        tensor_info::Encoding::Name(name) => Some(name),
    }
}

impl TensorflowBackend {
    /// Loads the SavedModel in `dir` (the directory holding `saved_model.pb`).
    pub fn load(
        dir: &Path,
        options: &BackendOptions,
        config: &TensorflowConfig,
    ) -> Result<TensorflowBackend, BackendError> {
        let load_err = |what: &str, message: String| {
            BackendError::Load(format!(
                "cannot load TensorFlow SavedModel {}: {what}{message}",
                dir.display()
            ))
        };
        // Before TensorFlow is loaded or called: a FIFO it opened would hold this
        // thread, and the version, for good.
        check_regular_files(dir).map_err(|m| load_err("", m))?;
        let api = api(options).map_err(BackendError::Load)?;
        let export_dir = CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| load_err("", "the path holds a NUL byte".into()))?;
        let tags: Vec<CString> = config
            .tags
            .iter()
            .map(|t| CString::new(t.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| load_err("", "a tag holds a NUL byte".into()))?;
        let tag_ptrs: Vec<*const c_char> = tags.iter().map(|t| t.as_ptr()).collect();
        for (name, n) in [
            ("intra_op_threads", config.intra_op_threads),
            ("inter_op_threads", config.inter_op_threads),
        ] {
            if n > MAX_THREADS {
                return Err(load_err(
                    "",
                    format!("{name} = {n} is more than the {MAX_THREADS} allowed"),
                ));
            }
        }
        let config_proto = proto::ConfigProto {
            intra_op_parallelism_threads: config.intra_op_threads as i32,
            inter_op_parallelism_threads: config.inter_op_threads as i32,
            // Without it TensorFlow runs every session on one process-wide inter-op
            // pool, sized by the first session created: a model's `inter_op_threads
            // = 1` made every other model's runs wait for its run. A session that
            // asks for no size keeps the shared pool, which then always has
            // TensorFlow's default size.
            use_per_session_threads: config.inter_op_threads > 0,
        }
        .encode_to_vec();
        let status = Status::new(api);
        // SAFETY: every pointer passed is live for the call; what TensorFlow returns
        // is owned here and freed below or by the backend's Drop.
        unsafe {
            let session_options = (api.TF_NewSessionOptions)();
            (api.TF_SetConfig)(
                session_options,
                config_proto.as_ptr().cast(),
                config_proto.len(),
                status.raw,
            );
            if let Err((_, m)) = status.check() {
                (api.TF_DeleteSessionOptions)(session_options);
                return Err(load_err("session options: ", m));
            }
            let graph = (api.TF_NewGraph)();
            let meta_graph = (api.TF_NewBuffer)();
            let session = (api.TF_LoadSessionFromSavedModel)(
                session_options,
                std::ptr::null(),
                export_dir.as_ptr(),
                tag_ptrs.as_ptr(),
                tag_ptrs.len() as c_int,
                graph,
                meta_graph,
                status.raw,
            );
            (api.TF_DeleteSessionOptions)(session_options);
            if let Err((_, m)) = status.check() {
                (api.TF_DeleteBuffer)(meta_graph);
                (api.TF_DeleteGraph)(graph);
                return Err(load_err("", m));
            }
            note_intra_op_pool(dir, config.intra_op_threads);
            let bytes =
                std::slice::from_raw_parts((*meta_graph).data.cast::<u8>(), (*meta_graph).length);
            let decoded = proto::MetaGraphDef::decode(bytes);
            (api.TF_DeleteBuffer)(meta_graph);
            let mut backend = TensorflowBackend {
                api,
                session,
                graph,
                signatures: Vec::new(),
                described: Vec::new(),
                default: 0,
                traits: ModelTraits::default(),
            };
            let meta_graph = decoded.map_err(|e| load_err("MetaGraphDef: ", e.to_string()))?;
            // TensorFlow loads a SavedModel whose variables are gone (it skips the
            // restore) and fails every run after; refuse it now instead.
            if !dir.join("variables/variables.index").is_file() {
                if let Some(op) = backend.variable_op() {
                    return Err(load_err(
                        "",
                        format!(
                            "variables/variables.index is missing, but the graph reads \
                             variables (a {op} operation)"
                        ),
                    ));
                }
            }
            backend.resolve_signatures(meta_graph.signature_def)?;
            Ok(backend)
        }
    }

    fn resolve_signatures(
        &mut self,
        defs: HashMap<String, SignatureDef>,
    ) -> Result<(), BackendError> {
        let mut defs: Vec<(String, SignatureDef)> = defs.into_iter().collect();
        defs.sort_by(|a, b| a.0.cmp(&b.0));
        // `__saved_model_init_op` is a SignatureDef holding only the init op.
        defs.retain(|(name, def)| !name.starts_with("__") && !def.outputs.is_empty());
        if defs.is_empty() {
            return Err(BackendError::Load(
                "the SavedModel has no SignatureDef with outputs under these tags".into(),
            ));
        }
        let mut skipped: Vec<String> = Vec::new();
        for (name, def) in defs {
            let specs = |map: &HashMap<String, TensorInfo>| {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut specs = Vec::new();
                let mut outputs = Vec::new();
                let mut names = Vec::new();
                for key in keys {
                    let (spec, output) = self.resolve_tensor(&name, key, &map[key])?;
                    specs.push(spec);
                    outputs.push(output);
                    names.push(tensor_name(&map[key]).unwrap_or_default().to_string());
                }
                Ok::<_, BackendError>((specs, outputs, names))
            };
            // A signature ferroserve cannot serve (a sparse tensor, an unsupported
            // dtype) is left out, as long as another one remains.
            let resolved = specs(&def.inputs).and_then(|i| Ok((i, specs(&def.outputs)?)));
            let ((input_specs, inputs, input_tensors), (output_specs, outputs, output_tensors)) =
                match resolved {
                    Ok(both) => both,
                    Err(e) => {
                        tracing::warn!(signature = %name, error = %e, "SavedModel signature not served");
                        skipped.push(e.to_string());
                        continue;
                    }
                };
            self.signatures.push(LoadedSignature {
                name: name.clone(),
                inputs,
                outputs,
            });
            self.described.push(NamedSignature {
                name: name.clone(),
                method_name: def.method_name.clone(),
                signature: Signature {
                    inputs: input_specs,
                    outputs: output_specs,
                },
                input_tensors,
                output_tensors,
            });
        }
        if self.signatures.is_empty() {
            return Err(BackendError::Load(format!(
                "no signature of the SavedModel can be served: {}",
                skipped.join("; ")
            )));
        }
        self.default = self
            .signatures
            .iter()
            .position(|s| s.name == DEFAULT_SIGNATURE)
            .unwrap_or(0);
        let default = &self.described[self.default].signature;
        self.traits = match classification_outputs(default) {
            // A classification signature's `classes` holds every class name of each
            // row, whatever the input (TensorFlow then prunes the input away): the
            // answer is read from both, as TF Serving's Classify reads them.
            Some((classes, scores)) => ModelTraits {
                prediction_output: Some(classes.to_string()),
                probabilities_output: Some(scores.to_string()),
                ..ModelTraits::default()
            },
            None => ModelTraits {
                prediction_output: default.outputs.first().map(|o| o.name.clone()),
                ..ModelTraits::default()
            },
        };
        Ok(())
    }

    /// The name of a variable-creating operation of the graph, if it has one.
    fn variable_op(&self) -> Option<String> {
        let mut pos = 0usize;
        loop {
            // SAFETY: iterates the live graph with TensorFlow's own cursor; names
            // and types are NUL-terminated strings owned by the graph.
            unsafe {
                let op = (self.api.TF_GraphNextOperation)(self.graph, &mut pos);
                if op.is_null() {
                    return None;
                }
                let ty = CStr::from_ptr((self.api.TF_OperationOpType)(op));
                if matches!(ty.to_bytes(), b"VarHandleOp" | b"VariableV2" | b"Variable") {
                    return Some(ty.to_string_lossy().into_owned());
                }
            }
        }
    }

    /// The spec and graph tensor of one named input or output of a signature.
    fn resolve_tensor(
        &self,
        signature: &str,
        key: &str,
        info: &TensorInfo,
    ) -> Result<(TensorSpec, ffi::TF_Output), BackendError> {
        let what = || format!("signature {signature:?} tensor {key:?}");
        let name = tensor_name(info).ok_or_else(|| {
            BackendError::Load(format!(
                "{} is a sparse or composite tensor, which is not supported",
                what()
            ))
        })?;
        let (op, index) = match name.rsplit_once(':') {
            Some((op, index)) if index.parse::<c_int>().is_ok() => {
                (op, index.parse::<c_int>().unwrap_or(0))
            }
            _ => (name, 0),
        };
        let op_name = CString::new(op)
            .map_err(|_| BackendError::Load(format!("{}: bad tensor name", what())))?;
        // SAFETY: the graph is live; the name is NUL-terminated.
        let oper = unsafe { (self.api.TF_GraphOperationByName)(self.graph, op_name.as_ptr()) };
        if oper.is_null() {
            return Err(BackendError::Load(format!(
                "{}: the graph has no operation {op:?}",
                what()
            )));
        }
        // SAFETY: `oper` belongs to the live graph.
        if index < 0 || index >= unsafe { (self.api.TF_OperationNumOutputs)(oper) } {
            return Err(BackendError::Load(format!(
                "{}: operation {op:?} has no output {index}",
                what()
            )));
        }
        let dtype = dtype_from_tf(info.dtype).ok_or_else(|| {
            BackendError::Load(format!(
                "{} has unsupported dtype {}",
                what(),
                proto::dtype_name(info.dtype)
            ))
        })?;
        let shape = match &info.tensor_shape {
            Some(shape) if !shape.unknown_rank => shape.dim.iter().map(|d| d.size).collect(),
            // A tensor of unknown rank: any shape (TF Serving feeds whatever comes).
            _ => vec![crate::tensor::ANY_RANK],
        };
        Ok((
            TensorSpec {
                name: key.to_string(),
                dtype,
                shape,
            },
            ffi::TF_Output { oper, index },
        ))
    }

    fn find_index(&self, name: &str) -> Option<usize> {
        if name.is_empty() {
            return Some(self.default);
        }
        self.signatures.iter().position(|s| s.name == name)
    }

    fn run(
        &self,
        index: usize,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        let signature = &self.signatures[index];
        let described = &self.described[index].signature;
        let mut feeds: Vec<ffi::TF_Output> = Vec::with_capacity(inputs.len());
        let mut values: Vec<OwnedTensor> = Vec::with_capacity(inputs.len());
        for (name, tensor) in &inputs {
            let i = described
                .inputs
                .iter()
                .position(|s| s.name == *name)
                .ok_or_else(|| {
                    BackendError::InvalidInput(format!(
                        "signature {:?} has no input {name:?}",
                        signature.name
                    ))
                })?;
            let spec = &described.inputs[i];
            if tensor.dtype() != spec.dtype {
                return Err(BackendError::InvalidInput(format!(
                    "input {name:?} is {} but the signature takes {}",
                    tensor.dtype(),
                    spec.dtype
                )));
            }
            if !spec.accepts_shape(tensor.shape()) {
                // Callers check shapes first (with their own messages); a kernel fed
                // a rank it does not take may abort the process rather than fail
                // (oneDNN's Conv2D), so no caller's tensor reaches TensorFlow unchecked.
                return Err(BackendError::InvalidInput(format!(
                    "input {name:?} has shape {:?}, but the signature takes {:?} (-1: any size)",
                    tensor.shape(),
                    spec.shape
                )));
            }
            if tensor.shape().len() > TF_MAX_DIMS {
                // TF_AllocateTensor aborts the process on more (a CHECK in
                // TensorShape), so an input of any rank is bounded here.
                return Err(BackendError::InvalidInput(format!(
                    "input {name:?} has {} dimensions; TensorFlow takes at most {TF_MAX_DIMS}",
                    tensor.shape().len()
                )));
            }
            if let Some(&d) = tensor.shape().iter().find(|&&d| i64::try_from(d).is_err()) {
                // Possible beside a dimension of 0 (no elements, so no size bound).
                return Err(BackendError::InvalidInput(format!(
                    "input {name:?} has a dimension of {d}; TensorFlow takes at most {}",
                    i64::MAX
                )));
            }
            feeds.push(signature.inputs[i]);
            values.push(OwnedTensor::from_tensor(self.api, tensor)?);
        }
        if let Some(missing) = described
            .inputs
            .iter()
            .find(|s| !inputs.iter().any(|(n, _)| *n == s.name))
        {
            return Err(BackendError::InvalidInput(format!(
                "input {:?} is missing",
                missing.name
            )));
        }
        let wanted: Vec<usize> = if output_names.is_empty() {
            (0..signature.outputs.len()).collect()
        } else {
            output_names
                .iter()
                .map(|name| {
                    described
                        .outputs
                        .iter()
                        .position(|o| o.name == *name)
                        .ok_or_else(|| {
                            BackendError::InvalidInput(format!(
                                "signature {:?} has no output {name:?}",
                                signature.name
                            ))
                        })
                })
                .collect::<Result<_, _>>()?
        };
        let fetches: Vec<ffi::TF_Output> = wanted.iter().map(|&i| signature.outputs[i]).collect();
        let input_ptrs: Vec<*mut ffi::TF_Tensor> = values.iter().map(|v| v.raw).collect();
        let mut output_ptrs: Vec<*mut ffi::TF_Tensor> = vec![std::ptr::null_mut(); fetches.len()];
        let status = Status::new(self.api);
        // The run's deadline as TF Serving passes it: RunOptions.timeout_in_ms, past
        // which TensorFlow cancels the run between ops.
        let run_options = super::run_deadline().map(|d| {
            run_options_with_timeout(d.saturating_duration_since(std::time::Instant::now()))
        });
        let run_options_buffer = run_options.as_ref().map(|bytes| ffi::TF_Buffer {
            data: bytes.as_ptr().cast(),
            length: bytes.len(),
            data_deallocator: None,
        });
        // SAFETY: the arrays have the lengths passed; the input tensors and the run
        // options stay alive for the call; TensorFlow fills `output_ptrs` with
        // tensors we now own.
        unsafe {
            (self.api.TF_SessionRun)(
                self.session,
                run_options_buffer
                    .as_ref()
                    .map_or(std::ptr::null(), |b| b as *const ffi::TF_Buffer),
                feeds.as_ptr(),
                input_ptrs.as_ptr(),
                feeds.len() as c_int,
                fetches.as_ptr(),
                output_ptrs.as_mut_ptr(),
                fetches.len() as c_int,
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
                status.raw,
            );
        }
        // The input tensors (`values`) live until the outputs are read: an output
        // may share an input's buffer (an identity signature).
        let outputs: Vec<OwnedTensor> = output_ptrs
            .into_iter()
            .filter(|p| !p.is_null())
            .map(|raw| OwnedTensor::output(self.api, raw))
            .collect();
        if let Err((code, message)) = status.check() {
            let message = super::client_message(&message, None);
            return Err(match code {
                TF_INVALID_ARGUMENT => BackendError::InvalidInput(message),
                TF_RESOURCE_EXHAUSTED => BackendError::OutOfMemory(message),
                TF_DEADLINE_EXCEEDED => BackendError::DeadlineExceeded(message),
                _ => BackendError::Inference(message),
            });
        }
        wanted
            .iter()
            .zip(&outputs)
            .map(|(&i, out)| {
                let name = &described.outputs[i].name;
                Ok((name.clone(), out.to_tensor(name)?))
            })
            .collect()
    }
}

impl Backend for TensorflowBackend {
    fn format(&self) -> &'static str {
        "tensorflow"
    }

    fn signature(&self) -> &Signature {
        &self.described[self.default].signature
    }

    fn traits(&self) -> &ModelTraits {
        &self.traits
    }

    fn predict(
        &self,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        self.run(self.default, inputs, output_names)
    }

    fn signatures(&self) -> &[NamedSignature] {
        &self.described
    }

    fn signature_named(&self, name: &str) -> Option<&Signature> {
        self.find_index(name).map(|i| &self.described[i].signature)
    }

    fn predict_signature(
        &self,
        signature: &str,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        let found = self.find_index(signature).ok_or_else(|| {
            BackendError::InvalidInput(format!("serving signature name {signature:?} not found"))
        })?;
        self.run(found, inputs, output_names)
    }
}

#[cfg(test)]
mod run_options_tests {
    use super::run_options_with_timeout;
    use std::time::Duration;

    /// `RunOptions { timeout_in_ms }` as protobuf writes it: tag 0x10, then the
    /// milliseconds as a varint; never 0 (no timeout).
    #[test]
    fn run_options_carry_the_timeout_in_milliseconds() {
        assert_eq!(
            run_options_with_timeout(Duration::from_millis(1500)),
            [0x10, 0xdc, 0x0b]
        );
        assert_eq!(
            run_options_with_timeout(Duration::from_millis(5)),
            [0x10, 5]
        );
        assert_eq!(run_options_with_timeout(Duration::ZERO), [0x10, 1]);
        assert_eq!(
            run_options_with_timeout(Duration::from_micros(300)),
            [0x10, 1]
        );
    }
}
