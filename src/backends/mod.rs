//! Model formats. Each format implements [`Backend`] (a loaded model that runs
//! batches) and is chosen by [`load_backend`] from the artifact's content (see
//! [`mod@format`]), falling back to its file name's extension.
//!
//! Backends are synchronous: they are called only from inference threads
//! (see `crate::inference`), never from async workers.

pub mod fasttext;
pub mod sklearn;
pub mod tensorflow;

// The trait, its types, format recognition and the ONNX backend live in
// ferroserve-core, so the Python package loads models with this same code; they keep
// their paths here (`crate::backends::Backend`, `crate::backends::onnx`, `format`).
pub use ferroserve_core::backends::*;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model_config::ModelConfig;

/// Artifact file names, in order of preference, and the format each means.
pub const ARTIFACT_NAMES: [&str; 6] = [
    "model.onnx",
    "model.pkl",
    "model.joblib",
    "model.pickle",
    "model.bin",
    "model.ftz",
];

/// Files of a version directory that are never its artifact.
const NOT_ARTIFACTS: [&str; 2] = ["config.toml", crate::warmup::WARMUP_FILE];

/// Finds the artifact in a version directory: the first of [`ARTIFACT_NAMES`]
/// present; else, when the directory holds exactly one regular file (hidden files,
/// `config.toml` and `warmup.json` aside), that file whatever its name
/// (`lr_iris.model`, `name_question_1591259822.bin`): its content says its format.
///
/// A SavedModel (`saved_model.pb`, beside `variables/` and often `fingerprint.pb`)
/// comes first: its artifact is that file, and the backend loads its directory.
/// Any entry of that name makes the directory a SavedModel, a FIFO or a dangling
/// link too: the backend then says what is wrong with it, where taking
/// `fingerprint.pb` for the model said "no model artifact recognised".
pub fn find_artifact(version_dir: &Path) -> Option<PathBuf> {
    let saved_model = version_dir.join(tensorflow::SAVED_MODEL_FILE);
    if std::fs::symlink_metadata(&saved_model).is_ok() {
        return Some(saved_model);
    }
    if let Some(known) = ARTIFACT_NAMES
        .iter()
        .map(|name| version_dir.join(name))
        .find(|p| p.is_file())
    {
        return Some(known);
    }
    let mut only = None;
    for entry in std::fs::read_dir(version_dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.starts_with('.') || NOT_ARTIFACTS.contains(&name) {
            continue;
        }
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        if only.is_some() {
            return None; // several candidates, none with a known name
        }
        only = Some(path);
    }
    only
}

/// The files of a version directory that could each be its model (regular, not
/// hidden, not a file the directory gives another meaning), by name, sorted: when
/// [`find_artifact`] finds none with a known name and several of these, it takes
/// none, and the version's error names them.
pub fn artifact_candidates(version_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(version_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.') && !NOT_ARTIFACTS.contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

/// Loads an artifact with the backend its file name calls for.
///
/// A load error says what is wrong in the client's terms: it names the file as in
/// the version directory (`model.onnx`), never where it lies on the server, and
/// carries no runtime source locations. The full message, paths included, goes to
/// the log.
pub fn load_backend(
    artifact: &Path,
    options: &BackendOptions,
) -> Result<Arc<dyn Backend>, BackendError> {
    load_backend_with(artifact, options, &ModelConfig::default())
}

/// [`load_backend`] with the model's own options from its config.toml (`[sklearn]`,
/// `[tensorflow]`).
pub fn load_backend_with(
    artifact: &Path,
    options: &BackendOptions,
    config: &ModelConfig,
) -> Result<Arc<dyn Backend>, BackendError> {
    load_by_format(artifact, options, config).map_err(|e| match e {
        BackendError::Load(raw) => {
            tracing::warn!(path = %artifact.display(), error = %raw, "cannot load model file");
            BackendError::Load(client_message(&raw, Some(artifact)))
        }
        other => other,
    })
}

/// Picks the backend from the file's first bytes, else from its extension; a file
/// that is neither is refused with what was expected.
fn load_by_format(
    artifact: &Path,
    options: &BackendOptions,
    config: &ModelConfig,
) -> Result<Arc<dyn Backend>, BackendError> {
    // A SavedModel is a directory; TensorFlow (loaded only now, for the first one)
    // reads it whole.
    if artifact.file_name().and_then(|n| n.to_str()) == Some(tensorflow::SAVED_MODEL_FILE) {
        let dir = artifact.parent().unwrap_or(Path::new("."));
        return Ok(Arc::new(tensorflow::TensorflowBackend::load(
            dir,
            options,
            &config.tensorflow,
        )?));
    }
    let sniffed = format::sniff_file(artifact)
        .map_err(|e| BackendError::Load(format!("cannot read {}: {e}", artifact.display())))?;
    let Some(found) = sniffed.or_else(|| format::ArtifactFormat::from_extension(artifact)) else {
        return Err(BackendError::Load(format!(
            "no model artifact recognised in {}: expected {}",
            artifact.display(),
            format::EXPECTED_FORMATS
        )));
    };
    match found {
        format::ArtifactFormat::Onnx => Ok(Arc::new(onnx::OnnxBackend::load(artifact, options)?)),
        format::ArtifactFormat::Pickle | format::ArtifactFormat::CompressedJoblib => {
            Ok(Arc::new(sklearn::SklearnBackend::load_with(
                artifact,
                config.sklearn.wrapper_attribute.as_deref(),
            )?))
        }
        format::ArtifactFormat::FastText => {
            Ok(Arc::new(fasttext::FastTextBackend::load(artifact, config)?))
        }
    }
}
