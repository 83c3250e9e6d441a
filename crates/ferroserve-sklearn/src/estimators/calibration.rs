//! `CalibratedClassifierCV` (sigmoid and isotonic, `ensemble` true or false): each
//! fitted `_CalibratedClassifier` maps its base estimator's `decision_function` (or,
//! lacking one, `predict_proba`) through one calibrator per class, then normalizes;
//! the model averages them (`predict_proba`) and predicts the most probable class.

use super::access::{as_list, Obj};
use super::SparseRows;
use super::{argmax, build_predictor, expit, ClassLabels, Classifier, MatrixRef, Predictor, Rows};
use crate::model::{ModelError, PredictError};

#[derive(Debug)]
enum Calibrator {
    /// `_SigmoidCalibration`: `expit(-(a * t + b))`.
    Sigmoid { a: f64, b: f64 },
    /// `IsotonicRegression(out_of_bounds="clip")`: clip to the thresholds' range, then
    /// scipy's linear `interp1d` over them.
    Isotonic {
        x: Vec<f64>,
        y: Vec<f64>,
        clip: (f64, f64),
    },
}

impl Calibrator {
    fn from_obj(obj: Obj<'_>) -> Result<Calibrator, ModelError> {
        match obj.name {
            "_SigmoidCalibration" => Ok(Calibrator::Sigmoid {
                a: obj.f64("a_")?,
                b: obj.f64("b_")?,
            }),
            "IsotonicRegression" => {
                let x = obj.f64s("X_thresholds_")?.0;
                let y = obj.f64s("y_thresholds_")?.0;
                if x.is_empty()
                    || x.len() != y.len()
                    || x.windows(2)
                        .any(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less))
                {
                    return Err(obj.malformed("thresholds are empty, unequal or not increasing"));
                }
                if obj.opt_str("out_of_bounds")?.unwrap_or("nan") != "clip" {
                    return Err(obj.unsupported("out_of_bounds other than \"clip\""));
                }
                let clip = (obj.f64("X_min_")?, obj.f64("X_max_")?);
                Ok(Calibrator::Isotonic { x, y, clip })
            }
            other => Err(obj.unsupported(format!("calibrator {other}"))),
        }
    }

    fn predict(&self, t: f64) -> f64 {
        match self {
            Calibrator::Sigmoid { a, b } => expit(-(a * t + b)),
            Calibrator::Isotonic { x, y, clip } => {
                let t = t.max(clip.0).min(clip.1);
                if x.len() == 1 {
                    return y[0];
                }
                if t.is_nan() {
                    return f64::NAN;
                }
                // searchsorted (left), clipped to 1..len-1.
                let hi = x.partition_point(|&v| v < t).clamp(1, x.len() - 1);
                let lo = hi - 1;
                let slope = (y[hi] - y[lo]) / (x[hi] - x[lo]);
                slope * (t - x[lo]) + y[lo]
            }
        }
    }
}

#[derive(Debug)]
struct Calibrated {
    base: Box<dyn Classifier>,
    /// The model's probability column each calibrator fills (the base's class position
    /// among the model's classes; shifted by one for a binary problem, whose single
    /// calibrator scores the positive class). Checked below `n_classes` at load.
    targets: Vec<usize>,
    /// The number of the base's classes (its `predict_proba` width).
    base_classes: usize,
    /// Whether the base gives `decision_function` (else `predict_proba`).
    decision: bool,
    calibrators: Vec<Calibrator>,
}

#[derive(Debug)]
struct CalibratedClassifierCv {
    n_classes: usize,
    n_features: usize,
    members: Vec<Calibrated>,
}

fn position(all: &ClassLabels, label: &ClassLabels, i: usize) -> Option<usize> {
    match (all, label) {
        (ClassLabels::Int(a), ClassLabels::Int(b)) => a.iter().position(|v| *v == b[i]),
        (ClassLabels::Str(a), ClassLabels::Str(b)) => a.iter().position(|v| *v == b[i]),
        (ClassLabels::Float(a), ClassLabels::Float(b)) => a.iter().position(|v| *v == b[i]),
        _ => None,
    }
}

pub(crate) fn build(obj: Obj<'_>) -> Result<(ClassLabels, Box<dyn Classifier>), ModelError> {
    let classes = obj.labels("classes_")?;
    let n_classes = classes.len();
    if n_classes < 2 {
        return Err(obj.malformed("fewer than two classes"));
    }
    let mut members = Vec::new();
    let mut n_features = None;
    for member in obj.list("calibrated_classifiers_")? {
        let m = Obj::new(member)?;
        if m.name != "_CalibratedClassifier" {
            return Err(m.unsupported("a calibrated member of another class"));
        }
        match m.opt_str("method")?.unwrap_or("sigmoid") {
            "sigmoid" | "isotonic" => {}
            other => return Err(m.unsupported(format!("method {other:?}"))),
        }
        let base_value = m
            .some("estimator")
            .or_else(|| m.some("base_estimator"))
            .ok_or_else(|| m.malformed("missing attribute `estimator`"))?;
        let (base_classes, base) = match build_predictor(base_value)? {
            Predictor::Classifier { classes, model } => (classes, model),
            Predictor::Regressor(_) => return Err(m.unsupported("a regressor as base estimator")),
        };
        let positions = (0..base_classes.len())
            .map(|i| position(&classes, &base_classes, i))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| m.malformed("the base estimator has a class the model lacks"))?;
        let decision = base.decision_width().is_some();
        if !decision && !base.has_proba() {
            return Err(
                m.unsupported("a base estimator with neither decision_function nor predict_proba")
            );
        }
        let calibrators = as_list(m.req("calibrators")?)
            .ok_or_else(|| m.malformed("`calibrators` is not a list"))?
            .iter()
            .map(|c| Obj::new(c).and_then(Calibrator::from_obj))
            .collect::<Result<Vec<_>, _>>()?;
        let expected = if base_classes.len() == 2 {
            1
        } else {
            base_classes.len()
        };
        if calibrators.len() != expected {
            return Err(m.malformed(format!(
                "{} calibrators for {} classes",
                calibrators.len(),
                base_classes.len()
            )));
        }
        let targets: Vec<usize> = positions
            .iter()
            .take(calibrators.len())
            .map(|&p| if n_classes == 2 { p + 1 } else { p })
            .collect();
        if targets.iter().any(|&t| t >= n_classes) {
            return Err(m.malformed("the base estimator's classes_ are not in the model's order"));
        }
        let width = base.n_features();
        if *n_features.get_or_insert(width) != width {
            return Err(obj.malformed("calibrated members take different numbers of features"));
        }
        members.push(Calibrated {
            base,
            targets,
            base_classes: positions.len(),
            decision,
            calibrators,
        });
    }
    if members.is_empty() {
        return Err(obj.malformed("no calibrated classifiers"));
    }
    Ok((
        classes,
        Box::new(CalibratedClassifierCv {
            n_classes,
            n_features: n_features.unwrap_or(0),
            members,
        }),
    ))
}

impl Calibrated {
    /// `_CalibratedClassifier.predict_proba`, added into `sum` (`n_rows * n_classes`).
    fn add_proba(
        &self,
        x: Rows<'_>,
        n_classes: usize,
        sum: &mut [f64],
    ) -> Result<(), PredictError> {
        let n_rows = x.n_rows();
        let mut pred = Vec::new();
        let width = if self.decision {
            self.base.decision_function(x, &mut pred)?;
            self.base.decision_width().unwrap_or(1)
        } else {
            self.base.predict_proba_rows(x, &mut pred)?;
            self.base_classes
        };
        let mut proba = vec![0.0; n_classes];
        for i in 0..n_rows {
            let row = &pred[i * width..(i + 1) * width];
            proba.iter_mut().for_each(|p| *p = 0.0);
            // A binary base gives one column: the positive class's score.
            let cols: &[f64] = if !self.decision && width == 2 {
                &row[1..]
            } else {
                row
            };
            for ((t, cal), &class_idx) in cols.iter().zip(&self.calibrators).zip(&self.targets) {
                proba[class_idx] = cal.predict(*t);
            }
            if n_classes == 2 {
                proba[0] = 1.0 - proba[1];
            } else {
                let denominator = super::numpy_sum(&proba);
                if denominator != 0.0 {
                    proba.iter_mut().for_each(|p| *p /= denominator);
                } else {
                    proba.iter_mut().for_each(|p| *p = 1.0 / n_classes as f64);
                }
            }
            for (s, p) in sum[i * n_classes..(i + 1) * n_classes]
                .iter_mut()
                .zip(&proba)
            {
                // Values a hair above 1 from rounding are set to 1, as scikit-learn does.
                let p = if *p > 1.0 && *p <= 1.0 + 1e-5 {
                    1.0
                } else {
                    *p
                };
                *s += p;
            }
        }
        Ok(())
    }
}

impl CalibratedClassifierCv {
    fn proba(&self, x: Rows<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        let k = self.n_classes;
        let mut sum = vec![0.0; x.n_rows() * k];
        for m in &self.members {
            m.add_proba(x, k, &mut sum)?;
        }
        let n = self.members.len() as f64;
        out.extend(sum.iter().map(|s| s / n));
        Ok(())
    }

    fn labels(&self, x: Rows<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        let mut p = Vec::new();
        self.proba(x, &mut p)?;
        out.extend(p.chunks(self.n_classes).map(argmax));
        Ok(())
    }
}

impl Classifier for CalibratedClassifierCv {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn name(&self) -> &str {
        "CalibratedClassifierCV"
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
