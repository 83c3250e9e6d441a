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
//! * `middleware`: the head's and the body headers' checks, JSON error bodies
//! * `outcomes`: inference requests refused before `api::predict`, in metrics
//! * `body`: request bodies read under their limits, with their errors

mod auth;
mod body;
pub mod fast;
pub mod job_uploads;
mod jobs;
mod manage;
mod middleware;
pub mod openapi;
mod outcomes;
mod simple;
mod store;
mod tfs;
mod upload;
mod v2;

pub(crate) use auth::{browser_refusal, sees_callers};
pub(crate) use body::{
    answer_drained, answer_unread, body_read_error, drain_then, waits_for_continue,
};
pub use body::{body, body_chunks, parse_json, rejection_message, UniqueKeys};
use middleware::{body_headers, head_checks, json_errors, takes_multipart};
pub use middleware::{NOT_IMPLEMENTED_OUTCOME, UNSUPPORTED_MEDIA_TYPE_OUTCOME};
use outcomes::inference_outcomes;
pub(crate) use outcomes::{count_inference, inference_route};
pub(crate) use simple::model_of_body as simple_model_of_body;
pub(crate) use v2::{decode_tensors as decode_v2_tensors, InputBody as V2TensorBody};

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::api::{ApiError, ServerState};

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
            "invalid version {v:?}: must be a positive integer (at most {})",
            u64::MAX
        )))
    })
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

/// Sets `x-request-id` on the answer of a request the prediction log kept, to the
/// id it was logged under (`request_id` is `None` for the others).
pub fn with_request_id_header(
    mut response: Response,
    request_id: Option<&crate::store::predictions::RequestId>,
) -> Response {
    // The id is visible ASCII (the client's was checked, a generated one is hex),
    // so it is always a valid header value.
    if let Some(value) = request_id.and_then(|id| HeaderValue::try_from(id.to_string()).ok()) {
        response
            .headers_mut()
            .insert(crate::api::predict::REQUEST_ID_HEADER, value);
    }
    response
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
