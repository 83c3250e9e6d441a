//! `multipart/form-data` job requests: a `spec` part holding the JSON body that
//! `POST /v1/jobs` otherwise takes, and file parts that the spec names as sources
//! (`{"upload": "<part name>"}`). Files stream to a staging directory as they
//! arrive (`crate::jobs::uploads`), bounded by `max_upload_bytes` (413 past it);
//! they are never held in memory.
//!
//! [`read_job_multipart`] is what any job route reuses (`/v1/jobs`, `/predictall/`,
//! `/train/`); [`JobBody`] lets one handler take either JSON or multipart.

use axum::body::{Body, Bytes};
use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Request};

use super::{body, parse_json, AppState, HttpError};
use crate::api::ApiError;
use crate::jobs::uploads::StagedUploads;

/// Room for the multipart framing and the spec part around the files.
const MULTIPART_OVERHEAD: u64 = 1024 * 1024;

/// The most bytes a multipart job request may hold: its files, their framing and
/// the spec.
pub(super) fn multipart_limit(settings: &crate::settings::Settings) -> u64 {
    settings
        .max_upload_bytes
        .saturating_add(MULTIPART_OVERHEAD)
        .saturating_add(settings.max_request_bytes as u64)
}

/// A job request's body: JSON, or a multipart spec with its files.
pub enum JobBody {
    Json(serde_json::Value),
    Multipart(serde_json::Value, StagedUploads),
}

impl JobBody {
    /// Reads the body by its content type: `multipart/form-data` up to
    /// `max_upload_bytes` (plus framing), anything else as JSON up to
    /// `max_request_bytes`. Its route must disable the default body limit.
    pub async fn read(state: &AppState, request: Request) -> Result<JobBody, HttpError> {
        if super::middleware::is_multipart(request.headers()) {
            let limit = multipart_limit(&state.settings);
            let request = limited(request, usize::try_from(limit).unwrap_or(usize::MAX));
            let multipart = Multipart::from_request(request, state).await.map_err(|e| {
                HttpError(ApiError::InvalidArgument(format!(
                    "expected a multipart/form-data body with a spec part: {}",
                    e.body_text()
                )))
            })?;
            let (spec, files) = read_job_multipart(state, multipart).await?;
            Ok(JobBody::Multipart(spec, files))
        } else {
            let limit = state.settings.max_request_bytes;
            let request = limited(request, limit);
            let bytes = Bytes::from_request(request, state).await;
            let bytes = body(bytes, limit)?;
            Ok(JobBody::Json(parse_json(&bytes)?))
        }
    }
}

fn limited(request: Request, limit: usize) -> Request {
    request.map(|b| Body::new(http_body_util::Limited::new(b, limit)))
}

fn multipart_error(e: MultipartError, limit: u64) -> HttpError {
    if crate::connections::is_body_read_timeout(&e) {
        HttpError(ApiError::RequestTimeout(super::rejection_message(&e)))
    } else if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        HttpError(ApiError::PayloadTooLarge(format!(
            "the upload is larger than the limit of {limit} bytes"
        )))
    } else {
        HttpError(ApiError::InvalidArgument(format!(
            "malformed multipart body: {}",
            e.body_text()
        )))
    }
}

/// Reads a job request's parts: `spec` (JSON, at most `max_request_bytes`) and
/// file parts, saved under their part names in a staging directory. Checking that
/// the spec names exactly the parts sent is `api::jobs::submit_uploaded`'s.
pub async fn read_job_multipart(
    state: &AppState,
    mut multipart: Multipart,
) -> Result<(serde_json::Value, StagedUploads), HttpError> {
    // A refusal before the whole body is read drains what the client still sends,
    // so that it reads the answer rather than a reset connection.
    let read = read_parts(state, &mut multipart).await;
    if read.is_err() {
        super::upload::drain(&mut multipart).await;
    }
    read
}

async fn read_parts(
    state: &AppState,
    multipart: &mut Multipart,
) -> Result<(serde_json::Value, StagedUploads), HttpError> {
    let upload_limit = state.settings.max_upload_bytes;
    let spec_limit = state.settings.max_request_bytes;
    let mut staged = crate::api::jobs::stage_uploads(state).await?;
    let mut spec: Option<serde_json::Value> = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, upload_limit))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "spec" {
            if spec.is_some() {
                return Err(HttpError(ApiError::InvalidArgument(
                    "part \"spec\" is sent twice".into(),
                )));
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = field
                .chunk()
                .await
                .map_err(|e| multipart_error(e, upload_limit))?
            {
                if bytes.len() + chunk.len() > spec_limit {
                    return Err(HttpError(ApiError::PayloadTooLarge(format!(
                        "part \"spec\" is larger than the limit of {spec_limit} bytes"
                    ))));
                }
                bytes.extend_from_slice(&chunk);
            }
            spec = Some(parse_json(&bytes)?);
            continue;
        }
        let file_name = field.file_name().map(str::to_string);
        staged
            .begin(&name, file_name.as_deref())
            .await
            .map_err(|e| HttpError(e.into()))?;
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| multipart_error(e, upload_limit))?
        {
            staged
                .write(&chunk)
                .await
                .map_err(|e| HttpError(e.into()))?;
        }
    }
    let spec = spec.ok_or_else(|| {
        HttpError(ApiError::InvalidArgument(
            "no \"spec\" part: send the job's JSON as a part named spec".into(),
        ))
    })?;
    Ok((spec, staged))
}
