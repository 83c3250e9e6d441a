//! Job operations (`crate::jobs`) for every adapter: submit, look up, list, cancel,
//! follow; and the old prediction service's `/predictall/` and
//! `/training/status/<id>` in its own terms.

use std::sync::Arc;

use super::{ApiError, ServerState};
use crate::jobs::spec::{self, JobSpec};
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
    match &spec {
        JobSpec::Score(s) => check_score(state, s)?,
        JobSpec::Train(t) => {
            crate::jobs::train::check(t).map_err(ApiError::InvalidArgument)?;
            // A file's header is read here, so an unknown column is a 400 now.
            let (t, runtime) = (t.clone(), tokio::runtime::Handle::current());
            tokio::task::spawn_blocking(move || crate::jobs::train::check_columns(&t, &runtime))
                .await
                .map_err(|e| ApiError::Internal(format!("checking the source failed: {e}")))?
                .map_err(ApiError::InvalidArgument)?;
        }
    }
    let spec_json = body.get("spec").cloned().unwrap_or_default();
    Ok(jobs.submit(&spec, spec_json).await?)
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
