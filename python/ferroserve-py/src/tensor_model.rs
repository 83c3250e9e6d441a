//! Models of named tensors in the Python package, run by the server's own backends
//! (`ferroserve_core::backends`): ONNX models on ONNX Runtime through `ort`, and
//! TensorFlow SavedModels through TensorFlow's C API, each library opened at run time
//! and found by the Python half in the installed `onnxruntime` / `tensorflow` wheel.
//! A SavedModel has several signatures; a [`TensorModel`] runs one of them (the
//! default unless one is named), and `with_signature` gives another on the same
//! loaded session.
//!
//! Tensors cross from Python as `(name, dtype, shape, payload)`: raw native-endian
//! bytes for numbers, a list of strings for text. They are cast to the model's dtypes
//! here with the server's `Tensor::cast` (an integer out of range or a fractional
//! float given to an integer input is an error, never a wrap), so numpy and the
//! server's REST API agree on what a model accepts.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema};
use ferroserve_core::backends::onnx::OnnxBackend;
use ferroserve_core::backends::tensorflow::{TensorflowBackend, TensorflowConfig};
use ferroserve_core::backends::{
    Backend, BackendError, BackendOptions, Signature, DEFAULT_SIGNATURE,
};
use ferroserve_core::tensor::{DataType, NamedTensor, Tensor, TensorData, TensorSpec};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::arrow_io::{self, ArrowArray, ArrowStream};
use crate::tensor_columns::{column_tensor, column_type, outputs_batch};
use crate::{predict_error, ModelError};

/// An ONNX model or a SavedModel's signature. ONNX sessions are behind their own locks
/// in the backend and TensorFlow's sessions may run from several threads at once, so
/// threads may predict with one model at once.
#[pyclass(module = "ferroserve._native", frozen)]
pub struct TensorModel {
    backend: Arc<dyn Backend>,
    /// The signature this model runs: empty for the default one, else a name the
    /// backend has (checked when the model is made).
    signature_name: String,
}

/// The numpy name of a dtype; `"string"` for BYTES (a numpy object array of `str`).
pub fn numpy_name(dtype: DataType) -> &'static str {
    match dtype {
        DataType::Bool => "bool",
        DataType::U8 => "uint8",
        DataType::U16 => "uint16",
        DataType::U32 => "uint32",
        DataType::U64 => "uint64",
        DataType::I8 => "int8",
        DataType::I16 => "int16",
        DataType::I32 => "int32",
        DataType::I64 => "int64",
        DataType::F16 => "float16",
        DataType::F32 => "float32",
        DataType::F64 => "float64",
        DataType::Bytes => "string",
    }
}

fn from_numpy_name(name: &str) -> Option<DataType> {
    DataType::ALL.into_iter().find(|d| numpy_name(*d) == name)
}

/// Values of `T` from native-endian bytes, copied (a bytes object is not aligned).
fn from_ne<T, const N: usize>(bytes: &[u8], read: fn([u8; N]) -> T) -> Result<Vec<T>, String> {
    if !bytes.len().is_multiple_of(N) {
        return Err(format!(
            "a buffer of {} bytes is not a whole number of {N}-byte values",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(N)
        .map(|c| read(c.try_into().expect("chunks of N")))
        .collect())
}

/// A tensor's elements from the payload the Python half sends for `dtype`.
fn data_from_python(dtype: DataType, payload: &Bound<'_, PyAny>) -> PyResult<TensorData> {
    if dtype == DataType::Bytes {
        // Each element as given: `bytes` pass through unchanged (a serialized
        // tf.train.Example is not UTF-8), `str` as its UTF-8 encoding.
        let list = payload.cast::<PyList>()?;
        let mut elements = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            if let Ok(bytes) = item.cast::<PyBytes>() {
                elements.push(bytes.as_bytes().to_vec());
            } else if let Ok(text) = item.cast::<PyString>() {
                elements.push(text.to_cow()?.as_bytes().to_vec());
            } else {
                return Err(predict_error(format!(
                    "element {i} of a string input is {}, not str or bytes",
                    item.get_type().name()?
                )));
            }
        }
        return Ok(TensorData::Bytes(elements));
    }
    let bytes = payload.cast::<PyBytes>()?.as_bytes();
    let data = match dtype {
        DataType::Bool => Ok(TensorData::Bool(bytes.iter().map(|&b| b != 0).collect())),
        DataType::U8 => Ok(TensorData::U8(bytes.to_vec())),
        DataType::I8 => Ok(TensorData::I8(bytes.iter().map(|&b| b as i8).collect())),
        DataType::U16 => from_ne(bytes, u16::from_ne_bytes).map(TensorData::U16),
        DataType::U32 => from_ne(bytes, u32::from_ne_bytes).map(TensorData::U32),
        DataType::U64 => from_ne(bytes, u64::from_ne_bytes).map(TensorData::U64),
        DataType::I16 => from_ne(bytes, i16::from_ne_bytes).map(TensorData::I16),
        DataType::I32 => from_ne(bytes, i32::from_ne_bytes).map(TensorData::I32),
        DataType::I64 => from_ne(bytes, i64::from_ne_bytes).map(TensorData::I64),
        DataType::F16 => from_ne(bytes, u16::from_ne_bytes).map(TensorData::F16),
        DataType::F32 => from_ne(bytes, f32::from_ne_bytes).map(TensorData::F32),
        DataType::F64 => from_ne(bytes, f64::from_ne_bytes).map(TensorData::F64),
        DataType::Bytes => unreachable!("handled above"),
    };
    data.map_err(predict_error)
}

/// Whether every element of a string tensor is valid UTF-8: such a tensor goes back to
/// Python as `str` (an ONNX string always is), any other one as `bytes`, every element
/// of it, so that one output never mixes the two and nothing is replaced or lost.
pub(crate) fn all_utf8(elements: &[Vec<u8>]) -> bool {
    elements.iter().all(|e| std::str::from_utf8(e).is_ok())
}

/// `(dtype, payload)` for Python: raw native-endian bytes, or a list of `str` (every
/// element valid UTF-8) or of `bytes` (see [`all_utf8`]).
fn data_to_python(py: Python<'_>, data: &TensorData) -> PyResult<(&'static str, Py<PyAny>)> {
    macro_rules! bytes {
        ($v:expr) => {
            PyBytes::new(
                py,
                &$v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>(),
            )
            .into_any()
            .unbind()
        };
    }
    let payload = match data {
        TensorData::Bool(v) => PyBytes::new(py, &v.iter().map(|&b| b as u8).collect::<Vec<_>>())
            .into_any()
            .unbind(),
        TensorData::U8(v) => PyBytes::new(py, v).into_any().unbind(),
        TensorData::I8(v) => bytes!(v),
        TensorData::U16(v) | TensorData::F16(v) => bytes!(v),
        TensorData::U32(v) => bytes!(v),
        TensorData::U64(v) => bytes!(v),
        TensorData::I16(v) => bytes!(v),
        TensorData::I32(v) => bytes!(v),
        TensorData::I64(v) => bytes!(v),
        TensorData::F32(v) => bytes!(v),
        TensorData::F64(v) => bytes!(v),
        TensorData::Bytes(v) if all_utf8(v) => PyList::new(
            py,
            v.iter().map(|b| std::str::from_utf8(b).unwrap_or_default()),
        )?
        .into_any()
        .unbind(),
        TensorData::Bytes(v) => PyList::new(py, v.iter().map(|b| PyBytes::new(py, b)))?
            .into_any()
            .unbind(),
    };
    Ok((numpy_name(data.dtype()), payload))
}

/// Fits a tensor to the model's input: a column (`[n]`) given to a `[n, 1]` input
/// gains its trailing dimension, and the elements are cast to the input's dtype.
fn fit_to_spec(spec: &TensorSpec, tensor: Tensor) -> Result<Tensor, String> {
    let fail = |e: &dyn std::fmt::Display| format!("input {:?}: {e}", spec.name);
    // A 0-d scalar is no column: it is refused for a `[-1]` input (as ONNX Runtime and
    // TensorFlow refuse rank 0 there), never taken as one row.
    let tensor = if !spec.any_rank()
        && !tensor.shape().is_empty()
        && spec.shape.len() == tensor.shape().len() + 1
        && spec.shape.last().is_some_and(|&d| d == 1 || d < 0)
    {
        let mut shape = tensor.shape().to_vec();
        shape.push(1);
        tensor.reshape(shape).map_err(|e| fail(&e))?
    } else {
        tensor
    };
    if !spec.accepts_shape(tensor.shape()) {
        return Err(format!(
            "input {:?} takes shape {:?} (-1: any size); got {:?}",
            spec.name,
            spec.shape,
            tensor.shape()
        ));
    }
    if tensor.dtype() == spec.dtype {
        return Ok(tensor);
    }
    if tensor.dtype() == DataType::Bytes || spec.dtype == DataType::Bytes {
        return Err(format!(
            "input {:?} takes {}; got {}",
            spec.name,
            numpy_name(spec.dtype),
            numpy_name(tensor.dtype())
        ));
    }
    tensor.cast(spec.dtype).map_err(|e| fail(&e))
}

/// `"a" (float32 [-1, 4]), "b" (string [-1])`: the inputs a model takes, as the
/// server's messages list them (with the package's numpy dtype names).
fn describe_specs(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| match s.any_rank() {
            true => format!("{:?} ({} of any shape)", s.name, numpy_name(s.dtype)),
            false => format!("{:?} ({} {:?})", s.name, numpy_name(s.dtype), s.shape),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The server's check of a request's input names (`prepare_inputs` in the server's
/// `api::predict`), made before anything runs: some inputs are given, each names an
/// input of the signature, once, and every input of the signature is given. ONNX
/// Runtime would otherwise answer a missing input with its own internal message (and
/// print it to stderr).
fn check_input_names<'a>(
    specs: &[TensorSpec],
    names: impl Iterator<Item = &'a str>,
) -> Result<(), String> {
    let mut given: Vec<&str> = Vec::new();
    for name in names {
        if !specs.iter().any(|s| s.name == name) {
            return Err(format!(
                "the model has no input {name:?}; it takes {}",
                describe_specs(specs)
            ));
        }
        if given.contains(&name) {
            return Err(format!("input {name:?} is given twice"));
        }
        given.push(name);
    }
    if given.is_empty() && !specs.is_empty() {
        return Err(format!(
            "no inputs given; the model takes {}",
            describe_specs(specs)
        ));
    }
    let missing: Vec<&str> = specs
        .iter()
        .map(|s| s.name.as_str())
        .filter(|name| !given.contains(name))
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [one] => Err(format!(
            "input {one:?} is missing; the model takes {}",
            describe_specs(specs)
        )),
        several => Err(format!(
            "inputs {} are missing; the model takes {}",
            several
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            describe_specs(specs)
        )),
    }
}

fn backend_error(e: BackendError) -> String {
    e.to_string()
}

impl TensorModel {
    fn new(backend: Arc<dyn Backend>, signature_name: Option<String>) -> PyResult<TensorModel> {
        let signature_name = signature_name.unwrap_or_default();
        if backend.signature_named(&signature_name).is_none() {
            let mut names: Vec<&str> = backend
                .signatures()
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            if names.is_empty() {
                names.push(DEFAULT_SIGNATURE);
            }
            return Err(ModelError::new_err(format!(
                "the model has no signature {signature_name:?} (its signatures: {})",
                names.join(", ")
            )));
        }
        Ok(TensorModel {
            backend,
            signature_name,
        })
    }

    /// The signature this model runs.
    fn run_signature(&self) -> &Signature {
        self.backend
            .signature_named(&self.signature_name)
            .expect("checked when the model was made")
    }

    /// Runs the model's signature.
    fn run(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        self.backend
            .predict_signature(&self.signature_name, inputs, outputs)
    }

    fn spec(&self, name: &str) -> Option<&TensorSpec> {
        self.run_signature().inputs.iter().find(|s| s.name == name)
    }

    /// Reads one Arrow record batch into the model's inputs: each input from the
    /// column of its name; a model with one input and no column of that name takes
    /// every column as a matrix, in the batch's order.
    fn batch_inputs(&self, batch: &RecordBatch) -> Result<Vec<NamedTensor>, String> {
        let inputs = &self.run_signature().inputs;
        let n_rows = batch.num_rows();
        let mut out = Vec::with_capacity(inputs.len());
        if let [only] = inputs.as_slice() {
            if batch.column_by_name(&only.name).is_none() {
                let tensor = if only.dtype == DataType::Bytes {
                    if batch.num_columns() != 1 {
                        return Err(format!(
                            "input {:?} takes text; give one string column (the batch has {})",
                            only.name,
                            batch.num_columns()
                        ));
                    }
                    column_tensor(&only.name, batch.column(0))?
                } else {
                    let columns = arrow_io::dense_columns(batch, batch.num_columns(), None)?;
                    let n_cols = columns.len();
                    let mut data = vec![0.0; n_rows * n_cols];
                    for (j, column) in columns.iter().enumerate() {
                        for (i, value) in column.iter().enumerate() {
                            data[i * n_cols + j] = *value;
                        }
                    }
                    Tensor::new(vec![n_rows, n_cols], TensorData::F64(data))
                        .map_err(|e| e.to_string())?
                };
                out.push((only.name.clone(), fit_to_spec(only, tensor)?));
                return Ok(out);
            }
        }
        for spec in inputs {
            let array = batch.column_by_name(&spec.name).ok_or_else(|| {
                format!(
                    "the input has no column {:?} (the model's inputs: {})",
                    spec.name,
                    inputs
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            let tensor = column_tensor(&spec.name, array)?;
            out.push((spec.name.clone(), fit_to_spec(spec, tensor)?));
        }
        Ok(out)
    }

    /// One Arrow batch through the model: a column per output.
    fn predict_batch(&self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let inputs = self.batch_inputs(batch)?;
        let outputs = self.run(inputs, &[]).map_err(backend_error)?;
        outputs_batch(outputs, batch.num_rows())
    }

    /// The schema of [`TensorModel::predict_batch`]'s answers, for an empty stream.
    fn output_schema(&self) -> Schema {
        let fields = self
            .run_signature()
            .outputs
            .iter()
            .map(|o| {
                let inner: Vec<usize> =
                    o.shape.iter().skip(1).map(|&d| d.max(0) as usize).collect();
                Field::new(&o.name, column_type(o.dtype, &inner), false)
            })
            .collect::<Vec<_>>();
        Schema::new(fields)
    }
}

fn spec_dict<'py>(py: Python<'py>, spec: &TensorSpec) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &spec.name)?;
    d.set_item("dtype", numpy_name(spec.dtype))?;
    // A tensor of any shape: None, as TensorFlow's TensorShape(None) prints.
    match spec.any_rank() {
        true => d.set_item("shape", py.None())?,
        false => d.set_item("shape", spec.shape.clone())?,
    }
    Ok(d)
}

/// `{"inputs": [...], "outputs": [...]}` of one signature.
fn signature_dict<'py>(py: Python<'py>, signature: &Signature) -> PyResult<Bound<'py, PyDict>> {
    let inputs = PyList::empty(py);
    for spec in &signature.inputs {
        inputs.append(spec_dict(py, spec)?)?;
    }
    let outputs = PyList::empty(py);
    for spec in &signature.outputs {
        outputs.append(spec_dict(py, spec)?)?;
    }
    let d = PyDict::new(py);
    d.set_item("inputs", inputs)?;
    d.set_item("outputs", outputs)?;
    Ok(d)
}

#[pymethods]
impl TensorModel {
    /// Loads an ONNX model with the server's ONNX backend. `runtime`: the ONNX Runtime
    /// library to open (else `ORT_DYLIB_PATH`); the first library opened in a process
    /// serves every later model. `threads`: ONNX Runtime's intra-op threads per session;
    /// `sessions`: sessions of this model, so that as many threads can run it at once.
    #[staticmethod]
    #[pyo3(signature = (path, runtime=None, threads=1, sessions=1))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        runtime: Option<PathBuf>,
        threads: usize,
        sessions: usize,
    ) -> PyResult<TensorModel> {
        let options = BackendOptions {
            onnxruntime_path: runtime,
            onnx_intra_threads: threads,
            onnx_sessions: sessions,
            tensorflow_path: None,
        };
        let backend = py
            .detach(|| OnnxBackend::load(&path, &options))
            .map_err(|e| ModelError::new_err(e.to_string()))?;
        TensorModel::new(Arc::new(backend), None)
    }

    /// Loads the TensorFlow SavedModel in the directory `path` (holding
    /// `saved_model.pb` and `variables/`) with the server's TensorFlow backend.
    /// `library`: the directory of TensorFlow's `libtensorflow_cc.so.2` (the tensorflow
    /// wheel's package directory; else `FERROSERVE_TENSORFLOW_PATH`); the first library
    /// opened in a process serves every later model. `tags`: the MetaGraph to load;
    /// `threads`: TensorFlow's intra- and inter-op threads (0: TensorFlow chooses);
    /// `signature_name`: the signature to run (default `serving_default`, else the
    /// first by name).
    #[staticmethod]
    #[pyo3(signature = (path, library=None, tags=vec!["serve".to_string()], threads=0, signature_name=None))]
    fn load_saved_model(
        py: Python<'_>,
        path: PathBuf,
        library: Option<PathBuf>,
        tags: Vec<String>,
        threads: u32,
        signature_name: Option<String>,
    ) -> PyResult<TensorModel> {
        let options = BackendOptions {
            tensorflow_path: library,
            ..BackendOptions::default()
        };
        let config = TensorflowConfig {
            tags,
            intra_op_threads: threads,
            inter_op_threads: threads,
        };
        let backend = py
            .detach(|| TensorflowBackend::load(&path, &options, &config))
            .map_err(|e| ModelError::new_err(e.to_string()))?;
        TensorModel::new(Arc::new(backend), signature_name)
    }

    /// This model's loaded session running the signature called `name` (empty: the
    /// default one).
    fn with_signature(&self, name: String) -> PyResult<TensorModel> {
        TensorModel::new(self.backend.clone(), Some(name))
    }

    /// The backend's format: `"onnx"` or `"tensorflow"`.
    #[getter]
    fn format(&self) -> &'static str {
        self.backend.format()
    }

    /// The name of the signature this model runs.
    #[getter]
    fn signature_name(&self) -> String {
        if !self.signature_name.is_empty() {
            return self.signature_name.clone();
        }
        // The backend's own rule: `serving_default`, else the first by name.
        let named = self.backend.signatures();
        named
            .iter()
            .find(|s| s.name == DEFAULT_SIGNATURE)
            .or(named.first())
            .map_or_else(|| DEFAULT_SIGNATURE.to_string(), |s| s.name.clone())
    }

    /// Every signature of the model by name: `{"inputs", "outputs", "method_name"}`.
    /// An ONNX model has one, `serving_default`.
    #[getter]
    fn signatures<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let all = PyDict::new(py);
        let named = self.backend.signatures();
        if named.is_empty() {
            let d = signature_dict(py, self.backend.signature())?;
            d.set_item("method_name", "")?;
            all.set_item(DEFAULT_SIGNATURE, d)?;
        }
        for s in named {
            let d = signature_dict(py, &s.signature)?;
            d.set_item("method_name", &s.method_name)?;
            all.set_item(&s.name, d)?;
        }
        Ok(all)
    }

    /// `{"inputs": [...], "outputs": [...], "description": str}` of the signature this
    /// model runs, each input and output `{"name", "dtype", "shape"}` as the graph
    /// declares them (-1: any size).
    #[getter]
    fn signature<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let signature = self.run_signature();
        let d = signature_dict(py, signature)?;
        let counts = format!(
            "{} input(s), {} output(s)",
            signature.inputs.len(),
            signature.outputs.len()
        );
        let description = match self.backend.format() {
            "onnx" => format!("ONNX model, {counts}"),
            _ => format!(
                "TensorFlow SavedModel, signature {:?}, {counts}",
                self.signature_name()
            ),
        };
        d.set_item("description", description)?;
        Ok(d)
    }

    #[getter]
    fn input_kind(&self) -> &'static str {
        "tensors"
    }

    /// Runs the model on `[(name, dtype, shape, payload)]` (see the module's docs);
    /// returns every output (or those named in `outputs`) the same way.
    #[pyo3(signature = (inputs, outputs=Vec::new()))]
    fn _predict_tensors(
        &self,
        py: Python<'_>,
        inputs: Vec<(String, String, Vec<usize>, Bound<'_, PyAny>)>,
        outputs: Vec<String>,
    ) -> PyResult<Py<PyList>> {
        check_input_names(
            &self.run_signature().inputs,
            inputs.iter().map(|(name, ..)| name.as_str()),
        )
        .map_err(predict_error)?;
        let mut tensors = Vec::with_capacity(inputs.len());
        for (name, dtype, shape, payload) in inputs {
            // Checked by check_input_names; an error all the same, never a panic.
            let spec = self
                .spec(&name)
                .ok_or_else(|| predict_error(format!("the model has no input {name:?}")))?;
            let dtype = from_numpy_name(&dtype)
                .ok_or_else(|| predict_error(format!("input {name:?}: unknown dtype {dtype:?}")))?;
            let data = data_from_python(dtype, &payload)?;
            let tensor = Tensor::new(shape, data)
                .map_err(|e| predict_error(format!("input {name:?}: {e}")))?;
            tensors.push((name, fit_to_spec(spec, tensor).map_err(predict_error)?));
        }
        let results = py
            .detach(|| self.run(tensors, &outputs))
            .map_err(|e| predict_error(backend_error(e)))?;
        let list = PyList::empty(py);
        for (name, tensor) in results {
            let (payload_dtype, payload) = data_to_python(py, tensor.data())?;
            let shape = tensor.shape().to_vec();
            list.append(PyTuple::new(
                py,
                [
                    name.into_pyobject(py)?.into_any(),
                    payload_dtype.into_pyobject(py)?.into_any(),
                    shape.into_pyobject(py)?.into_any(),
                    payload.into_bound(py),
                ],
            )?)?;
        }
        Ok(list.unbind())
    }

    /// Predicts an Arrow record batch given as the two PyCapsules of
    /// `__arrow_c_array__()`; returns an object with `__arrow_c_array__`, a column per
    /// output.
    fn _predict_arrow_array(
        &self,
        py: Python<'_>,
        schema: &Bound<'_, pyo3::types::PyCapsule>,
        array: &Bound<'_, pyo3::types::PyCapsule>,
    ) -> PyResult<ArrowArray> {
        arrow_io::predict_array(py, schema, array, |batch| self.predict_batch(batch))
    }

    /// Predicts every batch of an Arrow stream (the PyCapsule of `__arrow_c_stream__()`).
    fn _predict_arrow_stream(
        &self,
        py: Python<'_>,
        stream: &Bound<'_, pyo3::types::PyCapsule>,
    ) -> PyResult<ArrowStream> {
        arrow_io::predict_stream(
            py,
            stream,
            |batch| self.predict_batch(batch),
            Arc::new(self.output_schema()),
        )
    }
}
