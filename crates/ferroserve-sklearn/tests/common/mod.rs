//! Shared test helpers: the JSON form of a `Value` that the fixture generators
//! (`tests/fixtures/make_pickle_fixtures.py`) write as expected output.

#![allow(dead_code)]

use std::path::PathBuf;

use ferroserve_sklearn::value::{ArrayData, DType, Value};
use serde_json::{json, Value as Json};

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn float(f: f64) -> Json {
    if f.is_nan() {
        json!({"float": "nan"})
    } else if f.is_infinite() {
        json!({"float": if f > 0.0 { "inf" } else { "-inf" }})
    } else {
        json!(f)
    }
}

/// Big ints that still fit u64 are written as plain numbers, as Python's JSON does.
fn bigint(bytes: &[u8]) -> Json {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let significant = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    if !negative && significant <= 8 {
        let mut buf = [0u8; 8];
        buf[..significant].copy_from_slice(&bytes[..significant]);
        return json!(u64::from_le_bytes(buf));
    }
    json!({"bigint_le": hex(bytes)})
}

pub fn dtype_name(dtype: &DType) -> String {
    match dtype {
        DType::Bool => "bool".into(),
        DType::I8 => "int8".into(),
        DType::I16 => "int16".into(),
        DType::I32 => "int32".into(),
        DType::I64 => "int64".into(),
        DType::U8 => "uint8".into(),
        DType::U16 => "uint16".into(),
        DType::U32 => "uint32".into(),
        DType::U64 => "uint64".into(),
        DType::F32 => "float32".into(),
        DType::F64 => "float64".into(),
        DType::Object => "object".into(),
        DType::Unicode(n) => format!("U{n}"),
        DType::Bytes(n) => format!("S{n}"),
        DType::Record(_) => "record".into(),
    }
}

fn elements(data: &ArrayData) -> Json {
    match data {
        ArrayData::Bool(v) => json!(v),
        ArrayData::Int(v) => json!(v),
        ArrayData::UInt(v) => json!(v),
        ArrayData::Float(v) => Json::Array(v.iter().map(|&f| float(f)).collect()),
        ArrayData::Str(v) => json!(v),
        ArrayData::Bytes(v) => Json::Array(v.iter().map(|b| json!({"bytes": hex(b)})).collect()),
        ArrayData::Object(v) => Json::Array(v.iter().map(to_json).collect()),
        ArrayData::Record(columns) => json!({"record": columns
            .iter()
            .map(|(name, column)| json!([name, elements(column)]))
            .collect::<Vec<_>>()}),
    }
}

pub fn to_json(value: &Value) -> Json {
    match value {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::BigInt(bytes) => bigint(bytes),
        Value::Float(f) => float(*f),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!({"bytes": hex(b)}),
        Value::List(items) => json!({"list": items.iter().map(to_json).collect::<Vec<_>>()}),
        Value::Tuple(items) => json!({"tuple": items.iter().map(to_json).collect::<Vec<_>>()}),
        Value::Set(items) => json!({"set": items.iter().map(to_json).collect::<Vec<_>>()}),
        Value::Dict(pairs) => json!({"dict": pairs
            .iter()
            .map(|(k, v)| json!([to_json(k), to_json(v)]))
            .collect::<Vec<_>>()}),
        Value::Object {
            module,
            name,
            args,
            state,
        } => json!({"object": [
            module,
            name,
            args.iter().map(to_json).collect::<Vec<_>>(),
            state.as_deref().map_or(Json::Null, to_json),
        ]}),
        Value::Array(array) => json!({"array": {
            "dtype": dtype_name(&array.dtype),
            "shape": array.shape,
            "data": elements(&array.data),
        }}),
        Value::DType(dtype) => json!({"dtype": dtype_name(dtype)}),
    }
}

/// A fixture's `"columns"` input (`[{"name", "kind": "numeric" | "string", "values"}]`)
/// as the crate's named columns; null numbers are NaN, null strings `None`.
pub fn fixture_columns(columns: &Json) -> Vec<(String, ferroserve_sklearn::Column)> {
    use ferroserve_sklearn::Column;
    columns
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            let values = c["values"].as_array().unwrap();
            let col = if c["kind"] == "numeric" {
                Column::Num(
                    values
                        .iter()
                        .map(|v| v.as_f64().unwrap_or(f64::NAN))
                        .collect(),
                )
            } else {
                Column::Str(
                    values
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                )
            };
            (c["name"].as_str().unwrap().to_string(), col)
        })
        .collect()
}
