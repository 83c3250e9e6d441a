//! Model metadata: the signature of a served version.

use super::{ApiError, ServerState};
use crate::backends::{ModelTraits, NamedSignature, Signature};
use crate::manager::VersionRequest;

#[derive(Debug, Clone)]
pub struct ModelMetadata {
    pub name: String,
    /// The version described.
    pub version: u64,
    /// Every available version of the model, ascending.
    pub available_versions: Vec<u64>,
    /// `"onnx"` or `"sklearn"`.
    pub format: &'static str,
    pub signature: Signature,
    /// Every named signature with its graph tensors (TF SavedModels); empty for a
    /// format with only `signature` (then called `serving_default`).
    pub signatures: Vec<NamedSignature>,
    pub traits: ModelTraits,
}

impl ModelMetadata {
    /// The V2 `platform` string, as Triton names its backends.
    pub fn platform(&self) -> &'static str {
        match self.format {
            "onnx" => "onnxruntime_onnx",
            "sklearn" => "sklearn",
            "tensorflow" => "tensorflow_savedmodel",
            other => other,
        }
    }
}

pub fn model_metadata(
    state: &ServerState,
    model: &str,
    version: &VersionRequest,
) -> Result<ModelMetadata, ApiError> {
    let handle = state.manager.resolve(model, version)?;
    let available_versions = state
        .manager
        .serving()
        .models
        .get(model)
        .map(|m| m.versions.keys().copied().collect())
        .unwrap_or_default();
    Ok(ModelMetadata {
        name: model.to_string(),
        version: handle.version,
        available_versions,
        format: handle.backend.format(),
        signature: handle.backend.signature().clone(),
        signatures: handle.backend.signatures().to_vec(),
        traits: handle.backend.traits().clone(),
    })
}
