//! A JSON body read within a request's bounds (`crate::api::bounds::RequestBounds`):
//! rows past the limit and values past what the model can take are refused while
//! the body is parsed, before the tree of `Value`s for the rest is built.

use std::borrow::Cow;
use std::cell::Cell;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::invalid;
use crate::api::bounds::{too_many_rows, RequestBounds};
use crate::api::ApiError;

/// A request's bounds (`crate::api::bounds::RequestBounds`) applied to a JSON body
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::bounds::RowLimitOf;
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
}
