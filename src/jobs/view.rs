//! A job's record as the API shows it ([`JobView`]) and as the store keeps it.

use serde::{Deserialize, Serialize};

use crate::store::JobRow;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// How far a job has come.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// What it is doing: `queued`, `reading`, `scoring`, `committing`, `done`.
    pub stage: String,
    /// Done so far, 0 to 1, when the source's size is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    pub rows_read: u64,
    pub rows_written: u64,
    /// Training: cross-validation folds done of the total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folds_done: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folds_total: Option<u64>,
    pub elapsed_ms: u64,
    /// Estimated from the fraction and the elapsed time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub at_ms: i64,
    pub text: String,
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    pub job_id: String,
    pub kind: String,
    pub state: JobState,
    /// As given; shown with the passwords of its database URLs masked.
    #[serde(serialize_with = "serialize_redacted")]
    pub spec: serde_json::Value,
    pub progress: Progress,
    pub messages: Vec<Message>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
}

impl JobView {
    pub fn from_row(row: JobRow) -> JobView {
        let mut view = JobView {
            state: JobState::parse(&row.state).unwrap_or(JobState::Failed),
            spec: serde_json::from_str(&row.spec).unwrap_or(serde_json::Value::Null),
            progress: serde_json::from_str(&row.progress).unwrap_or_default(),
            messages: serde_json::from_str(&row.messages).unwrap_or_default(),
            result: row.result.and_then(|r| serde_json::from_str(&r).ok()),
            error: row.error,
            job_id: row.id,
            kind: row.kind,
            created_ms: row.created_ms,
            started_ms: row.started_ms,
            finished_ms: row.finished_ms,
        };
        // A job another replica (or the last run) left running and that was
        // marked interrupted in the store kept its last progress there.
        view.settle_progress();
        view
    }

    /// Makes a finished job's progress say how it ended: the stage is its state,
    /// and a job that did not succeed wrote nothing (its output was discarded:
    /// a temporary file removed, a transaction rolled back), whatever it had
    /// written before it ended.
    pub fn settle_progress(&mut self) {
        if !self.state.is_finished() {
            return;
        }
        self.progress.stage = self.state.as_str().into();
        match self.state {
            JobState::Succeeded => {
                self.progress.fraction = Some(1.0);
                self.progress.remaining_ms = Some(0);
            }
            _ => {
                self.progress.rows_written = 0;
                self.progress.remaining_ms = None;
            }
        }
    }
}

fn serialize_redacted<S: serde::Serializer>(
    spec: &serde_json::Value,
    s: S,
) -> Result<S::Ok, S::Error> {
    redacted(spec).serialize(s)
}

/// `spec` with the password of every URL in it masked (`postgres://u:***@h/db`):
/// clients that may read a job may not read the credentials it runs with (the
/// store keeps them, for the job to run).
fn redacted(spec: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match spec {
        Value::String(text) if crate::store::pool::has_secret(text) => {
            Value::String(crate::store::pool::redact(text))
        }
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), redacted(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The record of `view`, as the store keeps it.
pub(super) fn row_of(view: &JobView) -> JobRow {
    JobRow {
        id: view.job_id.clone(),
        kind: view.kind.clone(),
        state: view.state.as_str().to_string(),
        spec: view.spec.to_string(),
        progress: serde_json::to_string(&view.progress).unwrap_or_default(),
        messages: serde_json::to_string(&view.messages).unwrap_or_default(),
        result: view.result.as_ref().map(|r| r.to_string()),
        error: view.error.clone(),
        created_ms: view.created_ms,
        started_ms: view.started_ms,
        finished_ms: view.finished_ms,
        cancel_requested: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_spec_masks_database_passwords_and_the_stored_one_keeps_them() {
        let spec = serde_json::json!({
            "model": "iris",
            "source": {"url": "postgres://u:s3cret@db.example:5432/x", "query": "select 1"},
            "sink": {"url": "mysql://root:pw%40rd@127.0.0.1/y", "table": "t"},
            "also": ["postgres://db/z?user=u&password=qu3ry"],
            "carry": ["id"],
        });
        let view = JobView {
            job_id: "j".into(),
            kind: "score".into(),
            state: JobState::Queued,
            spec: spec.clone(),
            progress: Progress::default(),
            messages: Vec::new(),
            result: None,
            error: None,
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
        };
        let shown = serde_json::to_string(&view).unwrap();
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw%40rd") && !shown.contains("qu3ry"),
            "{shown}"
        );
        assert!(
            shown.contains("postgres://u:***@db.example:5432/x"),
            "{shown}"
        );
        assert!(shown.contains("\"carry\":[\"id\"]"), "{shown}");
        assert_eq!(row_of(&view).spec, spec.to_string());
    }
}
