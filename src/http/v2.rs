//! KServe V2 / Open Inference Protocol REST, with the binary tensor data
//! extension that NVIDIA's tritonclient uses by default.
//!
//! Binary requests: the `Inference-Header-Content-Length` header gives the length
//! of the JSON header at the start of the body; the raw bytes of every input that
//! has a `binary_data_size` parameter follow it, in input order.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use bytes::Buf;

use super::{body_chunks, AppState, HttpError};
use crate::api::bounds::{request_bounds, too_many_rows, RequestBounds};
use crate::api::{self, ApiError, PredictRequest, Protocol, SERVER_NAME, SERVER_VERSION};
use crate::json_tensor::{
    flatten, parse_bounded, typed_tensor, BoundedValue, Budget, DataLimit, FlatJson, Key, Literals,
    Rows,
};
use crate::manager::VersionRequest;
use crate::raw_tensor;
use crate::tensor::{element_count, DataType, NamedTensor, Tensor, TensorSpec};

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

/// A V2 inference request.
#[derive(utoipa::ToSchema)]
#[schema(as = V2InferRequest)]
struct InferBody {
    id: Option<String>,
    #[schema(required = false)]
    parameters: Map<String, Value>,
    inputs: Vec<InputBody>,
    #[schema(required = false)]
    outputs: Vec<OutputBody>,
}

impl InferBody {
    /// Reads a request's JSON header under `bounds` ([`InferBodySeed`]).
    fn parse(bytes: &[u8], bounds: &RequestBounds) -> Result<InferBody, ApiError> {
        let budget = Budget::new(bounds);
        parse_bounded(bytes, InferBodySeed(&budget), &budget)
    }

    /// [`InferBody::parse`], taking bare `NaN`, `Infinity` and `-Infinity` in an
    /// input's data as numbers, as the TF Serving routes take them: Python's
    /// `json.dumps` writes them, and tritonclient.http sends them so with
    /// `binary_data=False`. serde_json refuses them, so only a header that fails is
    /// read again, with them quoted and marked
    /// ([`crate::json_tensor::quote_nonfinite_literals`]): a strictly valid header
    /// costs nothing more. Where the second reading finds one anywhere but in the
    /// data of an input (an id, a name, a parameter), the header's own parse error
    /// stands, as it does for a header refused for anything else.
    fn parse_with_literals(bytes: &[u8], bounds: &RequestBounds) -> Result<InferBody, ApiError> {
        let too_large = |e: &ApiError| matches!(e, ApiError::PayloadTooLarge(_));
        let error = match InferBody::parse(bytes, bounds) {
            Ok(body) => return Ok(body),
            Err(e) if too_large(&e) => return Err(e),
            Err(e) => e,
        };
        let Some(quoted) = crate::json_tensor::quote_nonfinite_literals(bytes) else {
            return Err(error);
        };
        let mut body = match InferBody::parse(&quoted, bounds) {
            Ok(body) => body,
            Err(again) if too_large(&again) => return Err(again),
            Err(_) => return Err(error),
        };
        if body.bare_literals_outside_data() {
            return Err(error);
        }
        for input in &mut body.inputs {
            input.read_bare_literals()?;
        }
        Ok(body)
    }

    /// Whether a field that is not an input's data holds a bare literal that
    /// `quote_nonfinite_literals` quoted (this body being its second reading).
    fn bare_literals_outside_data(&self) -> bool {
        let quoted = Literals::Quoted;
        let text = |t: &str| quoted.holds_bare(&Value::String(t.to_string()));
        let params = |p: &Map<String, Value>| p.values().any(|v| quoted.holds_bare(v));
        self.id.as_deref().is_some_and(text)
            || params(&self.parameters)
            || self
                .outputs
                .iter()
                .any(|o| text(&o.name) || params(&o.parameters))
            || self
                .inputs
                .iter()
                .any(|i| text(&i.name) || text(&i.datatype) || params(&i.parameters))
    }
}

/// Reads an [`InferBody`] as serde's derive would (unknown fields skipped, a field
/// given twice refused), with its inputs read by [`InputSeed`] and every value of
/// its parameters and data spent from the budget.
struct InferBodySeed<'s, 'b>(&'s Budget<'b>);

impl<'de> DeserializeSeed<'de> for InferBodySeed<'_, '_> {
    type Value = InferBody;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<InferBody, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InferBodySeed<'_, '_> {
    type Value = InferBody;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a V2 inference request (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InferBody, A::Error> {
        let budget = self.0;
        let (mut id, mut parameters, mut inputs, mut outputs) = (None, None, None, None);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key {
                "id" => once(&mut id, "id", map.next_value::<Option<String>>()?)?,
                "parameters" => {
                    let value = map.next_value_seed(BoundedValue::new(budget))?;
                    once(
                        &mut parameters,
                        "parameters",
                        object_of("parameters", value)?,
                    )?
                }
                "inputs" => once(
                    &mut inputs,
                    "inputs",
                    map.next_value_seed(InputsSeed(budget))?,
                )?,
                "outputs" => once(
                    &mut outputs,
                    "outputs",
                    map.next_value::<Vec<OutputBody>>()?,
                )?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(InferBody {
            id: id.flatten(),
            parameters: parameters.unwrap_or_default(),
            inputs: inputs.ok_or_else(|| de::Error::missing_field("inputs"))?,
            outputs: outputs.unwrap_or_default(),
        })
    }
}

/// Sets a field read once; a second time is refused as serde's derive refuses it.
fn once<T, E: de::Error>(slot: &mut Option<T>, field: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(field));
    }
    *slot = Some(value);
    Ok(())
}

/// A `parameters` value, which must be an object.
fn object_of<E: de::Error>(field: &str, value: Value) -> Result<Map<String, Value>, E> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(E::custom(format!("{field} must be a JSON object"))),
    }
}

/// The `inputs` list, each read by [`InputSeed`].
struct InputsSeed<'s, 'b>(&'s Budget<'b>);

impl<'de> DeserializeSeed<'de> for InputsSeed<'_, '_> {
    type Value = Vec<InputBody>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_, '_> {
    type Value = Vec<InputBody>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of input tensors")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut inputs = Vec::new();
        while let Some(input) = seq.next_element_seed(InputSeed(self.0))? {
            inputs.push(input);
        }
        Ok(inputs)
    }
}

/// One input tensor. A `shape` read before the `data` is checked at once: its first
/// dimension against the row limit, its element count against what the model takes;
/// the data is then refused as soon as it holds more than the shape's elements.
/// A shape after the data is checked when the input is decoded, as before.
struct InputSeed<'s, 'b>(&'s Budget<'b>);

impl<'de> DeserializeSeed<'de> for InputSeed<'_, '_> {
    type Value = InputBody;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<InputBody, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InputSeed<'_, '_> {
    type Value = InputBody;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an input tensor (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InputBody, A::Error> {
        let budget = self.0;
        let (mut name, mut shape, mut datatype, mut parameters, mut data) =
            (None::<String>, None::<Vec<i64>>, None, None, None);
        // The shape's element count, when it was read before the data.
        let mut elements = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key {
                "name" => once(&mut name, "name", map.next_value()?)?,
                "shape" => {
                    let dims: Vec<i64> = map.next_value()?;
                    let count = check_shape(budget, name.as_deref(), &dims)?;
                    if data.is_none() {
                        elements = Some(count);
                    }
                    once(&mut shape, "shape", dims)?
                }
                "datatype" => once(&mut datatype, "datatype", map.next_value::<String>()?)?,
                "parameters" => {
                    let value = map.next_value_seed(BoundedValue::new(budget))?;
                    once(
                        &mut parameters,
                        "parameters",
                        object_of("parameters", value)?,
                    )?
                }
                "data" => {
                    let limit = shape
                        .as_deref()
                        .zip(elements)
                        .filter(|_| data.is_none())
                        .map(|(dims, count)| DataLimit::new(name.as_deref(), dims, count));
                    let value = map.next_value_seed(BoundedValue {
                        budget,
                        rows: Rows::None,
                        data: limit.as_ref(),
                    })?;
                    once(&mut data, "data", Some(value).filter(|v| !v.is_null()))?
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(InputBody {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            parameters: parameters.unwrap_or_default(),
            data: data.flatten(),
        })
    }
}

/// Checks an input's declared shape while the body is read, and gives its element
/// count: a negative dimension or a count past `usize` is refused (400) as
/// [`decode_tensors`] refuses it, a first dimension past the row limit or more
/// elements than the model takes in one request (413) as `api::predict` does.
fn check_shape<E: de::Error>(
    budget: &Budget<'_>,
    name: Option<&str>,
    dims: &[i64],
) -> Result<usize, E> {
    let what = || match name {
        Some(name) => format!("input {name:?}"),
        None => "an input".to_string(),
    };
    let mut count = 1usize;
    for &d in dims {
        let Ok(d) = usize::try_from(d) else {
            return Err(budget.refuse(invalid(format!(
                "{}: negative dimension in shape {dims:?}",
                what()
            ))));
        };
        count = count.checked_mul(d).ok_or_else(|| {
            budget.refuse(invalid(format!("{}: shape {dims:?} is too large", what())))
        })?;
    }
    let bounds = budget.bounds();
    if let Some(&rows) = dims.first() {
        if rows as u64 > bounds.max_rows as u64 {
            return Err(budget.refuse(too_many_rows(
                &what(),
                rows,
                bounds.max_rows,
                &bounds.limit_of,
            )));
        }
    }
    if bounds.max_values.is_some_and(|most| count > most) {
        return Err(budget.refuse(bounds.too_many_values()));
    }
    Ok(count)
}

/// The shared-memory extension (`shared_memory_region`, `_byte_size`, `_offset`),
/// which this server does not offer: refused by name (an input said "no data and no
/// binary_data_size"; an output's region was ignored and the data sent in JSON,
/// where the client would never look).
fn refuse_shared_memory(parameters: &Map<String, Value>, what: &str) -> Result<(), ApiError> {
    match parameters.keys().find(|k| k.starts_with("shared_memory_")) {
        Some(key) => Err(ApiError::InvalidArgument(format!(
            "{what}: parameter {key:?}: the shared-memory extension is not supported; \
             send the data in the request (JSON or binary data)"
        ))),
        None => Ok(()),
    }
}

/// One input tensor: `data` flat or nested, or binary (`parameters.binary_data_size`).
/// An answer's output tensors have the same fields (`crate::workers::scoring` reads
/// a worker's answers with it).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = V2InferInput)]
pub(crate) struct InputBody {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<Value>,
}

impl InputBody {
    /// Reads the bare NaN and infinities of a body's second reading
    /// ([`InferBody::parse_with_literals`]) in this input's data: numbers of a
    /// floating-point datatype, written as the names `typed_tensor` reads
    /// ([`crate::json_tensor::nonfinite_name`]); refused for any other datatype
    /// (an integer cannot hold them, and `"NaN"` in quotes is text, bare NaN is not).
    fn read_bare_literals(&mut self) -> Result<(), ApiError> {
        let Some(data) = self.data.as_mut() else {
            return Ok(());
        };
        let float = matches!(
            DataType::from_v2_name(&self.datatype),
            Some(DataType::F16 | DataType::F32 | DataType::F64)
        );
        let what = format!("input {:?}", self.name);
        let datatype = &self.datatype;
        unmark(data, &mut |word| {
            if float {
                Ok(())
            } else {
                Err(invalid(format!(
                    "{what}: {word}, unquoted, is a number that {datatype} cannot hold"
                )))
            }
        })
    }
}

/// Replaces each marked bare literal in `value` by its word (`"NaN"`), once `check`
/// accepts it.
fn unmark(
    value: &mut Value,
    check: &mut dyn FnMut(&str) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    match value {
        Value::String(s) if Literals::Quoted.holds_bare(&Value::String(s.clone())) => {
            let word = s.trim_start_matches('\u{0}').to_string();
            check(&word)?;
            *s = word;
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| unmark(v, check)),
        Value::Object(fields) => fields.values_mut().try_for_each(|v| unmark(v, check)),
        _ => Ok(()),
    }
}

/// An output asked for (`parameters.binary_data` for binary data).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = V2RequestedOutput)]
struct OutputBody {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidArgument(msg.into())
}

/// Takes a body's JSON header off the front of `body` (the whole body when the
/// request has no `Inference-Header-Content-Length`), leaving the binary part in it.
/// The header is copied only when it is split over chunks.
fn take_header(headers: &HeaderMap, body: &mut impl Buf) -> Result<Bytes, ApiError> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok(body.copy_to_bytes(body.remaining()));
    };
    if headers.get_all(HEADER_LENGTH).iter().nth(1).is_some() {
        return Err(invalid(format!("{HEADER_LENGTH} is given more than once")));
    }
    let length: usize = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| invalid(format!("{HEADER_LENGTH} must be a non-negative integer")))?;
    if length > body.remaining() {
        return Err(invalid(format!(
            "{HEADER_LENGTH} is {length} but the body has only {} bytes",
            body.remaining()
        )));
    }
    Ok(body.copy_to_bytes(length))
}

fn decode_inputs(
    inputs: Vec<InputBody>,
    binary: &mut impl Buf,
) -> Result<Vec<NamedTensor>, ApiError> {
    decode_tensors(inputs, binary, "input")
}

/// V2 tensors (`kind` "input" or "output", for the messages), their binary data
/// taken from `binary` in order; every byte of it must be claimed.
pub(crate) fn decode_tensors(
    inputs: Vec<InputBody>,
    binary: &mut impl Buf,
    kind: &str,
) -> Result<Vec<NamedTensor>, ApiError> {
    let mut tensors = Vec::with_capacity(inputs.len());
    for input in inputs {
        let what = format!("{kind} {:?}", input.name);
        let dtype = DataType::from_v2_name(&input.datatype)
            .ok_or_else(|| invalid(format!("{what}: unknown datatype {:?}", input.datatype)))?;
        let shape: Vec<usize> = input
            .shape
            .iter()
            .map(|&d| {
                usize::try_from(d).map_err(|_| {
                    invalid(format!(
                        "{what}: negative dimension in shape {:?}",
                        input.shape
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| invalid(format!("{what}: shape {shape:?} is too large")))?;
        refuse_shared_memory(&input.parameters, &what)?;
        let binary_size = match input.parameters.get("binary_data_size") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                invalid(format!(
                    "{what}: binary_data_size must be a non-negative integer"
                ))
            })? as usize),
        };
        let tensor = match (binary_size, &input.data) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!(
                    "{what}: has both \"data\" and binary_data_size"
                )))
            }
            (Some(size), None) => {
                if size > binary.remaining() {
                    return Err(invalid(format!(
                        "{what}: binary_data_size {size} is more than the {} binary bytes left in the body",
                        binary.remaining()
                    )));
                }
                // Typed by the client, as `typed_tensor`'s are: a BOOL tensor is no
                // number (`Tensor::declared`).
                Tensor::new(
                    shape,
                    raw_tensor::decode_buf(dtype, count, size, binary)
                        .map_err(|e| invalid(format!("{what}: {e}")))?,
                )
                .map(Tensor::declared)
                .map_err(|e| invalid(format!("{what}: {e}")))?
            }
            (None, Some(data)) => {
                let (_, leaves) = flatten(data, &what)?;
                if leaves.len() != element_count(&shape) {
                    return Err(invalid(format!(
                        "{what}: shape {shape:?} needs {count} elements, but data has {}",
                        leaves.len()
                    )));
                }
                typed_tensor(shape, &leaves, dtype, &what)?
            }
            (None, None) => {
                return Err(invalid(format!(
                    "{what}: no \"data\" and no binary_data_size"
                )))
            }
        };
        tensors.push((input.name, tensor));
    }
    if binary.has_remaining() {
        return Err(invalid(format!(
            "{} binary bytes after the JSON header are not claimed by any {kind}'s binary_data_size",
            binary.remaining()
        )));
    }
    Ok(tensors)
}

/// A true/false parameter, false when absent; anything but a boolean is refused
/// (`"yes"` was taken for false without a word).
fn flag(params: &Map<String, Value>, name: &str) -> Result<Option<bool>, HttpError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(HttpError(invalid(format!(
            "parameter {name:?} must be true or false, not {other}"
        )))),
    }
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

/// The description's types for the answers built as JSON values above; never built.
#[allow(dead_code)]
mod schema {
    use serde_json::Value;
    use utoipa::ToSchema;

    #[derive(ToSchema)]
    pub struct V2ServerMetadata {
        name: String,
        version: String,
        extensions: Vec<String>,
    }

    #[derive(ToSchema)]
    pub struct V2TensorMetadata {
        name: String,
        datatype: String,
        /// -1 for a dimension of any size.
        shape: Vec<i64>,
    }

    #[derive(ToSchema)]
    pub struct V2ModelMetadata {
        name: String,
        versions: Vec<String>,
        platform: String,
        inputs: Vec<V2TensorMetadata>,
        outputs: Vec<V2TensorMetadata>,
    }

    #[derive(ToSchema)]
    pub struct V2ConfigTensor {
        name: String,
        /// Triton's data type: `TYPE_FP32`, `TYPE_INT64`, `TYPE_STRING` (BYTES)...
        data_type: String,
        /// -1 for a dimension of any size; without the batch dimension when
        /// `max_batch_size` > 0.
        dims: Vec<i64>,
    }

    /// Triton's `ModelConfig`, the fields ferroserve fills.
    #[derive(ToSchema)]
    pub struct V2ModelConfig {
        name: String,
        /// `onnxruntime_onnx`, `tensorflow_savedmodel`, `sklearn`, `fasttext`.
        platform: String,
        /// `onnxruntime`, `tensorflow`, `sklearn`, `fasttext`.
        backend: String,
        /// `{"latest": {"num_versions": n}}`, `{"all": {}}` or
        /// `{"specific": {"versions": [...]}}`.
        version_policy: Value,
        /// The `[batching]` maximum when the model batches, else 0.
        max_batch_size: u64,
        input: Vec<V2ConfigTensor>,
        output: Vec<V2ConfigTensor>,
    }

    /// Triton's `ModelStatisticsResponse`: `model_stats`, one entry per version,
    /// each with `name`, `version`, `last_inference`, `inference_count`,
    /// `execution_count`, `inference_stats` (`success`, `fail`, `queue`,
    /// `compute_input`, `compute_infer`, `compute_output`, `cache_hit`,
    /// `cache_miss`: each `{"count", "ns"}`) and `batch_stats`.
    #[derive(ToSchema)]
    pub struct V2ModelStatistics {
        model_stats: Vec<Value>,
    }

    #[derive(ToSchema)]
    pub struct V2InferOutput {
        name: String,
        datatype: String,
        shape: Vec<u64>,
        /// `binary_data_size` when the output is sent as binary data.
        #[schema(required = false)]
        parameters: Value,
        /// The flat tensor data (absent when binary).
        #[schema(required = false)]
        data: Vec<Value>,
    }

    #[derive(ToSchema)]
    pub struct V2InferResponse {
        #[schema(required = false)]
        id: String,
        model_name: String,
        model_version: String,
        outputs: Vec<V2InferOutput>,
    }
}
use schema::{
    V2InferResponse, V2ModelConfig, V2ModelMetadata, V2ModelStatistics, V2ServerMetadata,
};

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

    #[test]
    fn header_length_longer_than_body_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_LENGTH, "100".parse().unwrap());
        assert!(take_header(&headers, &mut &b"{}"[..])
            .unwrap_err()
            .to_string()
            .contains("only 2 bytes"));
        headers.insert(HEADER_LENGTH, "2".parse().unwrap());
        // Split over chunks, the header is put together and the rest left.
        let mut body = Buf::chain(&b"{"[..], &b"}xy"[..]);
        assert_eq!(take_header(&headers, &mut body).unwrap(), &b"{}"[..]);
        assert_eq!(body.copy_to_bytes(body.remaining()), &b"xy"[..]);
        // Given twice, it is not taken for either value.
        headers.append(HEADER_LENGTH, "1".parse().unwrap());
        assert!(take_header(&headers, &mut &b"{}xy"[..])
            .unwrap_err()
            .to_string()
            .contains("more than once"));
        headers.remove(HEADER_LENGTH);
        let mut body = Buf::chain(&b"{"[..], &b"}"[..]);
        assert_eq!(take_header(&headers, &mut body).unwrap(), &b"{}"[..]);
    }
}
