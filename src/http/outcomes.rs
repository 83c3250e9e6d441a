//! Inference requests in `ferroserve_requests_total` and
//! `ferroserve_request_duration_seconds` when something before `api::predict`
//! answers them: which route is an inference route, under which protocol and model,
//! and the outcome of a refusal.

use std::borrow::Cow;
use std::future::Future;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::middleware::{NOT_IMPLEMENTED_OUTCOME, UNSUPPORTED_MEDIA_TYPE_OUTCOME};
use super::{body_read_error, error_of_status, simple, AppState, HttpError};
use crate::api::Protocol;

/// Where an inference route's model name is (see [`inference_route`]).
pub(crate) enum NamedModel<'a> {
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
pub(crate) fn inference_route<'a>(
    method: &Method,
    path: &'a str,
) -> Option<(Protocol, NamedModel<'a>)> {
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
pub(super) fn refused(
    state: &AppState,
    request: &Request,
    outcome: &'static str,
    started: Instant,
) {
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
pub(super) async fn inference_outcomes(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
