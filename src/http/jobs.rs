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
use axum::routing::{get, post, MethodRouter};
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
        .route("/v1/jobs", taking_files(post(submit)).get(list))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/predictall", taking_files(post(predictall)))
        .route("/predictall/", taking_files(post(predictall)))
        .route("/train", taking_files(post(train)))
        .route("/train/", taking_files(post(train)))
        .route("/training/status/{id}", get(old_status))
        .route("/predict/", post(old_predict))
}

/// A route whose bodies may be multipart with files up to `max_upload_bytes`: the
/// handler applies its own limits (`JobBody::read`) in place of the default body
/// limit, and an answer that comes before the body was read whole (a refusal past
/// its drain) says `Connection: close` (`body::close_unless_read_whole`).
fn taking_files(route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(
            super::body::close_unless_read_whole,
        ))
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
        (status = 400, description = "A malformed or invalid job spec (a path outside the data directory too)", body = ErrorBody),
        (status = 409, description = "A training job into a model no training job made (its newest version has no training.json), or a scoring job whose sink (the same file, or a table overwritten) is the sink of a job queued or running (the message names that job)", body = ErrorBody),
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

/// The least time between two `progress` events of one stream while the job's
/// state stays the same: a job of one-row batches changes its progress thousands
/// of times a second, and a client is served by the latest state at this pace.
/// A change of state (queued to running, the end) is sent at once.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Where a job's events stream is: following this server's live copy, or the
/// store, for a job that is not (or no longer) running here.
enum Follow {
    /// This server holds the job: its changes. `sent` is the view the last event
    /// showed (`None`: none sent yet), and when.
    Live {
        rx: tokio::sync::watch::Receiver<JobView>,
        sent: Option<(Box<JobView>, tokio::time::Instant)>,
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
    /// The next event; `None` once the job's end was sent. `self` moves on, and
    /// keeps what it knows of the job while it waits (see [`Follow::latest`]).
    async fn next(&mut self, state: &AppState, id: &str) -> Option<Event> {
        loop {
            match self {
                Follow::Done => return None,
                Follow::Once(view) => {
                    let view = (**view).clone();
                    return Some(self.after(view));
                }
                Follow::Live { rx, sent } => {
                    let view = match sent {
                        None => rx.borrow_and_update().clone(),
                        Some((last, at)) => match next_live(rx, last.state, *at).await {
                            Some(view) => view,
                            None => {
                                // A closed channel means the job left this server's
                                // memory (its last view was seen): ended (that view
                                // is the end), or taken by another server (the store
                                // goes on from there).
                                let view = rx.borrow().clone();
                                if view.state.is_finished() || view != **last {
                                    return Some(self.after(view));
                                }
                                let last = last.clone();
                                *self = Follow::Store { last };
                                continue;
                            }
                        },
                    };
                    let event = event_of(&view);
                    if view.state.is_finished() {
                        *self = Follow::Done;
                    } else {
                        *sent = Some((Box::new(view), tokio::time::Instant::now()));
                    }
                    return Some(event);
                }
                Follow::Store { last } => loop {
                    tokio::time::sleep(POLL_EVERY).await;
                    match jobs::get(state, id).await {
                        Ok(view) if view != **last => return Some(self.after(view)),
                        Ok(_) => {}
                        // Gone (past its retention): nothing more to tell.
                        Err(ApiError::NotFound(_)) => {
                            *self = Follow::Done;
                            return None;
                        }
                        // The store does not answer: try again.
                        Err(_) => {}
                    }
                },
            }
        }
    }

    /// The event of `view`, read from the store or left by a closed channel; the
    /// stream goes on through the store unless the job has ended.
    fn after(&mut self, view: JobView) -> Event {
        let event = event_of(&view);
        *self = if view.state.is_finished() {
            Follow::Done
        } else {
            Follow::Store {
                last: Box::new(view),
            }
        };
        event
    }

    /// The job as this stream knows it last, for the event that ends it at
    /// shutdown.
    fn latest(&self) -> Option<JobView> {
        match self {
            Follow::Live { rx, .. } => Some(rx.borrow().clone()),
            Follow::Once(view) | Follow::Store { last: view } => Some((**view).clone()),
            Follow::Done => None,
        }
    }
}

/// The next view of a live job worth an event, after one of state `sent_state`
/// was sent at `sent_at`: a change of state at once, else the latest progress
/// once [`PROGRESS_EVERY`] has passed since `sent_at` (the changes meanwhile are
/// folded into it). `None` when the channel closed first.
async fn next_live(
    rx: &mut tokio::sync::watch::Receiver<JobView>,
    sent_state: crate::jobs::JobState,
    sent_at: tokio::time::Instant,
) -> Option<JobView> {
    let due = tokio::time::sleep_until(sent_at + PROGRESS_EVERY);
    tokio::pin!(due);
    let mut pending = false;
    loop {
        tokio::select! {
            changed = rx.changed() => {
                changed.ok()?;
                let view = rx.borrow_and_update().clone();
                if view.state != sent_state || due.is_elapsed() {
                    return Some(view);
                }
                pending = true;
            }
            () = &mut due, if pending => return Some(rx.borrow_and_update().clone()),
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

/// The event that ends a stream when the server shuts down before the job ended:
/// `shutdown`, with the job as last seen.
fn shutdown_event(view: Option<JobView>) -> Event {
    Event::default().event("shutdown").data(
        json!({
            "message": "the server is shutting down: this stream ends here; the job \
                        (if not ended) goes on after a restart or on another replica: \
                        follow it there",
            "job": view,
        })
        .to_string(),
    )
}

/// Every change of the job as an event `progress` (its whole record as JSON, at
/// most one each [`PROGRESS_EVERY`] while its state stays the same: the latest),
/// the last one `end`; then the stream closes. A slow client sees the latest
/// state rather than every intermediate one. A job running on another replica is
/// followed through the store (read every second) until it ends. When the server
/// shuts down, its running jobs end first (`end`, interrupted); any other stream
/// ends with `shutdown`, so that none holds the drain.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs", operation_id = "job_events",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Server-sent events: `progress` with the job's record as JSON on each change (at most one every 100 ms while its state stays the same, the latest; a change of state at once), the last one `end`; or, when the server shuts down before the job ended, `shutdown` with `{\"message\", \"job\"}`", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 503, description = "The metadata store is off or does not answer", body = ErrorBody),
    ))]
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let (first, stopped) = jobs::events(&state, &id).await?;
    let first = match first {
        JobEvents::Live(rx) => Follow::Live { rx, sent: None },
        JobEvents::Finished(view) => Follow::Once(view),
    };
    let stream = futures::stream::unfold(first, move |mut follow| {
        let (state, id, stopped) = (state.clone(), id.clone(), stopped.clone());
        async move {
            // The job's own events first: a running job's end (interrupted at
            // shutdown) comes before the runner says it has stopped.
            let next = tokio::select! {
                biased;
                next = follow.next(&state, &id) => Some(next),
                () = stopped.cancelled() => None,
            };
            match next {
                Some(event) => event.map(|e| (Ok::<_, Infallible>(e), follow)),
                None => {
                    let last = follow.latest();
                    Some((Ok(shutdown_event(last)), Follow::Done))
                }
            }
        }
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
        (status = 400, description = "A malformed or invalid job.json (a path outside the data directory too; a version that is not the one the modelkey's training job saved)", body = ErrorBody),
        (status = 404, description = "modelkey is a training job whose model version is not served any more (a later version replaced it, or it was removed)", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 409, description = "modelkey is a training job that failed or was cancelled (it saved no model), or is still queued or running; or the output is the sink of a job queued or running (the message names that job)", body = ErrorBody),
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
        (status = 400, description = "A malformed or invalid job.json (a path outside the data directory too; two fields that set one thing, as model and modelName, with different values)", body = ErrorBody),
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
