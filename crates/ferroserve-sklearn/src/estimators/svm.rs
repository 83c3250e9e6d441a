//! `SVC`, `NuSVC`, `SVR` and `NuSVR`: libsvm's prediction, ported from scikit-learn's
//! copy of libsvm (`svm.cpp`: `k_function`, `svm_predict_values`,
//! `svm_predict_probability`, `sigmoid_predict`, `multiclass_probability`).
//!
//! The raw libsvm coefficients are used (`_dual_coef_`, `_intercept_`, which
//! scikit-learn keeps unflipped for binary problems), so the decision values are
//! libsvm's; `decision_function` then flips a binary one and builds the one-vs-rest
//! shape as scikit-learn does. Support vectors trained on sparse data are a pickled
//! scipy CSR matrix; dense ones are kept with every entry, so either kernel sums its
//! products in libsvm's order.

use super::access::Obj;
use super::sparse::{dense_or_csr, SparseRows};
use super::{ClassLabels, Classifier, MatrixRef, Regressor, Rows};
use crate::model::{ModelError, PredictError};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kernel {
    Linear,
    Poly { degree: i32 },
    Rbf,
    Sigmoid,
}

#[derive(Debug)]
struct Svm {
    name: &'static str,
    kernel: Kernel,
    gamma: f64,
    coef0: f64,
    support_vectors: SparseRows,
    /// Squared norms of the support vectors (for the RBF kernel on dense rows).
    n_features: usize,
    /// `_dual_coef_`, `(n_classes - 1) x n_sv` (one row for regression).
    dual_coef: Vec<f64>,
    /// `_intercept_` (libsvm's `-rho`), one per class pair.
    intercept: Vec<f64>,
    /// Support vectors per class (`_n_support`), empty for regression.
    n_support: Vec<usize>,
}

impl Svm {
    fn from_obj(obj: Obj<'_>, classifier: bool) -> Result<Svm, ModelError> {
        let name = match obj.name {
            "SVC" => "SVC",
            "NuSVC" => "NuSVC",
            "SVR" => "SVR",
            "NuSVR" => "NuSVR",
            other => return Err(obj.unsupported(format!("unknown SVM {other}"))),
        };
        let kernel = match obj.req("kernel")? {
            crate::value::Value::Str(k) => match k.as_str() {
                "linear" => Kernel::Linear,
                "poly" => {
                    let degree = obj.i64("degree")?;
                    Kernel::Poly {
                        degree: i32::try_from(degree)
                            .ok()
                            .filter(|d| (0..=64).contains(d))
                            .ok_or_else(|| obj.unsupported(format!("degree {degree}")))?,
                    }
                }
                "rbf" => Kernel::Rbf,
                "sigmoid" => Kernel::Sigmoid,
                other => return Err(obj.unsupported(format!("kernel {other:?}"))),
            },
            _ => return Err(obj.unsupported("a callable kernel (code in the pickle)")),
        };
        let gamma = obj.f64("_gamma")?;
        let coef0 = obj.f64("coef0")?;
        let support_vectors = dense_or_csr(obj, "support_vectors_")?;
        let n_sv = support_vectors.n_rows;
        // Sparse-trained models keep the coefficients as a CSR matrix too.
        let coef = dense_or_csr(obj, "_dual_coef_")?;
        let shape = vec![coef.n_rows, coef.n_cols];
        let dual_coef = coef.to_dense(name).map_err(|e| obj.malformed(e))?.data;
        let intercept = obj.f64s("_intercept_")?.0;
        let n_features = match obj.n_features_in()? {
            Some(n) => n,
            None => support_vectors.n_cols,
        };
        if support_vectors.n_cols != n_features {
            return Err(obj.malformed("support_vectors_ and n_features_in_ disagree"));
        }
        let n_support: Vec<usize> = if classifier {
            let key = if obj.some("_n_support").is_some() {
                "_n_support"
            } else {
                "n_support_"
            };
            obj.f64s(key)?
                .0
                .iter()
                .map(|&v| (v >= 0.0 && v.fract() == 0.0).then_some(v as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| obj.malformed(format!("`{key}` is not a list of counts")))?
        } else {
            vec![]
        };
        let rows = if classifier {
            n_support.len().saturating_sub(1)
        } else {
            1
        };
        let pairs = if classifier {
            n_support.len() * n_support.len().saturating_sub(1) / 2
        } else {
            1
        };
        if shape != [rows, n_sv]
            || intercept.len() != pairs
            || (classifier && (n_support.len() < 2 || n_support.iter().sum::<usize>() != n_sv))
        {
            return Err(
                obj.malformed("_dual_coef_, _intercept_, _n_support and support_vectors_ disagree")
            );
        }
        Ok(Svm {
            name,
            kernel,
            gamma,
            coef0,
            support_vectors,
            n_features,
            dual_coef,
            intercept,
            n_support,
        })
    }

    /// `k_function` of libsvm's sparse build: a merge over both rows' indices.
    fn kernel(&self, xi: &[usize], xv: &[f64], sv: usize) -> f64 {
        let (yi, yv) = self.support_vectors.row(sv);
        match self.kernel {
            Kernel::Linear => dot(xi, xv, yi, yv),
            Kernel::Poly { degree } => (self.gamma * dot(xi, xv, yi, yv) + self.coef0).powi(degree),
            Kernel::Sigmoid => (self.gamma * dot(xi, xv, yi, yv) + self.coef0).tanh(),
            Kernel::Rbf => {
                let (mut a, mut b, mut sum) = (0, 0, 0.0);
                while a < xi.len() && b < yi.len() {
                    if xi[a] == yi[b] {
                        let d = xv[a] - yv[b];
                        sum += d * d;
                        a += 1;
                        b += 1;
                    } else if xi[a] > yi[b] {
                        sum += yv[b] * yv[b];
                        b += 1;
                    } else {
                        sum += xv[a] * xv[a];
                        a += 1;
                    }
                }
                for &v in &xv[a..] {
                    sum += v * v;
                }
                for &v in &yv[b..] {
                    sum += v * v;
                }
                (-self.gamma * sum).exp()
            }
        }
    }

    /// libsvm's decision values of one row (`svm_predict_values`): one per class pair
    /// (i < j, in order) for classification, one for regression.
    fn decision_values(&self, xi: &[usize], xv: &[f64], out: &mut Vec<f64>) {
        let n_sv = self.support_vectors.n_rows;
        let k: Vec<f64> = (0..n_sv).map(|s| self.kernel(xi, xv, s)).collect();
        if self.n_support.is_empty() {
            let mut sum = 0.0;
            for (c, kv) in self.dual_coef.iter().zip(&k) {
                sum += c * kv;
            }
            out.push(sum + self.intercept[0]);
            return;
        }
        let n_class = self.n_support.len();
        let mut start = vec![0; n_class];
        for i in 1..n_class {
            start[i] = start[i - 1] + self.n_support[i - 1];
        }
        let mut p = 0;
        for i in 0..n_class {
            for j in i + 1..n_class {
                let (si, sj) = (start[i], start[j]);
                let (ci, cj) = (self.n_support[i], self.n_support[j]);
                let coef1 = &self.dual_coef[(j - 1) * n_sv..j * n_sv];
                let coef2 = &self.dual_coef[i * n_sv..(i + 1) * n_sv];
                let mut sum = 0.0;
                for s in 0..ci {
                    sum += coef1[si + s] * k[si + s];
                }
                for s in 0..cj {
                    sum += coef2[sj + s] * k[sj + s];
                }
                // libsvm subtracts rho; scikit-learn's `_intercept_` is -rho.
                out.push(sum - -self.intercept[p]);
                p += 1;
            }
        }
    }

    /// Calls `f` with each row's decision values.
    fn each_row(
        &self,
        x: Rows<'_>,
        mut f: impl FnMut(&[f64]) -> Result<(), PredictError>,
    ) -> Result<(), PredictError> {
        let mut dec = Vec::new();
        match x {
            Rows::Dense(m) => {
                super::check_width(m, self.n_features, self.name)?;
                super::check_finite(m, false, self.name)?;
                let idx: Vec<usize> = (0..m.n_cols).collect();
                for i in 0..m.n_rows {
                    dec.clear();
                    self.decision_values(&idx, m.row(i), &mut dec);
                    f(&dec)?;
                }
            }
            Rows::Sparse(s) => {
                if s.n_cols != self.n_features {
                    return Err(PredictError::InvalidInput(format!(
                        "X has {} features, but {} is expecting {} features as input",
                        s.n_cols, self.name, self.n_features
                    )));
                }
                s.check_finite(self.name)?;
                for i in 0..s.n_rows {
                    let (idx, val) = s.row(i);
                    dec.clear();
                    self.decision_values(idx, val, &mut dec);
                    f(&dec)?;
                }
            }
        }
        Ok(())
    }
}

fn dot(xi: &[usize], xv: &[f64], yi: &[usize], yv: &[f64]) -> f64 {
    let (mut a, mut b, mut sum) = (0, 0, 0.0);
    while a < xi.len() && b < yi.len() {
        if xi[a] == yi[b] {
            sum += xv[a] * yv[b];
            a += 1;
            b += 1;
        } else if xi[a] > yi[b] {
            b += 1;
        } else {
            a += 1;
        }
    }
    sum
}

#[derive(Debug)]
struct SvmClassifier {
    svm: Svm,
    n_classes: usize,
    /// `decision_function_shape == "ovr"` (the default).
    ovr: bool,
    break_ties: bool,
    /// libsvm's Platt parameters, one per class pair, when fitted with probability=True.
    prob: Option<(Vec<f64>, Vec<f64>)>,
}

pub(crate) fn build_classifier(
    obj: Obj<'_>,
) -> Result<(ClassLabels, Box<dyn Classifier>), ModelError> {
    let classes = obj.labels("classes_")?;
    let svm = Svm::from_obj(obj, true)?;
    let n_classes = classes.len();
    if svm.n_support.len() != n_classes {
        return Err(obj.malformed("_n_support and classes_ disagree"));
    }
    let ovr = match obj.opt_str("decision_function_shape")? {
        None | Some("ovr") => true,
        Some("ovo") => false,
        Some(other) => return Err(obj.unsupported(format!("decision_function_shape {other:?}"))),
    };
    // libsvm leaves probA/probB empty unless fitted with probability=True (whose
    // parameter scikit-learn 1.9 deprecates, so the fitted arrays decide).
    let (a_key, b_key) = if obj.some("_probA").is_some() {
        ("_probA", "_probB")
    } else {
        ("probA_", "probB_")
    };
    let a = obj.f64s(a_key)?.0;
    let b = obj.f64s(b_key)?.0;
    let pairs = n_classes * (n_classes - 1) / 2;
    let prob = match (a.len(), b.len()) {
        (0, 0) => None,
        (x, y) if x == pairs && y == pairs => Some((a, b)),
        _ => return Err(obj.malformed("probA_ / probB_ do not hold one value per class pair")),
    };
    Ok((
        classes,
        Box::new(SvmClassifier {
            svm,
            n_classes,
            ovr,
            break_ties: obj.bool_or("break_ties", false)?,
            prob,
        }),
    ))
}

impl SvmClassifier {
    fn labels(&self, x: Rows<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        if self.break_ties && self.ovr && self.n_classes > 2 {
            let mut d = Vec::new();
            self.decision(x, &mut d)?;
            out.extend(d.chunks(self.n_classes).map(super::argmax));
            return Ok(());
        }
        let k = self.n_classes;
        self.svm.each_row(x, |dec| {
            // libsvm's vote: the first class with the most pairwise wins.
            let mut votes = vec![0usize; k];
            let mut p = 0;
            for i in 0..k {
                for j in i + 1..k {
                    if dec[p] > 0.0 {
                        votes[i] += 1;
                    } else {
                        votes[j] += 1;
                    }
                    p += 1;
                }
            }
            let mut best = 0;
            for i in 1..k {
                if votes[i] > votes[best] {
                    best = i;
                }
            }
            out.push(best);
            Ok(())
        })
    }

    /// scikit-learn's `decision_function`.
    fn decision(&self, x: Rows<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        let k = self.n_classes;
        self.svm.each_row(x, |dec| {
            if k == 2 {
                out.push(-dec[0]);
            } else if self.ovr {
                out.extend(ovr_decision(dec, k));
            } else {
                out.extend_from_slice(dec);
            }
            Ok(())
        })
    }

    fn proba(&self, x: Rows<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        let Some((a, b)) = &self.prob else {
            return Err(no_proba(self.svm.name));
        };
        let k = self.n_classes;
        self.svm.each_row(x, |dec| {
            let min_prob = 1e-7;
            let mut r = vec![0.0; k * k];
            let mut p = 0;
            for i in 0..k {
                for j in i + 1..k {
                    let v = sigmoid_predict(dec[p], a[p], b[p])
                        .max(min_prob)
                        .min(1.0 - min_prob);
                    r[i * k + j] = v;
                    r[j * k + i] = 1.0 - v;
                    p += 1;
                }
            }
            // scikit-learn's libsvm couples pairs for two classes as well.
            out.extend(multiclass_probability(k, &r));
            Ok(())
        })
    }
}

fn no_proba(name: &str) -> PredictError {
    PredictError::InvalidInput(format!(
        "{name} was fitted with probability=False: it has no predict_proba \
         (refit with probability=True, or wrap it in CalibratedClassifierCV)"
    ))
}

/// `sklearn.utils.multiclass._ovr_decision_function(dec < 0, -dec, n_classes)`.
fn ovr_decision(dec: &[f64], k: usize) -> Vec<f64> {
    let mut votes = vec![0.0; k];
    let mut conf = vec![0.0; k];
    let mut p = 0;
    for i in 0..k {
        for j in i + 1..k {
            let c = -dec[p];
            conf[i] -= c;
            conf[j] += c;
            if dec[p] < 0.0 {
                votes[j] += 1.0;
            } else {
                votes[i] += 1.0;
            }
            p += 1;
        }
    }
    votes
        .iter()
        .zip(&conf)
        .map(|(v, c)| v + c / (3.0 * (c.abs() + 1.0)))
        .collect()
}

/// libsvm's `sigmoid_predict`.
fn sigmoid_predict(decision: f64, a: f64, b: f64) -> f64 {
    let f = decision * a + b;
    if f >= 0.0 {
        (-f).exp() / (1.0 + (-f).exp())
    } else {
        1.0 / (1.0 + f.exp())
    }
}

/// libsvm's `multiclass_probability` (method 2 of Wu, Lin and Weng, 2004), on the
/// pairwise probabilities `r` (row-major `k x k`).
fn multiclass_probability(k: usize, r: &[f64]) -> Vec<f64> {
    let max_iter = 100.max(k);
    let eps = 0.005 / k as f64;
    let mut p = vec![1.0 / k as f64; k];
    let mut q = vec![0.0; k * k];
    let mut qp = vec![0.0; k];
    for t in 0..k {
        q[t * k + t] = 0.0;
        for j in 0..t {
            q[t * k + t] += r[j * k + t] * r[j * k + t];
            q[t * k + j] = q[j * k + t];
        }
        for j in t + 1..k {
            q[t * k + t] += r[j * k + t] * r[j * k + t];
            q[t * k + j] = -r[j * k + t] * r[t * k + j];
        }
    }
    for _ in 0..max_iter {
        let mut pqp = 0.0;
        for t in 0..k {
            qp[t] = 0.0;
            for j in 0..k {
                qp[t] += q[t * k + j] * p[j];
            }
            pqp += p[t] * qp[t];
        }
        let mut max_error: f64 = 0.0;
        for q_t in &qp {
            let error = (q_t - pqp).abs();
            if error > max_error {
                max_error = error;
            }
        }
        if max_error < eps {
            break;
        }
        for t in 0..k {
            let diff = (-qp[t] + pqp) / q[t * k + t];
            p[t] += diff;
            pqp = (pqp + diff * (diff * q[t * k + t] + 2.0 * qp[t])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[t * k + j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
    p
}

impl Classifier for SvmClassifier {
    fn n_features(&self) -> usize {
        self.svm.n_features
    }

    fn name(&self) -> &str {
        self.svm.name
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        self.labels(Rows::Dense(x), out)
    }

    fn predict_sparse(&self, x: &SparseRows, out: &mut Vec<usize>) -> Result<(), PredictError> {
        self.labels(Rows::Sparse(x), out)
    }

    fn has_proba(&self) -> bool {
        self.prob.is_some()
    }

    fn predict_proba(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.proba(Rows::Dense(x), out)
    }

    fn predict_proba_sparse(&self, x: &SparseRows, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.proba(Rows::Sparse(x), out)
    }

    fn decision_width(&self) -> Option<usize> {
        let k = self.n_classes;
        Some(if k == 2 {
            1
        } else if self.ovr {
            k
        } else {
            k * (k - 1) / 2
        })
    }

    fn decision_function(&self, x: Rows<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.decision(x, out)
    }
}

#[derive(Debug)]
struct SvmRegressor {
    svm: Svm,
}

pub(crate) fn build_regressor(obj: Obj<'_>) -> Result<Box<dyn Regressor>, ModelError> {
    Ok(Box::new(SvmRegressor {
        svm: Svm::from_obj(obj, false)?,
    }))
}

impl Regressor for SvmRegressor {
    fn n_features(&self) -> usize {
        self.svm.n_features
    }

    fn name(&self) -> &str {
        self.svm.name
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.svm.each_row(Rows::Dense(x), |d| {
            out.push(d[0]);
            Ok(())
        })
    }

    fn predict_sparse(&self, x: &SparseRows, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.svm.each_row(Rows::Sparse(x), |d| {
            out.push(d[0]);
            Ok(())
        })
    }
}
