//! `GaussianNB`, and `MultinomialNB` / `ComplementNB` (dense or sparse counts).

use super::access::Obj;
use super::{
    argmax, check_finite, check_width, numpy_sum, ClassLabels, Classifier, MatrixRef, Rows,
    SparseRows,
};
use crate::model::{ModelError, PredictError};

#[derive(Debug)]
struct GaussianNb {
    n_features: usize,
    n_classes: usize,
    /// `theta_`, `n_classes x n_features`.
    theta: Vec<f64>,
    /// `var_` (named `sigma_` before scikit-learn 1.0).
    var: Vec<f64>,
    /// Per class: `log(class_prior_[i]) `and `-0.5 * sum(log(2 pi var_[i]))`.
    log_prior: Vec<f64>,
    log_norm: Vec<f64>,
}

pub(crate) fn build_gaussian_nb(
    obj: Obj<'_>,
) -> Result<(ClassLabels, Box<dyn Classifier>), ModelError> {
    let classes = obj.labels("classes_")?;
    let (theta, shape) = obj.f64s("theta_")?;
    let var_key = if obj.some("var_").is_some() {
        "var_"
    } else {
        "sigma_"
    };
    let (var, var_shape) = obj.f64s(var_key)?;
    let (prior, _) = obj.f64s("class_prior_")?;
    let (n_classes, n_features) = match shape.as_slice() {
        [k, n] => (*k, *n),
        _ => return Err(obj.malformed("theta_ is not 2-D")),
    };
    if var_shape != shape || n_classes != classes.len() || prior.len() != n_classes {
        return Err(obj.malformed("theta_, var_, class_prior_ and classes_ disagree"));
    }
    let log_prior = prior.iter().map(|p| p.ln()).collect();
    let log_norm = (0..n_classes)
        .map(|i| {
            let logs: Vec<f64> = var[i * n_features..(i + 1) * n_features]
                .iter()
                .map(|v| (2.0 * std::f64::consts::PI * v).ln())
                .collect();
            -0.5 * numpy_sum(&logs)
        })
        .collect();
    Ok((
        classes,
        Box::new(GaussianNb {
            n_features,
            n_classes,
            theta,
            var,
            log_prior,
            log_norm,
        }),
    ))
}

impl GaussianNb {
    /// `_joint_log_likelihood` of one row into `jll` (one value per class).
    fn joint_log_likelihood(&self, row: &[f64], jll: &mut Vec<f64>, terms: &mut Vec<f64>) {
        jll.clear();
        let n = self.n_features;
        for i in 0..self.n_classes {
            terms.clear();
            let theta = &self.theta[i * n..(i + 1) * n];
            let var = &self.var[i * n..(i + 1) * n];
            for ((x, t), v) in row.iter().zip(theta).zip(var) {
                let d = x - t;
                terms.push(d * d / v);
            }
            let n_ij = self.log_norm[i] - 0.5 * numpy_sum(terms);
            jll.push(self.log_prior[i] + n_ij);
        }
    }

    fn check(&self, x: MatrixRef<'_>) -> Result<(), PredictError> {
        check_width(x, self.n_features, "GaussianNB")?;
        check_finite(x, false, "GaussianNB")
    }
}

impl Classifier for GaussianNb {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        self.check(x)?;
        let (mut jll, mut terms) = (Vec::new(), Vec::new());
        for i in 0..x.n_rows {
            self.joint_log_likelihood(x.row(i), &mut jll, &mut terms);
            out.push(argmax(&jll));
        }
        Ok(())
    }

    fn has_proba(&self) -> bool {
        true
    }

    fn predict_proba(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.check(x)?;
        let (mut jll, mut terms) = (Vec::new(), Vec::new());
        for i in 0..x.n_rows {
            self.joint_log_likelihood(x.row(i), &mut jll, &mut terms);
            let lse = logsumexp(&jll);
            out.extend(jll.iter().map(|v| (v - lse).exp()));
        }
        Ok(())
    }
}

/// `scipy.special.logsumexp` of one row.
pub(crate) fn logsumexp(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    let exps: Vec<f64> = v.iter().map(|x| (x - max).exp()).collect();
    numpy_sum(&exps).ln() + max
}

/// `MultinomialNB` and `ComplementNB`: the joint log-likelihood is
/// `X @ feature_log_prob_.T`, plus `class_log_prior_` (for `ComplementNB` only when
/// there is a single class, as scikit-learn does).
#[derive(Debug)]
struct DiscreteNb {
    name: &'static str,
    n_features: usize,
    n_classes: usize,
    /// `feature_log_prob_`, `n_classes x n_features`.
    feature_log_prob: Vec<f64>,
    /// Added to every row's likelihoods (zeros for `ComplementNB` with several classes).
    prior: Vec<f64>,
}

pub(crate) fn build_discrete_nb(
    obj: Obj<'_>,
) -> Result<(ClassLabels, Box<dyn Classifier>), ModelError> {
    let classes = obj.labels("classes_")?;
    let (feature_log_prob, shape) = obj.f64s("feature_log_prob_")?;
    let (n_classes, n_features) = match shape.as_slice() {
        [k, n] => (*k, *n),
        _ => return Err(obj.malformed("feature_log_prob_ is not 2-D")),
    };
    let (class_log_prior, _) = obj.f64s("class_log_prior_")?;
    if n_classes != classes.len() || class_log_prior.len() != n_classes {
        return Err(obj.malformed("feature_log_prob_, class_log_prior_ and classes_ disagree"));
    }
    if let Some(n) = obj.n_features_in()? {
        if n != n_features {
            return Err(obj.malformed(format!(
                "n_features_in_ is {n} but feature_log_prob_ has {n_features} columns"
            )));
        }
    }
    let (name, prior) = match obj.name {
        "MultinomialNB" => ("MultinomialNB", class_log_prior),
        _ if n_classes == 1 => ("ComplementNB", class_log_prior),
        _ => ("ComplementNB", vec![0.0; n_classes]),
    };
    Ok((
        classes,
        Box::new(DiscreteNb {
            name,
            n_features,
            n_classes,
            feature_log_prob,
            prior,
        }),
    ))
}

impl DiscreteNb {
    /// `n_rows * n_classes` joint log-likelihoods.
    fn jll(&self, x: Rows<'_>) -> Result<Vec<f64>, PredictError> {
        let (n, k) = (self.n_features, self.n_classes);
        let mut out = Vec::with_capacity(x.n_rows() * k);
        match x {
            Rows::Dense(m) => {
                check_width(m, n, self.name)?;
                check_finite(m, false, self.name)?;
                for i in 0..m.n_rows {
                    let row = m.row(i);
                    for c in 0..k {
                        let w = &self.feature_log_prob[c * n..(c + 1) * n];
                        let mut acc = 0.0;
                        for (a, b) in row.iter().zip(w) {
                            acc += a * b;
                        }
                        out.push(acc + self.prior[c]);
                    }
                }
            }
            Rows::Sparse(s) => {
                if s.n_cols != n {
                    return Err(PredictError::InvalidInput(format!(
                        "X has {} features, but {} is expecting {n} features as input",
                        s.n_cols, self.name
                    )));
                }
                s.check_finite(self.name)?;
                for i in 0..s.n_rows {
                    let (idx, val) = s.row(i);
                    for c in 0..k {
                        let w = &self.feature_log_prob[c * n..(c + 1) * n];
                        let mut acc = 0.0;
                        for (&j, &v) in idx.iter().zip(val) {
                            acc += v * w[j];
                        }
                        out.push(acc + self.prior[c]);
                    }
                }
            }
        }
        Ok(out)
    }

    fn labels(&self, x: Rows<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        let jll = self.jll(x)?;
        out.extend(jll.chunks(self.n_classes).map(argmax));
        Ok(())
    }

    fn proba(&self, x: Rows<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        let jll = self.jll(x)?;
        for row in jll.chunks(self.n_classes) {
            let lse = logsumexp(row);
            out.extend(row.iter().map(|v| (v - lse).exp()));
        }
        Ok(())
    }
}

impl Classifier for DiscreteNb {
    fn n_features(&self) -> usize {
        self.n_features
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
        true
    }

    fn predict_proba(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.proba(Rows::Dense(x), out)
    }

    fn predict_proba_sparse(&self, x: &SparseRows, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.proba(Rows::Sparse(x), out)
    }
}
