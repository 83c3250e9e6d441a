//! `Pipeline` and `ColumnTransformer`.

use super::access::{array_i64, as_f64, as_i64, as_list, as_str, describe, Obj};
use super::{
    build_predictor, build_transformer, text, Classifier, Column, ColumnKind, Data, Matrix,
    MatrixRef, Predictor, Rows, SparseRows, Table, Transformer,
};
use crate::model::{InputColumn, InputSchema, ModelError, PredictError};
use crate::value::{ArrayData, Value};

/// The steps of a (possibly nested) `Pipeline`, minus `"passthrough"` / `None` steps:
/// the transformers in order and the final estimator. A value that is not a pipeline
/// is its own final estimator.
pub(crate) fn split_pipeline(value: &Value) -> Result<(Vec<&Value>, &Value), ModelError> {
    let obj = Obj::new(value)?;
    if obj.name != "Pipeline" {
        return Ok((vec![], value));
    }
    let mut steps = pipeline_steps(obj)?;
    let last = steps
        .pop()
        .ok_or_else(|| obj.malformed("a pipeline without steps"))?;
    let (mut inner, last) = split_pipeline(last)?;
    steps.append(&mut inner);
    Ok((steps, last))
}

/// A `Pipeline`'s steps in order, minus `"passthrough"` / `None` steps (not split
/// further: a nested pipeline is one step).
pub(crate) fn pipeline_steps<'a>(obj: Obj<'a>) -> Result<Vec<&'a Value>, ModelError> {
    let mut steps = Vec::new();
    for step in obj.list("steps")? {
        let pair = as_list(step)
            .filter(|p| p.len() == 2)
            .ok_or_else(|| obj.malformed("a step is not a (name, estimator) pair"))?;
        match &pair[1] {
            Value::None => {}
            Value::Str(s) if s == "passthrough" => {}
            other => steps.push(other),
        }
    }
    Ok(steps)
}

/// A `Pipeline` of transformers only (inside a `ColumnTransformer`).
#[derive(Debug)]
struct TransformerPipeline {
    steps: Vec<Box<dyn Transformer>>,
}

pub(crate) fn build_transformer_pipeline(obj: Obj<'_>) -> Result<Box<dyn Transformer>, ModelError> {
    let steps = pipeline_steps(obj)?
        .into_iter()
        .map(build_transformer)
        .collect::<Result<Vec<_>, _>>()?;
    if steps.is_empty() {
        return Err(obj.unsupported("a pipeline of passthrough steps only"));
    }
    Ok(Box::new(TransformerPipeline { steps }))
}

impl Transformer for TransformerPipeline {
    fn n_features_in(&self) -> Option<usize> {
        self.steps[0].n_features_in()
    }

    fn input_kind(&self, j: usize) -> ColumnKind {
        self.steps[0].input_kind(j)
    }

    fn transform(&self, x: Data<'_>) -> Result<Data<'static>, PredictError> {
        let mut steps = self.steps.iter();
        let mut data = steps.next().expect("non-empty").transform(x)?;
        for step in steps {
            data = step.transform(data)?;
        }
        Ok(data)
    }
}

/// A `Pipeline` used as an estimator inside another one (the base estimator of
/// `CalibratedClassifierCV`): its transformers, then its final classifier. It takes the
/// numeric matrix its first step takes; pipelines that start with named or text
/// columns are refused, since the model around them takes a matrix.
#[derive(Debug)]
struct PipelineClassifier {
    steps: Vec<Box<dyn Transformer>>,
    model: Box<dyn Classifier>,
    n_features: usize,
}

pub(crate) fn build_pipeline_predictor(value: &Value) -> Result<Predictor, ModelError> {
    let (steps, last) = split_pipeline(value)?;
    if let Some(first) = steps.first() {
        let first = Obj::new(first)?;
        if first.name == "ColumnTransformer" || text::is_vectorizer(first.name) {
            return Err(first.unsupported(
                "a pipeline that starts with a ColumnTransformer or a text vectorizer inside \
                 another estimator (e.g. as the base of CalibratedClassifierCV); put the \
                 calibrated classifier last in the pipeline instead",
            ));
        }
    }
    let steps = steps
        .into_iter()
        .map(build_transformer)
        .collect::<Result<Vec<_>, _>>()?;
    // An encoder or imputer fitted on text would get the numbers the model around it
    // passes: no request could ever reach it with text.
    if let Some(first) = steps.first() {
        if let Some(n) = first.n_features_in() {
            if (0..n).any(|j| first.input_kind(j) == ColumnKind::String) {
                return Err(ModelError::Unsupported(
                    "a pipeline whose first step reads text columns inside another estimator \
                     (e.g. as the base of CalibratedClassifierCV); put the calibrated \
                     classifier last in the pipeline instead"
                        .into(),
                ));
            }
        }
    }
    let (classes, model) = match build_predictor(last)? {
        Predictor::Classifier { classes, model } => (classes, model),
        Predictor::Regressor(_) => {
            return Err(ModelError::Unsupported(
                "a pipeline ending in a regressor inside another estimator".into(),
            ))
        }
    };
    let n_features = match steps.first() {
        Some(t) => t.n_features_in().unwrap_or(model.n_features()),
        None => model.n_features(),
    };
    Ok(Predictor::Classifier {
        classes,
        model: Box::new(PipelineClassifier {
            steps,
            model,
            n_features,
        }),
    })
}

impl PipelineClassifier {
    /// Runs the transformers, then `f` on the final estimator's rows.
    fn run<T>(
        &self,
        x: Rows<'_>,
        f: impl FnOnce(Rows<'_>) -> Result<T, PredictError>,
    ) -> Result<T, PredictError> {
        let mut data = match x {
            Rows::Dense(m) => Data::Borrowed(m),
            Rows::Sparse(s) => Data::Sparse(s.clone()),
        };
        for step in &self.steps {
            data = step.transform(data)?;
        }
        match data {
            Data::Borrowed(m) => f(Rows::Dense(m)),
            Data::Sparse(s) => f(Rows::Sparse(&s)),
            other => {
                let m = other.into_dense("Pipeline")?;
                f(Rows::Dense(m.view()))
            }
        }
    }
}

impl Classifier for PipelineClassifier {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn name(&self) -> &str {
        "Pipeline"
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        self.run(Rows::Dense(x), |r| self.model.predict_rows(r, out))
    }

    fn predict_sparse(&self, x: &SparseRows, out: &mut Vec<usize>) -> Result<(), PredictError> {
        self.run(Rows::Sparse(x), |r| self.model.predict_rows(r, out))
    }

    fn has_proba(&self) -> bool {
        self.model.has_proba()
    }

    fn predict_proba(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.run(Rows::Dense(x), |r| self.model.predict_proba_rows(r, out))
    }

    fn predict_proba_sparse(&self, x: &SparseRows, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.run(Rows::Sparse(x), |r| self.model.predict_proba_rows(r, out))
    }

    /// `Pipeline.decision_function` exists when the final estimator's does.
    fn decision_width(&self) -> Option<usize> {
        self.model.decision_width()
    }

    fn decision_function(&self, x: Rows<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.run(x, |r| self.model.decision_function(r, out))
    }
}

#[derive(Debug)]
enum Part {
    Drop,
    Passthrough,
    Apply(Box<dyn Transformer>),
}

/// One entry of `transformers_`: what it does, the input columns it reads, and its
/// `transformer_weights` entry.
#[derive(Debug)]
struct Entry {
    part: Part,
    columns: Vec<usize>,
    /// scikit-learn multiplies this part's output by the weight (`_transform_one`),
    /// passthrough and the remainder (keyed `"remainder"`) included.
    weight: Option<f64>,
}

/// A fitted `ColumnTransformer`: each part reads some input columns; the outputs are
/// stacked side by side in the order of `transformers_`.
#[derive(Debug)]
pub(crate) struct ColumnTransformer {
    parts: Vec<Entry>,
    n_features_in: usize,
    feature_names_in: Option<Vec<String>>,
    /// Whether any part selects its columns by name.
    by_name: bool,
}

impl ColumnTransformer {
    pub fn build(obj: Obj<'_>) -> Result<ColumnTransformer, ModelError> {
        let feature_names_in = obj.feature_names()?;
        let n_features_in = match (obj.n_features_in()?, &feature_names_in) {
            (Some(n), _) => n,
            (None, Some(names)) => names.len(),
            (None, None) => obj.usize("_n_features")?,
        };
        let weights = transformer_weights(obj)?;
        let mut parts = Vec::new();
        let mut by_name = false;
        for entry in obj.list("transformers_")? {
            let triple = as_list(entry)
                .filter(|t| t.len() == 3)
                .ok_or_else(|| obj.malformed("a transformers_ entry is not a triple"))?;
            let (columns, named) =
                resolve_columns(obj, &triple[2], n_features_in, feature_names_in.as_deref())?;
            by_name |= named;
            let part = match &triple[1] {
                // scikit-learn neither fits nor calls a transformer that selects no
                // column (`_is_empty_column_selection`): it adds nothing, and an
                // estimator there has no fitted attributes to build from.
                _ if columns.is_empty() => Part::Drop,
                Value::Str(s) if s == "drop" => Part::Drop,
                Value::Str(s) if s == "passthrough" => Part::Passthrough,
                Value::None => Part::Drop,
                Value::Object { .. } => Part::Apply(build_transformer(&triple[1])?),
                other => return Err(obj.unsupported(format!("transformer {}", describe(other)))),
            };
            if let Part::Apply(t) = &part {
                if let Some(n) = t.n_features_in() {
                    if n != columns.len() && !columns.is_empty() {
                        return Err(obj.malformed(format!(
                            "a transformer of {n} features gets {} columns",
                            columns.len()
                        )));
                    }
                }
            }
            let weight = as_str(&triple[0])
                .and_then(|name| weights.iter().find(|(n, _)| n == name))
                .map(|(_, w)| *w);
            parts.push(Entry {
                part,
                columns,
                weight,
            });
        }
        Ok(ColumnTransformer {
            parts,
            n_features_in,
            feature_names_in,
            by_name,
        })
    }

    /// The input columns: named (with the kind each needs) when the transformer was
    /// fitted on a DataFrame and selects by name or reads text (a request carries text
    /// only in named columns), else a numeric matrix. Text columns chosen by position
    /// in an array without column names are refused: no request could carry them.
    pub fn input_schema(&self) -> Result<InputSchema, ModelError> {
        let reads_text = (0..self.n_features_in).any(|j| self.input_kind(j) == ColumnKind::String);
        let names =
            match &self.feature_names_in {
                Some(names) if self.by_name || reads_text => names,
                None if reads_text => return Err(ModelError::Unsupported(
                    "ColumnTransformer: it selects text columns by position in an array without \
                     column names, which a request cannot carry; fit it on a pandas DataFrame \
                     with named columns"
                        .into(),
                )),
                _ => {
                    return Ok(InputSchema::Dense {
                        n_features: self.n_features_in,
                    })
                }
            };
        let mut columns: Vec<InputColumn> = names
            .iter()
            .map(|n| InputColumn {
                name: n.clone(),
                kind: ColumnKind::Numeric,
                used: false,
            })
            .collect();
        for Entry {
            part,
            columns: cols,
            ..
        } in &self.parts
        {
            for (k, &j) in cols.iter().enumerate() {
                match part {
                    Part::Drop => {}
                    Part::Passthrough => columns[j].used = true,
                    Part::Apply(t) => {
                        columns[j].used = true;
                        if t.input_kind(k) == ColumnKind::String {
                            columns[j].kind = ColumnKind::String;
                        }
                    }
                }
            }
        }
        Ok(InputSchema::Columns(columns))
    }
}

/// `transformer_weights`: (transformer name, weight) pairs; empty when `None`.
fn transformer_weights(obj: Obj<'_>) -> Result<Vec<(String, f64)>, ModelError> {
    match obj.some("transformer_weights") {
        None => Ok(Vec::new()),
        Some(Value::Dict(items)) => items
            .iter()
            .map(|(k, v)| match (as_str(k), as_f64(v)) {
                (Some(name), Some(w)) if !matches!(v, Value::Bool(_)) => Ok((name.to_owned(), w)),
                _ => Err(obj.unsupported(format!(
                    "a transformer_weights entry {}: {}",
                    describe(k),
                    describe(v)
                ))),
            })
            .collect(),
        Some(other) => Err(obj.unsupported(format!("transformer_weights {}", describe(other)))),
    }
}

/// A part's output times its weight (`res * weight`): every value of a dense matrix,
/// the stored values of sparse rows. Text cannot be weighted (scikit-learn fails to
/// fit such a model).
fn scale(out: Data<'static>, weight: f64) -> Result<Data<'static>, PredictError> {
    Ok(match out {
        Data::Sparse(mut s) => {
            s.data.iter_mut().for_each(|v| *v *= weight);
            Data::Sparse(s)
        }
        Data::Table(t) if t.columns.iter().any(|c| matches!(c, Column::Str(_))) => {
            return Err(PredictError::InvalidInput(
                "ColumnTransformer: a weighted part outputs text".into(),
            ))
        }
        other => {
            let mut m = other.into_dense("ColumnTransformer")?;
            m.data.iter_mut().for_each(|v| *v *= weight);
            Data::Dense(m)
        }
    })
}

/// Column indices of a `transformers_` entry, and whether it selected by name.
fn resolve_columns(
    obj: Obj<'_>,
    spec: &Value,
    n_features: usize,
    names: Option<&[String]>,
) -> Result<(Vec<usize>, bool), ModelError> {
    let by_name = |name: &str| -> Result<usize, ModelError> {
        names
            .and_then(|ns| ns.iter().position(|n| n == name))
            .ok_or_else(|| obj.malformed(format!("column {name:?} is not among feature_names_in_")))
    };
    let by_index = |i: i64| -> Result<usize, ModelError> {
        let j = if i < 0 { i + n_features as i64 } else { i };
        usize::try_from(j)
            .ok()
            .filter(|&j| j < n_features)
            .ok_or_else(|| obj.malformed(format!("column index {i} out of range")))
    };
    let one = |v: &Value| -> Result<(usize, bool), ModelError> {
        if let Some(s) = as_str(v) {
            return Ok((by_name(s)?, true));
        }
        match as_i64(v) {
            Some(i) if !matches!(v, Value::Bool(_)) => Ok((by_index(i)?, false)),
            _ => Err(obj.unsupported(format!("column selector {}", describe(v)))),
        }
    };
    match spec {
        Value::Str(_) | Value::Int(_) => {
            let (j, named) = one(spec)?;
            Ok((vec![j], named))
        }
        Value::Array(a) => match &a.data {
            ArrayData::Bool(mask) if mask.len() == n_features => Ok((
                mask.iter()
                    .enumerate()
                    .filter(|(_, &m)| m)
                    .map(|(j, _)| j)
                    .collect(),
                false,
            )),
            ArrayData::Str(v) => Ok((
                v.iter().map(|s| by_name(s)).collect::<Result<_, _>>()?,
                true,
            )),
            ArrayData::Object(items) => collect(items.iter().map(one)),
            data => match array_i64(data) {
                Some(ints) => Ok((
                    ints.into_iter().map(by_index).collect::<Result<_, _>>()?,
                    false,
                )),
                None => Err(obj.unsupported("column selector array")),
            },
        },
        Value::Object { name, state, .. } if name == "_RemainderColsList" => {
            // scikit-learn 1.5-1.6 wrap the remainder's columns in a list subclass whose
            // items live in its `data` attribute.
            let data = match state.as_deref() {
                Some(Value::Dict(items)) => items
                    .iter()
                    .find(|(k, _)| matches!(k, Value::Str(s) if s == "data"))
                    .map(|(_, v)| v),
                _ => None,
            }
            .ok_or_else(|| obj.malformed("_RemainderColsList without data"))?;
            resolve_columns(obj, data, n_features, names)
        }
        other => match as_list(other) {
            // A list of booleans is a mask, as a boolean array is.
            Some(items)
                if !items.is_empty() && items.iter().all(|v| matches!(v, Value::Bool(_))) =>
            {
                if items.len() != n_features {
                    return Err(obj.malformed(format!(
                        "a boolean column mask of {} entries for {n_features} columns",
                        items.len()
                    )));
                }
                Ok((
                    items
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| matches!(m, Value::Bool(true)))
                        .map(|(j, _)| j)
                        .collect(),
                    false,
                ))
            }
            Some(items) => collect(items.iter().map(one)),
            None => Err(obj.unsupported(format!("column selector {}", describe(other)))),
        },
    }
}

fn collect(
    items: impl Iterator<Item = Result<(usize, bool), ModelError>>,
) -> Result<(Vec<usize>, bool), ModelError> {
    let mut cols = Vec::new();
    let mut named = false;
    for item in items {
        let (j, n) = item?;
        cols.push(j);
        named |= n;
    }
    Ok((cols, named))
}

/// Columns `cols` of `x`, as numbers when they all are.
fn select(x: &Data<'_>, cols: &[usize], names: Option<&[String]>) -> Data<'static> {
    match x {
        Data::Borrowed(_) | Data::Dense(_) => {
            let (data, n_rows, n_cols) = match x {
                Data::Borrowed(m) => (m.data, m.n_rows, m.n_cols),
                Data::Dense(m) => (m.data.as_slice(), m.n_rows, m.n_cols),
                Data::Table(_) | Data::Sparse(_) => unreachable!(),
            };
            let mut out = Vec::with_capacity(n_rows * cols.len());
            for i in 0..n_rows {
                out.extend(cols.iter().map(|&j| data[i * n_cols + j]));
            }
            Data::Dense(Matrix {
                data: out,
                n_rows,
                n_cols: cols.len(),
            })
        }
        Data::Table(t) => Data::Table(Table {
            n_rows: t.n_rows,
            columns: cols.iter().map(|&j| t.columns[j].clone()).collect(),
            names: names.map(|ns| cols.iter().map(|&j| ns[j].clone()).collect()),
        }),
        Data::Sparse(_) => Data::Table(Table {
            n_rows: x.n_rows(),
            columns: cols.iter().map(|&j| x.column(j)).collect(),
            names: None,
        }),
    }
}

/// Numeric outputs stacked side by side as sparse rows (when any part is sparse, as
/// scikit-learn's `sparse_threshold` would keep a text column's output sparse).
fn hstack_sparse(outputs: Vec<Data<'_>>, n_rows: usize) -> Result<Data<'static>, PredictError> {
    let n_cols: usize = outputs.iter().map(Data::n_cols).sum();
    let parts: Vec<SparseRows> = outputs
        .into_iter()
        .map(|d| match d {
            Data::Sparse(s) => Ok(s),
            other => Ok(SparseRows::from_dense(
                other.into_dense("ColumnTransformer")?.view(),
            )),
        })
        .collect::<Result<_, PredictError>>()?;
    let mut out = SparseRows::empty(n_cols);
    for i in 0..n_rows {
        let mut entries = Vec::new();
        let mut offset = 0;
        for part in &parts {
            let (idx, val) = part.row(i);
            entries.extend(idx.iter().zip(val).map(|(&j, &v)| (offset + j, v)));
            offset += part.n_cols;
        }
        out.push_row(entries);
    }
    Ok(Data::Sparse(out))
}

impl Transformer for ColumnTransformer {
    fn n_features_in(&self) -> Option<usize> {
        Some(self.n_features_in)
    }

    fn input_kind(&self, j: usize) -> ColumnKind {
        for Entry { part, columns, .. } in &self.parts {
            if let (Part::Apply(t), Some(k)) = (part, columns.iter().position(|&c| c == j)) {
                if t.input_kind(k) == ColumnKind::String {
                    return ColumnKind::String;
                }
            }
        }
        ColumnKind::Numeric
    }

    fn transform(&self, x: Data<'_>) -> Result<Data<'static>, PredictError> {
        if x.n_cols() != self.n_features_in {
            return Err(PredictError::InvalidInput(format!(
                "X has {} features, but ColumnTransformer is expecting {} features as input",
                x.n_cols(),
                self.n_features_in
            )));
        }
        let n_rows = x.n_rows();
        let mut outputs: Vec<Data<'static>> = Vec::new();
        for entry in &self.parts {
            if entry.columns.is_empty() {
                continue;
            }
            let sub = select(&x, &entry.columns, self.feature_names_in.as_deref());
            let out = match &entry.part {
                Part::Drop => continue,
                Part::Passthrough => sub,
                Part::Apply(t) => {
                    let out = t.transform(sub)?;
                    if out.n_rows() != n_rows {
                        return Err(PredictError::InvalidInput(
                            "a transformer changed the number of rows".into(),
                        ));
                    }
                    out
                }
            };
            outputs.push(match entry.weight {
                Some(w) => scale(out, w)?,
                None => out,
            });
        }
        let all_numeric = outputs.iter().all(|d| match d {
            Data::Table(t) => t.columns.iter().all(|c| matches!(c, Column::Num(_))),
            _ => true,
        });
        if all_numeric && outputs.iter().any(|d| matches!(d, Data::Sparse(_))) {
            return hstack_sparse(outputs, n_rows);
        }
        if all_numeric {
            let n_cols: usize = outputs.iter().map(Data::n_cols).sum();
            let mut data = vec![0.0; n_rows * n_cols];
            let mut offset = 0;
            for out in outputs {
                let width = out.n_cols();
                let m = out.into_dense("ColumnTransformer")?;
                for i in 0..n_rows {
                    data[i * n_cols + offset..i * n_cols + offset + width]
                        .copy_from_slice(&m.data[i * width..(i + 1) * width]);
                }
                offset += width;
            }
            return Ok(Data::Dense(Matrix {
                data,
                n_rows,
                n_cols,
            }));
        }
        let mut columns = Vec::new();
        for out in outputs {
            columns.extend(out.into_table()?.columns);
        }
        Ok(Data::Table(Table {
            n_rows,
            columns,
            names: None,
        }))
    }
}
