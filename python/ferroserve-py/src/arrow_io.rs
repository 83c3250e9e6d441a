//! Arrow data in and out of the package: record batches imported and exported through
//! the Arrow C data interface's PyCapsules (so no pyarrow version is tied to the
//! build), and the column readers every model kind shares.

use arrow_array::ffi::{from_ffi, to_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{
    Array, ArrayRef, BinaryArray, ListArray, RecordBatch, RecordBatchIterator, RecordBatchOptions,
    StructArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyTuple};
use std::ffi::CStr;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::predict_error;

pub const SCHEMA_CAPSULE: &CStr = c"arrow_schema";
pub const ARRAY_CAPSULE: &CStr = c"arrow_array";
pub const STREAM_CAPSULE: &CStr = c"arrow_array_stream";

/// Imports the record batch behind the two PyCapsules of `__arrow_c_array__()`,
/// predicts it with `predict` (the GIL released) and hands the answer back.
pub fn predict_array<F>(
    py: Python<'_>,
    schema: &Bound<'_, PyCapsule>,
    array: &Bound<'_, PyCapsule>,
    predict: F,
) -> PyResult<ArrowArray>
where
    F: Fn(&RecordBatch) -> Result<RecordBatch, String> + Send + Sync,
{
    let schema_ptr: NonNull<FFI_ArrowSchema> = schema.pointer_checked(Some(SCHEMA_CAPSULE))?.cast();
    // SAFETY: the capsule's name says it holds an ArrowArray; we move it out and leave
    // a released one, so the producer's capsule destructor releases nothing twice.
    let array = unsafe { take_from_capsule(array, ARRAY_CAPSULE, FFI_ArrowArray::empty())? };
    // SAFETY: the schema capsule stays alive (borrowed) for the whole import.
    let data = unsafe { from_ffi(array, schema_ptr.as_ref()) }
        .map_err(|e| predict_error(format!("cannot import the Arrow data: {e}")))?;
    if !matches!(data.data_type(), DataType::Struct(_)) {
        return Err(predict_error(format!(
            "expected a record batch (a struct array), got {}",
            data.data_type()
        )));
    }
    // A struct array may have null rows, which a record batch cannot (arrow-rs's
    // `RecordBatch::from` panics on them): refused, saying where.
    if data.null_count() > 0 {
        let first = (0..data.len())
            .find(|&i| data.is_null(i))
            .unwrap_or_default();
        return Err(predict_error(format!(
            "the struct array has {} null rows (the first: row {first}); a record batch's \
             rows cannot be null: drop or fill them first",
            data.null_count()
        )));
    }
    let len = data.len();
    let (fields, columns, _) = StructArray::from(data).into_parts();
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(len)),
    )
    .map_err(|e| predict_error(format!("cannot import the Arrow data: {e}")))?;
    let batch = py.detach(|| predict(&batch)).map_err(predict_error)?;
    Ok(ArrowArray { batch })
}

/// Imports the stream behind the PyCapsule of `__arrow_c_stream__()` and predicts
/// every batch with `predict` (the GIL released); `empty_schema` is the answer's
/// schema when the stream has no batch.
pub fn predict_stream<F>(
    py: Python<'_>,
    stream: &Bound<'_, PyCapsule>,
    predict: F,
    empty_schema: SchemaRef,
) -> PyResult<ArrowStream>
where
    F: Fn(&RecordBatch) -> Result<RecordBatch, String> + Send + Sync,
{
    // SAFETY: as in `predict_array`.
    let stream =
        unsafe { take_from_capsule(stream, STREAM_CAPSULE, FFI_ArrowArrayStream::empty())? };
    let reader = RecordBatchStreamReader::try_new(stream)
        .map_err(|e| predict_error(format!("cannot import the Arrow stream: {e}")))?;
    let batches = py
        .detach(|| {
            let mut out = Vec::new();
            for batch in reader {
                let batch = batch.map_err(|e| format!("cannot read the Arrow stream: {e}"))?;
                out.push(predict(&batch)?);
            }
            binary_where_any_is(out)
        })
        .map_err(predict_error)?;
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => empty_schema,
    };
    Ok(ArrowStream {
        schema,
        batches: std::sync::Mutex::new(Some(batches)),
    })
}

/// The answers to one stream's batches with one schema: a string column that is
/// `Binary` in some batch (a TensorFlow string output with an element that is not
/// UTF-8) is made `Binary` in every batch, as an Arrow stream has one schema.
fn binary_where_any_is(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, String> {
    let Some(first) = batches.first() else {
        return Ok(batches);
    };
    let schema = first.schema();
    if batches.iter().all(|b| b.schema() == schema) {
        return Ok(batches);
    }
    let binary: Vec<bool> = (0..schema.fields().len())
        .map(|j| {
            batches.iter().any(|b| {
                b.schema()
                    .fields()
                    .get(j)
                    .is_some_and(|f| has_binary(f.data_type()))
            })
        })
        .collect();
    batches
        .into_iter()
        .map(|batch| {
            let schema = batch.schema();
            let mut fields = Vec::with_capacity(batch.num_columns());
            let mut columns = Vec::with_capacity(batch.num_columns());
            for (j, (field, column)) in schema.fields().iter().zip(batch.columns()).enumerate() {
                let column = match binary.get(j) {
                    Some(true) => utf8_to_binary(column)?,
                    _ => column.clone(),
                };
                fields.push(Field::new(
                    field.name(),
                    column.data_type().clone(),
                    field.is_nullable(),
                ));
                columns.push(column);
            }
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
        })
        .collect()
}

fn has_binary(dtype: &DataType) -> bool {
    match dtype {
        DataType::Binary => true,
        DataType::List(item) => has_binary(item.data_type()),
        _ => false,
    }
}

/// A `Utf8` column (or list of them, at any depth) as `Binary`, the same bytes.
fn utf8_to_binary(array: &ArrayRef) -> Result<ArrayRef, String> {
    use arrow_array::cast::AsArray;
    Ok(match array.data_type() {
        DataType::Utf8 => Arc::new(BinaryArray::from(array.as_string::<i32>().clone())),
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let values = utf8_to_binary(list.values())?;
            let item = Arc::new(Field::new("item", values.data_type().clone(), true));
            let nulls = list.nulls().cloned();
            Arc::new(
                ListArray::try_new(item, list.offsets().clone(), values, nulls)
                    .map_err(|e| e.to_string())?,
            )
        }
        _ => array.clone(),
    })
}

/// The columns of a dense model, in order: by the model's feature names when it has
/// them, else by position (then the batch must have exactly `n_features` columns).
/// A model with feature names takes the batch's columns by position only when their
/// names say nothing (see [`names_are_positional`]); named columns that lack one of
/// its features are an error naming it, never a silent fall back to column order.
pub fn dense_columns(
    batch: &RecordBatch,
    n_features: usize,
    feature_names: Option<&[String]>,
) -> Result<Vec<Vec<f64>>, String> {
    let schema = batch.schema();
    if let Some(names) = feature_names {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let positional = names_are_positional(&columns);
        let columns: Vec<Option<&str>> = columns
            .into_iter()
            .map(|c| (!positional).then_some(c))
            .collect();
        if let Some(found) = feature_columns(&columns, names, "input")? {
            return found
                .iter()
                .zip(names)
                .map(|(&i, name)| numeric_values(name, batch.column(i)))
                .collect();
        }
    }
    if batch.num_columns() != n_features {
        return Err(format!(
            "the model takes {n_features} features; the input has {} columns",
            batch.num_columns()
        ));
    }
    batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(array, field)| numeric_values(field.name(), array))
        .collect()
}

/// Whether Arrow column names say nothing about what the columns are: every name empty
/// or an integer (`"0"`, `"1"`, …: what pandas' default `RangeIndex` columns, and other
/// integer column labels, become in Arrow). scikit-learn likewise takes a DataFrame
/// whose column labels are not strings as having no feature names.
pub fn names_are_positional(names: &[&str]) -> bool {
    names.iter().all(|name| {
        let digits = name.strip_prefix('-').unwrap_or(name);
        name.is_empty() || (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The position among `columns` of each of the model's `features`, in the features'
/// order. `columns` are the input's column names, `None` for a column without one
/// (a pandas label that is not a string). `Ok(None)`: no column has a name and not
/// every feature was found, so the caller takes the columns by position. A feature
/// that no named column (or more than one) carries is an error naming it; columns
/// that are no feature are left out. `what` names the input in messages
/// (`"input"`, `"DataFrame"`).
pub fn feature_columns(
    columns: &[Option<&str>],
    features: &[String],
    what: &str,
) -> Result<Option<Vec<usize>>, String> {
    let mut position: std::collections::HashMap<&str, Result<usize, usize>> =
        std::collections::HashMap::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        if let Some(name) = column {
            position
                .entry(name)
                .and_modify(|p| *p = Err(p.map_or_else(|n| n + 1, |_| 2)))
                .or_insert(Ok(i));
        }
    }
    let mut found = Vec::with_capacity(features.len());
    let mut missing = Vec::new();
    for feature in features {
        match position.get(feature.as_str()) {
            Some(Ok(i)) => found.push(*i),
            Some(Err(times)) => {
                return Err(format!(
                    "the {what} has {times} columns named {feature:?}; each of the \
                     model's features must name one column"
                ))
            }
            None => missing.push(feature.as_str()),
        }
    }
    if missing.is_empty() {
        return Ok(Some(found));
    }
    if columns.iter().all(Option::is_none) {
        return Ok(None);
    }
    let unmatched: Vec<&str> = columns
        .iter()
        .flatten()
        .copied()
        .filter(|c| !features.iter().any(|f| f == c))
        .collect();
    let plural = if missing.len() == 1 { "" } else { "s" };
    let mut message = format!(
        "the {what} has no column for the model's feature{plural} {}; the model takes its \
         {} features by name: {}",
        quoted_list(&missing),
        features.len(),
        quoted_list(&features.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    if !unmatched.is_empty() {
        message.push_str(&format!(
            " (columns that name no feature: {})",
            quoted_list(&unmatched)
        ));
    }
    message.push_str(
        ". Name the columns as the model's features, or pass a numpy array (or unnamed \
         columns) to take them by position",
    );
    Err(message)
}

/// `"a", "b", "c"`, the first 10 of them and how many more.
pub fn quoted_list(items: &[&str]) -> String {
    const SHOWN: usize = 10;
    let mut out = items
        .iter()
        .take(SHOWN)
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        out.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    out
}

/// A numeric column as f64 (nulls become NaN, which the estimators treat as missing).
pub fn numeric_values(name: &str, array: &ArrayRef) -> Result<Vec<f64>, String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    macro_rules! widen {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        f64::NAN
                    } else {
                        a.value(i) as f64
                    }
                })
                .collect()
        }};
    }
    Ok(match array.data_type() {
        DataType::Float64 => widen!(Float64Type),
        DataType::Float32 => widen!(Float32Type),
        DataType::Int64 => widen!(Int64Type),
        DataType::Int32 => widen!(Int32Type),
        DataType::Int16 => widen!(Int16Type),
        DataType::Int8 => widen!(Int8Type),
        DataType::UInt64 => widen!(UInt64Type),
        DataType::UInt32 => widen!(UInt32Type),
        DataType::UInt16 => widen!(UInt16Type),
        DataType::UInt8 => widen!(UInt8Type),
        DataType::Boolean => {
            let a = array.as_boolean();
            (0..a.len())
                .map(|i| match a.is_null(i) {
                    true => f64::NAN,
                    false => f64::from(u8::from(a.value(i))),
                })
                .collect()
        }
        // As Python's float(Decimal) reads it (pandas' path for Decimal objects): the
        // decimal's text, correctly rounded (Spark's DecimalType through mapInArrow).
        DataType::Decimal128(..) => {
            let a = array.as_primitive::<Decimal128Type>();
            decimal_values(name, a.len(), |i| {
                (!a.is_null(i)).then(|| a.value_as_string(i))
            })?
        }
        DataType::Decimal256(..) => {
            let a = array.as_primitive::<Decimal256Type>();
            decimal_values(name, a.len(), |i| {
                (!a.is_null(i)).then(|| a.value_as_string(i))
            })?
        }
        other => return Err(format!("column {name:?} is {other}, not a number type")),
    })
}

/// A decimal column's values (`text` of each row, `None` for a null: NaN) as f64.
fn decimal_values(
    name: &str,
    len: usize,
    text: impl Fn(usize) -> Option<String>,
) -> Result<Vec<f64>, String> {
    (0..len)
        .map(|i| match text(i) {
            None => Ok(f64::NAN),
            Some(t) => t
                .parse::<f64>()
                .map_err(|_| format!("column {name:?}: row {i}'s decimal {t} is not a number")),
        })
        .collect()
}

pub fn is_string(array: &ArrayRef) -> bool {
    matches!(
        array.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

pub fn string_values(name: &str, array: &ArrayRef) -> Result<Vec<Option<String>>, String> {
    use arrow_array::cast::AsArray;
    let collect = |len: usize, get: &dyn Fn(usize) -> Option<String>| (0..len).map(get).collect();
    Ok(match array.data_type() {
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            collect(a.len(), &|i| a.is_valid(i).then(|| a.value(i).to_string()))
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            collect(a.len(), &|i| a.is_valid(i).then(|| a.value(i).to_string()))
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            collect(a.len(), &|i| a.is_valid(i).then(|| a.value(i).to_string()))
        }
        // Bytes are text in UTF-8, as scikit-learn's vectorizers (encoding="utf-8",
        // decode_error="strict") and the fasttext package take them.
        DataType::Binary => utf8_values(name, array.as_binary::<i32>())?,
        DataType::LargeBinary => utf8_values(name, array.as_binary::<i64>())?,
        other => return Err(format!("column {name:?} is {other}, not a string type")),
    })
}

fn utf8_values<O: arrow_array::OffsetSizeTrait>(
    name: &str,
    array: &arrow_array::GenericBinaryArray<O>,
) -> Result<Vec<Option<String>>, String> {
    (0..array.len())
        .map(|i| match array.is_valid(i) {
            false => Ok(None),
            true => String::from_utf8(array.value(i).to_vec())
                .map(Some)
                .map_err(|e| format!("row {i} of column {name:?} is not valid UTF-8: {e}")),
        })
        .collect()
}

/// Takes the struct an Arrow PyCapsule points at, leaving an empty (released) one behind,
/// as the PyCapsule interface asks of a consumer.
///
/// # Safety
/// `capsule` must hold a `T` under `name` (checked by name by `pointer_checked`).
unsafe fn take_from_capsule<T>(
    capsule: &Bound<'_, PyCapsule>,
    name: &CStr,
    empty: T,
) -> PyResult<T> {
    let pointer: NonNull<T> = capsule.pointer_checked(Some(name))?.cast();
    Ok(unsafe { std::ptr::replace(pointer.as_ptr(), empty) })
}

/// An Arrow array (a record batch as a struct array) handed to Python through the
/// PyCapsule interface: `pyarrow.record_batch(result)` imports it without a copy.
#[pyclass(module = "ferroserve._native", frozen)]
pub struct ArrowArray {
    pub batch: RecordBatch,
}

#[pymethods]
impl ArrowArray {
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        // A requested schema is a hint the producer may ignore (the interface says so).
        let _ = requested_schema;
        let data = StructArray::from(self.batch.clone()).into_data();
        let (array, schema) = to_ffi(&data).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let schema = PyCapsule::new_with_value(py, schema, SCHEMA_CAPSULE)?;
        let array = PyCapsule::new_with_value(py, array, ARRAY_CAPSULE)?;
        PyTuple::new(py, [schema.into_any(), array.into_any()])
    }
}

/// A stream of Arrow record batches handed to Python through the PyCapsule interface:
/// `pyarrow.table(result)` imports it. Consumed once.
#[pyclass(module = "ferroserve._native", frozen)]
pub struct ArrowStream {
    pub schema: SchemaRef,
    pub batches: std::sync::Mutex<Option<Vec<RecordBatch>>>,
}

#[pymethods]
impl ArrowStream {
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let batches = self
            .batches
            .lock()
            .map_err(|_| PyValueError::new_err("the stream's lock is poisoned"))?
            .take()
            .ok_or_else(|| PyValueError::new_err("this Arrow stream was already consumed"))?;
        let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), self.schema.clone());
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, STREAM_CAPSULE)
    }
}
