//! The OpenAPI description of the TF Serving paths. One catch-all route parses them
//! (see `tfs`'s module comment), so each path the parser accepts is described here by
//! an item of its own; these functions are never called. `http::openapi` adds the
//! `/versions/{version}` and `/labels/{label}` forms of each.
#![allow(dead_code)]

use serde_json::Value;
use utoipa::ToSchema;

use super::super::openapi::ErrorBody;
use super::{ExamplesBody, PredictBody};

/// One version's state in a status answer.
#[derive(ToSchema)]
#[schema(as = TfsVersionStatus)]
pub struct VersionStatus {
    /// The version number, as text.
    version: String,
    /// START, LOADING, AVAILABLE, UNLOADING or END.
    state: String,
    status: ErrorStatus,
}

#[derive(ToSchema)]
#[schema(as = TfsErrorStatus)]
pub struct ErrorStatus {
    /// `OK`, or `UNKNOWN` when the version failed.
    error_code: String,
    error_message: String,
}

#[derive(ToSchema)]
#[schema(as = TfsModelStatus)]
pub struct ModelStatus {
    model_version_status: Vec<VersionStatus>,
}

/// `predictions` for a row-format request, `outputs` for a columnar one.
#[derive(ToSchema)]
#[schema(as = TfsPredictResponse)]
pub struct PredictResponse {
    /// One entry per instance: a value, a list, or an object of named outputs.
    predictions: Option<Vec<Value>>,
    /// The whole output tensor, or an object of named output tensors.
    outputs: Option<Value>,
}

/// `results`: per example, `[[label, score], ...]` (classify) or a number (regress).
#[derive(ToSchema)]
#[schema(as = TfsExamplesResponse)]
pub struct ExamplesResponse {
    results: Value,
}

/// A model's audit trail, newest first.
#[derive(ToSchema)]
pub struct HistoryResponse {
    model: String,
    events: Vec<Value>,
    /// Pass as `before` for the next page; null on the last page.
    next_before: Option<i64>,
}

const MODEL: &str = "The model's name";

/// Status of a model's versions.
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    tag = "tfserving",
    operation_id = "tfs_model_status",
    params(("model" = String, Path, description = MODEL, example = "iris_lr")),
    responses(
        (status = 200, description = "The versions' states", body = ModelStatus),
        (status = 400, description = "Malformed version", body = ErrorBody),
        (status = 404, description = "No such model, version or label", body = ErrorBody),
    )
)]
pub fn model_status() {}

/// A model's signature (inputs and outputs).
#[utoipa::path(
    get,
    path = "/v1/models/{model}/metadata",
    tag = "tfserving",
    operation_id = "tfs_model_metadata",
    params(("model" = String, Path, description = MODEL, example = "iris_lr")),
    responses(
        (status = 200, description = "`model_spec` and `metadata.signature_def`", body = Object),
        (status = 400, description = "Malformed version", body = ErrorBody),
        (status = 404, description = "No such model, version or label, or it is not loaded", body = ErrorBody),
    )
)]
pub fn model_metadata() {}

/// Run a prediction (TF Serving's `:predict`).
#[utoipa::path(
    post,
    path = "/v1/models/{model}:predict",
    tag = "tfserving",
    operation_id = "tfs_predict",
    params(("model" = String, Path, description = MODEL, example = "iris_lr")),
    request_body(content = PredictBody, content_type = "application/json",
        example = json!({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})),
    responses(
        (status = 200, description = "The model's outputs", body = PredictResponse),
        (status = 400, description = "Malformed body, or inputs that do not fit the model", body = ErrorBody),
        (status = 404, description = "No such model, version or label, or it is not loaded", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 429, description = "The model's queue is full", body = ErrorBody),
        (status = 503, description = "The model is not available now (loading, stopping)", body = ErrorBody),
        (status = 504, description = "The prediction took longer than the deadline", body = ErrorBody),
    )
)]
pub fn predict() {}

/// Classify tf.Example-like records (TF Serving's `:classify`).
#[utoipa::path(
    post,
    path = "/v1/models/{model}:classify",
    tag = "tfserving",
    operation_id = "tfs_classify",
    params(("model" = String, Path, description = MODEL, example = "iris_lr")),
    request_body(content = ExamplesBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Per example, the classes and scores", body = ExamplesResponse),
        (status = 400, description = "Malformed body, or examples that do not fit the model", body = ErrorBody),
        (status = 404, description = "No such model, version or label, or it is not loaded", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 429, description = "The model's queue is full", body = ErrorBody),
        (status = 503, description = "The model is not available now", body = ErrorBody),
        (status = 504, description = "The prediction took longer than the deadline", body = ErrorBody),
    )
)]
pub fn classify() {}

/// Regress tf.Example-like records (TF Serving's `:regress`).
#[utoipa::path(
    post,
    path = "/v1/models/{model}:regress",
    tag = "tfserving",
    operation_id = "tfs_regress",
    params(("model" = String, Path, description = MODEL, example = "iris_lr")),
    request_body(content = ExamplesBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Per example, the value", body = ExamplesResponse),
        (status = 400, description = "Malformed body, or examples that do not fit the model", body = ErrorBody),
        (status = 404, description = "No such model, version or label, or it is not loaded", body = ErrorBody),
        (status = 408, description = "The body stopped arriving", body = ErrorBody),
        (status = 429, description = "The model's queue is full", body = ErrorBody),
        (status = 503, description = "The model is not available now", body = ErrorBody),
        (status = 504, description = "The prediction took longer than the deadline", body = ErrorBody),
    )
)]
pub fn regress() {}

/// A model's audit trail from the metadata store (management route).
#[utoipa::path(
    get,
    path = "/v1/models/{model}/history",
    tag = "store",
    operation_id = "model_history",
    params(
        ("model" = String, Path, description = MODEL, example = "iris_lr"),
        ("limit" = Option<i64>, Query, description = "Events per page, 1 to 1000 (default 50)"),
        ("before" = Option<i64>, Query, description = "Only events older than this id (`next_before` of the previous page)"),
    ),
    responses(
        (status = 200, description = "A page of events, newest first", body = HistoryResponse),
        (status = 400, description = "A malformed or unknown query parameter", body = ErrorBody),
        (status = 404, description = "No such model, and no history under its name (a deleted model keeps its history)", body = ErrorBody),
        (status = 503, description = "The metadata store is off or does not answer", body = ErrorBody),
    )
)]
pub fn history() {}

/// The logged predictions of a model, in time order (management route).
#[utoipa::path(
    get,
    path = "/v1/models/{model}/predictions",
    tag = "store",
    operation_id = "model_predictions",
    params(
        ("model" = String, Path, description = MODEL, example = "iris_lr"),
        ("since" = Option<String>, Query, description = "From this time: milliseconds since the epoch or RFC 3339"),
        ("until" = Option<String>, Query, description = "Up to this time: milliseconds since the epoch or RFC 3339"),
        ("limit" = Option<i64>, Query, description = "At most this many, 1 to 100000 (default 1000)"),
        ("format" = Option<String>, Query, description = "`jsonl` (default) or `csv`"),
    ),
    responses(
        (status = 200, description = "One prediction per line", content(
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        (status = 400, description = "A malformed or unknown query parameter, or `since` after `until`", body = ErrorBody),
        (status = 404, description = "No such model, and nothing logged under its name", body = ErrorBody),
        (status = 503, description = "The metadata store is off or does not answer", body = ErrorBody),
    )
)]
pub fn predictions() {}
