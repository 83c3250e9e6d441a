//! A V2 inference request's body read into tensors: its JSON header under the
//! request's bounds (serde seeds that count elements as they go, so an oversized
//! request is refused before it is held), then its binary tensor data.

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use bytes::Buf;

use super::HEADER_LENGTH;
use crate::api::bounds::{too_many_rows, RequestBounds};
use crate::api::ApiError;
use crate::http::HttpError;
use crate::json_tensor::{
    flatten, parse_bounded, typed_tensor, BoundedValue, Budget, DataLimit, Key, Literals, Rows,
};
use crate::raw_tensor;
use crate::tensor::{element_count, DataType, NamedTensor, Tensor};

/// A V2 inference request.
#[derive(utoipa::ToSchema)]
#[schema(as = V2InferRequest)]
pub(super) struct InferBody {
    pub(super) id: Option<String>,
    #[schema(required = false)]
    pub(super) parameters: Map<String, Value>,
    pub(super) inputs: Vec<InputBody>,
    #[schema(required = false)]
    pub(super) outputs: Vec<OutputBody>,
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
    pub(super) fn parse_with_literals(
        bytes: &[u8],
        bounds: &RequestBounds,
    ) -> Result<InferBody, ApiError> {
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
pub(super) fn refuse_shared_memory(
    parameters: &Map<String, Value>,
    what: &str,
) -> Result<(), ApiError> {
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
pub(super) struct OutputBody {
    pub(super) name: String,
    #[serde(default)]
    pub(super) parameters: Map<String, Value>,
}

pub(super) fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidArgument(msg.into())
}

/// Takes a body's JSON header off the front of `body` (the whole body when the
/// request has no `Inference-Header-Content-Length`), leaving the binary part in it.
/// The header is copied only when it is split over chunks.
pub(super) fn take_header(headers: &HeaderMap, body: &mut impl Buf) -> Result<Bytes, ApiError> {
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

pub(super) fn decode_inputs(
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
pub(super) fn flag(params: &Map<String, Value>, name: &str) -> Result<Option<bool>, HttpError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(HttpError(invalid(format!(
            "parameter {name:?} must be true or false, not {other}"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
