//! Model metadata: the signature of a served version, as a client calls it: after
//! the version's pre- and post-processing pipeline (an image model takes encoded
//! images, a model with a tokenizer takes text), not the graph's own tensors.

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
    Ok(metadata_of(state, model, &handle))
}

/// [`model_metadata`] of the version `handle` holds, resolved by the caller (which
/// describes more of that same version).
pub(super) fn metadata_of(
    state: &ServerState,
    model: &str,
    handle: &crate::manager::ServableHandle,
) -> ModelMetadata {
    let available_versions = state
        .manager
        .serving()
        .models
        .get(model)
        .map(|m| m.versions.keys().copied().collect())
        .unwrap_or_default();
    let default = handle.backend.signature();
    ModelMetadata {
        name: model.to_string(),
        version: handle.version,
        available_versions,
        format: handle.backend.format(),
        signature: handle.pipeline.request_signature(default),
        // The pipeline runs on the default signature only (`crate::api::predict`),
        // so only that one is described as the client calls it.
        signatures: handle
            .backend
            .signatures()
            .iter()
            .map(|s| {
                if s.signature != *default {
                    return s.clone();
                }
                let signature = handle.pipeline.request_signature(&s.signature);
                // Each input keeps its graph tensor; the text input a tokenizer
                // reads has none, so it shows its own name.
                let input_tensors = signature
                    .inputs
                    .iter()
                    .map(|spec| {
                        s.signature
                            .inputs
                            .iter()
                            .position(|g| g.name == spec.name)
                            .and_then(|i| s.input_tensors.get(i).cloned())
                            .unwrap_or_else(|| spec.name.clone())
                    })
                    .collect();
                NamedSignature {
                    signature,
                    input_tensors,
                    ..s.clone()
                }
            })
            .collect(),
        traits: handle.backend.traits().clone(),
    }
}
