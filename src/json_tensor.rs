//! JSON ↔ tensor conversion shared by the REST adapters and stored warm-up requests.
//!
//! Decoding: nested JSON arrays become a shape and a flat buffer. Without a
//! declared datatype (TF Serving, the simple API), numbers become INT64 when every
//! one is an integer and FP64 otherwise, booleans BOOL, strings BYTES; the api
//! layer then casts to the model's dtype. With a declared datatype (KServe V2),
//! leaves are converted to it directly.

use std::borrow::Cow;
use std::cell::Cell;

use base64::Engine;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::api::predict::{too_many_rows, RequestBounds};
use crate::api::ApiError;
use crate::tensor::{DataType, Tensor, TensorData};

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidArgument(msg.into())
}

/// A request's bounds (`crate::api::predict::RequestBounds`) applied to a JSON body
/// while it is parsed: the tensors of a body become a tree of `Value`s first, which
/// takes many times the body's size (32 bytes a value, an allocation a list), so rows
/// past the limit, and more values than the model can take, are refused before the
/// rest of the tree is built. The parse stops with a serde error; the adapter answers
/// [`Budget::refusal`] in its place ([`parse_bounded`] does).
pub struct Budget<'a> {
    bounds: &'a RequestBounds,
    /// JSON values the bounded fields may still take (`usize::MAX` without a bound).
    values_left: Cell<usize>,
    /// Why the parse was stopped, when a bound stopped it.
    refusal: Cell<Option<ApiError>>,
    /// Whether a bound stopped the parse (`refusal` is taken once).
    refused: Cell<bool>,
    /// Refuse an object that gives a key twice, at every depth (the simple API:
    /// `{"model_id": "a", "model_id": "b"}`), where a map would keep the last one.
    unique_keys: bool,
}

impl<'a> Budget<'a> {
    pub fn new(bounds: &'a RequestBounds) -> Budget<'a> {
        Budget {
            bounds,
            values_left: Cell::new(bounds.max_values.unwrap_or(usize::MAX)),
            refusal: Cell::new(None),
            refused: Cell::new(false),
            unique_keys: false,
        }
    }

    /// The same, refusing a key given twice in any object.
    pub fn with_unique_keys(self) -> Budget<'a> {
        Budget {
            unique_keys: true,
            ..self
        }
    }

    pub fn bounds(&self) -> &RequestBounds {
        self.bounds
    }

    /// Why the parse was stopped, if a bound stopped it (taken once).
    pub fn refusal(&self) -> Option<ApiError> {
        self.refusal.take()
    }

    /// Whether a bound stopped the parse.
    pub fn refused(&self) -> bool {
        self.refused.get()
    }

    /// Stops the parse with `error`: the serde error carries its message, the
    /// adapter answers `error` itself.
    pub fn refuse<E: de::Error>(&self, error: ApiError) -> E {
        let message = error.to_string();
        self.refusal.set(Some(error));
        self.refused.set(true);
        E::custom(message)
    }

    fn spend<E: de::Error>(&self) -> Result<(), E> {
        match self.values_left.get() {
            0 => Err(self.refuse(self.bounds.too_many_values())),
            n => {
                self.values_left.set(n - 1);
                Ok(())
            }
        }
    }

    fn count_row<E: de::Error>(&self, what: &str, rows: usize) -> Result<(), E> {
        if rows > self.bounds.max_rows {
            return Err(self.refuse(too_many_rows(
                what,
                format_args!("at least {rows}"),
                self.bounds.max_rows,
                &self.bounds.limit_of,
            )));
        }
        Ok(())
    }
}

/// Parses `bytes` with `seed`: a whole JSON document, nothing may follow it.
pub fn parse_seed<'de, S: DeserializeSeed<'de>>(
    bytes: &'de [u8],
    seed: S,
) -> Result<S::Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = seed.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// A JSON body parsed with `seed` ([`parse_seed`]): a parse stopped by `budget`
/// answers its refusal, any other failure is a 400 "malformed JSON body".
pub fn parse_bounded<'de, S: DeserializeSeed<'de>>(
    bytes: &'de [u8],
    seed: S,
    budget: &Budget<'_>,
) -> Result<S::Value, ApiError> {
    parse_seed(bytes, seed).map_err(|e| {
        budget
            .refusal()
            .unwrap_or_else(|| invalid(format!("malformed JSON body: {e}")))
    })
}

/// Which lists of a value are rows, counted against the row limit as they are read.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'s> {
    /// None here.
    None,
    /// Each element of this list is a row of the named thing (TF Serving's
    /// `instances`, a columnar input, the simple API's `texts`).
    Elements(&'s str),
    /// The elements of this list that are lists or objects are rows; a list of
    /// plain values is one row (the simple API's `features`).
    ListedRows(&'s str),
    /// A list is [`Rows::Elements`]; an object names inputs, the elements of each
    /// value being its rows (TF Serving's columnar `inputs`).
    Columns(&'s str),
}

/// The values a V2 input's `data` may hold once its `shape` is known: its elements,
/// as numbers or strings, and the lists (and `{"b64": …}` objects) around them.
pub struct DataLimit<'s> {
    /// The input's name, when it came before its data.
    name: Option<&'s str>,
    shape: &'s [i64],
    elements: usize,
    /// Plain values (numbers, strings, booleans, nulls) still allowed.
    plain_left: Cell<usize>,
    /// Values of any kind still allowed.
    values_left: Cell<usize>,
}

impl<'s> DataLimit<'s> {
    /// For the `data` of input `name` (when known), of `elements` elements in
    /// `shape` (every dimension known).
    pub fn new(name: Option<&'s str>, shape: &'s [i64], elements: usize) -> DataLimit<'s> {
        // The lists of nested data: one, then one per element of every dimension
        // but the last (`[[1, 2], [3, 4]]`: 3).
        let (mut lists, mut outer) = (1usize, 1usize);
        for &d in shape.iter().take(shape.len().saturating_sub(1)) {
            outer = outer.saturating_mul(usize::try_from(d).unwrap_or(0));
            lists = lists.saturating_add(outer);
        }
        DataLimit {
            name,
            shape,
            elements,
            plain_left: Cell::new(elements),
            values_left: Cell::new(elements.saturating_mul(2).saturating_add(lists)),
        }
    }

    fn spend<E: de::Error>(&self, budget: &Budget<'_>, plain: bool) -> Result<(), E> {
        let over = |left: &Cell<usize>| match left.get() {
            0 => true,
            n => {
                left.set(n - 1);
                false
            }
        };
        if (plain && over(&self.plain_left)) || over(&self.values_left) {
            let what = match self.name {
                Some(name) => format!("input {name:?}"),
                None => "an input".to_string(),
            };
            return Err(budget.refuse(invalid(format!(
                "{what}: shape {:?} needs {} elements, but data has more",
                self.shape, self.elements
            ))));
        }
        Ok(())
    }
}

/// A JSON value read as `serde_json::Value` reads it, every value in it spent from
/// `budget` and the rows `rows` says counted as they arrive; with `data`, bounded
/// by a V2 input's shape too.
#[derive(Clone, Copy)]
pub struct BoundedValue<'s, 'b> {
    pub budget: &'s Budget<'b>,
    pub rows: Rows<'s>,
    pub data: Option<&'s DataLimit<'s>>,
}

impl<'s, 'b> BoundedValue<'s, 'b> {
    /// A value with no rows of its own, under `budget` alone.
    pub fn new(budget: &'s Budget<'b>) -> BoundedValue<'s, 'b> {
        BoundedValue {
            budget,
            rows: Rows::None,
            data: None,
        }
    }

    fn spend<E: de::Error>(&self, plain: bool) -> Result<(), E> {
        self.budget.spend()?;
        match self.data {
            Some(limit) => limit.spend(self.budget, plain),
            None => Ok(()),
        }
    }

    fn plain<E: de::Error>(self, value: Value) -> Result<Value, E> {
        self.spend(true)?;
        Ok(value)
    }
}

impl<'de> DeserializeSeed<'de> for BoundedValue<'_, '_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoundedValue<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.plain(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        self.plain(Value::from(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        self.plain(Value::from(n))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        self.plain(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.plain(Value::String(s.to_string()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.plain(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.plain(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.spend(false)?;
        let element = BoundedValue {
            rows: Rows::None,
            ..self
        };
        let mut items = Vec::new();
        let mut rows = 0usize;
        while let Some(item) = seq.next_element_seed(element)? {
            match self.rows {
                Rows::None => {}
                Rows::Elements(what) | Rows::Columns(what) => {
                    rows += 1;
                    self.budget.count_row(what, rows)?;
                }
                Rows::ListedRows(what) => {
                    if item.is_array() || item.is_object() {
                        rows += 1;
                        self.budget.count_row(what, rows)?;
                    }
                }
            }
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.spend(false)?;
        let element = BoundedValue {
            rows: Rows::None,
            ..self
        };
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = match self.rows {
                Rows::Columns(_) => {
                    let what = format!("input {key:?}");
                    map.next_value_seed(BoundedValue {
                        rows: Rows::Elements(&what),
                        ..element
                    })?
                }
                _ => map.next_value_seed(element)?,
            };
            if self.budget.unique_keys && out.contains_key(&key) {
                return Err(de::Error::custom(format!("field {key:?} is given twice")));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// An object's key, borrowed from the body when it has no escapes: reading a body's
/// field names allocates nothing, as with serde's derived structs.
pub struct Key<'de>(Cow<'de, str>);

impl std::ops::Deref for Key<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }

            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The visitor methods of a body's top-level object reader for whatever is not an
/// object: read through (never built) and answered `None`, for the caller to refuse
/// in its own words.
macro_rules! anything_but_an_object_is_none {
    ($de:lifetime) => {
        fn visit_seq<A: SeqAccess<$de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    };
}

/// A body's top-level JSON object whose known fields (`fields`: each name with its
/// rows) are read with [`BoundedValue`] into one slot each, in `fields`' order;
/// other keys are skipped unread, as serde's derived structs skip them, and a field
/// given twice is refused as they refuse it. A field given as `null` reads as
/// absent. Anything but an object is read (unbuilt) as `None`.
pub struct BoundedFields<'s, 'b, const N: usize> {
    pub budget: &'s Budget<'b>,
    pub fields: [(&'static str, Rows<'static>); N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for BoundedFields<'_, '_, N> {
    type Value = Option<[Option<Value>; N]>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for BoundedFields<'_, '_, N> {
    type Value = Option<[Option<Value>; N]>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut slots: [Option<Value>; N] = std::array::from_fn(|_| None);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let Some(i) = self.fields.iter().position(|(name, _)| *name == &*key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let (name, rows) = self.fields[i];
            if slots[i].is_some() {
                return Err(de::Error::duplicate_field(name));
            }
            slots[i] = Some(map.next_value_seed(BoundedValue {
                budget: self.budget,
                rows,
                data: None,
            })?);
        }
        Ok(Some(slots.map(|slot| slot.filter(|v| !v.is_null()))))
    }

    anything_but_an_object_is_none!('de);
}

/// A body's top-level JSON object, every field read with [`BoundedValue`], the rows
/// of each what `fields` says for its key (the simple API, which names unknown
/// fields in its refusal). Anything but an object is read (unbuilt) as `None`. A key
/// given twice is refused, as serde's derived structs refuse it.
pub struct BoundedObject<'s, 'b, F> {
    pub budget: &'s Budget<'b>,
    pub fields: F,
}

impl<'de, F: Fn(&str) -> Rows<'static>> DeserializeSeed<'de> for BoundedObject<'_, '_, F> {
    type Value = Option<Map<String, Value>>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, F: Fn(&str) -> Rows<'static>> Visitor<'de> for BoundedObject<'_, '_, F> {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(BoundedValue {
                budget: self.budget,
                rows: (self.fields)(&key),
                data: None,
            })?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(match self.budget.unique_keys {
                    true => format!("field {key:?} is given twice"),
                    false => format!("duplicate field `{key}`"),
                }));
            }
            out.insert(key, value);
        }
        Ok(Some(out))
    }

    anything_but_an_object_is_none!('de);
}

/// Walks nested arrays, checking they are rectangular, and collects the leaves.
pub fn flatten<'a>(value: &'a Value, what: &str) -> Result<(Vec<usize>, Vec<&'a Value>), ApiError> {
    let mut shape = Vec::new();
    let mut probe = value;
    while let Value::Array(items) = probe {
        shape.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut leaves = Vec::with_capacity(shape.iter().product());
    collect(value, &shape, 0, &mut leaves, what)?;
    Ok((shape, leaves))
}

fn collect<'a>(
    value: &'a Value,
    shape: &[usize],
    depth: usize,
    out: &mut Vec<&'a Value>,
    what: &str,
) -> Result<(), ApiError> {
    match value {
        Value::Array(items) => {
            let Some(&want) = shape.get(depth) else {
                return Err(invalid(format!(
                    "{what} is not a rectangular array: a list where a value was expected at depth {depth}"
                )));
            };
            if items.len() != want {
                return Err(invalid(format!(
                    "{what} is not a rectangular array: expected {want} elements at depth {depth}, found {}",
                    items.len()
                )));
            }
            for item in items {
                collect(item, shape, depth + 1, out, what)?;
            }
            Ok(())
        }
        leaf => {
            if depth != shape.len() {
                return Err(invalid(format!("{what} is not a rectangular array: a value where a list was expected at depth {depth}")));
            }
            out.push(leaf);
            Ok(())
        }
    }
}

/// Decodes one JSON leaf that is a string or `{"b64": "..."}` into bytes.
fn leaf_bytes(v: &Value, what: &str) -> Result<Vec<u8>, ApiError> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Object(o) if o.len() == 1 && o.get("b64").is_some_and(Value::is_string) => {
            let s = o["b64"].as_str().unwrap_or_default();
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| invalid(format!("{what}: invalid base64: {e}")))
        }
        other => Err(invalid(format!(
            "{what}: expected a string, found {}",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The float a string names: NaN and the infinities cannot be JSON numbers, so
/// clients (tritonclient, TF Serving's, ferroserve's own answers) write them as
/// strings.
pub fn nonfinite_name(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "Infinity" | "inf" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// `body` with each bare `NaN`, `Infinity` and `-Infinity` outside strings quoted
/// (`"NaN"`), or `None` when it has none. TF Serving's parser takes them as numbers
/// (`kParseNanAndInfFlag`) and Python's `json.dumps` writes them; quoted, a float
/// input takes them ([`nonfinite_name`]).
pub fn quote_nonfinite_literals(body: &[u8]) -> Option<Vec<u8>> {
    const WORDS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    let mut out = Vec::with_capacity(body.len() + 16);
    let (mut i, mut in_string, mut changed) = (0, false, false);
    'bytes: while i < body.len() {
        let b = body[i];
        if in_string {
            match b {
                b'\\' => {
                    out.extend_from_slice(&body[i..(i + 2).min(body.len())]);
                    i += 2;
                    continue;
                }
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else {
            for word in WORDS {
                if body[i..].starts_with(word) {
                    out.push(b'"');
                    out.extend_from_slice(word);
                    out.push(b'"');
                    i += word.len();
                    changed = true;
                    continue 'bytes;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    changed.then_some(out)
}

/// Builds a tensor from leaves, inferring the dtype from the JSON values: numbers
/// are INT64 when all are integers that fit, UINT64 when some are above
/// `i64::MAX` (and none negative), else FP64, which may also hold NaN and the
/// infinities written as strings ([`nonfinite_name`]) among numbers.
pub fn infer_tensor(shape: Vec<usize>, leaves: &[&Value], what: &str) -> Result<Tensor, ApiError> {
    let first = leaves.first().copied().unwrap_or(&Value::Null);
    let nonfinite = |v: &Value| v.as_str().and_then(nonfinite_name);
    let numbers = leaves.iter().any(|v| v.is_number())
        && leaves
            .iter()
            .all(|v| v.is_number() || nonfinite(v).is_some());
    let data = match first {
        _ if numbers => {
            if let Some(v) = leaves.iter().map(|v| v.as_i64()).collect::<Option<_>>() {
                TensorData::I64(v)
            } else if let Some(v) = leaves.iter().map(|v| v.as_u64()).collect::<Option<_>>() {
                TensorData::U64(v)
            } else {
                TensorData::F64(
                    leaves
                        .iter()
                        .map(|v| v.as_f64().or_else(|| nonfinite(v)).unwrap_or(f64::NAN))
                        .collect(),
                )
            }
        }
        Value::Bool(_) => TensorData::Bool(
            leaves
                .iter()
                .map(|v| {
                    v.as_bool()
                        .ok_or_else(|| invalid(format!("{what}: mixes booleans with {}", kind(v))))
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::String(_) | Value::Object(_) => TensorData::Bytes(
            leaves
                .iter()
                .map(|v| leaf_bytes(v, what))
                .collect::<Result<_, _>>()?,
        ),
        Value::Number(_) => {
            let other = leaves
                .iter()
                .find(|v| !v.is_number() && nonfinite(v).is_none());
            return Err(invalid(format!(
                "{what}: mixes numbers with {}",
                other.map_or("other values", |v| kind(v))
            )));
        }
        Value::Null if leaves.is_empty() => TensorData::F64(Vec::new()),
        other => {
            return Err(invalid(format!(
                "{what}: {} is not a tensor value",
                kind(other)
            )))
        }
    };
    Tensor::new(shape, data).map_err(|e| invalid(format!("{what}: {e}")))
}

fn number<T: TryFrom<i64> + TryFrom<u64>>(
    v: &Value,
    dtype: DataType,
    what: &str,
) -> Result<T, ApiError> {
    let bad = || invalid(format!("{what}: {v} is not a valid {dtype} value"));
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                T::try_from(i).map_err(|_| bad())
            } else if let Some(u) = n.as_u64() {
                T::try_from(u).map_err(|_| bad())
            } else {
                Err(bad())
            }
        }
        Value::Bool(b) => T::try_from(*b as i64).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn float(v: &Value, dtype: DataType, what: &str) -> Result<f64, ApiError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| invalid(format!("{what}: {v} is not a valid {dtype} value"))),
        // NaN and infinities cannot be JSON numbers; accept them as strings, as
        // tritonclient and TF Serving clients write them.
        Value::String(s) => nonfinite_name(s)
            .ok_or_else(|| invalid(format!("{what}: {v} is not a valid {dtype} value"))),
        _ => Err(invalid(format!(
            "{what}: {} is not a valid {dtype} value",
            kind(v)
        ))),
    }
}

/// Builds a tensor of a declared datatype (KServe V2 JSON tensors).
pub fn typed_tensor(
    shape: Vec<usize>,
    leaves: &[&Value],
    dtype: DataType,
    what: &str,
) -> Result<Tensor, ApiError> {
    macro_rules! ints {
        ($variant:ident) => {
            TensorData::$variant(
                leaves
                    .iter()
                    .map(|v| number(v, dtype, what))
                    .collect::<Result<_, _>>()?,
            )
        };
    }
    let data = match dtype {
        DataType::Bool => TensorData::Bool(
            leaves
                .iter()
                .map(|v| match v {
                    Value::Bool(b) => Ok(*b),
                    other => Err(invalid(format!("{what}: {other} is not a BOOL value"))),
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::U8 => ints!(U8),
        DataType::U16 => ints!(U16),
        DataType::U32 => ints!(U32),
        DataType::U64 => ints!(U64),
        DataType::I8 => ints!(I8),
        DataType::I16 => ints!(I16),
        DataType::I32 => ints!(I32),
        DataType::I64 => ints!(I64),
        DataType::F16 => TensorData::F16(
            leaves
                .iter()
                .map(|v| {
                    crate::tensor::f16_bits_of(float(v, dtype, what)?).ok_or_else(|| {
                        invalid(format!(
                            "{what}: {v} does not fit FP16 (largest magnitude 65504)"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::F32 => TensorData::F32(
            leaves
                .iter()
                .map(|v| {
                    crate::tensor::f32_of(float(v, dtype, what)?).ok_or_else(|| {
                        invalid(format!(
                            "{what}: {v} does not fit FP32 (largest magnitude {:e})",
                            f32::MAX
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::F64 => TensorData::F64(
            leaves
                .iter()
                .map(|v| float(v, dtype, what))
                .collect::<Result<_, _>>()?,
        ),
        DataType::Bytes => TensorData::Bytes(
            leaves
                .iter()
                .map(|v| leaf_bytes(v, what))
                .collect::<Result<_, _>>()?,
        ),
    };
    Tensor::new(shape, data).map_err(|e| invalid(format!("{what}: {e}")))
}

/// A tensor (or part of one) written as JSON straight from its buffer, without
/// building a `serde_json::Value` tree first (a `Value` costs 32 bytes and an
/// allocation per element and array). FP32 elements take the fewest digits that
/// read back as the same float (TF Serving's way). Floats that are not finite become `"NaN"`,
/// `"Infinity"`, `"-Infinity"`; bytes that are not UTF-8 become `{"b64": …}`.
#[derive(Clone, Copy)]
pub struct NestedJson<'a> {
    data: &'a TensorData,
    shape: &'a [usize],
    start: usize,
    /// Bytes always as `{"b64": …}`, UTF-8 or not (TF Serving's rule for an output
    /// whose name ends in `_bytes`).
    b64: bool,
}

impl<'a> NestedJson<'a> {
    /// The whole tensor, nested by its shape.
    pub fn whole(tensor: &'a Tensor) -> NestedJson<'a> {
        NestedJson {
            data: tensor.data(),
            shape: tensor.shape(),
            start: 0,
            b64: false,
        }
    }

    /// The same, its bytes written as `{"b64": …}` whatever they hold when `yes`.
    pub fn b64_if(self, yes: bool) -> NestedJson<'a> {
        NestedJson { b64: yes, ..self }
    }

    /// Row `i` (of the first dimension), nested.
    pub fn row(tensor: &'a Tensor, i: usize) -> NestedJson<'a> {
        let rest = &tensor.shape()[1..];
        NestedJson {
            data: tensor.data(),
            shape: rest,
            start: i * rest.iter().product::<usize>(),
            b64: false,
        }
    }
}

impl serde::Serialize for NestedJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self.shape.split_first() {
            None => match self.data {
                TensorData::Bytes(v) if self.b64 => b64_json(&v[self.start], serializer),
                _ => ElementJson(self.data, self.start, true).serialize(serializer),
            },
            Some((&n, rest)) => {
                let stride: usize = rest.iter().product();
                let mut seq = serializer.serialize_seq(Some(n))?;
                for i in 0..n {
                    seq.serialize_element(&NestedJson {
                        data: self.data,
                        shape: rest,
                        start: self.start + i * stride,
                        b64: self.b64,
                    })?;
                }
                seq.end()
            }
        }
    }
}

/// A tensor's elements as one flat JSON array (KServe V2 `data`), written directly.
#[derive(Clone, Copy)]
pub struct FlatJson<'a>(pub &'a Tensor);

impl serde::Serialize for FlatJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for i in 0..self.0.len() {
            seq.serialize_element(&ElementJson(self.0.data(), i, false))?;
        }
        seq.end()
    }
}

/// `{"b64": "…"}`.
fn b64_json<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(1))?;
    map.serialize_entry(
        "b64",
        &base64::engine::general_purpose::STANDARD.encode(bytes),
    )?;
    map.end()
}

/// A float as answers write floats: a number, or `"NaN"`, `"Infinity"`,
/// `"-Infinity"` (serde writes those as `null`).
pub fn float_json(x: impl Into<f64>) -> Value {
    let x: f64 = x.into();
    if x.is_nan() {
        Value::from("NaN")
    } else if x.is_infinite() {
        Value::from(if x > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        Value::from(x)
    }
}

/// One element of a tensor; with `.2`, an FP32 element in the fewest digits that
/// read back as the same float (`1.2`), as TF Serving writes them (`WriteDecimal`),
/// else as the double it converts to (`1.2000000476837158`), as Triton's V2 JSON
/// does.
struct ElementJson<'a>(&'a TensorData, usize, bool);

impl serde::Serialize for ElementJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let float = |f: f64, serializer: S| {
            if f.is_finite() {
                serializer.serialize_f64(f)
            } else if f.is_nan() {
                serializer.serialize_str("NaN")
            } else if f > 0.0 {
                serializer.serialize_str("Infinity")
            } else {
                serializer.serialize_str("-Infinity")
            }
        };
        let i = self.1;
        match self.0 {
            TensorData::Bool(v) => serializer.serialize_bool(v[i]),
            TensorData::U8(v) => serializer.serialize_u8(v[i]),
            TensorData::U16(v) => serializer.serialize_u16(v[i]),
            TensorData::U32(v) => serializer.serialize_u32(v[i]),
            TensorData::U64(v) => serializer.serialize_u64(v[i]),
            TensorData::I8(v) => serializer.serialize_i8(v[i]),
            TensorData::I16(v) => serializer.serialize_i16(v[i]),
            TensorData::I32(v) => serializer.serialize_i32(v[i]),
            TensorData::I64(v) => serializer.serialize_i64(v[i]),
            TensorData::F16(v) => float(half::f16::from_bits(v[i]).to_f64(), serializer),
            TensorData::F32(v) if self.2 && v[i].is_finite() => serializer.serialize_f32(v[i]),
            TensorData::F32(v) => float(v[i] as f64, serializer),
            TensorData::F64(v) => float(v[i], serializer),
            TensorData::Bytes(v) => match std::str::from_utf8(&v[i]) {
                Ok(s) => serializer.serialize_str(s),
                Err(_) => b64_json(&v[i], serializer),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::predict::RowLimitOf;
    use serde_json::json;

    fn bounds(max_rows: usize, max_values: Option<usize>) -> RequestBounds {
        RequestBounds {
            max_rows,
            limit_of: RowLimitOf::Model("m".into()),
            max_values,
        }
    }

    fn read(bounds: &RequestBounds, text: &str, rows: Rows<'static>) -> Result<Value, ApiError> {
        let budget = Budget::new(bounds);
        let seed = BoundedValue {
            rows,
            ..BoundedValue::new(&budget)
        };
        parse_bounded(text.as_bytes(), seed, &budget)
    }

    fn refused(result: Result<Value, ApiError>) -> String {
        match result {
            Err(ApiError::PayloadTooLarge(message)) => message,
            other => panic!("not refused for its size: {other:?}"),
        }
    }

    /// A bounded value is the `Value` serde_json builds.
    #[test]
    fn bounded_values_read_as_serde_json_reads_them() {
        let text = r#"{"a": [1, -2, 2.5, 18446744073709551615, "x", null, true, {"b64": "AA=="}],
            "b": {"c": [[1], [2]]}, "d": 1e300}"#;
        let unbounded = bounds(usize::MAX, None);
        assert_eq!(
            read(&unbounded, text, Rows::None).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        // Trailing text is refused as `serde_json::from_slice` refuses it.
        let err = read(&unbounded, "[1] [2]", Rows::None).unwrap_err();
        assert!(
            err.to_string()
                .contains("malformed JSON body: trailing characters"),
            "{err}"
        );
    }

    /// Rows are counted as they are read: the refusal comes at the first row past
    /// the limit, before the rest of the body (malformed here) is read.
    #[test]
    fn rows_past_the_limit_are_refused_as_they_are_read() {
        let b = bounds(2, None);
        assert!(read(&b, "[[1, 2], [3, 4]]", Rows::Elements("\"instances\"")).is_ok());
        let message = refused(read(&b, "[1, 2, 3, [[[", Rows::Elements("\"instances\"")));
        assert_eq!(
            message,
            "\"instances\" has at least 3 rows, more than the 2 that model \"m\" takes in one \
             request (max_request_rows); send them in smaller requests"
        );
        // One bare row of many values is one row; lists and objects are rows.
        assert!(read(&b, "[1, 2, 3, 4, 5]", Rows::ListedRows("f")).is_ok());
        assert!(read(&b, "[[1], {\"a\": 1}]", Rows::ListedRows("f")).is_ok());
        refused(read(&b, "[[1], {\"a\": 1}, [2]]", Rows::ListedRows("f")));
        // Columnar inputs: a list's elements, or each named input's.
        assert!(read(&b, r#"{"a": [1, 2], "b": [[1], [2]]}"#, Rows::Columns("i")).is_ok());
        assert!(read(&b, r#"{"b64": "AAAA"}"#, Rows::Columns("i")).is_ok());
        let message = refused(read(
            &b,
            r#"{"a": [1, 2], "b": [1, 2, 3]}"#,
            Rows::Columns("i"),
        ));
        assert!(
            message.starts_with("input \"b\" has at least 3 rows"),
            "{message}"
        );
        refused(read(&b, "[1, 2, 3]", Rows::Columns("i")));
        // Rows of rows are not counted again.
        assert!(read(&b, "[[1, 2, 3], [4, 5, 6]]", Rows::Elements("x")).is_ok());
    }

    /// Every value (list, object, number, string) is spent from the bound.
    #[test]
    fn values_past_the_bound_are_refused() {
        let b = bounds(100, Some(5));
        assert!(read(&b, "[1, 2, 3, 4]", Rows::None).is_ok());
        let message = refused(read(&b, "[1, 2, 3, 4, 5]", Rows::None));
        assert!(
            message.contains("more values than model \"m\" takes in one request")
                && message.contains("at most 5 JSON values"),
            "{message}"
        );
        refused(read(&b, "[[], [], [], [], []]", Rows::None));
    }

    /// V2 data is refused once it holds more than its shape's elements, flat or
    /// nested, numbers or `{"b64": …}` objects, or more lists than nesting needs.
    #[test]
    fn v2_data_is_bounded_by_its_shape() {
        let b = bounds(100, None);
        let shape = [2i64, 2];
        let read = |text: &str| {
            let budget = Budget::new(&b);
            let limit = DataLimit::new(Some("x"), &shape, 4);
            let seed = BoundedValue {
                data: Some(&limit),
                ..BoundedValue::new(&budget)
            };
            parse_bounded(text.as_bytes(), seed, &budget)
        };
        for good in [
            "[1, 2, 3, 4]",
            "[[1, 2], [3, 4]]",
            r#"[{"b64": "AA=="}, {"b64": "AA=="}, {"b64": "AA=="}, {"b64": "AA=="}]"#,
            "[1, 2, 3]",
        ] {
            assert!(read(good).is_ok(), "{good}");
        }
        let many_lists = format!("[{}]", vec!["[]"; 20].join(","));
        for bad in [
            "[1, 2, 3, 4, 5]",
            "[[1, 2], [3, 4], [5, [",
            many_lists.as_str(),
        ] {
            match read(bad) {
                Err(ApiError::InvalidArgument(m)) => assert_eq!(
                    m, "input \"x\": shape [2, 2] needs 4 elements, but data has more",
                    "{bad}"
                ),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    /// A top-level object: fields skipped unread when told, a key given twice
    /// refused (at any depth with unique keys), anything else read as `None`.
    #[test]
    fn bounded_objects_read_their_fields() {
        let b = bounds(2, None);
        let object = |text: &str, unique: bool| {
            let budget = match unique {
                true => Budget::new(&b).with_unique_keys(),
                false => Budget::new(&b),
            };
            let fields = |key: &str| match key {
                "rows" => Rows::Elements("\"rows\""),
                _ => Rows::None,
            };
            parse_bounded(
                text.as_bytes(),
                BoundedObject {
                    budget: &budget,
                    fields,
                },
                &budget,
            )
        };
        let read = object(r#"{"a": {"b": 1, "b": 2}, "rows": [1]}"#, false)
            .unwrap()
            .unwrap();
        assert_eq!(Value::Object(read), json!({"a": {"b": 2}, "rows": [1]}));
        let err = object(r#"{"a": 1, "a": 2}"#, false).unwrap_err();
        assert!(err.to_string().contains("duplicate field `a`"), "{err}");
        let err = object(r#"{"a": {"b": 1, "b": 2}}"#, true).unwrap_err();
        assert!(
            err.to_string().contains("field \"b\" is given twice"),
            "{err}"
        );
        assert!(matches!(
            object(r#"{"rows": [1, 2, 3]}"#, false),
            Err(ApiError::PayloadTooLarge(_))
        ));
        for other in ["[1, {\"a\": 2}]", "3", "\"text\"", "null"] {
            assert_eq!(object(other, false).unwrap(), None, "{other}");
        }
        // Known fields into their slots, others skipped unread, null as absent.
        let budget = Budget::new(&b);
        let fields = BoundedFields {
            budget: &budget,
            fields: [("a", Rows::None), ("rows", Rows::Elements("\"rows\""))],
        };
        let text = r#"{"skip": [1, 2, 3], "rows": [1, 2], "a": null}"#;
        let slots = parse_bounded(text.as_bytes(), fields, &budget).unwrap();
        assert_eq!(slots, Some([None, Some(json!([1, 2]))]));
        let budget = Budget::new(&b);
        let fields = BoundedFields {
            budget: &budget,
            fields: [("a", Rows::None)],
        };
        let err = parse_bounded(br#"{"a": null, "a": 1}"#, fields, &budget).unwrap_err();
        assert!(err.to_string().contains("duplicate field `a`"), "{err}");
    }

    #[test]
    fn integers_above_i64_max_are_uint64_and_names_of_floats_are_floats() {
        let infer = |v: Value| {
            let (shape, leaves) = flatten(&v, "x").unwrap();
            infer_tensor(shape, &leaves, "x").map(|t| t.data().clone())
        };
        assert_eq!(
            infer(json!([[u64::MAX, 0]])).unwrap(),
            TensorData::U64(vec![u64::MAX, 0])
        );
        assert!(matches!(
            infer(json!([-1, u64::MAX])).unwrap(),
            TensorData::F64(_)
        ));
        let TensorData::F64(v) = infer(json!(["Infinity", 1, "-inf", "NaN"])).unwrap() else {
            panic!()
        };
        assert_eq!(v[..3], [f64::INFINITY, 1.0, f64::NEG_INFINITY]);
        assert!(v[3].is_nan());
        assert!(matches!(
            infer(json!(["NaN"])).unwrap(),
            TensorData::Bytes(_)
        ));
        let e = infer(json!([1, "one"])).unwrap_err().to_string();
        assert!(e.contains("mixes numbers with a string"), "{e}");
    }

    #[test]
    fn fp32_is_written_as_tf_serving_writes_it_in_nested_json_only() {
        let t = Tensor::new(vec![3], TensorData::F32(vec![1.2, 3.0, f32::INFINITY])).unwrap();
        let nested = serde_json::to_string(&NestedJson::whole(&t)).unwrap();
        assert_eq!(nested, r#"[1.2,3.0,"Infinity"]"#);
        let flat = serde_json::to_string(&FlatJson(&t)).unwrap();
        assert_eq!(flat, r#"[1.2000000476837158,3.0,"Infinity"]"#);
    }

    #[test]
    fn bare_nonfinite_words_are_quoted_outside_strings_only() {
        let q =
            |s: &str| quote_nonfinite_literals(s.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            q(r#"{"a": [NaN, -Infinity, Infinity], "b": "NaN \" NaN"}"#).unwrap(),
            r#"{"a": ["NaN", "-Infinity", "Infinity"], "b": "NaN \" NaN"}"#
        );
        assert_eq!(q(r#"{"a": "Infinity", "b": [1, -2]}"#), None);
    }

    /// Scores outside a tensor (classify, top_classes) are written as tensors'
    /// floats are: non-finite ones as strings (they were `null`).
    #[test]
    fn lone_floats_are_written_as_tensor_floats_are() {
        assert_eq!(float_json(f32::NAN), json!("NaN"));
        assert_eq!(float_json(f64::NEG_INFINITY), json!("-Infinity"));
        assert_eq!(float_json(f32::INFINITY), json!("Infinity"));
        assert_eq!(float_json(0.1f32), json!(0.1f32));
        assert_eq!(float_json(0.1f64).to_string(), "0.1");
        assert_eq!(float_json(-0.25f32), json!(-0.25));
    }

    /// JSON numbers are read correctly rounded, as Python and ONNX Runtime read
    /// them (serde_json's `float_roundtrip`): its fast path was one unit in the last
    /// place off for about one double in ten, so FP64 models answered otherwise
    /// over JSON than over binary tensors or gRPC.
    #[test]
    fn json_numbers_are_read_to_the_nearest_double() {
        let texts = [
            "0.09525102111858402",
            "-0.09068346387644875",
            "0.07169369180973592",
            "-0.04207814273366475",
            "-0.0711489833285125",
            "-0.07644155238432633",
            "-0.03830363517961313",
            "0.06322527182400628",
            "-0.0638547240152125",
            "0.016320032732493245",
        ];
        let json = format!("[{}]", texts.join(","));
        let value: Value = serde_json::from_str(&json).unwrap();
        let (_, leaves) = flatten(&value, "x").unwrap();
        let tensor = typed_tensor(vec![texts.len()], &leaves, DataType::F64, "x").unwrap();
        let TensorData::F64(read) = tensor.data() else {
            panic!("{tensor:?}")
        };
        for (text, got) in texts.iter().zip(read) {
            let want: f64 = text.parse().unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "{text}: {got:e} != {want:e}");
        }
    }

    #[test]
    fn nested_arrays_become_shape_and_leaves() {
        let v = json!([[1, 2, 3], [4, 5, 6]]);
        let (shape, leaves) = flatten(&v, "x").unwrap();
        assert_eq!(shape, vec![2, 3]);
        let t = infer_tensor(shape, &leaves, "x").unwrap();
        assert_eq!(t.data(), &TensorData::I64(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(serde_json::to_value(NestedJson::whole(&t)).unwrap(), v);
        assert_eq!(
            serde_json::to_value(NestedJson::row(&t, 1)).unwrap(),
            json!([4, 5, 6])
        );
    }

    #[test]
    fn tensors_are_written_as_json() {
        let text = |v: &dyn erased::Ser| v.to_text();
        let f = Tensor::new(
            vec![2, 3],
            TensorData::F32(vec![1.5, f32::NAN, -0.25, f32::INFINITY, 3.0, 0.5]),
        )
        .unwrap();
        assert_eq!(
            text(&NestedJson::whole(&f)),
            r#"[[1.5,"NaN",-0.25],["Infinity",3.0,0.5]]"#
        );
        assert_eq!(text(&NestedJson::row(&f, 1)), r#"["Infinity",3.0,0.5]"#);
        assert_eq!(
            text(&FlatJson(&f)),
            r#"[1.5,"NaN",-0.25,"Infinity",3.0,0.5]"#
        );
        let i = Tensor::new(vec![3], TensorData::I64(vec![-1, 0, i64::MAX])).unwrap();
        assert_eq!(text(&NestedJson::whole(&i)), "[-1,0,9223372036854775807]");
        let b = Tensor::new(
            vec![2, 1],
            TensorData::Bytes(vec![b"setosa".to_vec(), vec![0xff, 0x00]]),
        )
        .unwrap();
        assert_eq!(
            text(&NestedJson::whole(&b)),
            r#"[["setosa"],[{"b64":"/wA="}]]"#
        );
        let t = Tensor::new(
            vec![2, 2, 1],
            TensorData::Bool(vec![true, false, false, true]),
        )
        .unwrap();
        assert_eq!(text(&NestedJson::row(&t, 1)), "[[false],[true]]");
        let scalar = Tensor::new(vec![], TensorData::F64(vec![f64::NEG_INFINITY])).unwrap();
        assert_eq!(text(&NestedJson::whole(&scalar)), r#""-Infinity""#);
        let empty = Tensor::new(vec![0, 3], TensorData::U8(vec![])).unwrap();
        assert_eq!(text(&NestedJson::whole(&empty)), "[]");
        assert_eq!(text(&FlatJson(&empty)), "[]");
    }

    mod erased {
        pub trait Ser {
            fn to_text(&self) -> String;
        }
        impl<T: serde::Serialize> Ser for T {
            fn to_text(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }

    #[test]
    fn ragged_and_mixed_arrays_are_refused() {
        assert!(flatten(&json!([[1, 2], [3]]), "x").is_err());
        assert!(flatten(&json!([[1, 2], 3]), "x").is_err());
        let v = json!([1, "a"]);
        let (s, l) = flatten(&v, "x").unwrap();
        assert!(infer_tensor(s, &l, "x").is_err());
    }

    #[test]
    fn typed_leaves_are_checked() {
        let v = json!([1, 2.5]);
        let (s, l) = flatten(&v, "x").unwrap();
        assert!(typed_tensor(s.clone(), &l, DataType::I64, "x").is_err());
        let t = typed_tensor(s, &l, DataType::F32, "x").unwrap();
        assert_eq!(t.data(), &TensorData::F32(vec![1.0, 2.5]));
        // Finite JSON values past FP32's range are refused, not turned into inf;
        // the largest FP32 and explicit infinities pass.
        for v in [json!([1, 1e39]), json!([-3.5e38, 1])] {
            let (s, l) = flatten(&v, "x").unwrap();
            let err = typed_tensor(s, &l, DataType::F32, "x").unwrap_err();
            assert!(err.to_string().contains("does not fit FP32"), "{err}");
        }
        let v = json!([3.4028235e38, "-Infinity"]);
        let (s, l) = flatten(&v, "x").unwrap();
        let t = typed_tensor(s, &l, DataType::F32, "x").unwrap();
        assert_eq!(
            t.data(),
            &TensorData::F32(vec![f32::MAX, f32::NEG_INFINITY])
        );
        let v = json!([300]);
        let (s, l) = flatten(&v, "x").unwrap();
        assert!(typed_tensor(s, &l, DataType::U8, "x").is_err());
    }

    #[test]
    fn floats_and_bytes_encode_readably() {
        let t = Tensor::new(vec![2], TensorData::F32(vec![0.5, f32::NAN])).unwrap();
        assert_eq!(
            serde_json::to_value(FlatJson(&t)).unwrap(),
            json!([0.5, "NaN"])
        );
        let b = Tensor::new(vec![2], TensorData::Bytes(vec![b"ok".to_vec(), vec![0xff]])).unwrap();
        assert_eq!(
            serde_json::to_value(FlatJson(&b)).unwrap(),
            json!(["ok", {"b64": "/w=="}])
        );
        let v = json!([{"b64": "/w=="}]);
        let (s, l) = flatten(&v, "x").unwrap();
        assert_eq!(
            infer_tensor(s, &l, "x").unwrap().data(),
            &TensorData::Bytes(vec![vec![0xff]])
        );
    }
}
