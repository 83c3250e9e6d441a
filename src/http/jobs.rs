//! Jobs over REST (management routes): `POST /v1/jobs`, `GET /v1/jobs`,
//! `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/cancel`, `GET /v1/jobs/{id}/events`
//! (server-sent events), and the old prediction service's `POST /train/`,
//! `POST /predictall/`, `GET /training/status/{id}` and `POST /predict/` (one
//! record scored with the model a training job saved). Decoding and encoding
//! only: `api::jobs` decides.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

use super::job_uploads::JobBody;
use super::openapi::ErrorBody;
use super::{body, parse_json, AppState, HttpError};
use crate::api::jobs::{self, JobEvents, ListQuery};
use crate::api::{ApiError, Caller};
use crate::jobs::JobView;

pub fn routes() -> Router<AppState> {
    Router::new()
        // Multipart bodies carry files up to max_upload_bytes: the handlers apply
        // their own limits (`JobBody::read`).
        .route(
            "/v1/jobs",
            post(submit).layer(DefaultBodyLimit::disable()).get(list),
        )
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/events", get(events))
        .route(
            "/predictall",
            post(predictall).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/predictall/",
            post(predictall).layer(DefaultBodyLimit::disable()),
        )
        .route("/train", post(train).layer(DefaultBodyLimit::disable()))
        .route("/train/", post(train).layer(DefaultBodyLimit::disable()))
        .route("/training/status/{id}", get(old_status))
        .route("/predict/", post(old_predict))
}

fn caller_of(caller: Option<Extension<Caller>>) -> Caller {
    caller.map(|Extension(c)| c).unwrap_or_default()
}

/// JSON, or `multipart/form-data` with a `spec` part and file parts.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", operation_id = "submit_job",
    request_body(content(
        (Object = "application/json"),
        (JobUploadForm = "multipart/form-data"),
    )),
    responses(
        (status = 202, description = "Queued", body = JobIdResponse),
        (status = 400, description = "A malformed or invalid job spec", body = ErrorBody),
        (status = 403, description = "A path outside the allowed data roots", body = ErrorBody),
        (status = 409, description = "A training job into a model no training job made (its newest version has no training.json)", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 503, description = "Jobs need the metadata store, which is off or does not answer", body = ErrorBody),
    ))]
async fn submit(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    request: Request,
) -> Result<Response, HttpError> {
    let caller = caller_of(caller);
    let id = match JobBody::read(&state, request).await? {
        JobBody::Json(body) => jobs::submit(&state, body, &caller).await?,
        JobBody::Multipart(body, files) => {
            jobs::submit_uploaded(&state, body, files, &caller).await?
        }
    };
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": id }))).into_response())
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", operation_id = "get_job",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job's record: state, progress, result", body = Object),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 503, description = "The metadata store is off or does not answer", body = ErrorBody),
    ))]
async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, HttpError> {
    Ok(Json(jobs::get(&state, &id).await?))
}

fn integer(name: &str, value: &str) -> Result<i64, HttpError> {
    value.parse::<i64>().map_err(|_| {
        HttpError(ApiError::InvalidArgument(format!(
            "{name} must be an integer, not {value:?}"
        )))
    })
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", operation_id = "list_jobs",
    params(
        ("state" = Option<String>, Query, description = "Only jobs in this state"),
        ("kind" = Option<String>, Query, description = "Only jobs of this kind"),
        ("limit" = Option<i64>, Query, description = "At most this many"),
        ("offset" = Option<i64>, Query, description = "Skip this many"),
    ),
    responses(
        (status = 200, description = "Jobs, newest first, and how many match", body = JobListResponse),
        (status = 400, description = "A malformed or unknown query parameter", body = ErrorBody),
        (status = 503, description = "The metadata store is off or does not answer", body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, HttpError> {
    let mut q = ListQuery::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned() {
        match k.as_str() {
            "state" => q.state = Some(v),
            "kind" => q.kind = Some(v),
            "limit" => q.limit = Some(integer("limit", &v)?),
            "offset" => q.offset = Some(integer("offset", &v)?),
            other => {
                return Err(HttpError(ApiError::InvalidArgument(format!(
                    "unknown query parameter {other:?} (known: state, kind, limit, offset)"
                ))))
            }
        }
    }
    let (views, total) = jobs::list(&state, q).await?;
    Ok(Json(json!({ "jobs": views, "total": total })))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", operation_id = "cancel_job",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job's record after the cancel", body = Object),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job has finished already, or is a training job publishing its model version (too late to cancel: it is saved)", body = ErrorBody),
        (status = 503, description = "The metadata store is off or does not answer (had the request reached it, the cancel may still take effect: ask again to know)", body = ErrorBody),
    ))]
async fn cancel(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, HttpError> {
    Ok(Json(jobs::cancel(&state, &id, &caller_of(caller)).await?))
}

/// How often the events stream of a job this server does not hold (it runs on
/// another replica, or left this server's memory before it ended) reads the store.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Where a job's events stream is: following this server's live copy, or the
/// store, for a job that is not (or no longer) running here.
enum Follow {
    /// This server holds the job: every change of its view (`first`: the view
    /// as it is now has not been sent yet).
    Live {
        rx: tokio::sync::watch::Receiver<JobView>,
        first: bool,
    },
    /// The job as the store has it now, not yet sent.
    Once(Box<JobView>),
    /// Polling the store; `last` was sent.
    Store {
        last: Box<JobView>,
    },
    Done,
}

impl Follow {
    /// The next event, and where the stream goes on from; `None` once the job's
    /// end was sent.
    async fn next(self, state: &AppState, id: &str) -> Option<(Result<Event, Infallible>, Follow)> {
        let after = |view: JobView| {
            let event = event_of(&view);
            let next = if view.state.is_finished() {
                Follow::Done
            } else {
                Follow::Store {
                    last: Box::new(view),
                }
            };
            Some((Ok(event), next))
        };
        let mut follow = self;
        loop {
            match follow {
                Follow::Done => return None,
                Follow::Once(view) => return after(*view),
                Follow::Live { mut rx, first } => {
                    // A closed channel means the job left this server's memory
                    // (its last view was seen): ended (that view is the end), or
                    // taken by another server (the store goes on from there).
                    if !first && rx.changed().await.is_err() {
                        let view = rx.borrow().clone();
                        if view.state.is_finished() {
                            return after(view);
                        }
                        follow = Follow::Store {
                            last: Box::new(view),
                        };
                        continue;
                    }
                    let view = rx.borrow_and_update().clone();
                    let next = if view.state.is_finished() {
                        Follow::Done
                    } else {
                        Follow::Live { rx, first: false }
                    };
                    return Some((Ok(event_of(&view)), next));
                }
                Follow::Store { last } => loop {
                    tokio::time::sleep(POLL_EVERY).await;
                    match jobs::get(state, id).await {
                        Ok(view) if view != *last => return after(view),
                        Ok(_) => {}
                        // Gone (past its retention): nothing more to tell.
                        Err(ApiError::NotFound(_)) => return None,
                        // The store does not answer: try again.
                        Err(_) => {}
                    }
                },
            }
        }
    }
}

fn event_of(view: &JobView) -> Event {
    let name = if view.state.is_finished() {
        "end"
    } else {
        "progress"
    };
    Event::default()
        .event(name)
        .data(serde_json::to_string(view).unwrap_or_default())
}

/// Every change of the job as an event `progress` (its whole record as JSON), the
/// last one `end`; then the stream closes. A slow client sees the latest state
/// rather than every intermediate one. A job running on another replica is
/// followed through the store (read every second) until it ends.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs", operation_id = "job_events",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Server-sent events: `progress` with the job's record as JSON on each change, the last one `end`", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 503, description = "The metadata store is off or does not answer", body = ErrorBody),
    ))]
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let first = match jobs::events(&state, &id).await? {
        JobEvents::Live(rx) => Follow::Live { rx, first: true },
        JobEvents::Finished(view) => Follow::Once(view),
    };
    let stream = futures::stream::unfold(first, move |follow| {
        let (state, id) = (state.clone(), id.clone());
        async move { follow.next(&state, &id).await }
    })
    .boxed();
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[utoipa::path(post, path = "/predictall", tag = "jobs", operation_id = "old_predictall",
    request_body(content(
        (Object = "application/json"),
        (JobUploadForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Queued (the old service's batch scoring)", body = JobIdResponse),
        (status = 400, description = "A malformed or invalid job.json", body = ErrorBody),
        (status = 403, description = "A path outside the allowed data roots", body = ErrorBody),
        (status = 404, description = "modelkey is a training job whose model version is not served any more (a later version replaced it, or it was removed)", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 409, description = "modelkey is a training job that failed or was cancelled (it saved no model), or is still queued or running", body = ErrorBody),
        (status = 503, description = "Jobs need the metadata store, which is off or does not answer", body = ErrorBody),
    ))]
async fn predictall(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    request: Request,
) -> Result<Json<Value>, HttpError> {
    let caller = caller_of(caller);
    let id = match JobBody::read(&state, request).await? {
        JobBody::Json(job) => jobs::predictall(&state, job, &caller).await?,
        JobBody::Multipart(job, files) => {
            jobs::predictall_uploaded(&state, job, files, &caller).await?
        }
    };
    Ok(Json(json!({ "job_id": id })))
}

/// The old job.json as JSON, or in the `spec` part of `multipart/form-data` with
/// `inputCollection` `{"upload": "<part>"}`.
#[utoipa::path(post, path = "/train", tag = "jobs", operation_id = "old_train",
    request_body(content(
        (Object = "application/json"),
        (JobUploadForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Queued (the old service's training)", body = JobIdResponse),
        (status = 400, description = "A malformed or invalid job.json", body = ErrorBody),
        (status = 403, description = "A path outside the allowed data roots", body = ErrorBody),
        (status = 409, description = "Training into a model no training job made (its newest version has no training.json)", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 503, description = "Jobs need the metadata store, which is off or does not answer", body = ErrorBody),
    ))]
async fn train(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    request: Request,
) -> Result<Json<Value>, HttpError> {
    let caller = caller_of(caller);
    let id = match JobBody::read(&state, request).await? {
        JobBody::Json(job) => jobs::train(&state, job, &caller).await?,
        JobBody::Multipart(job, files) => jobs::train_uploaded(&state, job, files, &caller).await?,
    };
    Ok(Json(json!({ "job_id": id })))
}

#[utoipa::path(post, path = "/predict/", tag = "jobs", operation_id = "old_predict",
    request_body(content = Object, content_type = "application/json", description = "The old service's record and the training job whose model scores it"),
    responses(
        (status = 200, description = "The record's prediction", body = Object),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 404, description = "No such training job or model", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 409, description = "The training job has not finished", body = ErrorBody),
        (status = 503, description = "The metadata store is off or does not answer", body = ErrorBody),
    ))]
async fn old_predict(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let bytes = body(bytes, state.settings.max_request_bytes)?;
    let request: Value = parse_json(&bytes)?;
    Ok(Json(jobs::old_predict(&state, request).await?))
}

#[utoipa::path(get, path = "/training/status/{id}", tag = "jobs", operation_id = "old_training_status",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The old service's status and message", body = OldStatusResponse),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 503, description = "The metadata store is off or does not answer", body = ErrorBody),
    ))]
async fn old_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let (status, message) = jobs::old_status(&state, &id).await?;
    Ok(Json(json!({ "status": status, "message": message })))
}

/// The description's types for the answers built as JSON values above; never built.
#[allow(dead_code)]
mod schema {
    use serde_json::Value;
    use utoipa::ToSchema;

    /// A job spec in the `spec` part, and the files its sources name in other parts.
    #[derive(ToSchema)]
    pub struct JobUploadForm {
        /// The job spec as JSON.
        spec: String,
        /// A file part, named as the spec's source names it.
        #[schema(required = false, format = Binary, content_media_type = "application/octet-stream")]
        file: String,
    }

    #[derive(ToSchema)]
    pub struct JobIdResponse {
        job_id: String,
    }

    #[derive(ToSchema)]
    pub struct JobListResponse {
        /// The jobs' records.
        jobs: Vec<Value>,
        total: i64,
    }

    #[derive(ToSchema)]
    pub struct OldStatusResponse {
        status: String,
        message: String,
    }
}
use schema::{JobIdResponse, JobListResponse, JobUploadForm, OldStatusResponse};
