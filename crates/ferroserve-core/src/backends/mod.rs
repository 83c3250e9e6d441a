//! The [`Backend`] trait (a loaded model that runs batches) and its types, the
//! recognition of a model file's format ([`mod@format`]), and the backends that need
//! nothing of the server ([`onnx`], [`tensorflow`]). The server adds its other
//! formats and picks one per artifact (`ferroserve::backends::load_backend`).
//!
//! Backends are synchronous: they are called only from inference threads, never
//! from async workers.

pub mod format;
pub mod onnx;
pub mod tensorflow;

use std::path::{Path, PathBuf};

use crate::tensor::{NamedTensor, TensorSpec};

/// TF Serving's default signature key; formats with one signature answer to it.
pub const DEFAULT_SIGNATURE: &str = "serving_default";

/// What a model takes and gives.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// One of a model's named signatures (TF SavedModels have several).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedSignature {
    pub name: String,
    /// TF's method name (`tensorflow/serving/predict`, `…/classify`, `…/regress`).
    pub method_name: String,
    pub signature: Signature,
    /// The graph tensor (`op:index`) of each input, in `signature.inputs` order.
    pub input_tensors: Vec<String>,
    /// The graph tensor of each output, in `signature.outputs` order.
    pub output_tensors: Vec<String>,
}

/// What kind of answer a model gives, so the simple `/predict` API can say
/// "prediction" and "probabilities" without knowing the format.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelTraits {
    /// The output holding the predicted label or value, if the model has one.
    pub prediction_output: Option<String>,
    /// The output holding class probabilities `[batch, n_classes]` (classifiers).
    pub probabilities_output: Option<String>,
    /// Class labels in the column order of the probabilities, when the model knows them.
    pub class_labels: Option<Vec<String>>,
    /// Names of the model's input features, in column order, when the model knows them
    /// (scikit-learn's `feature_names_in_`); the model config can also give them.
    pub feature_names: Option<Vec<String>>,
    /// Inputs whose missing values the model fills itself (a training job's
    /// `missing` policy, [`onnx::IMPUTES_KEY`]): a missing value (JSON null, an
    /// empty or blank cell) goes in as NaN to a float input, as `""` to a string
    /// input. Any other input refuses one.
    pub missing_inputs: Vec<String>,
    /// String inputs of categorical features whose categories are numbers (a
    /// training job's, [`onnx::NUMERIC_CATEGORY_KEY`]): a number, or text that reads
    /// as one, sent to one is written as the number's category text first, so that
    /// `1`, `1.0` and `"1.0"` meet one category.
    pub numeric_category_inputs: Vec<String>,
    /// Inputs the model was fitted with but does not use (a scikit-learn
    /// `ColumnTransformer` column no transformer selects): scikit-learn requires them
    /// in a DataFrame, so a request may carry them, in any dtype, and they are
    /// dropped before the model runs. Not in the signature: nothing says their dtype.
    pub ignored_inputs: Vec<String>,
    /// Written by a ferroserve training job (an ONNX model whose producer is
    /// `ferroserve`): its inputs that do not impute (`missing_inputs`) refuse NaN
    /// as the missing value it is, as its training refused it. Other models take
    /// NaN as the number it is (a scikit-learn imputer or a gradient-boosted model
    /// may handle it).
    pub trained: bool,
    /// An output whose columns are the model's own k best, best first, rather than
    /// one column per class (fastText's `probabilities`): the classification
    /// extension refuses it, since its indices would be ranks, not classes.
    pub ranked_output: Option<String>,
}

/// Per-request options a backend may honour: a fastText model's `k` and `threshold`
/// (V2 `parameters`, TF Serving REST's extra fields). Requests with different
/// options never share a batch, and a request with options skips the response cache.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PredictOptions {
    /// Labels per text (`-1`: every label).
    pub k: Option<i32>,
    /// Labels less probable than this are left out.
    pub threshold: Option<f32>,
}

impl PredictOptions {
    pub fn is_empty(&self) -> bool {
        self.k.is_none() && self.threshold.is_none()
    }
}

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The artifact cannot be loaded (corrupt, unsupported, refused class, missing runtime).
    #[error("{0}")]
    Load(String),
    /// The request does not fit the model (wrong input, dtype or shape).
    #[error("{0}")]
    InvalidInput(String),
    /// The model failed while running a valid request.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The runtime could not allocate the memory a valid request needs (a memory
    /// limit, or a request too large for the machine): a 503, not the client's fault.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The runtime cancelled the run at its deadline ([`run_deadline`]).
    #[error("the deadline passed while the model ran: {0}")]
    DeadlineExceeded(String),
}

thread_local! {
    static RUN_DEADLINE: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// Runs `f` (a backend's run, on this thread) with `deadline` as the time past which
/// a runtime that can cancel a run does (TensorFlow's `RunOptions.timeout_in_ms`):
/// a run nobody waits for any more stops holding the model's threads. `None`: no
/// deadline (one request of the batch has none).
pub fn with_run_deadline<T>(deadline: Option<std::time::Instant>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<std::time::Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            RUN_DEADLINE.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(RUN_DEADLINE.with(|d| d.replace(deadline)));
    f()
}

/// The deadline [`with_run_deadline`] set for the run on this thread.
pub fn run_deadline() -> Option<std::time::Instant> {
    RUN_DEADLINE.with(|d| d.get())
}

impl BackendError {
    /// A runtime's run error: out of memory when its message says an allocation
    /// failed, else the request's fault (runtimes report shape and type
    /// mismatches as run errors).
    pub fn from_run_message(message: String) -> BackendError {
        let lower = message.to_ascii_lowercase();
        if lower.contains("failed to allocate memory") || lower.contains("bad_alloc") {
            BackendError::OutOfMemory(message)
        } else {
            BackendError::InvalidInput(message)
        }
    }
}

/// A loaded model version.
///
/// Implementers must:
/// * be callable from several inference threads at once (`&self`); a runtime
///   whose sessions need `&mut` keeps its own pool of them;
/// * check inputs against [`Backend::signature`] and answer
///   [`BackendError::InvalidInput`] rather than panic on any tensor a client sends;
/// * give outputs in the order of `output_names` when it is not empty, else every
///   output in signature order;
/// * keep the batch dimension: `n` rows in, `n` rows out.
pub trait Backend: Send + Sync + 'static {
    /// A short name of the format, for status and metrics (`"onnx"`, `"sklearn"`).
    fn format(&self) -> &'static str;

    fn signature(&self) -> &Signature;

    fn traits(&self) -> &ModelTraits;

    /// Runs one batch. `inputs` are already named as in the signature and cast to
    /// its dtypes by the caller (the server's `api`).
    fn predict(
        &self,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError>;

    /// [`Backend::predict`] with a request's options. A backend that has none
    /// keeps this default, which refuses a request that gives any.
    fn predict_with_options(
        &self,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
        options: &PredictOptions,
    ) -> Result<Vec<NamedTensor>, BackendError> {
        if !options.is_empty() {
            return Err(BackendError::InvalidInput(format!(
                "the parameters k and threshold apply to fastText models; this is a {} model",
                self.format()
            )));
        }
        self.predict(inputs, output_names)
    }

    /// Whether `output` is in the answer to a request that names no outputs: every
    /// output, unless the backend computes one only when asked for it.
    fn answers_unasked(&self, output: &str) -> bool {
        let _ = output;
        true
    }

    /// Every named signature, the default one included; empty for a format whose
    /// models have only [`Backend::signature`].
    fn signatures(&self) -> &[NamedSignature] {
        &[]
    }

    /// The signature called `name` (empty: the default), if the model has one by
    /// that name. Formats with one signature call it `serving_default`.
    fn signature_named(&self, name: &str) -> Option<&Signature> {
        (name.is_empty() || name == DEFAULT_SIGNATURE).then(|| self.signature())
    }

    /// Runs one batch through the signature called `name` (empty: the default).
    fn predict_signature(
        &self,
        name: &str,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        if !name.is_empty() && name != DEFAULT_SIGNATURE {
            return Err(BackendError::InvalidInput(format!(
                "serving signature name {name:?} not found"
            )));
        }
        self.predict(inputs, output_names)
    }
}

/// Settings backends need when loading, passed down from `Settings`.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    /// Explicit path to `libonnxruntime.so`; see `backends::onnx::locate_runtime`.
    pub onnxruntime_path: Option<PathBuf>,
    /// ONNX Runtime intra-op threads per session.
    pub onnx_intra_threads: usize,
    /// ONNX sessions per model version (parallel runs of one model).
    pub onnx_sessions: usize,
    /// Explicit directory of TensorFlow's libraries; see
    /// `backends::tensorflow::locate_library`.
    pub tensorflow_path: Option<PathBuf>,
}

/// Finds a backend's library when no setting names it: the first of the path in the
/// environment `variable` (when set and not empty; taken as it is), then `in_dir` of
/// the running executable's directory and of the one above it (test binaries live
/// in `target/<profile>/deps`), that `holds` accepts. Otherwise answers every path
/// tried, for the caller's message.
pub(crate) fn find_library(
    variable: &str,
    in_dir: impl Fn(&Path) -> PathBuf,
    holds: impl Fn(&Path) -> bool,
) -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os(variable).filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        candidates.push(in_dir(&dir));
        if let Some(up) = dir.parent() {
            candidates.push(in_dir(up));
        }
    }
    match candidates.iter().find(|c| holds(c)) {
        Some(found) => Ok(found.clone()),
        None => Err(candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")),
    }
}

/// A runtime's message as a client may see it. The artifact's path becomes its
/// file name and its directory `<model directory>`; a source location of the
/// runtime (`/onnxruntime_src/…/model.cc:256 onnxruntime::Model::Model(…) `) is
/// dropped; any other absolute path becomes `<path>`.
pub fn client_message(raw: &str, artifact: Option<&Path>) -> String {
    let mut text = raw.trim_end().to_string();
    if let Some(artifact) = artifact {
        if let Some(name) = artifact.file_name().and_then(|n| n.to_str()) {
            text = text.replace(&*artifact.to_string_lossy(), name);
        }
        if let Some(dir) = artifact.parent().filter(|d| d.as_os_str().len() > 1) {
            text = text.replace(&*dir.to_string_lossy(), "<model directory>");
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = find_absolute_path(rest) {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | ',' | ']' | ';'))
            .unwrap_or(after.len());
        let path = &after[..end];
        rest = &after[end..];
        if is_source_location(path) {
            // Drops the location, the space after it, and the C++ function named
            // after it (`ns::f(args) `), which only makes sense beside the source.
            rest = rest.strip_prefix(' ').unwrap_or(rest);
            rest = skip_function_signature(rest);
        } else {
            out.push_str("<path>");
        }
    }
    out.push_str(rest);
    out
}

/// Where an absolute path starts in `text`: a `/` at the start or after a space,
/// quote, bracket, `:` or `=`, followed by a name character.
fn find_absolute_path(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find(|&i| {
        bytes[i] == b'/'
            && (i == 0
                || matches!(
                    bytes[i - 1],
                    b' ' | b'\t' | b'\n' | b'"' | b'\'' | b'(' | b'[' | b':' | b'='
                ))
            && bytes
                .get(i + 1)
                .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~'))
    })
}

/// `…/file.cc:123` (or `.h`, `.cpp`, …): where in its sources a runtime raised.
fn is_source_location(path: &str) -> bool {
    path.rsplit_once(':').is_some_and(|(file, line)| {
        !line.is_empty()
            && line.bytes().all(|b| b.is_ascii_digit())
            && [".cc", ".cpp", ".cxx", ".c", ".h", ".hpp", ".rs"]
                .iter()
                .any(|ext| file.ends_with(ext))
    })
}

/// Skips `qualified::name(args…) ` at the start of `text`, if it is there.
fn skip_function_signature(text: &str) -> &str {
    let Some(open) = text.find('(') else {
        return text;
    };
    let name = &text[..open];
    if !name.contains("::") || name.contains(char::is_whitespace) {
        return text;
    }
    let mut depth = 0usize;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    let rest = &text[open + i + 1..];
                    // `… const` and similar qualifiers, then the message.
                    let rest = rest.strip_prefix(" const").unwrap_or(rest);
                    return rest.strip_prefix(' ').unwrap_or(rest);
                }
            }
            _ => {}
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_is_looked_for_by_the_executable_and_one_level_up() {
        let exe_dir = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let up = exe_dir.parent().unwrap().to_path_buf();
        // No such variable: only the two directories, in that order.
        let unset = "FERROSERVE_TEST_NO_SUCH_LIBRARY_VARIABLE";
        let in_dir = |d: &Path| d.join("libnothing.so");
        let found = find_library(unset, in_dir, |c| c == up.join("libnothing.so"));
        assert_eq!(found, Ok(up.join("libnothing.so")));
        let found = find_library(unset, in_dir, |_| true);
        assert_eq!(found, Ok(exe_dir.join("libnothing.so")));
        let tried = find_library(unset, in_dir, |_| false).unwrap_err();
        assert_eq!(
            tried,
            format!(
                "{}, {}",
                exe_dir.join("libnothing.so").display(),
                up.join("libnothing.so").display()
            )
        );
    }

    #[test]
    fn client_messages_carry_no_server_paths_or_source_locations() {
        let artifact = Path::new("/srv/models/m/.tmp-upload-29464-18/model.onnx");
        let cases = [
            (
                "cannot load ONNX model /srv/models/m/.tmp-upload-29464-18/model.onnx: Load model from /srv/models/m/.tmp-upload-29464-18/model.onnx failed:Protobuf parsing failed.",
                "cannot load ONNX model model.onnx: Load model from model.onnx failed:Protobuf parsing failed.",
            ),
            (
                "Load model from /srv/models/m/.tmp-upload-29464-18/model.onnx failed:/onnxruntime_src/onnxruntime/core/graph/model.cc:256 onnxruntime::Model::Model(onnx::ModelProto&&, const onnxruntime::PathString&, const onnxruntime::logging::Logger&, const onnxruntime::ModelOptions&) Unsupported model IR version: 14, max supported IR version: 13\n",
                "Load model from model.onnx failed:Unsupported model IR version: 14, max supported IR version: 13",
            ),
            (
                "External data path escapes model directory. External data path: \"../../etc/passwd\" resolved path: \"/srv/etc/passwd\" allowed directory: \"/srv/models/m/.tmp-upload-29464-18\"",
                "External data path escapes model directory. External data path: \"../../etc/passwd\" resolved path: \"<path>\" allowed directory: \"<model directory>\"",
            ),
            (
                "Non-zero status code returned while running Gemm node. Name:'' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/math/gemm_helper.h:14 onnxruntime::GemmHelper::GemmHelper(const onnxruntime::TensorShape&, bool, const onnxruntime::TensorShape&, bool, const onnxruntime::TensorShape&) left operand cannot broadcast on dim 0",
                "Non-zero status code returned while running Gemm node. Name:'' Status Message: left operand cannot broadcast on dim 0",
            ),
            // Nothing that only looks like a path is touched.
            ("shape [2, 4] / [3]: 1/2 of n/a", "shape [2, 4] / [3]: 1/2 of n/a"),
        ];
        for (raw, expected) in cases {
            assert_eq!(client_message(raw, Some(artifact)), expected);
        }
    }
}
