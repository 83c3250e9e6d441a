//! scikit-learn pickles and joblib files, read and run natively by `ferroserve-sklearn`
//! (no Python, no code from the file is ever executed).
//!
//! Signature: a model that takes a numeric matrix has one input `input`
//! (FP64 `[-1, n_features]`). A model whose `ColumnTransformer` selects DataFrame
//! columns by name has one input per column it uses, named after the column
//! (FP64 or BYTES, `[-1, 1]`; `[-1]` is accepted too). A text pipeline (one that
//! starts with a `CountVectorizer`, `TfidfVectorizer` or `HashingVectorizer`) has one
//! input `input`, BYTES `[-1]` (UTF-8, one document per row; `[-1, 1]` is accepted
//! too), so `{"instances": ["some text", ...]}` feeds it. Outputs: `predict` (`[-1]`:
//! INT64 or BYTES labels, FP64 values; `[-1, 1]` where scikit-learn's predict is 2-D,
//! as for a `LinearRegression` fitted on a target of one column) and, for classifiers
//! that have it, `predict_proba` (FP64 `[-1, n_classes]`).
//!
//! A text column (BYTES) has no missing value: scikit-learn reads a missing string
//! as `None` or NaN, which no tensor of text holds, so clients cannot send one
//! (`null` and a bare `NaN` are refused before the model; the string `"NaN"` is the
//! text NaN). A numeric column's missing value is NaN.

use std::path::Path;

use ferroserve_sklearn::{
    ClassLabels, Column, ColumnKind, Input, InputSchema, LoadOptions, Prediction, SklearnModel,
};

use super::{Backend, BackendError, ModelTraits, Signature};
use crate::tensor::{DataType, NamedTensor, Tensor, TensorData, TensorSpec};

/// The input of a model that takes a numeric matrix.
pub const MATRIX_INPUT: &str = "input";
pub const PREDICT_OUTPUT: &str = "predict";
pub const PROBA_OUTPUT: &str = "predict_proba";

pub struct SklearnBackend {
    model: SklearnModel,
    signature: Signature,
    traits: ModelTraits,
}

impl SklearnBackend {
    pub fn load(artifact: &Path) -> Result<SklearnBackend, BackendError> {
        SklearnBackend::load_with(artifact, None)
    }

    /// [`SklearnBackend::load`], serving the estimator at `wrapper_attribute` of the
    /// user's own wrapper object when given (the model's `[sklearn] wrapper_attribute`).
    pub fn load_with(
        artifact: &Path,
        wrapper_attribute: Option<&str>,
    ) -> Result<SklearnBackend, BackendError> {
        let bytes = std::fs::read(artifact)
            .map_err(|e| BackendError::Load(format!("{}: {e}", artifact.display())))?;
        let options = LoadOptions {
            wrapper_attribute: wrapper_attribute.map(str::to_owned),
        };
        let model = SklearnModel::load_with(&bytes, &options)
            .map_err(|e| BackendError::Load(format!("{}: {e}", artifact.display())))?;
        Ok(SklearnBackend::from_model(model))
    }

    pub fn from_model(model: SklearnModel) -> SklearnBackend {
        let inputs = match model.input_schema() {
            InputSchema::Dense { n_features } => vec![TensorSpec {
                name: MATRIX_INPUT.into(),
                dtype: DataType::F64,
                shape: vec![-1, *n_features as i64],
            }],
            InputSchema::Text => vec![TensorSpec {
                name: MATRIX_INPUT.into(),
                dtype: DataType::Bytes,
                shape: vec![-1],
            }],
            InputSchema::Columns(columns) => columns
                .iter()
                .filter(|c| c.used)
                .map(|c| TensorSpec {
                    name: c.name.clone(),
                    dtype: match c.kind {
                        ColumnKind::Numeric => DataType::F64,
                        ColumnKind::String => DataType::Bytes,
                    },
                    shape: vec![-1, 1],
                })
                .collect(),
        };
        let label_dtype = match model.classes() {
            Some(ClassLabels::Int(_)) => DataType::I64,
            Some(ClassLabels::Str(_)) => DataType::Bytes,
            Some(ClassLabels::Float(_)) | None => DataType::F64,
        };
        // scikit-learn's own predict shape: `[-1]`, or `[-1, k]` where it answers 2-D
        // (a `LinearRegression` fitted on a target of one column: `[-1, 1]`).
        let predict_shape = match model.predict_width() {
            Some(k) => vec![-1, k as i64],
            None => vec![-1],
        };
        let mut outputs = vec![TensorSpec {
            name: PREDICT_OUTPUT.into(),
            dtype: label_dtype,
            shape: predict_shape,
        }];
        if model.has_predict_proba() {
            let n_classes = model.classes().map_or(0, ClassLabels::len);
            outputs.push(TensorSpec {
                name: PROBA_OUTPUT.into(),
                dtype: DataType::F64,
                shape: vec![-1, n_classes as i64],
            });
        }
        let traits = ModelTraits {
            prediction_output: Some(PREDICT_OUTPUT.into()),
            probabilities_output: model.has_predict_proba().then(|| PROBA_OUTPUT.into()),
            class_labels: model.classes().map(ClassLabels::to_strings),
            feature_names: model.feature_names().map(<[String]>::to_vec),
            missing_inputs: Vec::new(),
            numeric_category_inputs: Vec::new(),
            ignored_inputs: match model.input_schema() {
                InputSchema::Columns(columns) => columns
                    .iter()
                    .filter(|c| !c.used)
                    .map(|c| c.name.clone())
                    .collect(),
                _ => Vec::new(),
            },
            trained: false,
            ranked_output: None,
        };
        SklearnBackend {
            model,
            signature: Signature { inputs, outputs },
            traits,
        }
    }

    /// Runs `f` on the request as the model's [`Input`].
    fn with_input<T>(
        &self,
        inputs: Vec<NamedTensor>,
        f: impl FnOnce(&Input<'_>) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        match self.model.input_schema() {
            InputSchema::Dense { n_features } => {
                let tensor = take_input(inputs, MATRIX_INPUT, true)?;
                let (shape, data) = as_f64(tensor, MATRIX_INPUT)?;
                let n_rows = match shape.as_slice() {
                    [n, d] if d == n_features => *n,
                    _ => {
                        return Err(BackendError::InvalidInput(format!(
                            "input {MATRIX_INPUT:?} must have shape [batch, {n_features}], got {shape:?}"
                        )))
                    }
                };
                f(&Input::dense(&data, n_rows, *n_features))
            }
            InputSchema::Text => {
                let tensor = take_input(inputs, MATRIX_INPUT, true)?;
                column_rows(tensor.shape(), MATRIX_INPUT)?;
                let docs = as_strings(tensor, MATRIX_INPUT)?
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect();
                f(&Input::Text(docs))
            }
            InputSchema::Columns(specs) => {
                let mut inputs = inputs;
                let mut columns = Vec::new();
                let mut n_rows = None;
                for spec in specs.iter().filter(|c| c.used) {
                    let tensor = take_input_by_name(&mut inputs, &spec.name)?;
                    let rows = column_rows(tensor.shape(), &spec.name)?;
                    if *n_rows.get_or_insert(rows) != rows {
                        return Err(BackendError::InvalidInput(format!(
                            "input {:?} has {rows} rows, others have {}",
                            spec.name,
                            n_rows.unwrap_or_default()
                        )));
                    }
                    let column = match spec.kind {
                        ColumnKind::Numeric => Column::Num(as_f64(tensor, &spec.name)?.1),
                        ColumnKind::String => Column::Str(as_strings(tensor, &spec.name)?),
                    };
                    columns.push((spec.name.clone(), column));
                }
                if let Some((name, _)) = inputs.first() {
                    return Err(BackendError::InvalidInput(format!(
                        "model has no input {name:?}"
                    )));
                }
                f(&Input::Columns(columns))
            }
        }
    }
}

/// The one matrix input: by name, or the only input given.
fn take_input(
    mut inputs: Vec<NamedTensor>,
    name: &str,
    allow_unnamed: bool,
) -> Result<Tensor, BackendError> {
    if allow_unnamed && inputs.len() == 1 {
        return Ok(inputs.pop().expect("one input").1);
    }
    take_input_by_name(&mut inputs, name)
}

fn take_input_by_name(inputs: &mut Vec<NamedTensor>, name: &str) -> Result<Tensor, BackendError> {
    let i = inputs
        .iter()
        .position(|(n, _)| n == name)
        .ok_or_else(|| BackendError::InvalidInput(format!("missing input {name:?}")))?;
    Ok(inputs.swap_remove(i).1)
}

fn column_rows(shape: &[usize], name: &str) -> Result<usize, BackendError> {
    match shape {
        [n] | [n, 1] => Ok(*n),
        _ => Err(BackendError::InvalidInput(format!(
            "input {name:?} must have shape [batch] or [batch, 1], got {shape:?}"
        ))),
    }
}

fn as_f64(tensor: Tensor, name: &str) -> Result<(Vec<usize>, Vec<f64>), BackendError> {
    let tensor = tensor
        .cast(DataType::F64)
        .map_err(|e| BackendError::InvalidInput(format!("input {name:?}: {e}")))?;
    match tensor.into_parts() {
        (shape, TensorData::F64(v)) => Ok((shape, v)),
        _ => unreachable!("cast to F64 gives F64"),
    }
}

fn as_strings(tensor: Tensor, name: &str) -> Result<Vec<Option<String>>, BackendError> {
    match tensor.into_parts() {
        (_, TensorData::Bytes(v)) => v
            .into_iter()
            .map(|b| {
                String::from_utf8(b).map(Some).map_err(|_| {
                    BackendError::InvalidInput(format!("input {name:?} holds invalid UTF-8"))
                })
            })
            .collect(),
        (_, other) => Err(BackendError::InvalidInput(format!(
            "input {name:?} must be BYTES (text), got {}",
            other.dtype()
        ))),
    }
}

/// `predict` as a tensor of scikit-learn's shape: `[rows]`, or `[rows, width]` when
/// the model's predict is 2-D (`SklearnModel::predict_width`).
fn prediction_tensor(p: Prediction, width: Option<usize>) -> Result<Tensor, BackendError> {
    let data = match p {
        Prediction::Labels(ClassLabels::Int(v)) => TensorData::I64(v),
        Prediction::Labels(ClassLabels::Str(v)) => {
            TensorData::Bytes(v.into_iter().map(String::into_bytes).collect())
        }
        Prediction::Labels(ClassLabels::Float(v)) | Prediction::Values(v) => TensorData::F64(v),
    };
    let shape = match width {
        Some(k) => vec![data.len().checked_div(k).unwrap_or(0), k],
        None => vec![data.len()],
    };
    Tensor::new(shape, data).map_err(|e| BackendError::Inference(e.to_string()))
}

impl Backend for SklearnBackend {
    fn format(&self) -> &'static str {
        "sklearn"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn traits(&self) -> &ModelTraits {
        &self.traits
    }

    fn predict(
        &self,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        let wanted: Vec<&str> = if output_names.is_empty() {
            self.signature
                .outputs
                .iter()
                .map(|o| o.name.as_str())
                .collect()
        } else {
            output_names.iter().map(String::as_str).collect()
        };
        for name in &wanted {
            if !self.signature.outputs.iter().any(|o| o.name == *name) {
                return Err(BackendError::InvalidInput(format!(
                    "model has no output {name:?}"
                )));
            }
        }
        let n_classes = self.model.classes().map_or(0, ClassLabels::len);
        self.with_input(inputs, |input| {
            let invalid =
                |e: ferroserve_sklearn::PredictError| BackendError::InvalidInput(e.to_string());
            wanted
                .iter()
                .map(|&name| {
                    let tensor = if name == PREDICT_OUTPUT {
                        prediction_tensor(
                            self.model.predict(input).map_err(invalid)?,
                            self.model.predict_width(),
                        )?
                    } else {
                        let p = self.model.predict_proba(input).map_err(invalid)?;
                        let rows = p.len().checked_div(n_classes).unwrap_or(0);
                        Tensor::new(vec![rows, n_classes], TensorData::F64(p))
                            .map_err(|e| BackendError::Inference(e.to_string()))?
                    };
                    Ok((name.to_string(), tensor))
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("crates/ferroserve-sklearn/tests/fixtures/sklearn/1.9.1")
            .join(name)
    }

    fn f64_matrix(rows: &[[f64; 4]]) -> Tensor {
        let data: Vec<f64> = rows.iter().flatten().copied().collect();
        Tensor::new(vec![rows.len(), 4], TensorData::F64(data)).unwrap()
    }

    #[test]
    fn classifier_signature_and_traits() {
        let b = SklearnBackend::load(&fixture("logreg_multinomial.z3.joblib")).unwrap();
        assert_eq!(b.format(), "sklearn");
        let sig = b.signature();
        assert_eq!(sig.inputs[0].name, "input");
        assert_eq!(sig.inputs[0].dtype, DataType::F64);
        assert_eq!(sig.inputs[0].shape, vec![-1, 4]);
        assert_eq!(sig.outputs[0].dtype, DataType::Bytes);
        assert_eq!(sig.outputs[1].shape, vec![-1, 3]);
        let t = b.traits();
        assert_eq!(t.prediction_output.as_deref(), Some("predict"));
        assert_eq!(t.probabilities_output.as_deref(), Some("predict_proba"));
        assert_eq!(
            t.class_labels.as_deref(),
            Some(
                &[
                    "setosa".to_string(),
                    "versicolor".into(),
                    "virginica".into()
                ][..]
            )
        );
    }

    #[test]
    fn predicts_labels_and_probabilities() {
        let b = SklearnBackend::load(&fixture("logreg_multinomial.z3.joblib")).unwrap();
        let x = f64_matrix(&[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]);
        let out = b.predict(vec![("input".into(), x)], &[]).unwrap();
        assert_eq!(out[0].0, "predict");
        assert_eq!(
            out[0].1.data(),
            &TensorData::Bytes(vec![b"setosa".to_vec(), b"virginica".to_vec()])
        );
        assert_eq!(out[1].1.shape(), &[2, 3]);
        let TensorData::F64(p) = out[1].1.data() else {
            panic!()
        };
        assert!((p[0] + p[1] + p[2] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn casts_other_numeric_inputs_and_selects_outputs() {
        let b = SklearnBackend::load(&fixture("logreg_multinomial.z3.joblib")).unwrap();
        let x = Tensor::new(vec![1, 4], TensorData::F32(vec![5.1, 3.5, 1.4, 0.2])).unwrap();
        let out = b
            .predict(vec![("input".into(), x)], &["predict_proba".into()])
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "predict_proba");
    }

    #[test]
    fn regressor_has_values_and_no_probabilities() {
        let b = SklearnBackend::load(&fixture("linear_regression.z3.joblib")).unwrap();
        assert_eq!(b.signature().outputs.len(), 1);
        assert_eq!(b.signature().outputs[0].dtype, DataType::F64);
        assert!(b.traits().probabilities_output.is_none());
        let x = Tensor::new(vec![1, 10], TensorData::F64(vec![0.01; 10])).unwrap();
        let out = b.predict(vec![("input".into(), x)], &[]).unwrap();
        assert_eq!(out[0].1.shape(), &[1]);
    }

    /// scikit-learn answers `(n_rows, 1)` for a `LinearRegression` fitted on a target
    /// of one column (it was a flat `[n_rows]`): the signature and the tensor say so.
    #[test]
    fn a_regressor_fitted_on_a_column_predicts_a_column() {
        let b =
            SklearnBackend::load(&fixture("linear_regression_column_target.z3.joblib")).unwrap();
        assert_eq!(b.signature().outputs[0].shape, vec![-1, 1]);
        let x = Tensor::new(vec![2, 10], TensorData::F64(vec![0.01; 20])).unwrap();
        let out = b.predict(vec![("input".into(), x)], &[]).unwrap();
        assert_eq!(out[0].1.shape(), &[2, 1]);
        assert!(b.signature().outputs[0].accepts_shape(out[0].1.shape()));
    }

    #[test]
    fn named_columns_take_one_input_each() {
        let b = SklearnBackend::load(&fixture("ct_onehot_logreg.z3.joblib")).unwrap();
        let names: Vec<(&str, DataType)> = b
            .signature()
            .inputs
            .iter()
            .map(|s| (s.name.as_str(), s.dtype))
            .collect();
        assert_eq!(
            names,
            vec![
                ("age", DataType::F64),
                ("city", DataType::Bytes),
                ("income", DataType::F64),
                ("color", DataType::Bytes)
            ]
        );
        let num = |v: f64| Tensor::new(vec![1, 1], TensorData::F64(vec![v])).unwrap();
        let text =
            |s: &str| Tensor::new(vec![1], TensorData::Bytes(vec![s.as_bytes().to_vec()])).unwrap();
        let inputs = vec![
            ("color".to_string(), text("red")),
            ("age".to_string(), num(65.0)),
            ("city".to_string(), text("berlin")),
            (
                "income".to_string(),
                Tensor::new(vec![1], TensorData::I64(vec![16111])).unwrap(),
            ),
        ];
        let out = b.predict(inputs, &[]).unwrap();
        assert_eq!(out[0].1.dtype(), DataType::Bytes);
        assert_eq!(out[1].1.shape(), &[1, 2]);
    }

    #[test]
    fn bad_inputs_are_invalid_input() {
        let b = SklearnBackend::load(&fixture("logreg_multinomial.z3.joblib")).unwrap();
        let wrong_width = Tensor::new(vec![1, 3], TensorData::F64(vec![1.0; 3])).unwrap();
        let err = b
            .predict(vec![("input".into(), wrong_width)], &[])
            .unwrap_err();
        assert!(matches!(err, BackendError::InvalidInput(_)), "{err}");
        let text = Tensor::new(vec![1, 1], TensorData::Bytes(vec![b"x".to_vec()])).unwrap();
        let err = b.predict(vec![("input".into(), text)], &[]).unwrap_err();
        assert!(matches!(err, BackendError::InvalidInput(_)), "{err}");
        let nan = f64_matrix(&[[f64::NAN, 1.0, 1.0, 1.0]]);
        let err = b.predict(vec![("input".into(), nan)], &[]).unwrap_err();
        assert!(err.to_string().contains("NaN"), "{err}");
        let x = f64_matrix(&[[1.0; 4]]);
        let err = b
            .predict(vec![("input".into(), x)], &["nope".into()])
            .unwrap_err();
        assert!(matches!(err, BackendError::InvalidInput(_)), "{err}");
    }

    #[test]
    fn unsupported_files_fail_to_load_with_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pkl");
        std::fs::write(&path, b"not a pickle").unwrap();
        let err = SklearnBackend::load(&path).err().expect("refused");
        assert!(matches!(err, BackendError::Load(_)));
        assert!(err.to_string().contains("model.pkl"), "{err}");
    }
}
