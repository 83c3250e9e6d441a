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
//! anonymous caller could see it anyway, whether the model or job exists (for the 404).

mod assets;
mod jobs;
pub mod metrics;
mod try_it;

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::Value;

use crate::api::manage::ModelSummary;
use crate::api::{self, ApiError};
use crate::auth::Access;
use crate::http::{status_code, AppState};
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
        .route(
            "/console/fragments/models/{model}/try",
            get(try_it::try_fragment),
        )
        .route("/console/fragments/jobs", get(jobs::jobs_fragment))
        .route("/console/fragments/jobs/{id}", get(jobs::job_fragment))
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
                // Never framed by another site: its buttons would be clicked
                // through an invisible frame (clickjacking).
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static("frame-ancestors 'self'"),
                ),
                (
                    header::X_FRAME_OPTIONS,
                    HeaderValue::from_static("SAMEORIGIN"),
                ),
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

async fn job_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    if anonymous_may(&state, Access::Management, peer) {
        if let Err(e) = api::jobs::get(&state, &id).await {
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

async fn models_fragment(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    let sees_callers = crate::http::sees_callers(&state, &headers, &uri, peer);
    let workers = state
        .workers
        .get()
        .map(|w| w.statuses())
        .unwrap_or_default();
    let models = api::manage::models_status(&state)
        .into_iter()
        .map(|mut m| {
            if !sees_callers {
                m.hide_callers();
            }
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

async fn model_fragment(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    let worker = state.workers.get().and_then(|w| w.status(&model));
    match api::manage::model_summary(&state, &model) {
        Ok(mut summary) => {
            if !crate::http::sees_callers(&state, &headers, &uri, peer) {
                summary.hide_callers();
            }
            html(
                StatusCode::OK,
                &ModelFragment {
                    m: ModelRow::from_summary(summary, worker.as_ref()),
                },
            )
        }
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
