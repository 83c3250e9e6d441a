//! `ferroserve._native`: the compiled half of the `ferroserve` Python package.
//!
//! It loads models with the server's own code: scikit-learn pickle/joblib files with
//! its safe reader (`ferroserve-sklearn`: nothing in the file is executed, `Model`),
//! ONNX models and TensorFlow SavedModels with its backends (`ferroserve-core`,
//! `tensor_model::TensorModel`) and fastText models with its reader
//! (`ferroserve-fasttext`, `fasttext::FastTextModel`); `format_of` tells them apart as
//! the server does. The Python half (`python/ferroserve/__init__.py`) turns numpy
//! arrays and pandas DataFrames into the plain buffers taken here; Arrow data crosses
//! through the Arrow C data interface (PyCapsules), so no pyarrow version is tied to
//! the build.
//!
//! Invariant: every prediction and every model load runs with the GIL released, and
//! every failure is a Python exception carrying the reader's message, never a panic.

mod arrow_io;
mod fasttext;
mod tensor_columns;
mod tensor_model;

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_io::{dense_columns, is_string, numeric_values, string_values, ArrowArray, ArrowStream};
use arrow_schema::{ArrowError, DataType, Field, Schema};
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

    /// `(dtype, payload)`: raw native-endian bytes for numbers; for strings, the
    /// distinct labels and each row's int32 index into them.
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
            Labels::Str(v) => {
                // Few distinct labels, many rows: each distinct label crosses once, and
                // the rows as int32 codes into them, so Python makes no string per row.
                let mut distinct: Vec<&str> = Vec::new();
                let mut index: std::collections::HashMap<&str, i32> = Default::default();
                let mut codes: Vec<u8> = Vec::with_capacity(v.len() * 4);
                for label in &v {
                    let code = *index.entry(label.as_str()).or_insert_with(|| {
                        distinct.push(label);
                        distinct.len() as i32 - 1
                    });
                    codes.extend_from_slice(&code.to_ne_bytes());
                }
                let payload = PyTuple::new(
                    py,
                    [
                        PyList::new(py, distinct)?.into_any(),
                        PyBytes::new(py, &codes).into_any(),
                    ],
                )?;
                ("str", payload.into_any().unbind())
            }
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

    /// One Arrow record batch in, its predictions (one column, `predict`) out.
    fn predict_arrow(&self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let labels = self.predict_batch(batch)?;
        prediction_batch(labels).map_err(|e| e.to_string())
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
                // A column the model does not use is never read (it may be of any
                // type: scikit-learn only asks that a DataFrame has it).
                for column in wanted.iter().filter(|c| c.used) {
                    let Some(array) = batch.column_by_name(&column.name) else {
                        return Err(format!("the input has no column {:?}", column.name));
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

#[pymethods]
impl Model {
    /// Loads a scikit-learn pickle or joblib file with ferroserve's safe reader: only
    /// allowlisted classes are rebuilt and nothing in the file is executed.
    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Model> {
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
        // `[-1, k]` where scikit-learn's predict answers `(n_rows, k)`.
        let shape = match self.model.predict_width() {
            Some(k) => vec![-1, k as i64],
            None => vec![-1],
        };
        outputs.append(tensor(
            PREDICT_OUTPUT,
            labels_dtype(self.model.classes()),
            shape,
        )?)?;
        let signature = PyDict::new(py);
        signature.set_item("inputs", inputs)?;
        signature.set_item("outputs", outputs)?;
        signature.set_item("description", self.model.description())?;
        Ok(signature)
    }

    /// `k` when scikit-learn's `predict` answers a 2-D array `(n_rows, k)` (a
    /// `LinearRegression` fitted on a target of one column); `None` for one value or
    /// label per row.
    #[getter]
    fn predict_width(&self) -> Option<usize> {
        self.model.predict_width()
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

    /// Where each of the model's features is among a DataFrame's `columns` (`None` for
    /// a label that is not a string): `None` when the model has no feature names, or
    /// when no label is a string and not every feature is found (the columns then go
    /// by position); raises `PredictError` naming the features that named columns lack.
    fn _feature_columns(
        &self,
        columns: Vec<Option<String>>,
        what: &str,
    ) -> PyResult<Option<Vec<usize>>> {
        let Some(features) = self.model.feature_names() else {
            return Ok(None);
        };
        let columns: Vec<Option<&str>> = columns.iter().map(Option::as_deref).collect();
        arrow_io::feature_columns(&columns, features, what).map_err(predict_error)
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
        arrow_io::predict_array(py, schema, array, |batch| self.predict_arrow(batch))
    }

    /// Predicts every batch of an Arrow stream given as the PyCapsule of
    /// `__arrow_c_stream__()`; returns an object with `__arrow_c_stream__`.
    fn _predict_arrow_stream(
        &self,
        py: Python<'_>,
        stream: &Bound<'_, PyCapsule>,
    ) -> PyResult<ArrowStream> {
        let empty = Arc::new(Schema::new(vec![Field::new(
            PREDICT_OUTPUT,
            arrow_label_type(self.model.classes()),
            false,
        )]));
        arrow_io::predict_stream(py, stream, |batch| self.predict_arrow(batch), empty)
    }
}

fn arrow_label_type(labels: Option<&ClassLabels>) -> DataType {
    match labels {
        Some(ClassLabels::Int(_)) => DataType::Int64,
        Some(ClassLabels::Str(_)) => DataType::Utf8,
        Some(ClassLabels::Float(_)) | None => DataType::Float64,
    }
}

/// The format of a model file: `"onnx"`, `"fasttext"` or `"sklearn"`, recognised from
/// its first bytes by the server's own `format::sniff_file`, else from its extension.
/// A file that is neither goes to the pickle reader, whose message says what is wrong.
/// A directory holding `saved_model.pb` (or that file itself) is `"tensorflow"`.
/// Anything that is neither a regular file nor a directory is refused (`ModelError`).
#[pyfunction]
fn format_of(path: std::path::PathBuf) -> PyResult<&'static str> {
    use ferroserve_core::backends::format::{sniff_file, ArtifactFormat};
    use ferroserve_core::backends::tensorflow::SAVED_MODEL_FILE;
    // A device (/dev/zero, /dev/urandom), FIFO or socket would be read forever or
    // block: refused before anything opens it. Symbolic links are followed.
    let metadata = std::fs::metadata(&path)
        .map_err(|e| ModelError::new_err(format!("cannot read {}: {e}", path.display())))?;
    if !metadata.is_file() && !metadata.is_dir() {
        return Err(ModelError::new_err(format!(
            "{} is not a regular file (a device, FIFO or socket): give a model file, or a \
             TensorFlow SavedModel directory",
            path.display()
        )));
    }
    if path.is_dir() {
        if path.join(SAVED_MODEL_FILE).is_file() {
            return Ok("tensorflow");
        }
        return Err(ModelError::new_err(format!(
            "{} is a directory without {SAVED_MODEL_FILE}: give a model file, or a \
             TensorFlow SavedModel directory",
            path.display()
        )));
    }
    if path.file_name().and_then(|n| n.to_str()) == Some(SAVED_MODEL_FILE) {
        return Ok("tensorflow");
    }
    let sniffed = sniff_file(&path)
        .map_err(|e| ModelError::new_err(format!("cannot read {}: {e}", path.display())))?;
    Ok(
        match sniffed.or_else(|| ArtifactFormat::from_extension(&path)) {
            Some(ArtifactFormat::Onnx) => "onnx",
            Some(ArtifactFormat::FastText) => "fasttext",
            Some(ArtifactFormat::Pickle | ArtifactFormat::CompressedJoblib) | None => "sklearn",
        },
    )
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<tensor_model::TensorModel>()?;
    m.add_class::<fasttext::FastTextModel>()?;
    m.add_function(wrap_pyfunction!(format_of, m)?)?;
    m.add_class::<ArrowArray>()?;
    m.add_class::<ArrowStream>()?;
    m.add("ModelError", m.py().get_type::<ModelError>())?;
    m.add("PredictError", m.py().get_type::<PredictError>())?;
    Ok(())
}
