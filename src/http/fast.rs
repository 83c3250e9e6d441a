//! The predict routes without the router (issue 9): a small keep-alive predict
//! request goes from the connection straight to its handler.
//!
//! The router's way costs a one-row prediction about a fifth of its time: the match,
//! three `from_fn` layers (access, forwarding, JSON errors) that each box a future
//! and clone the router, the body limit layer and the path extractors. For the
//! requests taken here those layers do nothing the code below does not do itself:
//!
//! * **access**: the same check as [`super::auth::require`] (`Auth::authorize` with
//!   the route's [`Access`], the `Authorization` header and the peer), answered
//!   the same way on refusal. Only routes whose access is `Inference` are taken;
//!   management routes (logged, cross-site checked) always go through the router.
//! * **forwarding**: a deployed model's request (`crate::workers`) goes to the
//!   same [`crate::workers::forward::forward`] the forwarding layer calls, after
//!   the access check, the model read from the path by that layer's own
//!   `model_of_path`.
//!   `POST /predict`, which names its model in the body, takes the router while
//!   any model is deployed (the layer reads the body to find it).
//! * **JSON errors**: the handlers answer every error as JSON already.
//! * **metrics**: the same [`super::count_inference`] the router's layer calls
//!   counts the requests the handlers refuse before `api::predict`.
//! * **head checks**: a request with a `Transfer-Encoding` or more than one
//!   `Host` takes the router, which refuses it.
//! * **body limit**: only bodies that declare their length, at most
//!   [`FAST_MAX_BODY`] and the server's `max_request_bytes`, are taken; anything
//!   larger (or chunked) goes through the router, which answers 413.
//!
//! The handlers are the router's own (`tfs::post_model`, `v2::infer`, …), called
//! with the extractors they would get, so the answers are the same byte for byte.
//! Paths with percent-escapes, HTTP/2 and every other method or route take the
//! router.

use std::net::SocketAddr;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderValue, Method, Version};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::auth::{rest_access, Access};

/// The largest declared body taken here. Small requests are where the plumbing is
/// a large share of the work, but a cache hit on a large tensor (an image) is all
/// plumbing too. The body is read by the handlers' own extractors, which apply
/// axum's default body limit (2 MB) to a request that skipped the router's
/// `DefaultBodyLimit` layer: this bound stays below it.
pub const FAST_MAX_BODY: u64 = 1024 * 1024;

/// Which handler a request goes to, with the path parameters its extractors
/// would give it (owned: the request moves into the handler).
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v1/models/{rest}` with a `:predict` verb (`rest` as the wildcard sees it).
    TfsPredict(String),
    /// `/v2/models/{model}/infer`
    V2Infer(String),
    /// `/v2/models/{model}/versions/{version}/infer`
    V2InferVersion(String, String),
    /// `/predict`
    Simple,
    /// `/predict/{model_id}` and `/predict/{model_id}/infer`
    SimpleModel(String),
}

/// The route of a predict path, if it is one taken here (exactly as the router
/// would match it: no empty segments, no percent-escapes).
fn route(path: &str) -> Option<Route> {
    if path.contains('%') {
        return None;
    }
    let rest = path.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return None;
    }
    match segments.as_slice() {
        ["v1", "models", _, ..] => {
            let tail = rest.strip_prefix("v1/models/")?;
            // TF Serving's verb after the last colon; only predict is taken.
            match tail.rsplit_once(':') {
                Some((_, "predict")) => Some(Route::TfsPredict(tail.to_string())),
                _ => None,
            }
        }
        ["v2", "models", model, "infer"] => Some(Route::V2Infer(model.to_string())),
        ["v2", "models", model, "versions", version, "infer"] => Some(Route::V2InferVersion(
            model.to_string(),
            version.to_string(),
        )),
        ["predict"] => Some(Route::Simple),
        ["predict", model] | ["predict", model, "infer"] => {
            Some(Route::SimpleModel(model.to_string()))
        }
        _ => None,
    }
}

/// Whether a REST request's body is a multipart upload to a route that streams its
/// files to disk as they arrive (`POST /upload_model`, a job with its files), so
/// holds no more than a chunk in memory at a time: the connection does not charge
/// it to the body budget (`crate::connections::BodyBudget`). A multipart body sent
/// anywhere else is charged as any other.
pub fn body_streams_to_disk(request: &http::request::Parts) -> bool {
    request.method == Method::POST
        && super::middleware::takes_multipart(request.uri.path())
        && super::middleware::is_multipart(&request.headers)
}

/// The route of this request if it is taken here (see the module comment): header
/// checks and two splits of the path. `None` sends it through the router.
pub fn takes(state: &AppState, request: &http::request::Parts) -> Option<Route> {
    if request.method != Method::POST
        || !matches!(request.version, Version::HTTP_11 | Version::HTTP_10)
    {
        return None;
    }
    let limit = FAST_MAX_BODY.min(state.settings.max_request_bytes as u64);
    let declared = request
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // An encoded body, a transfer coding or more than one Host are the router's
    // to refuse (`body_headers`, `head_checks`).
    if declared.is_none_or(|n| n > limit)
        || request.headers.contains_key(header::CONTENT_ENCODING)
        || request.headers.contains_key(header::TRANSFER_ENCODING)
        || request
            .headers
            .get_all(header::HOST)
            .iter()
            .nth(1)
            .is_some()
    {
        return None;
    }
    let path = request.uri.path();
    if state.settings.metrics_path.as_deref() == Some(path)
        || rest_access(path) != Access::Inference
    {
        return None;
    }
    let route = route(path)?;
    if route == Route::Simple && state.workers.get().is_some_and(|w| w.has_deployments()) {
        return None;
    }
    Some(route)
}

/// Answers a request on the `route` [`takes`] found, with `peer` the client's address.
pub async fn serve(state: AppState, route: Route, request: Request, peer: SocketAddr) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION);
    let path = request.uri().path();
    if let Err(denied) = state.auth.authorize(
        "rest",
        Access::Inference,
        authorization.map(HeaderValue::as_bytes),
        Some(peer),
        path,
    ) {
        return super::auth::denied_response(&denied);
    }
    // A deployed model's request goes to its worker, the model read from the path
    // by the forwarding layer's own rule.
    if let Some(workers) = state.workers.get() {
        let model = crate::workers::forward::model_of_path(request.uri().path());
        if let Some(target) = model.and_then(|model| workers.target(model)) {
            return crate::workers::forward::forward(
                workers,
                target,
                request,
                state.settings.max_request_bytes,
            )
            .await;
        }
    }
    // Counted in metrics as the router counts it (`super::count_inference`).
    let counted = state.clone();
    super::count_inference(&counted, request, move |request| {
        answer(state, route, request)
    })
    .await
}

/// The handler's answer to a request on `route`.
async fn answer(state: AppState, route: Route, request: Request) -> Response {
    match route {
        Route::TfsPredict(rest) => {
            // Moved, not copied: a predict reads `x-request-id` only if it is logged.
            let mut request = request;
            let headers = std::mem::take(request.headers_mut());
            let raw = axum::body::Bytes::from_request(request, &state).await;
            super::tfs::post_model(State(state), Path(rest), headers, raw)
                .await
                .into_response()
        }
        Route::V2Infer(model) => {
            let headers = request.headers().clone();
            super::v2::infer(State(state), Path(model), headers, request)
                .await
                .into_response()
        }
        Route::V2InferVersion(model, version) => {
            let headers = request.headers().clone();
            super::v2::infer_version(State(state), Path((model, version)), headers, request)
                .await
                .into_response()
        }
        Route::Simple => {
            let headers = request.headers().clone();
            let raw = axum::body::Bytes::from_request(request, &state).await;
            super::simple::predict_post(State(state), headers, raw)
                .await
                .into_response()
        }
        Route::SimpleModel(model) => {
            let headers = request.headers().clone();
            let raw = axum::body::Bytes::from_request(request, &state).await;
            super::simple::predict_model_post(State(state), Path(model), headers, raw)
                .await
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(max_request_bytes: usize) -> AppState {
        let settings = crate::settings::Settings {
            max_request_bytes,
            ..Default::default()
        };
        let manager = std::sync::Arc::new(crate::manager::Manager::new(
            crate::server::backend_options(&settings),
        ));
        std::sync::Arc::new(crate::api::ServerState::new(settings, manager))
    }

    fn parts(
        method: &str,
        path: &str,
        version: Version,
        length: Option<&str>,
    ) -> http::request::Parts {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .version(version);
        if let Some(length) = length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn only_small_http1_predict_posts_with_a_declared_length_are_taken() {
        let state = server(1 << 20);
        let taken =
            |method, path, version, length| takes(&state, &parts(method, path, version, length));
        let tfs = "/v1/models/iris:predict";
        assert_eq!(
            taken("POST", tfs, Version::HTTP_11, Some("40")),
            Some(Route::TfsPredict("iris:predict".into()))
        );
        assert_eq!(
            taken("POST", "/predict", Version::HTTP_10, Some("1048576")),
            Some(Route::Simple)
        );
        // Chunked, larger than FAST_MAX_BODY, HTTP/2, another method, another route.
        assert_eq!(taken("POST", tfs, Version::HTTP_11, None), None);
        assert_eq!(taken("POST", tfs, Version::HTTP_11, Some("1048577")), None);
        assert_eq!(taken("POST", tfs, Version::HTTP_11, Some("x")), None);
        assert_eq!(taken("POST", tfs, Version::HTTP_2, Some("40")), None);
        assert_eq!(taken("GET", tfs, Version::HTTP_11, Some("0")), None);
        assert_eq!(
            taken("POST", "/upload_model", Version::HTTP_11, Some("40")),
            None
        );
        // A server limit below FAST_MAX_BODY: larger bodies get the router's 413.
        let small = server(100);
        assert_eq!(
            takes(&small, &parts("POST", tfs, Version::HTTP_11, Some("101"))),
            None
        );
        assert!(takes(&small, &parts("POST", tfs, Version::HTTP_11, Some("100"))).is_some());
    }

    #[test]
    fn the_forwarding_layer_reads_the_model_of_every_route_taken() {
        for path in [
            "/v1/models/iris:predict",
            "/v1/models/iris/versions/2:predict",
            "/v1/models/iris/labels/stable:predict",
            "/v2/models/iris/infer",
            "/v2/models/iris/versions/3/infer",
            "/predict/iris",
            "/predict/iris/infer",
        ] {
            assert!(route(path).is_some(), "{path}");
            assert_eq!(
                crate::workers::forward::model_of_path(path),
                Some("iris"),
                "{path}"
            );
        }
        assert!(route("/predict").is_some());
        assert_eq!(crate::workers::forward::model_of_path("/predict"), None);
    }

    /// `POST /v1/models` (no model) sliced past the path's end: a panic for any
    /// client, before the access check. Every path of up to four segments from
    /// the routes' own words is routed or not, never a panic.
    #[test]
    fn no_path_panics_the_router() {
        let words = [
            "",
            "v1",
            "models",
            "v2",
            "predict",
            "infer",
            "versions",
            "1",
            "iris:predict",
            ":",
        ];
        let mut paths = vec![String::new()];
        for _ in 0..4 {
            paths = paths
                .iter()
                .flat_map(|p| words.iter().map(move |w| format!("{p}/{w}")))
                .collect();
            for path in &paths {
                let _ = route(path);
            }
        }
    }

    #[test]
    fn predict_paths_and_only_those_are_routed() {
        assert_eq!(
            route("/v1/models/iris:predict"),
            Some(Route::TfsPredict("iris:predict".into()))
        );
        assert_eq!(
            route("/v1/models/iris/versions/2:predict"),
            Some(Route::TfsPredict("iris/versions/2:predict".into()))
        );
        assert_eq!(
            route("/v1/models/iris/labels/stable:predict"),
            Some(Route::TfsPredict("iris/labels/stable:predict".into()))
        );
        assert_eq!(
            route("/v2/models/iris/infer"),
            Some(Route::V2Infer("iris".into()))
        );
        assert_eq!(
            route("/v2/models/iris/versions/3/infer"),
            Some(Route::V2InferVersion("iris".into(), "3".into()))
        );
        assert_eq!(route("/predict"), Some(Route::Simple));
        assert_eq!(
            route("/predict/iris"),
            Some(Route::SimpleModel("iris".into()))
        );
        assert_eq!(
            route("/predict/iris/infer"),
            Some(Route::SimpleModel("iris".into()))
        );
        for other in [
            "/",
            "/v1/models",
            "/v1",
            "/v2/models",
            "/predict/",
            "//predict",
            "/predict/iris/other",
            "/v1/models/iris",
            "/v1/models/iris:classify",
            "/v1/models/iris:regress",
            "/v1/models/iris/metadata",
            "/v1/models/my%20model:predict",
            "/v2/models/iris",
            "/v2/models/iris/ready",
            "/v2/models//infer",
            "/v2/models/iris/infer/",
            "/v2/repository/models/iris/load",
            "/upload_model",
        ] {
            assert_eq!(route(other), None, "{other}");
        }
    }
}
