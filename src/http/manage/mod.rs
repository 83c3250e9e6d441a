//! The management REST API: `/reload_model`, `/models/status`, `/deploy`,
//! `/stop_deployment/{id}`, `/delete_model/{id}`, KServe V2's repository
//! extension (`/v2/repository/...`) and `/description`. Decoding and encoding only;
//! the operations are in `crate::api::manage`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::routing::{delete, get, post};
use axum::Extension;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::openapi::ErrorBody;
use super::{body, parse_json, AppState, HttpError};
use crate::api::manage::{self, DeployRequest, ModelSummary};
use crate::api::{ApiError, Caller, SERVER_NAME, SERVER_VERSION};
use crate::sources::Deployment;

pub(super) mod v2_repository;

use v2_repository::{repository_index, repository_load, repository_unload};

pub fn routes(max_upload_bytes: u64) -> Router<AppState> {
    super::upload::routes(max_upload_bytes)
        .route("/reload_model", get(reload_model).post(reload_model_post))
        .route("/models/status", get(models_status))
        .route("/deploy", post(deploy))
        .route("/stop_deployment/{model_id}", post(stop_deployment))
        .route("/delete_model/{model_id}", delete(delete_model))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(repository_load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository_unload),
        )
        .route("/description", get(description))
}

/// Who asked (set by the access layer on every management request).
pub(super) fn caller_of(caller: Option<Extension<Caller>>) -> Caller {
    caller.map(|Extension(c)| c).unwrap_or_default()
}

/// The URL of this server's REST API and its port, from the `public_url` setting.
/// Never from the request's `Host` header, which any client can forge.
pub(super) fn base_url(state: &AppState) -> (String, u16) {
    let base = match &state.settings.public_url {
        Some(url) => url.clone(),
        None => crate::settings::default_public_url(
            state.settings.rest_addr,
            state.settings.tls_cert.is_some(),
        ),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", &base));
    let authority = rest.split('/').next().unwrap_or_default();
    let port = authority
        .rsplit_once(':')
        .filter(|(_, p)| !p.contains(']'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    (base, port)
}

pub(super) fn summary_json(m: &ModelSummary, base: &str) -> Value {
    let versions: Vec<Value> = m
        .versions
        .iter()
        .rev()
        .map(|v| {
            json!({
                "version": v.version,
                "state": v.state.as_str(),
                "error": v.error,
                "format": v.format,
            })
        })
        .collect();
    let name = &m.model;
    json!({
        "model_id": name,
        "served": m.is_served(),
        "stopped": m.stopped,
        "busy": m.busy,
        "source": if m.from_config_list { "config_file" } else { "repository" },
        "base_path": m.dir.as_ref().map(|d| d.display().to_string()),
        "served_versions": m.served_versions,
        "versions": versions,
        "labels": m.labels,
        "label_errors": m.label_errors,
        "config_error": m.config_error,
        "policy_warning": m.policy_warning,
        "settings_needing_reload": m.settings_needing_reload,
        "recent_events": m.recent_events,
        "deployment": m.deployment.as_ref().map(|d| match &m.worker {
            // Its resources as its worker runs with them.
            Some(w) => crate::workers::deployment_json(
                &Deployment {
                    environment: d.environment.clone(),
                    ..w.deployment.clone()
                },
                &w.enforced,
            ),
            None => deployment_json(d),
        }),
        "worker": m.worker.as_ref().map(crate::workers::status_json),
        "endpoints": if m.is_served() {
            json!({
                "tf_serving": format!("{base}/v1/models/{name}"),
                "v2": format!("{base}/v2/models/{name}"),
                "predict": format!("{base}/predict/{name}"),
            })
        } else {
            Value::Null
        },
    })
}

fn deployment_json(d: &Deployment) -> Value {
    json!({
        "environment": d.environment,
        "resources": {
            "cpu_limit": d.cpu_limit,
            "memory_limit": d.memory_limit,
            "timeout": d.timeout_secs,
        },
        // In-process (workers off): the timeout is the model's request deadline; the
        // limits need a worker process and are recorded, not applied.
        "enforced": {
            "timeout": d.timeout_secs.is_some(),
            "cpu_limit": false,
            "memory_limit": false,
        },
    })
}

// ---- reload, status, deploy, stop, delete ----

/// A misspelt parameter (`model_name=`) is a 400, not a reload of every model.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadQuery {
    modelname: Option<String>,
}

/// `GET /reload_model[?modelname=NAME]` (and `HEAD`, for old clients): the query
/// only; a body is not read.
#[utoipa::path(get, path = "/reload_model", tag = "management",
    params(("modelname" = Option<String>, Query, description = "Reload only this model (default: every model)")),
    responses(
        (status = 200, description = "What was reloaded", body = ReloadResponse),
        (status = 400, description = "A malformed query string, or an empty modelname", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "Another operation holds the model, or the request conflicts with its state", body = ErrorBody),
        (status = 503, description = "The metadata store does not answer; nothing changed", body = ErrorBody),
        (status = 504, description = "The management timeout passed: waiting for the model (another operation held it) or for the operation to start, which then never happens; or for one that had started, which ends in the background", body = ErrorBody),
    ))]
async fn reload_model(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Query(query): Query<ReloadQuery>,
) -> Result<Json<Value>, HttpError> {
    reload(&state, query.modelname, caller).await
}

/// `POST /reload_model[?modelname=NAME]`, with no body or `{"modelname": NAME}`.
#[utoipa::path(post, path = "/reload_model", tag = "management",
    params(("modelname" = Option<String>, Query, description = "Reload only this model (default: every model)")),
    request_body(content = Option<ReloadRequest>, content_type = "application/json", description = "Optional: `{\"modelname\": NAME}` names the model as the query does (both given must agree); no body, or `{}`, reloads the query's model, or every model"),
    responses(
        (status = 200, description = "What was reloaded", body = ReloadResponse),
        (status = 400, description = "A malformed query string or body, an empty modelname, or a body and a query that name different models", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 409, description = "Another operation holds the model, or the request conflicts with its state", body = ErrorBody),
        (status = 503, description = "The metadata store does not answer; nothing changed", body = ErrorBody),
        (status = 504, description = "The management timeout passed: waiting for the model (another operation held it) or for the operation to start, which then never happens; or for one that had started, which ends in the background", body = ErrorBody),
    ))]
async fn reload_model_post(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Query(query): Query<ReloadQuery>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let bytes = body(bytes, state.settings.max_request_bytes)?;
    let name = match (query.modelname, reload_body(&bytes)?) {
        (Some(q), Some(b)) if q != b => {
            return Err(HttpError(ApiError::InvalidArgument(format!(
                "the query names model {q:?} and the body model {b:?}: name the model once"
            ))))
        }
        (q, b) => q.or(b),
    };
    reload(&state, name, caller).await
}

/// The model a `POST /reload_model` body names: none for no body (or only
/// whitespace) and for `{}`. Anything but `{"modelname": "NAME"}` is a 400 that
/// says what is wrong: a body that is ignored would reload every model.
fn reload_body(bytes: &[u8]) -> Result<Option<String>, HttpError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let invalid = |m: String| HttpError(ApiError::InvalidArgument(m));
    let request: Value = parse_json(bytes)?;
    let Value::Object(mut fields) = request else {
        return Err(invalid(format!(
            "the body must be a JSON object ({{\"modelname\": \"NAME\"}}), not {}",
            crate::json_tensor::kind(&request)
        )));
    };
    let name = match fields.remove("modelname") {
        None => None,
        Some(Value::String(name)) => Some(name),
        Some(other) => {
            return Err(invalid(format!(
                "modelname must be a string naming a model (leave it out to reload every \
                 model), not {}",
                crate::json_tensor::kind(&other)
            )))
        }
    };
    if let Some(field) = fields.keys().next() {
        let field: String = field.chars().take(100).collect();
        return Err(invalid(format!(
            "unknown field {field:?}: the body takes only \"modelname\""
        )));
    }
    Ok(name)
}

/// What kind of JSON value `v` is, for an error message (which does not quote a
/// value that may be as large as the body).
/// Reloads the model `name`, or every model, and answers what is served now.
async fn reload(
    state: &AppState,
    name: Option<String>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<Value>, HttpError> {
    let outcome = manage::reload(state, name.as_deref(), &caller_of(caller)).await?;
    let models = &outcome.models;
    let (base, _) = base_url(state);
    let served: Map<String, Value> = models
        .iter()
        .map(|m| (m.model.clone(), json!(m.served_versions)))
        .collect();
    let mut message = match &name {
        // The model found, which may be `n` without its extension (`lr_iris.model`).
        Some(n) => format!(
            "model {} reloaded",
            models.first().map_or(n.as_str(), |m| m.model.as_str())
        ),
        None => format!("{} models reloaded", models.len()),
    };
    if !outcome.busy.is_empty() {
        message.push_str(&format!(
            "; skipped {} busy with another operation (the watcher reloads them later)",
            outcome.busy.join(", ")
        ));
    }
    Ok(Json(json!({
        "message": message,
        // Models another operation (an upload, reload or stop) held: not reloaded now.
        "busy": outcome.busy,
        "served_versions": served,
        "models": models.iter().map(|m| summary_json(m, &base)).collect::<Vec<_>>(),
    })))
}

/// `GET /models/status`
#[utoipa::path(get, path = "/models/status", tag = "management",
    responses((status = 200, description = "Every model with its versions, states and settings", body = ModelsResponse)))]
async fn models_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Json<Value> {
    let (base, _) = base_url(&state);
    let mut models = manage::models_status(&state);
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    if !super::sees_callers(&state, &headers, &uri, peer) {
        models.iter_mut().for_each(ModelSummary::hide_callers);
    }
    Json(json!({
        "models": models.iter().map(|m| status_entry(&state, m, &base)).collect::<Vec<_>>(),
    }))
}

/// A model's `/models/status` entry. On a deployed model's worker, the model's
/// deployment is the one its supervisor applied to this process
/// (`workers::applied_deployment`): the limits as given and as enforced, as the
/// main server's status and registry show them, not as they would be in-process
/// (recorded, not applied), which is all this process could tell by itself.
fn status_entry(state: &AppState, m: &ModelSummary, base: &str) -> Value {
    let mut entry = summary_json(m, base);
    if let Some(applied) = crate::workers::applied_deployment(&state.settings, &m.model) {
        entry["deployment"] =
            crate::workers::deployment_json(&applied.deployment(), &applied.enforcement);
    }
    entry
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    model_id: String,
    environment: Option<String>,
    #[serde(default)]
    resources: Resources,
}

/// Recorded with the deployment; `timeout` (seconds) is the model's request deadline.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DeployResources)]
struct Resources {
    cpu_limit: Option<Value>,
    memory_limit: Option<Value>,
    // Read as any JSON value, so that a wrong kind is a 400 that names the field
    // (`workers::resources::parse_timeout`); documented as what it must be.
    #[schema(value_type = Option<f64>)]
    timeout: Option<Value>,
}

/// A limit given as a string (`"500m"`, `"1Gi"`) or a number.
fn limit_text(v: Option<Value>, name: &str) -> Result<Option<String>, HttpError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 64 => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(HttpError(ApiError::InvalidArgument(format!(
            "resources.{name} must be a string or a number"
        )))),
    }
}

/// `POST /deploy {"model_id", "environment"?, "resources": {…}?}`
#[utoipa::path(post, path = "/deploy", tag = "management",
    request_body(content = DeployBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Deployed (served in this process)", body = Object),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "Another operation holds the model, or the request conflicts with its state", body = ErrorBody),
        (status = 503, description = "No version of the model loads (the message says why; a worker that cannot serve it changes nothing), or the metadata store does not answer and nothing changed", body = ErrorBody),
        (status = 504, description = "The management timeout passed: waiting for the model (another operation held it) or for the operation to start, which then never happens; or for one that had started, which ends in the background", body = ErrorBody),
    ))]
async fn deploy(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let bytes = body(bytes, state.settings.max_request_bytes)?;
    let request: DeployBody = parse_json(&bytes)?;
    let deployment = Deployment {
        environment: request.environment,
        cpu_limit: limit_text(request.resources.cpu_limit, "cpu_limit")?,
        memory_limit: limit_text(request.resources.memory_limit, "memory_limit")?,
        timeout_secs: crate::workers::resources::parse_timeout(request.resources.timeout.as_ref())
            .map_err(|e| HttpError(ApiError::InvalidArgument(e)))?,
    };
    let summary = manage::deploy(
        &state,
        DeployRequest {
            model: request.model_id.clone(),
            deployment,
        },
        &caller_of(caller),
    )
    .await?;
    let (base, port) = base_url(&state);
    if let Some(worker) = &summary.worker {
        // The old service's answer: the model's own service, its port and process.
        let mut answer = crate::workers::status_json(worker);
        answer["message"] = json!(format!(
            "model {} deployed in its own worker process (pid {}) on port {}",
            request.model_id,
            worker.pid.unwrap_or_default(),
            worker.port
        ));
        answer["status"] = json!("running");
        answer["in_process"] = json!(false);
        answer["main_service_url"] = json!(format!("{base}/predict/{}", request.model_id));
        answer["deployment"] = summary_json(&summary, &base)["deployment"].clone();
        answer["model"] = summary_json(&summary, &base);
        return Ok(Json(answer));
    }
    let mut answer = json!({
        "message": format!("model {} deployed", request.model_id),
        "model_id": request.model_id,
        "service_url": format!("{base}/predict/{}", request.model_id),
        "port": port,
        "status": "running",
        "in_process": true,
    });
    if let (Value::Object(answer), Value::Object(extra)) =
        (&mut answer, summary_json(&summary, &base))
    {
        for (k, v) in extra {
            answer.entry(k).or_insert(v);
        }
    }
    Ok(Json(answer))
}

/// `POST /stop_deployment/{model_id}`
#[utoipa::path(post, path = "/stop_deployment/{model_id}", tag = "management",
    params(("model_id" = String, Path, description = "The model's name")),
    responses(
        (status = 200, description = "Stopped, its files kept; a model deployed in a worker \
            process is served in-process again instead (`in_process: true`), or, when its \
            directory is gone from the model repository, its deployment ends and nothing \
            serves it (`in_process: false`)", body = ModelChangeResponse),
        (status = 400, description = "Malformed model name", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "Another operation holds the model, or the request conflicts with its state", body = ErrorBody),
        (status = 503, description = "The metadata store does not answer, or a model deployed \
            in a worker cannot load in-process (its worker keeps serving it); nothing changed", body = ErrorBody),
        (status = 504, description = "The management timeout passed: waiting for the model, or loading a model deployed in a worker back in-process (nothing changed; it stays deployed)", body = ErrorBody),
    ))]
async fn stop_deployment(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(model): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let answer = match manage::stop_deployment(&state, &model, &caller_of(caller)).await? {
        manage::StopDeployment::Stopped => json!({
            "message": format!("model {model} stopped; its files are kept"),
            "model_id": model,
            "stopped": true,
        }),
        manage::StopDeployment::BackInProcess => json!({
            "message": format!(
                "model {model}'s worker process is stopped; the model is served in-process again"
            ),
            "model_id": model,
            "stopped": false,
            "in_process": true,
        }),
        manage::StopDeployment::EndedModelGone { reason } => json!({
            "message": format!(
                "model {model}'s deployment is ended and its worker process stopped: \
                 {reason}, so nothing serves it (should it come back, it is served \
                 in-process)"
            ),
            "model_id": model,
            "stopped": false,
            "in_process": false,
        }),
    };
    Ok(Json(answer))
}

/// `DELETE /delete_model/{model_id}`
#[utoipa::path(delete, path = "/delete_model/{model_id}", tag = "management",
    params(("model_id" = String, Path, description = "The model's name")),
    responses(
        (status = 200, description = "Stopped and its files deleted", body = ModelChangeResponse),
        (status = 400, description = "Malformed model name", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "Another operation holds the model, or the request conflicts with its state", body = ErrorBody),
        (status = 500, description = "The model's folder could not be moved out of sight (the message names the cause); nothing changed", body = ErrorBody),
        (status = 503, description = "The metadata store does not answer; nothing changed", body = ErrorBody),
        (status = 504, description = "The management timeout passed: waiting for the model (another operation held it) or for the operation to start, which then never happens; or for one that had started, which ends in the background", body = ErrorBody),
    ))]
async fn delete_model(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(model): Path<String>,
) -> Result<Json<Value>, HttpError> {
    manage::delete_model(&state, &model, &caller_of(caller)).await?;
    Ok(Json(json!({
        "message": format!("model {model} stopped and deleted"),
        "model_id": model,
        "deleted": true,
    })))
}

// ---- description ----

/// Every endpoint of the REST API, for `/description`.
const ENDPOINTS: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/v1/models/{model}[/versions/{v}|/labels/{l}]",
        "TF Serving model status",
    ),
    (
        "GET",
        "/v1/models/{model}/metadata",
        "TF Serving signature metadata",
    ),
    (
        "POST",
        "/v1/models/{model}:predict",
        "TF Serving predict (row or columnar)",
    ),
    ("GET", "/v2", "KServe V2 server metadata"),
    (
        "GET",
        "/v2/health/live, /v2/health/ready",
        "KServe V2 health",
    ),
    (
        "GET",
        "/v2/models/{model}[/versions/{v}]",
        "KServe V2 model metadata",
    ),
    (
        "GET",
        "/v2/models/{model}[/versions/{v}]/ready",
        "KServe V2 model readiness",
    ),
    (
        "POST",
        "/v2/models/{model}[/versions/{v}]/infer",
        "KServe V2 inference (JSON or binary tensors)",
    ),
    ("POST", "/v2/repository/index", "KServe V2 repository index"),
    (
        "POST",
        "/v2/repository/models/{model}/load",
        "Load (or reload) a model",
    ),
    (
        "POST",
        "/v2/repository/models/{model}/unload",
        "Unload a model, keeping its files",
    ),
    (
        "POST",
        "/predict",
        "Simple prediction: {\"model_id\", \"features\", \"version\"?}",
    ),
    (
        "GET",
        "/predict/{model}?feature=value&...",
        "Simple prediction from named query parameters",
    ),
    (
        "POST",
        "/upload_model",
        "Upload a model file (multipart: model_id?, version?, file, then asset files beside it)",
    ),
    (
        "GET|POST",
        "/reload_model[?modelname=NAME]",
        "Re-scan every model, or one",
    ),
    (
        "GET",
        "/models/status",
        "Every model, its versions, states, labels and errors",
    ),
    (
        "POST",
        "/deploy",
        "Serve a stored model with the given settings",
    ),
    (
        "POST",
        "/stop_deployment/{model}",
        "Stop serving a model, keep its files",
    ),
    (
        "DELETE",
        "/delete_model/{model}",
        "Stop serving a model and delete its files",
    ),
    (
        "GET",
        "/registry/services[/{model}]",
        "Deployed models' worker processes: state, pid, port, restarts, usage, limits",
    ),
    ("GET", "/description", "This description"),
    (
        "GET",
        "/openapi.json",
        "The full OpenAPI 3.1 description (YAML: /swagger.yaml)",
    ),
    (
        "GET",
        "/docs",
        "The OpenAPI description as a page (Swagger UI)",
    ),
    ("GET", "/metrics", "Prometheus metrics"),
    ("GET", "/healthz", "Liveness and readiness"),
];

/// `GET /description`
#[utoipa::path(get, path = "/description", tag = "server",
    responses((status = 200, description = "The service, its version, its model count and its endpoints (a short list; /openapi.json is the full one)", body = Object)))]
async fn description(State(state): State<AppState>) -> Json<Value> {
    let endpoints: Vec<Value> = ENDPOINTS
        .iter()
        .map(|(m, p, d)| json!({"method": m, "path": p, "description": d}))
        .collect();
    Json(json!({
        "service": SERVER_NAME,
        "version": SERVER_VERSION,
        "description": "A machine-learning model server for ONNX and scikit-learn models: \
                        TF Serving and KServe V2 APIs, a simple JSON API, hot model updates",
        "models": state.manager.serving().models.len(),
        "endpoints": endpoints,
    }))
}

/// The description's types for the answers built as JSON values above; never built.
#[allow(dead_code)]
mod schema {
    use serde_json::Value;
    use utoipa::ToSchema;

    /// `POST /reload_model`'s optional body (read by `reload_body`): the model to
    /// reload, as the query's `modelname` names it.
    #[derive(ToSchema)]
    pub struct ReloadRequest {
        /// Reload only this model (default: every model).
        modelname: Option<String>,
    }

    #[derive(ToSchema)]
    pub struct ReloadResponse {
        message: String,
        /// Models another operation held: not reloaded now.
        busy: Vec<String>,
        /// Per model, the versions served after the reload.
        served_versions: Value,
        /// The reloaded models' summaries.
        models: Vec<Value>,
    }

    #[derive(ToSchema)]
    pub struct ModelsResponse {
        /// One summary per model: versions, states, labels, errors, deployment,
        /// recent events and endpoints.
        models: Vec<Value>,
    }

    #[derive(ToSchema)]
    pub struct ModelChangeResponse {
        message: String,
        model_id: String,
        #[schema(required = false)]
        stopped: bool,
        #[schema(required = false)]
        deleted: bool,
        /// Set by `stop_deployment` when the model left its worker process: `true`
        /// when it is served in-process again, `false` when its directory is gone
        /// from the model repository and nothing serves it.
        #[schema(required = false)]
        in_process: bool,
    }

    #[derive(ToSchema)]
    pub struct RepositoryIndexEntry {
        name: String,
        #[schema(required = false)]
        version: String,
        state: String,
        reason: String,
    }
}
use schema::{
    ModelChangeResponse, ModelsResponse, ReloadRequest, ReloadResponse, RepositoryIndexEntry,
};
