//! `GaussianNB`.

use super::access::Obj;
use super::{argmax, check_finite, check_width, numpy_sum, ClassLabels, Classifier, MatrixRef};
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
