//! Training jobs: the slot the trainers fill.
//!
//! A training job's spec is parsed and checked at submission
//! (`spec::TrainSpec`), so its errors are reported as for scoring. Running it needs
//! a [`Trainer`] for the spec's algorithm; none is built yet, so [`trainer_for`]
//! finds none and the API refuses training jobs at submission with a clear message
//! (`api::jobs::submit`). [`run`] is what the runner calls for a training job that
//! reached it anyway (one queued by a build that had trainers).

use super::io::Value;
use super::spec::TrainSpec;
use super::{JobContext, JobError};

/// The rows a trainer learns from: the schema's columns, read whole (training may
/// load its data, up to the server's row limit).
pub struct TrainingData {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// What a trainer produced, for the job's result and the model version it saves.
pub struct TrainingOutcome {
    /// The CV table, best parameters, metrics, row count, data hash.
    pub result: serde_json::Value,
    /// The model's files (`model.onnx`, `training.json`) to stage as the next version.
    pub files: Vec<(String, Vec<u8>)>,
}

/// One family of algorithms (logistic regression, a tree ensemble).
///
/// An implementer must: accept or refuse the spec's `algorithm` object at
/// [`Trainer::check`] (a malformed grid is a 400 naming the field); in
/// [`Trainer::train`], call `ctx.check_cancelled()` at least once per fold and
/// report folds through `ctx.progress` (`folds_done`, `folds_total`); never write
/// into the model repository itself (the runner stages the files).
pub trait Trainer: Send + Sync {
    /// The `algorithm.name` it answers to.
    fn name(&self) -> &'static str;
    fn check(&self, spec: &TrainSpec) -> Result<(), String>;
    fn train(
        &self,
        ctx: &JobContext,
        spec: &TrainSpec,
        data: TrainingData,
    ) -> Result<TrainingOutcome, JobError>;
}

/// The trainer for `algorithm`, when this build has one.
pub fn trainer_for(_algorithm: &str) -> Option<&'static dyn Trainer> {
    None
}

pub fn run(_ctx: &JobContext, spec: &TrainSpec) -> Result<serde_json::Value, JobError> {
    Err(JobError::Failed(format!(
        "training ({:?}) is not available in this build",
        spec.algorithm
    )))
}
