//! `POST /upload_model`: the multipart decoding of an upload (`model_id`, `version`,
//! `file`, `asset`s), streamed into `crate::api::upload::Upload`. Its routes are
//! merged into the management API's (`super::manage::routes`).

use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Extension;
use axum::{Json, Router};
use serde_json::json;

use super::manage::{base_url, caller_of, summary_json};
use super::openapi::ErrorBody;
use super::{AppState, HttpError};
use crate::api::{upload, ApiError, Caller};

/// Room for the multipart framing and the text fields around the file.
const MULTIPART_OVERHEAD: u64 = 1024 * 1024;
/// How much of a refused upload is still read (and discarded) before answering, so
/// the client reads the answer instead of a reset connection: as much as any
/// refused body ([`super::body::REFUSED_DRAIN_LIMIT`]).
const DRAIN_LIMIT: usize = super::body::REFUSED_DRAIN_LIMIT;

/// The most bytes an upload's body may hold: the upload limit plus the multipart
/// framing.
pub(super) fn body_limit(max_upload_bytes: u64) -> u64 {
    max_upload_bytes.saturating_add(MULTIPART_OVERHEAD)
}

/// The 413 of an upload whose body is larger than [`body_limit`]: it names the
/// upload limit the user set (`max_upload_bytes`), as the refusal of the file
/// itself does (`crate::api::upload::Upload`), not the body limit with the
/// framing's room, which no one set. `body_bytes` is the declared length of the
/// body, where it was declared.
pub(super) fn too_large(max_upload_bytes: u64, body_bytes: Option<u64>) -> ApiError {
    let body = body_bytes.map_or_else(String::new, |n| format!(" (a request body of {n} bytes)"));
    ApiError::PayloadTooLarge(format!(
        "the model file and its assets are larger than the upload limit of \
         {max_upload_bytes} bytes{body}"
    ))
}

/// `/upload_model`, with a body limit of [`body_limit`].
pub fn routes(max_upload_bytes: u64) -> Router<AppState> {
    let upload_limit = usize::try_from(body_limit(max_upload_bytes)).unwrap_or(usize::MAX);
    Router::new().route(
        "/upload_model",
        post(upload_model)
            .layer(DefaultBodyLimit::max(upload_limit))
            .layer(axum::middleware::from_fn(
                super::body::close_unless_read_whole,
            )),
    )
}

fn multipart_error(e: MultipartError, max_upload_bytes: u64) -> HttpError {
    if crate::connections::is_body_read_timeout(&e) {
        HttpError(ApiError::RequestTimeout(super::rejection_message(&e)))
    } else if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        HttpError(too_large(max_upload_bytes, None))
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
async fn text_field(
    mut field: Field<'_>,
    name: &str,
    max_upload_bytes: u64,
) -> Result<String, HttpError> {
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| multipart_error(e, max_upload_bytes))?
    {
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
        (status = 200, description = "Uploaded (and served, when its version policy serves it and the model is not stopped)", body = UploadResponse),
        (status = 400, description = "A multipart body without its boundary, an unknown or misplaced field, a bad version, an asset whose file name cannot be stored as it is, a file that is not a model, or a model that does not fit its config's pre- or post-processing (labels, tokenizer, image)", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 409, description = "The version exists already, or another operation holds the model", body = ErrorBody),
        (status = 413, description = "The model file and its assets are larger than max_upload_bytes, or the upload carries more than 1000 asset files", body = ErrorBody),
        (status = 415, description = "A body that is not multipart/form-data (JSON included: an upload takes nothing else), or a body with a Content-Encoding (bodies are not decompressed)", body = ErrorBody),
        (status = 503, description = "The metadata store does not answer; nothing changed", body = ErrorBody),
    ))]
async fn upload_model(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, HttpError> {
    let mut multipart = match multipart {
        Ok(multipart) => multipart,
        Err(e) => {
            // JSON, another type or none: the 415 the access layer gives a body of
            // another type (`auth::cross_site_refusal`), not a multipart body's
            // missing boundary.
            let essence = super::auth::content_type_essence(&headers);
            if essence.as_deref() != Some("multipart/form-data") {
                let (status, message) =
                    super::auth::ManagementBodies::Multipart.refusal(essence.as_deref());
                return Ok((status, Json(json!({ "error": message }))).into_response());
            }
            return Err(HttpError(ApiError::InvalidArgument(format!(
                "expected a multipart/form-data body with a file field: {}",
                e.body_text()
            ))));
        }
    };
    // A refusal before the whole body is read (a bad version, an existing one, an
    // unknown field) drains what the client still sends, so that it reads the
    // answer rather than a reset connection or a broken pipe.
    let staged = match read_form(&state, caller, &mut multipart).await {
        Ok(staged) => staged,
        Err(e) => {
            drain(&mut multipart).await;
            return Err(e);
        }
    };
    let mut outcome = staged.finish().await?;
    let in_worker = wait_for_the_worker(&state, &mut outcome).await;
    let (base, _) = base_url(&state);
    let served = outcome.summary.served_versions.contains(&outcome.version);
    Ok(Json(json!({
        "message": if served {
            format!("model {} version {} uploaded and served", outcome.model, outcome.version)
        } else if outcome.summary.stopped {
            format!(
                "model {} version {} uploaded; the model is stopped: reload, load or deploy \
                 it to serve it",
                outcome.model, outcome.version
            )
        } else if let Some(in_worker) = in_worker {
            format!(
                "model {} version {} uploaded; {in_worker}",
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
        "files": outcome.files,
        "model": summary_json(&outcome.summary, &base),
    }))
    .into_response())
}

/// The form's fields in order, the file staged as it streams; an error leaves the
/// rest of the body unread.
async fn read_form(
    state: &AppState,
    caller: Option<Extension<Caller>>,
    multipart: &mut Multipart,
) -> Result<upload::Upload, HttpError> {
    let mut model_id: Option<String> = None;
    let mut version: Option<u64> = None;
    // Given at all, empty or not (an empty `version` then `version=4` was taken).
    let mut version_given = false;
    // The file is staged as it streams, but only checked and moved into place once
    // the whole body has been read and found well-formed.
    let mut staged = None;
    let max_upload_bytes = state.settings.max_upload_bytes;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, max_upload_bytes))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if let Some(upload) = staged.as_mut() {
            if name != "asset" {
                return Err(HttpError(ApiError::InvalidArgument(format!(
                    "field {name:?} comes after the file; send model_id and version before \
                     file, and only asset files after it"
                ))));
            }
            receive_asset(upload, field, max_upload_bytes).await?;
            continue;
        }
        let twice = |field: &str| {
            HttpError(ApiError::InvalidArgument(format!(
                "field {field:?} is given twice"
            )))
        };
        match name.as_str() {
            "model_id" if model_id.is_some() => return Err(twice("model_id")),
            "version" if version_given => return Err(twice("version")),
            "model_id" => {
                model_id = Some(
                    text_field(field, "model_id", max_upload_bytes)
                        .await?
                        .trim()
                        .to_string(),
                )
            }
            "version" => {
                version_given = true;
                // Not trimmed: " 7 " is refused like "+7", so that one number has
                // one spelling.
                let text = text_field(field, "version", max_upload_bytes).await?;
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
                let file_name = part_file_name(&field, "file")?;
                let model = match &model_id {
                    Some(id) => id.clone(),
                    None => upload::default_model_id(&file_name),
                };
                staged = Some(
                    receive_file(
                        state,
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
    staged.ok_or_else(|| {
        HttpError(ApiError::InvalidArgument(
            "no file field in the upload".into(),
        ))
    })
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
    let max_upload_bytes = state.settings.max_upload_bytes;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| multipart_error(e, max_upload_bytes))?
    {
        // An error drops the upload, which removes its staging directory; the
        // caller drains the rest of the body.
        upload.write(&chunk).await?;
    }
    Ok(upload)
}

/// An `asset` part: a file the version needs beside the model, streamed into the
/// staging directory under its file name.
async fn receive_asset(
    upload: &mut upload::Upload,
    mut field: Field<'_>,
    max_upload_bytes: u64,
) -> Result<(), HttpError> {
    let file_name = part_file_name(&field, "asset")?;
    upload.begin_asset(&file_name).await?;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| multipart_error(e, max_upload_bytes))?
    {
        upload.write_asset(&chunk).await?;
    }
    Ok(())
}

/// Reads and discards the rest of a refused upload's body (at most about
/// [`DRAIN_LIMIT`] bytes), so that the client reads the answer rather than a reset
/// connection.
pub(super) async fn drain(multipart: &mut Multipart) {
    let mut drained = 0;
    while let Ok(Some(mut field)) = multipart.next_field().await {
        // A part's head counts too: an upload of empty parts is drained no longer.
        drained += 128;
        while let Ok(Some(chunk)) = field.chunk().await {
            drained += chunk.len();
            if drained > DRAIN_LIMIT {
                return;
            }
        }
        if drained > DRAIN_LIMIT {
            return;
        }
    }
}

/// The file name of a file part (`""` when it has none). A name that is not UTF-8
/// is refused with a message that says so: the multipart reader gives no name for
/// it, which would otherwise be reported as a part without a name.
fn part_file_name(field: &Field<'_>, part: &str) -> Result<String, HttpError> {
    if let Some(name) = field.file_name() {
        return Ok(name.to_string());
    }
    let disposition = field
        .headers()
        .get(axum::http::header::CONTENT_DISPOSITION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    match raw_file_name(disposition) {
        Some(raw) => Err(HttpError(ApiError::InvalidArgument(format!(
            "the file name of the {part} part is not valid UTF-8 ({:?}): send it in UTF-8",
            String::from_utf8_lossy(raw)
        )))),
        None => Ok(String::new()),
    }
}

/// The bytes of the `filename` parameter of a `Content-Disposition` value, quotes
/// left out, when it has one.
fn raw_file_name(disposition: &[u8]) -> Option<&[u8]> {
    let lower = disposition.to_ascii_lowercase();
    let at = lower
        .windows(b"filename".len())
        .position(|w| w == b"filename")?;
    let rest = disposition[at + b"filename".len()..].trim_ascii_start();
    let value = rest.strip_prefix(b"=")?.trim_ascii_start();
    Some(match value.strip_prefix(b"\"") {
        Some(quoted) => quoted.split(|&b| b == b'"').next().unwrap_or_default(),
        None => value
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii_end(),
    })
}

/// The description's types for the upload's form and answer (built as JSON values
/// above); never built.
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
        /// stored under their own names (ASCII letters, digits, `.`, `_` and `-`, at
        /// most 200 characters; any other name is a 400); repeat the field for several.
        #[schema(required = false, format = Binary, content_media_type = "application/octet-stream")]
        asset: String,
    }

    #[derive(ToSchema)]
    pub struct UploadResponse {
        message: String,
        model_id: String,
        version: u64,
        bytes: u64,
        /// The files stored in the version directory: the model's first (under the
        /// name of its format, `model.onnx`), then the assets', each under its own name.
        files: Vec<String>,
        /// The model's summary, as in `/models/status`.
        model: Value,
    }
}
use schema::{UploadForm, UploadResponse};

/// What became of an upload's version of a model deployed in a worker process, when
/// it is not served at once: the worker loads it from the model's directory (its own
/// repository watch finds it), so the upload waits for that, as an in-process
/// upload waits for its load, bounded by the management timeout; `None` when the
/// model is not deployed, or the version serves. Updates the outcome's summary
/// with what the worker says.
async fn wait_for_the_worker(
    state: &AppState,
    outcome: &mut upload::UploadOutcome,
) -> Option<String> {
    let version = outcome.version;
    if outcome.summary.worker.is_none() || outcome.summary.served_versions.contains(&version) {
        return None;
    }
    let workers = state.workers.get()?;
    // A version the model's policy in force does not select is never loaded: no
    // wait.
    let mut selected = None;
    if let Some(dir) = outcome.summary.dir.clone() {
        let (model, sources) = (outcome.model.clone(), state.sources.clone());
        selected = tokio::task::spawn_blocking(move || {
            let config = sources.config_in_force(&model)?;
            let on_disk = crate::repository::scan_model(&model, &dir).ok()?;
            let numbers: Vec<u64> = on_disk.versions.keys().copied().collect();
            Some(config.version_policy.select(&numbers))
        })
        .await
        .ok()
        .flatten();
        if selected.as_ref().is_some_and(|s| !s.contains(&version)) {
            return Some("its version policy does not serve it".to_string());
        }
    }
    let wait = state.settings.management_timeout;
    let until = tokio::time::Instant::now() + wait;
    // Until the versions the policy no longer selects (the one this upload replaces)
    // are unloaded too, as an in-process upload answers once its reconcile is over.
    let status = workers
        .wait_for_version(&outcome.model, version, selected.as_deref(), until)
        .await?;
    outcome.summary.worker = Some(status);
    outcome.summary.take_worker_status();
    let failed = outcome
        .summary
        .versions
        .iter()
        .find(|v| v.version == version)
        .and_then(|v| v.error.clone());
    Some(match failed {
        _ if outcome.summary.served_versions.contains(&version) => return None,
        Some(error) => format!("the model's worker process could not load it: {error}"),
        None => format!(
            "the model's worker process did not serve it within {} s (the management \
             timeout); it may still load it",
            wait.as_secs_f64()
        ),
    })
}
