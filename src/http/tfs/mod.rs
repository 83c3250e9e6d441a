//! TF Serving REST API:
//! `/v1/models/{m}[/versions/{v}|/labels/{l}][/metadata|:predict|:classify|:regress]`.
//! `:classify` and `:regress` take `{"signature_name"?, "context"?, "examples": [...]}`
//! and call the same operations as the gRPC `Classify` / `Regress` (`api::classify`).
//!
//! TF Serving puts the verb after a colon in the last path segment, which a
//! router cannot match as a parameter, so one catch-all route parses the path and
//! answers a method the path does not take with 405 and that path's `Allow`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::{body, AppState, HttpError};
use crate::api::bounds::{request_bounds, RequestBounds};
use crate::api::classify::{self, Example, ExamplesRequest, FeatureValues};
use crate::api::{self, ApiError, PredictRequest, Protocol};
use crate::backends::Signature;
use crate::json_tensor::{
    f32_json, flatten, infer_tensor, parse_bounded, BoundedFields, Budget, Literals, NestedJson,
    Rows,
};
use crate::manager::{ServableHandle, VersionRequest};
use crate::tensor::{NamedTensor, Tensor, TensorSpec};

/// The only signature ferroserve models have, as TF Serving names it.
pub const DEFAULT_SIGNATURE: &str = "serving_default";

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/models/{*rest}", any(model_route))
}

/// The methods a path takes, as its `Allow` header lists them, or `None` for a
/// verb that names no endpoint.
fn allowed_methods(verb: Option<&str>) -> Option<&'static str> {
    match verb {
        None | Some("metadata" | "history" | "predictions") => Some("GET,HEAD"),
        Some("predict" | "classify" | "regress") => Some("POST"),
        Some(_) => None,
    }
}

/// 405 for a method `rest` does not take, with the methods it does in `Allow`.
fn method_not_allowed(method: &Method, rest: &str, allowed: &'static str) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, allowed)],
        Json(json!({
            "error": format!("method {method} is not allowed on /v1/models/{rest} (allowed: {allowed})")
        })),
    )
        .into_response()
}

/// Every method on `/v1/models/…`: the path decides which it takes (the router
/// cannot: the verb is not a segment of its own), and a method it does not take is
/// 405 with that path's `Allow`, whatever the method.
async fn model_route(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let method = request.method().clone();
    // A path that names no endpoint is the handlers' to refuse (404, or 400 for a
    // malformed version), whatever the method.
    let allowed = parse_path(&rest)
        .ok()
        .and_then(|path| allowed_methods(path.verb));
    let takes = match allowed {
        Some("POST") => method == Method::POST,
        Some(_) => method == Method::GET || method == Method::HEAD,
        None => true,
    };
    let result = match (takes, allowed, &method) {
        (false, Some(allowed), _) => Ok(method_not_allowed(&method, &rest, allowed)),
        (_, _, &Method::GET | &Method::HEAD) => {
            get_model(State(state), Path(rest), RawQuery(query)).await
        }
        (_, _, &Method::POST) => {
            // Moved, not copied: a predict reads `x-request-id` only if it is logged.
            let mut request = request;
            let headers = std::mem::take(request.headers_mut());
            let raw = Bytes::from_request(request, &state).await;
            post_model(State(state), Path(rest), headers, raw).await
        }
        _ => parse_path(&rest).and(Err(not_found(&rest))),
    };
    result.into_response()
}

#[derive(Debug, PartialEq)]
struct ModelPath<'a> {
    model: &'a str,
    version: VersionRequest,
    /// `metadata` for GET, `predict` for POST; `None` for status.
    verb: Option<&'a str>,
}

fn not_found(path: &str) -> HttpError {
    HttpError(ApiError::NotFound(format!(
        "no such endpoint: /v1/models/{path}"
    )))
}

fn parse_path(rest: &str) -> Result<ModelPath<'_>, HttpError> {
    let (path, colon_verb) = match rest.rsplit_once(':') {
        Some((p, v)) if !v.contains('/') => (p, Some(v)),
        _ => (rest, None),
    };
    let segments: Vec<&str> = path.split('/').collect();
    let (model, version, tail) = match segments.as_slice() {
        [m, "versions", v, tail @ ..] => {
            (*m, VersionRequest::Specific(super::path_version(v)?), tail)
        }
        [m, "labels", l, tail @ ..] => (*m, VersionRequest::Label(l.to_string()), tail),
        [m, tail @ ..] => (*m, VersionRequest::Latest, tail),
        [] => return Err(not_found(rest)),
    };
    if model.is_empty() {
        return Err(not_found(rest));
    }
    let verb = match (tail, colon_verb) {
        // The store's views are paths, never verbs: access is decided by the path
        // (`auth::rest_access`), which would read `m:history` as a model's name.
        ([], Some("history" | "predictions")) => return Err(not_found(rest)),
        ([], verb) => verb,
        (["metadata"], None) => Some("metadata"),
        // The metadata store's views of a model (`http/store.rs`).
        (["history"], None) if version == VersionRequest::Latest => Some("history"),
        (["predictions"], None) if version == VersionRequest::Latest => Some("predictions"),
        _ => return Err(not_found(rest)),
    };
    Ok(ModelPath {
        model,
        version,
        verb,
    })
}

async fn get_model(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    let path = parse_path(&rest)?;
    match path.verb {
        None => {
            let version = (path.version != VersionRequest::Latest).then_some(&path.version);
            let statuses = api::model_status(&state, path.model, version)?;
            Ok(Json(status_json(&statuses)).into_response())
        }
        Some("metadata") => {
            let meta = api::model_metadata(&state, path.model, &path.version)?;
            Ok(Json(metadata_json(&meta)).into_response())
        }
        Some("history") => super::store::history(&state, path.model, query.as_deref()).await,
        Some("predictions") => {
            super::store::predictions(&state, path.model, query.as_deref()).await
        }
        Some(_) => Err(not_found(&rest)),
    }
}

/// TF Serving's `GetModelStatusResponse` as its REST API writes it. A version that
/// failed to load is `END` with its error, as TF Serving reports it (its state enum
/// has no ERROR: clients parsing the answer with `json_format` refused "ERROR");
/// ferroserve's own `/models/status` says `ERROR`.
pub fn status_json(statuses: &[api::VersionStatus]) -> Value {
    let list: Vec<Value> = statuses
        .iter()
        .map(|s| {
            let code = if s.error_message.is_empty() {
                "OK"
            } else {
                "UNKNOWN"
            };
            let state = match s.state {
                crate::manager::VersionState::Error => crate::manager::VersionState::End,
                other => other,
            };
            json!({
                "version": s.version.to_string(),
                "state": state.as_str(),
                "status": { "error_code": code, "error_message": s.error_message },
            })
        })
        .collect();
    json!({ "model_version_status": list })
}

fn tensor_info(spec: &crate::tensor::TensorSpec, graph_name: &str) -> Value {
    // A tensor of any rank as TF Serving writes it: no dimensions, unknown_rank.
    let dims: Vec<Value> = match spec.any_rank() {
        true => Vec::new(),
        false => spec
            .shape
            .iter()
            .map(|d| json!({ "size": d.to_string(), "name": "" }))
            .collect(),
    };
    json!({
        "dtype": spec.dtype.tf_name(),
        "tensor_shape": { "dim": dims, "unknown_rank": spec.any_rank() },
        "name": graph_name,
    })
}

fn metadata_json(meta: &api::ModelMetadata) -> Value {
    // A SavedModel's own SignatureDefs (graph tensor names included); other formats
    // have one signature, named by its keys.
    let infos = |specs: &[crate::tensor::TensorSpec], names: Option<&[String]>| {
        specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let graph_name = names.and_then(|n| n.get(i)).unwrap_or(&s.name);
                (s.name.clone(), tensor_info(s, graph_name))
            })
            .collect::<Map<String, Value>>()
    };
    let mut defs = Map::new();
    if meta.signatures.is_empty() {
        defs.insert(
            DEFAULT_SIGNATURE.to_string(),
            json!({
                "inputs": infos(&meta.signature.inputs, None),
                "outputs": infos(&meta.signature.outputs, None),
                "method_name": "tensorflow/serving/predict",
            }),
        );
    }
    for s in &meta.signatures {
        defs.insert(
            s.name.clone(),
            json!({
                "inputs": infos(&s.signature.inputs, Some(&s.input_tensors)),
                "outputs": infos(&s.signature.outputs, Some(&s.output_tensors)),
                "method_name": s.method_name,
            }),
        );
    }
    json!({
        "model_spec": { "name": meta.name, "signature_name": "", "version": meta.version.to_string() },
        "metadata": { "signature_def": { "signature_def": defs } },
    })
}

/// A `:predict` body: `instances` (row format) or `inputs` (columnar format). Other
/// keys are ignored, as TF Serving ignores them (a client may send `model_name`).
#[derive(utoipa::ToSchema)]
#[schema(as = TfsPredictRequest)]
struct PredictBody {
    signature_name: Option<String>,
    instances: Option<Value>,
    inputs: Option<Value>,
    /// ferroserve's extra fields: a fastText model's labels per text and threshold.
    k: Option<Value>,
    threshold: Option<Value>,
}

impl PredictBody {
    /// Reads a `:predict` body under `bounds`: the rows of `instances` and of each
    /// columnar input are counted as they are read, and the body refused (413) at
    /// the first row past the limit, before the rest of it is built.
    fn parse(bytes: &[u8], bounds: &RequestBounds) -> Result<PredictBody, ApiError> {
        let budget = Budget::new(bounds);
        let fields = BoundedFields {
            budget: &budget,
            fields: [
                ("signature_name", Rows::None),
                ("instances", Rows::Elements("\"instances\"")),
                ("inputs", Rows::Columns("\"inputs\"")),
                ("k", Rows::None),
                ("threshold", Rows::None),
            ],
        };
        let [signature_name, instances, inputs, k, threshold] =
            parse_bounded(bytes, fields, &budget)?.ok_or_else(|| {
                ApiError::InvalidArgument("the body must be a JSON object".into())
            })?;
        Ok(PredictBody {
            signature_name: signature_name_of(signature_name)?,
            instances,
            inputs,
            k,
            threshold,
        })
    }

    /// Whether a field that is not a tensor holds a bare NaN or infinity that
    /// `quote_nonfinite_literals` quoted (this body being read as
    /// [`Literals::Quoted`]): only tensors take them, so such a body is answered with
    /// its own parse error, and the marked text is never read.
    fn bare_literals_outside_tensors(&self) -> bool {
        let quoted = Literals::Quoted;
        self.signature_name
            .as_ref()
            .is_some_and(|name| quoted.holds_bare(&Value::String(name.clone())))
            || [&self.k, &self.threshold]
                .into_iter()
                .flatten()
                .any(|v| quoted.holds_bare(v))
    }
}

/// A body's `signature_name`: a string, or absent.
fn signature_name_of(value: Option<Value>) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(Value::String(name)) => Ok(Some(name)),
        Some(_) => Err(ApiError::InvalidArgument(
            "signature_name must be a string".into(),
        )),
    }
}

/// `{"b64": "..."}` is a value (binary string), not a set of named inputs.
fn is_named_object(v: &Value) -> bool {
    matches!(v, Value::Object(o) if !(o.len() == 1 && o.contains_key("b64")))
}

/// A model version's inputs, as `crate::api::inputs` matches a body's tensors to
/// them: a tensor's values are inferred from JSON (TF Serving REST carries no
/// dtype), and its input, where known, names the value that does not fit it (text
/// among numbers for a numeric input, wherever it stands).
struct ModelInputs<'a> {
    signature: &'a Signature,
    /// The input an unnamed tensor is for (`input_name` in config.toml); else the
    /// only one.
    default_input: Option<String>,
    /// Inputs the model drops before it runs: nothing is said of their dtype.
    ignored: &'a [String],
}

impl<'a> ModelInputs<'a> {
    /// The inputs of `handle`'s signature called `signature_name`; `None` where the
    /// body's tensors are not the signature's (pre-processing turns them into its
    /// inputs) or there is no such signature.
    fn of(handle: &'a ServableHandle, signature_name: &str) -> Option<ModelInputs<'a>> {
        let signature = handle.backend.signature_named(signature_name)?;
        let preprocessed = handle.pipeline.transforms_inputs()
            && std::ptr::eq(signature, handle.backend.signature());
        (!preprocessed).then(|| ModelInputs {
            signature,
            default_input: handle.config().input_name.clone(),
            ignored: &handle.backend.traits().ignored_inputs,
        })
    }

    /// The input a tensor called `name` (empty: unnamed) is for, if any.
    fn spec(&self, name: &str) -> Option<&'a TensorSpec> {
        let name = match (name, self.default_input.as_deref()) {
            ("", Some(default)) => default,
            ("", None) => {
                return match self.signature.inputs.as_slice() {
                    [only] if !self.ignored.contains(&only.name) => Some(only),
                    _ => None,
                }
            }
            (name, _) => name,
        };
        if self.ignored.iter().any(|i| i == name) {
            return None;
        }
        self.signature.inputs.iter().find(|s| s.name == name)
    }
}

fn tensor_from(
    value: &Value,
    what: &str,
    literals: Literals,
    takes: Option<&TensorSpec>,
) -> Result<Tensor, ApiError> {
    let (shape, leaves) = flatten(value, what)?;
    infer_tensor(shape, &leaves, what, literals, takes)
}

/// Row format: a list of instances, each a value or an object of named values.
fn decode_instances(
    instances: &Value,
    literals: Literals,
    model: Option<&ModelInputs<'_>>,
) -> Result<Vec<NamedTensor>, ApiError> {
    let Value::Array(rows) = instances else {
        return Err(ApiError::InvalidArgument(
            "\"instances\" must be a list".into(),
        ));
    };
    let Some(first) = rows.first() else {
        return Err(ApiError::InvalidArgument("\"instances\" is empty".into()));
    };
    if !is_named_object(first) {
        let takes = model.and_then(|m| m.spec(""));
        return Ok(vec![(
            String::new(),
            tensor_from(instances, "instances", literals, takes)?,
        )]);
    }
    let Value::Object(first) = first else {
        unreachable!("checked by is_named_object")
    };
    let mut named = Vec::with_capacity(first.len());
    for name in first.keys() {
        let column: Vec<Value> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                Value::Object(o) if o.len() == first.len() => {
                    o.get(name).cloned().ok_or_else(|| {
                        ApiError::InvalidArgument(format!("instance {i} has no input {name:?}"))
                    })
                }
                _ => Err(ApiError::InvalidArgument(format!(
                    "instance {i} does not have the same named inputs as instance 0"
                ))),
            })
            .collect::<Result<_, _>>()?;
        let takes = model.and_then(|m| m.spec(name));
        let what = format!("input {name:?}");
        named.push((
            name.clone(),
            tensor_from(&Value::Array(column), &what, literals, takes)?,
        ));
    }
    Ok(named)
}

/// Columnar format: one value, or an object of named values.
fn decode_inputs(
    inputs: &Value,
    literals: Literals,
    model: Option<&ModelInputs<'_>>,
) -> Result<Vec<NamedTensor>, ApiError> {
    match inputs {
        Value::Object(o) if is_named_object(inputs) => o
            .iter()
            .map(|(name, v)| {
                let takes = model.and_then(|m| m.spec(name));
                let tensor = tensor_from(v, &format!("input {name:?}"), literals, takes)?;
                Ok((name.clone(), tensor))
            })
            .collect(),
        other => Ok(vec![(
            String::new(),
            tensor_from(other, "inputs", literals, model.and_then(|m| m.spec("")))?,
        )]),
    }
}

/// `{"predictions": [...]}`: one entry per row, written straight from the output
/// tensors (no `Value` tree: the answer's size was bounded by `max_response_bytes`,
/// and building it as a tree would cost several times that).
#[derive(serde::Serialize)]
struct Predictions<'a> {
    predictions: RowsJson<'a>,
}

/// `{"outputs": ...}`: the columnar answer, written straight from the tensors.
#[derive(serde::Serialize)]
struct Outputs<'a> {
    outputs: ColumnsJson<'a>,
}

/// Whether an output's strings are always written `{"b64": …}`: TF Serving's rule
/// (`json_tensor.cc`) for a tensor whose name ends in `_bytes`, so that a client
/// reading binary outputs gets them encoded even when they happen to be UTF-8.
fn named_bytes(name: &str) -> bool {
    name.ends_with("_bytes")
}

/// Row format: each row is the only output's row, or an object of every output's.
struct RowsJson<'a> {
    outputs: &'a [NamedTensor],
    batch: usize,
}

impl serde::Serialize for RowsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Row<'a>(&'a [NamedTensor], usize);
        impl serde::Serialize for Row<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self.0 {
                    [(name, only)] => NestedJson::row(only, self.1)
                        .b64_if(named_bytes(name))
                        .serialize(serializer),
                    many => {
                        let mut map = serializer.serialize_map(Some(many.len()))?;
                        for (name, t) in many {
                            let row = NestedJson::row(t, self.1).b64_if(named_bytes(name));
                            map.serialize_entry(name, &row)?;
                        }
                        map.end()
                    }
                }
            }
        }
        let mut seq = serializer.serialize_seq(Some(self.batch))?;
        for i in 0..self.batch {
            seq.serialize_element(&Row(self.outputs, i))?;
        }
        seq.end()
    }
}

/// Columnar format: the only output's tensor, or an object of every output's.
struct ColumnsJson<'a>(&'a [NamedTensor]);

impl serde::Serialize for ColumnsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.0 {
            [(name, only)] => NestedJson::whole(only)
                .b64_if(named_bytes(name))
                .serialize(serializer),
            many => {
                let mut map = serializer.serialize_map(Some(many.len()))?;
                for (name, t) in many {
                    map.serialize_entry(name, &NestedJson::whole(t).b64_if(named_bytes(name)))?;
                }
                map.end()
            }
        }
    }
}

fn encode_rows(outputs: &[NamedTensor]) -> Result<RowsJson<'_>, ApiError> {
    let batch = outputs
        .first()
        .and_then(|(_, t)| t.batch_size())
        .unwrap_or(0);
    if outputs.iter().any(|(_, t)| t.batch_size() != Some(batch)) {
        return Err(ApiError::InvalidArgument(
            "the model's outputs do not share a batch dimension; use the columnar \"inputs\" format".into(),
        ));
    }
    Ok(RowsJson { outputs, batch })
}

pub(super) async fn post_model(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    headers: axum::http::HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, HttpError> {
    let path = parse_path(&rest)?;
    match path.verb {
        Some("predict") => {}
        Some(verb @ ("classify" | "regress")) => {
            let bytes = body(raw, state.settings.max_request_bytes)?;
            return examples_verb(&state, path.model, path.version, verb, &bytes, headers).await;
        }
        _ => return Err(not_found(&rest)),
    }
    let bytes = body(raw, state.settings.max_request_bytes)?;
    let bounds = request_bounds(&state, path.model, Some(&path.version));
    // As TF Serving's FillPredictRequestFromJson: the JSON is read first (a body
    // that is not a JSON object, or a bad signature_name, is a 400 whatever the
    // model), then the model is looked up, then the inputs are read.
    let (request, literals) = read_literals(
        &bytes,
        |bytes| PredictBody::parse(bytes, &bounds),
        PredictBody::bare_literals_outside_tensors,
    )?;
    let decode = |model: Option<&ModelInputs<'_>>| {
        let (inputs, row_format) = match (&request.instances, &request.inputs) {
            (Some(instances), None) => (decode_instances(instances, literals, model)?, true),
            (None, Some(inputs)) => (decode_inputs(inputs, literals, model)?, false),
            (Some(_), Some(_)) => return Err(ApiError::InvalidArgument(
                "give either \"instances\" (row format) or \"inputs\" (columnar format), not both"
                    .into(),
            )),
            (None, None) => {
                return Err(ApiError::InvalidArgument(
                    "missing \"instances\" (row format) or \"inputs\" (columnar format)".into(),
                ))
            }
        };
        let options = super::predict_options(request.k.as_ref(), request.threshold.as_ref())
            .map_err(|HttpError(e)| e)?;
        Ok((inputs, row_format, options))
    };
    let signature_name = request.signature_name.as_deref().unwrap_or_default();
    let (inputs, row_format, options) = decode(None).map_err(|refused| {
        model_error_first(&state, path.model, &path.version, refused, |handle| {
            // Read again knowing the model's inputs, to say which value does not fit
            // its input: a body that read well never pays for this.
            decode(ModelInputs::of(handle, signature_name).as_ref()).err()
        })
    })?;
    let mut predict = PredictRequest::new(path.model, path.version, Protocol::TfServingRest);
    predict.inputs = inputs;
    predict.options = options;
    // The model's signatures decide (`crate::api::predict`): SavedModels have several.
    predict.signature_name = signature_name.to_string();
    // `x-request-id` is the id the prediction log keeps the request under, if it
    // is logged.
    let client_id = api::predict::ClientRequestId {
        given: None,
        headers: Some(&headers),
    };
    let response = api::predict::predict_with_id(&state, predict, client_id).await?;
    let answer = if row_format {
        Json(Predictions {
            predictions: encode_rows(&response.outputs)?,
        })
        .into_response()
    } else {
        Json(Outputs {
            outputs: ColumnsJson(&response.outputs),
        })
        .into_response()
    };
    Ok(super::with_request_id_header(
        super::with_cache_header(answer, response.cache),
        response.request_id.as_ref(),
    ))
}

/// Reads a `:predict`, `:classify` or `:regress` body with `parse`, as TF Serving's
/// parser reads them: bare NaN and ±Infinity are numbers (rapidjson's
/// kParseNanAndInfFlag), as Python's `json.dumps` writes them. serde_json does not
/// take them, so a body that fails is read again with them quoted and marked
/// ([`Literals::Quoted`]): the tensor and feature conversions read them as numbers
/// (text refuses them), and where `bare_outside_values` finds one in a field that is
/// no tensor or feature (a signature name, an option) the body's own parse error
/// stands. A body refused for its size is not read again.
fn read_literals<T>(
    bytes: &[u8],
    parse: impl Fn(&[u8]) -> Result<T, ApiError>,
    bare_outside_values: impl Fn(&T) -> bool,
) -> Result<(T, Literals), ApiError> {
    let too_large = |e: &ApiError| matches!(e, ApiError::PayloadTooLarge(_));
    match parse(bytes) {
        Ok(request) => Ok((request, Literals::Strict)),
        Err(e) if too_large(&e) => Err(e),
        Err(e) => match crate::json_tensor::quote_nonfinite_literals(bytes) {
            None => Err(e),
            Some(quoted) => match parse(&quoted) {
                Ok(request) if bare_outside_values(&request) => Err(e),
                Ok(request) => Ok((request, Literals::Quoted)),
                Err(again) if too_large(&again) => Err(again),
                Err(_) => Err(e),
            },
        },
    }
}

/// `refused`, the error of a predict body whose inputs could not be read, unless
/// `model` at `version` is not served here: TF Serving looks the model up once the
/// body has parsed as JSON, before it reads the inputs, so such a request for a
/// model it does not serve is a 404 (or the version's own error). Only a refused
/// body pays for the lookup: a body that reads well meets the same error in `api`.
/// A served version's `explain` may say better why the body was refused (knowing
/// the model's inputs); else `refused` stands.
fn model_error_first(
    state: &AppState,
    model: &str,
    version: &VersionRequest,
    refused: ApiError,
    explain: impl FnOnce(&ServableHandle) -> Option<ApiError>,
) -> ApiError {
    match state.manager.resolve(model, version) {
        Ok(handle) => explain(&handle).unwrap_or(refused),
        Err(missing) => missing.into(),
    }
}

/// A `:classify` or `:regress` body; other keys are ignored, as for `:predict`.
#[derive(utoipa::ToSchema)]
#[schema(as = TfsExamplesRequest)]
struct ExamplesBody {
    signature_name: Option<String>,
    context: Option<Map<String, Value>>,
    examples: Option<Vec<Value>>,
}

impl ExamplesBody {
    /// Reads a `:classify` / `:regress` body, its examples (one row each) counted
    /// against the row limit as they are read.
    fn parse(bytes: &[u8], bounds: &RequestBounds) -> Result<ExamplesBody, ApiError> {
        let budget = Budget::new(bounds);
        let fields = BoundedFields {
            budget: &budget,
            fields: [
                ("signature_name", Rows::None),
                ("context", Rows::None),
                ("examples", Rows::Elements("\"examples\"")),
            ],
        };
        let [signature_name, context, examples] = parse_bounded(bytes, fields, &budget)?
            .ok_or_else(|| ApiError::InvalidArgument("the body must be a JSON object".into()))?;
        let invalid = |m: &str| ApiError::InvalidArgument(m.into());
        Ok(ExamplesBody {
            signature_name: signature_name_of(signature_name)?,
            context: match context {
                None => None,
                Some(Value::Object(context)) => Some(context),
                Some(_) => return Err(invalid("\"context\" must be an object of named features")),
            },
            examples: match examples {
                None => None,
                Some(Value::Array(examples)) => Some(examples),
                Some(_) => return Err(invalid("\"examples\" must be a list")),
            },
        })
    }

    /// Whether the signature name is a bare NaN or infinity that
    /// `quote_nonfinite_literals` quoted (this body being read as
    /// [`Literals::Quoted`]): only features take them ([`read_literals`]).
    fn bare_literals_outside_features(&self) -> bool {
        self.signature_name
            .as_ref()
            .is_some_and(|name| Literals::Quoted.holds_bare(&Value::String(name.clone())))
    }
}

/// The float of a bare NaN or infinity in a [`Literals::Quoted`] body; `None` for any
/// other value.
fn bare_float(value: &Value, literals: Literals) -> Option<f64> {
    if !literals.holds_bare(value) {
        return None;
    }
    let text = value.as_str()?;
    ["-Infinity", "Infinity", "NaN"]
        .into_iter()
        .find(|word| text.ends_with(word))
        .and_then(crate::json_tensor::nonfinite_name)
}

/// One JSON feature value as a tf.Example feature, as TF Serving reads it
/// (`AddValueToFeature` in its `json_tensor.cc`): integers and booleans (1 and 0) are
/// an int64 list, other numbers (bare NaN and ±Infinity too) a float list, strings
/// (or `{"b64": ...}`) a bytes list; a list is the feature's values and must not mix
/// numbers and strings.
fn feature_from_json(
    name: &str,
    value: &Value,
    literals: Literals,
) -> Result<FeatureValues, ApiError> {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let bad = || {
        ApiError::InvalidArgument(format!(
            "feature {name:?} must be a number, a boolean, a string, {{\"b64\": ...}} \
             or a list of one of those"
        ))
    };
    // A bare literal is a number, never text (`Literals`' invariant).
    let bytes_of = |v: &Value| -> Option<Vec<u8>> {
        match v {
            Value::String(_) if literals.holds_bare(v) => None,
            Value::String(s) => Some(s.as_bytes().to_vec()),
            Value::Object(o) if o.len() == 1 => {
                use base64::Engine;
                let text = o.get("b64")?.as_str()?;
                base64::engine::general_purpose::STANDARD.decode(text).ok()
            }
            _ => None,
        }
    };
    let int_of = |v: &Value| match v {
        Value::Bool(b) => Some(i64::from(*b)),
        other => other.as_i64(),
    };
    if let Some(ints) = items.iter().map(|v| int_of(v)).collect::<Option<Vec<_>>>() {
        if !ints.is_empty() {
            return Ok(FeatureValues::Ints(ints));
        }
    }
    let float_of = |v: &Value| v.as_f64().or_else(|| bare_float(v, literals));
    if items.iter().all(|v| float_of(v).is_some()) && !items.is_empty() {
        return Ok(FeatureValues::Floats(
            items
                .iter()
                .map(|v| {
                    let x = float_of(v).ok_or_else(bad)?;
                    // A tf.Example float_list holds FP32: a value past its range
                    // would become an infinity (TF Serving refuses it too).
                    crate::tensor::f32_of(x).ok_or_else(|| {
                        ApiError::InvalidArgument(format!(
                            "feature {name:?}: {x:e} is out of range for a float (FP32)"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        ));
    }
    items
        .iter()
        .map(|v| bytes_of(v).ok_or_else(bad))
        .collect::<Result<_, _>>()
        .map(FeatureValues::Bytes)
}

/// The examples of a `:classify` / `:regress` body, each with the context's features;
/// as in TF Serving (and the gRPC adapter), where a feature is both in the context
/// and in an example, the example's value is the one used.
fn decode_examples(body: &ExamplesBody, literals: Literals) -> Result<Vec<Example>, ApiError> {
    let examples = body
        .examples
        .as_ref()
        .ok_or_else(|| ApiError::InvalidArgument("missing \"examples\"".into()))?;
    if examples.is_empty() {
        return Err(ApiError::InvalidArgument("\"examples\" is empty".into()));
    }
    let mut context = Example::new();
    for (name, value) in body.context.iter().flatten() {
        context.insert(name.clone(), feature_from_json(name, value, literals)?);
    }
    examples
        .iter()
        .enumerate()
        .map(|(i, example)| {
            let Value::Object(features) = example else {
                return Err(ApiError::InvalidArgument(format!(
                    "example {i} must be an object of named features"
                )));
            };
            let mut out = context.clone();
            for (name, value) in features {
                out.insert(name.clone(), feature_from_json(name, value, literals)?);
            }
            Ok(out)
        })
        .collect()
}

/// `:classify` → `{"results": [[[label, score], ...], ...]}`, `:regress` →
/// `{"results": [value, ...]}`, as TF Serving answers them (`results`, its
/// `kClassifyRegressResponseKey`; its REST guide says `result`, which it never wrote).
async fn examples_verb(
    state: &AppState,
    model: &str,
    version: VersionRequest,
    verb: &str,
    bytes: &[u8],
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, HttpError> {
    // The examples are the rows; their features are not the model's tensors, so
    // only rows are bounded while the body is read.
    let bounds = RequestBounds {
        max_values: None,
        ..request_bounds(state, model, Some(&version))
    };
    let (request, examples) = read_literals(
        bytes,
        |bytes| ExamplesBody::parse(bytes, &bounds),
        ExamplesBody::bare_literals_outside_features,
    )
    // TF Serving reads a classify or regress body whole before it looks the model
    // up (FillClassificationRequestFromJson, then Classify): a bad body is a 400
    // whatever the model.
    .and_then(|(request, literals)| {
        let examples = decode_examples(&request, literals)?;
        Ok((request, examples))
    })?;
    let examples = ExamplesRequest {
        model: model.to_string(),
        version,
        examples,
        protocol: Protocol::TfServingRest,
        client_timeout: None,
        // `crate::api::classify` checks it against the model's signatures.
        signature_name: request.signature_name.unwrap_or_default(),
        // `x-request-id` is the id the prediction log keeps the request under.
        headers,
        given_id: None,
    };
    let (result, cache, request_id) = if verb == "classify" {
        let response = classify::classify(state, examples).await?;
        let rows: Vec<Value> = response
            .classes
            .into_iter()
            .map(|classes| {
                classes
                    .into_iter()
                    .map(|(label, score)| json!([label, f32_json(score)]))
                    .collect()
            })
            .collect();
        (Value::Array(rows), response.cache, response.request_id)
    } else {
        let response = classify::regress(state, examples).await?;
        let values: Vec<Value> = response.values.iter().map(|&v| f32_json(v)).collect();
        (Value::Array(values), response.cache, response.request_id)
    };
    Ok(super::with_request_id_header(
        super::with_cache_header(Json(json!({ "results": result })).into_response(), cache),
        request_id.as_ref(),
    ))
}

/// The OpenAPI description of the TF Serving paths (`doc.rs`).
pub(super) mod doc;

#[cfg(test)]
mod tests;
