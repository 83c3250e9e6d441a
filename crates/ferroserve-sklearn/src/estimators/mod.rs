//! Native scikit-learn estimators, rebuilt from the plain [`Value`] tree the pickle
//! reader produces.
//!
//! Invariant: an estimator, option or attribute layout that is not implemented exactly
//! is refused when the model loads ([`ModelError::Unsupported`]), never approximated:
//! a served model either predicts what scikit-learn predicts or does not load.
//!
//! Arithmetic follows scikit-learn's own order of operations in f64 (and its float32
//! cast of the input for tree models), so predictions match to the last bits or close.
//! Behaviour that changed between scikit-learn versions follows the version the model
//! was saved with (`_sklearn_version`).
//!
//! Code map: `access` reads attributes; `linear`, `tree`, `boosting`, `hist_boosting`,
//! `naive_bayes`, `neighbors`, `svm`, `calibration` are predictors; `preprocessing`,
//! `encoders` and `text` (the vectorizers) are transformers; `compose` holds `Pipeline`
//! and `ColumnTransformer`; `sparse` is the sparse-row matrix the vectorizers produce.

pub(crate) mod access;
mod boosting;
mod calibration;
mod compose;
mod encoders;
mod hist_boosting;
mod linear;
mod naive_bayes;
mod neighbors;
mod preprocessing;
pub(crate) mod sparse;
mod stop_words;
mod svm;
pub(crate) mod text;
mod token_pattern;
mod tree;

use std::fmt::Debug;

use crate::model::{ModelError, PredictError};
use crate::value::Value;
use access::Obj;

pub(crate) use compose::{pipeline_steps, split_pipeline, ColumnTransformer};
pub use sparse::SparseRows;

/// Class labels in the order of `classes_` (the column order of probabilities).
#[derive(Debug, Clone, PartialEq)]
pub enum ClassLabels {
    Int(Vec<i64>),
    Str(Vec<String>),
    Float(Vec<f64>),
}

impl ClassLabels {
    pub fn len(&self) -> usize {
        match self {
            ClassLabels::Int(v) => v.len(),
            ClassLabels::Str(v) => v.len(),
            ClassLabels::Float(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The labels at the given class indices (each `< self.len()`).
    pub fn take(&self, indices: &[usize]) -> ClassLabels {
        match self {
            ClassLabels::Int(v) => ClassLabels::Int(indices.iter().map(|&i| v[i]).collect()),
            ClassLabels::Str(v) => {
                ClassLabels::Str(indices.iter().map(|&i| v[i].clone()).collect())
            }
            ClassLabels::Float(v) => ClassLabels::Float(indices.iter().map(|&i| v[i]).collect()),
        }
    }

    /// The labels as text, as a server reports them.
    pub fn to_strings(&self) -> Vec<String> {
        match self {
            ClassLabels::Int(v) => v.iter().map(i64::to_string).collect(),
            ClassLabels::Str(v) => v.clone(),
            ClassLabels::Float(v) => v.iter().map(f64::to_string).collect(),
        }
    }
}

/// A borrowed row-major f64 matrix.
#[derive(Debug, Clone, Copy)]
pub struct MatrixRef<'a> {
    pub data: &'a [f64],
    pub n_rows: usize,
    pub n_cols: usize,
}

impl<'a> MatrixRef<'a> {
    pub fn row(&self, i: usize) -> &'a [f64] {
        &self.data[i * self.n_cols..(i + 1) * self.n_cols]
    }
}

/// An owned row-major f64 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub data: Vec<f64>,
    pub n_rows: usize,
    pub n_cols: usize,
}

impl Matrix {
    pub fn view(&self) -> MatrixRef<'_> {
        MatrixRef {
            data: &self.data,
            n_rows: self.n_rows,
            n_cols: self.n_cols,
        }
    }
}

/// One input column of a table: numbers (NaN = missing) or text (`None` = missing).
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Num(Vec<f64>),
    Str(Vec<Option<String>>),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Num(v) => v.len(),
            Column::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A table of columns, like a pandas DataFrame or a numpy object array.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub n_rows: usize,
    pub columns: Vec<Column>,
    /// Column names, when known (a DataFrame's columns).
    pub names: Option<Vec<String>>,
}

/// What flows between pipeline steps.
#[derive(Debug, Clone)]
pub enum Data<'a> {
    Borrowed(MatrixRef<'a>),
    Dense(Matrix),
    Table(Table),
    /// The output of a text vectorizer (and of the steps that keep it sparse).
    Sparse(SparseRows),
}

impl<'a> Data<'a> {
    pub fn n_rows(&self) -> usize {
        match self {
            Data::Borrowed(m) => m.n_rows,
            Data::Dense(m) => m.n_rows,
            Data::Table(t) => t.n_rows,
            Data::Sparse(s) => s.n_rows,
        }
    }

    pub fn n_cols(&self) -> usize {
        match self {
            Data::Borrowed(m) => m.n_cols,
            Data::Dense(m) => m.n_cols,
            Data::Table(t) => t.columns.len(),
            Data::Sparse(s) => s.n_cols,
        }
    }

    /// The data as an owned numeric matrix; a table with text columns is refused.
    pub fn into_dense(self, who: &str) -> Result<Matrix, PredictError> {
        match self {
            Data::Borrowed(m) => Ok(Matrix {
                data: m.data.to_vec(),
                n_rows: m.n_rows,
                n_cols: m.n_cols,
            }),
            Data::Dense(m) => Ok(m),
            Data::Sparse(s) => s.to_dense(who),
            Data::Table(t) => {
                let n_cols = t.columns.len();
                let mut data = vec![0.0; t.n_rows * n_cols];
                for (j, col) in t.columns.iter().enumerate() {
                    match col {
                        Column::Num(v) => {
                            for (i, x) in v.iter().enumerate() {
                                data[i * n_cols + j] = *x;
                            }
                        }
                        Column::Str(_) => {
                            let name = t.names.as_ref().map_or(String::new(), |n| {
                                format!(" ({:?})", n.get(j).cloned().unwrap_or_default())
                            });
                            return Err(PredictError::InvalidInput(format!(
                                "{who} needs numbers but column {j}{name} holds text"
                            )));
                        }
                    }
                }
                Ok(Matrix {
                    data,
                    n_rows: t.n_rows,
                    n_cols,
                })
            }
        }
    }

    /// Column `j` as a [`Column`] (copied).
    pub fn column(&self, j: usize) -> Column {
        match self {
            Data::Sparse(s) => Column::Num(
                (0..s.n_rows)
                    .map(|i| {
                        let (idx, val) = s.row(i);
                        idx.binary_search(&j).map_or(0.0, |k| val[k])
                    })
                    .collect(),
            ),
            Data::Borrowed(m) => {
                Column::Num((0..m.n_rows).map(|i| m.data[i * m.n_cols + j]).collect())
            }
            Data::Dense(m) => {
                Column::Num((0..m.n_rows).map(|i| m.data[i * m.n_cols + j]).collect())
            }
            Data::Table(t) => t.columns[j].clone(),
        }
    }

    /// The data as a table of columns (a sparse matrix becomes dense columns, refused
    /// above [`sparse::MAX_DENSE_VALUES`] values).
    pub fn into_table(self) -> Result<Table, PredictError> {
        if let Data::Sparse(s) = &self {
            s.to_dense("a sparse step")?;
        }
        Ok(match self {
            Data::Table(t) => t,
            other => Table {
                n_rows: other.n_rows(),
                columns: (0..other.n_cols()).map(|j| other.column(j)).collect(),
                names: None,
            },
        })
    }
}

/// What kind of values an input column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Numeric,
    String,
}

/// The rows a final estimator reads: a dense matrix or sparse rows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rows<'a> {
    Dense(MatrixRef<'a>),
    Sparse(&'a SparseRows),
}

impl Rows<'_> {
    pub fn n_rows(&self) -> usize {
        match self {
            Rows::Dense(m) => m.n_rows,
            Rows::Sparse(s) => s.n_rows,
        }
    }
}

/// A fitted classifier. Indices returned by `predict` refer to `classes_`.
///
/// Implementers give the dense methods; the sparse ones default to densifying one row
/// at a time (bounded by [`sparse::MAX_DENSE_ROW`]), and estimators whose arithmetic
/// only needs the nonzero entries (linear models, naive Bayes, SVMs) override them.
pub(crate) trait Classifier: Send + Sync + Debug {
    fn n_features(&self) -> usize;
    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<usize>) -> Result<(), PredictError>;
    /// Whether scikit-learn offers `predict_proba` for this model.
    fn has_proba(&self) -> bool;
    /// Appends `n_rows * n_classes` probabilities, row-major.
    fn predict_proba(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError>;

    fn name(&self) -> &str {
        "the final estimator"
    }

    fn predict_sparse(&self, x: &SparseRows, out: &mut Vec<usize>) -> Result<(), PredictError> {
        x.for_each_dense_row(self.name(), |row| self.predict(row, out))
    }

    fn predict_proba_sparse(&self, x: &SparseRows, out: &mut Vec<f64>) -> Result<(), PredictError> {
        x.for_each_dense_row(self.name(), |row| self.predict_proba(row, out))
    }

    /// The number of `decision_function` columns scikit-learn gives (1 for a binary
    /// problem), or `None` when the estimator has no `decision_function`.
    fn decision_width(&self) -> Option<usize> {
        None
    }

    /// Appends `n_rows * decision_width()` decision values, row-major.
    fn decision_function(&self, _x: Rows<'_>, _out: &mut Vec<f64>) -> Result<(), PredictError> {
        Err(PredictError::InvalidInput(format!(
            "{} has no decision_function",
            self.name()
        )))
    }

    fn predict_rows(&self, x: Rows<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        match x {
            Rows::Dense(m) => self.predict(m, out),
            Rows::Sparse(s) => self.predict_sparse(s, out),
        }
    }

    fn predict_proba_rows(&self, x: Rows<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        match x {
            Rows::Dense(m) => self.predict_proba(m, out),
            Rows::Sparse(s) => self.predict_proba_sparse(s, out),
        }
    }
}

/// A fitted single-output regressor (sparse input as for [`Classifier`]).
pub(crate) trait Regressor: Send + Sync + Debug {
    fn n_features(&self) -> usize;
    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError>;

    fn name(&self) -> &str {
        "the final estimator"
    }

    fn predict_sparse(&self, x: &SparseRows, out: &mut Vec<f64>) -> Result<(), PredictError> {
        x.for_each_dense_row(self.name(), |row| self.predict(row, out))
    }

    fn predict_rows(&self, x: Rows<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        match x {
            Rows::Dense(m) => self.predict(m, out),
            Rows::Sparse(s) => self.predict_sparse(s, out),
        }
    }

    /// `Some(k)` when scikit-learn's `predict` answers a 2-D array `(n_rows, k)` (the
    /// values are then written row-major, `k` per row); `None`, the default, when it
    /// answers one value per row, `(n_rows,)`.
    fn predict_width(&self) -> Option<usize> {
        None
    }
}

/// A fitted transformer (a pipeline step before the final estimator).
pub(crate) trait Transformer: Send + Sync + Debug {
    /// The number of input columns, when the model records it.
    fn n_features_in(&self) -> Option<usize>;
    /// The kind of values input column `j` must hold.
    fn input_kind(&self, j: usize) -> ColumnKind;
    fn transform(&self, x: Data<'_>) -> Result<Data<'static>, PredictError>;
}

/// A final estimator with its labels.
#[derive(Debug)]
pub(crate) enum Predictor {
    Classifier {
        classes: ClassLabels,
        model: Box<dyn Classifier>,
    },
    Regressor(Box<dyn Regressor>),
}

impl Predictor {
    pub fn n_features(&self) -> usize {
        match self {
            Predictor::Classifier { model, .. } => model.n_features(),
            Predictor::Regressor(model) => model.n_features(),
        }
    }
}

/// Rebuilds a final estimator (classifier or regressor) from its value.
pub(crate) fn build_predictor(value: &Value) -> Result<Predictor, ModelError> {
    let obj = Obj::new(value)?;
    if !obj.module.starts_with("sklearn.") {
        return Err(ModelError::Unsupported(format!(
            "{}.{} is not a scikit-learn estimator",
            obj.module, obj.name
        )));
    }
    let classifier = |classes: ClassLabels, model: Box<dyn Classifier>| {
        Ok(Predictor::Classifier { classes, model })
    };
    match obj.name {
        "LogisticRegression" | "RidgeClassifier" | "SGDClassifier" | "LinearSVC" => {
            let (classes, model) = linear::build_classifier(obj)?;
            classifier(classes, model)
        }
        "LinearRegression" | "Ridge" | "Lasso" | "ElasticNet" | "SGDRegressor" | "LinearSVR" => {
            Ok(Predictor::Regressor(linear::build_regressor(obj)?))
        }
        "DecisionTreeClassifier"
        | "ExtraTreeClassifier"
        | "RandomForestClassifier"
        | "ExtraTreesClassifier" => {
            let (classes, model) = tree::build_classifier(obj)?;
            classifier(classes, model)
        }
        "DecisionTreeRegressor"
        | "ExtraTreeRegressor"
        | "RandomForestRegressor"
        | "ExtraTreesRegressor" => Ok(Predictor::Regressor(tree::build_regressor(obj)?)),
        "GradientBoostingClassifier" => {
            let (classes, model) = boosting::build_classifier(obj)?;
            classifier(classes, model)
        }
        "GradientBoostingRegressor" => Ok(Predictor::Regressor(boosting::build_regressor(obj)?)),
        "HistGradientBoostingClassifier" => {
            let (classes, model) = hist_boosting::build_classifier(obj)?;
            classifier(classes, model)
        }
        "HistGradientBoostingRegressor" => {
            Ok(Predictor::Regressor(hist_boosting::build_regressor(obj)?))
        }
        "GaussianNB" => {
            let (classes, model) = naive_bayes::build_gaussian_nb(obj)?;
            classifier(classes, model)
        }
        "MultinomialNB" | "ComplementNB" => {
            let (classes, model) = naive_bayes::build_discrete_nb(obj)?;
            classifier(classes, model)
        }
        "SVC" | "NuSVC" => {
            let (classes, model) = svm::build_classifier(obj)?;
            classifier(classes, model)
        }
        "SVR" | "NuSVR" => Ok(Predictor::Regressor(svm::build_regressor(obj)?)),
        "CalibratedClassifierCV" => {
            let (classes, model) = calibration::build(obj)?;
            classifier(classes, model)
        }
        "KNeighborsClassifier" => {
            let (classes, model) = neighbors::build_classifier(obj)?;
            classifier(classes, model)
        }
        "KNeighborsRegressor" => Ok(Predictor::Regressor(neighbors::build_regressor(obj)?)),
        // A transparent wrapper: it answers with the wrapped estimator's methods.
        "FrozenEstimator" => build_predictor(obj.req("estimator")?),
        // A pipeline inside another estimator (the base of `CalibratedClassifierCV`);
        // a top-level pipeline is split into steps by `split_pipeline` instead.
        "Pipeline" => compose::build_pipeline_predictor(value),
        other => Err(ModelError::Unsupported(format!(
            "estimator {}.{other} is not supported as a final estimator",
            obj.module
        ))),
    }
}

/// Rebuilds a transformer step from its value.
pub(crate) fn build_transformer(value: &Value) -> Result<Box<dyn Transformer>, ModelError> {
    let obj = Obj::new(value)?;
    match obj.name {
        "StandardScaler"
        | "MinMaxScaler"
        | "RobustScaler"
        | "SimpleImputer"
        | "MissingIndicator"
        | "FunctionTransformer" => preprocessing::build(obj),
        "OneHotEncoder" | "OrdinalEncoder" => encoders::build(obj),
        "CountVectorizer" | "TfidfVectorizer" | "HashingVectorizer" | "TfidfTransformer" => {
            text::build(obj)
        }
        "Pipeline" => compose::build_transformer_pipeline(obj),
        "ColumnTransformer" => Ok(Box::new(ColumnTransformer::build(obj)?)),
        other => Err(ModelError::Unsupported(format!(
            "transformer {}.{other} is not supported",
            obj.module
        ))),
    }
}

/// Refuses an input with the wrong number of columns, as scikit-learn does.
pub(crate) fn check_width(
    x: MatrixRef<'_>,
    expected: usize,
    who: &str,
) -> Result<(), PredictError> {
    if x.n_cols != expected {
        return Err(PredictError::InvalidInput(format!(
            "X has {} features, but {who} is expecting {expected} features as input",
            x.n_cols
        )));
    }
    if x.data.len() != x.n_rows * x.n_cols {
        return Err(PredictError::InvalidInput(format!(
            "input holds {} values, not {} rows x {} columns",
            x.data.len(),
            x.n_rows,
            x.n_cols
        )));
    }
    Ok(())
}

/// Refuses NaN and infinity (unless `allow_nan`, which still refuses infinity), as
/// scikit-learn's `check_array` does before most estimators run.
pub(crate) fn check_finite(
    x: MatrixRef<'_>,
    allow_nan: bool,
    who: &str,
) -> Result<(), PredictError> {
    for &v in x.data {
        if !(v.is_finite() || allow_nan && v.is_nan()) {
            return Err(PredictError::InvalidInput(format!(
                "Input X contains {} ({who} does not accept missing or infinite values)",
                if v.is_nan() { "NaN" } else { "infinity" }
            )));
        }
    }
    Ok(())
}

/// numpy's `argmax` over a slice: the first index of the largest value
/// (a NaN counts as the largest, as numpy's does).
pub(crate) fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate().skip(1) {
        if v[best].is_nan() {
            return best;
        }
        if x > v[best] || x.is_nan() {
            best = i;
        }
    }
    best
}

/// `scipy.special.expit`.
pub(crate) fn expit(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `sklearn.utils.extmath.softmax` on one row, in place.
pub(crate) fn softmax_in_place(row: &mut [f64]) {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    for v in row.iter_mut() {
        *v = (*v - max).exp();
    }
    let sum = numpy_sum(row);
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// numpy's `sum` of a contiguous f64 slice (and of each row of a 2-D array along its
/// last axis), as numpy 1.26 and 2.x compute it: the identity 0 plus the pairwise sum
/// of every term, which is a plain loop below 8 terms and otherwise eight interleaved
/// partial sums combined in numpy's order, split recursively above 128 terms. (Adding
/// the first term to the pairwise sum of the rest, as this did before, rounds
/// differently from three terms on: `[1, 1e-16, 1e-16]` sums to 1 in numpy.)
pub(crate) fn numpy_sum(v: &[f64]) -> f64 {
    0.0 + pairwise_sum(v)
}

fn pairwise_sum(v: &[f64]) -> f64 {
    let n = v.len();
    if n < 8 {
        let mut s = -0.0;
        for &x in v {
            s += x;
        }
        return s;
    }
    if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&v[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for k in 0..8 {
                r[k] += v[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += v[i];
            i += 1;
        }
        return res;
    }
    let mut n2 = n / 2;
    n2 -= n2 % 8;
    pairwise_sum(&v[..n2]) + pairwise_sum(&v[n2..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[5.0]), 0);
        assert_eq!(argmax(&[1.0, f64::NAN, 9.0]), 1);
    }

    #[test]
    fn numpy_sum_matches_plain_sum_for_small_inputs() {
        assert_eq!(numpy_sum(&[1.0, 2.0, 3.0]), 6.0);
        let v: Vec<f64> = (0..300).map(|i| i as f64 * 0.1).collect();
        let plain: f64 = v.iter().sum();
        assert!((numpy_sum(&v) - plain).abs() < 1e-9);
        // numpy's own results (numpy 2.4.6 and 1.26.4).
        assert_eq!(numpy_sum(&[1.0, 1e-16, 1e-16]), 1.0);
        let harmonic: Vec<f64> = (1..=300).map(|i| 1.0 / i as f64).collect();
        assert_eq!(numpy_sum(&harmonic), 6.282663880299504);
        assert_eq!(numpy_sum(&[]), 0.0);
        assert!(
            numpy_sum(&[-0.0]).is_sign_positive(),
            "np.sum([-0.0]) is 0.0"
        );
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut row = [1.0, 2.0, 3.0];
        softmax_in_place(&mut row);
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!(row[2] > row[1] && row[1] > row[0]);
    }
}
