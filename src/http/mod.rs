//! REST adapters: decode the wire format, call an `api` operation, encode the
//! answer. Nothing else happens here.
//!
//! * `tfs`: TF Serving REST (`/v1/models/...`)
//! * `v2`: KServe V2 / Open Inference Protocol REST (`/v2/...`), with the binary
//!   tensor data extension
//! * `manage`: the management API (upload, reload, status, deploy, stop, delete),
//!   the V2 repository extension and `/description`
//! * `simple`: the simple JSON prediction API (`/predict`)
//! * `jobs`: batch jobs (`/v1/jobs...`, the old `/predictall/`, `/training/status/`)
//! * `/metrics`, `/healthz`
//! * `openapi`: the OpenAPI description (`/openapi.json`, `/swagger.yaml`) and the
//!   docs page (`/docs`)
//! * `auth`: the access layer in front of every route (tokens, loopback-only
//!   management, cross-site refusal)

mod auth;
pub mod fast;
pub mod job_uploads;
mod jobs;
mod manage;
pub mod openapi;
mod simple;
mod store;
mod tfs;
mod upload;
mod v2;

pub(crate) use auth::sees_callers;
pub(crate) use simple::model_of_body as simple_model_of_body;
pub(crate) use v2::{decode_tensors as decode_v2_tensors, InputBody as V2TensorBody};

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::api::{ApiError, Protocol, ServerState};

pub type AppState = Arc<ServerState>;

/// The whole REST API. Tests call it with `oneshot` or serve it on port 0.
pub fn router(state: AppState) -> Router {
    let mut routes = Router::new();
    if let Some(path) = state.settings.metrics_path.as_deref() {
        // Checked at start (`check_metrics_path`); checked again here because axum
        // panics on a route that overlaps another: a path that slipped past is
        // left unserved, never a panic.
        match check_metrics_path(path) {
            Ok(()) if path != "/metrics" => routes = routes.route(path, get(metrics)),
            Ok(()) => {}
            Err(e) => tracing::error!("the metrics' second path is not served: {e}"),
        }
    }
    let routes = routes
        .merge(tfs::routes())
        .merge(v2::routes())
        .merge(manage::routes(state.settings.max_upload_bytes))
        .merge(simple::routes())
        .merge(jobs::routes())
        .merge(crate::workers::routes())
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .merge(openapi::routes(&state.settings))
        // The web console (and `/`, which redirects to it): its pages and fragments
        // are HTML, errors included; `json_errors` passes HTML answers untouched.
        .merge(crate::console::routes())
        .layer(DefaultBodyLimit::max(state.settings.max_request_bytes))
        // Every inference request's outcome in metrics, once (`count_inference`);
        // inside the forwarding, as a forwarded request is the worker's to count.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            inference_outcomes,
        ))
        // A deployed model's requests go to its worker (issue 14).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::workers::forward::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body_headers,
        ));
    behind_access(routes, state)
}

/// `routes` behind what every port's routes are behind: the head checks, the
/// access layer and JSON errors.
fn behind_access(routes: Router<AppState>, state: AppState) -> Router {
    routes
        // Inside the access layer (whose refusals are JSON already) and around every
        // route, the default fallback (unknown path) and each route's wrong-method
        // answer, so that no error leaves without the documented JSON body.
        .layer(axum::middleware::from_fn(json_errors))
        // Every route (unknown ones too) is authorised first...
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        // ...once the head is one the access layer can read unambiguously.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            head_checks,
        ))
        .with_state(state)
}

/// The registry alone (`/registry/services`, the scoring plans), for its own
/// listener (`--registry-addr`): behind the same access layer, head checks and
/// JSON errors as the main port, so a token, the loopback rule for management
/// and every documented error shape hold there too.
pub fn registry_router(state: AppState) -> Router {
    let routes =
        crate::workers::routes().layer(DefaultBodyLimit::max(state.settings.max_request_bytes));
    behind_access(routes, state)
}

/// The first path segments of the server's own routes (`""` is `/` itself, the
/// console's redirect). A metrics path (TF Serving's `--monitoring_config_file`,
/// a worker's `--metrics-path`) under one of them could clash with a route, or be
/// captured by one (`/v1/models/{*rest}`): it is refused. The test at the end of
/// this file checks the list against the routers' source.
pub const ROUTE_PREFIXES: &[&str] = &[
    "",
    "console",
    "delete_model",
    "deploy",
    "description",
    "docs",
    "healthz",
    "metrics",
    "models",
    "openapi.json",
    "predict",
    "predictall",
    "registry",
    "reload_model",
    "stop_deployment",
    "swagger.yaml",
    "train",
    "training",
    "upload_model",
    "v1",
    "v2",
];

/// Whether `path` can be the metrics' second path: an absolute path of plain
/// segments (letters, digits, `-`, `_`, `.`, `~`; not `.` or `..`), under none of
/// the server's routes ([`ROUTE_PREFIXES`]); `/metrics` itself is allowed (it is
/// the same answer). The error says why not.
pub fn check_metrics_path(path: &str) -> Result<(), String> {
    if path == "/metrics" {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("metrics path {path:?} must start with '/'"));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let plain = |s: &&str| {
        !s.is_empty()
            && *s != "."
            && *s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    };
    if path.len() > 1024 || !segments.iter().all(plain) {
        return Err(format!(
            "metrics path {path:?} must be an absolute URL path of plain segments \
             (letters, digits, '-', '_', '.', '~'; no empty, '.' or '..' segment)"
        ));
    }
    if ROUTE_PREFIXES.contains(&segments[0]) {
        return Err(format!(
            "metrics path {path:?} is under /{}, which the server's own routes use: \
             choose another (TF Serving's default is /monitoring/prometheus/metrics)",
            segments[0]
        ));
    }
    Ok(())
}

/// `--metrics-path` (a worker's): [`check_metrics_path`], as clap's value parser.
pub fn metrics_path_arg(path: &str) -> Result<String, String> {
    check_metrics_path(path).map(|()| path.to_string())
}

/// A version as a URL path gives it: decimal digits (leading zeros allowed, as TF
/// Serving's `\d+`), not 0, no sign or spaces.
pub fn path_version(v: &str) -> Result<u64, HttpError> {
    crate::repository::parse_requested_version(v).ok_or_else(|| {
        HttpError(ApiError::InvalidArgument(format!(
            "invalid version {v:?}: must be a positive integer"
        )))
    })
}

/// Whether the route at `path` takes `multipart/form-data` bodies (files): a model
/// upload, a job with its files. Every other management route reads JSON, and a
/// multipart body there is refused (`auth::cross_site_refusal`).
fn takes_multipart(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/upload_model" | "/v1/jobs" | "/predictall" | "/train"
    )
}

/// The most bytes a request body to `path` may hold (the `DefaultBodyLimit` of
/// its route).
fn body_limit(settings: &crate::settings::Settings, path: &str) -> u64 {
    match path.trim_end_matches('/') {
        "/upload_model" => upload::body_limit(settings.max_upload_bytes),
        // JSON or multipart with files; the handler tells which.
        "/v1/jobs" | "/predictall" | "/train" => job_uploads::multipart_limit(settings),
        _ => settings.max_request_bytes as u64,
    }
}

/// Checks a request's head before anything else reads it (the access layer
/// included), answering what RFC 9112 requires:
/// * more than one `Host` header is a 400: which one names the server (and so
///   whether the request is a local one) would be a guess;
/// * a `Transfer-Encoding` with a coding other than `chunked` (`gzip, chunked`)
///   is a 501: hyper decodes the chunks and would leave the coding unread, so the
///   body would be read as something it is not.
async fn head_checks(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let refusal = if headers.get_all(header::HOST).iter().nth(1).is_some() {
        Some((
            StatusCode::BAD_REQUEST,
            ApiError::InvalidArgument(String::new()).kind(),
            "the request has more than one Host header".to_string(),
        ))
    } else {
        unknown_transfer_coding(headers).map(|coding| {
            (
                StatusCode::NOT_IMPLEMENTED,
                NOT_IMPLEMENTED_OUTCOME,
                format!(
                    "transfer coding {coding:?} is not supported: send the body as it is, \
                     or chunked"
                ),
            )
        })
    };
    match refusal {
        Some((status, outcome, message)) => {
            refused(&state, &request, outcome, Instant::now());
            (status, Json(json!({ "error": message }))).into_response()
        }
        None => next.run(request).await,
    }
}

/// The first transfer coding of the request's `Transfer-Encoding` header lines
/// that is not `chunked`, the only one the server decodes.
fn unknown_transfer_coding(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|coding| {
            coding
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii()
        })
        .find(|coding| !coding.eq_ignore_ascii_case(b"chunked"))
        .map(|coding| String::from_utf8_lossy(coding).into_owned())
}

/// The outcome in `ferroserve_requests_total` of a request refused for its
/// `Content-Encoding` (415), which no [`ApiError`] stands for.
pub const UNSUPPORTED_MEDIA_TYPE_OUTCOME: &str = "unsupported_media_type";
/// The outcome of a request refused for its transfer coding (501).
pub const NOT_IMPLEMENTED_OUTCOME: &str = "not_implemented";

/// Checks a request's body headers before the body is read:
/// * a body declared larger than its route takes, from a client that waits to be
///   told to send it (`Expect: 100-continue`, as curl does for large bodies), is a
///   413 before any of it is sent (other clients' bodies are read up to the limit
///   first: an answer before they have sent it could be lost in a reset);
/// * a body sent with a `Content-Encoding` (gzip, say) is a 415: the server does
///   not decompress bodies, and reading compressed bytes as JSON or tensors would
///   give a misleading error, or a wrong answer for binary tensors. Every
///   `Content-Encoding` line counts, and a body is any that HTTP/1 declares (a
///   length or chunks) or that an HTTP/2 stream has not ended before (with or
///   without a `content-length`).
///
/// An inference request refused here is counted in metrics as
/// [`count_inference`] counts the others.
async fn body_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let headers = request.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let waits = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if let (true, Some(declared)) = (waits, declared) {
        let limit = body_limit(&state.settings, request.uri().path());
        if declared > limit {
            let e = ApiError::PayloadTooLarge(format!(
                "request body of {declared} bytes is larger than the limit of {limit} bytes"
            ));
            refused(&state, &request, e.kind(), started);
            return HttpError(e).into_response();
        }
    }
    let has_body = match declared {
        Some(n) => n > 0,
        None => !http_body::Body::is_end_stream(request.body()),
    };
    let encoded = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|e| !e.trim_ascii().eq_ignore_ascii_case(b"identity"));
    if has_body && encoded {
        let shown = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        refused(&state, &request, UNSUPPORTED_MEDIA_TYPE_OUTCOME, started);
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(json!({ "error": format!(
                "request bodies are not decompressed: send it without Content-Encoding \
                 (not {shown:?})"
            ) })),
        )
            .into_response();
    }
    next.run(request).await
}

/// Where an inference route's model name is (see [`inference_route`]).
enum NamedModel<'a> {
    /// In the path, percent-decoded as the route's extractor decodes it (borrowed
    /// from the path unless it had escapes).
    Path(Cow<'a, str>),
    /// In the body (`POST /predict`'s `model_id`).
    Body,
}

/// The protocol and model of a request to an inference route, whose every answer
/// is counted in `ferroserve_requests_total` ([`count_inference`]): TF Serving's
/// `:predict`, `:classify` and `:regress`, V2's `infer`, the simple API's
/// `/predict` routes. `None` for every other request. Allocates nothing for a
/// path without percent-escapes.
fn inference_route<'a>(method: &Method, path: &'a str) -> Option<(Protocol, NamedModel<'a>)> {
    let decoded = |s: &'a str| percent_encoding::percent_decode_str(s).decode_utf8_lossy();
    let post = method == Method::POST;
    if let Some(rest) = path.strip_prefix("/v1/models/") {
        // As `tfs::parse_path` reads the decoded rest: the verb after the last
        // colon, the model the first segment before it.
        fn model_of(rest: &str) -> Option<&str> {
            let (before, verb) = rest.rsplit_once(':')?;
            let model = before.split('/').next().filter(|m| !m.is_empty())?;
            matches!(verb, "predict" | "classify" | "regress").then_some(model)
        }
        let model = match decoded(rest) {
            Cow::Borrowed(rest) => Cow::Borrowed(model_of(rest)?),
            Cow::Owned(rest) => Cow::Owned(model_of(&rest)?.to_string()),
        };
        return post.then_some((Protocol::TfServingRest, NamedModel::Path(model)));
    }
    let mut segments = path.strip_prefix('/')?.split('/');
    let segments: [Option<&str>; 7] = std::array::from_fn(|_| segments.next());
    let named = |m: &&str| !m.is_empty();
    let get = method == Method::GET || method == Method::HEAD;
    match segments {
        [Some("v2"), Some("models"), Some(m), Some("infer"), None, ..]
        | [Some("v2"), Some("models"), Some(m), Some("versions"), Some(_), Some("infer"), None]
            if post && named(&m) =>
        {
            Some((Protocol::V2Rest, NamedModel::Path(decoded(m))))
        }
        [Some("predict"), None, ..] if post => Some((Protocol::SimpleRest, NamedModel::Body)),
        [Some("predict"), Some(m), Some("infer"), None, ..] if post && named(&m) => {
            Some((Protocol::SimpleRest, NamedModel::Path(decoded(m))))
        }
        [Some("predict"), Some(m), None, ..] if (post || get) && named(&m) => {
            Some((Protocol::SimpleRest, NamedModel::Path(decoded(m))))
        }
        _ => None,
    }
}

/// Counts `request` in metrics if it is an inference request refused by the layer
/// that calls this (see [`body_headers`]), under its path's model.
fn refused(state: &AppState, request: &Request, outcome: &'static str, started: Instant) {
    if let Some((protocol, named)) = inference_route(request.method(), request.uri().path()) {
        let model = match &named {
            NamedModel::Path(m) => Some(m.as_ref()),
            NamedModel::Body => None,
        };
        crate::metrics::record_refused_request(
            &state.manager,
            model,
            protocol.as_str(),
            outcome,
            started.elapsed(),
        );
    }
}

/// The router's side of [`count_inference`].
async fn inference_outcomes(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    count_inference(&state, request, |request| next.run(request)).await
}

/// Answers `request` with `answer` and, for an inference request that `answer`
/// refused before `api::predict` saw it (malformed JSON, a bad version in the
/// path, a body over the limit or that stopped arriving), records its outcome in
/// `ferroserve_requests_total` and `ferroserve_request_duration_seconds`: the
/// error its answer was made from, under the model it names if that model is
/// served here (else `model=""`). A request `api::predict` saw is recorded there
/// and never again here ([`crate::metrics::RequestTally`]). Used by the router
/// (inside the forwarding: a worker counts what it answers) and by the predict
/// fast path (`fast::serve`).
///
/// `POST /predict` names its model in the body: it is read here (within the same
/// limit, with the same errors, as the handler reads it) so that the model can be
/// told when the handler refuses the request.
pub(crate) async fn count_inference<F, Fut>(
    state: &AppState,
    request: Request,
    answer: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    // Cloning the URI shares its bytes; the route's model borrows from it.
    let uri = request.uri().clone();
    let Some((protocol, named)) = inference_route(request.method(), uri.path()) else {
        return answer(request).await;
    };
    let started = Instant::now();
    let (request, body) = match named {
        NamedModel::Path(_) => (request, None),
        NamedModel::Body => {
            let (parts, body) = request.into_parts();
            let limit = state.settings.max_request_bytes;
            let bytes = match axum::body::to_bytes(body, limit).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    let e = body_read_error(&e, limit);
                    let outcome = e.kind();
                    let protocol = protocol.as_str();
                    let elapsed = started.elapsed();
                    crate::metrics::record_refused_request(
                        &state.manager,
                        None,
                        protocol,
                        outcome,
                        elapsed,
                    );
                    return HttpError(e).into_response();
                }
            };
            let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
            let request = Request::from_parts(parts, Body::from(bytes.clone()));
            (request, Some((content_type, bytes)))
        }
    };
    let (response, tally) = crate::metrics::tally_request(answer(request)).await;
    let status = response.status();
    if tally.recorded() || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let outcome = tally.error().unwrap_or_else(|| outcome_of_status(status));
    let model = match (tally.model(), named, body) {
        (Some(model), ..) => Some(model),
        (None, NamedModel::Path(model), _) => Some(model.into_owned()),
        (None, NamedModel::Body, Some((content_type, bytes))) => {
            let mut headers = axum::http::HeaderMap::new();
            if let Some(content_type) = content_type {
                headers.insert(header::CONTENT_TYPE, content_type);
            }
            simple::model_of_body(&headers, &bytes).await
        }
        (None, NamedModel::Body, None) => None,
    };
    crate::metrics::record_refused_request(
        &state.manager,
        model.as_deref(),
        protocol.as_str(),
        outcome,
        started.elapsed(),
    );
    response
}

/// The outcome of an error answer that no [`HttpError`] made (an extractor's
/// rejection), from its status.
fn outcome_of_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => UNSUPPORTED_MEDIA_TYPE_OUTCOME,
        StatusCode::NOT_IMPLEMENTED => NOT_IMPLEMENTED_OUTCOME,
        _ => error_of_status(status, String::new()).kind(),
    }
}

/// An [`ApiError`] as an HTTP response: `{"error": "..."}` with the status TF
/// Serving and KServe use for it.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> HttpError {
        HttpError(e)
    }
}

pub fn status_code(e: &ApiError) -> StatusCode {
    match e {
        ApiError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        ApiError::Conflict(_) => StatusCode::CONFLICT,
        ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
        ApiError::Unavailable(_) | ApiError::OutOfMemory(_) => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
        ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The error an HTTP error answer of a ferroserve (a worker's, to the server that
/// forwarded to it) was made from: [`status_code`] read back. Any other status is
/// an internal error that names it.
pub fn error_of_status(status: StatusCode, message: String) -> ApiError {
    match status {
        StatusCode::BAD_REQUEST => ApiError::InvalidArgument(message),
        StatusCode::NOT_FOUND => ApiError::NotFound(message),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ApiError::PermissionDenied(message),
        StatusCode::CONFLICT => ApiError::Conflict(message),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(message),
        StatusCode::TOO_MANY_REQUESTS => ApiError::ResourceExhausted(message),
        StatusCode::SERVICE_UNAVAILABLE if message.starts_with(crate::api::OUT_OF_MEMORY) => {
            ApiError::OutOfMemory(message)
        }
        StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(message),
        StatusCode::GATEWAY_TIMEOUT => ApiError::DeadlineExceeded(message),
        StatusCode::REQUEST_TIMEOUT => ApiError::RequestTimeout(message),
        _ => ApiError::Internal(format!("the model's worker answered {status}: {message}")),
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        // An inference request's outcome is this error's kind (`count_inference`).
        crate::metrics::note_request_error(self.0.kind());
        let status = status_code(&self.0);
        let mut response = (status, Json(json!({ "error": self.0.to_string() }))).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The most of a non-JSON error body that is read to quote it in the JSON error.
const QUOTED_ERROR_BODY_LIMIT: usize = 4096;

/// Makes every error response `{"error": "..."}`: axum answers an unknown path (404),
/// a known path with the wrong method (405, `Allow` header kept) and a malformed path
/// or query string (extractor rejections, 400) with an empty or plain-text body. Errors
/// that are JSON already (every [`HttpError`]) pass untouched, and so do the web
/// console's HTML error pages (`crate::console`), which are for people.
async fn json_errors(request: Request, next: Next) -> Response {
    // Kept for the message of an error; cloning the URI shares its bytes, so the
    // usual answer pays no allocation for it.
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let is_json = content_type.is_some_and(|v| v.starts_with("application/json"));
    let is_html = content_type.is_some_and(|v| v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json || is_html {
        return response;
    }
    let path = uri.path();
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, QUOTED_ERROR_BODY_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        StatusCode::NOT_FOUND if text.is_empty() => format!("no such endpoint: {method} {path}"),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(|v| format!(" (allowed: {v})"))
                .unwrap_or_default();
            format!("method {method} is not allowed on {path}{allowed}")
        }
        _ if !text.is_empty() => text,
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    let body = if method == Method::HEAD {
        Vec::new()
    } else {
        serde_json::to_vec(&json!({ "error": message })).unwrap_or_default()
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Turns the body extractor's failure into our error: over the size limit is 413, a
/// body that stopped arriving 408.
pub fn body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, HttpError> {
    body.map_err(|rejection| {
        if crate::connections::is_body_read_timeout(&rejection) {
            HttpError(ApiError::RequestTimeout(rejection_message(&rejection)))
        } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError(ApiError::PayloadTooLarge(format!(
                "request body is larger than the limit of {limit} bytes"
            )))
        } else {
            HttpError(ApiError::InvalidArgument(format!(
                "cannot read request body: {rejection}"
            )))
        }
    })
}

/// Reads a whole request body as the chunks it arrived in, without copying them
/// into one buffer, under the same limit and with the same errors as the `Bytes`
/// extractor through [`body`]: 413 over the limit (the router's `DefaultBodyLimit`,
/// or axum's default where the request skipped the router), 408 when it stopped
/// arriving, 400 otherwise.
pub async fn body_chunks(request: Request, limit: usize) -> Result<impl bytes::Buf, HttpError> {
    use axum::RequestExt;
    use http_body_util::BodyExt;
    match request.with_limited_body().into_body().collect().await {
        Ok(collected) => Ok(collected.aggregate()),
        Err(error) => Err(HttpError(body_read_error(&error, limit))),
    }
}

/// Most of a refused request's body read and discarded before its answer
/// ([`answer_unread`]): 16 MiB, what an upload's refusal drains too.
const REFUSED_DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// The answer to a request refused before its body was read (a full queue's 429),
/// made so that an HTTP/1 client reads it: a client that does not wait for `100
/// Continue` sends its whole body first, and an answer before it has would be lost
/// in the connection's reset (a broken pipe, no 429, no `Retry-After`). So the
/// body is read and discarded first, up to [`REFUSED_DRAIN_LIMIT`] bytes (within
/// the connection's body read timeout); past that, or when it cannot be read, the
/// answer says `Connection: close`, so a keep-alive client does not send its next
/// request on a connection about to close. A client that waits for `100 Continue`
/// sent nothing, and HTTP/2 ends only this request's stream: both are answered
/// at once.
pub(crate) async fn answer_unread(request: Request, refusal: ApiError) -> Response {
    use http_body_util::BodyExt;
    let waits = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let http1 = request.version() < axum::http::Version::HTTP_2;
    let mut answer = HttpError(refusal).into_response();
    if waits || !http1 {
        return answer;
    }
    let mut body = request.into_body();
    let mut drained = 0usize;
    let read_whole = loop {
        match body.frame().await {
            None => break true,
            Some(Ok(frame)) => {
                drained += frame.data_ref().map_or(0, |d| d.len());
                if drained > REFUSED_DRAIN_LIMIT {
                    break false;
                }
            }
            Some(Err(_)) => break false,
        }
    };
    if !read_whole {
        answer
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    answer
}

/// A request body that could not be read, as [`body_chunks`] answers it: 408 when
/// it stopped arriving, 413 past `limit` (a `http_body_util::Limited`'s), else 400.
pub(crate) fn body_read_error(error: &(dyn std::error::Error + 'static), limit: usize) -> ApiError {
    if crate::connections::is_body_read_timeout(error) {
        ApiError::RequestTimeout(rejection_message(error))
    } else if is_length_limit(error) {
        ApiError::PayloadTooLarge(format!(
            "request body is larger than the limit of {limit} bytes"
        ))
    } else {
        ApiError::InvalidArgument(format!("cannot read request body: {error}"))
    }
}

/// Whether `error` or one of its sources is the body limit's.
fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut error = Some(error);
    while let Some(e) = error {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        error = e.source();
    }
    false
}

/// The message of the innermost error of `error` (a body read timeout says how long).
pub fn rejection_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

/// Adds `x-ferroserve-cache: hit|miss` to the answer of a cache-enabled model
/// (`cache` is `None` for the others, which get no header).
pub fn with_cache_header(
    mut response: Response,
    cache: Option<crate::cache::CacheStatus>,
) -> Response {
    if let Some(status) = cache {
        response.headers_mut().insert(
            crate::cache::CacheStatus::HEADER,
            HeaderValue::from_static(status.as_str()),
        );
    }
    response
}

/// Parses a JSON body with a clear 400 on malformed JSON.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    serde_json::from_slice(bytes).map_err(|e| {
        HttpError(ApiError::InvalidArgument(format!(
            "malformed JSON body: {e}"
        )))
    })
}

/// Prometheus metrics (also served at the configured metrics path).
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(cache) = &state.cache {
        cache.refresh_gauges().await;
    }
    // The deployments' gauges are made at each scrape (a stopped one has none).
    let workers = state.workers.get().map(|w| w.gauges_exposition());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render_with(&state.manager, workers),
    )
}

/// Liveness and readiness in one answer (open: no token needed).
#[utoipa::path(get, path = "/healthz", tag = "server",
    responses(
        (status = 200, description = "Live and ready", body = openapi::Health),
        (status = 503, description = "Live, not ready yet (initial load) or shutting down", body = openapi::Health),
    ))]
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "live": true, "ready": ready })))
}

/// A request's `k` and `threshold` (V2 `parameters`, TF Serving REST's extra
/// fields) as backend options: `k` an integer (1 or more, or -1), `threshold` a
/// finite number.
pub fn predict_options(
    k: Option<&serde_json::Value>,
    threshold: Option<&serde_json::Value>,
) -> Result<crate::backends::PredictOptions, HttpError> {
    let invalid = |m: String| HttpError(ApiError::InvalidArgument(m));
    let k = match k {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(k) if k == -1 || (1..=i64::from(i32::MAX)).contains(&k) => Some(k as i32),
            _ => {
                return Err(invalid(format!(
                    "k must be an integer of 1 or more, or -1 for every label; got {v}"
                )))
            }
        },
    };
    let threshold = match threshold {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(t) if t.is_finite() => Some(t as f32),
            _ => return Err(invalid(format!("threshold must be a number; got {v}"))),
        },
    };
    Ok(crate::backends::PredictOptions { k, threshold })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_paths_that_a_route_answers_or_that_are_not_plain_are_refused() {
        for ok in [
            "/metrics",
            "/monitoring/prometheus/metrics",
            "/prom",
            "/a.b/c-d_e~f",
        ] {
            assert_eq!(check_metrics_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/",
            "/healthz",
            "/v2",
            "/v2/health/ready",
            "/v2/models/:x",
            "/v2/models/{x}",
            "/v1/models/m",
            "/v1/jobs",
            "/docs",
            "/openapi.json",
            "/console",
            "/metrics/x",
            "x",
            "",
            "//x",
            "/x/",
            "/x/../y",
            "/x/./y",
            "/x y",
            "/x?y",
            "/x#y",
            "/x/{*rest}",
            "/x/*y",
            "/:x",
            "/caf\u{e9}",
        ] {
            assert!(check_metrics_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Every route the routers' source adds with a literal path starts with a segment
    /// of [`ROUTE_PREFIXES`], so no metrics path can clash with a new route.
    #[test]
    fn route_prefixes_cover_every_route_in_the_source() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut dirs = vec![
            root.join("src/http"),
            root.join("src/console"),
            root.join("src/workers"),
        ];
        let mut found = 0;
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, _) in text.match_indices(".route(") {
                    let after = text[at + ".route(".len()..].trim_start();
                    let Some(literal) = after.strip_prefix("\"/") else {
                        continue;
                    };
                    let route = &literal[..literal.find('"').unwrap()];
                    let first = route.split('/').next().unwrap();
                    found += 1;
                    assert!(
                        ROUTE_PREFIXES.contains(&first),
                        "{}: route /{route} is under no ROUTE_PREFIXES entry",
                        path.display()
                    );
                }
            }
        }
        assert!(found > 20, "only {found} routes found");
    }

    #[test]
    fn inference_routes_are_told_with_their_protocol_and_model() {
        let model = |method: Method, path: &str| {
            inference_route(&method, path).map(|(protocol, named)| {
                let model = match named {
                    NamedModel::Path(m) => Some(m.into_owned()),
                    NamedModel::Body => None,
                };
                (protocol.as_str(), model)
            })
        };
        let post = |path: &str| model(Method::POST, path);
        let path = |protocol: &'static str, m: &str| Some((protocol, Some(m.to_string())));
        assert_eq!(post("/v1/models/m:predict"), path("tfs_rest", "m"));
        assert_eq!(
            post("/v1/models/m/versions/2:classify"),
            path("tfs_rest", "m")
        );
        assert_eq!(post("/v1/models/m/labels/x:regress"), path("tfs_rest", "m"));
        assert_eq!(post("/v1/models/a%3Ab:predict"), path("tfs_rest", "a:b"));
        assert_eq!(post("/v1/models/m%3Apredict"), path("tfs_rest", "m"));
        assert_eq!(post("/v2/models/m/infer"), path("v2_rest", "m"));
        assert_eq!(post("/v2/models/m/versions/x/infer"), path("v2_rest", "m"));
        assert_eq!(
            post("/v2/models/caf%C3%A9/infer"),
            path("v2_rest", "caf\u{e9}")
        );
        assert_eq!(post("/predict"), Some(("simple_rest", None)));
        assert_eq!(post("/predict/m"), path("simple_rest", "m"));
        assert_eq!(post("/predict/m/infer"), path("simple_rest", "m"));
        assert_eq!(model(Method::GET, "/predict/m"), path("simple_rest", "m"));
        for other in [
            "/v1/models/m",
            "/v1/models/m:history",
            "/v1/models/:predict",
            "/v2/models/m",
            "/v2/models//infer",
            "/v2/models/m/infer/x",
            "/v2/repository/index",
            "/predict/",
            "/predict/m/x",
            "/predictall",
            "/upload_model",
        ] {
            assert_eq!(post(other), None, "{other}");
        }
        assert_eq!(model(Method::GET, "/v1/models/m:predict"), None);
        assert_eq!(model(Method::GET, "/predict"), None);
        assert_eq!(model(Method::GET, "/v2/models/m/infer"), None);
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_found_on_every_line() {
        let coding = |lines: &[&str]| {
            let mut headers = axum::http::HeaderMap::new();
            for line in lines {
                headers.append(header::TRANSFER_ENCODING, line.parse().unwrap());
            }
            unknown_transfer_coding(&headers)
        };
        assert_eq!(coding(&[]), None);
        assert_eq!(coding(&["chunked"]), None);
        assert_eq!(coding(&["Chunked"]), None);
        assert_eq!(coding(&["gzip, chunked"]), Some("gzip".into()));
        assert_eq!(
            coding(&["chunked", "x-custom;q=1"]),
            Some("x-custom".into())
        );
    }

    #[test]
    fn an_error_read_back_from_its_status_is_the_same_error() {
        let all = [
            ApiError::InvalidArgument("m".into()),
            ApiError::NotFound("m".into()),
            ApiError::PermissionDenied("m".into()),
            ApiError::Conflict("m".into()),
            ApiError::PayloadTooLarge("m".into()),
            ApiError::ResourceExhausted("m".into()),
            ApiError::Unavailable("m".into()),
            ApiError::OutOfMemory("out of memory: m".into()),
            ApiError::DeadlineExceeded("m".into()),
            ApiError::RequestTimeout("m".into()),
            ApiError::Internal("m".into()),
        ];
        for e in all {
            let back = error_of_status(status_code(&e), e.to_string());
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&e),
                "{e:?} read back as {back:?}"
            );
        }
        assert!(matches!(
            error_of_status(StatusCode::UNAUTHORIZED, "no token".into()),
            ApiError::PermissionDenied(_)
        ));
        let other = error_of_status(StatusCode::BAD_GATEWAY, "m".into());
        assert!(other.to_string().contains("502"), "{other}");
    }
}
