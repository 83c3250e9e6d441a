//! Classify and regress: TF Serving's example-based operations. Each example is a
//! set of named features (tf.Example); the features are laid out in the model's
//! feature order as one row of its input, the model runs through [`predict_on`], and the
//! answer is read as classes with scores, or as one value per example.
//!
//! Added for the gRPC `Classify` / `Regress` / `MultiInference` RPCs (issue 5); the
//! REST `:classify` / `:regress` verbs call the same functions.
//!
//! A TensorFlow SavedModel (a model with named signatures) is classified as TF Serving
//! does it (issue 16): the request's signature (default `serving_default`) takes a
//! string tensor of serialized tf.Example protos, built here from the examples, and
//! gives `classes`/`scores` or `outputs` (see `backends::tensorflow::examples`).

use std::collections::HashMap;
use std::time::Duration;

use std::collections::BTreeMap;

use ferroserve_proto::tensorflow::{feature, BytesList, Feature, FloatList, Int64List};

use super::predict::{predict_on_with_id, ClientRequestId};
use super::{ApiError, PredictRequest, Protocol, ServerState};
use crate::backends::tensorflow::examples::{
    self as tf_examples, ClassifySignature, RegressSignature,
};
use crate::backends::tensorflow::DEFAULT_SIGNATURE;
use crate::backends::NamedSignature;
use crate::cache::CacheStatus;
use crate::manager::{ServableHandle, VersionRequest};
use crate::store::predictions::RequestId;
use crate::tensor::{DataType, NamedTensor, Tensor, TensorData};

/// The values of one feature of an example (a tf.Example `Feature`).
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValues {
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Bytes(Vec<Vec<u8>>),
}

impl FeatureValues {
    fn len(&self) -> usize {
        match self {
            FeatureValues::Floats(v) => v.len(),
            FeatureValues::Ints(v) => v.len(),
            FeatureValues::Bytes(v) => v.len(),
        }
    }
}

/// One example: features by name.
pub type Example = HashMap<String, FeatureValues>;

#[derive(Debug, Clone)]
pub struct ExamplesRequest {
    pub model: String,
    pub version: VersionRequest,
    pub examples: Vec<Example>,
    pub protocol: Protocol,
    /// As [`PredictRequest::client_timeout`].
    pub client_timeout: Option<Duration>,
    /// The signature to run (TF Serving's `signature_name`); empty: the default.
    /// Models other than SavedModels accept only the default and the name TF
    /// Serving's Estimators give the method (`classification` / `regression`).
    pub signature_name: String,
    /// The request's HTTP headers or gRPC metadata, and an id given for it: where
    /// the prediction log finds the client's id if the request is logged (see
    /// `super::predict::ClientRequestId`).
    pub headers: http::HeaderMap,
    pub given_id: Option<String>,
}

/// Classes of one example, each label with its score, in the model's class order.
pub type Classes = Vec<(String, f32)>;

pub struct ClassifyResponse {
    pub handle: ServableHandle,
    /// One entry per example, in request order.
    pub classes: Vec<Classes>,
    /// As [`super::PredictResponse::cache`].
    pub cache: Option<CacheStatus>,
    /// As [`super::PredictResponse::request_id`].
    pub request_id: Option<RequestId>,
}

pub struct RegressResponse {
    pub handle: ServableHandle,
    /// One value per example, in request order.
    pub values: Vec<f32>,
    /// As [`super::PredictResponse::cache`].
    pub cache: Option<CacheStatus>,
    /// As [`super::PredictResponse::request_id`].
    pub request_id: Option<RequestId>,
}

/// Classifies examples with a classifier: every class with its probability when the
/// model gives probabilities, else the predicted label alone (score 0, as TF Serving
/// leaves `score` unset for signatures without scores).
pub async fn classify(
    state: &ServerState,
    request: ExamplesRequest,
) -> Result<ClassifyResponse, ApiError> {
    let handle = resolve(state, &request)?;
    classify_on(state, handle, request).await
}

/// As [`classify`], on a version the caller already holds (MultiInference runs
/// every task on the one version its first task resolved, as TF Serving does);
/// `request.version` is not read.
pub async fn classify_on(
    state: &ServerState,
    handle: ServableHandle,
    request: ExamplesRequest,
) -> Result<ClassifyResponse, ApiError> {
    check_examples(&request)?;
    let n = request.examples.len();
    if let Some(named) = saved_model_signature(&handle, &request.signature_name)? {
        let signature = ClassifySignature::of(named).map_err(ApiError::InvalidArgument)?;
        let outputs = signature.outputs();
        let ran = run_saved_model(state, request, handle, &signature.input, outputs).await?;
        let find = |key: &Option<String>| {
            key.as_ref()
                .and_then(|k| ran.outputs.iter().find(|(name, _)| name == k))
                .map(|(_, t)| t)
        };
        let classes =
            tf_examples::read_classifications(n, find(&signature.classes), find(&signature.scores))
                .map_err(ApiError::InvalidArgument)?;
        return Ok(ClassifyResponse {
            handle: ran.handle,
            classes,
            cache: ran.cache,
            request_id: ran.request_id,
        });
    }
    check_plain_signature(&request.signature_name, "classification")?;
    let probabilities = probabilities_output(&handle);
    let prediction = prediction_output(&handle);
    if probabilities.is_none() && handle.class_labels().is_none() {
        // A label output of floats with no class labels is a regressor's value: TF
        // Serving refuses to classify with a regression signature, so does this.
        let floats = prediction.as_ref().is_some_and(|name| {
            handle.backend.signature().outputs.iter().any(|o| {
                &o.name == name && matches!(o.dtype, DataType::F16 | DataType::F32 | DataType::F64)
            })
        });
        if let (true, Some(name)) = (floats, &prediction) {
            return Err(ApiError::InvalidArgument(format!(
                "model {:?} gives no classes: its prediction output {name:?} is a number, and it has no probabilities output or class labels (a regressor: use regress or predict; a classifier: name probabilities_output in its config.toml)",
                request.model
            )));
        }
    }
    let (output, with_scores) = match (probabilities, prediction) {
        (Some(p), _) => (p, true),
        (None, Some(p)) => (p, false),
        (None, None) => {
            return Err(ApiError::InvalidArgument(format!(
                "model {:?} is not a classifier: it names no probabilities or label output",
                request.model
            )))
        }
    };
    let ran = run(state, request, handle, &output).await?;
    let tensor = ran.output(&output)?;
    let handle = &ran.handle;
    let classes = if with_scores {
        let scores = match tensor.clone().cast(DataType::F32).map(Tensor::into_parts) {
            Ok((_, TensorData::F32(v))) => v,
            _ => return Err(internal_output(&output, tensor)),
        };
        let per_row = scores.len().checked_div(n).unwrap_or(0);
        if per_row * n != scores.len() {
            return Err(internal_output(&output, tensor));
        }
        let labels: Vec<String> = match handle.class_labels() {
            Some(labels) if labels.len() == per_row => labels.to_vec(),
            _ => (0..per_row).map(|i| i.to_string()).collect(),
        };
        scored_classes(tensor, &scores, per_row, n, &labels, handle.pipeline.top_k)
    } else {
        if tensor.len() != n {
            return Err(internal_output(&output, tensor));
        }
        label_strings(tensor.data())
            .into_iter()
            .map(|label| vec![(label, 0.0)])
            .collect()
    };
    Ok(ClassifyResponse {
        classes,
        cache: ran.cache,
        request_id: ran.request_id,
        handle: ran.handle,
    })
}

/// Each example's classes from its row of `per_row` scores (`scores`, the output
/// `tensor` read as FP32), labelled by column. With `top_k` (`[postprocess] top_k`),
/// the k best, best first, ranked in the output's own element type (an INT64
/// score past 2^24 is no longer exact as an f32), NaN last and equal scores in
/// column order; else every class in column order.
fn scored_classes(
    tensor: &Tensor,
    scores: &[f32],
    per_row: usize,
    n: usize,
    labels: &[String],
    top_k: Option<usize>,
) -> Vec<Classes> {
    let ranked = top_k.and_then(|_| crate::preprocess::labels::ranked_columns(tensor, per_row));
    scores
        .chunks(per_row.max(1))
        .take(n)
        .enumerate()
        .map(|(i, row)| {
            // `labels` has `per_row` entries, as each row has scores.
            let class = |j: usize| Some((labels.get(j)?.clone(), *row.get(j)?));
            match (top_k, ranked.as_ref().and_then(|r| r.get(i))) {
                (Some(k), Some(order)) => order.iter().take(k).filter_map(|&j| class(j)).collect(),
                _ => (0..row.len()).filter_map(class).collect(),
            }
        })
        .collect()
}

/// Runs a regressor: the value of its prediction output for each example.
pub async fn regress(
    state: &ServerState,
    request: ExamplesRequest,
) -> Result<RegressResponse, ApiError> {
    let handle = resolve(state, &request)?;
    regress_on(state, handle, request).await
}

/// As [`regress`], on a version the caller already holds (see [`classify_on`]).
pub async fn regress_on(
    state: &ServerState,
    handle: ServableHandle,
    request: ExamplesRequest,
) -> Result<RegressResponse, ApiError> {
    check_examples(&request)?;
    let n = request.examples.len();
    if let Some(named) = saved_model_signature(&handle, &request.signature_name)? {
        let signature = RegressSignature::of(named).map_err(ApiError::InvalidArgument)?;
        let ran = run_saved_model(
            state,
            request,
            handle,
            &signature.input,
            vec![signature.output.clone()],
        )
        .await?;
        let output = ran.output(&signature.output)?;
        let values = tf_examples::read_regressions(n, output).map_err(ApiError::InvalidArgument)?;
        return Ok(RegressResponse {
            handle: ran.handle,
            values,
            cache: ran.cache,
            request_id: ran.request_id,
        });
    }
    check_plain_signature(&request.signature_name, "regression")?;
    if probabilities_output(&handle).is_some() || handle.class_labels().is_some() {
        // Its prediction is a class label: regressing would answer labels as numbers.
        return Err(ApiError::InvalidArgument(format!(
            "model {:?} is a classifier (it has classes): use classify or predict",
            request.model
        )));
    }
    let output = prediction_output(&handle)
        .or_else(|| match handle.backend.signature().outputs.as_slice() {
            [only] => Some(only.name.clone()),
            _ => None,
        })
        .ok_or_else(|| {
            ApiError::InvalidArgument(format!(
                "model {:?} names no prediction output to regress with",
                request.model
            ))
        })?;
    let ran = run(state, request, handle, &output).await?;
    let tensor = ran.output(&output)?;
    let values = match tensor.clone().cast(DataType::F32).map(Tensor::into_parts) {
        Ok((_, TensorData::F32(v))) if v.len() == n => v,
        // A regression result holds a float: an FP64 answer past its range is
        // said as such (it was called a shape problem).
        Err(crate::tensor::TensorError::OutOfRange { value, .. }) => {
            return Err(ApiError::InvalidArgument(format!(
                "the model answered {value} for output {output:?}, past the range of the \
                 float (FP32) a regression result holds; use predict for this model"
            )))
        }
        _ => {
            return Err(ApiError::InvalidArgument(format!(
                "output {output:?} of {} {:?} is not one number per example, so the model cannot regress",
                tensor.dtype(),
                tensor.shape()
            )))
        }
    };
    Ok(RegressResponse {
        values,
        cache: ran.cache,
        request_id: ran.request_id,
        handle: ran.handle,
    })
}

/// The output holding a classifier's class probabilities, if the model has one: named
/// in `config.toml`, known to the backend, or the score output of a `[postprocess]`.
fn probabilities_output(handle: &ServableHandle) -> Option<String> {
    handle
        .config()
        .probabilities_output
        .clone()
        .or_else(|| handle.backend.traits().probabilities_output.clone())
        .or_else(|| {
            // `[postprocess]` names a score output (logits with `softmax`, say).
            handle
                .loaded_config
                .postprocess
                .is_set()
                .then(|| handle.pipeline.score_output.clone())
                .flatten()
        })
}

/// The output holding the model's prediction (a label or a value), if it names one.
fn prediction_output(handle: &ServableHandle) -> Option<String> {
    handle
        .config()
        .prediction_output
        .clone()
        .or_else(|| handle.backend.traits().prediction_output.clone())
}

fn resolve(state: &ServerState, request: &ExamplesRequest) -> Result<ServableHandle, ApiError> {
    check_examples(request)?;
    Ok(state.manager.resolve(&request.model, &request.version)?)
}

fn check_examples(request: &ExamplesRequest) -> Result<(), ApiError> {
    if request.examples.is_empty() {
        return Err(ApiError::InvalidArgument("no examples given".into()));
    }
    Ok(())
}

/// The signature a request names when the model is a SavedModel (it has named
/// signatures), else `None`; an unknown name is refused, naming the ones it has.
fn saved_model_signature<'a>(
    handle: &'a ServableHandle,
    name: &str,
) -> Result<Option<&'a NamedSignature>, ApiError> {
    let all = handle.backend.signatures();
    if all.is_empty() {
        return Ok(None);
    }
    let found = handle
        .backend
        .signature_named(name)
        .and_then(|wanted| all.iter().find(|s| std::ptr::eq(&s.signature, wanted)));
    found
        .map(Some)
        .ok_or_else(|| super::predict::unknown_signature(&*handle.backend, name))
}

/// Refuses a signature name a model without named signatures does not have: it has
/// only the default, which TF Serving's Estimators also call by its method's name.
fn check_plain_signature(name: &str, method: &str) -> Result<(), ApiError> {
    if name.is_empty() || name == DEFAULT_SIGNATURE || name == method {
        return Ok(());
    }
    Err(ApiError::InvalidArgument(format!(
        "serving signature name {name:?} not found; the model has {DEFAULT_SIGNATURE:?}"
    )))
}

/// Feeds the examples, serialized as tf.Example protos, to a SavedModel signature's
/// string input and fetches `outputs`, on the version already resolved.
async fn run_saved_model(
    state: &ServerState,
    request: ExamplesRequest,
    handle: ServableHandle,
    input: &str,
    outputs: Vec<String>,
) -> Result<Ran, ApiError> {
    let serialized: Vec<Vec<u8>> = request
        .examples
        .iter()
        .map(|example| tf_examples::serialize_example(proto_features(example)))
        .collect();
    let inputs = vec![(input.to_string(), tf_examples::examples_tensor(serialized))];
    predict_examples(state, request, handle, inputs, outputs, true).await
}

/// An example's features as tf.Example `Feature`s, in name order.
fn proto_features(example: &Example) -> BTreeMap<String, Feature> {
    example
        .iter()
        .map(|(name, values)| {
            let kind = match values {
                FeatureValues::Floats(v) => {
                    feature::Kind::FloatList(FloatList { value: v.clone() })
                }
                FeatureValues::Ints(v) => feature::Kind::Int64List(Int64List { value: v.clone() }),
                FeatureValues::Bytes(v) => feature::Kind::BytesList(BytesList { value: v.clone() }),
            };
            (name.clone(), Feature { kind: Some(kind) })
        })
        .collect()
}

/// Builds the input from the examples and predicts `output` with the version resolved
/// (held, so a reload in between can neither swap the model under the features nor
/// unload the version the features were laid out for).
async fn run(
    state: &ServerState,
    request: ExamplesRequest,
    handle: ServableHandle,
    output: &str,
) -> Result<Ran, ApiError> {
    let input = examples_to_input(&handle, &request.examples)?;
    let outputs = vec![output.to_string()];
    predict_examples(state, request, handle, vec![input], outputs, false).await
}

/// Predicts `inputs` (laid out from `request`'s examples) for `outputs` on the
/// version `handle` holds, under the request's signature when `signature` (a
/// SavedModel's), logged under the client's id as a predict is.
async fn predict_examples(
    state: &ServerState,
    request: ExamplesRequest,
    handle: ServableHandle,
    inputs: Vec<NamedTensor>,
    outputs: Vec<String>,
    signature: bool,
) -> Result<Ran, ApiError> {
    let mut predict_request = PredictRequest::new(
        request.model,
        VersionRequest::Specific(handle.version),
        request.protocol,
    );
    if signature {
        predict_request.signature_name = request.signature_name;
    }
    predict_request.inputs = inputs;
    predict_request.outputs = outputs;
    predict_request.client_timeout = request.client_timeout;
    let client_id = ClientRequestId {
        given: request.given_id.as_deref(),
        headers: Some(&request.headers),
    };
    let response = predict_on_with_id(state, handle, predict_request, client_id).await?;
    Ok(Ran {
        handle: response.handle,
        outputs: response.outputs,
        cache: response.cache,
        request_id: response.request_id,
    })
}

/// What a model run for examples answered.
struct Ran {
    handle: ServableHandle,
    outputs: Vec<NamedTensor>,
    cache: Option<CacheStatus>,
    /// The id the prediction log keeps the run under, if it was logged.
    request_id: Option<RequestId>,
}

impl Ran {
    /// The output named `output`.
    fn output(&self, output: &str) -> Result<&Tensor, ApiError> {
        self.outputs
            .iter()
            .find(|(name, _)| name == output)
            .map(|(_, t)| t)
            .ok_or_else(|| ApiError::Internal(format!("the model gave no output {output:?}")))
    }
}

/// Lays the examples out as rows of the model's input. With feature names known (model
/// config, else the model itself), each named feature gives one value, in that order;
/// otherwise an example must hold one feature (or one named like the input) with the
/// whole row.
fn examples_to_input(
    handle: &ServableHandle,
    examples: &[Example],
) -> Result<(String, Tensor), ApiError> {
    let signature = handle.backend.signature();
    let input = match handle.config().input_name.as_deref() {
        Some(name) => signature.inputs.iter().find(|s| s.name == name),
        None => match signature.inputs.as_slice() {
            [only] => Some(only),
            _ => None,
        },
    }
    .ok_or_else(|| {
        ApiError::InvalidArgument(format!(
            "model {:?} has several inputs and no input_name in its config, so examples cannot be mapped onto it",
            handle.model
        ))
    })?;
    let config = handle.config();
    let names = config
        .feature_names
        .as_ref()
        .or(handle.backend.traits().feature_names.as_ref());
    let bytes_input = input.dtype == DataType::Bytes;
    let mut numbers: Vec<f64> = Vec::new();
    let mut strings: Vec<Vec<u8>> = Vec::new();
    let mut row_len = None;
    for (i, example) in examples.iter().enumerate() {
        let row: Vec<&FeatureValues> = match names {
            Some(names) => names
                .iter()
                .map(|name| {
                    let f = example.get(name).ok_or_else(|| {
                        ApiError::InvalidArgument(format!(
                            "example {i} has no feature {name:?}; the model takes {names:?}"
                        ))
                    })?;
                    if f.len() != 1 {
                        return Err(ApiError::InvalidArgument(format!(
                            "feature {name:?} of example {i} has {} values; one is expected",
                            f.len()
                        )));
                    }
                    Ok(f)
                })
                .collect::<Result<_, _>>()?,
            None => match example.get(&input.name) {
                Some(f) => vec![f],
                None if example.len() == 1 => example.values().collect(),
                None => {
                    return Err(ApiError::InvalidArgument(format!(
                        "model {:?} does not know its feature names (set feature_names in its config), so each \
                         example must hold a single feature, or one named {:?}, with the whole row",
                        handle.model, input.name
                    )))
                }
            },
        };
        let before = numbers.len() + strings.len();
        for f in row {
            match (f, bytes_input) {
                (FeatureValues::Floats(v), false) => numbers.extend(v.iter().map(|&x| x as f64)),
                (FeatureValues::Ints(v), false) => numbers.extend(v.iter().map(|&x| x as f64)),
                (FeatureValues::Bytes(v), true) => strings.extend(v.iter().cloned()),
                (_, true) => {
                    return Err(ApiError::InvalidArgument(format!(
                        "example {i}: the model's input {:?} takes bytes features",
                        input.name
                    )))
                }
                (FeatureValues::Bytes(_), false) => {
                    return Err(ApiError::InvalidArgument(format!(
                        "example {i}: bytes features cannot feed the model's {} input {:?}",
                        input.dtype, input.name
                    )))
                }
            }
        }
        let len = numbers.len() + strings.len() - before;
        if *row_len.get_or_insert(len) != len {
            return Err(ApiError::InvalidArgument(format!(
                "example {i} gives {len} values but example 0 gave {}",
                row_len.unwrap_or_default()
            )));
        }
    }
    let shape = vec![examples.len(), row_len.unwrap_or(0)];
    let data = if bytes_input {
        TensorData::Bytes(strings)
    } else {
        TensorData::F64(numbers)
    };
    let tensor = Tensor::new(shape, data).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    Ok((input.name.clone(), tensor))
}

fn label_strings(data: &TensorData) -> Vec<String> {
    match data {
        TensorData::Bytes(v) => v
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect(),
        other => crate::with_tensor_data!(other, v => v.iter().map(|x| format!("{x:?}")).collect()),
    }
}

fn internal_output(name: &str, tensor: &Tensor) -> ApiError {
    ApiError::Internal(format!(
        "output {name:?} ({} {:?}) is not laid out one row per example",
        tensor.dtype(),
        tensor.shape()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
    }

    fn scored(tensor: &Tensor, top_k: Option<usize>) -> Vec<Classes> {
        let scores = match tensor.clone().cast(DataType::F32).map(Tensor::into_parts) {
            Ok((_, TensorData::F32(v))) => v,
            other => panic!("{other:?}"),
        };
        let n = tensor.shape()[0];
        let per_row = scores.len() / n;
        scored_classes(tensor, &scores, per_row, n, &labels(per_row), top_k)
    }

    /// `total_cmp` ranked a positive NaN above every class (and a negative NaN
    /// below): a NaN score is now last whatever its sign, and ties keep column
    /// order.
    #[test]
    fn top_k_puts_nan_last_and_keeps_ties_in_column_order() {
        let t = Tensor::new(
            vec![2, 4],
            TensorData::F32(vec![1.0, f32::NAN, 2.0, 1.0, -f32::NAN, 0.5, 0.5, 3.0]),
        )
        .unwrap();
        let rows = scored(&t, Some(4));
        let names: Vec<Vec<&str>> = rows
            .iter()
            .map(|r| r.iter().map(|(l, _)| l.as_str()).collect())
            .collect();
        assert_eq!(names, [["2", "0", "3", "1"], ["3", "1", "2", "0"]]);
        let all = scored(&t, None);
        assert_eq!(all[0].len(), 4);
        assert_eq!(
            all[0][1].0, "1",
            "without top_k, every class in column order"
        );
    }

    /// The scores were ranked as f32: INT64 scores past 2^24 tied, and the
    /// first column won though the second is higher.
    #[test]
    fn top_k_ranks_integer_scores_exactly() {
        let t = Tensor::new(vec![1, 3], TensorData::I64(vec![16_777_216, 16_777_217, 1])).unwrap();
        let rows = scored(&t, Some(1));
        assert_eq!(rows[0][0].0, "1");
    }
}
