//! JSON ↔ tensor conversion shared by the REST adapters and stored warm-up requests.
//!
//! Decoding: nested JSON arrays become a shape and a flat buffer. Without a
//! declared datatype (TF Serving, the simple API), numbers become INT64 when every
//! one is an integer and FP64 otherwise, booleans BOOL, strings BYTES; the api
//! layer then casts to the model's dtype. Where the model's input is known, it
//! only names what does not fit it (text among the numbers of a numeric input).
//! With a declared datatype (KServe V2), leaves are converted to it directly, and
//! the tensor is [`Tensor::declared`]: a BOOL one is no number.
//!
//! Reading a body within a request's bounds, before any tensor is built, is
//! [`bounded`]'s; writing answers from tensors is [`encode`]'s. Their items are
//! re-exported here.

mod bounded;
mod encode;

pub use bounded::*;
pub use encode::*;

use base64::Engine;
use serde_json::Value;

use crate::api::ApiError;
use crate::tensor::{DataType, Tensor, TensorData, TensorSpec};

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidArgument(msg.into())
}

/// The most leaves [`flatten`] makes room for before it has seen them.
const PREALLOCATED_LEAVES: usize = 1 << 16;

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
    // The shape is the first element's at each level: a body of a few hundred
    // bytes (2 elements at each of 50 levels, all but the first a scalar) names
    // 2^50 leaves, so the count is trusted only up to what a small body could hold.
    let claimed = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .unwrap_or(usize::MAX);
    let mut leaves = Vec::with_capacity(claimed.min(PREALLOCATED_LEAVES));
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

/// Decodes one JSON leaf that is a string or `{"b64": "..."}` into bytes. A bare
/// NaN or infinity (in a [`Literals::Quoted`] body) is a number, never text.
fn leaf_bytes(v: &Value, what: &str, literals: Literals) -> Result<Vec<u8>, ApiError> {
    let word = literals
        .bare_word(v)
        .or_else(|| v.get("b64").and_then(|b64| literals.bare_word(b64)));
    if let Some(word) = word {
        return Err(invalid(format!(
            "{what}: {word}, unquoted, is a number, not text: a text value cannot be \
             missing (there is no missing string to send), and \"{word}\" in quotes is \
             the text {word}"
        )));
    }
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

/// What a JSON value is, in an error message's words ("a list", "a string").
pub(crate) fn kind(v: &Value) -> &'static str {
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

/// The mark that [`quote_nonfinite_literals`] puts before each word it quotes, so
/// that the string it makes (`"\u0000NaN"`) is told apart from a client's text
/// `"NaN"`, which stays text.
const BARE_MARK: char = '\u{0}';

/// [`BARE_MARK`] as JSON text writes it (JSON forbids it raw in a string).
const BARE_MARK_ESCAPE: &[u8] = b"\\u0000";

/// `body` with each bare `NaN`, `Infinity` and `-Infinity` outside strings quoted
/// and marked (`"\u0000NaN"`, [`BARE_MARK`]), to be read as [`Literals::Quoted`];
/// `None` when it has none, or when a string of its own begins with the mark (the
/// mark could not tell the two apart then: the caller answers the body's own parse
/// error). TF Serving's parser takes bare ones as numbers (`kParseNanAndInfFlag`)
/// and Python's `json.dumps` writes them.
pub fn quote_nonfinite_literals(body: &[u8]) -> Option<Vec<u8>> {
    const WORDS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    let mut out = Vec::with_capacity(body.len() + 16);
    let (mut i, mut in_string, mut changed) = (0, false, false);
    // Where the string being read began (just past its opening quote).
    let mut string_start = 0;
    'bytes: while i < body.len() {
        let b = body[i];
        if in_string {
            match b {
                b'\\' => {
                    if i == string_start && body[i..].starts_with(BARE_MARK_ESCAPE) {
                        return None;
                    }
                    out.extend_from_slice(&body[i..(i + 2).min(body.len())]);
                    i += 2;
                    continue;
                }
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
            string_start = i + 1;
        } else {
            for word in WORDS {
                if body[i..].starts_with(word) {
                    out.push(b'"');
                    out.extend_from_slice(BARE_MARK_ESCAPE);
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

/// How a body's strings are read: whether some are bare NaN / ±Infinity that
/// [`quote_nonfinite_literals`] quoted and marked.
///
/// Invariant: a marked string is only ever looked at in a `Quoted` body, and never
/// leaves this module as text: [`infer_tensor`] reads it as its float, refuses it
/// as text (a bare NaN given for a BYTES input is a 400, not the text "NaN"), and
/// an adapter refuses the body where it sits in a field that is not a tensor
/// ([`Literals::holds_bare`]). In a `Strict` body every string is the client's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Literals {
    /// A strictly valid JSON body, read as it is.
    Strict,
    /// A body as [`quote_nonfinite_literals`] rewrote it.
    Quoted,
}

impl Literals {
    /// The word (`NaN`, `Infinity`, `-Infinity`) of a bare literal that
    /// [`quote_nonfinite_literals`] quoted; `None` for any other value, and for every
    /// value of a strict body.
    fn bare_word(self, v: &Value) -> Option<&str> {
        if self == Literals::Strict {
            return None;
        }
        let word = v.as_str()?.strip_prefix(BARE_MARK)?;
        matches!(word, "NaN" | "Infinity" | "-Infinity").then_some(word)
    }

    /// The float of a bare literal.
    fn bare(self, v: &Value) -> Option<f64> {
        self.bare_word(v).and_then(nonfinite_name)
    }

    /// Whether `v` holds, at any depth, a bare literal: a field that is not a tensor
    /// (a signature name, an option) does not take one.
    pub fn holds_bare(self, v: &Value) -> bool {
        match v {
            Value::String(_) => self.bare_word(v).is_some(),
            Value::Array(items) => items.iter().any(|v| self.holds_bare(v)),
            Value::Object(fields) => fields.values().any(|v| self.holds_bare(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }

    /// [`kind`], a bare literal being a number.
    fn kind(self, v: &Value) -> &'static str {
        match self.bare_word(v) {
            Some(_) => "a number",
            None => kind(v),
        }
    }
}

/// A leaf as an error message shows it: its JSON, cut short past 64 characters,
/// or its kind where it holds a bare literal (whose mark must not leak).
fn shown(v: &Value, literals: Literals) -> String {
    if literals.holds_bare(v) {
        return kind(v).to_string();
    }
    let text = v.to_string();
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Builds a tensor from leaves, inferring the dtype from the JSON values: numbers
/// are INT64 when all are integers that fit, UINT64 when some are above
/// `i64::MAX` (and none negative), else FP64, which may also hold NaN and the
/// infinities: bare (in a [`Literals::Quoted`] body), or written as strings
/// ([`nonfinite_name`]) among numbers. Strings alone are text, `["NaN"]` too; bare
/// literals alone are numbers, and refused beside text.
///
/// `takes` is the model input the tensor is for, where the caller knows it: it
/// decides what a mix of numbers and text is a mistake of, whatever comes first.
/// For a numeric input the text is (a string or `{"b64": ...}`, named as no value
/// of its dtype; a lone `["5.1"]` too); for a BYTES input the numbers are; for any
/// other or none, the leaves "mix numbers with a string".
pub fn infer_tensor(
    shape: Vec<usize>,
    leaves: &[&Value],
    what: &str,
    literals: Literals,
    takes: Option<&TensorSpec>,
) -> Result<Tensor, ApiError> {
    // Text: a string that is neither a bare literal nor a float's name, or an
    // object (`{"b64": ...}`, or one no tensor takes).
    let text = |v: &Value| match v {
        Value::String(s) => literals.bare(v).is_none() && nonfinite_name(s).is_none(),
        Value::Object(_) => true,
        _ => false,
    };
    if let Some(spec) = takes.filter(|s| !matches!(s.dtype, DataType::Bool | DataType::Bytes)) {
        if let Some(v) = leaves.iter().copied().find(|v| text(v)) {
            return Err(invalid(format!(
                "{what}: {} is not a valid {} value (the input {:?} takes numbers)",
                shown(v, literals),
                spec.dtype,
                spec.name
            )));
        }
    }
    let first = leaves.first().copied().unwrap_or(&Value::Null);
    // Text beside numbers: for a BYTES input the numbers are the mistake (the text
    // path names them); for an input not known to take text, the mix is.
    let first = if takes.is_some_and(|s| s.dtype == DataType::Bytes) {
        leaves
            .iter()
            .copied()
            .find(|v| {
                matches!(v, Value::String(_) | Value::Object(_)) && literals.bare(v).is_none()
            })
            .unwrap_or(first)
    } else {
        match leaves.iter().copied().find(|v| text(v)) {
            Some(t) if leaves.iter().any(|v| v.is_number()) => {
                return Err(invalid(format!("{what}: mixes numbers with {}", kind(t))))
            }
            _ => first,
        }
    };
    // A bare literal is a number: when the leaves are not all numbers, the first leaf
    // that is neither says what they were meant to be (text: then `leaf_bytes`
    // refuses the bare literal).
    let first = match literals.bare(first) {
        Some(_) => leaves
            .iter()
            .copied()
            .find(|v| !v.is_number() && literals.bare(v).is_none())
            .unwrap_or(first),
        None => first,
    };
    let nonfinite = |v: &Value| {
        literals
            .bare(v)
            .or_else(|| v.as_str().and_then(nonfinite_name))
    };
    let numbers = leaves
        .iter()
        .any(|v| v.is_number() || literals.bare(v).is_some())
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
                    v.as_bool().ok_or_else(|| {
                        invalid(format!("{what}: mixes booleans with {}", literals.kind(v)))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::String(_) | Value::Object(_) => TensorData::Bytes(
            leaves
                .iter()
                .map(|v| leaf_bytes(v, what, literals))
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

/// Builds a tensor of a declared datatype (KServe V2 JSON tensors, warm-up
/// requests): from a strictly valid JSON body ([`Literals::Strict`]). The tensor is
/// [`Tensor::declared`], so a BOOL one is refused for a numeric input.
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
                .map(|v| leaf_bytes(v, what, Literals::Strict))
                .collect::<Result<_, _>>()?,
        ),
    };
    Tensor::new(shape, data)
        .map(Tensor::declared)
        .map_err(|e| invalid(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_above_i64_max_are_uint64_and_names_of_floats_are_floats() {
        let infer = |v: Value| {
            let (shape, leaves) = flatten(&v, "x").unwrap();
            infer_tensor(shape, &leaves, "x", Literals::Strict, None).map(|t| t.data().clone())
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

    /// Text among numbers: for a numeric input the text is named as no value of its
    /// dtype, first or last (the numbers were blamed when text came first); for a
    /// BYTES input the number is; for an input not known, the mix is, either way.
    #[test]
    fn text_among_numbers_is_said_by_the_input_it_is_for() {
        let spec = |dtype| TensorSpec {
            name: "input".into(),
            dtype,
            shape: vec![-1, 4],
        };
        let infer = |v: Value, takes: Option<DataType>| {
            let (shape, leaves) = flatten(&v, "instances").unwrap();
            let spec = takes.map(spec);
            infer_tensor(shape, &leaves, "instances", Literals::Strict, spec.as_ref())
                .map_err(|e| e.to_string())
        };
        let fp32 = Some(DataType::F32);
        for (v, value) in [
            (json!([["5.1", 3.5, 1.4, 0.2]]), r#""5.1""#),
            (json!([[1, 2, 3, "4"]]), r#""4""#),
            (
                json!([[{"b64": "AAAA"}, 3.5, 1.4, 0.2]]),
                r#"{"b64":"AAAA"}"#,
            ),
            (json!([["5.1"]]), r#""5.1""#),
        ] {
            let e = infer(v.clone(), fp32).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "instances: {value} is not a valid FP32 value (the input \"input\" takes numbers)"
                ),
                "{v}"
            );
        }
        let e = infer(json!([["x".repeat(500), 1]]), Some(DataType::I64)).unwrap_err();
        assert!(e.contains("x… is not a valid INT64"), "{e}");
        assert!(e.len() < 200, "{e}");
        // Numbers, NaN by name, and booleans still pass for a numeric input.
        assert!(infer(json!([[1, "NaN", 2.5, 0]]), fp32).is_ok());
        assert!(infer(json!([true, false]), fp32).is_ok());
        for (v, takes) in [
            (json!([["5.1", 3.5]]), None),
            (json!([[3.5, "5.1"]]), None),
            (json!([["5.1", 3.5]]), Some(DataType::Bool)),
        ] {
            let e = infer(v.clone(), takes).unwrap_err();
            assert_eq!(e, "instances: mixes numbers with a string", "{v} {takes:?}");
        }
        for v in [json!([["a", 1]]), json!([[1, "a"]])] {
            let e = infer(v.clone(), Some(DataType::Bytes)).unwrap_err();
            assert_eq!(e, "instances: expected a string, found a number", "{v}");
        }
    }

    #[test]
    fn bare_nonfinite_words_are_quoted_outside_strings_only() {
        let q =
            |s: &str| quote_nonfinite_literals(s.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            q(r#"{"a": [NaN, -Infinity, Infinity], "b": "NaN \" NaN"}"#).unwrap(),
            r#"{"a": ["\u0000NaN", "\u0000-Infinity", "\u0000Infinity"], "b": "NaN \" NaN"}"#
        );
        assert_eq!(q(r#"{"a": "Infinity", "b": [1, -2]}"#), None);
        // A string of the body's own that begins with the mark: nothing is quoted (the
        // caller answers the body's own parse error); the mark further in, or an
        // escaped backslash before "u0000", is plain text.
        assert_eq!(q(r#"{"a": [NaN], "b": "\u0000NaN"}"#), None);
        assert!(q(r#"{"a": [NaN], "b": "x\u0000NaN", "c": "\\u0000"}"#).is_some());
    }

    /// A bare NaN or infinity (TF Serving REST, quoted by `quote_nonfinite_literals`)
    /// is a number: a float wherever floats are read, refused where text is (it was
    /// the text "NaN": a scikit-learn text column answered for the category "NaN",
    /// an identity model echoed "NaN"). The string "NaN" stays text, and a strict
    /// body's strings are all text, even one that looks marked.
    #[test]
    fn bare_nonfinite_words_are_numbers_and_never_text() {
        let parse = |body: &str| -> (Value, Literals) {
            match quote_nonfinite_literals(body.as_bytes()) {
                Some(quoted) => (serde_json::from_slice(&quoted).unwrap(), Literals::Quoted),
                None => (serde_json::from_str(body).unwrap(), Literals::Strict),
            }
        };
        let what = "input \"city\"";
        let infer = |body: &str| {
            let (v, literals) = parse(body);
            let (shape, leaves) = flatten(&v, what)?;
            infer_tensor(shape, &leaves, what, literals, None)
        };
        for body in [
            "[NaN, Infinity]",
            "[NaN, 1.5]",
            "[-Infinity]",
            r#"[NaN, "Infinity"]"#,
        ] {
            let t = infer(body).unwrap();
            let TensorData::F64(v) = t.data() else {
                panic!("{body}: {t:?}")
            };
            assert!(v[0].is_nan() || v[0] == f64::NEG_INFINITY, "{body}: {v:?}");
        }
        assert_eq!(
            infer(r#"["NaN", "Infinity", "\u0000NaN"]"#).unwrap().data(),
            &TensorData::Bytes(vec![
                b"NaN".to_vec(),
                b"Infinity".to_vec(),
                b"\0NaN".to_vec()
            ])
        );
        // Text beside a bare literal, either side, or inside {"b64": ...}.
        for body in [
            r#"["paris", NaN]"#,
            r#"[NaN, "paris"]"#,
            r#"[Infinity, {"b64": "AA=="}]"#,
            r#"[{"b64": NaN}]"#,
        ] {
            let e = infer(body).unwrap_err().to_string();
            assert!(
                e.contains("input \"city\": ")
                    && e.contains("unquoted, is a number, not text")
                    && e.contains("cannot be missing"),
                "{body}: {e}"
            );
            assert!(!e.contains('\0') && !e.contains("u0000"), "{body}: {e}");
        }
        let e = infer("[true, NaN]").unwrap_err().to_string();
        assert!(e.contains("mixes booleans with a number"), "{e}");
        // Fields that are not tensors see them through `holds_bare`.
        let (v, literals) = parse(r#"{"k": [1, {"x": NaN}]}"#);
        assert!(literals.holds_bare(&v));
        let (v, literals) = parse(r#"{"k": ["NaN", 1], "t": NaN}"#);
        assert!(!literals.holds_bare(&v["k"]));
        assert!(!Literals::Strict.holds_bare(&v));
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
        let t = infer_tensor(shape, &leaves, "x", Literals::Strict, None).unwrap();
        assert_eq!(t.data(), &TensorData::I64(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(serde_json::to_value(NestedJson::whole(&t)).unwrap(), v);
        assert_eq!(
            serde_json::to_value(NestedJson::row(&t, 1)).unwrap(),
            json!([4, 5, 6])
        );
    }

    #[test]
    fn ragged_and_mixed_arrays_are_refused() {
        assert!(flatten(&json!([[1, 2], [3]]), "x").is_err());
        assert!(flatten(&json!([[1, 2], 3]), "x").is_err());
        let v = json!([1, "a"]);
        let (s, l) = flatten(&v, "x").unwrap();
        assert!(infer_tensor(s, &l, "x", Literals::Strict, None).is_err());
    }

    /// Was: the shape the first elements name (2 at each of 50 levels: 2^50
    /// leaves) was allocated before the array was found ragged, and the process
    /// aborted on a 215-byte body; and 2 at each of 70 levels overflowed.
    #[test]
    fn a_deep_ragged_array_is_refused_without_allocating_its_claimed_shape() {
        for depth in [50, 70] {
            let mut text = "0".to_string();
            for _ in 0..depth {
                text = format!("[{text},0]");
            }
            let v: Value = serde_json::from_str(&text).unwrap();
            let e = flatten(&v, "instances").unwrap_err();
            assert!(e.to_string().contains("not a rectangular array"), "{e}");
        }
    }

    #[test]
    fn typed_leaves_are_checked() {
        let v = json!([1, 2.5]);
        let (s, l) = flatten(&v, "x").unwrap();
        assert!(typed_tensor(s.clone(), &l, DataType::I64, "x").is_err());
        let t = typed_tensor(s, &l, DataType::F32, "x").unwrap();
        assert_eq!(t.data(), &TensorData::F32(vec![1.0, 2.5]));
        // A declared datatype: a BOOL tensor is no number.
        assert!(t.is_declared());
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
            infer_tensor(s, &l, "x", Literals::Strict, None)
                .unwrap()
                .data(),
            &TensorData::Bytes(vec![vec![0xff]])
        );
    }
}
