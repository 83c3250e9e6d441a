//! Linear models: `X @ coef_.T + intercept_`, then the model's link.
//!
//! The dot product runs in feature order from 0.0, as a BLAS `dgemv` does for the
//! short rows of tabular models; the result differs from scikit-learn's by at most
//! a few ulps.

use super::access::{Obj, SkVersion};
use super::{
    check_finite, check_width, expit, softmax_in_place, ClassLabels, Classifier, MatrixRef,
    Regressor, Rows, SparseRows,
};
use crate::model::{ModelError, PredictError};

/// `coef_` as `k` rows of `n_features`, and `intercept_` (k values).
#[derive(Debug, Clone)]
pub(crate) struct LinearFunction {
    coef: Vec<f64>,
    intercept: Vec<f64>,
    n_features: usize,
    n_outputs: usize,
}

impl LinearFunction {
    pub fn from_obj(obj: Obj<'_>) -> Result<LinearFunction, ModelError> {
        let (coef, shape) = obj.f64s("coef_")?;
        let (n_outputs, n_features) = match shape.as_slice() {
            [n] => (1, *n),
            [k, n] => (*k, *n),
            _ => return Err(obj.malformed(format!("coef_ has shape {shape:?}"))),
        };
        let intercept = match obj.req("intercept_")? {
            crate::value::Value::Array(_) => obj.f64s("intercept_")?.0,
            _ => vec![obj.f64("intercept_")?; n_outputs],
        };
        if intercept.len() != n_outputs {
            return Err(obj.malformed(format!(
                "intercept_ has {} values for {n_outputs} coefficient rows",
                intercept.len()
            )));
        }
        if let Some(n) = obj.n_features_in()? {
            if n != n_features {
                return Err(obj.malformed(format!(
                    "n_features_in_ is {n} but coef_ has {n_features} columns"
                )));
            }
        }
        Ok(LinearFunction {
            coef,
            intercept,
            n_features,
            n_outputs,
        })
    }

    /// Appends the `n_outputs` decision values of one row.
    #[inline]
    fn decision_row(&self, row: &[f64], out: &mut Vec<f64>) {
        for k in 0..self.n_outputs {
            out.push(self.decision(row, k));
        }
    }

    /// Decision value `k` of one row.
    #[inline]
    fn decision(&self, row: &[f64], k: usize) -> f64 {
        let w = &self.coef[k * self.n_features..(k + 1) * self.n_features];
        let mut acc = 0.0;
        for (a, b) in row.iter().zip(w) {
            acc += a * b;
        }
        acc + self.intercept[k]
    }

    fn check(&self, x: MatrixRef<'_>, who: &str) -> Result<(), PredictError> {
        check_width(x, self.n_features, who)?;
        check_finite(x, false, who)
    }

    /// Decision value `k` of a sparse row: scipy's CSR product sums the stored entries
    /// in index order from 0.0, then the intercept is added.
    #[inline]
    fn decision_sparse(&self, idx: &[usize], val: &[f64], k: usize) -> f64 {
        let w = &self.coef[k * self.n_features..(k + 1) * self.n_features];
        let mut acc = 0.0;
        for (&j, &v) in idx.iter().zip(val) {
            acc += v * w[j];
        }
        acc + self.intercept[k]
    }

    fn check_sparse(&self, x: &SparseRows, who: &str) -> Result<(), PredictError> {
        if x.n_cols != self.n_features {
            return Err(PredictError::InvalidInput(format!(
                "X has {} features, but {who} is expecting {} features as input",
                x.n_cols, self.n_features
            )));
        }
        x.check_finite(who)
    }

    /// All decision values (`n_rows * n_outputs`) of dense or sparse rows.
    pub fn decisions(
        &self,
        x: Rows<'_>,
        who: &str,
        out: &mut Vec<f64>,
    ) -> Result<(), PredictError> {
        match x {
            Rows::Dense(m) => {
                self.check(m, who)?;
                for i in 0..m.n_rows {
                    self.decision_row(m.row(i), out);
                }
            }
            Rows::Sparse(s) => {
                self.check_sparse(s, who)?;
                for i in 0..s.n_rows {
                    let (idx, val) = s.row(i);
                    for k in 0..self.n_outputs {
                        out.push(self.decision_sparse(idx, val, k));
                    }
                }
            }
        }
        Ok(())
    }
}

/// How a classifier turns decision values into probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Proba {
    None,
    /// One-vs-rest logistic: `expit`, normalized over classes (`_predict_proba_lr`).
    OvrLogistic,
    /// Multinomial: softmax of the decision values; binary as softmax of `[-d, d]`.
    Softmax,
    /// `SGDClassifier(loss="modified_huber")`.
    ModifiedHuber,
}

#[derive(Debug)]
struct LinearClassifier {
    name: &'static str,
    f: LinearFunction,
    n_classes: usize,
    proba: Proba,
}

pub(crate) fn build_classifier(
    obj: Obj<'_>,
) -> Result<(ClassLabels, Box<dyn Classifier>), ModelError> {
    let version = obj.version()?;
    let f = LinearFunction::from_obj(obj)?;
    let classes = match obj.name {
        // RidgeClassifier keeps its labels in the fitted LabelBinarizer (older versions
        // have no `classes_` attribute of their own).
        "RidgeClassifier" => {
            let binarizer = obj.obj("_label_binarizer")?;
            let y_type = binarizer.str("y_type_")?;
            if y_type.starts_with("multilabel") {
                return Err(obj.unsupported("multilabel targets"));
            }
            binarizer.labels("classes_")?
        }
        _ => obj.labels("classes_")?,
    };
    let n_classes = classes.len();
    if n_classes < 2 {
        return Err(obj.malformed("fewer than two classes"));
    }
    let expected_rows = if n_classes == 2 { 1 } else { n_classes };
    if f.n_outputs != expected_rows {
        return Err(obj.malformed(format!(
            "coef_ has {} rows for {n_classes} classes",
            f.n_outputs
        )));
    }
    let (name, proba) = match obj.name {
        "LogisticRegression" => (
            "LogisticRegression",
            logistic_proba(obj, version, n_classes)?,
        ),
        "RidgeClassifier" => ("RidgeClassifier", Proba::None),
        "LinearSVC" => ("LinearSVC", Proba::None),
        "SGDClassifier" => {
            let proba = match obj.str("loss")? {
                "log_loss" | "log" => Proba::OvrLogistic,
                "modified_huber" => Proba::ModifiedHuber,
                "hinge"
                | "squared_hinge"
                | "perceptron"
                | "huber"
                | "epsilon_insensitive"
                | "squared_epsilon_insensitive"
                | "squared_error"
                | "squared_loss" => Proba::None,
                other => return Err(obj.unsupported(format!("loss {other:?}"))),
            };
            ("SGDClassifier", proba)
        }
        other => return Err(obj.unsupported(format!("unknown linear classifier {other}"))),
    };
    Ok((
        classes,
        Box::new(LinearClassifier {
            name,
            f,
            n_classes,
            proba,
        }),
    ))
}

/// Which probability formula `LogisticRegression.predict_proba` used in the version
/// that saved the model. Before 1.8 `multi_class` decided (OvR for "ovr", and for
/// "auto" with two classes or the liblinear / newton-cholesky solvers); from 1.8 the
/// parameter is gone: two classes use the logistic function, more use softmax.
fn logistic_proba(obj: Obj<'_>, version: SkVersion, n_classes: usize) -> Result<Proba, ModelError> {
    let multi_class = obj.opt_str("multi_class")?;
    let solver = obj.opt_str("solver")?.unwrap_or("lbfgs");
    let ovr = match multi_class {
        None if version >= SkVersion(1, 8) => n_classes <= 2,
        None => return Err(obj.malformed("missing attribute `multi_class`")),
        Some("ovr") | Some("warn") => true,
        Some("auto") | Some("deprecated") => {
            n_classes <= 2 || matches!(solver, "liblinear" | "newton-cholesky")
        }
        Some("multinomial") => false,
        Some(other) => return Err(obj.unsupported(format!("multi_class {other:?}"))),
    };
    Ok(if ovr {
        Proba::OvrLogistic
    } else {
        Proba::Softmax
    })
}

impl LinearClassifier {
    fn labels(&self, x: Rows<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        let mut d = Vec::with_capacity(x.n_rows() * self.f.n_outputs);
        self.f.decisions(x, self.name, &mut d)?;
        if self.f.n_outputs == 1 {
            out.extend(d.iter().map(|&v| usize::from(v > 0.0)));
        } else {
            out.extend(d.chunks(self.f.n_outputs).map(super::argmax));
        }
        Ok(())
    }

    fn proba(&self, x: Rows<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        if self.proba == Proba::None {
            return Err(no_proba(self.name));
        }
        let mut d = Vec::with_capacity(x.n_rows() * self.f.n_outputs);
        self.f.decisions(x, self.name, &mut d)?;
        let k = self.n_classes;
        out.reserve(x.n_rows() * k);
        if self.f.n_outputs == 1 {
            for &d in &d {
                let start = out.len();
                match self.proba {
                    Proba::OvrLogistic => {
                        let p = expit(d);
                        out.extend([1.0 - p, p]);
                    }
                    Proba::Softmax => {
                        out.extend([-d, d]);
                        softmax_in_place(&mut out[start..]);
                    }
                    Proba::ModifiedHuber => {
                        let p = (d.clamp(-1.0, 1.0) + 1.0) / 2.0;
                        out.extend([1.0 - p, p]);
                    }
                    Proba::None => unreachable!("checked above"),
                }
            }
            return Ok(());
        }
        for scores in d.chunks(k) {
            let start = out.len();
            out.extend_from_slice(scores);
            let row = &mut out[start..];
            match self.proba {
                Proba::OvrLogistic => {
                    for v in row.iter_mut() {
                        *v = expit(*v);
                    }
                    normalize_ovr(row);
                }
                Proba::Softmax => softmax_in_place(row),
                Proba::ModifiedHuber => {
                    for v in row.iter_mut() {
                        *v = (v.clamp(-1.0, 1.0) + 1.0) / 2.0;
                    }
                    normalize_ovr(row);
                }
                Proba::None => unreachable!("checked above"),
            }
        }
        Ok(())
    }
}

impl Classifier for LinearClassifier {
    fn n_features(&self) -> usize {
        self.f.n_features
    }

    fn name(&self) -> &str {
        self.name
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        self.labels(Rows::Dense(x), out)
    }

    fn predict_sparse(&self, x: &SparseRows, out: &mut Vec<usize>) -> Result<(), PredictError> {
        self.labels(Rows::Sparse(x), out)
    }

    fn has_proba(&self) -> bool {
        self.proba != Proba::None
    }

    fn predict_proba(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.proba(Rows::Dense(x), out)
    }

    fn predict_proba_sparse(&self, x: &SparseRows, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.proba(Rows::Sparse(x), out)
    }

    fn decision_width(&self) -> Option<usize> {
        Some(self.f.n_outputs)
    }

    fn decision_function(&self, x: Rows<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.f.decisions(x, self.name, out)
    }
}

/// Divides by the row sum; a row of zeros becomes uniform (scikit-learn's workaround).
fn normalize_ovr(row: &mut [f64]) {
    let sum = super::numpy_sum(row);
    if sum == 0.0 {
        let uniform = 1.0 / row.len() as f64;
        row.iter_mut().for_each(|v| *v = uniform);
        return;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

fn no_proba(name: &str) -> PredictError {
    PredictError::InvalidInput(format!("{name} has no predict_proba"))
}

#[derive(Debug)]
struct LinearRegressor {
    name: &'static str,
    f: LinearFunction,
    /// Whether `predict` answers `(n_rows, 1)`, as scikit-learn's does for a `coef_`
    /// of shape `(1, n_features)` (`LinearRegression` fitted on a target of one
    /// column; `Ridge` too before scikit-learn 1.6): `X @ coef_.T + intercept_`
    /// keeps the 2-D shape. `SGDRegressor` ravels its answer, whatever `coef_` is.
    column_output: bool,
}

pub(crate) fn build_regressor(obj: Obj<'_>) -> Result<Box<dyn Regressor>, ModelError> {
    let name = match obj.name {
        "LinearRegression" => "LinearRegression",
        "Ridge" => "Ridge",
        "Lasso" => "Lasso",
        "ElasticNet" => "ElasticNet",
        "SGDRegressor" => "SGDRegressor",
        "LinearSVR" => "LinearSVR",
        other => return Err(obj.unsupported(format!("unknown linear regressor {other}"))),
    };
    let f = LinearFunction::from_obj(obj)?;
    if f.n_outputs != 1 {
        return Err(obj.unsupported(format!("{} regression targets", f.n_outputs)));
    }
    let column_output = name != "SGDRegressor" && obj.array("coef_")?.shape.len() == 2;
    Ok(Box::new(LinearRegressor {
        name,
        f,
        column_output,
    }))
}

impl Regressor for LinearRegressor {
    fn n_features(&self) -> usize {
        self.f.n_features
    }

    fn name(&self) -> &str {
        self.name
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.f.decisions(Rows::Dense(x), self.name, out)
    }

    fn predict_sparse(&self, x: &SparseRows, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.f.decisions(Rows::Sparse(x), self.name, out)
    }

    fn predict_width(&self) -> Option<usize> {
        self.column_output.then_some(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{ArrayData, DType, NdArray, Value};
    use std::sync::Arc;

    fn arr(shape: Vec<usize>, v: Vec<f64>) -> Value {
        Value::Array(Arc::new(NdArray {
            dtype: DType::F64,
            shape,
            data: ArrayData::Float(v),
        }))
    }

    fn logreg(
        multi_class: Option<&str>,
        version: &str,
        coef: Value,
        intercept: Value,
        classes: Vec<i64>,
    ) -> Value {
        let mut state = vec![
            (Value::Str("coef_".into()), coef),
            (Value::Str("intercept_".into()), intercept),
            (
                Value::Str("classes_".into()),
                Value::Array(Arc::new(NdArray {
                    dtype: DType::I64,
                    shape: vec![classes.len()],
                    data: ArrayData::Int(classes),
                })),
            ),
            (Value::Str("solver".into()), Value::Str("lbfgs".into())),
            (
                Value::Str("_sklearn_version".into()),
                Value::Str(version.into()),
            ),
        ];
        if let Some(m) = multi_class {
            state.push((Value::Str("multi_class".into()), Value::Str(m.into())));
        }
        Value::Object {
            module: "sklearn.linear_model._logistic".into(),
            name: "LogisticRegression".into(),
            args: Arc::new(vec![]),
            state: Some(Arc::new(Value::Dict(Arc::new(state)))),
        }
    }

    #[test]
    fn binary_logistic_uses_expit() {
        let v = logreg(
            Some("auto"),
            "1.2.2",
            arr(vec![1, 2], vec![1.0, -1.0]),
            arr(vec![1], vec![0.5]),
            vec![3, 7],
        );
        let (classes, model) = build_classifier(Obj::new(&v).unwrap()).unwrap();
        assert_eq!(classes, ClassLabels::Int(vec![3, 7]));
        let x = [2.0, 1.0, 0.0, 1.0];
        let m = MatrixRef {
            data: &x,
            n_rows: 2,
            n_cols: 2,
        };
        let mut labels = vec![];
        model.predict(m, &mut labels).unwrap();
        assert_eq!(labels, vec![1, 0]);
        let mut p = vec![];
        model.predict_proba(m, &mut p).unwrap();
        assert!((p[1] - expit(1.5)).abs() < 1e-15);
        assert!((p[3] - expit(-0.5)).abs() < 1e-15);
    }

    #[test]
    fn multinomial_binary_uses_softmax_of_plus_minus_d() {
        let v = logreg(
            Some("multinomial"),
            "1.5.2",
            arr(vec![1, 1], vec![1.0]),
            arr(vec![1], vec![0.0]),
            vec![0, 1],
        );
        let (_, model) = build_classifier(Obj::new(&v).unwrap()).unwrap();
        let x = [1.0];
        let mut p = vec![];
        model
            .predict_proba(
                MatrixRef {
                    data: &x,
                    n_rows: 1,
                    n_cols: 1,
                },
                &mut p,
            )
            .unwrap();
        assert!((p[1] - expit(2.0)).abs() < 1e-15);
    }

    #[test]
    fn refuses_wrong_width_and_nan() {
        let v = logreg(
            None,
            "1.9.1",
            arr(vec![1, 2], vec![1.0, -1.0]),
            arr(vec![1], vec![0.5]),
            vec![0, 1],
        );
        let (_, model) = build_classifier(Obj::new(&v).unwrap()).unwrap();
        let mut out = vec![];
        let x = [1.0, 2.0, 3.0];
        assert!(model
            .predict(
                MatrixRef {
                    data: &x,
                    n_rows: 1,
                    n_cols: 3
                },
                &mut out
            )
            .is_err());
        let x = [f64::NAN, 2.0];
        assert!(model
            .predict(
                MatrixRef {
                    data: &x,
                    n_rows: 1,
                    n_cols: 2
                },
                &mut out
            )
            .is_err());
    }

    /// scikit-learn's `X @ coef_.T + intercept_` is `(n_rows, 1)` for a `coef_` of
    /// shape `(1, n_features)` (a `LinearRegression` fitted on a target of one column,
    /// a `Ridge` before 1.6) and `(n_rows,)` for a 1-D one; `SGDRegressor` ravels.
    #[test]
    fn a_coef_of_one_row_makes_predict_a_column_except_for_sgd() {
        let regressor = |name: &str, coef: Value| {
            let state = vec![
                (Value::Str("coef_".into()), coef),
                (Value::Str("intercept_".into()), arr(vec![1], vec![0.5])),
            ];
            let v = Value::Object {
                module: "sklearn.linear_model".into(),
                name: name.into(),
                args: Arc::new(vec![]),
                state: Some(Arc::new(Value::Dict(Arc::new(state)))),
            };
            build_regressor(Obj::new(&v).unwrap()).unwrap()
        };
        let x = [2.0, 1.0, 0.0, 1.0];
        let m = MatrixRef {
            data: &x,
            n_rows: 2,
            n_cols: 2,
        };
        for name in [
            "LinearRegression",
            "Ridge",
            "Lasso",
            "ElasticNet",
            "LinearSVR",
            "SGDRegressor",
        ] {
            let flat = regressor(name, arr(vec![2], vec![1.0, -1.0]));
            assert_eq!(flat.predict_width(), None, "{name}");
            let column = regressor(name, arr(vec![1, 2], vec![1.0, -1.0]));
            let want = (name != "SGDRegressor").then_some(1);
            assert_eq!(column.predict_width(), want, "{name}");
            let mut out = Vec::new();
            column.predict(m, &mut out).unwrap();
            assert_eq!(out, [1.5, -0.5], "{name}");
        }
    }
}
