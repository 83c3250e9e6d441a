//! JSON-lines files read as a source: one object per line, bounded in length.

use std::fs::File;
use std::io::{BufRead, BufReader};

use super::super::{IoError, Source, Value};
use super::{open, MAX_LINE_BYTES};
use crate::jobs::spec::FileSpec;

/// One JSON object per line; the columns are the first object's keys, a key missing
/// from a later line is null.
pub struct JsonLinesSource {
    reader: BufReader<File>,
    columns: Vec<String>,
    /// The first row, read to learn the columns.
    first: Option<Vec<Value>>,
    /// The first row's line.
    first_line: u64,
    line: u64,
    /// The line of each row of the last batch, for a message naming it.
    batch_lines: Vec<u64>,
    read: u64,
    size: u64,
    name: String,
    buf: String,
}

impl JsonLinesSource {
    pub fn open(spec: &FileSpec) -> Result<JsonLinesSource, IoError> {
        let (file, size) = open(spec)?;
        let mut source = JsonLinesSource {
            reader: BufReader::new(file),
            columns: Vec::new(),
            first: None,
            first_line: 0,
            line: 0,
            batch_lines: Vec::new(),
            read: 0,
            size,
            name: spec.name.clone(),
            buf: String::new(),
        };
        if let Some(object) = source.next_object()? {
            source.columns = object.keys().cloned().collect();
            source.first = Some(source.row(object)?);
            source.first_line = source.line;
        }
        if source.columns.is_empty() {
            return Err(IoError(format!("{:?} has no rows (empty data)", spec.name)));
        }
        Ok(source)
    }

    fn next_object(
        &mut self,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, IoError> {
        loop {
            self.buf.clear();
            let n = std::io::Read::take(&mut self.reader, MAX_LINE_BYTES + 1)
                .read_line(&mut self.buf)
                .map_err(|e| IoError(format!("{:?} line {}: {e}", self.name, self.line + 1)))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            self.read += n as u64;
            if n as u64 > MAX_LINE_BYTES {
                return Err(IoError(format!(
                    "{:?} line {}: longer than {MAX_LINE_BYTES} bytes",
                    self.name, self.line
                )));
            }
            let text = self.line_text();
            if text.is_empty() {
                continue;
            }
            return match serde_json::from_str::<JsonLine>(text) {
                Ok(JsonLine::Object(o)) => Ok(Some(o)),
                Ok(JsonLine::Repeated(key)) => Err(IoError(format!(
                    "{:?} line {}: key {key:?} appears twice in the object (a row has one \
                     value per column)",
                    self.name, self.line
                ))),
                Ok(JsonLine::Other) => Err(IoError(format!(
                    "{:?} line {}: not a JSON object",
                    self.name, self.line
                ))),
                Err(e) => Err(IoError(format!(
                    "{:?} line {}: not JSON ({e})",
                    self.name, self.line
                ))),
            };
        }
    }

    /// The line last read (in `buf`), trimmed. A byte-order mark before the first
    /// line (as some Windows tools write UTF-8) is no part of the JSON: skipped, as
    /// the CSV source skips it.
    fn line_text(&self) -> &str {
        match self.line {
            1 => self.buf.strip_prefix('\u{feff}').unwrap_or(&self.buf),
            _ => &self.buf,
        }
        .trim()
    }

    /// The cells of `object`, the line last read (still in `buf`), in column order.
    fn row(
        &self,
        mut object: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<Value>, IoError> {
        // The line's values as written, parsed again only for a row with an
        // integer beyond i64 that serde_json could only read as a float.
        let mut raw: Option<Option<RawObject>> = None;
        self.columns
            .iter()
            .map(|c| match object.remove(c) {
                None | Some(serde_json::Value::Null) => Ok(Value::Null),
                Some(serde_json::Value::Bool(b)) => Ok(Value::Bool(b)),
                Some(serde_json::Value::Number(n)) => Ok(if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    // Past i64: its digits, as text (a cell has no wider integer).
                    Value::Text(u.to_string())
                } else {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    let mut digits = None;
                    if f.fract() == 0.0 && f.abs() >= BEYOND_INTEGERS {
                        // Past u64 (or below i64): its digits when it is written
                        // as an integer, rather than a float's 17 of them.
                        digits = raw
                            .get_or_insert_with(|| serde_json::from_str(self.line_text()).ok())
                            .as_ref()
                            .and_then(|o| o.get(c))
                            .map(|v| v.get())
                            .filter(|text| is_integer_literal(text));
                    }
                    match digits {
                        Some(text) => Value::Text(text.to_string()),
                        None => Value::Float(f),
                    }
                }),
                Some(serde_json::Value::String(s)) => Ok(Value::Text(s)),
                Some(_) => Err(IoError(format!(
                    "{:?} line {}: column {c:?} holds a list or an object, not a value",
                    self.name, self.line
                ))),
            })
            .collect()
    }
}

/// A JSON line as read: an object whose keys are all different, one that gives
/// a key twice (serde_json's map would keep the last value without a word, where a
/// CSV header naming a column twice is refused), or another value.
enum JsonLine {
    Object(serde_json::Map<String, serde_json::Value>),
    Repeated(String),
    Other,
}

impl<'de> serde::Deserialize<'de> for JsonLine {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<JsonLine, D::Error> {
        struct LineVisitor;
        impl<'de> serde::de::Visitor<'de> for LineVisitor {
            type Value = JsonLine;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonLine, A::Error> {
                let mut object = serde_json::Map::new();
                let mut repeated = None;
                // Read to the end even past a repeated key: the rest must be JSON.
                while let Some(key) = map.next_key::<String>()? {
                    let value: serde_json::Value = map.next_value()?;
                    if object.contains_key(&key) {
                        repeated.get_or_insert(key);
                    } else {
                        object.insert(key, value);
                    }
                }
                Ok(match repeated {
                    Some(key) => JsonLine::Repeated(key),
                    None => JsonLine::Object(object),
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<JsonLine, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(JsonLine::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<JsonLine, E> {
                Ok(JsonLine::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<JsonLine, E> {
                Ok(JsonLine::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<JsonLine, E> {
                Ok(JsonLine::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<JsonLine, E> {
                Ok(JsonLine::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<JsonLine, E> {
                Ok(JsonLine::Other)
            }
            fn visit_unit<E>(self) -> Result<JsonLine, E> {
                Ok(JsonLine::Other)
            }
        }
        deserializer.deserialize_any(LineVisitor)
    }
}

/// A JSON line's members as written (`serde_json`'s `raw_value`).
type RawObject<'a> = std::collections::BTreeMap<String, &'a serde_json::value::RawValue>;

/// Magnitude from which serde_json, which reads integers up to u64 exactly, reads
/// one as a float: 2^63 (a negative one past i64) and more.
const BEYOND_INTEGERS: f64 = 9_223_372_036_854_775_808.0;

/// Whether a JSON number is written as an integer (`-123`), not with a fraction or
/// an exponent: such a number past u64 is kept as its digits, not rounded.
fn is_integer_literal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

impl Source for JsonLinesSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Vec<Value>>>, IoError> {
        let mut rows = Vec::with_capacity(max);
        self.batch_lines.clear();
        if let Some(first) = self.first.take() {
            rows.push(first);
            self.batch_lines.push(self.first_line);
        }
        while rows.len() < max {
            match self.next_object()? {
                Some(object) => {
                    rows.push(self.row(object)?);
                    self.batch_lines.push(self.line);
                }
                None => break,
            }
        }
        Ok((!rows.is_empty()).then_some(rows))
    }

    fn fraction(&self) -> Option<f64> {
        (self.size > 0).then(|| (self.read as f64 / self.size as f64).min(1.0))
    }

    fn describe_position(&self) -> String {
        format!("{:?} line {}", self.name, self.line)
    }

    fn describe_batch_row(&self, i: usize) -> Option<String> {
        Some(format!("{:?} line {}", self.name, self.batch_lines.get(i)?))
    }
}
