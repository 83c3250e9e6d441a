//! `KNeighborsClassifier` and `KNeighborsRegressor`, by brute force over `_fit_X`.
//!
//! Which of several equally distant training rows is a neighbour depends on the
//! last bits of the distances, so they are computed as scikit-learn computes them.
//! For `algorithm="brute"` and the euclidean metric that is the GEMM expansion
//! `max(0, (|x|^2 + -2 x.y) + |y|^2)` with fused multiply-adds (as OpenBLAS's kernels
//! do), and a heap that keeps the lower index on exact ties. KD and ball trees visit
//! rows in tree order, which is not reproduced: when a tie straddles the k-th
//! neighbour of such a model, the row is refused rather than guessed.

use super::access::{as_f64, Obj};
use super::{
    argmax, check_finite, check_width, numpy_sum, ClassLabels, Classifier, MatrixRef, Regressor,
};
use crate::model::{ModelError, PredictError};
use crate::value::Value;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    Euclidean,
    Manhattan,
    Chebyshev,
    Minkowski(f64),
}

#[derive(Debug)]
struct Neighbors {
    fit_x: Vec<f64>,
    n_samples: usize,
    n_features: usize,
    k: usize,
    metric: Metric,
    distance_weights: bool,
    /// `|y|^2` of each training row (fused dot products), for brute euclidean.
    gemm_norms: Option<Vec<f64>>,
    /// Whether ties at the k-th neighbour are resolved as scikit-learn does.
    exact_ties: bool,
}

/// A dot product accumulated with fused multiply-adds, in order.
fn fma_dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        acc = x.mul_add(*y, acc);
    }
    acc
}

/// Refuses, by what they are, a model fitted on sparse input and a multi-output one
/// (checked before the attributes whose shape they change are read).
fn check_single_output_dense(obj: Obj<'_>) -> Result<(), ModelError> {
    if let Some(crate::value::Value::Object { name, .. }) = obj.get("_fit_X") {
        return Err(obj.unsupported(format!(
            "a model fitted on sparse input (_fit_X is a {name}); only dense training data is \
             supported"
        )));
    }
    let y_2d = obj
        .some("_y")
        .is_some_and(|y| matches!(y, crate::value::Value::Array(a) if a.shape.len() == 2));
    if obj.bool_or("outputs_2d_", false)? || y_2d {
        return Err(obj.unsupported("multi-output targets (a 2-D y)"));
    }
    Ok(())
}

impl Neighbors {
    fn build(obj: Obj<'_>) -> Result<Neighbors, ModelError> {
        check_single_output_dense(obj)?;
        let (fit_x, shape) = obj.f64s("_fit_X")?;
        let (n_samples, n_features) = match shape.as_slice() {
            [n, d] => (*n, *d),
            _ => return Err(obj.malformed("_fit_X is not 2-D")),
        };
        let k = obj.usize("n_neighbors")?;
        if k == 0 || k > n_samples {
            return Err(obj.malformed(format!("n_neighbors {k} for {n_samples} samples")));
        }
        let distance_weights = match obj.req("weights")? {
            Value::Str(s) if s == "uniform" => false,
            Value::Str(s) if s == "distance" => true,
            Value::None => false,
            other => {
                return Err(obj.unsupported(format!("weights {}", super::access::describe(other))))
            }
        };
        let p = match obj.some("effective_metric_params_") {
            Some(Value::Dict(items)) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == "p"))
                .and_then(|(_, v)| as_f64(v)),
            _ => None,
        };
        let metric = match (obj.str("effective_metric_")?, p) {
            ("euclidean", _) | ("l2", _) => Metric::Euclidean,
            ("manhattan", _) | ("cityblock", _) | ("l1", _) => Metric::Manhattan,
            ("chebyshev", _) | ("infinity", _) => Metric::Chebyshev,
            ("minkowski", Some(2.0)) => Metric::Euclidean,
            ("minkowski", Some(1.0)) => Metric::Manhattan,
            ("minkowski", Some(p)) if p.is_infinite() => Metric::Chebyshev,
            ("minkowski", Some(p)) if p >= 1.0 => Metric::Minkowski(p),
            (other, _) => return Err(obj.unsupported(format!("metric {other:?}"))),
        };
        if obj.some("metric_params").is_some()
            && !matches!(obj.get("metric_params"), Some(Value::Dict(d)) if d.is_empty())
        {
            return Err(obj.unsupported("metric_params"));
        }
        let brute = obj.str("_fit_method")? == "brute";
        let gemm_norms = (brute && metric == Metric::Euclidean).then(|| {
            fit_x
                .chunks(n_features.max(1))
                .map(|y| fma_dot(y, y))
                .collect()
        });
        Ok(Neighbors {
            fit_x,
            n_samples,
            n_features,
            k,
            metric,
            distance_weights,
            gemm_norms,
            exact_ties: brute,
        })
    }

    /// A quantity that orders like the distance (squared for euclidean).
    fn rank_distance(&self, a: &[f64], a_norm: f64, j: usize, b: &[f64]) -> f64 {
        if let Some(norms) = &self.gemm_norms {
            return f64::max(0.0, (a_norm + -2.0 * fma_dot(a, b)) + norms[j]);
        }
        match self.metric {
            Metric::Euclidean => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
            Metric::Manhattan => a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum(),
            Metric::Chebyshev => a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max),
            Metric::Minkowski(p) => a.iter().zip(b).map(|(x, y)| (x - y).abs().powf(p)).sum(),
        }
    }

    fn true_distance(&self, rank: f64) -> f64 {
        match self.metric {
            Metric::Euclidean => rank.sqrt(),
            Metric::Minkowski(p) => rank.powf(1.0 / p),
            _ => rank,
        }
    }

    /// The k nearest training rows of `row` (index, weight), nearest first.
    fn neighbors(
        &self,
        row: &[f64],
        scratch: &mut Vec<(f64, usize)>,
        out: &mut Vec<(usize, f64)>,
    ) -> Result<(), PredictError> {
        scratch.clear();
        let row_norm = if self.gemm_norms.is_some() {
            fma_dot(row, row)
        } else {
            0.0
        };
        for j in 0..self.n_samples {
            let t = &self.fit_x[j * self.n_features..(j + 1) * self.n_features];
            scratch.push((self.rank_distance(row, row_norm, j, t), j));
        }
        // Ties go to the lower training index.
        let cmp = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        if self.k < scratch.len() {
            scratch.select_nth_unstable_by(self.k, cmp);
            let boundary_tie = scratch[..self.k].iter().any(|d| d.0 == scratch[self.k].0);
            if boundary_tie && !self.exact_ties {
                return Err(PredictError::InvalidInput(
                    "this row has equally distant neighbours on both sides of the k-th; \
                     the model's KD/ball tree breaks such ties in an order not reproduced here \
                     (refit with algorithm=\"brute\" to serve it)"
                        .into(),
                ));
            }
            scratch.truncate(self.k);
        }
        scratch.sort_by(cmp);
        out.clear();
        if !self.distance_weights {
            out.extend(scratch.iter().map(|&(_, j)| (j, 1.0)));
            return Ok(());
        }
        // `_get_weights`: 1/d, except that a row with a zero distance weighs its exact
        // matches 1 and the rest 0.
        let exact = scratch.iter().any(|&(d, _)| self.true_distance(d) == 0.0);
        out.extend(scratch.iter().map(|&(d, j)| {
            let d = self.true_distance(d);
            let w = if exact {
                f64::from(u8::from(d == 0.0))
            } else {
                1.0 / d
            };
            (j, w)
        }));
        Ok(())
    }

    fn check(&self, x: MatrixRef<'_>, who: &str) -> Result<(), PredictError> {
        check_width(x, self.n_features, who)?;
        check_finite(x, false, who)
    }
}

#[derive(Debug)]
struct KnnClassifier {
    nn: Neighbors,
    /// `_y`: class index of each training row.
    y: Vec<usize>,
    n_classes: usize,
}

pub(crate) fn build_classifier(
    obj: Obj<'_>,
) -> Result<(ClassLabels, Box<dyn Classifier>), ModelError> {
    check_single_output_dense(obj)?;
    let classes = obj.labels("classes_")?;
    let nn = Neighbors::build(obj)?;
    let (y, _) = obj.f64s("_y")?;
    if y.len() != nn.n_samples {
        return Err(obj.malformed("_y does not match _fit_X"));
    }
    let n_classes = classes.len();
    let y = y
        .into_iter()
        .map(|c| {
            (c >= 0.0 && (c as usize) < n_classes && c.fract() == 0.0)
                .then_some(c as usize)
                .ok_or_else(|| obj.malformed("_y holds an invalid class index"))
        })
        .collect::<Result<_, _>>()?;
    Ok((classes, Box::new(KnnClassifier { nn, y, n_classes })))
}

impl KnnClassifier {
    fn proba_row(
        &self,
        row: &[f64],
        scratch: &mut Vec<(f64, usize)>,
        neigh: &mut Vec<(usize, f64)>,
        out: &mut Vec<f64>,
    ) -> Result<(), PredictError> {
        self.nn.neighbors(row, scratch, neigh)?;
        let start = out.len();
        out.resize(start + self.n_classes, 0.0);
        let p = &mut out[start..];
        for &(j, w) in neigh.iter() {
            p[self.y[j]] += w;
        }
        let mut sum = numpy_sum(p);
        if sum == 0.0 {
            sum = 1.0;
        }
        p.iter_mut().for_each(|v| *v /= sum);
        Ok(())
    }
}

impl Classifier for KnnClassifier {
    fn n_features(&self) -> usize {
        self.nn.n_features
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        self.nn.check(x, "KNeighborsClassifier")?;
        let (mut scratch, mut neigh, mut votes) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..x.n_rows {
            votes.clear();
            // The (weighted) mode; ties go to the smallest class index, as
            // scipy's mode, sklearn's weighted_mode and argmax all do.
            self.nn.neighbors(x.row(i), &mut scratch, &mut neigh)?;
            votes.resize(self.n_classes, 0.0);
            for &(j, w) in &neigh {
                votes[self.y[j]] += w;
            }
            out.push(argmax(&votes));
        }
        Ok(())
    }

    fn has_proba(&self) -> bool {
        true
    }

    fn predict_proba(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.nn.check(x, "KNeighborsClassifier")?;
        let (mut scratch, mut neigh) = (Vec::new(), Vec::new());
        for i in 0..x.n_rows {
            self.proba_row(x.row(i), &mut scratch, &mut neigh, out)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct KnnRegressor {
    nn: Neighbors,
    y: Vec<f64>,
}

pub(crate) fn build_regressor(obj: Obj<'_>) -> Result<Box<dyn Regressor>, ModelError> {
    let nn = Neighbors::build(obj)?;
    let (y, shape) = obj.f64s("_y")?;
    if shape.len() != 1 || y.len() != nn.n_samples {
        return Err(obj.malformed("_y does not match _fit_X"));
    }
    Ok(Box::new(KnnRegressor { nn, y }))
}

impl Regressor for KnnRegressor {
    fn n_features(&self) -> usize {
        self.nn.n_features
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.nn.check(x, "KNeighborsRegressor")?;
        let (mut scratch, mut neigh) = (Vec::new(), Vec::new());
        let mut terms = Vec::new();
        for i in 0..x.n_rows {
            self.nn.neighbors(x.row(i), &mut scratch, &mut neigh)?;
            terms.clear();
            if self.nn.distance_weights {
                terms.extend(neigh.iter().map(|&(j, w)| self.y[j] * w));
                let weights: Vec<f64> = neigh.iter().map(|&(_, w)| w).collect();
                out.push(numpy_sum(&terms) / numpy_sum(&weights));
            } else {
                terms.extend(neigh.iter().map(|&(j, _)| self.y[j]));
                out.push(numpy_sum(&terms) / terms.len() as f64);
            }
        }
        Ok(())
    }
}
