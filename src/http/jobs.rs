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

async fn cancel(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, HttpError> {
    Ok(Json(jobs::cancel(&state, &id, &caller_of(caller)).await?))
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
/// rather than every intermediate one.
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let stream = match jobs::events(&state, &id).await? {
        JobEvents::Finished(view) => {
            futures::stream::once(async move { Ok::<_, Infallible>(event_of(&view)) }).boxed()
        }
        JobEvents::Live(rx) => {
            futures::stream::unfold((rx, true, false), |(mut rx, first, done)| async move {
                if done {
                    return None;
                }
                // After the first event, wait for the next change. A closed channel
                // means the job ended and left memory: its last state is the end.
                if !first && rx.changed().await.is_err() {
                    let view = rx.borrow().clone();
                    return Some((Ok::<_, Infallible>(event_of(&view)), (rx, false, true)));
                }
                let view = rx.borrow_and_update().clone();
                let finished = view.state.is_finished();
                Some((Ok(event_of(&view)), (rx, false, finished)))
            })
            .boxed()
        }
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

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

async fn old_predict(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let bytes = body(bytes, state.settings.max_request_bytes)?;
    let request: Value = parse_json(&bytes)?;
    Ok(Json(jobs::old_predict(&state, request).await?))
}

async fn old_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let (status, message) = jobs::old_status(&state, &id).await?;
    Ok(Json(json!({ "status": status, "message": message })))
}
