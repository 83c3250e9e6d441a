//! The tables one model format reads: `[sklearn]`, `[fasttext]`, `[tensorflow]`.

use serde::Deserialize;

/// The `[sklearn]` table: how a scikit-learn pickle of this model is read.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SklearnConfig {
    /// Serve the estimator held in this attribute of the user's own wrapper class
    /// (e.g. `"model"` for a pickled `LogisticRegressionTrain` object). The wrapper is
    /// rebuilt as an inert bag of attributes, never called. Default: none, so a
    /// pickle of an unknown class is refused by the class's name.
    pub wrapper_attribute: Option<String>,
}

/// The `[fasttext]` table: what a fastText classifier answers by default (a request
/// may ask otherwise, see `crate::backends::fasttext`). Read when a version loads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FastTextConfig {
    /// Labels per text, most probable first; `-1` for every label. Default 1.
    pub k: i32,
    /// Labels less probable than this are left out. Default 0.0.
    pub threshold: f32,
}

impl Default for FastTextConfig {
    fn default() -> FastTextConfig {
        FastTextConfig {
            k: 1,
            threshold: 0.0,
        }
    }
}

/// The `[tensorflow]` table: how a SavedModel of this model is loaded (tags, threads).
/// Declared with the TensorFlow backend in ferroserve-core, which the Python package
/// shares.
pub use crate::backends::tensorflow::TensorflowConfig;

impl FastTextConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.k == 0 || self.k < -1 {
            return Err(format!(
                "fasttext.k must be 1 or more, or -1 for every label, not {}",
                self.k
            ));
        }
        if !self.threshold.is_finite() {
            return Err("fasttext.threshold must be a finite number".into());
        }
        Ok(())
    }
}
