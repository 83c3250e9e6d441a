//! TF Serving gRPC: `tensorflow.serving.PredictionService` (Predict, Classify, Regress,
//! MultiInference, GetModelMetadata) and `tensorflow.serving.ModelService`
//! (GetModelStatus, HandleReloadConfigRequest).

use std::collections::HashMap;
use std::sync::Arc;

use ferroserve_proto::tensorflow::error::Code as TfCode;
use ferroserve_proto::tensorflow::serving::{
    self as pb, inference_result, input, model_server_config, model_service_server,
    model_version_status, prediction_service_server, ModelSpec, VersionChoice,
    SIGNATURE_DEF_MAP_TYPE_URL,
};
use ferroserve_proto::tensorflow::{feature, Example as TfExample, SignatureDef, TensorInfo};
use prost::Message;
use tonic::{Request, Response, Status};

use super::tf_tensor::{spec_shape, tensor_from_proto, tensor_to_proto, to_tf_dtype, DecodeLimits};
use super::{client_timeout, status_from};
use crate::api::classify::{self, Example, ExamplesRequest, FeatureValues};
use crate::api::{self, repository, ApiError, PredictRequest, Protocol, ServerState};
use crate::manager::{VersionRequest, VersionState};
use crate::model_config::VersionPolicy;
use crate::tensor::TensorSpec;

/// The one signature ferroserve models have, TF Serving's default key.
pub const DEFAULT_SIGNATURE: &str = "serving_default";
const PREDICT_METHOD: &str = "tensorflow/serving/predict";
const CLASSIFY_METHOD: &str = "tensorflow/serving/classify";
const REGRESS_METHOD: &str = "tensorflow/serving/regress";

fn invalid(message: impl Into<String>) -> Status {
    status_from(ApiError::InvalidArgument(message.into()))
}

/// The model name and version a ModelSpec asks for. A spec that names both a version
/// and a label is refused (see `ferroserve_proto`'s `ModelSpec`).
fn model_and_version(spec: Option<&ModelSpec>) -> Result<(String, VersionRequest), ApiError> {
    let spec = spec.ok_or_else(|| ApiError::InvalidArgument("model_spec is required".into()))?;
    if spec.name.is_empty() {
        return Err(ApiError::InvalidArgument(
            "model_spec.name is required".into(),
        ));
    }
    let version = match spec.version_choice() {
        Ok(VersionChoice::Latest) => VersionRequest::Latest,
        Ok(VersionChoice::Version(v)) => {
            VersionRequest::Specific(u64::try_from(v).map_err(|_| {
                ApiError::InvalidArgument(format!("model_spec.version {v} is negative"))
            })?)
        }
        Ok(VersionChoice::Label(label)) => VersionRequest::Label(label.to_string()),
        Err(both) => {
            return Err(ApiError::InvalidArgument(format!(
                "model_spec gives both version {} and version_label {:?}; give one",
                both.version, both.label
            )))
        }
    };
    Ok((spec.name.clone(), version))
}

/// The model a spec names ("" when none: never a deployed model).
fn spec_model(spec: Option<&ModelSpec>) -> &str {
    spec.map_or("", |s| s.name.as_str())
}

/// A client of a deployed model's worker (issue 14), with this server's limits.
fn predictions_of(
    state: &ServerState,
    channel: tonic::transport::Channel,
) -> pb::prediction_service_client::PredictionServiceClient<tonic::transport::Channel> {
    super::worker_client!(
        pb::prediction_service_client::PredictionServiceClient<_>,
        state,
        channel
    )
}

/// The signature a request ran: the one it named, else `backend`'s default.
fn signature_used(spec: Option<&ModelSpec>, backend: &dyn crate::backends::Backend) -> String {
    match spec.map(|s| s.signature_name.as_str()) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => default_signature_name(backend),
    }
}

/// The name of the signature a request without one ran: the model's default, which
/// a SavedModel without `serving_default` names otherwise (its first).
fn default_signature_name(backend: &dyn crate::backends::Backend) -> String {
    let default = backend.signature();
    backend
        .signatures()
        .iter()
        .find(|s| std::ptr::eq(&s.signature, default))
        .map_or_else(|| DEFAULT_SIGNATURE.to_string(), |s| s.name.clone())
}

/// The spec a response carries: the model and the version that answered.
fn answered_spec(model: &str, version: u64) -> ModelSpec {
    ModelSpec {
        name: model.to_string(),
        version: Some(version as i64),
        version_label: None,
        signature_name: DEFAULT_SIGNATURE.to_string(),
    }
}

fn tensor_info(spec: &TensorSpec) -> TensorInfo {
    TensorInfo {
        dtype: to_tf_dtype(spec.dtype) as i32,
        tensor_shape: Some(spec_shape(spec)),
        encoding: Some(ferroserve_proto::tensorflow::tensor_info::Encoding::Name(
            spec.name.clone(),
        )),
    }
}

/// The SignatureDefs of a version: a SavedModel's own (graph tensor names
/// included), else the one signature other formats have, under `serving_default`.
fn signature_defs(meta: &api::ModelMetadata) -> HashMap<String, SignatureDef> {
    if meta.signatures.is_empty() {
        let infos = |specs: &[TensorSpec]| {
            specs
                .iter()
                .map(|s| (s.name.clone(), tensor_info(s)))
                .collect()
        };
        let signature = SignatureDef {
            inputs: infos(&meta.signature.inputs),
            outputs: infos(&meta.signature.outputs),
            method_name: PREDICT_METHOD.to_string(),
        };
        return HashMap::from([(DEFAULT_SIGNATURE.to_string(), signature)]);
    }
    let infos = |specs: &[TensorSpec], names: &[String]| {
        specs
            .iter()
            .zip(names)
            .map(|(spec, graph_name)| {
                let mut info = tensor_info(spec);
                info.encoding = Some(ferroserve_proto::tensorflow::tensor_info::Encoding::Name(
                    graph_name.clone(),
                ));
                (spec.name.clone(), info)
            })
            .collect()
    };
    meta.signatures
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                SignatureDef {
                    inputs: infos(&s.signature.inputs, &s.input_tensors),
                    outputs: infos(&s.signature.outputs, &s.output_tensors),
                    method_name: s.method_name.clone(),
                },
            )
        })
        .collect()
}

pub struct PredictionService {
    state: Arc<ServerState>,
}

impl PredictionService {
    pub fn new(state: Arc<ServerState>) -> PredictionService {
        PredictionService { state }
    }

    async fn examples(
        &self,
        spec: Option<&ModelSpec>,
        input: Option<&pb::Input>,
        timeout: Option<std::time::Duration>,
        metadata: tonic::metadata::MetadataMap,
    ) -> Result<ExamplesRequest, ApiError> {
        let (model, version) = model_and_version(spec)?;
        Ok(ExamplesRequest {
            model,
            version,
            examples: examples_from_input(input)?,
            protocol: Protocol::TfServingGrpc,
            client_timeout: timeout,
            // `crate::api::classify` checks it against the model's signatures.
            signature_name: spec.map(|s| s.signature_name.clone()).unwrap_or_default(),
            // `x-request-id` is the id the prediction log keeps the request under.
            headers: metadata.into_headers(),
            given_id: None,
        })
    }
}

fn feature_values(feature: &ferroserve_proto::tensorflow::Feature) -> Option<FeatureValues> {
    Some(match feature.kind.as_ref()? {
        feature::Kind::FloatList(l) => FeatureValues::Floats(l.value.clone()),
        feature::Kind::Int64List(l) => FeatureValues::Ints(l.value.clone()),
        feature::Kind::BytesList(l) => FeatureValues::Bytes(l.value.clone()),
    })
}

fn example_features(example: &TfExample, into: &mut Example) {
    if let Some(features) = &example.features {
        for (name, feature) in &features.feature {
            if let Some(values) = feature_values(feature) {
                into.insert(name.clone(), values);
            }
        }
    }
}

/// The examples of a Classify / Regress / MultiInference input; with a context, each
/// example gets the context's features it does not have itself.
pub fn examples_from_input(input: Option<&pb::Input>) -> Result<Vec<Example>, ApiError> {
    let kind = input
        .and_then(|i| i.kind.as_ref())
        .ok_or_else(|| ApiError::InvalidArgument("input.example_list is required".into()))?;
    Ok(match kind {
        input::Kind::ExampleList(list) => list
            .examples
            .iter()
            .map(|e| {
                let mut out = Example::new();
                example_features(e, &mut out);
                out
            })
            .collect(),
        input::Kind::ExampleListWithContext(list) => list
            .examples
            .iter()
            .map(|e| {
                let mut out = Example::new();
                if let Some(context) = &list.context {
                    example_features(context, &mut out);
                }
                example_features(e, &mut out);
                out
            })
            .collect(),
    })
}

fn classification_result(classes: Vec<classify::Classes>) -> pb::ClassificationResult {
    pb::ClassificationResult {
        classifications: classes
            .into_iter()
            .map(|row| pb::Classifications {
                classes: row
                    .into_iter()
                    .map(|(label, score)| pb::Class { label, score })
                    .collect(),
            })
            .collect(),
    }
}

fn regression_result(values: Vec<f32>) -> pb::RegressionResult {
    pb::RegressionResult {
        regressions: values
            .into_iter()
            .map(|value| pb::Regression { value })
            .collect(),
    }
}

/// The method of a MultiInference task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Classify,
    Regress,
}

/// Checks a MultiInference request's tasks as TF Serving does, with its codes and
/// messages, before any task runs: each names `model` (the first task's), no
/// signature twice (an empty name is the model's default), and a method this
/// server runs (others are UNIMPLEMENTED, as there). Answers each task's method.
fn multi_inference_tasks(
    tasks: &[pb::InferenceTask],
    model: &str,
    backend: &dyn crate::backends::Backend,
) -> Result<Vec<Method>, Status> {
    let mut signatures: Vec<String> = Vec::with_capacity(tasks.len());
    let mut methods = Vec::with_capacity(tasks.len());
    for task in tasks {
        let spec = task.model_spec.as_ref();
        let name = spec_model(spec);
        if name.is_empty() {
            return Err(invalid("Found ModelSpec with an empty model name."));
        }
        if name != model {
            return Err(invalid(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
            ));
        }
        let signature = signature_used(spec, backend);
        if signatures.contains(&signature) {
            return Err(invalid(format!(
                "Duplicate evaluation of signature: {signature}"
            )));
        }
        signatures.push(signature);
        methods.push(match task.method_name.as_str() {
            CLASSIFY_METHOD => Method::Classify,
            REGRESS_METHOD => Method::Regress,
            // A method this server does not offer rather than a bad argument, as
            // TF Serving says it; no `ApiError` stands for it.
            other => {
                return Err(Status::unimplemented(format!(
                    "Unsupported signature method_name: {other}; use {CLASSIFY_METHOD:?} or \
                     {REGRESS_METHOD:?}"
                )))
            }
        });
    }
    Ok(methods)
}

#[tonic::async_trait]
impl prediction_service_server::PredictionService for PredictionService {
    async fn predict(
        &self,
        request: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictResponse>, Status> {
        // A model deployed in a worker process is answered by it (issue 14).
        let model = spec_model(request.get_ref().model_spec.as_ref());
        if let Some(forward) = super::inference_target(&self.state, model) {
            let forward = forward?;
            return forward
                .answer(predictions_of(&self.state, forward.channel()).predict(request))
                .await;
        }
        let timeout = client_timeout(request.metadata());
        // The metadata is kept for `x-request-id`, read only if the request is logged.
        let (metadata, _, request) = request.into_parts();
        let spec = request.model_spec.as_ref();
        let (model, version) = model_and_version(spec).map_err(status_from)?;
        let signature_name = spec.map(|s| s.signature_name.clone()).unwrap_or_default();
        let mut predict = PredictRequest::new(model, version, Protocol::TfServingGrpc);
        predict.client_timeout = timeout;
        // The model's signatures decide (`crate::api::predict`): SavedModels have several.
        predict.signature_name = signature_name.clone();
        predict.outputs = request.output_filter;
        let mut limits = DecodeLimits {
            max_bytes: self.state.settings.grpc_max_receive_bytes,
            max_rows: api::bounds::row_limit(&self.state, &predict.model, &predict.version),
        };
        predict.inputs = request
            .inputs
            .into_iter()
            .map(|(name, proto)| {
                let tensor = tensor_from_proto(&name, proto, &mut limits)?;
                Ok((name, tensor))
            })
            .collect::<Result<_, ApiError>>()
            .map_err(status_from)?;
        // `x-request-id` is the id the prediction log keeps the request under, if
        // it is logged.
        let client_id = api::predict::ClientRequestId {
            given: None,
            headers: Some(metadata.as_ref()),
        };
        let response = api::predict::predict_with_id(&self.state, predict, client_id)
            .await
            .map_err(status_from)?;
        let answer = super::with_cache_metadata(
            pb::PredictResponse {
                model_spec: Some(ModelSpec {
                    signature_name: if signature_name.is_empty() {
                        default_signature_name(&*response.handle.backend)
                    } else {
                        signature_name
                    },
                    ..answered_spec(response.model(), response.version())
                }),
                outputs: response
                    .outputs
                    .iter()
                    .map(|(name, tensor)| (name.clone(), tensor_to_proto(tensor)))
                    .collect(),
            },
            response.cache,
        );
        Ok(super::with_request_id_metadata(
            answer,
            response.request_id.as_ref(),
        ))
    }

    async fn classify(
        &self,
        request: Request<pb::ClassificationRequest>,
    ) -> Result<Response<pb::ClassificationResponse>, Status> {
        let model = spec_model(request.get_ref().model_spec.as_ref());
        if let Some(forward) = super::inference_target(&self.state, model) {
            let forward = forward?;
            return forward
                .answer(predictions_of(&self.state, forward.channel()).classify(request))
                .await;
        }
        let timeout = client_timeout(request.metadata());
        let (metadata, _, request) = request.into_parts();
        let spec = request.model_spec.as_ref();
        let examples = self
            .examples(spec, request.input.as_ref(), timeout, metadata)
            .await
            .map_err(status_from)?;
        let response = classify::classify(&self.state, examples)
            .await
            .map_err(status_from)?;
        let request_id = response.request_id.clone();
        let answer = super::with_cache_metadata(
            pb::ClassificationResponse {
                model_spec: Some(ModelSpec {
                    signature_name: signature_used(spec, &*response.handle.backend),
                    ..answered_spec(&response.handle.model, response.handle.version)
                }),
                result: Some(classification_result(response.classes)),
            },
            response.cache,
        );
        Ok(super::with_request_id_metadata(answer, request_id.as_ref()))
    }

    async fn regress(
        &self,
        request: Request<pb::RegressionRequest>,
    ) -> Result<Response<pb::RegressionResponse>, Status> {
        let model = spec_model(request.get_ref().model_spec.as_ref());
        if let Some(forward) = super::inference_target(&self.state, model) {
            let forward = forward?;
            return forward
                .answer(predictions_of(&self.state, forward.channel()).regress(request))
                .await;
        }
        let timeout = client_timeout(request.metadata());
        let (metadata, _, request) = request.into_parts();
        let spec = request.model_spec.as_ref();
        let examples = self
            .examples(spec, request.input.as_ref(), timeout, metadata)
            .await
            .map_err(status_from)?;
        let response = classify::regress(&self.state, examples)
            .await
            .map_err(status_from)?;
        let request_id = response.request_id.clone();
        let answer = super::with_cache_metadata(
            pb::RegressionResponse {
                model_spec: Some(ModelSpec {
                    signature_name: signature_used(spec, &*response.handle.backend),
                    ..answered_spec(&response.handle.model, response.handle.version)
                }),
                result: Some(regression_result(response.values)),
            },
            response.cache,
        );
        Ok(super::with_request_id_metadata(answer, request_id.as_ref()))
    }

    /// Several classify / regress tasks over the same examples, as TF Serving
    /// (`multi_inference.cc`): one version, resolved from the first task's
    /// model_spec, runs every task and stamps every result; every task names the
    /// same model, each signature at most once, and the classify or regress method.
    /// The other tasks' version or label is not read, as in TF Serving.
    async fn multi_inference(
        &self,
        request: Request<pb::MultiInferenceRequest>,
    ) -> Result<Response<pb::MultiInferenceResponse>, Status> {
        // Every task names the same model (checked below, or by the worker).
        let model = spec_model(
            request
                .get_ref()
                .tasks
                .first()
                .and_then(|t| t.model_spec.as_ref()),
        );
        if let Some(forward) = super::inference_target(&self.state, model) {
            let forward = forward?;
            return forward
                .answer(predictions_of(&self.state, forward.channel()).multi_inference(request))
                .await;
        }
        let started = std::time::Instant::now();
        let timeout = client_timeout(request.metadata());
        let (metadata, _, request) = request.into_parts();
        let headers = metadata.into_headers();
        let Some(first) = request.tasks.first() else {
            return Err(invalid("MultiInferenceRequest has no tasks"));
        };
        let (model, version) = model_and_version(first.model_spec.as_ref()).map_err(status_from)?;
        // Held to the end: a version swap between tasks cannot mix versions.
        let handle = self
            .state
            .manager
            .resolve(&model, &version)
            .map_err(|e| status_from(e.into()))?;
        let tasks = multi_inference_tasks(&request.tasks, &model, &*handle.backend)?;
        let examples = examples_from_input(request.input.as_ref()).map_err(status_from)?;
        let mut results = Vec::with_capacity(tasks.len());
        // The id the prediction log keeps the tasks under: the client's, else the
        // one the first logged task was given, so that every task's row has one id.
        let mut request_id: Option<crate::store::predictions::RequestId> = None;
        for (task, method) in request.tasks.iter().zip(tasks) {
            let spec = task.model_spec.as_ref();
            let examples = ExamplesRequest {
                model: model.clone(),
                version: VersionRequest::Specific(handle.version),
                examples: examples.clone(),
                protocol: Protocol::TfServingGrpc,
                // The client's deadline bounds the whole call, not each task.
                client_timeout: timeout.map(|t| t.saturating_sub(started.elapsed())),
                signature_name: spec.map(|s| s.signature_name.clone()).unwrap_or_default(),
                headers: headers.clone(),
                given_id: request_id.as_ref().map(ToString::to_string),
            };
            let (result, logged_as) = match method {
                Method::Classify => {
                    let r = classify::classify_on(&self.state, handle.clone(), examples)
                        .await
                        .map_err(status_from)?;
                    let result = classification_result(r.classes);
                    (
                        inference_result::Result::ClassificationResult(result),
                        r.request_id,
                    )
                }
                Method::Regress => {
                    let r = classify::regress_on(&self.state, handle.clone(), examples)
                        .await
                        .map_err(status_from)?;
                    let result = regression_result(r.values);
                    (
                        inference_result::Result::RegressionResult(result),
                        r.request_id,
                    )
                }
            };
            request_id = request_id.or(logged_as);
            // Each result names the signature its task ran, as Classify and Regress do.
            results.push(pb::InferenceResult {
                model_spec: Some(ModelSpec {
                    signature_name: signature_used(spec, &*handle.backend),
                    ..answered_spec(&handle.model, handle.version)
                }),
                result: Some(result),
            });
        }
        Ok(super::with_request_id_metadata(
            Response::new(pb::MultiInferenceResponse { results }),
            request_id.as_ref(),
        ))
    }

    /// The `signature_def` metadata: one SignatureDef, "serving_default", packed in
    /// an `Any` as TF Serving packs its `SignatureDefMap`.
    async fn get_model_metadata(
        &self,
        request: Request<pb::GetModelMetadataRequest>,
    ) -> Result<Response<pb::GetModelMetadataResponse>, Status> {
        let model = spec_model(request.get_ref().model_spec.as_ref());
        if let Some(forward) = crate::workers::grpc_forward(&self.state, model) {
            let forward = forward?;
            return forward
                .answer(predictions_of(&self.state, forward.channel()).get_model_metadata(request))
                .await;
        }
        let request = request.into_inner();
        if request.metadata_field.is_empty() {
            return Err(invalid(
                "metadata_field must name at least one field (\"signature_def\")",
            ));
        }
        if let Some(other) = request
            .metadata_field
            .iter()
            .find(|f| *f != "signature_def")
        {
            return Err(invalid(format!(
                "metadata field {other:?} is not supported; only \"signature_def\" is"
            )));
        }
        let (model, version) =
            model_and_version(request.model_spec.as_ref()).map_err(status_from)?;
        let meta = api::model_metadata(&self.state, &model, &version).map_err(status_from)?;
        let map = pb::SignatureDefMap {
            signature_def: signature_defs(&meta),
        };
        let any = prost_types::Any {
            type_url: SIGNATURE_DEF_MAP_TYPE_URL.to_string(),
            value: map.encode_to_vec(),
        };
        Ok(Response::new(pb::GetModelMetadataResponse {
            model_spec: Some(answered_spec(&meta.name, meta.version)),
            metadata: HashMap::from([("signature_def".to_string(), any)]),
        }))
    }
}

pub struct ModelService {
    state: Arc<ServerState>,
}

impl ModelService {
    pub fn new(state: Arc<ServerState>) -> ModelService {
        ModelService { state }
    }
}

/// TF Serving's state names; a version that failed to load is END with an error status,
/// as TF Serving reports it.
fn tf_state(state: VersionState) -> model_version_status::State {
    match state {
        VersionState::Start => model_version_status::State::Start,
        VersionState::Loading => model_version_status::State::Loading,
        VersionState::Available => model_version_status::State::Available,
        VersionState::Unloading => model_version_status::State::Unloading,
        VersionState::End | VersionState::Error => model_version_status::State::End,
    }
}

/// A TF Serving `ModelConfig` as a model source: name, base path, version policy
/// (`latest` with 0 versions means 1, as in TF Serving) and labels.
fn model_source(config: pb::ModelConfig) -> Result<repository::ModelSource, ApiError> {
    use pb::file_system_storage_path_source_config::servable_version_policy::PolicyChoice;
    let version_policy = match config.model_version_policy.and_then(|p| p.policy_choice) {
        None => None,
        Some(PolicyChoice::Latest(l)) => {
            Some(VersionPolicy::Latest(l.num_versions.max(1) as usize))
        }
        Some(PolicyChoice::All(_)) => Some(VersionPolicy::All),
        Some(PolicyChoice::Specific(s)) => Some(VersionPolicy::Specific(
            s.versions
                .iter()
                .map(|&v| {
                    u64::try_from(v).map_err(|_| {
                        ApiError::InvalidArgument(format!(
                            "model {:?}: version {v} is negative",
                            config.name
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        )),
    };
    let labels = config
        .version_labels
        .into_iter()
        .map(|(label, v)| match u64::try_from(v) {
            Ok(v) => Ok((label, v)),
            Err(_) => Err(ApiError::InvalidArgument(format!(
                "model {:?}: label {label:?} points at negative version {v}",
                config.name
            ))),
        })
        .collect::<Result<_, _>>()?;
    Ok(repository::ModelSource {
        name: config.name,
        base_path: (!config.base_path.is_empty()).then(|| config.base_path.into()),
        version_policy,
        labels,
    })
}

fn ok_status() -> pb::StatusProto {
    pb::StatusProto {
        error_code: TfCode::Ok as i32,
        error_message: String::new(),
    }
}

#[tonic::async_trait]
impl model_service_server::ModelService for ModelService {
    async fn get_model_status(
        &self,
        request: Request<pb::GetModelStatusRequest>,
    ) -> Result<Response<pb::GetModelStatusResponse>, Status> {
        let model = spec_model(request.get_ref().model_spec.as_ref());
        if let Some(forward) = crate::workers::grpc_forward(&self.state, model) {
            let forward = forward?;
            let mut client = super::worker_client!(
                pb::model_service_client::ModelServiceClient<_>,
                self.state,
                forward.channel()
            );
            return forward.answer(client.get_model_status(request)).await;
        }
        let request = request.into_inner();
        let (model, version) =
            model_and_version(request.model_spec.as_ref()).map_err(status_from)?;
        let version = (version != VersionRequest::Latest).then_some(version);
        let statuses =
            api::model_status(&self.state, &model, version.as_ref()).map_err(status_from)?;
        Ok(Response::new(pb::GetModelStatusResponse {
            model_version_status: statuses
                .into_iter()
                .map(|s| pb::ModelVersionStatus {
                    version: s.version as i64,
                    state: tf_state(s.state) as i32,
                    status: Some(if s.state == VersionState::Error {
                        pb::StatusProto {
                            error_code: TfCode::Unknown as i32,
                            error_message: s.error_message,
                        }
                    } else {
                        ok_status()
                    }),
                })
                .collect(),
        }))
    }

    /// Replaces the served models with the request's `model_config_list` through
    /// `api::repository::reload_config`. A `custom_model_config` is refused.
    async fn handle_reload_config_request(
        &self,
        request: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        let caller = super::caller(&request);
        let config = request.into_inner().config.and_then(|c| c.config);
        let list = match config {
            Some(model_server_config::Config::ModelConfigList(list)) => list,
            Some(model_server_config::Config::CustomModelConfig(_)) => {
                return Err(invalid(
                    "custom_model_config is not supported; send a model_config_list",
                ))
            }
            None => return Err(invalid("config.model_config_list is required")),
        };
        let models = list
            .config
            .into_iter()
            .map(model_source)
            .collect::<Result<Vec<_>, ApiError>>()
            .map_err(status_from)?;
        repository::reload_config(&self.state, models, &caller)
            .await
            .map_err(status_from)?;
        Ok(Response::new(pb::ReloadConfigResponse {
            status: Some(ok_status()),
        }))
    }
}

#[cfg(test)]
mod signature_name_tests {
    use super::*;
    use crate::backends::{Backend, BackendError, ModelTraits, NamedSignature, Signature};
    use crate::tensor::NamedTensor;

    /// A model whose default signature is the first of `signatures` (a SavedModel
    /// without `serving_default`), or `plain` when it has none (another format).
    struct Stub {
        signatures: Vec<NamedSignature>,
        plain: Signature,
        traits: ModelTraits,
    }

    impl Backend for Stub {
        fn format(&self) -> &'static str {
            "test"
        }
        fn signature(&self) -> &Signature {
            self.signatures
                .first()
                .map_or(&self.plain, |s| &s.signature)
        }
        fn traits(&self) -> &ModelTraits {
            &self.traits
        }
        fn predict(
            &self,
            _: Vec<NamedTensor>,
            _: &[String],
        ) -> Result<Vec<NamedTensor>, BackendError> {
            Ok(Vec::new())
        }
        fn signatures(&self) -> &[NamedSignature] {
            &self.signatures
        }
    }

    fn stub(names: &[&str]) -> Stub {
        let empty = || Signature {
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        Stub {
            signatures: names
                .iter()
                .map(|name| NamedSignature {
                    name: name.to_string(),
                    method_name: PREDICT_METHOD.into(),
                    signature: empty(),
                    input_tensors: Vec::new(),
                    output_tensors: Vec::new(),
                })
                .collect(),
            plain: empty(),
            traits: ModelTraits::default(),
        }
    }

    /// A response names the signature that ran: a model's default is not always
    /// called `serving_default` (the answer said so for a model without one).
    #[test]
    fn a_request_without_a_signature_name_is_answered_with_the_defaults_name() {
        let backend = stub(&["alpha", "zeta"]);
        assert_eq!(default_signature_name(&backend), "alpha");
        let spec = |name: &str| ModelSpec {
            signature_name: name.into(),
            ..ModelSpec::default()
        };
        assert_eq!(signature_used(Some(&spec("")), &backend), "alpha");
        assert_eq!(signature_used(Some(&spec("zeta")), &backend), "zeta");
        assert_eq!(signature_used(None, &backend), "alpha");
        // A model of one signature: TF Serving's default key.
        assert_eq!(default_signature_name(&stub(&[])), DEFAULT_SIGNATURE);
    }

    /// MultiInference's tasks are checked as TF Serving checks them
    /// (`multi_inference.cc`): one method may run under two signatures, a
    /// signature only once (an empty name is the default's), one model, and an
    /// unknown method is UNIMPLEMENTED.
    #[test]
    fn multi_inference_tasks_are_checked_as_tf_serving_checks_them() {
        let backend = stub(&["serving_default", "classification", "regression"]);
        let task = |model: &str, signature: &str, method: &str| pb::InferenceTask {
            model_spec: Some(ModelSpec {
                name: model.into(),
                signature_name: signature.into(),
                ..ModelSpec::default()
            }),
            method_name: method.into(),
        };
        let check = |tasks: &[pb::InferenceTask]| multi_inference_tasks(tasks, "m", &backend);
        assert_eq!(
            check(&[
                task("m", "", CLASSIFY_METHOD),
                task("m", "classification", CLASSIFY_METHOD),
                task("m", "regression", REGRESS_METHOD),
            ])
            .unwrap(),
            [Method::Classify, Method::Classify, Method::Regress]
        );
        let refused = |tasks: &[pb::InferenceTask]| {
            let status = check(tasks).unwrap_err();
            (status.code(), status.message().to_string())
        };
        let (code, message) = refused(&[
            task("m", "", CLASSIFY_METHOD),
            task("m", "serving_default", REGRESS_METHOD),
        ]);
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert_eq!(
            message,
            "Duplicate evaluation of signature: serving_default"
        );
        let (code, message) = refused(&[
            task("m", "", CLASSIFY_METHOD),
            task("n", "x", CLASSIFY_METHOD),
        ]);
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert!(
            message.starts_with("All ModelSpecs in a MultiInferenceRequest"),
            "{message}"
        );
        let (code, message) = refused(&[
            task("m", "", CLASSIFY_METHOD),
            task("", "x", CLASSIFY_METHOD),
        ]);
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert_eq!(message, "Found ModelSpec with an empty model name.");
        let (code, message) = refused(&[task("m", "", PREDICT_METHOD)]);
        assert_eq!(code, tonic::Code::Unimplemented);
        assert!(
            message.starts_with(&format!(
                "Unsupported signature method_name: {PREDICT_METHOD}"
            )),
            "{message}"
        );
    }
}
