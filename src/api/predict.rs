//! The predict operation: resolve a version, check and convert the inputs against
//! its signature, queue them on the version's batcher (`crate::batching`), which
//! runs them on an inference thread within the deadline (queue time counts).
//!
//! Invariant: what one request may cost is bounded here, for every adapter: rows
//! per request (`max_request_rows`, per model or the server's), each output named
//! at most once, and the answer's encoded size (`max_response_bytes`), estimated
//! from the output tensors before any adapter builds it.
//!
//! The response cache (`crate::cache`) sits here, between those checks and the
//! queue, so every protocol uses it: a hit skips the queue and the backend, and is
//! checked against the answer-size bound like any answer.

use std::time::{Duration, Instant};

use super::bounds::{check_response_size, check_rows, ResponseEncoding};
use super::inputs::{check_outputs, prepare_inputs};
use super::{ApiError, Protocol, ServerState};
use crate::backends::PredictOptions;
use crate::batching::{BatchError, QueuedRequest};
use crate::cache::{CacheKey, CacheStatus};
use crate::manager::{ServableHandle, VersionRequest};
use crate::metrics;
use crate::preprocess::Classification;
use crate::store::predictions::RequestId;
use crate::tensor::NamedTensor;

/// The header (REST) and gRPC metadata key of a request's id: read from a request
/// that is logged, and set on its answer to the id it was logged under.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Where a request's own id may be, looked at only when the request is logged
/// (`[log] sample_rate`): a request that is not costs nothing more for it (no
/// header lookup, no copy). Borrowed from the adapter, which holds the request
/// while it is answered.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientRequestId<'a> {
    /// The protocol's own request id (KServe V2 `id`, REST or gRPC); it goes first.
    pub given: Option<&'a str>,
    /// The request's HTTP headers or gRPC metadata, whose [`REQUEST_ID_HEADER`]
    /// goes next.
    pub headers: Option<&'a http::HeaderMap>,
}

impl ClientRequestId<'_> {
    /// The client's id a sampled request is logged under: the first of its ids
    /// the log can keep ([`RequestId::client`]); `None` (a generated one) if none.
    fn for_log(&self) -> Option<RequestId> {
        self.given.and_then(RequestId::client).or_else(|| {
            let header = self.headers?.get(REQUEST_ID_HEADER)?;
            RequestId::client(header.to_str().ok()?)
        })
    }
}

/// A decoded inference request, whatever protocol it came in on.
#[derive(Debug, Clone)]
pub struct PredictRequest {
    pub model: String,
    pub version: VersionRequest,
    /// Inputs by name. An empty name means "the model's only input" (TF Serving row
    /// format with plain values, the simple API).
    pub inputs: Vec<NamedTensor>,
    /// Outputs to return, in this order; empty means every output.
    pub outputs: Vec<String>,
    pub protocol: Protocol,
    /// A deadline the client asked for (gRPC `grpc-timeout`); the earlier of this
    /// and the model's timeout applies.
    pub client_timeout: Option<Duration>,
    /// Options for the backend (a fastText model's `k` and `threshold`).
    pub options: PredictOptions,
    /// The model's signature to run (TF Serving's `signature_name`); empty means
    /// the default. Only TF SavedModels have others.
    pub signature_name: String,
    /// Outputs to answer as their `k` best classes (`"score:index:label"` strings,
    /// the KServe / Triton classification extension), done by the version's
    /// pipeline after the batcher.
    pub classifications: Vec<Classification>,
}

impl PredictRequest {
    pub fn new(
        model: impl Into<String>,
        version: VersionRequest,
        protocol: Protocol,
    ) -> PredictRequest {
        PredictRequest {
            model: model.into(),
            version,
            inputs: Vec::new(),
            outputs: Vec::new(),
            protocol,
            client_timeout: None,
            options: PredictOptions::default(),
            signature_name: String::new(),
            classifications: Vec::new(),
        }
    }
}

#[derive(Clone)]
pub struct PredictResponse {
    /// The version that answered, which also describes the outputs.
    pub handle: ServableHandle,
    pub outputs: Vec<NamedTensor>,
    /// Whether the answer came from the response cache; `None` when the model's
    /// cache is off (or the server has no cache tier).
    pub cache: Option<CacheStatus>,
    /// The id the request was logged under, which the adapters tell the client
    /// ([`REQUEST_ID_HEADER`]); `None` when it was not logged.
    pub request_id: Option<RequestId>,
}

impl PredictResponse {
    pub fn model(&self) -> &str {
        &self.handle.model
    }
    pub fn version(&self) -> u64 {
        self.handle.version
    }
}

/// Runs a prediction. Records the request in metrics whatever the outcome.
pub async fn predict(
    state: &ServerState,
    request: PredictRequest,
) -> Result<PredictResponse, ApiError> {
    predict_resolved(state, request, None, ClientRequestId::default()).await
}

/// [`predict`], for a request that may carry its own id (`client_id`): if the
/// request is logged, it is logged under that id (see [`ClientRequestId`]).
pub async fn predict_with_id(
    state: &ServerState,
    request: PredictRequest,
    client_id: ClientRequestId<'_>,
) -> Result<PredictResponse, ApiError> {
    predict_resolved(state, request, None, client_id).await
}

/// Runs a prediction on a version the caller already holds (the simple API, which
/// laid the features out for that version): resolving it again by number could find
/// it unloading after a hot swap, and fail a request the old version can still
/// answer.
pub async fn predict_on(
    state: &ServerState,
    handle: ServableHandle,
    request: PredictRequest,
) -> Result<PredictResponse, ApiError> {
    predict_resolved(state, request, Some(handle), ClientRequestId::default()).await
}

/// [`predict_on`], for a request that may carry its own id, as [`predict_with_id`].
pub async fn predict_on_with_id(
    state: &ServerState,
    handle: ServableHandle,
    request: PredictRequest,
    client_id: ClientRequestId<'_>,
) -> Result<PredictResponse, ApiError> {
    predict_resolved(state, request, Some(handle), client_id).await
}

async fn predict_resolved(
    state: &ServerState,
    request: PredictRequest,
    held: Option<ServableHandle>,
    client_id: ClientRequestId<'_>,
) -> Result<PredictResponse, ApiError> {
    let started = Instant::now();
    let protocol = request.protocol;
    let handle = match held {
        Some(handle) => handle,
        None => match state.manager.resolve(&request.model, &request.version) {
            Ok(handle) => handle,
            Err(e) => {
                // The adapter's wrapper records the requests refused before this
                // point, and no other.
                metrics::mark_request_recorded();
                let e = ApiError::from(e);
                // `version=""`: no version was chosen. A model that is not served
                // here is not echoed into a label (a client could create unbounded
                // series by asking for random names); a version or label a served
                // model lacks is still that model's request.
                let model = match e {
                    ApiError::NotFound(_)
                        if !metrics::is_served(&state.manager, &request.model) =>
                    {
                        ""
                    }
                    _ => request.model.as_str(),
                };
                metrics::record_request(model, "", protocol.as_str(), e.kind(), started.elapsed());
                return Err(e);
            }
        },
    };
    let result = run(state, &handle, request, client_id, started).await;
    metrics::mark_request_recorded();
    // Every outcome of a request a version was chosen for is counted among that
    // version's series, so that they leave `/metrics` together. The usual case
    // records through handles the version registered when it loaded: no labels
    // formatted, no registry lookup.
    let counted = &handle.queue.metrics().answered;
    match result {
        Ok(Answer {
            outputs,
            cache,
            request_id,
        }) => {
            counted.record(protocol.as_str(), started.elapsed());
            Ok(PredictResponse {
                handle,
                outputs,
                cache,
                request_id,
            })
        }
        Err(e) => {
            counted.record_error(protocol.as_str(), e.kind(), started.elapsed());
            Err(e)
        }
    }
}

/// Refuses a request at once when the version it would reach has a full queue, so
/// that an adapter can answer 429 before reading a large body. Advisory: the queue
/// may drain meanwhile, and `predict` checks again; any other problem (unknown
/// model, bad input) is left for `predict` to report with the whole request.
pub fn admit(
    state: &ServerState,
    model: &str,
    version: &VersionRequest,
    protocol: Protocol,
) -> Result<(), ApiError> {
    let Ok(handle) = state.manager.resolve(model, version) else {
        return Ok(());
    };
    match handle.queue.refuse_if_full() {
        None => Ok(()),
        Some(refusal) => {
            let e = ApiError::ResourceExhausted(refusal.to_string());
            // Among the version's series, as `predict` counts a full queue.
            handle.queue.metrics().answered.record_error(
                protocol.as_str(),
                e.kind(),
                Duration::ZERO,
            );
            metrics::mark_request_recorded();
            Err(e)
        }
    }
}

/// What [`run`] answers.
struct Answer {
    outputs: Vec<NamedTensor>,
    /// Whether the response cache gave the outputs.
    cache: Option<CacheStatus>,
    /// The id the request was logged under, if it was.
    request_id: Option<RequestId>,
}

/// Answers `request` on the version `handle` holds.
async fn run(
    state: &ServerState,
    handle: &ServableHandle,
    mut request: PredictRequest,
    client_id: ClientRequestId<'_>,
    started: Instant,
) -> Result<Answer, ApiError> {
    // The version's timeout as it is now: a deployment may have changed it since load.
    let timeout = handle.timeout().unwrap_or(state.settings.request_timeout);
    let timeout = match request.client_timeout {
        Some(t) => t.min(timeout),
        None => timeout,
    };
    let deadline = started + timeout;
    let signature = handle
        .backend
        .signature_named(&request.signature_name)
        .ok_or_else(|| unknown_signature(&*handle.backend, &request.signature_name))?;
    // The default signature by name runs as the default: it batches with the rest.
    let signature_name = if std::ptr::eq(signature, handle.backend.signature()) {
        String::new()
    } else {
        std::mem::take(&mut request.signature_name)
    };
    // Pre-processing (`[preprocess]`, per version) before the inputs are checked
    // against the signature and queued, so decoded images batch with the rest. It
    // is CPU work, so it runs on a blocking thread, never on the async workers.
    let max_rows = handle
        .config()
        .max_request_rows
        .unwrap_or(state.settings.max_request_rows);
    let raw_inputs = if handle.pipeline.transforms_inputs() && signature_name.is_empty() {
        // The rows are known before the work: images or texts past the limit are
        // refused before any is decoded or tokenized.
        check_rows(&request.inputs, max_rows, handle)?;
        let pipeline = handle.pipeline.clone();
        let inputs = std::mem::take(&mut request.inputs);
        // The client is answered at its deadline; the work itself stops at its
        // next image once the deadline has passed or nobody waits any more (this
        // future dropped: the client left, or was answered).
        struct Abandon(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Abandon {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let stop = crate::preprocess::Stop {
            deadline: Some(deadline),
            abandoned: std::sync::Arc::default(),
        };
        let _abandon = Abandon(stop.abandoned.clone());
        let work = tokio::task::spawn_blocking(move || {
            crate::preprocess::with_stop(stop, || pipeline.prepare_inputs(inputs))
        });
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(prepared) => prepared
                .map_err(|e| ApiError::Internal(format!("pre-processing failed: {e}")))??,
            Err(_) => return Err(timed_out(handle, timeout)),
        }
    } else {
        std::mem::take(&mut request.inputs)
    };
    let mut raw_inputs = raw_inputs;
    let ignored = &handle.backend.traits().ignored_inputs;
    if !ignored.is_empty() {
        raw_inputs.retain(|(name, _)| !ignored.contains(name));
    }
    let inputs = prepare_inputs(signature, handle.config().input_name.as_deref(), raw_inputs)?;
    check_outputs(signature, &request.outputs)?;
    let pooling_mask = handle.pipeline.pooling_mask(&inputs);
    check_rows(&inputs, max_rows, handle)?;
    if Instant::now() >= deadline {
        return Err(timed_out(handle, timeout));
    }
    // The prediction log keeps a sample (cache hits included): the inputs are
    // copied, and the client's id looked for, only for the requests sampled; they
    // are turned into JSON by the store's writer, not here.
    let logged = sampled_for_log(state, handle).then(|| (inputs.clone(), client_id.for_log()));
    let encoding = ResponseEncoding::of(request.protocol);
    // The model's cache settings as they are now: `[cache]` edits apply at once.
    // The key names inputs and outputs only, neither a request's own options nor a
    // signature other than the default: only requests with neither are cached.
    // The version's content fingerprint is in the key; a version loaded with the
    // cache off has none yet, and is cached once it is computed.
    let cached = match &state.cache {
        Some(cache)
            if handle.config().cache.enabled
                && request.options.is_empty()
                && signature_name.is_empty() =>
        {
            handle.content().map(|content| {
                // Every output named in the model's order is the answer to none.
                let backend = &handle.backend;
                let unasked = backend
                    .signature()
                    .outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .filter(|name| backend.answers_unasked(name));
                let outputs = crate::cache::key::keyed_outputs(&request.outputs, unasked);
                (
                    cache,
                    CacheKey::new(&handle.model, handle.version, content, &inputs, outputs),
                )
            })
        }
        _ => None,
    };
    if let Some((cache, key)) = &cached {
        let counters = handle.queue.metrics().cache();
        let fits =
            |outputs: &[NamedTensor]| answer_fits(handle, &inputs, &request.outputs, outputs);
        if let Some(answer) = cache
            .lookup(key, &handle.model, counters, deadline, &fits)
            .await
        {
            let mut outputs = answer.outputs_for(&request.outputs).ok_or_else(|| {
                ApiError::Internal("a cached answer lacks an output its key names".into())
            })?;
            check_response_size(&outputs, encoding, state.settings.max_response_bytes)?;
            let request_id =
                log_prediction(state, handle, request.protocol, started, logged, &outputs);
            classify_outputs(
                handle,
                &mut outputs,
                &request.classifications,
                encoding,
                state,
            )?;
            return Ok(Answer {
                outputs,
                cache: Some(CacheStatus::Hit),
                request_id,
            });
        }
        if Instant::now() >= deadline {
            return Err(timed_out(handle, timeout));
        }
    }
    let classifications = std::mem::take(&mut request.classifications);
    let queued = QueuedRequest {
        inputs,
        outputs: request.outputs,
        deadline: Some(tokio::time::Instant::from_std(deadline)),
        options: request.options,
        signature: signature_name,
        // A job's thread never runs the model itself (see `QueuedRequest`).
        may_run_inline: request.protocol != Protocol::Job,
    };
    let mut outputs = match handle.queue.submit(&state.inference, queued).await {
        Ok(outputs) => outputs,
        Err(BatchError::DeadlineExceeded) => return Err(timed_out(handle, timeout)),
        Err(e @ BatchError::QueueFull { .. }) => {
            return Err(ApiError::ResourceExhausted(e.to_string()))
        }
        Err(e @ BatchError::ShutDown) => return Err(ApiError::Unavailable(e.to_string())),
        Err(BatchError::InvalidInput(m)) => return Err(ApiError::InvalidArgument(m)),
        Err(BatchError::Internal(m)) => return Err(ApiError::Internal(m)),
        Err(BatchError::OutOfMemory(m)) => return Err(ApiError::OutOfMemory(m)),
    };
    handle
        .pipeline
        .finish_answer(&mut outputs, pooling_mask.as_ref())?;
    check_response_size(&outputs, encoding, state.settings.max_response_bytes)?;
    let request_id = log_prediction(state, handle, request.protocol, started, logged, &outputs);
    // The cache keeps the version's answer (softmax included); a request's own
    // classification is applied after it, hit or miss.
    let cache = match cached {
        Some((cache, key)) => {
            let config = &handle.config().cache;
            cache
                .store(
                    key,
                    &handle.model,
                    &outputs,
                    config.ttl(),
                    config.admission,
                    handle.queue.metrics().cache(),
                )
                .await;
            Some(CacheStatus::Miss)
        }
        None => None,
    };
    classify_outputs(handle, &mut outputs, &classifications, encoding, state)?;
    Ok(Answer {
        outputs,
        cache,
        request_id,
    })
}

/// The classification extension a request asked for (`"classification": k` on an
/// output), then the answer-size bound again, as the strings replace numbers.
fn classify_outputs(
    handle: &ServableHandle,
    outputs: &mut [NamedTensor],
    classifications: &[Classification],
    encoding: ResponseEncoding,
    state: &ServerState,
) -> Result<(), ApiError> {
    if classifications.is_empty() {
        return Ok(());
    }
    handle.pipeline.classify_outputs(outputs, classifications)?;
    check_response_size(outputs, encoding, state.settings.max_response_bytes)
}

/// TF Serving's answer to a signature name the model lacks, naming the ones it has.
pub fn unknown_signature(backend: &dyn crate::backends::Backend, name: &str) -> ApiError {
    let names: Vec<String> = backend
        .signatures()
        .iter()
        .map(|s| format!("{:?}", s.name))
        .collect();
    let has = if names.is_empty() {
        "\"serving_default\"".to_string()
    } else {
        names.join(", ")
    };
    ApiError::InvalidArgument(format!(
        "serving signature name {name:?} not found; the model has {has}"
    ))
}

/// Whether this request goes to the prediction log (`[log] sample_rate`).
fn sampled_for_log(state: &ServerState, handle: &ServableHandle) -> bool {
    let rate = handle.config().log.sample_rate;
    state.store.is_some() && rate > 0.0 && (rate >= 1.0 || fastrand::f64() < rate)
}

/// Offers a sampled prediction (`logged`: its inputs and the client's id, if it
/// gave one the log keeps) to the log's buffer, and answers the id it is logged
/// under; never waits. Nothing for a request not sampled.
fn log_prediction(
    state: &ServerState,
    handle: &ServableHandle,
    protocol: super::Protocol,
    started: Instant,
    logged: Option<(Vec<NamedTensor>, Option<RequestId>)>,
    outputs: &[NamedTensor],
) -> Option<RequestId> {
    let (inputs, client_id) = logged?;
    let store = state.store.as_ref()?;
    let mut entry = crate::store::predictions::PendingPrediction::new(
        handle.model.clone(),
        handle.version,
        protocol.as_str(),
        started.elapsed(),
        inputs,
        outputs,
        &handle.config().log,
    );
    if let Some(id) = client_id {
        entry = entry.with_request_id(id);
    }
    let request_id = entry.request_id().clone();
    store.log_prediction(entry);
    Some(request_id)
}

/// Whether a cached answer found in Redis fits this request: exactly the outputs it
/// asked for (when it named none, those the model gives unasked: every output but
/// fastText's sentence vector, [`crate::backends::Backend::answers_unasked`]), each of the dtype
/// the signature gives it and, for an output with a batch dimension, as many rows
/// as the request has. Redis is shared: an entry written by something else (another
/// build, a hand) is not served.
fn answer_fits(
    handle: &ServableHandle,
    inputs: &[NamedTensor],
    requested: &[String],
    outputs: &[NamedTensor],
) -> bool {
    let specs = &handle.backend.signature().outputs;
    let wanted: Vec<&str> = if requested.is_empty() {
        specs
            .iter()
            .map(|s| s.name.as_str())
            .filter(|name| handle.backend.answers_unasked(name))
            .collect()
    } else {
        requested.iter().map(String::as_str).collect()
    };
    let rows = inputs
        .first()
        .and_then(|(_, t)| t.shape().first().copied())
        .filter(|&n| inputs.iter().all(|(_, t)| t.shape().first() == Some(&n)));
    outputs.len() == wanted.len()
        && outputs.iter().all(|(name, tensor)| {
            wanted.contains(&name.as_str())
                && specs.iter().find(|s| s.name == *name).is_some_and(|spec| {
                    spec.dtype == tensor.dtype()
                        && (!spec.has_batch_dim()
                            || rows.is_none()
                            || tensor.shape().first().copied() == rows)
                })
        })
}

fn timed_out(handle: &ServableHandle, timeout: Duration) -> ApiError {
    ApiError::DeadlineExceeded(format!(
        "request to model {:?} version {} did not finish within its timeout of {:?}",
        handle.model, handle.version, timeout
    ))
}
