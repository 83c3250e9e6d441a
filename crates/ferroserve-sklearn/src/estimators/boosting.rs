//! `GradientBoostingClassifier` and `GradientBoostingRegressor`.
//!
//! raw = init (from `init_`, or zeros), then for every stage and every class
//! `raw[k] += learning_rate * leaf value`, walking the trees on float32 input as
//! scikit-learn's `predict_stages` does. The loss turns raw values into probabilities.
//! Which loss family pickled the model (the pre-1.4 `_gb_losses` objects or the
//! shared `sklearn._loss` ones) decides the few formulas that differ.

use super::access::{as_list, Obj, SkVersion};
use super::naive_bayes::logsumexp;
use super::tree::{to_float32, Tree};
use super::{
    argmax, check_width, expit, softmax_in_place, ClassLabels, Classifier, MatrixRef, Regressor,
    Rows,
};
use crate::model::{ModelError, PredictError};
use crate::value::Value;

/// The stages: `estimators_[i, k]` trees, `n_stages x k`.
#[derive(Debug)]
struct Stages {
    trees: Vec<Tree>,
    k: usize,
    learning_rate: f64,
    n_features: usize,
}

impl Stages {
    fn build(obj: Obj<'_>) -> Result<Stages, ModelError> {
        let arr = obj.array("estimators_")?;
        let k = match arr.shape.as_slice() {
            [_, k] if *k > 0 => *k,
            other => return Err(obj.malformed(format!("estimators_ of shape {other:?}"))),
        };
        let items = as_list(obj.req("estimators_")?)
            .ok_or_else(|| obj.malformed("estimators_ is not an object array"))?;
        let mut trees = Vec::with_capacity(items.len());
        for item in items {
            let member = Obj::new(item)?;
            trees.push(Tree::from_value(member.req("tree_")?, obj.name)?);
        }
        let n_features = match obj.n_features_in()? {
            Some(n) => n,
            None => obj.usize("n_features_")?,
        };
        if trees.is_empty()
            || trees
                .iter()
                .any(|t| t.leaf_values(0).len() != 1 || t.n_features() != n_features)
            || trees.len() % k != 0
        {
            return Err(obj.malformed("estimators_ are not regression trees"));
        }
        Ok(Stages {
            trees,
            k,
            learning_rate: obj.f64("learning_rate")?,
            n_features,
        })
    }

    /// Adds every stage's contribution to `raw` (`n_rows x k`), for float32 rows `xf`.
    fn add(&self, xf: &[f64], n_rows: usize, raw: &mut [f64]) {
        let n = self.n_features;
        for i in 0..n_rows {
            let row = &xf[i * n..(i + 1) * n];
            for stage in self.trees.chunks(self.k) {
                for (k, tree) in stage.iter().enumerate() {
                    raw[i * self.k + k] +=
                        self.learning_rate * tree.leaf_values(tree.apply(row))[0];
                }
            }
        }
    }

    fn float32_input(&self, x: MatrixRef<'_>, who: &str) -> Result<Vec<f64>, PredictError> {
        check_width(x, self.n_features, who)?;
        to_float32(x, false, who)
    }
}

/// Whether the model pickled the pre-1.4 `sklearn.ensemble._gb_losses` loss objects
/// (judged by the loss object itself, else by the saving version).
fn old_losses(obj: Obj<'_>) -> Result<bool, ModelError> {
    for key in ["_loss", "loss_"] {
        if let Some(Value::Object { module, name, .. }) = obj.get(key) {
            return Ok(module.contains("_gb_losses")
                || matches!(
                    name.as_str(),
                    "BinomialDeviance"
                        | "MultinomialDeviance"
                        | "LeastSquaresError"
                        | "LeastAbsoluteError"
                        | "HuberLossFunction"
                        | "QuantileLossFunction"
                ));
        }
    }
    Ok(obj.version()? < SkVersion(1, 4))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ClassLoss {
    /// Binary or multinomial log loss.
    LogLoss,
    /// AdaBoost's exponential loss (binary only).
    Exponential,
}

#[derive(Debug)]
struct GbClassifier {
    stages: Stages,
    /// The initial raw value per class (`k` values), or zeros.
    init: Vec<f64>,
    loss: ClassLoss,
    n_classes: usize,
    old: bool,
}

pub(crate) fn build_classifier(
    obj: Obj<'_>,
) -> Result<(ClassLabels, Box<dyn Classifier>), ModelError> {
    let classes = obj.labels("classes_")?;
    let n_classes = classes.len();
    let loss = match obj.str("loss")? {
        "log_loss" | "deviance" => ClassLoss::LogLoss,
        "exponential" if n_classes == 2 => ClassLoss::Exponential,
        other => return Err(obj.unsupported(format!("loss {other:?}"))),
    };
    let stages = Stages::build(obj)?;
    let expected_k = if n_classes == 2 { 1 } else { n_classes };
    if stages.k != expected_k {
        return Err(obj.malformed("estimators_ columns do not match the classes"));
    }
    let old = old_losses(obj)?;
    let init = match obj.req("init_")? {
        Value::Str(s) if s == "zero" => vec![0.0; stages.k],
        v => {
            let init = Obj::new(v)?;
            if init.name != "DummyClassifier" {
                return Err(obj.unsupported(format!("init_ estimator {}", init.name)));
            }
            let strategy = init.opt_str("_strategy")?.or(init.opt_str("strategy")?);
            if strategy != Some("prior") {
                return Err(obj.unsupported(format!("init_ DummyClassifier strategy {strategy:?}")));
            }
            let (prior, _) = init.f64s("class_prior_")?;
            if prior.len() != n_classes {
                return Err(obj.malformed("init_ class_prior_ does not match the classes"));
            }
            // scikit-learn clips the priors to [eps, 1 - eps] with an eps that changed
            // between versions; a prior that close to 0 or 1 is refused instead.
            let eps = f64::from(f32::EPSILON);
            if prior.iter().any(|&p| p < eps || p > 1.0 - eps) {
                return Err(obj.unsupported("a class prior within float32 epsilon of 0 or 1"));
            }
            init_raw(&prior, loss, old)
        }
    };
    Ok((
        classes,
        Box::new(GbClassifier {
            stages,
            init,
            loss,
            n_classes,
            old,
        }),
    ))
}

/// The link applied to the prior probabilities.
fn init_raw(prior: &[f64], loss: ClassLoss, old: bool) -> Vec<f64> {
    if prior.len() == 2 {
        let p = prior[1];
        let logit = if old {
            (p / (1.0 - p)).ln()
        } else {
            scipy_logit(p)
        };
        return vec![match loss {
            ClassLoss::LogLoss => logit,
            ClassLoss::Exponential => 0.5 * logit,
        }];
    }
    if old {
        return prior.iter().map(|p| p.ln()).collect();
    }
    // The symmetric multinomial logit: log(p / geometric_mean(p)).
    let logs: Vec<f64> = prior.iter().map(|p| p.ln()).collect();
    let gmean = (super::numpy_sum(&logs) / prior.len() as f64).exp();
    prior.iter().map(|p| (p / gmean).ln()).collect()
}

/// `scipy.special.logit`, which switches formula near 0.5 for accuracy.
fn scipy_logit(p: f64) -> f64 {
    if !(0.3..=0.65).contains(&p) {
        (p / (1.0 - p)).ln()
    } else {
        let s = 2.0 * (p - 0.5);
        s.ln_1p() - (-s).ln_1p()
    }
}

impl GbClassifier {
    fn raw(&self, x: MatrixRef<'_>) -> Result<Vec<f64>, PredictError> {
        let xf = self.stages.float32_input(x, "GradientBoostingClassifier")?;
        let mut raw: Vec<f64> = (0..x.n_rows)
            .flat_map(|_| self.init.iter().copied())
            .collect();
        self.stages.add(&xf, x.n_rows, &mut raw);
        Ok(raw)
    }
}

impl Classifier for GbClassifier {
    fn n_features(&self) -> usize {
        self.stages.n_features
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        let raw = self.raw(x)?;
        if self.stages.k == 1 {
            out.extend(raw.iter().map(|&r| {
                let positive = match (self.loss, self.old) {
                    // _gb_losses' BinomialDeviance: argmax of [1 - p, p].
                    (ClassLoss::LogLoss, true) => {
                        let p = expit(r);
                        p > 1.0 - p
                    }
                    _ => r >= 0.0,
                };
                usize::from(positive)
            }));
        } else {
            out.extend(raw.chunks(self.stages.k).map(argmax));
        }
        Ok(())
    }

    fn has_proba(&self) -> bool {
        true
    }

    fn predict_proba(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        let raw = self.raw(x)?;
        if self.stages.k == 1 {
            for &r in &raw {
                let p = match self.loss {
                    ClassLoss::LogLoss => expit(r),
                    ClassLoss::Exponential => expit(2.0 * r),
                };
                out.extend([1.0 - p, p]);
            }
            return Ok(());
        }
        for row in raw.chunks(self.n_classes) {
            let start = out.len();
            if self.old {
                let lse = logsumexp(row);
                out.extend(row.iter().map(|r| (r - lse).exp()));
            } else {
                out.extend_from_slice(row);
                softmax_in_place(&mut out[start..]);
            }
        }
        Ok(())
    }

    /// `decision_function` is the raw score: one column for a binary problem, one per
    /// class otherwise (what `CalibratedClassifierCV` calibrates).
    fn decision_width(&self) -> Option<usize> {
        Some(self.stages.k)
    }

    fn decision_function(&self, x: Rows<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        match x {
            Rows::Dense(m) => out.extend(self.raw(m)?),
            Rows::Sparse(s) => s.for_each_dense_row("GradientBoostingClassifier", |row| {
                out.extend(self.raw(row)?);
                Ok(())
            })?,
        }
        Ok(())
    }
}

#[derive(Debug)]
struct GbRegressor {
    stages: Stages,
    init: f64,
}

pub(crate) fn build_regressor(obj: Obj<'_>) -> Result<Box<dyn Regressor>, ModelError> {
    match obj.str("loss")? {
        "squared_error" | "ls" | "absolute_error" | "lad" | "huber" | "quantile" => {}
        other => return Err(obj.unsupported(format!("loss {other:?}"))),
    }
    let stages = Stages::build(obj)?;
    if stages.k != 1 {
        return Err(obj.malformed("a regressor with several trees per stage"));
    }
    let init = match obj.req("init_")? {
        Value::Str(s) if s == "zero" => 0.0,
        v => {
            let init = Obj::new(v)?;
            if init.name != "DummyRegressor" {
                return Err(obj.unsupported(format!("init_ estimator {}", init.name)));
            }
            let (constant, _) = init.f64s("constant_")?;
            match constant.as_slice() {
                [c] => *c,
                _ => return Err(obj.unsupported("a multi-output init_")),
            }
        }
    };
    Ok(Box::new(GbRegressor { stages, init }))
}

impl Regressor for GbRegressor {
    fn n_features(&self) -> usize {
        self.stages.n_features
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        let xf = self.stages.float32_input(x, "GradientBoostingRegressor")?;
        let mut raw = vec![self.init; x.n_rows];
        self.stages.add(&xf, x.n_rows, &mut raw);
        out.extend(raw);
        Ok(())
    }
}
