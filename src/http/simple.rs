//! The simple JSON prediction API of the services ferroserve replaces:
//!
//! * `POST /predict {"model_id": "iris_lr", "features": [5.1, 3.5, 1.4, 0.2]}`; features
//!   may also be a list of rows, an object of named features, or a list of those, and
//!   `"version"` a number or a label;
//! * `GET /predict/iris_lr?sepal_length=5.1&sepal_width=3.5&…` (named features);
//! * `POST /predict/iris_lr` and `POST /predict/iris_lr/infer` (the deploy answer's
//!   `service_url`, called directly): the same body, the model from the path;
//! * any of the POSTs form-encoded (`application/x-www-form-urlencoded`), see
//!   [`decode_form`].
//!
//! * a text model (fastText): `{"model_id": "intent", "text": "…"}` or
//!   `{"model_id": "intent", "texts": ["…", "…"]}` in place of `features`;
//!
//! * an image model (`[preprocess] image`): `multipart/form-data` with `model_id`
//!   (unless in the path), optional `version`, and one or more file parts (each an
//!   image; one file answers single values, several answer lists);
//!
//! * a model with `[postprocess] labels`: `"top_k": k` (JSON, or a multipart text
//!   field) sets how many named classes `top_classes` holds (default: the config's
//!   `top_k`, else every class); refused for a model without labels;
//!
//! Answer: `{"model_id", "version", "prediction", "probabilities"?, "classes"?,
//! "top_classes"?, "latency", "timestamp", "time"}`, where `top_classes` is, for a
//! model with labels, the k best classes of the score output as `{"label", "score"}`,
//! best first; one row in gives single values out, a list of rows
//! gives lists. `timestamp` is epoch seconds (a number, as the old services sent it),
//! `time` the same instant as RFC 3339 text; `classes` have the type of the labels.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use super::openapi::ErrorBody;
use super::{body, parse_json, AppState, HttpError};
use crate::api::simple::{simple_predict, Rows, SimpleRequest, SimpleResponse};
use crate::api::ApiError;
use crate::json_tensor::NestedJson;
use crate::manager::VersionRequest;
use crate::model_config::FeatureValue;
use crate::tensor::DataType;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/predict", post(predict_post))
        .route(
            "/predict/{model_id}",
            get(predict_get).post(predict_model_post),
        )
        .route("/predict/{model_id}/infer", post(predict_model_post))
}

fn invalid(msg: impl Into<String>) -> HttpError {
    HttpError(ApiError::InvalidArgument(msg.into()))
}

fn feature(v: &Value) -> Result<FeatureValue, HttpError> {
    match v {
        Value::Number(n) => match n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)) {
            Some(i) => Ok(FeatureValue::integer(i)),
            None => n
                .as_f64()
                .map(FeatureValue::Number)
                .ok_or_else(|| invalid(format!("feature value {n} is not a number"))),
        },
        Value::String(s) => Ok(FeatureValue::Text(s.clone())),
        Value::Bool(b) => Ok(FeatureValue::Number(f64::from(u8::from(*b)))),
        // A missing value: taken only by an input the model imputes.
        Value::Null => Ok(FeatureValue::Missing),
        other => Err(invalid(format!(
            "a feature value must be a number, a string or null, not {other}"
        ))),
    }
}

fn named_row(
    o: &serde_json::Map<String, Value>,
) -> Result<BTreeMap<String, FeatureValue>, HttpError> {
    o.iter()
        .map(|(k, v)| Ok((k.clone(), feature(v)?)))
        .collect()
}

/// Reads `features` into rows; the flag says whether one row was given bare.
fn parse_features(features: &Value) -> Result<(Rows, bool), HttpError> {
    let shape_error = || {
        invalid(
            "features must be a list of values, a list of rows, an object of named features, \
             or a list of such objects",
        )
    };
    match features {
        Value::Object(o) => Ok((Rows::Named(vec![named_row(o)?]), true)),
        Value::Array(items) => match items.first() {
            None => Err(invalid("features is empty")),
            Some(Value::Array(_)) => {
                let rows = items
                    .iter()
                    .map(|r| match r {
                        Value::Array(values) => values.iter().map(feature).collect(),
                        _ => Err(shape_error()),
                    })
                    .collect::<Result<_, _>>()?;
                Ok((Rows::Positional(rows), false))
            }
            Some(Value::Object(_)) => {
                let rows = items
                    .iter()
                    .map(|r| match r {
                        Value::Object(o) => named_row(o),
                        _ => Err(shape_error()),
                    })
                    .collect::<Result<_, _>>()?;
                Ok((Rows::Named(rows), false))
            }
            Some(_) => {
                let row = items.iter().map(feature).collect::<Result<_, _>>()?;
                Ok((Rows::Positional(vec![row]), true))
            }
        },
        _ => Err(shape_error()),
    }
}

fn parse_version(v: Option<&Value>) -> Result<VersionRequest, HttpError> {
    match v {
        None | Some(Value::Null) => Ok(VersionRequest::Latest),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|v| *v > 0)
            .map(VersionRequest::Specific)
            .ok_or_else(|| invalid(format!("version {n} is not a positive integer"))),
        Some(Value::String(s)) => Ok(version_from_text(s)),
        Some(other) => Err(invalid(format!(
            "version must be a number or a label, not {other}"
        ))),
    }
}

/// `"3"` is version 3; any other text is a label.
fn version_from_text(s: &str) -> VersionRequest {
    match crate::repository::parse_version(s) {
        Some(v) => VersionRequest::Specific(v),
        None => VersionRequest::Label(s.to_string()),
    }
}

/// A decoded simple-API body or query string; the model may come from the path instead.
struct SimpleBody {
    model: Option<String>,
    version: VersionRequest,
    rows: Rows,
    /// One row was given bare, so single values are answered.
    single: bool,
    /// A fastText model's `k` and `threshold` (JSON bodies only).
    options: crate::backends::PredictOptions,
    /// Named classes per row, for a model with `[postprocess] labels` (JSON and
    /// multipart bodies).
    top_k: Option<usize>,
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            starts_with_ignoring_case(v.trim_start(), "application/x-www-form-urlencoded")
        })
}

/// Whether `text` starts with `prefix`, ASCII case ignored (media types), without
/// copying it.
fn starts_with_ignoring_case(text: &str, prefix: &str) -> bool {
    text.as_bytes()
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// A form or query value: a finite number when it reads as one, else text.
fn text_value(v: &str) -> FeatureValue {
    if let Ok(i) = v.trim().parse::<i128>() {
        return FeatureValue::integer(i);
    }
    match v.trim().parse::<f64>() {
        Ok(n) if n.is_finite() => FeatureValue::Number(n),
        _ => FeatureValue::Text(v.to_string()),
    }
}

/// A JSON value whose objects, at every depth, give each key once:
/// `{"model_id": "a", "model_id": "b"}` or `"features": {"a": 1, "a": 2}` is refused,
/// where a map would keep the last (and a proxy in front may have judged the
/// first), as form and multipart bodies refuse a field given twice.
struct UniqueKeys(Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UniqueKeys, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<UniqueKeys, A::Error> {
                let mut map = serde_json::Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    let UniqueKeys(value) = access.next_value()?;
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!(
                            "field {key:?} is given twice"
                        )));
                    }
                    map.insert(key, value);
                }
                Ok(UniqueKeys(Value::Object(map)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<UniqueKeys, A::Error> {
                let mut items = Vec::with_capacity(access.size_hint().unwrap_or(0).min(4096));
                while let Some(UniqueKeys(item)) = access.next_element()? {
                    items.push(item);
                }
                Ok(UniqueKeys(Value::Array(items)))
            }
            fn visit_bool<E>(self, b: bool) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::from(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::from(n)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::from(n)))
            }
            fn visit_str<E>(self, s: &str) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::String(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::String(s)))
            }
            fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::Null))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// `"texts": ["…", …]` for a text model (fastText): one row per text, answered
/// with lists, as the old fastText service's list of sentences.
fn parse_texts(texts: &Value) -> Result<(Rows, bool), HttpError> {
    let Value::Array(texts) = texts else {
        return Err(invalid("texts must be a list of strings"));
    };
    if texts.is_empty() {
        return Err(invalid("texts is empty"));
    }
    let rows = texts
        .iter()
        .enumerate()
        .map(|(i, t)| match t {
            Value::String(s) => Ok(vec![FeatureValue::Text(s.clone())]),
            _ => Err(invalid(format!("texts[{i}] is not a string"))),
        })
        .collect::<Result<_, _>>()?;
    Ok((Rows::Positional(rows), false))
}

/// The JSON body: `{"model_id"?, "features", "version"?}`, or `"text": "…"` /
/// `"texts": [...]` in place of `features` for a text model.
fn decode_json(bytes: &[u8]) -> Result<SimpleBody, HttpError> {
    let UniqueKeys(request) = parse_json(bytes)?;
    let Value::Object(request) = request else {
        return Err(invalid("the body must be a JSON object"));
    };
    if let Some(unknown) = request.keys().find(|k| {
        !matches!(
            k.as_str(),
            "model_id" | "features" | "version" | "text" | "texts" | "k" | "threshold" | "top_k"
        )
    }) {
        return Err(invalid(format!(
            "unknown field {unknown:?}; expected model_id, features (or text, texts), version, k, threshold and top_k"
        )));
    }
    let model = match request.get("model_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err(invalid("model_id must be a non-empty string")),
    };
    let given = ["features", "text", "texts"]
        .into_iter()
        .filter(|k| request.contains_key(*k))
        .count();
    if given > 1 {
        return Err(invalid("give one of features, text and texts"));
    }
    let (rows, single) = if let Some(text) = request.get("text") {
        let Value::String(text) = text else {
            return Err(invalid("text must be a string"));
        };
        let row = vec![FeatureValue::Text(text.clone())];
        (Rows::Positional(vec![row]), true)
    } else if let Some(texts) = request.get("texts") {
        parse_texts(texts)?
    } else {
        let features = request
            .get("features")
            .ok_or_else(|| invalid("features (or text, texts) is required"))?;
        parse_features(features)?
    };
    let version = parse_version(request.get("version"))?;
    let options = super::predict_options(request.get("k"), request.get("threshold"))?;
    let top_k = match request.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => Some(top_k_value(v.as_u64(), &v.to_string())?),
    };
    Ok(SimpleBody {
        model,
        version,
        rows,
        single,
        options,
        top_k,
    })
}

/// A form-encoded body (`requests.post(url, data={...})`) or a query string:
///
/// * `model_id`, `version`: as in the JSON body;
/// * `features` (or `features[]`) repeated, or once with a plain value: one row of
///   values in the model's feature order (`features=5.1&features=3.5&…`, what
///   `data={"features": [5.1, 3.5, …]}` sends);
/// * `features` once with JSON text (`features=[5.1, 3.5, …]`, `features={"age": 41}`,
///   a list of rows or of objects): read as the JSON body's `features`;
/// * any other field: a named feature (`sepal_length=5.1&…`).
///
/// Values that read as finite numbers are numbers, others text. `features` and named
/// fields do not mix.
fn decode_form(bytes: &[u8]) -> Result<SimpleBody, HttpError> {
    let mut model = None;
    let mut version = VersionRequest::Latest;
    let mut features: Vec<String> = Vec::new();
    let mut named = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(bytes) {
        match &*key {
            "model_id" => {
                if model.replace(value.into_owned()).is_some() {
                    return Err(invalid("model_id is given twice"));
                }
            }
            "version" => version = version_from_text(&value),
            "features" | "features[]" => features.push(value.into_owned()),
            _ => {
                if named.insert(key.to_string(), text_value(&value)).is_some() {
                    return Err(invalid(format!("feature {key:?} is given twice")));
                }
            }
        }
    }
    if model.as_deref() == Some("") {
        return Err(invalid("model_id must not be empty"));
    }
    let (rows, single) = match (features.as_slice(), named.is_empty()) {
        ([], true) => {
            return Err(invalid(
                "no features given: send features=… (repeated, one per value) or one field per named feature",
            ))
        }
        ([], false) => (Rows::Named(vec![named]), true),
        (_, false) => {
            return Err(invalid(format!(
                "give the features either as `features` or as named fields, not both (named: {:?})",
                named.keys().collect::<Vec<_>>()
            )))
        }
        ([one], true) if one.trim_start().starts_with(['[', '{']) => {
            let value: Value = serde_json::from_str(one).map_err(|e| {
                invalid(format!("the features field is not valid JSON: {e}"))
            })?;
            parse_features(&value)?
        }
        (values, true) => (
            Rows::Positional(vec![values.iter().map(|v| text_value(v)).collect()]),
            true,
        ),
    };
    Ok(SimpleBody {
        model,
        version,
        rows,
        single,
        options: Default::default(),
        top_k: None,
    })
}

async fn decode_body(
    state: &AppState,
    headers: &HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<SimpleBody, HttpError> {
    let bytes = body(bytes, state.settings.max_request_bytes)?;
    match body_kind(headers, &bytes) {
        BodyKind::Form => decode_form(&bytes),
        BodyKind::Multipart(content_type) => decode_multipart(content_type, bytes).await,
        BodyKind::Json => decode_json(&bytes),
    }
}

/// How a `/predict` body is read.
enum BodyKind<'a> {
    Form,
    /// With its `Content-Type` (the boundary).
    Multipart(&'a str),
    Json,
}

/// How a `/predict` body with these headers is read: the one rule of
/// [`decode_body`] and [`model_of_body`].
fn body_kind<'a>(headers: &'a HeaderMap, bytes: &[u8]) -> BodyKind<'a> {
    // `curl -d '{"model_id": …}'` labels its JSON a form: a "form" that begins as a
    // JSON object or list does (no form field is named `{…`), so it is read as JSON.
    let looks_like_json = || {
        bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| matches!(b, b'{' | b'['))
    };
    if is_form(headers) && !looks_like_json() {
        BodyKind::Form
    } else if let Some(content_type) = multipart_type(headers) {
        BodyKind::Multipart(content_type)
    } else {
        BodyKind::Json
    }
}

/// The `model_id` a `POST /predict` body names, read as [`decode_body`] reads it
/// (form, multipart or JSON, by the same rule), or `None` when it names none or
/// cannot be read: the forwarding layer's lookup (`crate::workers::forward`), so
/// that a body the simple API answers for a model reaches that model's worker.
pub(crate) async fn model_of_body(headers: &HeaderMap, bytes: &Bytes) -> Option<String> {
    let model = match body_kind(headers, bytes) {
        BodyKind::Form => form_urlencoded::parse(bytes)
            .find(|(k, _)| k == "model_id")
            .map(|(_, v)| v.into_owned()),
        BodyKind::Multipart(content_type) => multipart_model(content_type, bytes.clone()).await,
        BodyKind::Json => {
            #[derive(serde::Deserialize)]
            struct Named {
                model_id: Option<String>,
            }
            serde_json::from_slice::<Named>(bytes).ok()?.model_id
        }
    };
    model.filter(|m| !m.is_empty())
}

/// The `model_id` text field of a multipart body, as [`decode_multipart`] reads it.
async fn multipart_model(content_type: &str, bytes: Bytes) -> Option<String> {
    use axum::extract::FromRequest;
    let request = axum::http::Request::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(bytes))
        .ok()?;
    let mut multipart = axum::extract::Multipart::from_request(request, &())
        .await
        .ok()?;
    while let Some(field) = multipart.next_field().await.ok()? {
        if field.name() == Some("model_id") && field.file_name().is_none() {
            let data = field.bytes().await.ok()?;
            return text_field("model_id", &data).ok();
        }
    }
    None
}

fn multipart_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| starts_with_ignoring_case(v.trim_start(), "multipart/form-data"))
}

/// A multipart body for an image model: `model_id`, `version` (text fields) and
/// file parts, each one row. The body is already whole and bounded by
/// `max_request_bytes`.
async fn decode_multipart(content_type: &str, bytes: Bytes) -> Result<SimpleBody, HttpError> {
    use axum::extract::FromRequest;
    let request = axum::http::Request::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(bytes))
        .map_err(|e| invalid(format!("malformed multipart body: {e}")))?;
    let mut multipart = axum::extract::Multipart::from_request(request, &())
        .await
        .map_err(|e| invalid(format!("malformed multipart body: {e}")))?;
    let (mut model, mut version, mut files) = (None, VersionRequest::Latest, Vec::new());
    let mut top_k = None;
    let mut seen: Vec<String> = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| invalid(format!("malformed multipart body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let is_file = field.file_name().is_some();
        let data = field
            .bytes()
            .await
            .map_err(|e| invalid(format!("malformed multipart body: {e}")))?;
        // A field given twice is refused (the last one answered), empty or not;
        // file parts are the images, any number of them.
        if !is_file {
            if seen.contains(&name) {
                return Err(invalid(format!("field {name:?} is given twice")));
            }
            seen.push(name.clone());
        }
        match (name.as_str(), is_file) {
            (_, true) => files.push(data.to_vec()),
            ("model_id", false) => model = Some(text_field(&name, &data)?),
            ("version", false) => version = version_from_text(&text_field(&name, &data)?),
            ("top_k", false) => {
                let text = text_field(&name, &data)?;
                top_k = Some(top_k_value(text.parse().ok(), &format!("{text:?}"))?);
            }
            (other, false) => {
                return Err(invalid(format!(
                "unknown multipart field {other:?}: send model_id, version, top_k and image files"
            )))
            }
        }
    }
    if files.is_empty() {
        return Err(invalid(
            "a multipart request needs at least one file part (an image)",
        ));
    }
    Ok(SimpleBody {
        model,
        version,
        single: files.len() == 1,
        rows: Rows::Files(files),
        options: Default::default(),
        top_k,
    })
}

/// A request's `top_k`: a whole number, 1 or more.
fn top_k_value(value: Option<u64>, given: &str) -> Result<usize, HttpError> {
    value
        .filter(|&k| k >= 1)
        .and_then(|k| usize::try_from(k).ok())
        .ok_or_else(|| {
            invalid(format!(
                "top_k must be a whole number, 1 or more, not {given}"
            ))
        })
}

fn text_field(name: &str, data: &[u8]) -> Result<String, HttpError> {
    String::from_utf8(data.to_vec())
        .map(|s| s.trim().to_string())
        .map_err(|_| invalid(format!("multipart field {name:?} is not UTF-8 text")))
}

/// The model named by the path, unless the body names another.
fn model_from_path(path_model: String, body_model: Option<String>) -> Result<String, HttpError> {
    match body_model {
        Some(m) if m != path_model => Err(invalid(format!(
            "model_id {m:?} in the body does not match model {path_model:?} in the path"
        ))),
        _ => Ok(path_model),
    }
}

async fn answer(
    state: &AppState,
    model: String,
    body: SimpleBody,
) -> Result<axum::response::Response, HttpError> {
    let response = simple_predict(
        state,
        SimpleRequest {
            model,
            version: body.version,
            rows: body.rows,
            options: body.options,
            top_k: body.top_k,
        },
    )
    .await?;
    Ok(super::with_cache_header(
        Json(encode(&response, body.single)).into_response(),
        response.cache,
    ))
}

/// `POST /predict`: JSON or form-encoded, `model_id` required.
#[utoipa::path(post, path = "/predict", tag = "simple", operation_id = "simple_predict",
    request_body(content(
        (SimpleRequestDoc = "application/json", example = json!({"model_id": "iris_lr", "features": [5.1, 3.5, 1.4, 0.2]})),
        (Object = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The prediction: single values for one bare row, lists for a list of rows", body = SimpleResponseDoc),
        (status = 400, description = "Malformed body, missing model_id, or features that do not fit the model", body = ErrorBody),
        (status = 404, description = "No such model or version, or it is not loaded", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 429, description = "The model's queue is full", body = ErrorBody),
        (status = 503, description = "The model is not available now", body = ErrorBody),
        (status = 504, description = "The prediction took longer than the deadline", body = ErrorBody),
    ))]
pub(super) async fn predict_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, HttpError> {
    let mut body = decode_body(&state, &headers, bytes).await?;
    let model = body
        .model
        .take()
        .ok_or_else(|| invalid("model_id (a string) is required"))?;
    answer(&state, model, body).await
}

/// `POST /predict/{model_id}` and `POST /predict/{model_id}/infer`: the deploy answer's
/// `service_url` called directly, with the simple API's body; `model_id` may be left
/// out of the body.
#[utoipa::path(post, path = "/predict/{model_id}", tag = "simple", operation_id = "simple_predict_model",
    params(("model_id" = String, Path, description = "The model's name", example = "iris_lr")),
    request_body(content(
        (SimpleRequestDoc = "application/json", example = json!({"model_id": "iris_lr", "features": [5.1, 3.5, 1.4, 0.2]})),
        (Object = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The prediction: single values for one bare row, lists for a list of rows", body = SimpleResponseDoc),
        (status = 400, description = "Malformed body, missing model_id, or features that do not fit the model", body = ErrorBody),
        (status = 404, description = "No such model or version, or it is not loaded", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 429, description = "The model's queue is full", body = ErrorBody),
        (status = 503, description = "The model is not available now", body = ErrorBody),
        (status = 504, description = "The prediction took longer than the deadline", body = ErrorBody),
    ))]
pub(super) async fn predict_model_post(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, HttpError> {
    let mut body = decode_body(&state, &headers, bytes).await?;
    let model = model_from_path(model, body.model.take())?;
    answer(&state, model, body).await
}

/// `GET /predict/{model_id}?name=value&…`: the query string read as a form body;
/// `version` may name a version or a label.
#[utoipa::path(get, path = "/predict/{model_id}", tag = "simple", operation_id = "simple_predict_query",
    params(
        ("model_id" = String, Path, description = "The model's name", example = "iris_lr"),
        ("version" = Option<String>, Query, description = "A version number or label (default: the latest)"),
        ("features" = Option<std::collections::HashMap<String, String>>, Query, style = Form, explode, description = "The named features, one query parameter each (`sepal_length=5.1&...`)"),
    ),
    responses(
        (status = 200, description = "The prediction: single values for one bare row, lists for a list of rows", body = SimpleResponseDoc),
        (status = 400, description = "Malformed body, missing model_id, or features that do not fit the model", body = ErrorBody),
        (status = 404, description = "No such model or version, or it is not loaded", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 429, description = "The model's queue is full", body = ErrorBody),
        (status = 503, description = "The model is not available now", body = ErrorBody),
        (status = 504, description = "The prediction took longer than the deadline", body = ErrorBody),
    ))]
async fn predict_get(
    State(state): State<AppState>,
    Path(model): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<axum::response::Response, HttpError> {
    let mut body = decode_form(query.unwrap_or_default().as_bytes())?;
    let model = model_from_path(model, body.model.take())?;
    answer(&state, model, body).await
}

/// The simple API's answer, written straight from the output tensors (no `Value`
/// tree for the predictions and probabilities, which may hold many rows).
#[derive(serde::Serialize)]
struct SimpleAnswer<'a> {
    model_id: &'a str,
    version: u64,
    prediction: NestedJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<NestedJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    classes: Option<Vec<Value>>,
    /// A model with `[postprocess] labels`: the top-k classes, best first, as
    /// `{"label", "score"}` (a list of them per row for a list of rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    top_classes: Option<Value>,
    latency: f64,
    timestamp: f64,
    time: String,
}

fn encode(r: &SimpleResponse, single: bool) -> SimpleAnswer<'_> {
    let pick = |t| {
        if single {
            NestedJson::row(t, 0)
        } else {
            NestedJson::whole(t)
        }
    };
    let now = SystemTime::now();
    let probabilities = r.probabilities.as_ref().map(pick);
    let classes = match (&r.probabilities, r.handle.class_labels()) {
        (Some(_), Some(labels)) => {
            let dtype = r.prediction.dtype();
            Some(labels.iter().map(|l| class_label(l, dtype)).collect())
        }
        _ => None,
    };
    let top_classes = r.top_classes.as_ref().map(|rows| {
        let row_json = |row: &Vec<(String, f64)>| {
            Value::Array(
                row.iter()
                    .map(|(label, score)| {
                        serde_json::json!({"label": label, "score": crate::json_tensor::float_json(*score)})
                    })
                    .collect(),
            )
        };
        match (single, rows.first()) {
            (true, Some(row)) => row_json(row),
            _ => Value::Array(rows.iter().map(row_json).collect()),
        }
    });
    SimpleAnswer {
        model_id: &r.handle.model,
        version: r.handle.version,
        prediction: pick(&r.prediction),
        probabilities,
        classes,
        top_classes,
        latency: r.latency.as_secs_f64(),
        timestamp: epoch_seconds(now),
        time: utc_timestamp(now),
    }
}

/// A class label with the type of the model's labels, as the prediction has it: an
/// integer-labelled classifier gives integer `classes`, a float-labelled one numbers,
/// any other text.
fn class_label(label: &str, prediction_dtype: DataType) -> Value {
    let number = match prediction_dtype {
        DataType::I8 | DataType::I16 | DataType::I32 | DataType::I64 => {
            label.parse::<i64>().ok().map(Value::from)
        }
        DataType::U8 | DataType::U16 | DataType::U32 | DataType::U64 => {
            label.parse::<u64>().ok().map(Value::from)
        }
        DataType::F16 | DataType::F32 | DataType::F64 => label
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        DataType::Bool | DataType::Bytes => None,
    };
    number.unwrap_or_else(|| Value::String(label.to_string()))
}

/// Seconds since the Unix epoch with milliseconds, e.g. `1634567890.123`: the old
/// services' `timestamp`, which their clients do arithmetic on.
pub fn epoch_seconds(t: SystemTime) -> f64 {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    d.as_millis() as f64 / 1000.0
}

/// RFC 3339 UTC time with milliseconds, e.g. `2024-05-01T12:00:00.123Z`.
pub fn utc_timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The description's types for the bodies decoded by hand and the answer written
/// straight from tensors; never built.
#[allow(dead_code)]
mod schema {
    use serde_json::Value;
    use utoipa::ToSchema;

    /// Give `features` (one row: a list or an object of named features; or a list
    /// of rows), or `text` / `texts` for a text model.
    #[derive(ToSchema)]
    #[schema(as = SimpleRequest)]
    pub struct SimpleRequestDoc {
        /// The model's name (may come from the path instead).
        #[schema(required = false)]
        model_id: String,
        /// A version number or label (default: the latest).
        #[schema(required = false)]
        version: Value,
        #[schema(required = false)]
        features: Value,
        #[schema(required = false)]
        text: String,
        #[schema(required = false)]
        texts: Vec<String>,
        /// A text model's number of labels (-1 for all).
        #[schema(required = false)]
        k: i64,
        /// A text model's lowest score.
        #[schema(required = false)]
        threshold: f64,
        /// For a model with `[postprocess] labels`: how many of the best classes
        /// `top_classes` holds (default: the config's `top_k`, else every class).
        #[schema(required = false, minimum = 1)]
        top_k: u64,
    }

    #[derive(ToSchema)]
    #[schema(as = SimpleResponse)]
    pub struct SimpleResponseDoc {
        model_id: String,
        version: u64,
        prediction: Value,
        #[schema(required = false)]
        probabilities: Value,
        /// The classes, with the labels' type.
        #[schema(required = false)]
        classes: Vec<Value>,
        /// For a model with `[postprocess] labels`: the best classes, best first,
        /// each `{"label", "score"}` (a list of them per row for a list of rows).
        #[schema(required = false)]
        top_classes: Vec<Value>,
        /// Milliseconds.
        latency: f64,
        /// Seconds since the epoch.
        timestamp: f64,
        /// The same instant as RFC 3339 text.
        time: String,
    }
}
use schema::{SimpleRequestDoc, SimpleResponseDoc};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    /// The forwarding layer finds a deployed model in a `/predict` body as the simple
    /// API reads it: a JSON body labelled a form (what `curl -d '{…}'` sends) is
    /// JSON, and an image model's multipart body names it in a text field.
    #[tokio::test]
    async fn models_named_by_bodies() {
        let headers = |content_type: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(c) = content_type {
                h.insert(header::CONTENT_TYPE, c.parse().unwrap());
            }
            h
        };
        let json = Bytes::from_static(br#"{"model_id": "iris", "features": [1, 2]}"#);
        for content_type in [
            Some("application/json"),
            None,
            Some("application/x-www-form-urlencoded"),
            Some("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
        ] {
            assert_eq!(
                model_of_body(&headers(content_type), &json)
                    .await
                    .as_deref(),
                Some("iris"),
                "{content_type:?}"
            );
        }
        let form = Bytes::from_static(b"model_id=iris&x=1");
        let form_type = headers(Some("application/x-www-form-urlencoded"));
        assert_eq!(
            model_of_body(&form_type, &form).await.as_deref(),
            Some("iris")
        );
        let multipart = Bytes::from_static(
            b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n\
              png\r\n--b\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\n\
              digits \r\n--b--\r\n",
        );
        let multipart_type = headers(Some("multipart/form-data; boundary=b"));
        assert_eq!(
            model_of_body(&multipart_type, &multipart).await.as_deref(),
            Some("digits")
        );
        for (content_type, body) in [
            (None, &b"{}"[..]),
            (None, b"not json"),
            (Some("application/x-www-form-urlencoded"), b"model_id="),
            (Some("multipart/form-data; boundary=b"), b"--b--\r\n"),
        ] {
            let body = Bytes::copy_from_slice(body);
            assert_eq!(model_of_body(&headers(content_type), &body).await, None);
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
        assert_eq!(utc_timestamp(t), "2024-05-01T12:00:00.123Z");
        assert_eq!(
            utc_timestamp(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn epoch_seconds_keep_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_634_567_890_123);
        assert_eq!(epoch_seconds(t), 1_634_567_890.123);
    }

    #[test]
    fn class_labels_keep_their_type() {
        assert_eq!(class_label("2", DataType::I64), json!(2));
        assert_eq!(class_label("-1", DataType::I32), json!(-1));
        assert_eq!(class_label("1.5", DataType::F64), json!(1.5));
        assert_eq!(class_label("2", DataType::Bytes), json!("2"));
        assert_eq!(class_label("setosa", DataType::I64), json!("setosa"));
    }

    #[test]
    fn features_in_every_form() {
        let (rows, single) = parse_features(&json!([1, 2.5, "x"])).unwrap();
        assert!(single);
        assert!(matches!(rows, Rows::Positional(r) if r.len() == 1 && r[0].len() == 3));
        let (rows, single) = parse_features(&json!([[1, 2], [3, 4]])).unwrap();
        assert!(!single);
        assert!(matches!(rows, Rows::Positional(r) if r.len() == 2));
        let (rows, _) = parse_features(&json!({"a": 1})).unwrap();
        assert!(matches!(rows, Rows::Named(r) if r[0]["a"] == FeatureValue::Number(1.0)));
        for bad in [
            json!([]),
            json!(3),
            json!([[1], 2]),
            json!([{"a": 1}, 2]),
            json!([true, [1]]),
        ] {
            assert!(parse_features(&bad).is_err(), "{bad}");
        }
        // null is a missing value: read here, taken or refused by the model's input.
        let (rows, _) = parse_features(&json!([1, null])).unwrap();
        assert!(matches!(rows, Rows::Positional(r) if r[0][1] == FeatureValue::Missing));
        assert_eq!(
            parse_version(Some(&json!("stable"))).unwrap(),
            VersionRequest::Label("stable".into())
        );
        assert_eq!(
            parse_version(Some(&json!("2"))).unwrap(),
            VersionRequest::Specific(2)
        );
        assert!(parse_version(Some(&json!(0))).is_err());
    }
}
