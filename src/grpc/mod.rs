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
mod client_status;
pub mod health;
pub mod kserve;
mod send_watch;
pub mod tf_tensor;
pub mod tfs;
pub mod v2_tensor;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::api::{ApiError, ServerState};
pub use client_status::{ClientStatus, ClientStatusLayer};
pub(crate) use send_watch::watch_send;
pub use send_watch::SendTimeoutExecutor;

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
