//! scikit-learn pickles and joblib files, read natively by `ferroserve-sklearn`.

use std::path::Path;

use super::{Backend, BackendError, ModelTraits, Signature};
use crate::tensor::NamedTensor;

pub struct SklearnBackend {
    signature: Signature,
    traits: ModelTraits,
}

impl SklearnBackend {
    pub fn load(artifact: &Path) -> Result<SklearnBackend, BackendError> {
        Err(BackendError::Load(format!(
            "{}: scikit-learn models are not supported yet",
            artifact.display()
        )))
    }
}

impl Backend for SklearnBackend {
    fn format(&self) -> &'static str {
        "sklearn"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn traits(&self) -> &ModelTraits {
        &self.traits
    }
    fn predict(
        &self,
        _inputs: Vec<NamedTensor>,
        _output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        Err(BackendError::Inference("not supported yet".into()))
    }
}
