//! `HistGradientBoostingClassifier` and `HistGradientBoostingRegressor`.
//!
//! raw = `_baseline_prediction`, then every iteration's `TreePredictor`s add their
//! leaf values (already shrunk by the learning rate). Predictors walk the raw f64
//! input (`num_threshold`), sending NaN the way `missing_go_to_left` says. Models
//! with categorical features are refused.

use super::access::{array_i64, as_list, record_field, Obj, SkVersion};
use super::{
    argmax, check_width, expit, softmax_in_place, ClassLabels, Classifier, MatrixRef, Regressor,
    Rows,
};
use crate::model::{ModelError, PredictError};
use crate::value::{ArrayData, Value};

#[derive(Debug, Clone, Copy)]
struct Node {
    value: f64,
    threshold: f64,
    feature: u32,
    left: u32,
    right: u32,
    is_leaf: bool,
    missing_go_to_left: bool,
}

#[derive(Debug)]
struct Predictor {
    nodes: Vec<Node>,
}

impl Predictor {
    fn from_value(value: &Value, owner: &str, n_features: usize) -> Result<Predictor, ModelError> {
        let obj = Obj::new(value)?;
        let bad = |m: String| ModelError::Malformed(format!("{owner}: TreePredictor: {m}"));
        if obj.name != "TreePredictor" {
            return Err(bad(format!("found {}", obj.name)));
        }
        let nodes = obj.array("nodes")?;
        let field = |name: &str| -> Result<&ArrayData, ModelError> {
            record_field(nodes, name).ok_or_else(|| bad(format!("nodes lack `{name}`")))
        };
        let floats = |name: &str| -> Result<Vec<f64>, ModelError> {
            match field(name)? {
                ArrayData::Float(v) => Ok(v.clone()),
                _ => Err(bad(format!("`{name}` is not float"))),
            }
        };
        let ints = |name: &str| -> Result<Vec<i64>, ModelError> {
            array_i64(field(name)?).ok_or_else(|| bad(format!("`{name}` is not integer")))
        };
        let value = floats("value")?;
        let threshold = floats("num_threshold")?;
        let feature = ints("feature_idx")?;
        let left = ints("left")?;
        let right = ints("right")?;
        let is_leaf = ints("is_leaf")?;
        let missing = ints("missing_go_to_left")?;
        let categorical = match record_field(nodes, "is_categorical") {
            Some(d) => array_i64(d).ok_or_else(|| bad("`is_categorical` is not integer".into()))?,
            None => vec![0; value.len()],
        };
        let n = value.len();
        if n == 0
            || [
                threshold.len(),
                feature.len(),
                left.len(),
                right.len(),
                is_leaf.len(),
                missing.len(),
                categorical.len(),
            ]
            .iter()
            .any(|&l| l != n)
        {
            return Err(bad("node fields of different lengths".into()));
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let leaf = is_leaf[i] != 0;
            if !leaf {
                if categorical[i] != 0 {
                    return Err(ModelError::Unsupported(format!(
                        "{owner}: categorical splits"
                    )));
                }
                // Children come after their parent, so every walk ends.
                let ok = |c: i64| c > i as i64 && (c as usize) < n;
                if !ok(left[i]) || !ok(right[i]) {
                    return Err(bad(format!("node {i} has invalid children")));
                }
                if feature[i] < 0 || feature[i] as usize >= n_features {
                    return Err(bad(format!("node {i} splits on feature {}", feature[i])));
                }
            }
            out.push(Node {
                value: value[i],
                threshold: threshold[i],
                feature: if leaf { 0 } else { feature[i] as u32 },
                left: if leaf { 0 } else { left[i] as u32 },
                right: if leaf { 0 } else { right[i] as u32 },
                is_leaf: leaf,
                missing_go_to_left: missing[i] != 0,
            });
        }
        Ok(Predictor { nodes: out })
    }

    #[inline]
    fn predict_row(&self, row: &[f64]) -> f64 {
        let mut node = &self.nodes[0];
        loop {
            if node.is_leaf {
                return node.value;
            }
            let v = row[node.feature as usize];
            let left = if v.is_nan() {
                node.missing_go_to_left
            } else {
                v <= node.threshold
            };
            node = &self.nodes[if left { node.left } else { node.right } as usize];
        }
    }
}

#[derive(Debug)]
struct Ensemble {
    /// `iterations x k` predictors.
    predictors: Vec<Predictor>,
    k: usize,
    baseline: Vec<f64>,
    n_features: usize,
}

impl Ensemble {
    fn build(obj: Obj<'_>) -> Result<Ensemble, ModelError> {
        if let Some(cats) = obj.some("is_categorical_") {
            let any = match cats {
                Value::Array(a) => array_i64(&a.data).is_none_or(|v| v.iter().any(|&c| c != 0)),
                _ => true,
            };
            if any {
                return Err(obj.unsupported("categorical features"));
            }
        }
        if obj.some("_preprocessor").is_some() {
            return Err(obj.unsupported("categorical features (a fitted _preprocessor)"));
        }
        let n_features = match obj.n_features_in()? {
            Some(n) => n,
            None => obj.usize("_n_features")?,
        };
        let (baseline, _) = obj.f64s("_baseline_prediction")?;
        let k = obj.usize("n_trees_per_iteration_")?;
        if baseline.len() != k || k == 0 {
            return Err(obj.malformed("_baseline_prediction does not match n_trees_per_iteration_"));
        }
        let mut predictors = Vec::new();
        for iteration in obj.list("_predictors")? {
            let trees = as_list(iteration).ok_or_else(|| obj.malformed("_predictors"))?;
            if trees.len() != k {
                return Err(obj.malformed("an iteration with the wrong number of trees"));
            }
            for t in trees {
                predictors.push(Predictor::from_value(t, obj.name, n_features)?);
            }
        }
        Ok(Ensemble {
            predictors,
            k,
            baseline,
            n_features,
        })
    }

    /// `n_rows x k` raw predictions. Infinity is accepted (scikit-learn does not
    /// check finiteness here); NaN follows each split's missing-value direction.
    fn raw(&self, x: MatrixRef<'_>, who: &str) -> Result<Vec<f64>, PredictError> {
        check_width(x, self.n_features, who)?;
        let mut raw = Vec::with_capacity(x.n_rows * self.k);
        for i in 0..x.n_rows {
            let row = x.row(i);
            let start = raw.len();
            raw.extend(self.baseline.iter().map(|b| 0.0 + b));
            for iteration in self.predictors.chunks(self.k) {
                for (k, p) in iteration.iter().enumerate() {
                    raw[start + k] += p.predict_row(row);
                }
            }
        }
        Ok(raw)
    }
}

/// How `predict` picks the class in the saving version: up to 1.2 the argmax of
/// `predict_proba`; from 1.5 `raw > 0` (binary) or the argmax of raw values. For the
/// versions between, both are computed and a row where they disagree is refused.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    Proba,
    Raw,
    Both,
}

#[derive(Debug)]
struct HgbClassifier {
    e: Ensemble,
    n_classes: usize,
    decision: Decision,
}

pub(crate) fn build_classifier(
    obj: Obj<'_>,
) -> Result<(ClassLabels, Box<dyn Classifier>), ModelError> {
    let classes = obj.labels("classes_")?;
    match obj.str("loss")? {
        "log_loss" | "auto" | "binary_crossentropy" | "categorical_crossentropy" => {}
        other => return Err(obj.unsupported(format!("loss {other:?}"))),
    }
    let e = Ensemble::build(obj)?;
    let n_classes = classes.len();
    if e.k != if n_classes == 2 { 1 } else { n_classes } {
        return Err(obj.malformed("n_trees_per_iteration_ does not match the classes"));
    }
    let version = obj.version()?;
    let decision = if version <= SkVersion(1, 2) {
        Decision::Proba
    } else if version >= SkVersion(1, 5) {
        Decision::Raw
    } else {
        Decision::Both
    };
    Ok((
        classes,
        Box::new(HgbClassifier {
            e,
            n_classes,
            decision,
        }),
    ))
}

impl HgbClassifier {
    fn proba_from_raw(&self, raw: &[f64], out: &mut Vec<f64>) {
        if self.e.k == 1 {
            for &r in raw {
                let p = expit(r);
                out.extend([1.0 - p, p]);
            }
            return;
        }
        for row in raw.chunks(self.n_classes) {
            let start = out.len();
            out.extend_from_slice(row);
            softmax_in_place(&mut out[start..]);
        }
    }
}

impl Classifier for HgbClassifier {
    fn n_features(&self) -> usize {
        self.e.n_features
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        let raw = self.e.raw(x, "HistGradientBoostingClassifier")?;
        let by_raw: Vec<usize> = if self.e.k == 1 {
            raw.iter().map(|&r| usize::from(r > 0.0)).collect()
        } else {
            raw.chunks(self.e.k).map(argmax).collect()
        };
        if self.decision == Decision::Raw {
            out.extend(by_raw);
            return Ok(());
        }
        let mut proba = Vec::with_capacity(raw.len() * 2);
        self.proba_from_raw(&raw, &mut proba);
        let by_proba: Vec<usize> = proba.chunks(self.n_classes).map(argmax).collect();
        if self.decision == Decision::Both && by_raw != by_proba {
            return Err(PredictError::InvalidInput(
                "a row lies exactly on this model's decision boundary, where scikit-learn 1.3/1.4 \
                 break ties in a way not reproduced here"
                    .into(),
            ));
        }
        out.extend(by_proba);
        Ok(())
    }

    fn has_proba(&self) -> bool {
        true
    }

    fn predict_proba(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        let raw = self.e.raw(x, "HistGradientBoostingClassifier")?;
        self.proba_from_raw(&raw, out);
        Ok(())
    }

    /// `decision_function` is the raw score: one column for a binary problem, one per
    /// class otherwise (what `CalibratedClassifierCV` calibrates).
    fn decision_width(&self) -> Option<usize> {
        Some(self.e.k)
    }

    fn decision_function(&self, x: Rows<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        let who = "HistGradientBoostingClassifier";
        match x {
            Rows::Dense(m) => out.extend(self.e.raw(m, who)?),
            Rows::Sparse(s) => s.for_each_dense_row(who, |row| {
                out.extend(self.e.raw(row, who)?);
                Ok(())
            })?,
        }
        Ok(())
    }
}

#[derive(Debug)]
struct HgbRegressor {
    e: Ensemble,
    /// Poisson and gamma losses predict `exp(raw)`.
    exp_link: bool,
}

pub(crate) fn build_regressor(obj: Obj<'_>) -> Result<Box<dyn Regressor>, ModelError> {
    let exp_link = match obj.str("loss")? {
        "squared_error"
        | "least_squares"
        | "absolute_error"
        | "least_absolute_deviation"
        | "quantile" => false,
        "poisson" | "gamma" => true,
        other => return Err(obj.unsupported(format!("loss {other:?}"))),
    };
    let e = Ensemble::build(obj)?;
    if e.k != 1 {
        return Err(obj.malformed("a regressor with several trees per iteration"));
    }
    Ok(Box::new(HgbRegressor { e, exp_link }))
}

impl Regressor for HgbRegressor {
    fn n_features(&self) -> usize {
        self.e.n_features
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        let raw = self.e.raw(x, "HistGradientBoostingRegressor")?;
        if self.exp_link {
            out.extend(raw.into_iter().map(f64::exp));
        } else {
            out.extend(raw);
        }
        Ok(())
    }
}
