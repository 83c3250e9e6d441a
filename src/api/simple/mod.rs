//! The simple prediction API (`POST /predict`, `GET /predict/{model}?feature=value`),
//! as the Python services ferroserve replaces had it: features in, "prediction" (and,
//! for classifiers, "probabilities") out.
//!
//! Features are given by position (rows of values in the model's column order) or by
//! name. Names come from the model config's `feature_names`, else from the model
//! itself (`ModelTraits::feature_names`); a missing feature takes the config's
//! `feature_defaults` value, and unknown or missing features are refused by name.
//!
//! A model with one input per column (a scikit-learn `ColumnTransformer` selecting
//! columns by name, an ONNX model converted with one input per feature) and no
//! `input_name` in its config is fed column by column: each input gets the feature
//! of its name from every row, as an `[n, 1]` tensor (`[n]` for a rank-1 input) of the
//! input's kind (text stays text). Positional rows feed such a model only when a row
//! has exactly one value per input, in the model's input order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::predict::{predict_on_with_id, ClientRequestId};
use super::{ApiError, PredictRequest, Protocol, ServerState};
use crate::manager::{ServableHandle, VersionRequest};
use crate::model_config::FeatureValue;
use crate::tensor::Tensor;

mod features;

pub use features::{
    answer_outputs, feature_columns, feature_names, imputes, missing_refused, named_layout,
    nan_refused, number_from_text, row_inputs, takes_nan, top_class_per_row,
};

/// The rows of a simple request.
#[derive(Debug, Clone, PartialEq)]
pub enum Rows {
    /// Values in the model's feature order.
    Positional(Vec<Vec<FeatureValue>>),
    /// Values by feature name.
    Named(Vec<BTreeMap<String, FeatureValue>>),
    /// Files (encoded images), one per row, for a model with `[preprocess] image`:
    /// they go to its image input as BYTES `[n]` and are decoded by its pipeline.
    Files(Vec<Vec<u8>>),
}

impl Rows {
    pub(crate) fn len(&self) -> usize {
        match self {
            Rows::Positional(r) => r.len(),
            Rows::Named(r) => r.len(),
            Rows::Files(f) => f.len(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimpleRequest {
    pub model: String,
    pub version: VersionRequest,
    pub rows: Rows,
    /// Options for the backend (a fastText model's `k` and `threshold`).
    pub options: crate::backends::PredictOptions,
    /// Named classes per row in the answer, for a model with `[postprocess]
    /// labels` (overrides its `top_k`); refused for a model without labels.
    pub top_k: Option<usize>,
}

pub struct SimpleResponse {
    /// The version that answered (and its class labels, in the column order of the
    /// probabilities: `ServableHandle::class_labels`).
    pub handle: ServableHandle,
    /// One prediction per row (`[rows]` or `[rows, …]`).
    pub prediction: Tensor,
    /// Class probabilities `[rows, classes]`, for classifiers.
    pub probabilities: Option<Tensor>,
    /// For a model with `[postprocess] labels`: per row, the k best classes with
    /// their scores, best first (see [`crate::preprocess::Pipeline::top_classes`]).
    pub top_classes: Option<Vec<crate::preprocess::TopClasses>>,
    pub latency: Duration,
    /// As [`super::PredictResponse::cache`].
    pub cache: Option<crate::cache::CacheStatus>,
    /// As [`super::PredictResponse::request_id`].
    pub request_id: Option<crate::store::predictions::RequestId>,
}

pub async fn simple_predict(
    state: &ServerState,
    request: SimpleRequest,
) -> Result<SimpleResponse, ApiError> {
    simple_predict_with_id(state, request, ClientRequestId::default()).await
}

/// [`simple_predict`] for a request that may carry its own id, as
/// [`super::predict::predict_with_id`].
pub async fn simple_predict_with_id(
    state: &ServerState,
    request: SimpleRequest,
    client_id: ClientRequestId<'_>,
) -> Result<SimpleResponse, ApiError> {
    let started = Instant::now();
    if request.rows.len() == 0 {
        return Err(ApiError::InvalidArgument("no features given".into()));
    }
    let handle = state.manager.resolve(&request.model, &request.version)?;
    let inputs = row_inputs(&handle, &request.rows)?;
    let (prediction_output, probabilities_output) = answer_outputs(&handle)?;
    let mut wanted = vec![prediction_output.clone()];
    wanted.extend(probabilities_output.clone());
    match (request.top_k, handle.pipeline.labelled_output()) {
        (Some(0), _) => return Err(ApiError::InvalidArgument("top_k must be 1 or more".into())),
        (Some(_), None) => {
            return Err(ApiError::InvalidArgument(format!(
            "top_k needs a model with class labels ([postprocess] labels), and model {:?} has none",
            request.model
        )))
        }
        (_, Some(scores)) if !wanted.iter().any(|w| w == scores) => wanted.push(scores.to_string()),
        _ => {}
    }
    // In the model's order (the answer is read by name): naming every output the
    // model answers unasked so, the request shares cache entries with a predict
    // that names none (`cache::key::keyed_outputs`).
    let outputs = &handle.backend.signature().outputs;
    wanted.sort_by_key(|name| outputs.iter().position(|o| o.name == *name));

    // Run on the very version resolved above, so that a swap in between can neither
    // change the model under the features laid out for it nor, by resolving it
    // again while it unloads, fail the request.
    let mut predict_request = PredictRequest::new(
        request.model,
        VersionRequest::Specific(handle.version),
        Protocol::SimpleRest,
    );
    predict_request.inputs = inputs;
    predict_request.outputs = wanted;
    predict_request.options = request.options;
    let response = predict_on_with_id(state, handle, predict_request, client_id).await?;
    let top_classes = response
        .handle
        .pipeline
        .top_classes(&response.outputs, request.top_k)?;
    let mut prediction = None;
    let mut probabilities = None;
    for (name, tensor) in response.outputs {
        if name == prediction_output {
            prediction = Some(tensor);
        } else if Some(&name) == probabilities_output.as_ref() {
            probabilities = Some(tensor);
        }
    }
    let mut prediction = prediction.ok_or_else(|| {
        ApiError::Internal(format!("the model gave no output {prediction_output:?}"))
    })?;
    if let (Some((classes, scores)), Some(probabilities)) = (
        crate::backends::tensorflow::classification_outputs(response.handle.backend.signature()),
        &probabilities,
    ) {
        if prediction_output == classes && probabilities_output.as_deref() == Some(scores) {
            prediction = top_class_per_row(&prediction, probabilities)?;
        }
    }
    Ok(SimpleResponse {
        top_classes,
        handle: response.handle,
        prediction,
        probabilities,
        latency: started.elapsed(),
        cache: response.cache,
        request_id: response.request_id,
    })
}
