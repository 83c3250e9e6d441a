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

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use super::openapi::ErrorBody;
use super::{AppState, HttpError};
use crate::api::predict::ClientRequestId;
use crate::api::simple::{simple_predict_with_id, SimpleRequest, SimpleResponse};
use crate::json_tensor::NestedJson;
use crate::tensor::DataType;

mod body;

pub(crate) use body::model_of_body;
use body::{decode_body, decode_form, invalid, model_from_path, SimpleBody};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/predict", post(predict_post))
        .route(
            "/predict/{model_id}",
            get(predict_get).post(predict_model_post),
        )
        .route("/predict/{model_id}/infer", post(predict_model_post))
}

/// The answer to `body` for `model`; `headers` are the request's, whose
/// `x-request-id` is the id the prediction log keeps the request under, if it is
/// logged.
async fn answer(
    state: &AppState,
    model: String,
    body: SimpleBody,
    headers: &HeaderMap,
) -> Result<axum::response::Response, HttpError> {
    let response = simple_predict_with_id(
        state,
        SimpleRequest {
            model,
            version: body.version,
            rows: body.rows,
            options: body.options,
            top_k: body.top_k,
        },
        ClientRequestId {
            given: None,
            headers: Some(headers),
        },
    )
    .await?;
    Ok(super::with_request_id_header(
        super::with_cache_header(
            Json(encode(&response, body.single)).into_response(),
            response.cache,
        ),
        response.request_id.as_ref(),
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
    // The model is named in the body: its rows are bounded by the largest limit.
    let bounds = crate::api::bounds::request_bounds_any_model(&state);
    let mut body = decode_body(&state, &headers, bytes, &bounds).await?;
    let model = body
        .model
        .take()
        .ok_or_else(|| invalid("model_id (a string) is required"))?;
    answer(&state, model, body, &headers).await
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
    let bounds = crate::api::bounds::request_bounds(&state, &model, None);
    let mut body = decode_body(&state, &headers, bytes, &bounds).await?;
    let model = model_from_path(model, body.model.take())?;
    answer(&state, model, body, &headers).await
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
    // The request itself (moved, not its headers copied), for `x-request-id`.
    request: axum::extract::Request,
) -> Result<axum::response::Response, HttpError> {
    let bounds = crate::api::bounds::request_bounds(&state, &model, None);
    let mut body = decode_form(query.unwrap_or_default().as_bytes(), &bounds)?;
    let model = model_from_path(model, body.model.take())?;
    let (parts, _) = request.into_parts();
    answer(&state, model, body, &parts.headers).await
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
}
