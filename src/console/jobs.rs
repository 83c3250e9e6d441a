//! The jobs fragments (`/console/fragments/jobs`, `/console/fragments/jobs/{id}`):
//! the job list and one job's progress, folds, result and error.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::api;
use crate::http::AppState;
use crate::jobs::JobView;

use super::{error_fragment, html, time_text};

struct JobRow {
    id: String,
    kind: String,
    state: &'static str,
    stage: String,
    percent: Option<u32>,
    created: String,
    model: String,
    error: String,
}

impl JobRow {
    fn from_view(j: &JobView) -> JobRow {
        JobRow {
            id: j.job_id.clone(),
            kind: j.kind.clone(),
            state: j.state.as_str(),
            stage: j.progress.stage.clone(),
            percent: j
                .progress
                .fraction
                .map(|f| (f.clamp(0.0, 1.0) * 100.0).round() as u32),
            created: time_text(j.created_ms),
            model: j
                .spec
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            error: j.error.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "jobs_fragment.html")]
struct JobsFragment {
    jobs: Vec<JobRow>,
    total: i64,
}

pub(super) async fn jobs_fragment(State(state): State<AppState>) -> Response {
    let query = api::jobs::ListQuery {
        limit: Some(50),
        ..Default::default()
    };
    match api::jobs::list(&state, query).await {
        Ok((views, total)) => html(
            StatusCode::OK,
            &JobsFragment {
                jobs: views.iter().map(JobRow::from_view).collect(),
                total,
            },
        ),
        Err(e) => error_fragment(&e),
    }
}

/// One row of a training job's cross-validation table.
struct CvRow {
    params: String,
    mean: String,
    std: String,
    scores: String,
    best: bool,
}

#[derive(Template)]
#[template(path = "job_fragment.html")]
struct JobFragment {
    job: JobRow,
    finished: bool,
    rows_read: u64,
    rows_written: u64,
    folds: String,
    elapsed: String,
    messages: Vec<String>,
    /// Headline figures of the result (`key`, value).
    figures: Vec<(String, String)>,
    scoring: String,
    cv: Vec<CvRow>,
    /// The hold-out confusion matrix and its class labels, as JSON for the chart.
    confusion_json: String,
    classes_json: String,
    /// `(true class, counts by predicted class)`.
    confusion: Vec<(String, Vec<u64>)>,
    classes: Vec<String>,
    result_json: String,
}

fn number_text(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if v.is_f64() => format!("{f:.4}"),
        _ => match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    }
}

fn job_fragment_of(j: &JobView) -> JobFragment {
    let result = j.result.clone().unwrap_or(Value::Null);
    let mut figures = Vec::new();
    for key in [
        "model",
        "version",
        "algorithm",
        "best_score",
        "folds",
        "rows",
        "rows_written",
    ] {
        if let Some(v) = result.get(key).filter(|v| !v.is_null()) {
            figures.push((key.replace('_', " "), number_text(v)));
        }
    }
    if let Some(holdout) = result.get("holdout").filter(|h| h.is_object()) {
        for key in ["rows", "accuracy", "roc_auc", "log_loss"] {
            if let Some(v) = holdout.get(key).filter(|v| !v.is_null()) {
                figures.push((
                    format!("hold-out {}", key.replace('_', " ")),
                    number_text(v),
                ));
            }
        }
    }
    let best_params = result.get("best_params").cloned().unwrap_or(Value::Null);
    let cv = result
        .get("cv_results")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .map(|r| CvRow {
                    params: r.get("params").map(Value::to_string).unwrap_or_default(),
                    mean: r.get("mean").map(number_text).unwrap_or_default(),
                    std: r.get("std").map(number_text).unwrap_or_default(),
                    scores: r
                        .get("scores")
                        .and_then(Value::as_array)
                        .map(|s| s.iter().map(number_text).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default(),
                    best: !best_params.is_null() && r.get("params") == Some(&best_params),
                })
                .collect()
        })
        .unwrap_or_default();
    let confusion: Vec<Vec<u64>> = result
        .pointer("/holdout/confusion_matrix")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    let classes: Vec<String> = result
        .get("classes")
        .and_then(Value::as_array)
        .map(|c| c.iter().map(number_text).collect())
        .unwrap_or_else(|| (0..confusion.len()).map(|i| i.to_string()).collect());
    let p = &j.progress;
    JobFragment {
        job: JobRow::from_view(j),
        finished: j.finished_ms.is_some() || !matches!(j.state.as_str(), "running" | "queued"),
        rows_read: p.rows_read,
        rows_written: p.rows_written,
        folds: match (p.folds_done, p.folds_total) {
            (Some(d), Some(t)) => format!("{d} of {t}"),
            _ => String::new(),
        },
        elapsed: format!("{:.1} s", p.elapsed_ms as f64 / 1000.0),
        messages: j
            .messages
            .iter()
            .map(|m| format!("{} {}", time_text(m.at_ms), m.text))
            .collect(),
        figures,
        scoring: result
            .get("scoring")
            .and_then(Value::as_str)
            .unwrap_or("score")
            .to_string(),
        cv,
        confusion_json: serde_json::to_string(&confusion).unwrap_or_default(),
        classes_json: serde_json::to_string(&classes).unwrap_or_default(),
        confusion: classes
            .iter()
            .cloned()
            .chain((classes.len()..).map(|i| i.to_string()))
            .zip(confusion)
            .collect(),
        classes,
        result_json: if result.is_null() {
            String::new()
        } else {
            serde_json::to_string_pretty(&result).unwrap_or_default()
        },
    }
}

pub(super) async fn job_fragment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Response {
    match api::jobs::get(&state, &id).await {
        Ok(view) => html(StatusCode::OK, &job_fragment_of(&view)),
        Err(e) => error_fragment(&e),
    }
}
