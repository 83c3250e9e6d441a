//! KServe V2's model-repository extension over REST: `POST /v2/repository/index`,
//! `/v2/repository/models/{model}/load` and `/unload`. Decoding and encoding only;
//! `api::repository` decides.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::super::openapi::ErrorBody;
use super::super::{body, parse_json, AppState, HttpError};
use super::{caller_of, RepositoryIndexEntry};
use crate::api::{repository, ApiError, Caller};

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
pub(super) async fn repository_index(
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
    request_body(content = Option<Object>, content_type = "application/json", description = "Optional: `{\"parameters\": {}}`; a load takes no parameters (no `config` or `file:` overrides: models load as they are on disk)"),
    responses(
        (status = 200, description = "Loaded (an empty object)", body = Object),
        (status = 400, description = "Malformed model name or body, or a load parameter", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "Another operation holds the model, or the request conflicts with its state", body = ErrorBody),
        (status = 503, description = "No version of the model serves after the load (the message says why: each version's error, or none found), or the metadata store does not answer and nothing changed", body = ErrorBody),
        (status = 504, description = "The management timeout passed: waiting for the model (another operation held it) or for the operation to start, which then never happens; or for one that had started, which ends in the background", body = ErrorBody),
    ))]
pub(super) async fn repository_load(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(model): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let bytes = body(bytes, state.settings.max_request_bytes)?;
    repository_parameters(&bytes, &[])?;
    repository::load_model(&state, &model, &caller_of(caller)).await?;
    Ok(Json(json!({})))
}

/// The body of a V2 repository load or unload: none, or `{"parameters": {...}}`
/// naming only parameters in `accepted` (a load's `config` or `file:` overrides
/// are refused, as over gRPC: models load as they are on disk).
fn repository_parameters(bytes: &[u8], accepted: &[&str]) -> Result<(), HttpError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let invalid = |m: String| HttpError(ApiError::InvalidArgument(m));
    let request: Value = parse_json(bytes)?;
    let Value::Object(mut fields) = request else {
        return Err(invalid(format!(
            "the body must be a JSON object ({{\"parameters\": {{...}}}}), not {request}"
        )));
    };
    let parameters = match fields.remove("parameters") {
        None => Map::new(),
        Some(Value::Object(p)) => p,
        Some(other) => {
            return Err(invalid(format!(
                "parameters must be an object, not {other}"
            )))
        }
    };
    if let Some(field) = fields.keys().next() {
        return Err(invalid(format!(
            "unknown field {field:?}: the body takes only \"parameters\""
        )));
    }
    if let Some(v) = parameters
        .get("unload_dependents")
        .filter(|v| accepted.contains(&"unload_dependents") && !v.is_boolean())
    {
        return Err(invalid(format!(
            "parameter \"unload_dependents\" must be true or false, not {v}"
        )));
    }
    match parameters.keys().find(|k| !accepted.contains(&k.as_str())) {
        // A load's overrides (`config`, `file:…`) have no meaning here: models
        // load as they are on disk. An unload takes only unload_dependents.
        Some(name) if accepted.is_empty() => Err(invalid(format!(
            "load parameter {name:?} is not supported: models load from the repository as \
             they are on disk"
        ))),
        Some(name) => Err(invalid(format!(
            "unload parameter {name:?} is not supported: an unload takes only {}",
            accepted.join(", ")
        ))),
        None => Ok(()),
    }
}

/// `POST /v2/repository/models/{model}/unload`
#[utoipa::path(post, path = "/v2/repository/models/{model}/unload", tag = "management",
    params(("model" = String, Path, description = "The model's name")),
    request_body(content = Option<Object>, content_type = "application/json", description = "Optional: `{\"parameters\": {\"unload_dependents\": bool}}` (no model here has dependents)"),
    responses(
        (status = 200, description = "Unloaded (an empty object)", body = Object),
        (status = 400, description = "Malformed model name or body, or a parameter other than unload_dependents", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "Another operation holds the model, or the request conflicts with its state", body = ErrorBody),
        (status = 503, description = "The metadata store does not answer; nothing changed", body = ErrorBody),
        (status = 504, description = "The management timeout passed: waiting for the model (another operation held it) or for the operation to start, which then never happens; or for one that had started, which ends in the background", body = ErrorBody),
    ))]
pub(super) async fn repository_unload(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(model): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let bytes = body(bytes, state.settings.max_request_bytes)?;
    // Triton's `unload_dependents`: no model here has dependents.
    repository_parameters(&bytes, &["unload_dependents"])?;
    repository::unload_model(&state, &model, &caller_of(caller)).await?;
    Ok(Json(json!({})))
}
