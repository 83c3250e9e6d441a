//! Model formats. Each format implements [`Backend`] (a loaded model that runs
//! batches) and is chosen by [`load_backend`] from the artifact's file name.
//!
//! Backends are synchronous: they are called only from inference threads
//! (see `crate::inference`), never from async workers.

pub mod onnx;
pub mod sklearn;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::tensor::{NamedTensor, TensorSpec};

/// What a model takes and gives.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
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
    /// its dtypes by the caller (`crate::api`).
    fn predict(
        &self,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError>;
}

/// Artifact file names, in order of preference, and the format each means.
pub const ARTIFACT_NAMES: [&str; 4] = ["model.onnx", "model.pkl", "model.joblib", "model.pickle"];

/// Settings backends need when loading, passed down from `Settings`.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    /// Explicit path to `libonnxruntime.so`; see `backends::onnx::locate_runtime`.
    pub onnxruntime_path: Option<PathBuf>,
    /// ONNX Runtime intra-op threads per session.
    pub onnx_intra_threads: usize,
    /// ONNX sessions per model version (parallel runs of one model).
    pub onnx_sessions: usize,
}

/// Finds the artifact in a version directory: the first of [`ARTIFACT_NAMES`] present.
pub fn find_artifact(version_dir: &Path) -> Option<PathBuf> {
    ARTIFACT_NAMES
        .iter()
        .map(|name| version_dir.join(name))
        .find(|p| p.is_file())
}

/// Loads an artifact with the backend its file name calls for.
pub fn load_backend(
    artifact: &Path,
    options: &BackendOptions,
) -> Result<Arc<dyn Backend>, BackendError> {
    let ext = artifact
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    match ext {
        "onnx" => Ok(Arc::new(onnx::OnnxBackend::load(artifact, options)?)),
        "pkl" | "pickle" | "joblib" => Ok(Arc::new(sklearn::SklearnBackend::load(artifact)?)),
        other => Err(BackendError::Load(format!(
            "no backend for artifact {} (extension {other:?}); expected one of {ARTIFACT_NAMES:?}",
            artifact.display()
        ))),
    }
}
