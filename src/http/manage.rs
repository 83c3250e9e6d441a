//! The management REST API: `/upload_model`, `/reload_model`, `/models/status`,
//! `/deploy`, `/stop_deployment/{id}`, `/delete_model/{id}`, KServe V2's repository
//! extension (`/v2/repository/...`) and `/description`. Decoding and encoding only;
//! the operations are in `crate::api::manage`.

use axum::body::Bytes;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::routing::{delete, get, post};
use axum::Extension;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::openapi::ErrorBody;
use super::{body, parse_json, AppState, HttpError};
use crate::api::manage::{self, DeployRequest, ModelSummary};
use crate::api::upload;
use crate::api::{repository, ApiError, Caller, SERVER_NAME, SERVER_VERSION};
use crate::sources::Deployment;

/// Room for the multipart framing and the text fields around the file.
const MULTIPART_OVERHEAD: u64 = 1024 * 1024;
/// How much of an oversized upload is still read (and discarded) before answering
/// 413, so the client reads the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

pub fn routes(max_upload_bytes: u64) -> Router<AppState> {
    let upload_limit =
        usize::try_from(max_upload_bytes.saturating_add(MULTIPART_OVERHEAD)).unwrap_or(usize::MAX);
    Router::new()
        .route(
            "/upload_model",
            post(upload_model).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/reload_model", get(reload_model).post(reload_model))
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
fn caller_of(caller: Option<Extension<Caller>>) -> Caller {
    caller.map(|Extension(c)| c).unwrap_or_default()
}

/// The URL of this server's REST API and its port, from the `public_url` setting.
/// Never from the request's `Host` header, which any client can forge.
fn base_url(state: &AppState) -> (String, u16) {
    let base = match &state.settings.public_url {
        Some(url) => url.clone(),
        None => crate::settings::default_public_url(state.settings.rest_addr),
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

fn summary_json(m: &ModelSummary, base: &str) -> Value {
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
            Some(w) => crate::workers::status_json(w)
                .as_object()
                .map(|w| json!({
                    "environment": d.environment,
                    "resources": w["resources"],
                    "enforced": w["enforced"],
                    "enforcement": w["enforcement"],
                }))
                .unwrap_or_else(|| deployment_json(d)),
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

// ---- upload ----

fn multipart_error(e: MultipartError) -> HttpError {
    if crate::connections::is_body_read_timeout(&e) {
        HttpError(ApiError::RequestTimeout(super::rejection_message(&e)))
    } else if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        HttpError(ApiError::PayloadTooLarge(format!(
            "the upload is larger than the limit: {}",
            e.body_text()
        )))
    } else {
        HttpError(ApiError::InvalidArgument(format!(
            "malformed multipart body: {}",
            e.body_text()
        )))
    }
}

/// The longest `model_id` or `version` field accepted, in bytes.
const MAX_TEXT_FIELD: usize = 256;

/// Reads a text field chunk by chunk and refuses it as soon as it passes
/// [`MAX_TEXT_FIELD`] bytes, so a field of any length costs at most one chunk of
/// memory. The rest of it is read and discarded (the route's body limit bounds it)
/// so the client gets the 400 rather than a reset connection.
async fn text_field(mut field: Field<'_>, name: &str) -> Result<String, HttpError> {
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > MAX_TEXT_FIELD {
            drop(bytes);
            while let Ok(Some(_)) = field.chunk().await {}
            return Err(HttpError(ApiError::InvalidArgument(format!(
                "field {name} is too long: at most {MAX_TEXT_FIELD} bytes"
            ))));
        }
        bytes.extend_from_slice(&chunk);
    }
    // Not trimmed here: the version field is refused with surrounding spaces (one
    // number, one spelling); model_id trims itself.
    String::from_utf8(bytes).map_err(|_| {
        HttpError(ApiError::InvalidArgument(format!(
            "field {name} is not valid UTF-8"
        )))
    })
}

/// `POST /upload_model`, multipart: `model_id` and `version` (both optional), then
/// `file`, then any `asset` files the version needs beside it (a labels file, a
/// `tokenizer.json`). The files stream to disk as they arrive; they are never held
/// in memory. The model and its pre- and post-processing pipeline are built before
/// anything moves into place: one that does not fit is a 400 and changes nothing.
#[utoipa::path(post, path = "/upload_model", tag = "management",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Uploaded (and served, when its version policy serves it)", body = UploadResponse),
        (status = 400, description = "Not a multipart body, an unknown or misplaced field, a bad version, a file that is not a model, or a model that does not fit its config's pre- or post-processing (labels, tokenizer, image)", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 409, description = "The version exists already, or another operation holds the model", body = ErrorBody),
        (status = 503, description = "The metadata store does not answer; nothing changed", body = ErrorBody),
    ))]
async fn upload_model(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>, HttpError> {
    let mut multipart = multipart.map_err(|e| {
        HttpError(ApiError::InvalidArgument(format!(
            "expected a multipart/form-data body with a file field: {}",
            e.body_text()
        )))
    })?;
    let mut model_id: Option<String> = None;
    let mut version: Option<u64> = None;
    // The file is staged as it streams, but only checked and moved into place once
    // the whole body has been read and found well-formed.
    let mut staged = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if let Some(upload) = staged.as_mut() {
            if name != "asset" {
                return Err(HttpError(ApiError::InvalidArgument(format!(
                    "field {name:?} comes after the file; send model_id and version before \
                     file, and only asset files after it"
                ))));
            }
            receive_asset(upload, field).await?;
            continue;
        }
        match name.as_str() {
            "model_id" => model_id = Some(text_field(field, "model_id").await?.trim().to_string()),
            "version" => {
                // Not trimmed: " 7 " is refused like "+7", so that one number has
                // one spelling.
                let text = text_field(field, "version").await?;
                if !text.is_empty() {
                    version = Some(crate::repository::parse_version(&text).ok_or_else(|| {
                        HttpError(ApiError::InvalidArgument(format!(
                            "version {text:?} is not a version number: decimal digits only, \
                             no sign, spaces or leading zeros, from 1 to {}",
                            crate::repository::MAX_VERSION
                        )))
                    })?);
                }
            }
            "file" => {
                let file_name = field.file_name().unwrap_or_default().to_string();
                let model = match &model_id {
                    Some(id) => id.clone(),
                    None => upload::default_model_id(&file_name),
                };
                staged = Some(
                    receive_file(
                        &state,
                        field,
                        &model,
                        version,
                        &file_name,
                        caller_of(caller.clone()),
                    )
                    .await?,
                );
            }
            "asset" => {
                return Err(HttpError(ApiError::InvalidArgument(
                    "asset files come after the model's file field".into(),
                )))
            }
            other => {
                return Err(HttpError(ApiError::InvalidArgument(format!(
                    "unknown field {other:?}; expected model_id, version, file and asset"
                ))))
            }
        }
    }
    let staged = staged.ok_or_else(|| {
        HttpError(ApiError::InvalidArgument(
            "no file field in the upload".into(),
        ))
    })?;
    let outcome = staged.finish().await?;
    let (base, _) = base_url(&state);
    let served = outcome.summary.served_versions.contains(&outcome.version);
    Ok(Json(json!({
        "message": if served {
            format!("model {} version {} uploaded and served", outcome.model, outcome.version)
        } else if outcome.summary.worker.is_some() {
            // Deployed in a worker process, which loads it from the model's directory.
            format!(
                "model {} version {} uploaded; the model's worker process loads it",
                outcome.model, outcome.version
            )
        } else {
            format!(
                "model {} version {} uploaded; its version policy does not serve it",
                outcome.model, outcome.version
            )
        },
        "model_id": outcome.model,
        "version": outcome.version,
        "bytes": outcome.bytes,
        "model": summary_json(&outcome.summary, &base),
    })))
}

async fn receive_file(
    state: &AppState,
    mut field: Field<'_>,
    model: &str,
    version: Option<u64>,
    file_name: &str,
    caller: Caller,
) -> Result<upload::Upload, HttpError> {
    let mut upload = upload::begin_upload(state.clone(), model, version, file_name, caller).await?;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if let Err(e) = upload.write(&chunk).await {
            drop(upload); // removes the staging directory
            if matches!(e, ApiError::PayloadTooLarge(_)) {
                let mut drained = 0;
                while let Ok(Some(chunk)) = field.chunk().await {
                    drained += chunk.len();
                    if drained > DRAIN_LIMIT {
                        break;
                    }
                }
            }
            return Err(HttpError(e));
        }
    }
    Ok(upload)
}

/// An `asset` part: a file the version needs beside the model, streamed into the
/// staging directory under its file name.
async fn receive_asset(upload: &mut upload::Upload, mut field: Field<'_>) -> Result<(), HttpError> {
    let file_name = field.file_name().unwrap_or_default().to_string();
    upload.begin_asset(&file_name).await?;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        upload.write_asset(&chunk).await?;
    }
    Ok(())
}

// ---- reload, status, deploy, stop, delete ----

#[derive(Deserialize)]
struct ReloadQuery {
    modelname: Option<String>,
}

/// `GET|POST /reload_model[?modelname=NAME]`
#[utoipa::path(method(get, post), path = "/reload_model", tag = "management",
    params(("modelname" = Option<String>, Query, description = "Reload only this model (default: every model)")),
    responses(
        (status = 200, description = "What was reloaded", body = ReloadResponse),
        (status = 400, description = "A malformed query string", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "Another operation holds the model, or the request conflicts with its state", body = ErrorBody),
        (status = 503, description = "The metadata store does not answer; nothing changed", body = ErrorBody),
    ))]
async fn reload_model(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Query(query): Query<ReloadQuery>,
) -> Result<Json<Value>, HttpError> {
    let name = query.modelname.filter(|n| !n.is_empty());
    let outcome = manage::reload(&state, name.as_deref(), &caller_of(caller)).await?;
    let models = &outcome.models;
    let (base, _) = base_url(&state);
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
async fn models_status(State(state): State<AppState>) -> Json<Value> {
    let (base, _) = base_url(&state);
    let models = manage::models_status(&state);
    Json(json!({
        "models": models.iter().map(|m| summary_json(m, &base)).collect::<Vec<_>>(),
    }))
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
    timeout: Option<f64>,
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
        (status = 503, description = "The metadata store does not answer; nothing changed", body = ErrorBody),
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
        timeout_secs: request.resources.timeout,
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
            process is served in-process again instead (`in_process: true`)", body = ModelChangeResponse),
        (status = 400, description = "Malformed model name", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "Another operation holds the model, or the request conflicts with its state", body = ErrorBody),
        (status = 503, description = "The metadata store does not answer, or a model deployed \
            in a worker cannot load in-process (its worker keeps serving it); nothing changed", body = ErrorBody),
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
        (status = 503, description = "The metadata store does not answer; nothing changed", body = ErrorBody),
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

// ---- KServe V2 repository extension ----

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[schema(as = RepositoryIndexRequest)]
struct IndexBody {
    #[serde(default)]
    ready: bool,
}

/// `POST /v2/repository/index {"ready"?: bool}`
#[utoipa::path(post, path = "/v2/repository/index", tag = "management",
    request_body(content = Option<IndexBody>, content_type = "application/json", description = "Optional; an empty body lists every model"),
    responses(
        (status = 200, description = "The models in the repository", body = Vec<RepositoryIndexEntry>),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
    ))]
async fn repository_index(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let bytes = body(bytes, state.settings.max_request_bytes)?;
    let request: IndexBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        IndexBody::default()
    } else {
        parse_json(&bytes)?
    };
    let entries = repository::repository_index(&state, request.ready);
    Ok(Json(Value::Array(
        entries
            .into_iter()
            .map(|e| {
                let mut o = json!({"name": e.model, "state": e.state, "reason": e.reason});
                if let Some(v) = e.version {
                    o["version"] = json!(v.to_string());
                }
                o
            })
            .collect(),
    )))
}

/// `POST /v2/repository/models/{model}/load`
#[utoipa::path(post, path = "/v2/repository/models/{model}/load", tag = "management",
    params(("model" = String, Path, description = "The model's name")),
    responses(
        (status = 200, description = "Loaded (an empty object)", body = Object),
        (status = 400, description = "Malformed model name", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "Another operation holds the model, or the request conflicts with its state", body = ErrorBody),
        (status = 503, description = "The metadata store does not answer; nothing changed", body = ErrorBody),
    ))]
async fn repository_load(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(model): Path<String>,
) -> Result<Json<Value>, HttpError> {
    repository::load_model(&state, &model, &caller_of(caller)).await?;
    Ok(Json(json!({})))
}

/// `POST /v2/repository/models/{model}/unload`
#[utoipa::path(post, path = "/v2/repository/models/{model}/unload", tag = "management",
    params(("model" = String, Path, description = "The model's name")),
    responses(
        (status = 200, description = "Unloaded (an empty object)", body = Object),
        (status = 400, description = "Malformed model name", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "Another operation holds the model, or the request conflicts with its state", body = ErrorBody),
        (status = 503, description = "The metadata store does not answer; nothing changed", body = ErrorBody),
    ))]
async fn repository_unload(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(model): Path<String>,
) -> Result<Json<Value>, HttpError> {
    repository::unload_model(&state, &model, &caller_of(caller)).await?;
    Ok(Json(json!({})))
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

    /// `POST /upload_model`'s form: `model_id` and `version` before `file`, `asset`
    /// files after it.
    #[derive(ToSchema)]
    pub struct UploadForm {
        /// The model's name (default: the file name without its extension).
        #[schema(required = false)]
        model_id: String,
        /// The version number (default: one more than the newest).
        #[schema(required = false)]
        version: String,
        /// The model file (.onnx, .pkl, .joblib, .bin/.ftz, a zipped SavedModel, ...).
        #[schema(format = Binary, content_media_type = "application/octet-stream")]
        file: String,
        /// Files the version needs beside the model (`labels.txt`, `tokenizer.json`),
        /// stored under their own names; repeat the field for several.
        #[schema(required = false, format = Binary, content_media_type = "application/octet-stream")]
        asset: String,
    }

    #[derive(ToSchema)]
    pub struct UploadResponse {
        message: String,
        model_id: String,
        version: u64,
        bytes: u64,
        /// The model's summary, as in `/models/status`.
        model: Value,
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
        /// Set by `stop_deployment` when the model left its worker process and is
        /// served in-process again.
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
    ModelChangeResponse, ModelsResponse, ReloadResponse, RepositoryIndexEntry, UploadForm,
    UploadResponse,
};
