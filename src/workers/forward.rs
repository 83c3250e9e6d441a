//! Forwarding: the main server's REST requests for a deployed model go to its
//! worker over kept-alive HTTP/1.1 connections (hyper's pooled client); status
//! codes, headers and bodies pass through unchanged. A worker that is starting or
//! restarting, or whose connection fails, is answered 503 with `Retry-After`; one in
//! crash-loop, which is not restarted, 503 without it. A worker that ends while it
//! answers is answered with why it ended (killed past its memory limit: out of
//! memory). A request body the *client* fails to send (too large, stopped
//! arriving, reset) is answered as an in-process model answers it (413, 408, 400),
//! never blamed on the worker ([`ClientBody`]).
//! The predict fast path (`crate::http::fast`) calls [`forward`] itself for the
//! predict routes it takes, after its access check, with the model read from the
//! path by the same rules ([`model_of_path`]).
//!
//! Metrics: a worker counts the inference requests it answers. An inference
//! request the worker never answered (its worker not ready, restarting, gone
//! mid-request, the connection failed, a body declared over the limit) is answered
//! here, so it is counted here, once, under the deployed model's name
//! ([`crate::metrics::record_worker_refusal`]).
//!
//! Invariant: forwarding decides from the path (and, for `POST /predict`, the body's
//! `model_id`) alone, except that during the shutdown delay a model's V2 readiness
//! route is answered by this server (503: it is not ready, whatever the worker
//! says); a model that is not deployed in a worker never sees this layer do
//! anything but pass the request on.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::supervisor::{Target, Unreachable};
use crate::api::ApiError;
use crate::http::{AppState, HttpError};

pub type Client = hyper_util::client::legacy::Client<HttpConnector, Body>;

/// The pooled client: connections to workers are kept alive and reused.
pub fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// A GET answered 200 within `timeout` (health checks).
pub async fn get_ok(
    client: &Client,
    authorization: &HeaderValue,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> bool {
    probe(client, authorization, addr, path, timeout).await == Probe::Ok
}

/// What a GET of a worker's route got: an answer, 200 or not, or none in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Answered 200.
    Ok,
    /// Answered with another status: the worker's word that it is not (yet) so.
    Refused,
    /// No answer within the timeout, or no connection (not listening yet, gone):
    /// nothing is known. A worker starved of CPU (a low `cpu_limit` under CFS
    /// throttling) answers some probes in time and not others.
    NoAnswer,
}

/// A GET of `path` on the worker at `addr`, given `timeout` to answer.
pub async fn probe(
    client: &Client,
    authorization: &HeaderValue,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Probe {
    let Ok(uri) = format!("http://{addr}{path}").parse::<Uri>() else {
        return Probe::NoAnswer;
    };
    let Ok(request) = axum::http::Request::get(uri)
        .header(header::AUTHORIZATION, authorization)
        .body(Body::empty())
    else {
        return Probe::NoAnswer;
    };
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(r)) if r.status() == 200 => Probe::Ok,
        Ok(Ok(_)) => Probe::Refused,
        Ok(Err(_)) | Err(_) => Probe::NoAnswer,
    }
}

/// The body of a GET answered 200 within `timeout` (at most 4 MiB), or `None`.
pub async fn get_body(
    client: &Client,
    authorization: &HeaderValue,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Option<bytes::Bytes> {
    let uri = format!("http://{addr}{path}").parse::<Uri>().ok()?;
    let request = axum::http::Request::get(uri)
        .header(header::AUTHORIZATION, authorization)
        .body(Body::empty())
        .ok()?;
    let read = async {
        let response = client.request(request).await.ok()?;
        if response.status() != 200 {
            return None;
        }
        let body = Body::new(response.into_body());
        axum::body::to_bytes(body, 4 << 20).await.ok()
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// The model a REST path names, for the routes that forward.
pub(crate) fn model_of_path(path: &str) -> Option<&str> {
    let mut segments = path.trim_start_matches('/').split('/');
    match (segments.next()?, segments.next()) {
        ("predict", Some(m)) if !m.is_empty() => Some(m),
        // A score job's plan (`workers::scoring`) is the worker's word too.
        ("v1", Some("scoring-plans")) => segments.next().filter(|m| !m.is_empty()),
        // The console's try-it form is built from the model's signature and
        // pre-processing, which only its worker holds.
        ("console", Some("fragments")) => match (segments.next(), segments.next(), segments.next())
        {
            (Some("models"), Some(m), Some("try")) if !m.is_empty() => Some(m),
            _ => None,
        },
        ("v1", Some("models")) | ("v2", Some("models")) => {
            let m = segments.next()?;
            // The main server's own records (the store), not the model's API.
            if matches!(segments.next(), Some("history" | "predictions")) {
                return None;
            }
            // `/v1/models/m:predict`, `/v1/models/m:classify`.
            let m = m.split(':').next().unwrap_or(m);
            (!m.is_empty()).then_some(m)
        }
        _ => None,
    }
}

/// Whether `path` is a V2 model-readiness route (`/v2/models/{m}[/versions/{v}]/ready`).
fn is_model_ready_path(path: &str) -> bool {
    path.starts_with("/v2/models/") && path.ends_with("/ready")
}

/// The REST layer that forwards a deployed model's requests to its worker.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(workers) = state.workers.get() else {
        return next.run(request).await;
    };
    if !workers.has_deployments() {
        return next.run(request).await;
    }
    // A forwarded body is bounded here as the router bounds an in-process one.
    let limit = state.settings.max_request_bytes;
    let path = request.uri().path();
    if let Some(model) = model_of_path(path) {
        // After the stop signal no model is ready, as this server is not: a
        // deployed model's readiness is answered here (503), not by its worker.
        if is_model_ready_path(path) && state.is_draining() {
            return next.run(request).await;
        }
        let model = model.to_string();
        return match workers.target(&model) {
            None => next.run(request).await,
            Some(target) => forward_for(workers, &model, target, request, limit).await,
        };
    }
    // `POST /predict` names the model in its body; `GET /predict?model_id=`.
    if path.trim_end_matches('/') == "/predict" {
        if request.method() == Method::GET {
            let model = request.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "model_id")
                    .map(|(_, v)| v.into_owned())
            });
            let target = model.and_then(|m| Some((workers.target(&m)?, m)));
            return match target {
                None => next.run(request).await,
                Some((target, model)) => forward_for(workers, &model, target, request, limit).await,
            };
        }
        let (parts, body) = request.into_parts();
        let limit = state.settings.max_request_bytes;
        let bytes = match axum::body::to_bytes(body, limit).await {
            Ok(b) => b,
            Err(e) => return HttpError(crate::http::body_read_error(&e, limit)).into_response(),
        };
        // Read as the simple API reads it (a form-labelled JSON body is JSON).
        let model = crate::http::simple_model_of_body(&parts.headers, &bytes).await;
        let target = model.and_then(|m| Some((workers.target(&m)?, m)));
        let request = Request::from_parts(parts, Body::from(bytes));
        return match target {
            None => next.run(request).await,
            Some((target, model)) => forward_for(workers, &model, target, request, limit).await,
        };
    }
    next.run(request).await
}

/// Headers that belong to one connection, never passed on.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// The client's request body on its way to a worker: bounded by `max_request_bytes`
/// (past it the body fails, as the router's limit fails an in-process one), and
/// its failure (past the limit, stopped arriving for the body read timeout, the
/// client gone) is kept in `failure`, so that the answer blames the client (413,
/// 408, 400) and not the worker, whose request then fails with it. Dropped (the
/// request to the worker ended, sent whole or failed), it gives what is left of
/// the client's body back through `give_back`, so that a request whose worker
/// died mid-body can be drained before its 503 ([`crate::http::drain_then`]).
struct ClientBody {
    inner: Option<http_body_util::Limited<Body>>,
    limit: usize,
    failure: Arc<Mutex<Option<ApiError>>>,
    give_back: Option<tokio::sync::oneshot::Sender<Unsent>>,
    polled: bool,
}

/// What is left of a client's body once the request to the worker ended, and
/// whether any of it was asked for (for a client that waits for `100 Continue`,
/// asking for the body is what lets it send).
struct Unsent {
    rest: http_body_util::Limited<Body>,
    polled: bool,
}

impl http_body::Body for ClientBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.polled = true;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &frame {
            let error = crate::http::body_read_error(&**e, self.limit);
            self.failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(error);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        if let (Some(rest), Some(give_back)) = (self.inner.take(), self.give_back.take()) {
            if !http_body::Body::is_end_stream(&rest) {
                let _ = give_back.send(Unsent {
                    rest,
                    polled: self.polled,
                });
            }
        }
    }
}

/// `answer` to a request whose forwarding failed mid-body (its worker died), given
/// after what is left of the client's body is read ([`crate::http::drain_then`]),
/// as for a refusal made before forwarding: a client that sends its whole body
/// before reading met a closed connection (a broken pipe), not the 503. The rest
/// comes back when the client connection to the worker lets the request go, at
/// once as its connection ends; one that does not come back within a second is
/// not read, nor one never asked for from a client that `waits` for `100
/// Continue` (it sent none of it).
async fn drained_after_failure(
    given_back: tokio::sync::oneshot::Receiver<Unsent>,
    waits: bool,
    answer: Response,
) -> Response {
    match tokio::time::timeout(Duration::from_secs(1), given_back).await {
        Ok(Ok(Unsent { rest, polled })) if polled || !waits => {
            crate::http::drain_then(rest, answer).await
        }
        _ => answer,
    }
}

/// A 503 for a deployed model whose worker cannot answer, with `Retry-After` only
/// when that `heals` by itself (the worker starts or restarts): a worker in
/// crash-loop is never restarted, so a retry is no use.
fn unavailable_response(error: ApiError, heals: bool) -> Response {
    let mut response = HttpError(error).into_response();
    if !heals {
        response.headers_mut().remove(header::RETRY_AFTER);
    }
    response
}

/// Sends `request` to the worker at `target` and passes its answer back; `Err`
/// (the worker is not ready) and a failed connection are answered 503. The body
/// is bounded by `body_limit` (the server's `max_request_bytes`); a body the client
/// fails to send is answered as an in-process model answers it (413, 408, 400),
/// never as the worker's failure. For a request whose path names its model (the
/// predict fast path's routes; [`model_of_path`]): the forwarding layer, which
/// also forwards `/predict` by the model in its body or query, calls
/// [`forward_for`] with that model.
pub(crate) async fn forward(
    workers: &super::Supervisor,
    target: Result<Target, Unreachable>,
    request: Request,
    body_limit: usize,
) -> Response {
    let model = model_of_path(request.uri().path())
        .unwrap_or_default()
        .to_string();
    forward_for(workers, &model, target, request, body_limit).await
}

/// [`forward`] for a request for `model` (the deployed model's name, as the
/// supervisor knows it): an inference request that this server answers itself
/// (the worker did not) is counted in metrics under `model`; one the worker
/// answered is the worker's to count.
async fn forward_for(
    workers: &super::Supervisor,
    model: &str,
    target: Result<Target, Unreachable>,
    request: Request,
    body_limit: usize,
) -> Response {
    let counted = crate::http::inference_route(request.method(), request.uri().path())
        .map(|(protocol, _)| protocol);
    let started = Instant::now();
    let (response, answered_here) = send(workers, target, request, body_limit).await;
    if let (Some(protocol), Some(outcome)) = (counted, answered_here) {
        crate::metrics::record_worker_refusal(model, protocol.as_str(), outcome, started.elapsed());
    }
    response
}

/// The answer to a forwarded request, and, when this server made it for a
/// request the worker never answered, its outcome in metrics (the error's kind).
/// `None` for the worker's own answer, and for a body the client failed to send,
/// which the worker had begun to receive: that request is left to the worker,
/// as one it saw.
async fn send(
    workers: &super::Supervisor,
    target: Result<Target, Unreachable>,
    request: Request,
    body_limit: usize,
) -> (Response, Option<&'static str>) {
    let here = |error: ApiError| {
        let outcome = error.kind();
        (HttpError(error).into_response(), Some(outcome))
    };
    // Refused before the body is read, the answer waits for what the client still
    // sends (`http::answer_drained`): a client that sends its whole body before
    // reading (Python's http.client) got a broken pipe while the worker restarted,
    // not the 503 and its Retry-After.
    let target = match target {
        Ok(target) => target,
        Err(Unreachable { message, heals }) => {
            let error = ApiError::Unavailable(message);
            let outcome = error.kind();
            let answer = unavailable_response(error, heals);
            return (
                crate::http::answer_drained(request, answer).await,
                Some(outcome),
            );
        }
    };
    let addr = target.addr;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > body_limit as u64) {
        let (answer, outcome) = here(ApiError::PayloadTooLarge(format!(
            "request body is larger than the limit of {body_limit} bytes"
        )));
        return (crate::http::answer_drained(request, answer).await, outcome);
    }
    let http1 = request.version() < axum::http::Version::HTTP_2;
    let waits = crate::http::waits_for_continue(request.headers());
    let (mut parts, body) = request.into_parts();
    let failure = Arc::new(Mutex::new(None));
    let (give_back, given_back) = tokio::sync::oneshot::channel();
    let body = Body::new(ClientBody {
        inner: Some(http_body_util::Limited::new(body, body_limit)),
        limit: body_limit,
        failure: failure.clone(),
        give_back: http1.then_some(give_back),
        polled: false,
    });
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = match format!("http://{addr}{path_and_query}").parse() {
        Ok(uri) => uri,
        Err(e) => return here(ApiError::InvalidArgument(format!("cannot forward: {e}"))),
    };
    parts.version = axum::http::Version::HTTP_11;
    for h in &HOP_BY_HOP {
        parts.headers.remove(h);
    }
    parts.headers.remove(header::HOST);
    // The client's own token passes through, so the worker enforces its scope as
    // this server did. A request without one passed this server's access layer as
    // an open route, or with no tokens configured: it carries this server's token,
    // which the worker accepts, so the two never disagree on it.
    if !parts.headers.contains_key(header::AUTHORIZATION) {
        parts
            .headers
            .insert(header::AUTHORIZATION, workers.authorization().clone());
    }
    let sent = std::time::SystemTime::now();
    match workers
        .client
        .request(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            for h in &HOP_BY_HOP {
                parts.headers.remove(h);
            }
            (Response::from_parts(parts, Body::new(body)), None)
        }
        Err(e) => {
            let client_failure = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(error) = client_failure {
                tracing::debug!(%addr, "forwarding stopped: the client's body failed: {error}");
                return (HttpError(error).into_response(), None);
            }
            tracing::debug!(%addr, "forwarding failed: {e}");
            let (error, heals) = workers.forwarding_failed(&target, sent, &e).await;
            let outcome = error.kind();
            let answer = unavailable_response(error, heals);
            (
                drained_after_failure(given_back, waits, answer).await,
                Some(outcome),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_named_by_paths() {
        assert_eq!(model_of_path("/predict/iris"), Some("iris"));
        assert_eq!(model_of_path("/predict/iris/infer"), Some("iris"));
        assert_eq!(model_of_path("/predict"), None);
        assert_eq!(model_of_path("/v1/models/iris:predict"), Some("iris"));
        assert_eq!(
            model_of_path("/v1/models/iris/versions/2:predict"),
            Some("iris")
        );
        assert_eq!(model_of_path("/v2/models/iris/infer"), Some("iris"));
        assert_eq!(model_of_path("/v2/health/ready"), None);
        assert_eq!(model_of_path("/v1/scoring-plans/iris"), Some("iris"));
        assert_eq!(model_of_path("/v1/scoring-plans/"), None);
        assert_eq!(model_of_path("/models/status"), None);
        assert_eq!(model_of_path("/v1/models/iris/history"), None);
        assert_eq!(model_of_path("/v1/models/iris/predictions"), None);
        assert_eq!(model_of_path("/v1/models/iris/versions/1"), Some("iris"));
        assert_eq!(
            model_of_path("/console/fragments/models/iris/try"),
            Some("iris")
        );
        assert_eq!(model_of_path("/console/fragments/models/iris"), None);
        assert_eq!(model_of_path("/console/models/iris"), None);
    }

    #[test]
    fn model_ready_paths() {
        assert!(is_model_ready_path("/v2/models/iris/ready"));
        assert!(is_model_ready_path("/v2/models/iris/versions/2/ready"));
        assert!(!is_model_ready_path("/v2/models/iris/infer"));
        assert!(!is_model_ready_path("/v2/health/ready"));
    }
}
