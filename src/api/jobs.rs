//! Job operations (`crate::jobs`) for every adapter: submit, look up, list, cancel,
//! follow; and the old prediction service's `/predictall/` and
//! `/training/status/<id>` in its own terms.

use std::sync::Arc;

use super::{ApiError, ServerState};
use crate::jobs::spec::{self, JobSpec};
use crate::jobs::uploads::{StagedUploads, UploadError};
use crate::jobs::{JobState, JobView, Jobs};
use crate::store::JobQuery;

fn runner(state: &ServerState) -> Result<&Arc<Jobs>, ApiError> {
    state
        .jobs
        .get()
        .ok_or_else(|| ApiError::Unavailable("this server runs without a job runner".into()))
}

/// `POST /v1/jobs`: checks the spec at once (400 naming the field) and queues the
/// job. Answers its id.
pub async fn submit(state: &ServerState, body: serde_json::Value) -> Result<String, ApiError> {
    let jobs = runner(state)?;
    let spec = spec::parse_job(&body, &jobs.data_dir)
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    check_spec(state, &spec)?;
    let spec_json = body.get("spec").cloned().unwrap_or_default();
    Ok(jobs.submit(&spec, spec_json).await?)
}

/// What can be checked before a job runs, beyond the spec's shape.
fn check_spec(state: &ServerState, spec: &JobSpec) -> Result<(), ApiError> {
    match spec {
        JobSpec::Score(s) => check_score(state, s)?,
        JobSpec::Train(t) => {
            let trainer = crate::jobs::train::trainer_for(&t.algorithm).ok_or_else(|| {
                ApiError::InvalidArgument(format!(
                    "spec.algorithm.name: training ({:?}) is not available in this build",
                    t.algorithm
                ))
            })?;
            trainer
                .check(t)
                .map_err(|e| ApiError::InvalidArgument(format!("spec.algorithm: {e}")))?;
        }
    }
    Ok(())
}

/// What can be checked before a scoring job runs: the model and version exist,
/// rows can be named for it, the outputs asked for are its.
fn check_score(state: &ServerState, s: &spec::ScoreSpec) -> Result<(), ApiError> {
    let handle =
        state
            .manager
            .resolve(&s.model, &s.version)
            .map_err(|e| match ApiError::from(e) {
                ApiError::NotFound(m) => ApiError::InvalidArgument(format!("spec.model: {m}")),
                ApiError::Unavailable(m) => {
                    ApiError::InvalidArgument(format!("spec.model: not available now: {m}"))
                }
                other => other,
            })?;
    crate::api::simple::feature_columns(&handle)
        .map_err(|e| ApiError::InvalidArgument(format!("spec.model: {e}")))?;
    if let Some(outputs) = &s.outputs {
        let known: Vec<&str> = handle
            .backend
            .signature()
            .outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        if let Some(bad) = outputs.iter().find(|o| !known.contains(&o.as_str())) {
            return Err(ApiError::InvalidArgument(format!(
                "spec.outputs: model {:?} has no output {bad:?} (its outputs: {known:?})",
                s.model
            )));
        }
    }
    Ok(())
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no job {id:?}"))
}

/// `GET /v1/jobs/{id}`.
pub async fn get(state: &ServerState, id: &str) -> Result<JobView, ApiError> {
    runner(state)?.get(id).await?.ok_or_else(|| not_found(id))
}

/// Filters and page of `GET /v1/jobs`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub state: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// `GET /v1/jobs`: newest first; answers the page and the number matching.
pub async fn list(state: &ServerState, query: ListQuery) -> Result<(Vec<JobView>, i64), ApiError> {
    let jobs = runner(state)?;
    if let Some(s) = &query.state {
        JobState::parse(s).ok_or_else(|| {
            ApiError::InvalidArgument(format!(
                "state must be queued, running, succeeded, failed or cancelled, not {s:?}"
            ))
        })?;
    }
    if let Some(k) = &query.kind {
        spec::JobKind::parse(k).ok_or_else(|| {
            ApiError::InvalidArgument(format!("kind must be score or train, not {k:?}"))
        })?;
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidArgument(
            "limit must be from 1 to 1000".into(),
        ));
    }
    let offset = query.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::InvalidArgument(
            "offset must not be negative".into(),
        ));
    }
    let (rows, total) = jobs
        .store()
        .jobs(&JobQuery {
            state: query.state,
            kind: query.kind,
            limit,
            offset,
        })
        .await?;
    // A job running here shows its latest progress, not the last one written.
    let views = rows
        .into_iter()
        .map(|row| match jobs.live(&row.id) {
            Some(live) => live.view(),
            None => JobView::from_row(row),
        })
        .collect();
    Ok((views, total))
}

/// `POST /v1/jobs/{id}/cancel`: a queued job is cancelled at once, a running one
/// stops at its next batch. A finished job is a 409.
pub async fn cancel(state: &ServerState, id: &str) -> Result<JobView, ApiError> {
    let jobs = runner(state)?;
    let before = jobs.get(id).await?.ok_or_else(|| not_found(id))?;
    if before.state.is_finished() {
        return Err(ApiError::Conflict(format!(
            "job {id:?} has already finished ({})",
            before.state.as_str()
        )));
    }
    jobs.cancel(id).await?.ok_or_else(|| not_found(id))
}

/// What `GET /v1/jobs/{id}/events` follows: the live job's changes, or the record
/// of one that is not running here.
pub enum JobEvents {
    Live(tokio::sync::watch::Receiver<JobView>),
    Finished(Box<JobView>),
}

pub async fn events(state: &ServerState, id: &str) -> Result<JobEvents, ApiError> {
    let jobs = runner(state)?;
    if let Some(live) = jobs.live(id) {
        return Ok(JobEvents::Live(live.subscribe()));
    }
    Ok(JobEvents::Finished(Box::new(
        jobs.get(id).await?.ok_or_else(|| not_found(id))?,
    )))
}

/// `POST /predictall/` with the old job.json (see `spec::predictall_to_score`).
pub async fn predictall(state: &ServerState, job: serde_json::Value) -> Result<String, ApiError> {
    let body =
        spec::predictall_to_score(&job).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    submit(state, body).await
}

/// `GET /training/status/<id>` as the old service answered it: `PENDING` while
/// queued, the latest progress message while running, `SUCCESS`, or `FAILURE`
/// with the reason (a cancelled job is a failure "cancelled").
pub async fn old_status(state: &ServerState, id: &str) -> Result<(String, String), ApiError> {
    let view = get(state, id).await?;
    let latest = view.messages.last().map(|m| m.text.clone());
    Ok(match view.state {
        JobState::Queued => ("PENDING".into(), "queued".into()),
        JobState::Running => (
            "PROGRESS".into(),
            latest.unwrap_or_else(|| {
                format!(
                    "{}: {} rows read",
                    view.progress.stage, view.progress.rows_read
                )
            }),
        ),
        JobState::Succeeded => (
            "SUCCESS".into(),
            format!("{} rows written", view.progress.rows_written),
        ),
        JobState::Failed => (
            "FAILURE".into(),
            view.error.unwrap_or_else(|| "failed".into()),
        ),
        JobState::Cancelled => ("FAILURE".into(), "cancelled".into()),
    })
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> ApiError {
        match e {
            UploadError::TooLarge(_) => ApiError::PayloadTooLarge(e.to_string()),
            UploadError::Invalid(m) => ApiError::InvalidArgument(m),
            UploadError::Io(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// `POST /v1/jobs` as `multipart/form-data`: `body` is the `spec` part, `uploads`
/// the file parts. Every `{"upload": "<part>"}` source must name a part (400
/// naming it), and every part must be named by the spec (400 naming the part). A
/// source without `format` takes it from the part's file name. The files move to
/// the job's own directory, removed when the job ends.
pub async fn submit_uploaded(
    state: &ServerState,
    mut body: serde_json::Value,
    uploads: StagedUploads,
) -> Result<String, ApiError> {
    let jobs = runner(state)?;
    let mut used = Vec::new();
    if let Some(source) = body
        .get_mut("spec")
        .and_then(|s| s.get_mut("source"))
        .and_then(serde_json::Value::as_object_mut)
    {
        if let Some(part) = source.get("upload").and_then(|p| p.as_str()) {
            let part = part.to_string();
            let file = uploads.file(&part).ok_or_else(|| {
                let sent: Vec<&str> = uploads.files().iter().map(|f| f.part.as_str()).collect();
                ApiError::InvalidArgument(format!(
                    "spec.source.upload: the request has no part {part:?} (its file parts: {sent:?})"
                ))
            })?;
            if !source.contains_key("format") {
                if let Some(format) = file.format() {
                    source.insert("format".into(), format_name(format).into());
                }
            }
            used.push(part);
        }
    }
    if let Some(unused) = uploads.files().iter().find(|f| !used.contains(&f.part)) {
        return Err(ApiError::InvalidArgument(format!(
            "part {:?} is not used by the spec (refer to it as {{\"upload\": {:?}}})",
            unused.part, unused.part
        )));
    }
    let spec = spec::parse_job_in(
        &body,
        spec::Roots {
            data_dir: &jobs.data_dir,
            uploads: Some(uploads.dir()),
        },
    )
    .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    check_spec(state, &spec)?;
    let id = crate::jobs::new_job_id();
    let dir = uploads.persist(&id).await?;
    let spec_json = body.get("spec").cloned().unwrap_or_default();
    match jobs.submit_as(id, &spec, spec_json).await {
        Ok(id) => Ok(id),
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            Err(e.into())
        }
    }
}

fn format_name(format: spec::FileFormat) -> &'static str {
    match format {
        spec::FileFormat::Csv => "csv",
        spec::FileFormat::JsonLines => "jsonl",
        spec::FileFormat::Parquet => "parquet",
    }
}

/// `POST /predictall/` as `multipart/form-data`: the old job.json in the `spec`
/// part, `inputCollection` may be `{"upload": "<part>"}`.
pub async fn predictall_uploaded(
    state: &ServerState,
    job: serde_json::Value,
    uploads: StagedUploads,
) -> Result<String, ApiError> {
    let body =
        spec::predictall_to_score(&job).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    submit_uploaded(state, body, uploads).await
}

/// A staging directory for the file parts of a job request (see
/// `crate::jobs::uploads`), bounded by `max_upload_bytes`.
pub async fn stage_uploads(state: &ServerState) -> Result<StagedUploads, ApiError> {
    let jobs = runner(state)?;
    Ok(StagedUploads::new(&jobs.uploads_dir, state.settings.max_upload_bytes).await?)
}
