//! `ferroserve._native`: the compiled half of the `ferroserve` Python package.
//!
//! It loads scikit-learn pickle/joblib files with the server's own safe reader
//! (`ferroserve-sklearn`: nothing in the file is executed) and predicts with the same
//! native estimators. The Python half (`python/ferroserve/__init__.py`) turns numpy
//! arrays and pandas DataFrames into the plain buffers taken here; Arrow data crosses
//! through the Arrow C data interface (PyCapsules), so no pyarrow version is tied to
//! the build.
//!
//! Invariant: every prediction and every model load runs with the GIL released, and
//! every failure is a Python exception carrying the reader's message, never a panic.

use std::ffi::CStr;
use std::ptr::NonNull;
use std::sync::Arc;

use arrow_array::ffi::{from_ffi, to_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, RecordBatchIterator, StringArray,
    StructArray,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use ferroserve_sklearn::{
    ClassLabels, Column, ColumnKind, Input, InputSchema, Prediction, SklearnModel,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyDict, PyList, PyTuple};

create_exception!(
    ferroserve._native,
    ModelError,
    PyException,
    "The file is not a model ferroserve can load (refused, malformed or unsupported)."
);
create_exception!(
    ferroserve._native,
    PredictError,
    PyValueError,
    "The data does not fit the model's inputs."
);

/// The name of the prediction column/output, as the server's sklearn backend names it.
const PREDICT_OUTPUT: &str = "predict";
/// The name of the single matrix input, as the server's sklearn backend names it.
const MATRIX_INPUT: &str = "input";

const SCHEMA_CAPSULE: &CStr = c"arrow_schema";
const ARRAY_CAPSULE: &CStr = c"arrow_array";
const STREAM_CAPSULE: &CStr = c"arrow_array_stream";

/// A loaded model. Immutable once loaded, so threads may predict with it at once.
#[pyclass(module = "ferroserve._native", frozen)]
struct Model {
    model: Arc<SklearnModel>,
}

/// What a prediction gives back to Python before the Python half shapes it.
enum Labels {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Str(Vec<String>),
}

impl Labels {
    fn from_prediction(prediction: Prediction) -> Labels {
        match prediction {
            Prediction::Labels(ClassLabels::Int(v)) => Labels::Int(v),
            Prediction::Labels(ClassLabels::Float(v)) | Prediction::Values(v) => Labels::Float(v),
            Prediction::Labels(ClassLabels::Str(v)) => Labels::Str(v),
        }
    }

    /// `(dtype, payload)`: raw native-endian bytes for numbers, a list for strings.
    fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (dtype, payload): (&str, Py<PyAny>) = match self {
            Labels::Int(v) => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
                ("int64", PyBytes::new(py, &bytes).into_any().unbind())
            }
            Labels::Float(v) => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
                ("float64", PyBytes::new(py, &bytes).into_any().unbind())
            }
            Labels::Str(v) => ("str", PyList::new(py, v)?.into_any().unbind()),
        };
        Ok(
            PyTuple::new(py, [dtype.into_pyobject(py)?.into_any().unbind(), payload])?
                .into_any()
                .unbind(),
        )
    }

    fn into_arrow(self) -> ArrayRef {
        match self {
            Labels::Int(v) => Arc::new(Int64Array::from(v)),
            Labels::Float(v) => Arc::new(Float64Array::from(v)),
            Labels::Str(v) => Arc::new(StringArray::from(v)),
        }
    }
}

fn predict_error(message: impl std::fmt::Display) -> PyErr {
    PredictError::new_err(message.to_string())
}

/// Native-endian f64s from a bytes object (numpy's `tobytes()`): copied, because a
/// bytes object's data is not guaranteed to be 8-byte aligned.
fn f64s_from_bytes(bytes: &[u8]) -> PyResult<Vec<f64>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(predict_error(format!(
            "a float64 buffer of {} bytes is not a whole number of values",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_ne_bytes(c.try_into().expect("chunks of 8")))
        .collect())
}

fn dtype_name(kind: &ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Numeric => "float64",
        ColumnKind::String => "string",
    }
}

fn labels_dtype(labels: Option<&ClassLabels>) -> &'static str {
    match labels {
        Some(ClassLabels::Int(_)) => "int64",
        Some(ClassLabels::Str(_)) => "string",
        Some(ClassLabels::Float(_)) | None => "float64",
    }
}

impl Model {
    /// Runs `predict` on `input` with the GIL released.
    fn predict_input(&self, py: Python<'_>, input: Input<'_>) -> PyResult<Labels> {
        let model = &self.model;
        py.detach(|| model.predict(&input))
            .map(Labels::from_prediction)
            .map_err(predict_error)
    }

    /// Reads one Arrow record batch (a struct array) into the model's input and predicts.
    fn predict_batch(&self, batch: &RecordBatch) -> Result<Labels, String> {
        let schema = self.model.input_schema();
        let labels = match schema {
            // A dense model given string columns: a ColumnTransformer selecting by
            // position; the reader lays the columns out by the model's feature names.
            InputSchema::Dense { .. } if batch.columns().iter().any(is_string) => {
                let schema = batch.schema();
                let columns = batch
                    .columns()
                    .iter()
                    .zip(schema.fields())
                    .map(|(array, field)| {
                        let name = field.name();
                        let values = match is_string(array) {
                            true => Column::Str(string_values(name, array)?),
                            false => Column::Num(numeric_values(name, array)?),
                        };
                        Ok((name.clone(), values))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                self.model
                    .predict(&Input::Columns(columns))
                    .map_err(|e| e.to_string())?
            }
            InputSchema::Dense { n_features } => {
                let columns = dense_columns(batch, *n_features, self.model.feature_names())?;
                let n_rows = batch.num_rows();
                let mut data = vec![0.0; n_rows * n_features];
                for (j, column) in columns.iter().enumerate() {
                    for (i, value) in column.iter().enumerate() {
                        data[i * n_features + j] = *value;
                    }
                }
                self.model
                    .predict(&Input::dense(&data, n_rows, *n_features))
                    .map_err(|e| e.to_string())?
            }
            InputSchema::Columns(wanted) => {
                let mut columns = Vec::with_capacity(wanted.len());
                for column in wanted {
                    let Some(array) = batch.column_by_name(&column.name) else {
                        if column.used {
                            return Err(format!("the input has no column {:?}", column.name));
                        }
                        continue;
                    };
                    let values = match column.kind {
                        ColumnKind::Numeric => Column::Num(numeric_values(&column.name, array)?),
                        ColumnKind::String => Column::Str(string_values(&column.name, array)?),
                    };
                    columns.push((column.name.clone(), values));
                }
                self.model
                    .predict(&Input::Columns(columns))
                    .map_err(|e| e.to_string())?
            }
            InputSchema::Text => {
                if batch.num_columns() != 1 {
                    return Err(format!(
                        "this model reads one text column; the input has {}",
                        batch.num_columns()
                    ));
                }
                let name = batch.schema().field(0).name().clone();
                let texts = string_values(&name, batch.column(0))?
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| t.ok_or_else(|| format!("row {i} of {name:?} is null")))
                    .collect::<Result<Vec<_>, _>>()?;
                self.model
                    .predict(&Input::Text(texts))
                    .map_err(|e| e.to_string())?
            }
        };
        Ok(Labels::from_prediction(labels))
    }
}

/// The columns of a dense model, in order: by the model's feature names when it has them,
/// else by position (then the batch must have exactly `n_features` columns).
fn dense_columns(
    batch: &RecordBatch,
    n_features: usize,
    feature_names: Option<&[String]>,
) -> Result<Vec<Vec<f64>>, String> {
    if let Some(names) = feature_names {
        if names.iter().all(|n| batch.column_by_name(n).is_some()) {
            return names
                .iter()
                .map(|n| numeric_values(n, batch.column_by_name(n).expect("checked")))
                .collect();
        }
    }
    if batch.num_columns() != n_features {
        return Err(format!(
            "the model takes {n_features} features; the input has {} columns",
            batch.num_columns()
        ));
    }
    let schema = batch.schema();
    batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(array, field)| numeric_values(field.name(), array))
        .collect()
}

/// A numeric column as f64 (nulls become NaN, which the estimators treat as missing).
fn numeric_values(name: &str, array: &ArrayRef) -> Result<Vec<f64>, String> {
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
        other => return Err(format!("column {name:?} is {other}, not a number type")),
    })
}

fn is_string(array: &ArrayRef) -> bool {
    matches!(
        array.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn string_values(name: &str, array: &ArrayRef) -> Result<Vec<Option<String>>, String> {
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
        other => return Err(format!("column {name:?} is {other}, not a string type")),
    })
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

/// The prediction of one batch as an Arrow record batch with one column, `predict`.
fn prediction_batch(labels: Labels) -> Result<RecordBatch, ArrowError> {
    let array = labels.into_arrow();
    let schema = Schema::new(vec![Field::new(
        PREDICT_OUTPUT,
        array.data_type().clone(),
        false,
    )]);
    RecordBatch::try_new(Arc::new(schema), vec![array])
}

/// An Arrow array (a record batch as a struct array) handed to Python through the
/// PyCapsule interface: `pyarrow.record_batch(result)` imports it without a copy.
#[pyclass(module = "ferroserve._native", frozen)]
struct ArrowArray {
    batch: RecordBatch,
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
struct ArrowStream {
    schema: SchemaRef,
    batches: std::sync::Mutex<Option<Vec<RecordBatch>>>,
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

#[pymethods]
impl Model {
    /// Loads a scikit-learn pickle or joblib file with ferroserve's safe reader: only
    /// allowlisted classes are rebuilt and nothing in the file is executed.
    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Model> {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
        {
            return Err(ModelError::new_err(format!(
                "{}: ONNX models are not supported by the ferroserve package yet \
                 (scikit-learn pickle and joblib files are); serve it with the ferroserve server",
                path.display()
            )));
        }
        let model = py.detach(|| {
            let bytes =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            SklearnModel::load(&bytes).map_err(|e| format!("{}: {e}", path.display()))
        });
        match model {
            Ok(model) => Ok(Model {
                model: Arc::new(model),
            }),
            Err(message) => Err(ModelError::new_err(message)),
        }
    }

    /// `{"inputs": [...], "outputs": [...]}`, each `{"name", "dtype", "shape"}` (-1 for
    /// any number of rows); named-column inputs also say whether the model uses them.
    #[getter]
    fn signature<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let tensor = |name: &str, dtype: &str, shape: Vec<i64>| -> PyResult<Bound<'py, PyDict>> {
            let d = PyDict::new(py);
            d.set_item("name", name)?;
            d.set_item("dtype", dtype)?;
            d.set_item("shape", shape)?;
            Ok(d)
        };
        let inputs = PyList::empty(py);
        match self.model.input_schema() {
            InputSchema::Dense { n_features } => {
                let d = tensor(MATRIX_INPUT, "float64", vec![-1, *n_features as i64])?;
                if let Some(names) = self.model.feature_names() {
                    d.set_item("feature_names", names.to_vec())?;
                }
                inputs.append(d)?;
            }
            InputSchema::Columns(columns) => {
                for column in columns {
                    let d = tensor(&column.name, dtype_name(&column.kind), vec![-1])?;
                    d.set_item("used", column.used)?;
                    inputs.append(d)?;
                }
            }
            InputSchema::Text => inputs.append(tensor(MATRIX_INPUT, "string", vec![-1])?)?,
        }
        let outputs = PyList::empty(py);
        outputs.append(tensor(
            PREDICT_OUTPUT,
            labels_dtype(self.model.classes()),
            vec![-1],
        )?)?;
        let signature = PyDict::new(py);
        signature.set_item("inputs", inputs)?;
        signature.set_item("outputs", outputs)?;
        signature.set_item("description", self.model.description())?;
        Ok(signature)
    }

    /// The model's input kind: "dense", "columns" or "text".
    #[getter]
    fn input_kind(&self) -> &'static str {
        match self.model.input_schema() {
            InputSchema::Dense { .. } => "dense",
            InputSchema::Columns(_) => "columns",
            InputSchema::Text => "text",
        }
    }

    #[getter]
    fn feature_names(&self) -> Option<Vec<String>> {
        self.model.feature_names().map(<[String]>::to_vec)
    }

    #[getter]
    fn n_features(&self) -> Option<usize> {
        match self.model.input_schema() {
            InputSchema::Dense { n_features } => Some(*n_features),
            _ => None,
        }
    }

    /// Predicts a row-major float64 matrix given as raw bytes (numpy's `tobytes()`).
    fn _predict_dense(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyBytes>,
        n_rows: usize,
        n_cols: usize,
    ) -> PyResult<Py<PyAny>> {
        let data = f64s_from_bytes(data.as_bytes())?;
        if n_rows.checked_mul(n_cols) != Some(data.len()) {
            return Err(predict_error(format!(
                "{} values do not make {n_rows} rows of {n_cols} columns",
                data.len()
            )));
        }
        self.predict_input(py, Input::dense(&data, n_rows, n_cols))?
            .into_py(py)
    }

    /// Predicts named columns: `[(name, "float64", bytes) | (name, "string", [str|None])]`.
    fn _predict_columns(
        &self,
        py: Python<'_>,
        columns: Vec<(String, String, Bound<'_, PyAny>)>,
    ) -> PyResult<Py<PyAny>> {
        let mut input = Vec::with_capacity(columns.len());
        for (name, kind, values) in columns {
            let column = match kind.as_str() {
                "float64" => Column::Num(f64s_from_bytes(values.cast::<PyBytes>()?.as_bytes())?),
                "string" => Column::Str(values.extract::<Vec<Option<String>>>()?),
                other => return Err(predict_error(format!("unknown column kind {other:?}"))),
            };
            input.push((name, column));
        }
        self.predict_input(py, Input::Columns(input))?.into_py(py)
    }

    /// Predicts one text per row.
    fn _predict_text(&self, py: Python<'_>, texts: Vec<String>) -> PyResult<Py<PyAny>> {
        self.predict_input(py, Input::Text(texts))?.into_py(py)
    }

    /// Predicts an Arrow record batch given as the two PyCapsules of
    /// `__arrow_c_array__()`; returns an object with `__arrow_c_array__`.
    fn _predict_arrow_array(
        &self,
        py: Python<'_>,
        schema: &Bound<'_, PyCapsule>,
        array: &Bound<'_, PyCapsule>,
    ) -> PyResult<ArrowArray> {
        let schema_ptr: NonNull<FFI_ArrowSchema> =
            schema.pointer_checked(Some(SCHEMA_CAPSULE))?.cast();
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
        let batch = RecordBatch::from(StructArray::from(data));
        let batch = py
            .detach(|| {
                self.predict_batch(&batch)
                    .and_then(|l| prediction_batch(l).map_err(|e| e.to_string()))
            })
            .map_err(predict_error)?;
        Ok(ArrowArray { batch })
    }

    /// Predicts every batch of an Arrow stream given as the PyCapsule of
    /// `__arrow_c_stream__()`; returns an object with `__arrow_c_stream__`.
    fn _predict_arrow_stream(
        &self,
        py: Python<'_>,
        stream: &Bound<'_, PyCapsule>,
    ) -> PyResult<ArrowStream> {
        // SAFETY: as in `_predict_arrow_array`.
        let stream =
            unsafe { take_from_capsule(stream, STREAM_CAPSULE, FFI_ArrowArrayStream::empty())? };
        let reader = RecordBatchStreamReader::try_new(stream)
            .map_err(|e| predict_error(format!("cannot import the Arrow stream: {e}")))?;
        let batches = py
            .detach(|| {
                let mut out = Vec::new();
                for batch in reader {
                    let batch = batch.map_err(|e| format!("cannot read the Arrow stream: {e}"))?;
                    let labels = self.predict_batch(&batch)?;
                    out.push(prediction_batch(labels).map_err(|e| e.to_string())?);
                }
                Ok::<_, String>(out)
            })
            .map_err(predict_error)?;
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => Arc::new(Schema::new(vec![Field::new(
                PREDICT_OUTPUT,
                arrow_label_type(self.model.classes()),
                false,
            )])),
        };
        Ok(ArrowStream {
            schema,
            batches: std::sync::Mutex::new(Some(batches)),
        })
    }
}

fn arrow_label_type(labels: Option<&ClassLabels>) -> DataType {
    match labels {
        Some(ClassLabels::Int(_)) => DataType::Int64,
        Some(ClassLabels::Str(_)) => DataType::Utf8,
        Some(ClassLabels::Float(_)) | None => DataType::Float64,
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<ArrowArray>()?;
    m.add_class::<ArrowStream>()?;
    m.add("ModelError", m.py().get_type::<ModelError>())?;
    m.add("PredictError", m.py().get_type::<PredictError>())?;
    Ok(())
}
