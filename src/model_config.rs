//! Per-model settings from `<repo>/<model>/config.toml`.
//!
//! ```toml
//! version_policy = { latest = 2 }   # or "all", or { specific = [1, 3] }
//! timeout_secs = 30                 # request deadline for this model
//! input_name = "input"              # the input the simple API feeds features into
//! prediction_output = "label"       # output the simple API calls "prediction"
//! probabilities_output = "probabilities"
//! feature_names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
//!
//! [labels]
//! stable = 1
//! canary = 2
//! ```
//! Every key is optional; an unknown key is an error, so a typo never passes silently.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Which versions of a model are served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionPolicy {
    /// The N highest versions. Default: `latest = 1`.
    Latest(usize),
    /// Every version on disk.
    All,
    /// Exactly these versions.
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> VersionPolicy {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// Picks the versions to serve from those available on disk (any order).
    pub fn select(&self, on_disk: &[u64]) -> Vec<u64> {
        let mut sorted = on_disk.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        match self {
            VersionPolicy::Latest(n) => sorted.into_iter().rev().take(*n).rev().collect(),
            VersionPolicy::All => sorted,
            VersionPolicy::Specific(wanted) => {
                sorted.into_iter().filter(|v| wanted.contains(v)).collect()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Label name → version, e.g. `stable = 3`.
    #[serde(default)]
    pub labels: BTreeMap<String, u64>,
    /// Request deadline for this model, overriding the server's default.
    pub timeout_secs: Option<f64>,
    /// The input the simple API fills with features (default: the model's only input).
    pub input_name: Option<String>,
    /// The output the simple API reports as "prediction".
    pub prediction_output: Option<String>,
    /// The output the simple API reports as "probabilities".
    pub probabilities_output: Option<String>,
    /// Feature names in input column order, for named features in the simple API.
    pub feature_names: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} is not a valid model config: {reason}")]
    Invalid { path: String, reason: String },
}

impl ModelConfig {
    pub const FILE_NAME: &'static str = "config.toml";

    /// Reads `<model_dir>/config.toml`; a missing file means all defaults.
    pub fn load(model_dir: &Path) -> Result<ModelConfig, ModelConfigError> {
        let path = model_dir.join(Self::FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ModelConfig::default()),
            Err(e) => {
                return Err(ModelConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        Self::parse(&text).map_err(|reason| ModelConfigError::Invalid {
            path: path.display().to_string(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<ModelConfig, String> {
        let config: ModelConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(t) = self.timeout_secs {
            if !(t.is_finite() && t > 0.0) {
                return Err(format!("timeout_secs must be a positive number, not {t}"));
            }
        }
        if self.version_policy == VersionPolicy::Latest(0) {
            return Err("version_policy latest must be at least 1".into());
        }
        Ok(())
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_secs.map(Duration::from_secs_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_policy_form() {
        let all = ModelConfig::parse("version_policy = \"all\"").unwrap();
        assert_eq!(all.version_policy, VersionPolicy::All);
        let latest = ModelConfig::parse("version_policy = { latest = 2 }").unwrap();
        assert_eq!(latest.version_policy, VersionPolicy::Latest(2));
        let specific = ModelConfig::parse("version_policy = { specific = [1, 3] }").unwrap();
        assert_eq!(specific.version_policy, VersionPolicy::Specific(vec![1, 3]));
        assert_eq!(ModelConfig::parse("").unwrap(), ModelConfig::default());
    }

    #[test]
    fn refuses_typos_and_bad_values() {
        assert!(ModelConfig::parse("timeout_sec = 3").is_err());
        assert!(ModelConfig::parse("timeout_secs = -3").is_err());
        assert!(ModelConfig::parse("version_policy = { latest = 0 }").is_err());
    }

    #[test]
    fn policy_selects_versions() {
        let disk = [10, 1, 2];
        assert_eq!(VersionPolicy::Latest(1).select(&disk), vec![10]);
        assert_eq!(VersionPolicy::Latest(2).select(&disk), vec![2, 10]);
        assert_eq!(VersionPolicy::All.select(&disk), vec![1, 2, 10]);
        assert_eq!(VersionPolicy::Specific(vec![2, 7]).select(&disk), vec![2]);
    }
}
