//! `[log]`: which predictions of a model the metadata store keeps.

use serde::Deserialize;

/// The `[log]` table: a sample of this model's predictions, inputs and outputs,
/// kept in the metadata store (`GET /v1/models/{m}/predictions`). Applies to the
/// versions already serving when the file changes.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The share of successful predictions logged, 0.0 to 1.0. Default 0: none.
    #[serde(default)]
    pub sample_rate: f64,
    /// Most rows kept for this model; older ones are deleted. Default: no limit.
    pub max_rows: Option<u64>,
    /// Rows older than this are deleted. Default: kept.
    pub max_age_days: Option<f64>,
}

impl LogConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(format!(
                "log.sample_rate must be from 0.0 to 1.0, not {}",
                self.sample_rate
            ));
        }
        if self.max_rows == Some(0) {
            return Err("log.max_rows must be at least 1".into());
        }
        if let Some(d) = self.max_age_days {
            if !(d.is_finite() && d > 0.0) {
                return Err(format!(
                    "log.max_age_days must be a positive number, not {d}"
                ));
            }
        }
        Ok(())
    }
}
