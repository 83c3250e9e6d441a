//! A scikit-learn model ready to predict: the public face of the native estimators.
//!
//! [`SklearnModel::from_value`] takes the value tree of a pickled estimator, a
//! `Pipeline`, or the wrapper dict `{"model": estimator, "feature_names": [...]}`,
//! and rebuilds it; anything it cannot reproduce exactly fails there, with a message
//! that names the class or option.

use crate::estimators::access::{as_list, as_str, Obj};
use crate::estimators::{
    build_predictor, build_transformer, split_pipeline, text, ClassLabels, ColumnKind,
    ColumnTransformer, Data, MatrixRef, Predictor, Rows, SparseRows, Table, Transformer,
};
use crate::value::Value;

pub use crate::estimators::Column;

/// Why a model cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read as a safe pickle (see the reader's error).
    #[error("cannot read the model file: {0}")]
    Read(String),
    /// A class or option this crate does not reproduce exactly.
    #[error("unsupported scikit-learn model: {0}")]
    Unsupported(String),
    /// The fitted attributes do not have the shape scikit-learn gives them.
    #[error("malformed scikit-learn model: {0}")]
    Malformed(String),
}

/// Why a request cannot be answered: the input does not fit the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictError {
    #[error("{0}")]
    InvalidInput(String),
}

/// One named input column of a model that selects its columns by name.
#[derive(Debug, Clone, PartialEq)]
pub struct InputColumn {
    pub name: String,
    pub kind: ColumnKind,
    /// False for columns the model drops: they may be left out of a request.
    pub used: bool,
}

/// What the model takes.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSchema {
    /// A numeric matrix of `n_features` columns.
    Dense { n_features: usize },
    /// Named columns (a `ColumnTransformer` fitted on a DataFrame, selecting by name or
    /// reading text; a first step such as `OneHotEncoder` fitted on a DataFrame with text).
    Columns(Vec<InputColumn>),
    /// One text per row (a pipeline that starts with a text vectorizer, or with an
    /// encoder of one text column fitted without a column name).
    Text,
}

/// Rows to predict.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    /// A row-major numeric matrix (NaN = missing).
    Dense(MatrixRef<'a>),
    /// Named columns of equal length, like a DataFrame.
    Columns(Vec<(String, Column)>),
    /// One document per row, for [`InputSchema::Text`].
    Text(Vec<String>),
}

impl<'a> Input<'a> {
    pub fn dense(data: &'a [f64], n_rows: usize, n_cols: usize) -> Input<'a> {
        Input::Dense(MatrixRef {
            data,
            n_rows,
            n_cols,
        })
    }
}

/// What `predict` gives: class labels for classifiers, values for regressors.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    Labels(ClassLabels),
    /// One value per row, or [`SklearnModel::predict_width`] values per row, row-major.
    Values(Vec<f64>),
}

/// How a model file is loaded. The default accepts only allowlisted classes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Serve the estimator held in this attribute of the user's own wrapper object
    /// (e.g. `"model"` for `class LogisticRegressionTrain: self.model = ...`). The
    /// wrapper's class is on no list: it is rebuilt as an inert bag of attributes only
    /// when the pickle merely creates it and fills its state (never a call), it must be
    /// the outermost object, and no other unknown class may appear anywhere in the file.
    /// Default: none (such files are refused by the class's name).
    pub wrapper_attribute: Option<String>,
}

/// A loaded scikit-learn model.
#[derive(Debug)]
pub struct SklearnModel {
    /// Pipeline steps before the final estimator, in order.
    transformers: Vec<Box<dyn Transformer>>,
    predictor: Predictor,
    input: InputSchema,
    feature_names: Option<Vec<String>>,
    /// A short description, e.g. `Pipeline(StandardScaler, LogisticRegression)`.
    description: String,
}

impl SklearnModel {
    /// Reads a pickle or joblib file and rebuilds the model in it.
    pub fn load(bytes: &[u8]) -> Result<SklearnModel, ModelError> {
        SklearnModel::load_with(bytes, &LoadOptions::default())
    }

    /// [`SklearnModel::load`] with options (wrapper objects).
    pub fn load_with(bytes: &[u8], options: &LoadOptions) -> Result<SklearnModel, ModelError> {
        let read = crate::ReadOptions {
            wrapper_objects: options.wrapper_attribute.is_some(),
        };
        let value = crate::read_model_file_with_options(bytes, &crate::Limits::default(), &read)
            .map_err(|e| match refusal_hint(&e) {
                Some(hint) => ModelError::Read(format!("{e}; {hint}")),
                None => ModelError::Read(e.to_string()),
            })?;
        match &options.wrapper_attribute {
            Some(attribute) => SklearnModel::from_value(unwrap_wrapper(&value, attribute)?),
            None => SklearnModel::from_value(&value),
        }
    }

    pub fn from_value(value: &Value) -> Result<SklearnModel, ModelError> {
        let (estimator, wrapper_names) = unwrap_dict(value)?;
        let (steps, last) = split_pipeline(estimator)?;
        let transformers = steps
            .iter()
            .map(|v| build_transformer(v))
            .collect::<Result<Vec<_>, _>>()?;
        let predictor = build_predictor(last)?;
        let first = steps.first().copied().unwrap_or(last);
        let first_obj = Obj::new(first)?;
        let feature_names = match wrapper_names {
            Some(names) => Some(names),
            None => first_step_feature_names(first_obj)?,
        };
        let input = if first_obj.name == "ColumnTransformer" {
            ColumnTransformer::build(first_obj)?.input_schema()?
        } else if text::is_vectorizer(first_obj.name) {
            if steps.is_empty() {
                return Err(ModelError::Unsupported(format!(
                    "a lone {} is a transformer, not a model to serve",
                    first_obj.name
                )));
            }
            InputSchema::Text
        } else {
            match transformers.first() {
                Some(t) if reads_text(t.as_ref()) => {
                    text_columns_schema(first_obj.name, t.as_ref(), feature_names.as_deref())?
                }
                Some(t) => InputSchema::Dense {
                    n_features: t.n_features_in().unwrap_or(predictor.n_features()),
                },
                None => InputSchema::Dense {
                    n_features: predictor.n_features(),
                },
            }
        };
        if let (Some(names), InputSchema::Dense { n_features }) = (&feature_names, &input) {
            if names.len() != *n_features {
                return Err(ModelError::Malformed(format!(
                    "{} feature names for {n_features} features",
                    names.len()
                )));
            }
        }
        let mut parts: Vec<String> = steps
            .iter()
            .map(|v| Obj::new(v).map(|o| o.name.to_string()))
            .collect::<Result<_, _>>()?;
        parts.push(Obj::new(last)?.name.to_string());
        let description = if parts.len() == 1 {
            parts.remove(0)
        } else {
            format!("Pipeline({})", parts.join(", "))
        };
        Ok(SklearnModel {
            transformers,
            predictor,
            input,
            feature_names,
            description,
        })
    }

    pub fn input_schema(&self) -> &InputSchema {
        &self.input
    }

    /// Input feature names, when the model knows them.
    pub fn feature_names(&self) -> Option<&[String]> {
        self.feature_names.as_deref()
    }

    pub fn is_classifier(&self) -> bool {
        matches!(self.predictor, Predictor::Classifier { .. })
    }

    /// Class labels in the column order of `predict_proba` (classifiers).
    pub fn classes(&self) -> Option<&ClassLabels> {
        match &self.predictor {
            Predictor::Classifier { classes, .. } => Some(classes),
            Predictor::Regressor(_) => None,
        }
    }

    /// Whether scikit-learn offers `predict_proba` for this model.
    pub fn has_predict_proba(&self) -> bool {
        match &self.predictor {
            Predictor::Classifier { model, .. } => model.has_proba(),
            Predictor::Regressor(_) => false,
        }
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn predict(&self, input: &Input<'_>) -> Result<Prediction, PredictError> {
        let x = self.prepare(input)?;
        let rows = rows_view(&x, &self.description)?;
        match &self.predictor {
            Predictor::Classifier { classes, model } => {
                let mut idx = Vec::with_capacity(rows.n_rows());
                model.predict_rows(rows, &mut idx)?;
                Ok(Prediction::Labels(classes.take(&idx)))
            }
            Predictor::Regressor(model) => {
                let mut out = Vec::with_capacity(rows.n_rows());
                model.predict_rows(rows, &mut out)?;
                Ok(Prediction::Values(out))
            }
        }
    }

    /// `Some(k)` when scikit-learn's `predict` answers a 2-D array `(n_rows, k)` (a
    /// `LinearRegression` fitted on a target of one column answers `(n_rows, 1)`):
    /// [`Prediction::Values`] then holds `k` values per row, row-major. `None` when it
    /// answers one label or value per row, `(n_rows,)`.
    pub fn predict_width(&self) -> Option<usize> {
        match &self.predictor {
            Predictor::Classifier { .. } => None,
            Predictor::Regressor(model) => model.predict_width(),
        }
    }

    /// The number of `decision_function` columns (1 for a binary classifier), or
    /// `None` when the final estimator has none.
    pub fn decision_width(&self) -> Option<usize> {
        match &self.predictor {
            Predictor::Classifier { model, .. } => model.decision_width(),
            Predictor::Regressor(_) => None,
        }
    }

    /// `decision_function`, row-major `[n_rows, decision_width()]`.
    pub fn decision_function(&self, input: &Input<'_>) -> Result<Vec<f64>, PredictError> {
        let Predictor::Classifier { model, .. } = &self.predictor else {
            return Err(PredictError::InvalidInput(format!(
                "{} is a regressor: it has no decision_function",
                self.description
            )));
        };
        if model.decision_width().is_none() {
            return Err(PredictError::InvalidInput(format!(
                "{} has no decision_function",
                self.description
            )));
        }
        let x = self.prepare(input)?;
        let mut out = Vec::new();
        model.decision_function(rows_view(&x, &self.description)?, &mut out)?;
        Ok(out)
    }

    /// Probabilities, row-major `[n_rows, n_classes]`.
    pub fn predict_proba(&self, input: &Input<'_>) -> Result<Vec<f64>, PredictError> {
        let Predictor::Classifier { model, classes } = &self.predictor else {
            return Err(PredictError::InvalidInput(format!(
                "{} is a regressor: it has no predict_proba",
                self.description
            )));
        };
        if !model.has_proba() {
            return Err(PredictError::InvalidInput(format!(
                "{} has no predict_proba",
                self.description
            )));
        }
        let x = self.prepare(input)?;
        let rows = rows_view(&x, &self.description)?;
        let mut out = Vec::with_capacity(rows.n_rows() * classes.len());
        model.predict_proba_rows(rows, &mut out)?;
        Ok(out)
    }

    /// The output of the steps before the final estimator (for a text pipeline, the
    /// vectorizer's sparse rows), as sparse rows.
    pub fn transform(&self, input: &Input<'_>) -> Result<SparseRows, PredictError> {
        Ok(match self.prepare(input)? {
            Data::Sparse(s) => s,
            Data::Borrowed(m) => SparseRows::from_dense(m),
            Data::Dense(m) => SparseRows::from_dense(m.view()),
            Data::Table(_) => unreachable!("prepare converts tables"),
        })
    }

    /// Turns the request into what the final estimator takes, running the steps.
    fn prepare<'a>(&self, input: &'a Input<'a>) -> Result<Data<'a>, PredictError> {
        let mut data = match (&self.input, input) {
            (InputSchema::Dense { n_features }, Input::Dense(m)) => {
                if m.n_cols != *n_features || m.data.len() != m.n_rows * m.n_cols {
                    return Err(PredictError::InvalidInput(format!(
                        "expected {n_features} features per row, got {} values for {} rows of {}",
                        m.data.len(),
                        m.n_rows,
                        m.n_cols
                    )));
                }
                Data::Borrowed(*m)
            }
            (InputSchema::Dense { n_features }, Input::Columns(cols)) => {
                Data::Table(self.dense_from_columns(cols, *n_features)?)
            }
            (InputSchema::Columns(schema), Input::Columns(cols)) => {
                Data::Table(table_from_columns(schema, cols)?)
            }
            (InputSchema::Columns(_), Input::Dense(_) | Input::Text(_)) => {
                return Err(PredictError::InvalidInput(
                    "this model takes named columns, not a matrix".into(),
                ))
            }
            (InputSchema::Dense { .. }, Input::Text(_)) => {
                return Err(PredictError::InvalidInput(
                    "this model takes numbers, not text".into(),
                ))
            }
            (InputSchema::Text, Input::Text(docs)) => Data::Table(Table {
                n_rows: docs.len(),
                columns: vec![Column::Str(docs.iter().cloned().map(Some).collect())],
                names: None,
            }),
            (InputSchema::Text, Input::Columns(cols)) => match cols.as_slice() {
                [(_, col @ Column::Str(_))] => Data::Table(build_table(vec![col], None)?),
                _ => {
                    return Err(PredictError::InvalidInput(
                        "this model takes one text per row (one column of strings)".into(),
                    ))
                }
            },
            (InputSchema::Text, Input::Dense(_)) => {
                return Err(PredictError::InvalidInput(
                    "this model takes one text per row, not numbers".into(),
                ))
            }
        };
        for step in &self.transformers {
            data = step.transform(data)?;
        }
        if let Data::Table(_) = data {
            data = Data::Dense(data.into_dense(&self.description)?);
        }
        Ok(data)
    }

    /// Named numeric columns for a model that takes a matrix: in the order of its
    /// feature names when it knows them, else in the order given.
    fn dense_from_columns(
        &self,
        cols: &[(String, Column)],
        n_features: usize,
    ) -> Result<Table, PredictError> {
        let ordered: Vec<&Column> = match &self.feature_names {
            Some(names) => names
                .iter()
                .map(|n| {
                    cols.iter()
                        .find(|(c, _)| c == n)
                        .map(|(_, col)| col)
                        .ok_or_else(|| {
                            PredictError::InvalidInput(format!("missing input column {n:?}"))
                        })
                })
                .collect::<Result<_, _>>()?,
            None => cols.iter().map(|(_, c)| c).collect(),
        };
        if ordered.len() != n_features {
            return Err(PredictError::InvalidInput(format!(
                "expected {n_features} columns, got {}",
                ordered.len()
            )));
        }
        build_table(ordered, self.feature_names.clone())
    }
}

fn table_from_columns(
    schema: &[InputColumn],
    cols: &[(String, Column)],
) -> Result<Table, PredictError> {
    let mut ordered = Vec::with_capacity(schema.len());
    let mut placeholders = Vec::new();
    for spec in schema {
        match cols.iter().find(|(c, _)| *c == spec.name) {
            Some((_, col)) => {
                let ok = matches!(
                    (spec.kind, col),
                    (ColumnKind::Numeric, Column::Num(_)) | (ColumnKind::String, Column::Str(_))
                );
                if !ok && spec.used {
                    return Err(PredictError::InvalidInput(format!(
                        "column {:?} must hold {}",
                        spec.name,
                        if spec.kind == ColumnKind::Numeric {
                            "numbers"
                        } else {
                            "text"
                        }
                    )));
                }
                ordered.push(Some(col));
            }
            None if !spec.used => {
                ordered.push(None);
            }
            None => {
                return Err(PredictError::InvalidInput(format!(
                    "missing input column {:?}",
                    spec.name
                )))
            }
        }
    }
    let n_rows = ordered
        .iter()
        .flatten()
        .map(|c| c.len())
        .next()
        .unwrap_or(0);
    for (slot, spec) in ordered.iter_mut().zip(schema) {
        if slot.is_none() {
            // A column the model drops: an empty stand-in of the right length.
            placeholders.push((spec.name.clone(), Column::Num(vec![f64::NAN; n_rows])));
        }
    }
    let mut fill = placeholders.iter();
    let columns: Vec<&Column> = ordered
        .into_iter()
        .map(|c| c.unwrap_or_else(|| &fill.next().expect("one placeholder per gap").1))
        .collect();
    build_table(
        columns,
        Some(schema.iter().map(|c| c.name.clone()).collect()),
    )
}

fn build_table(columns: Vec<&Column>, names: Option<Vec<String>>) -> Result<Table, PredictError> {
    let n_rows = columns.first().map_or(0, |c| c.len());
    if columns.iter().any(|c| c.len() != n_rows) {
        return Err(PredictError::InvalidInput(
            "input columns have different lengths".into(),
        ));
    }
    Ok(Table {
        n_rows,
        columns: columns.into_iter().cloned().collect(),
        names,
    })
}

/// `feature_names_in_` of a pipeline's first step; for a nested `Pipeline` there, of
/// its own first step (scikit-learn's `Pipeline.feature_names_in_` is a property that
/// asks the first step, so a pickled pipeline does not hold it).
fn first_step_feature_names(obj: Obj<'_>) -> Result<Option<Vec<String>>, ModelError> {
    if obj.name != "Pipeline" {
        return obj.feature_names();
    }
    match crate::estimators::pipeline_steps(obj)?.first() {
        Some(first) => first_step_feature_names(Obj::new(first)?),
        None => Ok(None),
    }
}

/// Whether a first step (other than a `ColumnTransformer` or a vectorizer) reads text
/// in some input column: an encoder or an imputer fitted on text.
fn reads_text(first: &dyn Transformer) -> bool {
    first
        .n_features_in()
        .is_some_and(|n| (0..n).any(|j| first.input_kind(j) == ColumnKind::String))
}

/// The input of a pipeline whose first step reads text columns without a
/// `ColumnTransformer` (e.g. `make_pipeline(OneHotEncoder(), LogisticRegression())`):
/// the inputs a `ColumnTransformer` over the same columns gets. With column names (a
/// DataFrame's `feature_names_in_`, or the wrapper dict's), one input per column, named,
/// of the kind the step reads there. Without names, one text per row when there is a
/// single column; several unnamed text columns are refused, since a request carries
/// text only one per row or in named columns.
fn text_columns_schema(
    step: &str,
    first: &dyn Transformer,
    names: Option<&[String]>,
) -> Result<InputSchema, ModelError> {
    let n_features = first.n_features_in().unwrap_or(0);
    match names {
        Some(names) if names.len() != n_features => Err(ModelError::Malformed(format!(
            "{} feature names for {n_features} features",
            names.len()
        ))),
        Some(names) => Ok(InputSchema::Columns(
            names
                .iter()
                .enumerate()
                .map(|(j, name)| InputColumn {
                    name: name.clone(),
                    kind: first.input_kind(j),
                    used: true,
                })
                .collect(),
        )),
        None if n_features == 1 => Ok(InputSchema::Text),
        None => Err(ModelError::Unsupported(format!(
            "{step}: it reads text in {n_features} columns of an array without column names, \
             which a request cannot carry (text comes one text per row, or in named columns); \
             fit it on a pandas DataFrame with named columns, or give their names in the \
             {{\"model\": ..., \"feature_names\": [...]}} wrapper"
        ))),
    }
}

/// The final estimator's input: a numeric matrix view or sparse rows.
fn rows_view<'a>(x: &'a Data<'a>, who: &str) -> Result<Rows<'a>, PredictError> {
    match x {
        Data::Borrowed(m) => Ok(Rows::Dense(*m)),
        Data::Dense(m) => Ok(Rows::Dense(m.view())),
        Data::Sparse(s) => Ok(Rows::Sparse(s)),
        Data::Table(_) => Err(PredictError::InvalidInput(format!(
            "{who}: the final estimator needs numbers (convert the table first)"
        ))),
    }
}

/// What a refused class says about the model, for classes that scikit-learn pickles
/// only inside features this crate does not support.
fn refusal_hint(e: &crate::LoadError) -> Option<&'static str> {
    match e {
        crate::LoadError::Refused { module, name }
            if module == "functools" && name == "partial" =>
        {
            Some(
                "scikit-learn pickles it inside HistGradientBoosting models fitted with \
                 categorical features (categorical features are not supported) and inside a \
                 FunctionTransformer with a function (not supported)",
            )
        }
        _ => None,
    }
}

/// Whether `module.name` is a class the reader accepts without the wrapper opt-in.
fn is_listed(module: &str, name: &str) -> bool {
    crate::allowlist::resolve(module, name).is_ok()
}

/// The value at `attribute` of the outermost object when it is the user's own wrapper
/// class (or the value itself when it is not a wrapper). Refuses an unknown class
/// anywhere else in the file, and a wrapper without that attribute.
fn unwrap_wrapper<'v>(value: &'v Value, attribute: &str) -> Result<&'v Value, ModelError> {
    let inner = match value {
        Value::Object {
            module,
            name,
            state,
            ..
        } if !is_listed(module, name) => {
            let attributes = match state.as_deref() {
                Some(Value::Dict(items)) => items,
                _ => {
                    return Err(ModelError::Unsupported(format!(
                        "wrapper object {module}.{name} has no attributes"
                    )))
                }
            };
            let found = attributes
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == attribute))
                .map(|(_, v)| v);
            match found {
                Some(v) => v,
                None => {
                    let names: Vec<&str> =
                        attributes.iter().filter_map(|(k, _)| as_str(k)).collect();
                    return Err(ModelError::Unsupported(format!(
                        "wrapper object {module}.{name} has no attribute {attribute:?} \
                         (it has {names:?}); set [sklearn] wrapper_attribute to the one \
                         holding the estimator"
                    )));
                }
            }
        }
        other => other,
    };
    // Only the outermost object may be of an unknown class: the estimator and the
    // wrapper's other attributes must hold allowlisted classes only.
    let mut stack: Vec<(&Value, bool)> = vec![(value, true)];
    while let Some((v, outermost)) = stack.pop() {
        match v {
            Value::Object {
                module,
                name,
                args,
                state,
            } => {
                if !outermost && !is_listed(module, name) {
                    return Err(ModelError::Unsupported(format!(
                        "unknown class {module}.{name} inside the wrapper object: only the \
                         outermost object may be a wrapper of the user's own class"
                    )));
                }
                stack.extend(args.iter().map(|a| (a, false)));
                if let Some(state) = state.as_deref() {
                    stack.push((state, false));
                }
            }
            Value::List(items) | Value::Tuple(items) | Value::Set(items) => {
                stack.extend(items.iter().map(|a| (a, false)));
            }
            Value::Dict(pairs) => {
                for (k, v) in pairs.iter() {
                    stack.push((k, false));
                    stack.push((v, false));
                }
            }
            Value::Array(array) => {
                if let crate::value::ArrayData::Object(items) = &array.data {
                    stack.extend(items.iter().map(|a| (a, false)));
                }
            }
            _ => {}
        }
    }
    match inner {
        Value::Object { .. } | Value::Dict(_) => Ok(inner),
        _ => Err(ModelError::Unsupported(format!(
            "the wrapper attribute {attribute:?} does not hold a scikit-learn estimator"
        ))),
    }
}

/// Unwraps `{"model": estimator, "feature_names": [...]}`.
fn unwrap_dict(value: &Value) -> Result<(&Value, Option<Vec<String>>), ModelError> {
    let Value::Dict(items) = value else {
        return Ok((value, None));
    };
    let get = |key: &str| {
        items
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            .map(|(_, v)| v)
    };
    let model = get("model")
        .ok_or_else(|| ModelError::Unsupported("a dict without a \"model\" entry".into()))?;
    let names = match get("feature_names") {
        None | Some(Value::None) => None,
        Some(v) => Some(
            as_list(v)
                .and_then(|items| {
                    items
                        .iter()
                        .map(|i| as_str(i).map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                })
                .or_else(|| match v {
                    Value::Array(a) => match crate::estimators::access::array_labels(a) {
                        Some(ClassLabels::Str(names)) => Some(names),
                        _ => None,
                    },
                    _ => None,
                })
                .ok_or_else(|| {
                    ModelError::Malformed("\"feature_names\" is not a list of strings".into())
                })?,
        ),
    };
    // A name given twice would make a request by name fill both columns with one value
    // (as `feature_names` in config.toml, it is refused).
    if let Some(names) = &names {
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = names.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(ModelError::Malformed(format!(
                "\"feature_names\" names {twice:?} twice; each feature is one column"
            )));
        }
    }
    Ok((model, names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{ArrayData, DType, NdArray};
    use std::sync::Arc;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    fn floats(shape: Vec<usize>, v: Vec<f64>) -> Value {
        Value::Array(Arc::new(NdArray {
            dtype: DType::F64,
            shape,
            data: ArrayData::Float(v),
        }))
    }

    fn ints(v: Vec<i64>) -> Value {
        Value::Array(Arc::new(NdArray {
            dtype: DType::I64,
            shape: vec![v.len()],
            data: ArrayData::Int(v),
        }))
    }

    fn object(module: &str, name: &str, state: Vec<(&str, Value)>) -> Value {
        let mut items: Vec<(Value, Value)> = state.into_iter().map(|(k, v)| (s(k), v)).collect();
        items.push((s("_sklearn_version"), s("1.9.1")));
        Value::Object {
            module: module.into(),
            name: name.into(),
            args: Arc::new(vec![]),
            state: Some(Arc::new(Value::Dict(Arc::new(items)))),
        }
    }

    fn sgd(loss: &str) -> Value {
        object(
            "sklearn.linear_model._stochastic_gradient",
            "SGDClassifier",
            vec![
                ("loss", s(loss)),
                ("coef_", floats(vec![1, 2], vec![1.0, -1.0])),
                ("intercept_", floats(vec![1], vec![0.0])),
                ("classes_", ints(vec![0, 1])),
            ],
        )
    }

    #[test]
    fn unsupported_estimators_and_options_fail_the_load_by_name() {
        let svm = object("sklearn.svm._classes", "OneClassSVM", vec![]);
        let err = SklearnModel::from_value(&svm).unwrap_err();
        assert!(matches!(err, ModelError::Unsupported(_)));
        assert!(err.to_string().contains("OneClassSVM"), "{err}");

        let err = SklearnModel::from_value(&sgd("made_up_loss")).unwrap_err();
        assert!(err.to_string().contains("made_up_loss"), "{err}");

        let no_model = Value::Dict(Arc::new(vec![(s("features"), Value::None)]));
        assert!(SklearnModel::from_value(&no_model).is_err());
    }

    #[test]
    fn sgd_hinge_has_no_predict_proba_and_modified_huber_has() {
        let hinge = SklearnModel::from_value(&sgd("hinge")).unwrap();
        assert!(!hinge.has_predict_proba());
        let x = [1.0, 0.0];
        assert!(hinge.predict_proba(&Input::dense(&x, 1, 2)).is_err());
        let mh = SklearnModel::from_value(&sgd("modified_huber")).unwrap();
        let p = mh.predict_proba(&Input::dense(&x, 1, 2)).unwrap();
        assert_eq!(p, vec![0.0, 1.0]);
        assert_eq!(
            mh.predict(&Input::dense(&x, 1, 2)).unwrap(),
            Prediction::Labels(ClassLabels::Int(vec![1]))
        );
    }

    #[test]
    fn wrapper_dict_gives_feature_names() {
        let names = Value::List(Arc::new(vec![s("a"), s("b")]));
        let wrapped = Value::Dict(Arc::new(vec![
            (s("model"), sgd("hinge")),
            (s("feature_names"), names),
        ]));
        let model = SklearnModel::from_value(&wrapped).unwrap();
        assert_eq!(
            model.feature_names(),
            Some(&["a".to_string(), "b".into()][..])
        );
        assert_eq!(model.input_schema(), &InputSchema::Dense { n_features: 2 });
        // Named numeric columns are put in feature-name order.
        let cols = vec![
            ("b".to_string(), Column::Num(vec![0.0])),
            ("a".to_string(), Column::Num(vec![1.0])),
        ];
        assert_eq!(
            model.predict(&Input::Columns(cols)).unwrap(),
            Prediction::Labels(ClassLabels::Int(vec![1]))
        );
    }

    #[test]
    fn wrapper_dict_refuses_a_feature_name_given_twice() {
        let names = Value::List(Arc::new(vec![s("a"), s("a")]));
        let wrapped = Value::Dict(Arc::new(vec![
            (s("model"), sgd("hinge")),
            (s("feature_names"), names),
        ]));
        let err = SklearnModel::from_value(&wrapped).unwrap_err();
        assert!(matches!(err, ModelError::Malformed(_)), "{err}");
        assert!(
            err.to_string()
                .contains("\"feature_names\" names \"a\" twice"),
            "{err}"
        );
    }

    fn knn(method: &str) -> Value {
        object(
            "sklearn.neighbors._classification",
            "KNeighborsClassifier",
            vec![
                ("n_neighbors", Value::Int(1)),
                ("weights", s("uniform")),
                ("effective_metric_", s("euclidean")),
                ("_fit_method", s(method)),
                ("_fit_X", floats(vec![2, 1], vec![-1.0, 1.0])),
                ("_y", ints(vec![0, 1])),
                ("classes_", ints(vec![10, 20])),
            ],
        )
    }

    #[test]
    fn knn_ties_follow_the_index_for_brute_and_are_refused_for_trees() {
        let x = [0.0];
        let brute = SklearnModel::from_value(&knn("brute")).unwrap();
        assert_eq!(
            brute.predict(&Input::dense(&x, 1, 1)).unwrap(),
            Prediction::Labels(ClassLabels::Int(vec![10]))
        );
        let kd = SklearnModel::from_value(&knn("kd_tree")).unwrap();
        assert!(kd.predict(&Input::dense(&x, 1, 1)).is_err());
        let away = [0.5];
        assert_eq!(
            kd.predict(&Input::dense(&away, 1, 1)).unwrap(),
            Prediction::Labels(ClassLabels::Int(vec![20]))
        );
    }
}
