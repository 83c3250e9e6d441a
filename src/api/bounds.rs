//! What one request may hold and what its answer may take: rows per request
//! (`max_request_rows`, per model or the server's), the JSON values a body may
//! carry (known before it is read, [`RequestBounds`]), and the answer's encoded
//! size (`max_response_bytes`), estimated from the output tensors before any
//! adapter builds it. [`super::predict`] applies them for every adapter.

use super::{ApiError, Protocol, ServerState};
use crate::backends::Signature;
use crate::manager::{ServableHandle, VersionRequest};
use crate::tensor::{DataType, NamedTensor};

/// The most rows (dimension 0) the request for `model` at `version` may carry:
/// the model's `max_request_rows`, else the server's. Adapters that could expand a
/// small message into a large tensor (TF Serving's padding of typed fields) bound
/// the expansion with it before `predict` sees the tensor.
pub fn row_limit(state: &ServerState, model: &str, version: &VersionRequest) -> usize {
    state
        .manager
        .resolve(model, version)
        .ok()
        .and_then(|h| h.config().max_request_rows)
        .unwrap_or(state.settings.max_request_rows)
}

/// Refuses a request with more rows than the model takes in one request: every
/// row costs inference time and answer memory, and the body-size limit alone does
/// not bound rows (a row of one small number is a few bytes).
pub(super) fn check_rows(
    inputs: &[NamedTensor],
    max_rows: usize,
    handle: &ServableHandle,
) -> Result<(), ApiError> {
    for (name, tensor) in inputs {
        if let Some(&rows) = tensor.shape().first() {
            if rows > max_rows {
                let limit = RowLimitOf::Model(handle.model.clone());
                return Err(too_many_rows(
                    &format!("input {name:?}"),
                    rows,
                    max_rows,
                    &limit,
                ));
            }
        }
    }
    Ok(())
}

/// Whose row limit a refusal names.
#[derive(Debug, Clone, PartialEq)]
pub enum RowLimitOf {
    /// The model's `max_request_rows`, else the server's.
    Model(std::sync::Arc<str>),
    /// The server's `--max-request-rows`: the model named no version that serves now.
    Server,
    /// The largest of every serving model's and the server's (a `POST /predict` body,
    /// which names its model in the body).
    AnyModel,
}

/// The refusal of `what` (an input, or a field of a body) with `rows` rows, past
/// `max_rows`; `rows` may be a lower bound ("at least 65537") when the body was
/// refused while it was read. The one message of [`check_rows`] and the adapters'
/// checks while parsing (`crate::json_tensor::Budget`).
pub fn too_many_rows(
    what: &str,
    rows: impl std::fmt::Display,
    max_rows: usize,
    limit: &RowLimitOf,
) -> ApiError {
    let whose = match limit {
        RowLimitOf::Model(model) => format!("model {model:?} takes"),
        RowLimitOf::Server => "the server takes".to_string(),
        RowLimitOf::AnyModel => "any model takes".to_string(),
    };
    ApiError::PayloadTooLarge(format!(
        "{what} has {rows} rows, more than the {max_rows} that {whose} in one request \
         (max_request_rows); send them in smaller requests"
    ))
}

/// What one request may hold, known before its body is read, so that an adapter
/// refuses a body past it while parsing it rather than after building it (a JSON
/// body becomes a tree of values first, many times its size: `crate::json_tensor`).
/// The checks in [`predict`] still apply to the decoded tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestBounds {
    /// The most rows (dimension 0) of any input.
    pub max_rows: usize,
    pub limit_of: RowLimitOf,
    /// The most JSON values (numbers, strings, lists and objects, nested ones
    /// included) a body's tensors may take to describe the largest request the
    /// model answers: `max_rows` rows of each input, counted generously (every value
    /// may be a `{"b64": …}` object, every row in a list or an object of its own).
    /// `None` when an input's shape leaves a dimension other than the first open,
    /// its inputs are pre-processed (texts, images), or nothing serves the model.
    pub max_values: Option<usize>,
}

impl RequestBounds {
    /// The refusal of a body whose tensors hold more than [`RequestBounds::max_values`].
    pub fn too_many_values(&self) -> ApiError {
        let whose = match &self.limit_of {
            RowLimitOf::Model(model) => format!("model {model:?}"),
            RowLimitOf::Server | RowLimitOf::AnyModel => "the model".to_string(),
        };
        ApiError::PayloadTooLarge(format!(
            "the request's inputs hold more values than {whose} takes in one request \
             ({} rows (max_request_rows) of its inputs' shapes, at most {} JSON values); \
             send fewer rows, each of the model's shape",
            self.max_rows,
            self.max_values.unwrap_or(usize::MAX)
        ))
    }
}

/// The bounds of a request for `model` at `version` ([`RequestBounds`]), or at any
/// of its serving versions when the version is not known yet (`None`: the simple
/// API's body names it): the model's limits, or the server's row limit alone when
/// nothing serves it.
pub fn request_bounds(
    state: &ServerState,
    model: &str,
    version: Option<&VersionRequest>,
) -> RequestBounds {
    let server = || RequestBounds {
        max_rows: state.settings.max_request_rows,
        limit_of: RowLimitOf::Server,
        max_values: None,
    };
    let bounds = |handle: &ServableHandle| {
        let max_rows = handle
            .config()
            .max_request_rows
            .unwrap_or(state.settings.max_request_rows);
        RequestBounds {
            max_rows,
            max_values: max_json_values(handle, max_rows),
            limit_of: RowLimitOf::Model(handle.model.clone()),
        }
    };
    match version {
        Some(version) => match state.manager.resolve(model, version) {
            Ok(handle) => bounds(&handle),
            Err(_) => server(),
        },
        None => {
            let serving = state.manager.serving();
            let mut versions = serving
                .models
                .get(model)
                .into_iter()
                .flat_map(|m| m.versions.values());
            let Some(first) = versions.next() else {
                return server();
            };
            // The most any of them takes: values are bounded only when each version's are.
            versions.fold(bounds(first), |most, handle| {
                let other = bounds(handle);
                RequestBounds {
                    max_rows: most.max_rows.max(other.max_rows),
                    max_values: most.max_values.zip(other.max_values).map(|(a, b)| a.max(b)),
                    limit_of: most.limit_of,
                }
            })
        }
    }
}

/// The bounds of a request whose model is not known before its body is read: the
/// largest row limit of the server's and every serving model's, and no bound on
/// values.
pub fn request_bounds_any_model(state: &ServerState) -> RequestBounds {
    let serving = state.manager.serving();
    let max_rows = serving
        .models
        .values()
        .filter_map(|m| m.versions.values().next())
        .filter_map(|h| h.config().max_request_rows)
        .fold(state.settings.max_request_rows, usize::max);
    RequestBounds {
        max_rows,
        limit_of: RowLimitOf::AnyModel,
        max_values: None,
    }
}

/// [`RequestBounds::max_values`] of a version: the most over its signatures.
fn max_json_values(handle: &ServableHandle, max_rows: usize) -> Option<usize> {
    let traits = handle.backend.traits();
    if handle.pipeline.transforms_inputs() || !traits.ignored_inputs.is_empty() {
        return None;
    }
    let named = handle.backend.signatures();
    let mut most = signature_json_values(handle.backend.signature(), max_rows)?;
    for s in named {
        most = most.max(signature_json_values(&s.signature, max_rows)?);
    }
    Some(most)
}

/// The most JSON values a request for `signature` needs with `max_rows` rows, or
/// `None` when a shape leaves a dimension other than the first open. Per row: two
/// values per element (a `{"b64": …}` object and its string), one per list nested in
/// the row, and one for the row itself (its list, or a named row's object); a few
/// more for the lists and objects around the inputs.
fn signature_json_values(signature: &Signature, max_rows: usize) -> Option<usize> {
    let mut total = 8usize.saturating_add(signature.inputs.len().saturating_mul(2));
    for spec in &signature.inputs {
        if spec.any_rank() {
            return None;
        }
        let (rows, dims) = match spec.shape.split_first() {
            Some((&first, rest)) if first < 0 => (max_rows, rest),
            _ => (1, spec.shape.as_slice()),
        };
        let mut elements = 1usize;
        let mut lists = 0usize;
        for &d in dims {
            let d = usize::try_from(d).ok()?;
            lists = lists.saturating_add(elements);
            elements = elements.saturating_mul(d);
        }
        let per_row = elements
            .saturating_mul(2)
            .saturating_add(lists)
            .saturating_add(1);
        total = total.saturating_add(per_row.saturating_mul(rows));
    }
    Some(total)
}

/// How an adapter writes numbers, which decides what an answer may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseEncoding {
    /// Decimal text (the REST APIs): an element takes up to 25 bytes.
    Text,
    /// Protocol buffers or raw bytes (gRPC): an element takes up to 10 bytes.
    Binary,
}

impl ResponseEncoding {
    pub fn of(protocol: Protocol) -> ResponseEncoding {
        match protocol {
            // V2 REST may answer in binary; the text bound is the larger, so it holds.
            Protocol::TfServingRest | Protocol::V2Rest | Protocol::SimpleRest => {
                ResponseEncoding::Text
            }
            Protocol::TfServingGrpc | Protocol::V2Grpc | Protocol::Job => ResponseEncoding::Binary,
        }
    }

    /// The most bytes one element of `dtype` takes, separator included; byte
    /// strings add their own length (times 6 for text: `\u00XX` escapes).
    fn element_bound(self, dtype: DataType) -> usize {
        match (self, dtype) {
            (ResponseEncoding::Text, DataType::Bool) => 6,
            (ResponseEncoding::Text, DataType::U8 | DataType::I8) => 5,
            (ResponseEncoding::Text, DataType::U16 | DataType::I16) => 7,
            (ResponseEncoding::Text, DataType::U32 | DataType::I32) => 12,
            (ResponseEncoding::Text, DataType::U64 | DataType::I64) => 21,
            (ResponseEncoding::Text, DataType::F16 | DataType::F32) => 16,
            (ResponseEncoding::Text, DataType::F64) => 25,
            (ResponseEncoding::Text, DataType::Bytes) => 16,
            // Protocol buffers: varints take up to 10 bytes (a negative int32 too).
            (ResponseEncoding::Binary, DataType::Bytes) => 6,
            (ResponseEncoding::Binary, DataType::F32) => 4,
            (ResponseEncoding::Binary, DataType::F64) => 8,
            (ResponseEncoding::Binary, DataType::Bool) => 1,
            (ResponseEncoding::Binary, DataType::F16) => 3,
            (ResponseEncoding::Binary, DataType::U32) => 5,
            (ResponseEncoding::Binary, _) => 10,
        }
    }

    fn bytes_per_string_byte(self) -> usize {
        match self {
            ResponseEncoding::Text => 6,
            ResponseEncoding::Binary => 1,
        }
    }
}

/// An upper bound of the encoded size of `outputs`, computed from their shapes and
/// dtypes alone (plus string lengths), so that it costs nothing next to encoding.
pub fn response_size_bound(outputs: &[NamedTensor], encoding: ResponseEncoding) -> usize {
    let mut total: usize = 256; // the envelope: model name, version, id
    for (name, tensor) in outputs {
        let per_element = encoding.element_bound(tensor.dtype());
        let mut size = tensor.len().saturating_mul(per_element);
        if let crate::tensor::TensorData::Bytes(strings) = tensor.data() {
            let string_bytes = strings
                .iter()
                .map(Vec::len)
                .fold(0usize, usize::saturating_add);
            size =
                size.saturating_add(string_bytes.saturating_mul(encoding.bytes_per_string_byte()));
        }
        // Nested text arrays: every prefix of the shape opens that many brackets, and
        // the row format repeats each output's name once per row.
        let shape = tensor.shape();
        let mut arrays: usize = 1;
        let mut prefix: usize = 1;
        for &d in shape.iter().take(shape.len().saturating_sub(1)) {
            prefix = prefix.saturating_mul(d);
            arrays = arrays.saturating_add(prefix);
        }
        let rows = shape.first().copied().unwrap_or(1);
        let overhead = match encoding {
            ResponseEncoding::Text => arrays
                .saturating_mul(3)
                .saturating_add(rows.saturating_mul(name.len().saturating_add(8))),
            ResponseEncoding::Binary => 0,
        };
        size = size
            .saturating_add(overhead)
            .saturating_add(name.len() + 64 + 11 * shape.len());
        total = total.saturating_add(size);
    }
    total
}

/// Refuses an answer whose encoding would exceed `limit` bytes before any of it is
/// built: the encoders (JSON value trees, protobuf messages) would take several
/// times that much memory.
pub fn check_response_size(
    outputs: &[NamedTensor],
    encoding: ResponseEncoding,
    limit: usize,
) -> Result<(), ApiError> {
    let bound = response_size_bound(outputs, encoding);
    if bound > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "the answer would take up to {bound} bytes, more than the limit of {limit} bytes \
             (max_response_bytes); ask for fewer rows or fewer outputs"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{Tensor, TensorData};

    fn t(shape: Vec<usize>, data: TensorData) -> Tensor {
        Tensor::new(shape, data).unwrap()
    }

    #[test]
    fn response_bound_holds_for_json_and_protobuf() {
        let probabilities = t(
            vec![3, 2],
            TensorData::F32(vec![-1.175_494_4e-38, 1.0, 0.5, -3.402_823_5e38, 0.0, 1e-7]),
        );
        let labels = t(
            vec![3],
            TensorData::Bytes(vec![b"a\x00".to_vec(), b"setosa".to_vec(), vec![0xff]]),
        );
        let outputs = vec![
            ("probabilities".to_string(), probabilities.clone()),
            ("label".to_string(), labels),
        ];
        let json = serde_json::json!({
            "predictions": (0..3).map(|i| serde_json::json!({
                "probabilities": crate::json_tensor::NestedJson::row(&probabilities, i),
                "label": "a\u{0}",
            })).collect::<Vec<_>>()
        });
        let text = serde_json::to_vec(&json).unwrap().len();
        let bound = response_size_bound(&outputs, ResponseEncoding::Text);
        assert!(bound >= text, "{bound} < {text}");
        assert!(
            bound < 2048,
            "the bound stays near the real size, not {bound}"
        );
        assert!(
            response_size_bound(&outputs, ResponseEncoding::Binary)
                <= response_size_bound(&outputs, ResponseEncoding::Text)
        );
        let err = check_response_size(&outputs, ResponseEncoding::Text, 100).unwrap_err();
        assert!(
            matches!(&err, ApiError::PayloadTooLarge(m) if m.contains("max_response_bytes")),
            "{err}"
        );
    }
}
