//! fastText classifiers in the Python package, read and run by the server's own
//! reader (`crates/ferroserve-fasttext`): one text per row in, the `k` most probable
//! labels with their probabilities out, as the fasttext package's `predict` gives them.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use ferroserve_fasttext::{FastText, Limits, Prediction};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict, PyList};

use crate::arrow_io::{self, ArrowArray, ArrowStream};
use crate::{predict_error, ModelError};

/// The output columns of a prediction in DataFrames and Arrow data.
pub const LABELS_OUTPUT: &str = "labels";
pub const PROBABILITIES_OUTPUT: &str = "probabilities";

/// A fastText model. Immutable once loaded, so threads may predict with it at once.
#[pyclass(module = "ferroserve._native", frozen)]
pub struct FastTextModel {
    model: Arc<FastText>,
}

/// Each text's labels and probabilities, most probable first.
type Answers = Vec<Vec<Prediction>>;

impl FastTextModel {
    fn predict_texts<'a>(
        &self,
        texts: impl Iterator<Item = &'a str>,
        k: i32,
        threshold: f32,
    ) -> Result<Answers, String> {
        texts
            .map(|t| {
                self.model
                    .predict(t, k, threshold)
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// One Arrow batch of one string column (or a column named `text`) in; two list
    /// columns, `labels` and `probabilities`, out.
    fn predict_batch(
        &self,
        batch: &RecordBatch,
        k: i32,
        threshold: f32,
    ) -> Result<RecordBatch, String> {
        let (name, column) = match batch.column_by_name("text") {
            Some(column) => ("text".to_string(), column.clone()),
            None if batch.num_columns() == 1 => (
                batch.schema().field(0).name().clone(),
                batch.column(0).clone(),
            ),
            None => {
                return Err(format!(
                    "a fastText model reads one text column (or a column named \"text\"); \
                     the input has {} columns",
                    batch.num_columns()
                ))
            }
        };
        let texts = arrow_io::string_values(&name, &column)?
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.ok_or_else(|| format!("row {i} of {name:?} is null")))
            .collect::<Result<Vec<_>, _>>()?;
        let answers = self.predict_texts(texts.iter().map(String::as_str), k, threshold)?;
        answers_batch(&answers).map_err(|e| e.to_string())
    }
}

fn output_schema() -> Schema {
    Schema::new(vec![
        Field::new(
            LABELS_OUTPUT,
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new(
            PROBABILITIES_OUTPUT,
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            false,
        ),
    ])
}

fn answers_batch(answers: &Answers) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut labels = ListBuilder::new(StringBuilder::new());
    let mut probabilities = ListBuilder::new(Float32Builder::new());
    for answer in answers {
        for p in answer {
            labels.values().append_value(&p.label);
            probabilities.values().append_value(p.probability);
        }
        labels.append(true);
        probabilities.append(true);
    }
    let labels = labels.finish();
    let probabilities = probabilities.finish();
    let schema = Schema::new(vec![
        Field::new(LABELS_OUTPUT, labels.data_type().clone(), false),
        Field::new(
            PROBABILITIES_OUTPUT,
            probabilities.data_type().clone(),
            false,
        ),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(labels), Arc::new(probabilities)],
    )
}

#[pymethods]
impl FastTextModel {
    /// Loads a fastText `.bin` or quantized `.ftz` model with ferroserve's reader.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<FastTextModel> {
        let model = py
            .detach(|| FastText::load(&path, &Limits::default()))
            .map_err(|e| ModelError::new_err(format!("{}: {e}", path.display())))?;
        Ok(FastTextModel {
            model: Arc::new(model),
        })
    }

    /// `{"inputs": [text], "outputs": [labels, probabilities], "description", "labels"}`.
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
        inputs.append(tensor("text", "string", vec![-1])?)?;
        // Each row has up to k labels: -1, a variable dimension.
        let outputs = PyList::empty(py);
        outputs.append(tensor(LABELS_OUTPUT, "string", vec![-1, -1])?)?;
        outputs.append(tensor(PROBABILITIES_OUTPUT, "float32", vec![-1, -1])?)?;
        let d = PyDict::new(py);
        d.set_item("inputs", inputs)?;
        d.set_item("outputs", outputs)?;
        let args = self.model.args();
        d.set_item(
            "description",
            format!(
                "fastText {} classifier, {} labels, dim {}{}",
                args.loss.name(),
                self.model.labels().len(),
                self.model.dim(),
                if self.model.is_quantized() {
                    ", quantized"
                } else {
                    ""
                }
            ),
        )?;
        d.set_item("labels", self.model.labels().to_vec())?;
        Ok(d)
    }

    #[getter]
    fn input_kind(&self) -> &'static str {
        "fasttext"
    }

    /// Each text's `(labels, probabilities)`, most probable first.
    fn _predict_texts(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        k: i32,
        threshold: f32,
    ) -> PyResult<Vec<(Vec<String>, Vec<f32>)>> {
        let answers = py
            .detach(|| self.predict_texts(texts.iter().map(String::as_str), k, threshold))
            .map_err(predict_error)?;
        Ok(answers
            .into_iter()
            .map(|a| a.into_iter().map(|p| (p.label, p.probability)).unzip())
            .collect())
    }

    /// Predicts an Arrow record batch (the PyCapsules of `__arrow_c_array__()`).
    fn _predict_arrow_array(
        &self,
        py: Python<'_>,
        schema: &Bound<'_, PyCapsule>,
        array: &Bound<'_, PyCapsule>,
        k: i32,
        threshold: f32,
    ) -> PyResult<ArrowArray> {
        arrow_io::predict_array(py, schema, array, |b| self.predict_batch(b, k, threshold))
    }

    /// Predicts every batch of an Arrow stream (the PyCapsule of `__arrow_c_stream__()`).
    fn _predict_arrow_stream(
        &self,
        py: Python<'_>,
        stream: &Bound<'_, PyCapsule>,
        k: i32,
        threshold: f32,
    ) -> PyResult<ArrowStream> {
        arrow_io::predict_stream(
            py,
            stream,
            |b| self.predict_batch(b, k, threshold),
            Arc::new(output_schema()),
        )
    }
}
