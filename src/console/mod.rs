//! The web console (`/console`): server-rendered pages (askama templates compiled
//! into the binary) with a little JavaScript (htmx 4.0.1, uPlot 1.6.32 and
//! `assets/console.js`, all embedded; no CDN, works offline).
//!
//! A thin adapter like `crate::http`: every page reads through the same `api`
//! operations the REST routes call (`api::manage::models_status`,
//! `api::model_metadata`, `api::jobs`), and every change (upload, reload, stop,
//! deploy, delete, predictions) is made by the browser calling the existing REST
//! endpoints, so the console has no write path of its own.
//!
//! Two kinds of route, so that tokens work in a browser, which cannot add an
//! `Authorization` header to a page navigation:
//! * shells (`/console`, `/console/models/{m}`, `/console/jobs`, `/console/jobs/{id}`)
//!   and `/console/assets/*` hold no data and are open (`auth::rest_access`);
//! * fragments (`/console/fragments/*`, HTML pieces htmx swaps in) and
//!   `/console/api/*` (JSON for the charts) hold the data and pass the access layer
//!   like any other route. The page's script sends the token it keeps in
//!   `sessionStorage` with each of them, and asks for one on a 401.
//!
//! Invariant: a shell renders nothing read from the server's state except, when an
//! anonymous caller could see it anyway, whether the model exists (for the 404).

mod assets;
pub mod metrics;

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::Value;

use crate::api::manage::ModelSummary;
use crate::api::{self, ApiError};
use crate::auth::Access;
use crate::http::{status_code, AppState};
use crate::jobs::JobView;
use crate::manager::VersionRequest;
use crate::tensor::DataType;
use crate::workers::WorkerStatus;

/// How often the pages refresh their live parts; the charts sample every second.
const REFRESH: &str = "every 2s";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(models_page))
        .route("/console/models/{model}", get(model_page))
        .route("/console/jobs", get(jobs_page))
        .route("/console/jobs/{id}", get(job_page))
        .route("/console/assets/{file}", get(assets::serve))
        .route("/console/fragments/models", get(models_fragment))
        .route("/console/fragments/models/{model}", get(model_fragment))
        .route("/console/fragments/models/{model}/try", get(try_fragment))
        .route("/console/fragments/jobs", get(jobs_fragment))
        .route("/console/fragments/jobs/{id}", get(job_fragment))
        .route("/console/api/models/{model}/metrics", get(model_metrics))
}

// ---- rendering ----

/// An HTML answer; a template that fails to render is a 500 page (it never should:
/// the templates are checked at compile time and their values are plain data).
fn html(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => (
            status,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "the console page failed to render; see the server log",
            )
                .into_response()
        }
    }
}

/// An error of an `api` operation as a fragment: the status REST would answer,
/// with the message in the page.
fn error_fragment(error: &ApiError) -> Response {
    html(
        status_code(error),
        &ErrorFragment {
            message: error.to_string(),
        },
    )
}

#[derive(Template)]
#[template(path = "error_fragment.html")]
struct ErrorFragment {
    message: String,
}

// ---- shells ----

#[derive(Template)]
#[template(path = "models.html")]
struct ModelsPage {
    title: String,
    refresh: &'static str,
}

async fn models_page() -> Response {
    html(
        StatusCode::OK,
        &ModelsPage {
            title: "Models".into(),
            refresh: REFRESH,
        },
    )
}

#[derive(Template)]
#[template(path = "model.html")]
struct ModelPage {
    title: String,
    model: String,
    refresh: &'static str,
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage {
    title: String,
    message: String,
}

/// Whether a caller with no token, from `peer`, may read what `access` guards: then
/// the shell may show what the data would (that a model does not exist).
fn anonymous_may(state: &AppState, access: Access, peer: Option<SocketAddr>) -> bool {
    state.auth.check(access, None, peer).is_ok()
}

async fn model_page(
    State(state): State<AppState>,
    Path(model): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    if anonymous_may(&state, Access::Inference, peer) {
        if let Err(e) = api::manage::model_summary(&state, &model) {
            return html(
                status_code(&e),
                &NotFoundPage {
                    title: "Not found".into(),
                    message: e.to_string(),
                },
            );
        }
    }
    html(
        StatusCode::OK,
        &ModelPage {
            title: model.clone(),
            model,
            refresh: REFRESH,
        },
    )
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    title: String,
    refresh: &'static str,
}

async fn jobs_page() -> Response {
    html(
        StatusCode::OK,
        &JobsPage {
            title: "Jobs".into(),
            refresh: REFRESH,
        },
    )
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    title: String,
    job_id: String,
    refresh: &'static str,
}

async fn job_page(Path(id): Path<String>) -> Response {
    html(
        StatusCode::OK,
        &JobPage {
            title: format!("Job {id}"),
            job_id: id,
            refresh: REFRESH,
        },
    )
}

// ---- fragments: models ----

/// One model as the pages show it.
struct ModelRow {
    name: String,
    served: bool,
    stopped: bool,
    busy: bool,
    source: &'static str,
    versions: Vec<VersionRow>,
    labels: Vec<(String, u64)>,
    problems: Vec<String>,
    events: Vec<EventRow>,
    deployment: Vec<(&'static str, String)>,
    /// The worker process serving the model when it is deployed in one.
    worker: Option<WorkerRow>,
}

struct VersionRow {
    version: u64,
    state: &'static str,
    format: String,
    error: String,
}

struct EventRow {
    time: String,
    version: String,
    kind: String,
    /// The kind, and for a state change the states (`state LOADING → AVAILABLE`).
    short: String,
    detail: String,
    who: String,
}

fn time_text(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

impl ModelRow {
    /// `worker`: the model's worker process when it is deployed in one; its limits
    /// are then enforced (or said not to be), so they are not shown as merely recorded.
    fn from_summary(m: ModelSummary, worker: Option<&WorkerStatus>) -> ModelRow {
        let mut problems = Vec::new();
        problems.extend(m.config_error.clone());
        problems.extend(m.policy_warning.clone());
        problems.extend(m.label_errors.iter().cloned());
        if !m.settings_needing_reload.is_empty() {
            problems.push(format!(
                "changed settings take effect at the next reload: {}",
                m.settings_needing_reload.join(", ")
            ));
        }
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
        let deployment = match (&m.deployment, worker) {
            (None, _) => Vec::new(),
            (Some(d), Some(w)) => {
                let limit = |v: &Option<String>, e: crate::workers::limits::Enforcement| {
                    v.as_ref()
                        .map_or_else(|| "—".into(), |v| format!("{v} ({})", e.describe()))
                };
                vec![
                    ("environment", or_none(&d.environment)),
                    ("cpu limit", limit(&d.cpu_limit, w.enforced.cpu_limit)),
                    (
                        "memory limit",
                        limit(&d.memory_limit, w.enforced.memory_limit),
                    ),
                    (
                        "timeout",
                        d.timeout_secs.map_or_else(
                            || "—".into(),
                            |t| format!("{t} s ({})", w.enforced.timeout.describe()),
                        ),
                    ),
                ]
            }
            (Some(d), None) => {
                vec![
                    ("environment", or_none(&d.environment)),
                    (
                        "timeout (request deadline, applied)",
                        d.timeout_secs
                            .map_or_else(|| "—".into(), |t| format!("{t} s")),
                    ),
                    ("cpu limit (recorded, not applied)", or_none(&d.cpu_limit)),
                    (
                        "memory limit (recorded, not applied)",
                        or_none(&d.memory_limit),
                    ),
                ]
            }
        };
        ModelRow {
            served: m.is_served(),
            stopped: m.stopped,
            busy: m.busy,
            source: if m.from_config_list {
                "config file"
            } else {
                "repository"
            },
            // Highest version first, as the status APIs list them.
            versions: m
                .versions
                .iter()
                .rev()
                .map(|v| VersionRow {
                    version: v.version,
                    state: v.state.as_str(),
                    format: v.format.unwrap_or("").to_string(),
                    error: v.error.clone().unwrap_or_default(),
                })
                .collect(),
            labels: m.labels.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            problems,
            events: m
                .recent_events
                .iter()
                .rev()
                .map(|e| EventRow {
                    time: time_text(e.at_ms),
                    version: e.version.map(|v| v.to_string()).unwrap_or_default(),
                    kind: e.kind.clone(),
                    short: match (
                        e.detail.get("from").and_then(Value::as_str),
                        e.detail.get("to").and_then(Value::as_str),
                    ) {
                        (Some(from), Some(to)) => format!("{} {from} → {to}", e.kind),
                        _ => e.kind.clone(),
                    },
                    detail: event_detail(&e.detail),
                    who: match (&e.actor, &e.client) {
                        (Some(a), Some(c)) => format!("{a} ({c})"),
                        (Some(a), None) => a.clone(),
                        (None, Some(c)) => c.clone(),
                        (None, None) => String::new(),
                    },
                })
                .collect(),
            deployment,
            worker: worker.map(WorkerRow::from_status),
            name: m.model,
        }
    }
}

/// A deployed model's worker process, as the registry reports it.
struct WorkerRow {
    state: &'static str,
    healthy: bool,
    pid: String,
    service_url: String,
    restarts: u64,
    started: String,
    last_exit: String,
    rss: String,
    cpu_seconds: String,
    cores: String,
}

impl WorkerRow {
    fn from_status(w: &WorkerStatus) -> WorkerRow {
        let base = format!("http://{}", SocketAddr::new(w.host, w.port));
        WorkerRow {
            state: w.state.as_str(),
            healthy: w.healthy,
            pid: w.pid.map(|p| p.to_string()).unwrap_or_else(|| "—".into()),
            service_url: format!("{base}/predict/{}", w.model),
            restarts: w.restarts,
            started: w
                .started_at
                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .unwrap_or_else(|| "—".into()),
            last_exit: w.last_exit.as_ref().map_or_else(
                || "—".into(),
                |e| {
                    let oom = if e.oom { " (out of memory)" } else { "" };
                    format!("{}{oom}", e.reason)
                },
            ),
            rss: w.usage.map_or_else(
                || "—".into(),
                |u| format!("{:.1} MiB", u.rss_bytes as f64 / (1024.0 * 1024.0)),
            ),
            cpu_seconds: w
                .usage
                .map_or_else(|| "—".into(), |u| format!("{:.2} s", u.cpu_seconds)),
            cores: w.cores_allowed.clone().unwrap_or_else(|| "any".into()),
        }
    }
}

/// An event's detail object as `key: value` pairs on one line.
fn event_detail(detail: &Value) -> String {
    match detail {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[derive(Template)]
#[template(path = "models_fragment.html")]
struct ModelsFragment {
    models: Vec<ModelRow>,
}

async fn models_fragment(State(state): State<AppState>) -> Response {
    let workers = state
        .workers
        .get()
        .map(|w| w.statuses())
        .unwrap_or_default();
    let models = api::manage::models_status(&state)
        .into_iter()
        .map(|m| {
            let worker = workers.get(&m.model);
            ModelRow::from_summary(m, worker)
        })
        .collect();
    html(StatusCode::OK, &ModelsFragment { models })
}

#[derive(Template)]
#[template(path = "model_fragment.html")]
struct ModelFragment {
    m: ModelRow,
}

async fn model_fragment(State(state): State<AppState>, Path(model): Path<String>) -> Response {
    let worker = state.workers.get().and_then(|w| w.status(&model));
    match api::manage::model_summary(&state, &model) {
        Ok(summary) => html(
            StatusCode::OK,
            &ModelFragment {
                m: ModelRow::from_summary(summary, worker.as_ref()),
            },
        ),
        Err(e) => error_fragment(&e),
    }
}

// ---- fragments: the "try it" form ----

/// How the form's values become a simple-API request (`POST /predict/{model}`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum FormMode {
    /// One text box: `{"text": "…"}` (fastText).
    Text,
    /// Values in column order: `{"features": [v, …]}`.
    Positional,
    /// Values by name: `{"features": {"name": v, …}}`.
    Named,
    /// One box of comma-separated values (the model's width is not known).
    List,
    /// One image file, sent as `multipart/form-data` (a model with
    /// `[preprocess] image`).
    Image,
}

impl FormMode {
    fn as_str(self) -> &'static str {
        match self {
            FormMode::Text => "text",
            FormMode::Positional => "positional",
            FormMode::Named => "named",
            FormMode::List => "list",
            FormMode::Image => "image",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct FormField {
    /// The feature name sent (named mode), or the column's position.
    name: String,
    label: String,
    /// `number`, `text` or `textarea`.
    kind: &'static str,
}

#[derive(Template)]
#[template(path = "try_fragment.html")]
struct TryFragment {
    model: String,
    version: u64,
    format: &'static str,
    mode: &'static str,
    fields: Vec<FormField>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

fn is_text(dtype: DataType) -> bool {
    dtype == DataType::Bytes
}

fn spec_text(s: &crate::tensor::TensorSpec) -> String {
    let dims: Vec<String> = s
        .shape
        .iter()
        .map(|d| {
            if *d < 0 {
                "?".to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("{} {:?} [{}]", s.name, s.dtype, dims.join(", "))
}

/// The form a model's signature calls for: a text box for text models, one field
/// per named feature, one per column of a fixed-width input, or a list box.
/// What a model's `[preprocess]` table makes of its input, which decides the form
/// rather than the graph's tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Preprocessed {
    /// Tensors as the signature says.
    No,
    /// Text (a tokenizer or a segmenter).
    Text,
    /// An image file.
    Image,
}

fn form_for(
    metadata: &api::ModelMetadata,
    preprocessed: Preprocessed,
) -> (FormMode, Vec<FormField>) {
    let inputs = &metadata.signature.inputs;
    let number = |name: &str, label: String| FormField {
        name: name.to_string(),
        label,
        kind: "number",
    };
    if preprocessed == Preprocessed::Image {
        return (
            FormMode::Image,
            vec![FormField {
                name: "image".into(),
                label: "Image (JPEG, PNG or WebP)".into(),
                kind: "file",
            }],
        );
    }
    if metadata.format == "fasttext" || preprocessed == Preprocessed::Text {
        return (
            FormMode::Text,
            vec![FormField {
                name: "text".into(),
                label: "Text".into(),
                kind: "textarea",
            }],
        );
    }
    if let Some(names) = &metadata.traits.feature_names {
        let fields = names
            .iter()
            .map(|n| {
                // A model fed column by column names its inputs after the features.
                let text = inputs
                    .iter()
                    .find(|i| &i.name == n)
                    .is_some_and(|i| is_text(i.dtype));
                FormField {
                    name: n.clone(),
                    label: n.clone(),
                    kind: if text { "text" } else { "number" },
                }
            })
            .collect();
        return (FormMode::Named, fields);
    }
    if let [only] = inputs.as_slice() {
        if is_text(only.dtype) && only.shape.len() <= 2 && only.shape.get(1).is_none_or(|d| *d == 1)
        {
            return (
                FormMode::Positional,
                vec![FormField {
                    name: "0".into(),
                    label: format!("{} (text)", only.name),
                    kind: "textarea",
                }],
            );
        }
        if let [_, width] = only.shape.as_slice() {
            if (1..=256).contains(width) {
                let fields = (0..*width)
                    .map(|i| number(&i.to_string(), format!("{} [{i}]", only.name)))
                    .collect();
                return (FormMode::Positional, fields);
            }
        }
        return (
            FormMode::List,
            vec![FormField {
                name: "values".into(),
                label: format!("{} (comma-separated values)", only.name),
                kind: "text",
            }],
        );
    }
    // Several inputs, one column each: fed by name.
    let fields = inputs
        .iter()
        .map(|i| FormField {
            name: i.name.clone(),
            label: i.name.clone(),
            kind: if is_text(i.dtype) { "text" } else { "number" },
        })
        .collect();
    (FormMode::Named, fields)
}

async fn try_fragment(State(state): State<AppState>, Path(model): Path<String>) -> Response {
    let metadata = match api::model_metadata(&state, &model, &VersionRequest::Latest) {
        Ok(m) => m,
        Err(e) => return error_fragment(&e),
    };
    let preprocessed = match state.manager.resolve(&model, &VersionRequest::Latest) {
        Ok(handle) => {
            let config = handle.config();
            let p = &config.preprocess;
            if p.image.is_some() {
                Preprocessed::Image
            } else if p.tokenizer.is_some() || p.segmenter.is_some() {
                Preprocessed::Text
            } else {
                Preprocessed::No
            }
        }
        Err(_) => Preprocessed::No,
    };
    let (mode, fields) = form_for(&metadata, preprocessed);
    html(
        StatusCode::OK,
        &TryFragment {
            model,
            version: metadata.version,
            format: metadata.format,
            mode: mode.as_str(),
            fields,
            inputs: metadata.signature.inputs.iter().map(spec_text).collect(),
            outputs: metadata.signature.outputs.iter().map(spec_text).collect(),
        },
    )
}

// ---- fragments: jobs ----

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

async fn jobs_fragment(State(state): State<AppState>) -> Response {
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

async fn job_fragment(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match api::jobs::get(&state, &id).await {
        Ok(view) => html(StatusCode::OK, &job_fragment_of(&view)),
        Err(e) => error_fragment(&e),
    }
}

// ---- JSON for the charts ----

/// `GET /console/api/models/{m}/metrics`: the model's cumulative figures from the
/// server's own recorders (see [`metrics`]).
async fn model_metrics(State(state): State<AppState>, Path(model): Path<String>) -> Response {
    if let Err(e) = api::manage::model_summary(&state, &model) {
        return crate::http::HttpError(e).into_response();
    }
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let exposition = crate::metrics::render(&state.manager);
    let figures = metrics::model_metrics(&exposition, &model, at_ms);
    let mut response = Json(figures).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
