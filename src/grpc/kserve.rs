//! KServe V2 / Open Inference Protocol over gRPC: `inference.GRPCInferenceService`,
//! with Triton's model-repository extension, its streaming inference
//! (`ModelStreamInfer`) and its model configuration and statistics extensions
//! (`ModelConfig`, `ModelStatistics`, answered from `api::triton` as the REST
//! routes are).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferroserve_proto::inference::{
    self as pb, grpc_inference_service_server, infer_parameter::ParameterChoice,
    model_infer_response::InferOutputTensor, model_metadata_response::TensorMetadata,
};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::v2_tensor::{
    dtype_from_v2, shape_from_v2, tensor_from_contents, tensor_from_raw, tensor_to_contents,
    tensor_to_raw,
};
use super::{client_timeout, status_from};
use crate::api::{
    self, repository, ApiError, PredictRequest, Protocol, ServerState, SERVER_NAME, SERVER_VERSION,
};
use crate::manager::VersionRequest;
use crate::tensor::{DataType, NamedTensor, TensorSpec};

/// Extensions this server implements over gRPC, as V2 server metadata lists them
/// (the REST list, `http::v2`'s, adds `binary_tensor_data`: gRPC carries raw
/// tensors in `raw_input_contents`, part of the core protocol).
pub const EXTENSIONS: [&str; 4] = [
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
];

#[derive(Clone)]
pub struct InferenceService {
    state: Arc<ServerState>,
    /// Cancelled at the stop signal: an open `ModelStreamInfer` stream then ends
    /// (after the request it is running) instead of holding the drain open for as
    /// long as its client keeps it.
    stop_streams: CancellationToken,
}

impl InferenceService {
    pub fn new(state: Arc<ServerState>, stop_streams: CancellationToken) -> InferenceService {
        InferenceService {
            state,
            stop_streams,
        }
    }
}

/// A client of a deployed model's worker (issue 14), with this server's limits.
fn inference_of(
    state: &ServerState,
    channel: tonic::transport::Channel,
) -> pb::grpc_inference_service_client::GrpcInferenceServiceClient<tonic::transport::Channel> {
    super::worker_client!(
        pb::grpc_inference_service_client::GrpcInferenceServiceClient<_>,
        state,
        channel
    )
}

/// A V2 version string: empty means the latest.
fn version_request(version: &str) -> Result<VersionRequest, ApiError> {
    if version.is_empty() {
        return Ok(VersionRequest::Latest);
    }
    // As the REST API reads `/versions/{v}`: `01` is version 1 there and here.
    crate::repository::parse_requested_version(version)
        .map(VersionRequest::Specific)
        .ok_or_else(|| ApiError::InvalidArgument(format!("{version:?} is not a model version")))
}

fn tensor_metadata(spec: &TensorSpec) -> TensorMetadata {
    TensorMetadata {
        name: spec.name.clone(),
        datatype: spec.dtype.v2_name().to_string(),
        shape: spec.v2_shape(),
    }
}

/// A parameter's value as a client reads it in an error: `the string "abc"`, `0`.
fn parameter_value(choice: &ParameterChoice) -> String {
    match choice {
        ParameterChoice::BoolParam(b) => format!("the boolean {b}"),
        ParameterChoice::Int64Param(n) => n.to_string(),
        ParameterChoice::Uint64Param(n) => n.to_string(),
        // Written as a double (`2.0`, not `2`): a whole double refused where an
        // integer is wanted read as if the integer were refused.
        ParameterChoice::DoubleParam(x) => format!("the double {x:?}"),
        ParameterChoice::StringParam(t) => format!("the string {t:?}"),
    }
}

/// The shared-memory extension's parameters, which this server does not offer:
/// refused by name (an output's region was ignored and its data sent in the answer).
fn refuse_shared_memory(
    parameters: &std::collections::HashMap<String, pb::InferParameter>,
    what: &str,
) -> Result<(), ApiError> {
    match parameters.keys().find(|k| k.starts_with("shared_memory_")) {
        Some(key) => Err(ApiError::InvalidArgument(format!(
            "{what}: parameter {key:?}: the shared-memory extension is not supported; \
             send the data in the request"
        ))),
        None => Ok(()),
    }
}

/// Triton's request parameter `timeout`: microseconds.
fn timeout_parameter(
    parameters: &std::collections::HashMap<String, pb::InferParameter>,
) -> Result<Option<Duration>, ApiError> {
    match parameters
        .get("timeout")
        .and_then(|p| p.parameter_choice.as_ref())
    {
        None => Ok(None),
        Some(ParameterChoice::Int64Param(us)) if *us > 0 => {
            Ok(Some(Duration::from_micros(*us as u64)))
        }
        Some(ParameterChoice::Uint64Param(us)) if *us > 0 => Ok(Some(Duration::from_micros(*us))),
        Some(other) => Err(ApiError::InvalidArgument(format!(
            "parameter \"timeout\" must be a positive number of microseconds, not {}",
            parameter_value(other)
        ))),
    }
}

/// The classification extension: `"classification": k` on a requested output.
fn classifications(
    request: &pb::ModelInferRequest,
) -> Result<Vec<crate::preprocess::Classification>, ApiError> {
    let mut out = Vec::new();
    for o in &request.outputs {
        let k = match o
            .parameters
            .get("classification")
            .and_then(|p| p.parameter_choice.as_ref())
        {
            None => continue,
            Some(ParameterChoice::Int64Param(k)) if *k >= 1 => *k as u64,
            Some(ParameterChoice::Uint64Param(k)) if *k >= 1 => *k,
            Some(other) => {
                return Err(ApiError::InvalidArgument(format!(
                    "parameter \"classification\" of output {:?} must be an integer of 1 or more, not {}",
                    o.name,
                    parameter_value(other)
                )))
            }
        };
        out.push(crate::preprocess::Classification {
            output: o.name.clone(),
            k: usize::try_from(k).unwrap_or(usize::MAX),
        });
    }
    Ok(out)
}

/// A fastText model's `k` (an integer, 1 or more, or -1) and `threshold` (a
/// number) from the request's parameters.
fn predict_options(
    parameters: &std::collections::HashMap<String, pb::InferParameter>,
) -> Result<crate::backends::PredictOptions, ApiError> {
    let choice = |name: &str| {
        parameters
            .get(name)
            .and_then(|p| p.parameter_choice.as_ref())
    };
    let k = match choice("k") {
        None => None,
        Some(ParameterChoice::Int64Param(k))
            if *k == -1 || (1..=i64::from(i32::MAX)).contains(k) =>
        {
            Some(*k as i32)
        }
        Some(ParameterChoice::Uint64Param(k)) if (1..=i32::MAX as u64).contains(k) => {
            Some(*k as i32)
        }
        Some(other) => {
            return Err(ApiError::InvalidArgument(format!(
                "parameter \"k\" must be an integer of 1 or more, or -1 for every label, not {}",
                parameter_value(other)
            )))
        }
    };
    let threshold = match choice("threshold") {
        None => None,
        Some(ParameterChoice::DoubleParam(t)) if t.is_finite() => Some(*t as f32),
        Some(ParameterChoice::Int64Param(t)) => Some(*t as f32),
        Some(ParameterChoice::Uint64Param(t)) => Some(*t as f32),
        Some(other) => {
            return Err(ApiError::InvalidArgument(format!(
                "parameter \"threshold\" must be a number, not {}",
                parameter_value(other)
            )))
        }
    };
    Ok(crate::backends::PredictOptions { k, threshold })
}

/// Decodes the inputs, from `raw_input_contents` (one entry per input, in order) when
/// the request has any, else from each input's typed `contents`, which are taken out
/// of the request (moved into the tensors, not copied).
pub fn decode_inputs(request: &mut pb::ModelInferRequest) -> Result<Vec<NamedTensor>, ApiError> {
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(ApiError::InvalidArgument(format!(
            "raw_input_contents has {} entries for {} inputs; give one per input or none",
            raw.len(),
            request.inputs.len()
        )));
    }
    request
        .inputs
        .iter_mut()
        .enumerate()
        .map(|(i, input)| {
            let name = input.name.as_str();
            refuse_shared_memory(&input.parameters, &format!("input {name:?}"))?;
            let dtype = dtype_from_v2(name, &input.datatype)?;
            let shape = shape_from_v2(name, &input.shape)?;
            let tensor = if raw.is_empty() {
                let contents = input.contents.take().unwrap_or_default();
                tensor_from_contents(name, dtype, shape, contents)?
            } else {
                if input.contents.is_some() {
                    return Err(ApiError::InvalidArgument(format!(
                        "input {name:?} has contents although the request uses raw_input_contents"
                    )));
                }
                tensor_from_raw(name, dtype, shape, &raw[i])?
            };
            Ok((name.to_string(), tensor))
        })
        .collect()
}

#[tonic::async_trait]
impl grpc_inference_service_server::GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse {
            live: self.state.is_live(),
        }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    /// Ready when the version resolves, as the REST `/ready` route answers 200; any
    /// model that is not (unknown, loading, failed) is `ready: false`, as Triton says it.
    /// After the stop signal (the drain of `--shutdown-delay`) no model is ready, as
    /// the server is not (a deployed model's worker is not asked). A deployed model
    /// whose worker cannot answer (starting, restarting, in crash-loop, or gone
    /// mid-call) is not ready either: `false`, not the UNAVAILABLE of its other calls,
    /// so that a client polling readiness sees an answer.
    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let not_ready = || Ok(Response::new(pb::ModelReadyResponse { ready: false }));
        if self.state.is_draining() {
            return not_ready();
        }
        if let Some(forward) = crate::workers::grpc_forward(&self.state, &request.get_ref().name) {
            let Ok(forward) = forward else {
                return not_ready();
            };
            return match forward
                .answer(inference_of(&self.state, forward.channel()).model_ready(request))
                .await
            {
                Err(status) if status.code() == tonic::Code::Unavailable => not_ready(),
                answer => answer,
            };
        }
        let request = request.into_inner();
        let version = version_request(&request.version).map_err(status_from)?;
        Ok(Response::new(pb::ModelReadyResponse {
            ready: self.state.manager.resolve(&request.name, &version).is_ok(),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.to_string(),
            version: SERVER_VERSION.to_string(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        if let Some(forward) = crate::workers::grpc_forward(&self.state, &request.get_ref().name) {
            let forward = forward?;
            return forward
                .answer(inference_of(&self.state, forward.channel()).model_metadata(request))
                .await;
        }
        let request = request.into_inner();
        let version = version_request(&request.version).map_err(status_from)?;
        let meta =
            api::model_metadata(&self.state, &request.name, &version).map_err(status_from)?;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: meta.name.clone(),
            versions: meta
                .available_versions
                .iter()
                .map(|v| v.to_string())
                .collect(),
            platform: meta.platform().to_string(),
            inputs: meta.signature.inputs.iter().map(tensor_metadata).collect(),
            outputs: meta.signature.outputs.iter().map(tensor_metadata).collect(),
        }))
    }

    /// Answers in the form the request used: raw outputs for raw inputs (tritonclient's
    /// default), typed `contents` otherwise, except that FP16, which has no typed field,
    /// makes every output raw.
    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        // A model deployed in a worker process is answered by it (issue 14).
        if let Some(forward) = super::inference_target(&self.state, &request.get_ref().model_name) {
            let forward = forward?;
            return forward
                .answer(inference_of(&self.state, forward.channel()).model_infer(request))
                .await;
        }
        let deadline = client_timeout(request.metadata());
        // The metadata is kept for `x-request-id`, read only if the request is logged.
        let (metadata, _, mut request) = request.into_parts();
        let version = version_request(&request.model_version).map_err(status_from)?;
        let parameter_timeout = timeout_parameter(&request.parameters).map_err(status_from)?;
        let mut predict =
            PredictRequest::new(request.model_name.clone(), version, Protocol::V2Grpc);
        predict.client_timeout = match (deadline, parameter_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        predict.inputs = decode_inputs(&mut request).map_err(status_from)?;
        for o in &request.outputs {
            refuse_shared_memory(&o.parameters, &format!("output {:?}", o.name))
                .map_err(status_from)?;
        }
        predict.outputs = request.outputs.iter().map(|o| o.name.clone()).collect();
        predict.classifications = classifications(&request).map_err(status_from)?;
        predict.options = predict_options(&request.parameters).map_err(status_from)?;
        // The request's `id`, else its `x-request-id` metadata, is the id the
        // prediction log keeps it under, if it is logged.
        let client_id = api::predict::ClientRequestId {
            given: Some(&request.id),
            headers: Some(metadata.as_ref()),
        };
        let response = api::predict::predict_with_id(&self.state, predict, client_id)
            .await
            .map_err(status_from)?;

        let raw = !request.raw_input_contents.is_empty()
            || response
                .outputs
                .iter()
                .any(|(_, t)| t.dtype() == DataType::F16);
        let mut raw_output_contents = Vec::new();
        let outputs = response
            .outputs
            .iter()
            .map(|(name, tensor)| {
                let contents = if raw {
                    raw_output_contents.push(tensor_to_raw(tensor.data()));
                    None
                } else {
                    tensor_to_contents(tensor.data())
                };
                InferOutputTensor {
                    name: name.clone(),
                    datatype: tensor.dtype().v2_name().to_string(),
                    shape: tensor.shape().iter().map(|&d| d as i64).collect(),
                    parameters: Default::default(),
                    contents,
                }
            })
            .collect();
        Ok(super::with_request_id_metadata(
            super::with_cache_metadata(
                pb::ModelInferResponse {
                    model_name: response.model().to_string(),
                    model_version: response.version().to_string(),
                    id: request.id,
                    parameters: Default::default(),
                    outputs,
                    raw_output_contents,
                },
                response.cache,
            ),
            response.request_id.as_ref(),
        ))
    }

    type ModelStreamInferStream = tonic::codegen::BoxStream<pb::ModelStreamInferResponse>;

    /// Triton's streaming inference: each request answered, in order, by one
    /// [`pb::ModelStreamInferResponse`], through [`Self::model_infer`] (the same
    /// limits, deadlines, access and prediction log as a `ModelInfer` call). A
    /// request that fails is answered with its `error_message` and the stream goes
    /// on, as in Triton. See [`answer_stream`].
    async fn model_stream_infer(
        &self,
        request: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let deadline = client_timeout(request.metadata()).map(|t| Instant::now() + t);
        let (metadata, _, inbound) = request.into_parts();
        Ok(Response::new(answer_stream(
            self.clone(),
            StreamCall { metadata, deadline },
            inbound,
        )))
    }

    /// Triton's model configuration extension: the answer of
    /// `GET /v2/models/{m}[/versions/{v}]/config`, as protobuf.
    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        if let Some(forward) = crate::workers::grpc_forward(&self.state, &request.get_ref().name) {
            let forward = forward?;
            return forward
                .answer(inference_of(&self.state, forward.channel()).model_config(request))
                .await;
        }
        let request = request.into_inner();
        let version = version_request(&request.version).map_err(status_from)?;
        let config =
            api::triton::model_config(&self.state, &request.name, &version).map_err(status_from)?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(model_config_message(config)),
        }))
    }

    /// Triton's statistics extension: the answer of `GET /v2/models/stats` (no
    /// name; a version is then ignored, as Triton ignores it) or
    /// `/v2/models/{m}[/versions/{v}]/stats`, as protobuf.
    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let name = &request.get_ref().name;
        if !name.is_empty() {
            if let Some(forward) = crate::workers::grpc_forward(&self.state, name) {
                let forward = forward?;
                return forward
                    .answer(inference_of(&self.state, forward.channel()).model_statistics(request))
                    .await;
            }
        }
        let request = request.into_inner();
        let stats = if request.name.is_empty() {
            api::triton::statistics(&self.state, &api::triton::serving_models(&self.state), None)
        } else {
            let version = match request.version.as_str() {
                "" => None,
                v => Some(version_request(v).map_err(status_from)?),
            };
            api::triton::statistics(&self.state, &[request.name], version.as_ref())
        }
        .map_err(status_from)?;
        Ok(Response::new(pb::ModelStatisticsResponse {
            model_stats: stats.iter().map(statistics_message).collect(),
        }))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let request = request.into_inner();
        check_repository_name(&request.repository_name)?;
        let models = repository::repository_index(&self.state, request.ready)
            .into_iter()
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.model,
                version: e.version.map(|v| v.to_string()).unwrap_or_default(),
                state: e.state.to_string(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let caller = super::caller(&request);
        let request = request.into_inner();
        check_repository_name(&request.repository_name)?;
        if let Some(name) = request.parameters.keys().next() {
            return Err(status_from(ApiError::InvalidArgument(format!(
                "load parameter {name:?} is not supported: models load from the repository as they are on disk"
            ))));
        }
        repository::load_model(&self.state, &request.model_name, &caller)
            .await
            .map_err(status_from)?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let caller = super::caller(&request);
        let request = request.into_inner();
        check_repository_name(&request.repository_name)?;
        repository::unload_model(&self.state, &request.model_name, &caller)
            .await
            .map_err(status_from)?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}

/// What a `ModelStreamInfer` call's requests share: the call's metadata (its
/// `authorization`, `x-request-id`, ...) and its deadline.
struct StreamCall {
    metadata: MetadataMap,
    /// The call's `grpc-timeout` from its start: it bounds every request of the
    /// stream, each given what is left of it.
    deadline: Option<Instant>,
}

impl StreamCall {
    /// One request of the stream as a `ModelInfer` call: the stream's metadata,
    /// with what is left of its deadline as the request's `grpc-timeout`.
    fn request(&self, message: pb::ModelInferRequest) -> Request<pb::ModelInferRequest> {
        let mut metadata = self.metadata.clone();
        metadata.remove("grpc-timeout");
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            // A deadline already past is the smallest one, not none (`0n` is read
            // as no deadline by nothing, but 1ns says it plainly).
            let value = grpc_timeout(left.max(Duration::from_nanos(1)));
            if let Ok(value) = value.parse() {
                metadata.insert("grpc-timeout", value);
            }
        }
        Request::from_parts(metadata, Default::default(), message)
    }
}

/// A `grpc-timeout` value (at most 8 digits and a unit) for `d`, rounded up.
fn grpc_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    for (unit, per) in [
        ("n", 1u128),
        ("u", 1_000),
        ("m", 1_000_000),
        ("S", 1_000_000_000),
    ] {
        let n = nanos.div_ceil(per);
        if n <= MAX {
            return format!("{n}{unit}");
        }
    }
    format!("{MAX}S")
}

/// The answers of a `ModelStreamInfer` call: one request at a time, read only once
/// the previous one is answered and its answer taken by the client, so a stream has
/// one request in flight and its answers keep the requests' order. A request that
/// fails (in the adapter, in `api::predict`, or past the send limit) is answered
/// with its `error_message`; a message that is no valid request (not protobuf, over
/// the receive limit) ends the stream with its status, as the message framing
/// cannot be trusted after it. At the stop signal the stream ends UNAVAILABLE
/// after the request it is running.
fn answer_stream(
    service: InferenceService,
    call: StreamCall,
    inbound: Streaming<pb::ModelInferRequest>,
) -> tonic::codegen::BoxStream<pb::ModelStreamInferResponse> {
    let max_send_bytes = super::MessageLimits::of(&service.state.settings).max_send_bytes;
    let stream = futures::stream::unfold(Some((service, call, inbound)), move |open| async move {
        let (service, call, mut inbound) = open?;
        let message = tokio::select! {
            biased;
            () = service.stop_streams.cancelled() => {
                return Some((Err(Status::unavailable("the server is shutting down")), None));
            }
            message = inbound.message() => message,
        };
        let message = match message {
            Ok(Some(message)) => message,
            Ok(None) => return None,
            Err(status) => return Some((Err(status), None)),
        };
        let answer = infer_one(&service, call.request(message), max_send_bytes).await;
        Some((Ok(answer), Some((service, call, inbound))))
    });
    Box::pin(stream)
}

/// One request of a stream, answered as `ModelInfer` answers it, and counted in
/// metrics as a `ModelInfer` call is (`grpc::record_unrecorded_outcome` for a
/// request refused before `api::predict`).
async fn infer_one(
    service: &InferenceService,
    request: Request<pb::ModelInferRequest>,
    max_send_bytes: usize,
) -> pb::ModelStreamInferResponse {
    use grpc_inference_service_server::GrpcInferenceService;
    use prost::Message;

    let started = Instant::now();
    let (result, tally) = crate::metrics::tally_request(service.model_infer(request)).await;
    let answer = match result {
        Ok(response) => pb::ModelStreamInferResponse {
            error_message: String::new(),
            infer_response: Some(response.into_inner()),
        },
        Err(status) => {
            super::record_unrecorded_outcome(
                &service.state,
                Protocol::V2Grpc,
                &tally,
                status.code(),
                started,
            );
            return pb::ModelStreamInferResponse {
                error_message: status.message().to_string(),
                infer_response: None,
            };
        }
    };
    // Over the send limit, tonic would end the whole stream: only this request fails.
    let size = answer.encoded_len();
    if size > max_send_bytes {
        return pb::ModelStreamInferResponse {
            error_message: format!(
                "the response is {size} bytes, over the server's limit of {max_send_bytes} \
                 (--grpc-max-send-bytes)"
            ),
            infer_response: None,
        };
    }
    answer
}

/// [`api::triton::ModelConfig`] as Triton's `ModelConfig` message.
fn model_config_message(config: api::triton::ModelConfig) -> pb::ModelConfig {
    use crate::model_config::VersionPolicy;
    use pb::model_version_policy::{All, Latest, PolicyChoice, Specific};

    let policy = match config.version_policy {
        VersionPolicy::Latest(n) => PolicyChoice::Latest(Latest {
            num_versions: u32::try_from(n).unwrap_or(u32::MAX),
        }),
        VersionPolicy::All => PolicyChoice::All(All {}),
        VersionPolicy::Specific(versions) => PolicyChoice::Specific(Specific {
            versions: versions
                .into_iter()
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
                .collect(),
        }),
    };
    pb::ModelConfig {
        name: config.name,
        platform: config.platform.to_string(),
        backend: config.backend.to_string(),
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(policy),
        }),
        max_batch_size: i32::try_from(config.max_batch_size).unwrap_or(i32::MAX),
        input: config
            .input
            .into_iter()
            .map(|t| pb::ModelInput {
                name: t.name,
                data_type: config_data_type(t.dtype) as i32,
                dims: t.dims,
                ..Default::default()
            })
            .collect(),
        output: config
            .output
            .into_iter()
            .map(|t| pb::ModelOutput {
                name: t.name,
                data_type: config_data_type(t.dtype) as i32,
                dims: t.dims,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Triton's `DataType` of a tensor's datatype (BYTES is `TYPE_STRING`), the enum
/// value of the name `api::triton::triton_data_type` gives.
fn config_data_type(dtype: DataType) -> pb::DataType {
    match dtype {
        DataType::Bool => pb::DataType::TypeBool,
        DataType::U8 => pb::DataType::TypeUint8,
        DataType::U16 => pb::DataType::TypeUint16,
        DataType::U32 => pb::DataType::TypeUint32,
        DataType::U64 => pb::DataType::TypeUint64,
        DataType::I8 => pb::DataType::TypeInt8,
        DataType::I16 => pb::DataType::TypeInt16,
        DataType::I32 => pb::DataType::TypeInt32,
        DataType::I64 => pb::DataType::TypeInt64,
        DataType::F16 => pb::DataType::TypeFp16,
        DataType::F32 => pb::DataType::TypeFp32,
        DataType::F64 => pb::DataType::TypeFp64,
        DataType::Bytes => pb::DataType::TypeString,
    }
}

/// [`api::triton::VersionStatistics`] as Triton's `ModelStatistics` message; what
/// ferroserve does not measure is 0 or empty, as in the REST answer.
fn statistics_message(s: &api::triton::VersionStatistics) -> pb::ModelStatistics {
    let duration = |d: api::triton::StatisticDuration| {
        Some(pb::StatisticDuration {
            count: d.count,
            ns: d.ns,
        })
    };
    let none = api::triton::StatisticDuration::default();
    pb::ModelStatistics {
        name: s.name.clone(),
        version: s.version.to_string(),
        last_inference: 0,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(pb::InferStatistics {
            success: duration(s.success),
            fail: duration(s.fail),
            queue: duration(s.queue),
            compute_input: duration(none),
            compute_infer: duration(s.compute_infer),
            compute_output: duration(none),
            cache_hit: duration(s.cache_hit),
            cache_miss: duration(s.cache_miss),
        }),
        batch_stats: Vec::new(),
        memory_usage: Vec::new(),
        response_stats: Default::default(),
    }
}

/// The server has one repository; a client may leave the name empty.
fn check_repository_name(name: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Ok(());
    }
    Err(status_from(ApiError::NotFound(format!(
        "repository {name:?} not found; this server has one repository, named \"\""
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_parameter_is_told_by_its_value_not_its_rust_type() {
        let with = |choice| {
            let mut p = std::collections::HashMap::new();
            p.insert(
                "timeout".to_string(),
                pb::InferParameter {
                    parameter_choice: Some(choice),
                },
            );
            timeout_parameter(&p).unwrap_err().to_string()
        };
        let e = with(ParameterChoice::StringParam("abc".into()));
        assert!(e.ends_with("microseconds, not the string \"abc\""), "{e}");
        let e = with(ParameterChoice::Int64Param(0));
        assert!(e.ends_with("not 0"), "{e}");
    }

    /// Server metadata listed only `model_repository`, though the classification
    /// extension (`"classification": k` on an output) is served; then not the
    /// model configuration and statistics extensions (`ModelConfig`,
    /// `ModelStatistics`), served too.
    #[test]
    fn server_metadata_lists_the_extensions_served() {
        assert_eq!(
            EXTENSIONS.to_vec(),
            [
                "classification",
                "model_configuration",
                "model_repository",
                "statistics"
            ]
        );
    }

    #[test]
    fn a_stream_deadline_is_written_in_at_most_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_nanos(1)), "1n");
        assert_eq!(grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(grpc_timeout(Duration::from_secs(3600)), "3600000m");
        assert_eq!(grpc_timeout(Duration::from_secs(1 << 40)), "99999999S");
        for d in [Duration::from_nanos(1_234_567), Duration::from_secs(200)] {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", grpc_timeout(d).parse().unwrap());
            assert!(client_timeout(&m).unwrap() >= d, "{d:?}");
        }
    }

    /// Every datatype has Triton's enum value of the name the REST answer writes.
    #[test]
    fn config_data_types_are_the_names_rest_writes() {
        for dtype in DataType::ALL {
            assert_eq!(
                config_data_type(dtype).as_str_name(),
                api::triton::triton_data_type(dtype),
                "{dtype:?}"
            );
        }
    }

    /// A threshold is any number: an unsigned integer too, as `k` may be one.
    #[test]
    fn a_threshold_may_be_an_unsigned_integer() {
        let with = |name: &str, choice| {
            let mut p = std::collections::HashMap::new();
            p.insert(
                name.to_string(),
                pb::InferParameter {
                    parameter_choice: Some(choice),
                },
            );
            predict_options(&p)
        };
        let options = with("threshold", ParameterChoice::Uint64Param(1)).unwrap();
        assert_eq!(options.threshold, Some(1.0));
        let options = with("k", ParameterChoice::Uint64Param(2)).unwrap();
        assert_eq!(options.k, Some(2));
        let e = with("threshold", ParameterChoice::StringParam("x".into())).unwrap_err();
        assert!(e.to_string().contains("must be a number"), "{e}");
    }
}
