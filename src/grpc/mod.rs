//! gRPC adapters, thin like the REST ones: each RPC decodes its message, calls the
//! `crate::api` operation the REST handler calls, and encodes the answer.
//!
//! * [`tfs`]: TF Serving `tensorflow.serving.PredictionService` and `ModelService`;
//! * [`kserve`]: KServe V2 `inference.GRPCInferenceService` (with the repository extension);
//! * [`health`]: `grpc.health.v1.Health`, per model and for the server.
//!
//! All of them share one port ([`serve`]), behind the access layer (`auth`: tokens,
//! loopback-only management). Invariants:
//! * an [`ApiError`] becomes a `tonic::Status` only in [`status_from`];
//! * a message over the size limits is RESOURCE_EXHAUSTED, never a dropped connection
//!   (tonic says OUT_OF_RANGE; [`ClientStatusLayer`] corrects it);
//! * a request that is not valid protobuf, or a body that is no gRPC message (none,
//!   cut short, an unknown compression flag), is INVALID_ARGUMENT (tonic says
//!   INTERNAL; [`ClientStatusLayer`] corrects it too), so INTERNAL means the server
//!   (or, as the gRPC compression spec requires, a message flagged compressed
//!   without `grpc-encoding`);
//! * a status message is at most about a kilobyte ([`ClientStatusLayer`] cuts longer
//!   ones, such as an echoed megabyte-long name, that clients would refuse);
//! * a client deadline (`grpc-timeout`) bounds the operation like the REST timeout.

mod auth;
pub mod health;
pub mod kserve;
pub mod tf_tensor;
pub mod tfs;
pub mod v2_tensor;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::api::{ApiError, ServerState};

/// Message size limits, from `Settings`.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimits {
    /// Largest request message decoded, in bytes.
    pub max_receive_bytes: usize,
    /// Largest response message encoded, in bytes.
    pub max_send_bytes: usize,
}

impl MessageLimits {
    pub fn of(settings: &crate::settings::Settings) -> MessageLimits {
        MessageLimits {
            max_receive_bytes: settings.grpc_max_receive_bytes,
            max_send_bytes: settings.grpc_max_send_bytes,
        }
    }
}

/// Gives a client of a deployed model's worker (issue 14) this server's message
/// limits, so that forwarding neither narrows nor widens them: it sends on what a
/// client sent (decoded here within the receive limit) and takes back any answer
/// within the send limit, which the worker (started with the same limits) and this
/// server enforce. Left at tonic's client default, an answer over 4 MiB failed here
/// although the same model in process answers it.
macro_rules! worker_client {
    ($client:ty, $state:expr, $channel:expr) => {{
        let limits = $crate::grpc::MessageLimits::of(&$state.settings);
        <$client>::new($channel)
            .max_encoding_message_size(limits.max_receive_bytes)
            .max_decoding_message_size(limits.max_send_bytes)
    }};
}
pub(crate) use worker_client;

/// Serves every gRPC service on `listener` until `shutdown` completes, then lets
/// in-flight calls finish.
///
/// Served by hyper's HTTP/2 server through the accept loop both listeners share
/// (`crate::connections::serve`: connection limit, keep-alive pings, idle timeout,
/// TCP_NODELAY, ALPN `h2` over TLS), behind the access layer ([`auth`]), not tonic's
/// own server: tonic's server enforces `grpc-timeout` itself and answers CANCELLED
/// when it fires, racing the api operation that answers DEADLINE_EXCEEDED and drops
/// the queued inference, as the REST timeout does. What a client that never reads
/// may hold is bounded: at most `grpc_max_concurrent_streams` calls per connection,
/// and a response whose client has not taken more of it for `grpc_send_timeout` is
/// reset and freed ([`SendTimeoutExecutor`]).
pub async fn serve(
    state: Arc<ServerState>,
    limits: MessageLimits,
    listener: crate::tls::ServerListener,
    options: crate::connections::ConnectionOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let stop_streams = CancellationToken::new();
    let router = routes(state.clone(), limits, stop_streams.clone())
        .prepare()
        .into_axum_router()
        .layer(ClientStatusLayer)
        // Outside `ClientStatusLayer`, so that it sees the codes clients get.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            inference_outcomes,
        ))
        .layer(axum::middleware::map_response(watch_send))
        // Outermost: a call is authorised before any service sees it.
        .layer(axum::middleware::from_fn_with_state(state, auth::require));
    // Health `Watch` and `ModelStreamInfer` streams end at the stop signal, so the
    // drain does not wait on them.
    let shutdown = async move {
        shutdown.await;
        stop_streams.cancel();
    };
    crate::connections::serve(listener, router, None, options, shutdown).await;
}

tokio::task_local! {
    /// The send watch of the HTTP/2 stream whose task is running, set by
    /// [`SendTimeoutExecutor`] and read by [`watch_send`].
    static SEND_WATCH: Arc<SendWatch>;
}

/// When a stream's response last handed a piece to hyper that hyper has not yet
/// asked to follow with more: hyper asks only once the client's flow-control window
/// has room, so a client that never reads leaves this set.
#[derive(Debug, Default)]
struct SendWatch {
    waiting_since: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

impl SendWatch {
    /// Completes once a piece has waited for the client longer than `timeout`.
    async fn stalled(&self, timeout: Duration) {
        loop {
            let since = *self.waiting_since.lock();
            match since {
                Some(t) if t.elapsed() >= timeout => return,
                Some(t) => tokio::time::sleep_until(t + timeout).await,
                None => tokio::time::sleep(timeout / 2).await,
            }
        }
    }
}

/// Runs each HTTP/2 stream (hyper hands every stream's task to the executor) with a
/// [`SendWatch`], and drops the stream when its response has waited for the client
/// longer than `send_timeout`: dropping it resets the stream, which frees what h2
/// and the response still held of it.
#[derive(Debug, Clone, Copy)]
pub struct SendTimeoutExecutor {
    send_timeout: Duration,
}

impl SendTimeoutExecutor {
    pub fn new(send_timeout: Duration) -> SendTimeoutExecutor {
        SendTimeoutExecutor { send_timeout }
    }
}

impl<F> hyper::rt::Executor<F> for SendTimeoutExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let watch = Arc::new(SendWatch::default());
        let timeout = self.send_timeout;
        tokio::spawn(SEND_WATCH.scope(watch.clone(), async move {
            tokio::select! {
                () = stream => {}
                () = watch.stalled(timeout) => {
                    tracing::debug!(
                        "gRPC response not read by its client within {timeout:?}; stream reset"
                    );
                }
            }
        }));
    }
}

/// Gives every response body the watch of its stream (outside
/// [`SendTimeoutExecutor`], e.g. in tests through `routes` or on HTTP/1, bodies go
/// unwatched). The REST router has it too, for REST over HTTP/2.
pub(crate) async fn watch_send(response: axum::response::Response) -> axum::response::Response {
    match SEND_WATCH.try_with(Arc::clone) {
        Ok(watch) => response.map(|body| axum::body::Body::new(WatchedBody::new(body, watch))),
        Err(_) => response,
    }
}

/// The most bytes of a response handed to hyper at once. hyper passes a piece to
/// h2 as soon as the stream has any send capacity, and h2 keeps what the client's
/// window does not take; small pieces keep that to about one window per stream and
/// make a stalled client visible to the [`SendWatch`].
const SEND_PIECE: usize = 16 * 1024;

/// A response body that hands its data to hyper in [`SEND_PIECE`]s and records in
/// its [`SendWatch`] when a piece waits for the client.
struct WatchedBody {
    inner: axum::body::Body,
    rest: bytes::Bytes,
    watch: Arc<SendWatch>,
}

impl WatchedBody {
    fn new(inner: axum::body::Body, watch: Arc<SendWatch>) -> Self {
        WatchedBody {
            inner,
            rest: bytes::Bytes::new(),
            watch,
        }
    }

    fn piece(&mut self) -> http_body::Frame<bytes::Bytes> {
        let n = self.rest.len().min(SEND_PIECE);
        *self.watch.waiting_since.lock() = Some(tokio::time::Instant::now());
        http_body::Frame::data(self.rest.split_to(n))
    }
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        // hyper asks for more: the previous piece went to h2.
        *self.watch.waiting_since.lock() = None;
        if !self.rest.is_empty() {
            return Poll::Ready(Some(Ok(self.piece())));
        }
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    self.rest = data;
                    Poll::Ready(Some(Ok(self.piece())))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = http_body::SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint.set_lower(inner.lower().saturating_add(rest));
        hint
    }
}

/// Every service, with the size limits applied to each. `stop_streams` ends open
/// server streams (health `Watch`, V2 `ModelStreamInfer`) at shutdown.
pub fn routes(
    state: Arc<ServerState>,
    limits: MessageLimits,
    stop_streams: CancellationToken,
) -> tonic::service::Routes {
    // A gzip or deflate message is bounded once inflated by the same receive limit (tonic
    // inflates into a buffer of at most that size). Answers are not compressed
    // (grpcio clients accept gzip by default: every answer would cost CPU).
    macro_rules! limited {
        ($server:expr) => {
            $server
                .max_decoding_message_size(limits.max_receive_bytes)
                .max_encoding_message_size(limits.max_send_bytes)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .accept_compressed(tonic::codec::CompressionEncoding::Deflate)
        };
    }
    use ferroserve_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
    use ferroserve_proto::tensorflow::serving::model_service_server::ModelServiceServer;
    use ferroserve_proto::tensorflow::serving::prediction_service_server::PredictionServiceServer;
    use tonic_health::pb::health_server::HealthServer;

    tonic::service::Routes::new(limited!(PredictionServiceServer::new(
        tfs::PredictionService::new(state.clone())
    )))
    .add_service(limited!(ModelServiceServer::new(tfs::ModelService::new(
        state.clone()
    ))))
    .add_service(limited!(GrpcInferenceServiceServer::new(
        kserve::InferenceService::new(state.clone(), stop_streams.clone())
    )))
    .add_service(limited!(HealthServer::new(health::HealthService::new(
        state,
        stop_streams
    ))))
}

/// Wraps an answer, with `x-ferroserve-cache: hit|miss` metadata for a
/// cache-enabled model (`cache` is `None` for the others).
pub fn with_cache_metadata<T>(
    message: T,
    cache: Option<crate::cache::CacheStatus>,
) -> tonic::Response<T> {
    let mut response = tonic::Response::new(message);
    if let Some(status) = cache {
        response.metadata_mut().insert(
            crate::cache::CacheStatus::HEADER,
            tonic::metadata::MetadataValue::from_static(status.as_str()),
        );
    }
    response
}

/// Sets `x-request-id` in the initial metadata of the answer of a request the
/// prediction log kept, to the id it was logged under (`request_id` is `None` for
/// the others).
pub fn with_request_id_metadata<T>(
    mut response: tonic::Response<T>,
    request_id: Option<&crate::store::predictions::RequestId>,
) -> tonic::Response<T> {
    // The id is visible ASCII (the client's was checked, a generated one is hex),
    // so it is always valid metadata.
    if let Some(value) = request_id.and_then(|id| id.to_string().parse().ok()) {
        response
            .metadata_mut()
            .insert(crate::api::predict::REQUEST_ID_HEADER, value);
    }
    response
}

/// The protocol of an inference method (`/package.Service/Method`), whose every
/// call is counted in `ferroserve_requests_total` ([`inference_outcomes`]).
fn inference_protocol(path: &str) -> Option<crate::api::Protocol> {
    match path {
        "/tensorflow.serving.PredictionService/Predict"
        | "/tensorflow.serving.PredictionService/Classify"
        | "/tensorflow.serving.PredictionService/Regress"
        | "/tensorflow.serving.PredictionService/MultiInference" => {
            Some(crate::api::Protocol::TfServingGrpc)
        }
        "/inference.GRPCInferenceService/ModelInfer" => Some(crate::api::Protocol::V2Grpc),
        _ => None,
    }
}

/// Records the outcome of an inference call that `api::predict` did not record
/// (a message that is not protobuf, over the size limit, or that the adapter
/// refused before predicting): the error its status was made from ([`status_from`]
/// notes it), else the kind its code stands for, under the model the method read
/// from the message ([`inference_target`]) when it is served here (else
/// `model=""`). The twin of `http::count_inference`; a call `api::predict` saw, or
/// answered by the worker it was forwarded to, is never recorded here. A call for
/// a deployed model that its worker did not answer (not ready, restarting, gone
/// mid-call) is recorded here, under the model's name.
async fn inference_outcomes(
    axum::extract::State(state): axum::extract::State<Arc<ServerState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(protocol) = inference_protocol(request.uri().path()) else {
        return next.run(request).await;
    };
    let started = std::time::Instant::now();
    let (response, tally) = crate::metrics::tally_request(next.run(request)).await;
    if tally.recorded() {
        return response;
    }
    // A unary call's error is a trailers-only answer: its status is in the headers.
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32);
    if let Some(code) = code {
        record_unrecorded_outcome(&state, protocol, &tally, code, started);
    }
    response
}

/// Records the outcome of an inference request that failed with `code` and that
/// nothing below recorded (`tally`): [`inference_outcomes`]' for a unary call, and
/// `kserve`'s for each request of a `ModelStreamInfer` stream. Nothing for `Ok` or
/// a request already recorded.
pub(crate) fn record_unrecorded_outcome(
    state: &ServerState,
    protocol: crate::api::Protocol,
    tally: &crate::metrics::RequestTally,
    code: Code,
    started: std::time::Instant,
) {
    if tally.recorded() || code == Code::Ok {
        return;
    }
    let outcome = tally.error().unwrap_or_else(|| outcome_of_code(code));
    match tally.model() {
        // A deployed model's call that its worker did not answer (not ready,
        // restarting, gone mid-call): the worker never counts it, so it is counted
        // here, under the model's name.
        Some(model) if tally.worker_did_not_answer() => crate::metrics::record_worker_refusal(
            &model,
            protocol.as_str(),
            outcome,
            started.elapsed(),
        ),
        model => crate::metrics::record_refused_request(
            &state.manager,
            model.as_deref(),
            protocol.as_str(),
            outcome,
            started.elapsed(),
        ),
    }
}

/// The outcome of a status no [`ApiError`] made (tonic's codec: a message that is
/// not protobuf, or over the size limit), from its code.
fn outcome_of_code(code: Code) -> &'static str {
    let error = match code {
        Code::NotFound => ApiError::NotFound(String::new()),
        Code::PermissionDenied | Code::Unauthenticated => ApiError::PermissionDenied(String::new()),
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
            ApiError::Conflict(String::new())
        }
        // Past the message size limit (a full queue is recorded where it is found).
        Code::ResourceExhausted => ApiError::PayloadTooLarge(String::new()),
        Code::Unavailable => ApiError::Unavailable(String::new()),
        Code::DeadlineExceeded | Code::Cancelled => ApiError::DeadlineExceeded(String::new()),
        Code::InvalidArgument | Code::OutOfRange | Code::Unimplemented => {
            ApiError::InvalidArgument(String::new())
        }
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => {
            ApiError::Internal(String::new())
        }
    };
    error.kind()
}

/// Notes the model an inference call names, for its outcome in metrics
/// ([`inference_outcomes`]), and says whether a worker answers it
/// (`crate::workers::grpc_forward`): a call sent to the worker is the worker's to
/// count, not this server's, unless it comes back without the worker's answer
/// (`crate::workers::GrpcForward::answer`); one refused here because the worker is
/// not ready is counted here.
pub(crate) fn inference_target(
    state: &ServerState,
    model: &str,
) -> Option<Result<crate::workers::GrpcForward, Status>> {
    crate::metrics::note_request_model(model);
    let target = crate::workers::grpc_forward(state, model);
    if let Some(Ok(_)) = target {
        crate::metrics::mark_request_recorded();
    }
    target
}

/// The gRPC status of a domain error. The one place this mapping is made.
pub fn status_from(error: ApiError) -> Status {
    // An inference call's outcome is this error's kind (`inference_outcomes`).
    crate::metrics::note_request_error(error.kind());
    match error {
        ApiError::InvalidArgument(m) => Status::invalid_argument(m),
        ApiError::NotFound(m) => Status::not_found(m),
        ApiError::PermissionDenied(m) => Status::permission_denied(m),
        ApiError::Conflict(m) => Status::failed_precondition(m),
        ApiError::PayloadTooLarge(m) => Status::resource_exhausted(m),
        ApiError::ResourceExhausted(m) => Status::resource_exhausted(m),
        ApiError::Unavailable(m) | ApiError::OutOfMemory(m) => Status::unavailable(m),
        ApiError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
        ApiError::RequestTimeout(m) => Status::deadline_exceeded(m),
        ApiError::Internal(m) => Status::internal(m),
    }
}

/// Who made a management call (set by the access layer), for the audit trail.
pub fn caller<T>(request: &tonic::Request<T>) -> crate::api::Caller {
    request
        .extensions()
        .get::<crate::api::Caller>()
        .cloned()
        .unwrap_or_default()
}

/// The deadline a client gave in `grpc-timeout` (`<digits><unit>`, unit one of
/// `H M S m u n`), or `None` when absent or malformed, as gRPC servers treat it.
pub fn client_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None; // the spec allows at most 8 digits
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Rewrites the codes tonic gives for a client's faults into the ones gRPC's own
/// implementations (and so TF Serving and Triton clients) expect:
/// * OUT_OF_RANGE for a message over the size limit → RESOURCE_EXHAUSTED
///   (ferroserve never answers OUT_OF_RANGE otherwise);
/// * INTERNAL for a request that does not decode as protobuf → INVALID_ARGUMENT,
///   told from a genuine internal error by the message tonic's prost codec gives
///   (prost's `DecodeError`, which no ferroserve error message starts with).
///
/// A decode failure arrives as a trailers-only response (status in the headers); an
/// encode failure in the trailers after the body, so both are rewritten.
#[derive(Debug, Clone, Copy)]
pub struct ClientStatusLayer;

impl<S> tower::Layer<S> for ClientStatusLayer {
    type Service = ClientStatus<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientStatus { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ClientStatus<S> {
    inner: S,
}

/// How the errors tonic's codec puts in an INTERNAL status for a request the
/// client sent wrong begin: prost's `DecodeError`, and a request body that is no
/// gRPC message (none at all, cut short, or an unknown compression flag). A
/// message flagged compressed without `grpc-encoding` stays INTERNAL, as the gRPC
/// compression spec requires.
const CLIENT_ERROR_PREFIXES: [&str; 5] = [
    "failed to decode Protobuf message",
    "Missing request message",
    "Unexpected EOF decoding stream",
    "protocol error: received message with invalid compression flag",
    "invalid compression flag",
];

/// The longest `grpc-message` sent, in bytes: clients refuse headers past 8 KiB,
/// and a message echoing a client's megabyte-long name would hide its status.
const MAX_MESSAGE_BYTES: usize = 1024;

fn fix_status(headers: &mut http::HeaderMap) {
    shorten_message(headers);
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32);
    let fixed = match code {
        Some(Code::OutOfRange) => Code::ResourceExhausted,
        Some(Code::Internal) if is_client_error(headers) => Code::InvalidArgument,
        _ => return,
    };
    headers.insert("grpc-status", http::HeaderValue::from(fixed as i32));
}

/// Cuts `grpc-message` (percent-encoded: ASCII) to [`MAX_MESSAGE_BYTES`], never
/// inside an escape, saying that it was cut.
fn shorten_message(headers: &mut http::HeaderMap) {
    let Some(message) = headers.get("grpc-message") else {
        return;
    };
    let bytes = message.as_bytes();
    if bytes.len() <= MAX_MESSAGE_BYTES {
        return;
    }
    let mut end = MAX_MESSAGE_BYTES;
    // An escape is `%XY`: never keep a `%` without its two digits.
    if let Some(percent) = bytes[end.saturating_sub(2)..end]
        .iter()
        .position(|&b| b == b'%')
    {
        end = end - 2 + percent;
    }
    // Nor part of a character: each byte of one past ASCII is an escape, and the
    // client decodes the message as UTF-8 (tonic answers UNKNOWN when it cannot).
    let continues = |at: &[u8]| {
        at.len() >= 3
            && at[0] == b'%'
            && std::str::from_utf8(&at[1..3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .is_some_and(|b| b & 0xC0 == 0x80)
    };
    while continues(&bytes[end..]) && end >= 3 && bytes[end - 3] == b'%' {
        end -= 3;
    }
    let mut shortened = bytes[..end].to_vec();
    shortened
        .extend_from_slice(format!("%20(cut:%20{}%20bytes%20in%20all)", bytes.len()).as_bytes());
    if let Ok(value) = http::HeaderValue::from_bytes(&shortened) {
        headers.insert("grpc-message", value);
    }
}

/// Whether `grpc-message` (percent-encoded by tonic: a space is `%20`) is one of
/// the codec's errors about what the client sent.
fn is_client_error(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| {
            let m = m.replace("%20", " ");
            CLIENT_ERROR_PREFIXES.iter().any(|p| m.starts_with(p))
        })
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for ClientStatus<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = http::Response<axum::body::Body>;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let (mut parts, body) = response.into_parts();
            fix_status(&mut parts.headers);
            let body = body.map_frame(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    fix_status(&mut trailers);
                    http_body::Frame::trailers(trailers)
                }
                Err(frame) => frame,
            });
            Ok(http::Response::from_parts(
                parts,
                axum::body::Body::new(body),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_parses_every_unit() {
        let mut m = tonic::metadata::MetadataMap::new();
        let mut at = |v: &'static str| {
            m.insert("grpc-timeout", v.parse().unwrap());
            client_timeout(&m)
        };
        assert_eq!(at("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(at("3M"), Some(Duration::from_secs(180)));
        assert_eq!(at("5S"), Some(Duration::from_secs(5)));
        assert_eq!(at("250m"), Some(Duration::from_millis(250)));
        assert_eq!(at("7u"), Some(Duration::from_micros(7)));
        assert_eq!(at("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(at("5x"), None);
        assert_eq!(at("S"), None);
        assert_eq!(at("123456789S"), None);
        assert_eq!(client_timeout(&tonic::metadata::MetadataMap::new()), None);
    }

    #[test]
    fn client_faults_get_the_codes_grpc_uses() {
        let fixed = |code: Code, message: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-status", http::HeaderValue::from(code as i32));
            headers.insert("grpc-message", message.parse().unwrap());
            fix_status(&mut headers);
            Code::from_i32(headers["grpc-status"].to_str().unwrap().parse().unwrap())
        };
        assert_eq!(
            fixed(
                Code::Internal,
                "failed%20to%20decode%20Protobuf%20message:%20invalid%20varint"
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            fixed(Code::Internal, "the%20model%20gave%20no%20output"),
            Code::Internal
        );
        assert_eq!(
            fixed(Code::OutOfRange, "too%20big"),
            Code::ResourceExhausted
        );
        assert_eq!(
            fixed(Code::NotFound, "failed%20to%20decode%20Protobuf%20message"),
            Code::NotFound
        );
        // A request body that is no gRPC message is the client's error too.
        for message in [
            "Missing%20request%20message.",
            "Unexpected%20EOF%20decoding%20stream.",
            "invalid%20compression%20flag:%202",
        ] {
            assert_eq!(fixed(Code::Internal, message), Code::InvalidArgument);
        }
    }

    #[test]
    fn long_messages_are_cut_outside_escapes() {
        for name_len in [2000, 2001, 2002, 2003] {
            let message = format!("model%20{}%2Fx%20not%20found", "n".repeat(name_len));
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-message", message.parse().unwrap());
            fix_status(&mut headers);
            let cut = headers["grpc-message"].to_str().unwrap();
            assert!(cut.len() < MAX_MESSAGE_BYTES + 64, "{}", cut.len());
            assert!(cut.starts_with("model%20nnn"), "{cut}");
            assert!(
                cut.ends_with(&format!("(cut:%20{}%20bytes%20in%20all)", message.len())),
                "{cut}"
            );
        }
        // An escape across the limit is dropped whole.
        for at in [MAX_MESSAGE_BYTES - 2, MAX_MESSAGE_BYTES - 1] {
            let message = format!("{}%2F{}", "a".repeat(at), "b".repeat(100));
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-message", message.parse().unwrap());
            shorten_message(&mut headers);
            let cut = headers["grpc-message"].to_str().unwrap();
            let kept = cut.split("%20(cut").next().unwrap();
            assert_eq!(kept, "a".repeat(at), "{at}");
        }
        // Nor inside a character: the rest must decode as UTF-8 (a tonic client
        // answers UNKNOWN otherwise).
        for pad in 0..6 {
            let text = format!("{}{}", "a".repeat(pad), "ж".repeat(600));
            let encoded: String = text
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let mut headers = http::HeaderMap::new();
            headers.insert(
                "grpc-status",
                http::HeaderValue::from(Code::NotFound as i32),
            );
            headers.insert("grpc-message", encoded.parse().unwrap());
            shorten_message(&mut headers);
            let decoded = tonic::Status::from_header_map(&headers).unwrap();
            assert_eq!(decoded.code(), Code::NotFound, "pad {pad}: {decoded:?}");
            assert!(decoded.message().contains("(cut:"), "{decoded:?}");
        }
        let mut short = http::HeaderMap::new();
        short.insert("grpc-message", "fine".parse().unwrap());
        shorten_message(&mut short);
        assert_eq!(short["grpc-message"], "fine");
    }

    #[test]
    fn every_error_has_its_code() {
        let m = || "m".to_string();
        let cases = [
            (ApiError::InvalidArgument(m()), Code::InvalidArgument),
            (ApiError::NotFound(m()), Code::NotFound),
            (ApiError::PermissionDenied(m()), Code::PermissionDenied),
            (ApiError::Conflict(m()), Code::FailedPrecondition),
            (ApiError::PayloadTooLarge(m()), Code::ResourceExhausted),
            (ApiError::ResourceExhausted(m()), Code::ResourceExhausted),
            (ApiError::Unavailable(m()), Code::Unavailable),
            (ApiError::OutOfMemory(m()), Code::Unavailable),
            (ApiError::DeadlineExceeded(m()), Code::DeadlineExceeded),
            (ApiError::RequestTimeout(m()), Code::DeadlineExceeded),
            (ApiError::Internal(m()), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(status_from(error).code(), code);
        }
    }
}
