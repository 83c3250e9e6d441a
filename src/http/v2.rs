//! KServe V2 / Open Inference Protocol REST, with the binary tensor data
//! extension that NVIDIA's tritonclient uses by default.
//!
//! Binary requests: the `Inference-Header-Content-Length` header gives the length
//! of the JSON header at the start of the body; the raw bytes of every input that
//! has a `binary_data_size` parameter follow it, in input order.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{body_chunks, AppState, HttpError};
use crate::api::bounds::request_bounds;
use crate::api::{self, ApiError, PredictRequest, Protocol, SERVER_NAME, SERVER_VERSION};
use crate::json_tensor::FlatJson;
use crate::manager::VersionRequest;
use crate::raw_tensor;
use crate::tensor::TensorSpec;

mod decode;
mod schema;

use decode::{decode_inputs, flag, invalid, refuse_shared_memory, take_header, InferBody};
pub(crate) use decode::{decode_tensors, InputBody};
use schema::{
    V2InferResponse, V2ModelConfig, V2ModelMetadata, V2ModelStatistics, V2ServerMetadata,
};

pub const HEADER_LENGTH: &str = "inference-header-content-length";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_version_metadata),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_version_ready),
        )
        .route("/v2/models/{model}/config", get(model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(model_version_config),
        )
        .route("/v2/models/stats", get(all_statistics))
        .route("/v2/models/{model}/stats", get(model_statistics))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(model_version_statistics),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_version),
        )
}

fn parse_version(v: &str) -> Result<VersionRequest, HttpError> {
    super::path_version(v).map(VersionRequest::Specific)
}

/// Extensions this server implements over REST, as V2 server metadata lists them:
/// gRPC's (`grpc::kserve::EXTENSIONS`) and `binary_tensor_data`, which only REST
/// needs.
const EXTENSIONS: [&str; 5] = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
];

/// The server's name, version and extensions.
#[utoipa::path(get, path = "/v2", tag = "v2", operation_id = "v2_server_metadata",
    responses((status = 200, description = "Server metadata", body = V2ServerMetadata)))]
async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": SERVER_NAME,
        "version": SERVER_VERSION,
        "extensions": EXTENSIONS,
    }))
}

/// Whether the server is live (no body).
#[utoipa::path(get, path = "/v2/health/live", tag = "v2", operation_id = "v2_live",
    responses((status = 200, description = "Live"), (status = 503, description = "Shutting down")))]
async fn live(State(state): State<AppState>) -> StatusCode {
    if state.is_live() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Whether the server is ready (the initial load is done; no body).
#[utoipa::path(get, path = "/v2/health/ready", tag = "v2", operation_id = "v2_ready",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready yet, or shutting down")))]
async fn ready(State(state): State<AppState>) -> StatusCode {
    if state.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn spec_json(s: &TensorSpec) -> Value {
    json!({ "name": s.name, "datatype": s.dtype.v2_name(), "shape": s.v2_shape() })
}

fn metadata(
    state: &AppState,
    model: &str,
    version: VersionRequest,
) -> Result<Json<Value>, HttpError> {
    let meta = api::model_metadata(state, model, &version)?;
    Ok(Json(json!({
        "name": meta.name,
        "versions": meta.available_versions.iter().map(u64::to_string).collect::<Vec<_>>(),
        "platform": meta.platform(),
        "inputs": meta.signature.inputs.iter().map(spec_json).collect::<Vec<_>>(),
        "outputs": meta.signature.outputs.iter().map(spec_json).collect::<Vec<_>>(),
    })))
}

/// A model's metadata: versions, platform, inputs and outputs.
#[utoipa::path(get, path = "/v2/models/{model}", tag = "v2", operation_id = "v2_model_metadata",
    params(("model" = String, Path, description = "The model's name", example = "iris_lr")),
    responses(
        (status = 200, description = "Model metadata", body = V2ModelMetadata),
        (status = 400, description = "Malformed version", body = super::openapi::ErrorBody),
        (status = 404, description = "No such model or version, or it is not loaded", body = super::openapi::ErrorBody),
    ))]
async fn model_metadata(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, HttpError> {
    metadata(&state, &model, VersionRequest::Latest)
}

/// A model's metadata: versions, platform, inputs and outputs.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}", tag = "v2", operation_id = "v2_model_version_metadata",
    params(("model" = String, Path, description = "The model's name", example = "iris_lr"), ("version" = String, Path, description = "A version number (a positive integer)")),
    responses(
        (status = 200, description = "Model metadata", body = V2ModelMetadata),
        (status = 400, description = "Malformed version", body = super::openapi::ErrorBody),
        (status = 404, description = "No such model or version, or it is not loaded", body = super::openapi::ErrorBody),
    ))]
async fn model_version_metadata(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, HttpError> {
    metadata(&state, &model, parse_version(&version)?)
}

/// A model version's configuration as Triton's model configuration extension
/// answers it in JSON (`api::triton::model_config`, which gRPC's `ModelConfig`
/// answers too).
fn config(
    state: &AppState,
    model: &str,
    version: VersionRequest,
) -> Result<Json<Value>, HttpError> {
    let config = api::triton::model_config(state, model, &version)?;
    let version_policy = match &config.version_policy {
        crate::model_config::VersionPolicy::Latest(n) => json!({ "latest": { "num_versions": n } }),
        crate::model_config::VersionPolicy::All => json!({ "all": {} }),
        crate::model_config::VersionPolicy::Specific(versions) => {
            json!({ "specific": { "versions": versions } })
        }
    };
    let tensors = |tensors: &[api::triton::ConfigTensor]| -> Vec<Value> {
        tensors
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "data_type": api::triton::triton_data_type(t.dtype),
                    "dims": t.dims,
                })
            })
            .collect()
    };
    Ok(Json(json!({
        "name": config.name,
        "platform": config.platform,
        "backend": config.backend,
        "version_policy": version_policy,
        "max_batch_size": config.max_batch_size,
        "input": tensors(&config.input),
        "output": tensors(&config.output),
    })))
}

/// A model's configuration, as Triton's model configuration extension answers it.
#[utoipa::path(get, path = "/v2/models/{model}/config", tag = "v2", operation_id = "v2_model_config",
    params(("model" = String, Path, description = "The model's name", example = "iris_lr")),
    responses(
        (status = 200, description = "The model's configuration (Triton's ModelConfig as JSON)", body = V2ModelConfig),
        (status = 404, description = "No such model, or it is not loaded", body = super::openapi::ErrorBody),
    ))]
async fn model_config(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, HttpError> {
    config(&state, &model, VersionRequest::Latest)
}

/// A model version's configuration, as Triton's model configuration extension answers it.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/config", tag = "v2", operation_id = "v2_model_version_config",
    params(("model" = String, Path, description = "The model's name", example = "iris_lr"), ("version" = String, Path, description = "A version number (a positive integer)")),
    responses(
        (status = 200, description = "The version's configuration (Triton's ModelConfig as JSON)", body = V2ModelConfig),
        (status = 400, description = "Malformed version", body = super::openapi::ErrorBody),
        (status = 404, description = "No such model or version, or it is not loaded", body = super::openapi::ErrorBody),
    ))]
async fn model_version_config(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, HttpError> {
    config(&state, &model, parse_version(&version)?)
}

/// Triton's `StatisticDuration` in JSON.
fn duration_json(d: api::triton::StatisticDuration) -> Value {
    json!({ "count": d.count, "ns": d.ns })
}

/// One version's statistics in JSON (`api::triton::VersionStatistics`, which gRPC's
/// `ModelStatistics` answers too). What ferroserve does not measure is 0 or empty.
fn version_statistics_json(s: &api::triton::VersionStatistics) -> Value {
    let none = api::triton::StatisticDuration::default();
    json!({
        "name": s.name,
        "version": s.version.to_string(),
        "last_inference": 0,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": duration_json(s.success),
            "fail": duration_json(s.fail),
            "queue": duration_json(s.queue),
            "compute_input": duration_json(none),
            "compute_infer": duration_json(s.compute_infer),
            "compute_output": duration_json(none),
            "cache_hit": duration_json(s.cache_hit),
            "cache_miss": duration_json(s.cache_miss),
        },
        "batch_stats": [],
    })
}

/// The statistics of `models` (every serving version of each, or only `version`).
fn statistics(
    state: &AppState,
    models: &[String],
    version: Option<VersionRequest>,
) -> Result<Json<Value>, HttpError> {
    let stats = api::triton::statistics(state, models, version.as_ref())?;
    let stats: Vec<Value> = stats.iter().map(version_statistics_json).collect();
    Ok(Json(json!({ "model_stats": stats })))
}

/// Every serving model version's statistics, as Triton's statistics extension reports them.
#[utoipa::path(get, path = "/v2/models/stats", tag = "v2", operation_id = "v2_statistics",
    responses((status = 200, description = "Statistics of every serving model version", body = V2ModelStatistics)))]
async fn all_statistics(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    statistics(&state, &api::triton::serving_models(&state), None)
}

/// A model's statistics (every serving version), as Triton's statistics extension reports them.
#[utoipa::path(get, path = "/v2/models/{model}/stats", tag = "v2", operation_id = "v2_model_statistics",
    params(("model" = String, Path, description = "The model's name", example = "iris_lr")),
    responses(
        (status = 200, description = "Statistics of the model's serving versions", body = V2ModelStatistics),
        (status = 404, description = "No such model, or it is not loaded", body = super::openapi::ErrorBody),
    ))]
async fn model_statistics(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, HttpError> {
    statistics(&state, &[model], None)
}

/// A model version's statistics, as Triton's statistics extension reports them.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/stats", tag = "v2", operation_id = "v2_model_version_statistics",
    params(("model" = String, Path, description = "The model's name", example = "iris_lr"), ("version" = String, Path, description = "A version number (a positive integer)")),
    responses(
        (status = 200, description = "The version's statistics", body = V2ModelStatistics),
        (status = 400, description = "Malformed version", body = super::openapi::ErrorBody),
        (status = 404, description = "No such model or version, or it is not loaded", body = super::openapi::ErrorBody),
    ))]
async fn model_version_statistics(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, HttpError> {
    let version = parse_version(&version)?;
    statistics(&state, &[model], Some(version))
}

/// 200 when the version resolves. After the stop signal (the drain of
/// `--shutdown-delay`) no model is ready, as the server is not: 503.
fn ready_status(
    state: &AppState,
    model: &str,
    version: VersionRequest,
) -> Result<StatusCode, HttpError> {
    if state.is_draining() {
        return Err(HttpError(ApiError::Unavailable(
            "the server is shutting down".into(),
        )));
    }
    state
        .manager
        .resolve(model, &version)
        .map_err(ApiError::from)?;
    Ok(StatusCode::OK)
}

/// Whether the model (version) is loaded and serving (no body when it is).
#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "v2", operation_id = "v2_model_ready",
    params(("model" = String, Path, description = "The model's name", example = "iris_lr")),
    responses(
        (status = 200, description = "Ready"),
        (status = 400, description = "Malformed version", body = super::openapi::ErrorBody),
        (status = 404, description = "No such model", body = super::openapi::ErrorBody),
        (status = 503, description = "No version of the model can serve (still loading, or failed), or the server is shutting down", body = super::openapi::ErrorBody),
    ))]
async fn model_ready(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<StatusCode, HttpError> {
    ready_status(&state, &model, VersionRequest::Latest)
}

/// Whether the model (version) is loaded and serving (no body when it is).
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/ready", tag = "v2", operation_id = "v2_model_version_ready",
    params(("model" = String, Path, description = "The model's name", example = "iris_lr"), ("version" = String, Path, description = "A version number (a positive integer)")),
    responses(
        (status = 200, description = "Ready"),
        (status = 400, description = "Malformed version", body = super::openapi::ErrorBody),
        (status = 404, description = "No such model or version, or the version is not available (failed, unloaded)", body = super::openapi::ErrorBody),
        (status = 503, description = "The version is still loading, or the server is shutting down", body = super::openapi::ErrorBody),
    ))]
async fn model_version_ready(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    ready_status(&state, &model, parse_version(&version)?)
}

/// Run an inference. With the binary tensor data extension, the JSON part is
/// followed by raw tensor bytes and `Inference-Header-Content-Length` gives its length.
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "v2", operation_id = "v2_infer",
    params(("model" = String, Path, description = "The model's name", example = "iris_lr"),
        ("Inference-Header-Content-Length" = Option<u64>, Header, description = "Length of the JSON part when binary tensor data follows it")),
    request_body(content(
        (InferBody = "application/json", example = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})),
        (String = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The outputs (JSON, or JSON then binary data when binary outputs were asked for)", content(
            (V2InferResponse = "application/json"),
            (String = "application/octet-stream"),
        )),
        (status = 400, description = "Malformed body, or inputs that do not fit the model", body = super::openapi::ErrorBody),
        (status = 404, description = "No such model or version, or it is not loaded", body = super::openapi::ErrorBody),
        (status = 408, description = "The body stopped arriving", body = super::openapi::ErrorBody),
        (status = 429, description = "The model's queue is full", body = super::openapi::ErrorBody),
        (status = 503, description = "The model is not available now", body = super::openapi::ErrorBody),
        (status = 504, description = "The inference took longer than the deadline", body = super::openapi::ErrorBody),
    ))]
pub(super) async fn infer(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, HttpError> {
    run_infer(state, model, VersionRequest::Latest, headers, request).await
}

/// Run an inference. With the binary tensor data extension, the JSON part is
/// followed by raw tensor bytes and `Inference-Header-Content-Length` gives its length.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "v2", operation_id = "v2_infer_version",
    params(("model" = String, Path, description = "The model's name", example = "iris_lr"), ("version" = String, Path, description = "A version number (a positive integer)"),
        ("Inference-Header-Content-Length" = Option<u64>, Header, description = "Length of the JSON part when binary tensor data follows it")),
    request_body(content(
        (InferBody = "application/json", example = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})),
        (String = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The outputs (JSON, or JSON then binary data when binary outputs were asked for)", content(
            (V2InferResponse = "application/json"),
            (String = "application/octet-stream"),
        )),
        (status = 400, description = "Malformed body, or inputs that do not fit the model", body = super::openapi::ErrorBody),
        (status = 404, description = "No such model or version, or it is not loaded", body = super::openapi::ErrorBody),
        (status = 408, description = "The body stopped arriving", body = super::openapi::ErrorBody),
        (status = 429, description = "The model's queue is full", body = super::openapi::ErrorBody),
        (status = 503, description = "The model is not available now", body = super::openapi::ErrorBody),
        (status = 504, description = "The inference took longer than the deadline", body = super::openapi::ErrorBody),
    ))]
pub(super) async fn infer_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, HttpError> {
    let version = parse_version(&version)?;
    run_infer(state, model, version, headers, request).await
}

async fn run_infer(
    state: AppState,
    model: String,
    version: VersionRequest,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, HttpError> {
    // An overloaded model is refused before the body is parsed: under overload a
    // refusal must cost much less than an answer (bodies can be large tensors). The
    // body is still read off the connection (discarded), so the client gets the 429.
    if let Err(refusal) = api::admit(&state, &model, &version, Protocol::V2Rest) {
        return Ok(super::answer_unread(request, refusal).await);
    }
    // The body as it came, in chunks: the binary tensors are copied once, from the
    // chunks into their tensors (a 110 KB image: one copy less than a body read
    // into one buffer first).
    let mut body = body_chunks(request, state.settings.max_request_bytes).await?;
    let header_json = take_header(&headers, &mut body)?;
    let request = InferBody::parse_with_literals(
        &header_json,
        &request_bounds(&state, &model, Some(&version)),
    )?;
    let all_binary = flag(&request.parameters, "binary_data_output")?.unwrap_or(false);
    let binary_outputs: Vec<(String, bool)> = request
        .outputs
        .iter()
        .map(|o| {
            refuse_shared_memory(&o.parameters, &format!("output {:?}", o.name))?;
            let b = flag(&o.parameters, "binary_data")?.unwrap_or(all_binary);
            Ok((o.name.clone(), b))
        })
        .collect::<Result<_, HttpError>>()?;
    let mut predict = PredictRequest::new(model, version, Protocol::V2Rest);
    // Triton's request parameter `timeout` (microseconds), as over gRPC: the earlier of
    // it and the model's timeout applies (it was ignored here).
    predict.client_timeout = match request.parameters.get("timeout") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(us) if us > 0 => Some(std::time::Duration::from_micros(us)),
            _ => {
                return Err(invalid(format!(
                    "parameter \"timeout\" must be a positive number of microseconds, not {v}"
                ))
                .into())
            }
        },
    };
    predict.classifications = request
        .outputs
        .iter()
        .filter_map(|o| {
            o.parameters.get("classification").map(|v| match v.as_u64() {
                Some(k) if k >= 1 => Ok(crate::preprocess::Classification {
                    output: o.name.clone(),
                    k: usize::try_from(k).unwrap_or(usize::MAX),
                }),
                _ => Err(invalid(format!(
                    "parameter \"classification\" of output {:?} must be an integer of 1 or more, not {v}",
                    o.name
                ))),
            })
        })
        .collect::<Result<_, _>>()?;
    predict.inputs = decode_inputs(request.inputs, &mut body)?;
    predict.outputs = request.outputs.into_iter().map(|o| o.name).collect();
    predict.options = super::predict_options(
        request.parameters.get("k"),
        request.parameters.get("threshold"),
    )?;
    // The body's `id`, else the `x-request-id` header, is the id the prediction log
    // keeps the request under, if it is logged.
    let client_id = api::predict::ClientRequestId {
        given: request.id.as_deref(),
        headers: Some(&headers),
    };
    let response = api::predict::predict_with_id(&state, predict, client_id).await?;

    // The answer is written straight from the output tensors (no `Value` tree).
    let mut blobs: Vec<u8> = Vec::new();
    let mut any_binary = false;
    let outputs: Vec<V2Output<'_>> = response
        .outputs
        .iter()
        .map(|(name, tensor)| {
            let binary = binary_outputs
                .iter()
                .find(|(n, _)| n == name)
                .map_or(all_binary, |(_, b)| *b);
            let mut out = V2Output {
                name,
                datatype: tensor.dtype().v2_name(),
                shape: tensor.shape(),
                parameters: None,
                data: None,
            };
            if binary {
                any_binary = true;
                let start = blobs.len();
                raw_tensor::encode(tensor.data(), &mut blobs);
                out.parameters = Some(BinaryDataSize {
                    binary_data_size: blobs.len() - start,
                });
            } else {
                out.data = Some(FlatJson(tensor));
            }
            out
        })
        .collect();
    let doc = V2Answer {
        id: request.id,
        model_name: response.model(),
        model_version: response.version().to_string(),
        outputs,
    };
    let header_bytes =
        serde_json::to_vec(&doc).map_err(|e| HttpError(ApiError::Internal(e.to_string())))?;
    // Binary framing only when an output of the answer is binary: one asked for
    // binary_data_output whose every output opts out gets plain JSON.
    if !any_binary {
        return Ok(super::with_request_id_header(
            super::with_cache_header(
                ([(header::CONTENT_TYPE, "application/json")], header_bytes).into_response(),
                response.cache,
            ),
            response.request_id.as_ref(),
        ));
    }
    let header_len = header_bytes.len();
    let mut full = header_bytes;
    full.extend_from_slice(&blobs);
    let answer = (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static(HEADER_LENGTH),
                header_len.to_string(),
            ),
        ],
        Body::from(full),
    )
        .into_response();
    Ok(super::with_request_id_header(
        super::with_cache_header(answer, response.cache),
        response.request_id.as_ref(),
    ))
}

/// One output of a V2 infer answer.
#[derive(serde::Serialize)]
struct V2Output<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryDataSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<FlatJson<'a>>,
}

#[derive(serde::Serialize)]
struct BinaryDataSize {
    binary_data_size: usize,
}

/// A V2 infer answer (the JSON part, before any binary blobs).
#[derive(serde::Serialize)]
struct V2Answer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    model_name: &'a str,
    model_version: String,
    outputs: Vec<V2Output<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Server metadata did not list `classification`, though it is served; then
    /// not `model_configuration` and `statistics` (`/config`, `/stats`).
    #[tokio::test]
    async fn server_metadata_lists_the_extensions_served() {
        let Json(meta) = server_metadata().await;
        assert_eq!(
            meta["extensions"],
            json!([
                "binary_tensor_data",
                "classification",
                "model_configuration",
                "model_repository",
                "statistics"
            ])
        );
    }
}
