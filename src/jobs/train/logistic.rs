//! L2-regularized logistic regression, scikit-learn's `lbfgs` objective:
//! `Σᵢ loss(xᵢ, yᵢ) + ‖W‖² / (2C)`, the intercepts not penalized; binary with one
//! weight vector (the sigmoid), multinomial with one per class (the softmax), as
//! scikit-learn fits them. Minimized by L-BFGS (see [`lbfgs`]).

use serde_json::{json, Value as Json};

use super::{Fitted, Params, Trainer};
use crate::jobs::JobError;
use ferroserve_proto::onnx;

pub struct LogisticRegression;

/// `algorithm` fields this family reads.
const FIELDS: &[&str] = &[
    "name",
    "grid",
    "C",
    "max_iter",
    "fit_intercept",
    "tol",
    "standardize",
];

struct Options {
    max_iter: usize,
    fit_intercept: bool,
    tol: f64,
}

fn options(algorithm: &Json) -> Result<Options, String> {
    let max_iter = match algorithm.get("max_iter") {
        None | Some(Json::Null) => 1000,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or("spec.algorithm.max_iter: must be a whole number from 1 to 100000")?
            as usize,
    };
    let fit_intercept = match algorithm.get("fit_intercept") {
        None | Some(Json::Null) => true,
        Some(Json::Bool(b)) => *b,
        Some(_) => return Err("spec.algorithm.fit_intercept: must be true or false".into()),
    };
    let tol = match algorithm.get("tol") {
        None | Some(Json::Null) => 1e-6,
        Some(v) => v
            .as_f64()
            .filter(|t| t.is_finite() && *t > 0.0)
            .ok_or("spec.algorithm.tol: must be a positive number")?,
    };
    Ok(Options {
        max_iter,
        fit_intercept,
        tol,
    })
}

impl Trainer for LogisticRegression {
    fn name(&self) -> &'static str {
        "logistic_regression"
    }

    fn grid(&self, algorithm: &Json) -> Result<Vec<Params>, String> {
        super::check_fields(algorithm, FIELDS)?;
        options(algorithm)?;
        let c = super::grid_values(algorithm, "C", &json!([1.0]))?;
        c.iter()
            .enumerate()
            .map(|(i, v)| match v.as_f64() {
                Some(c) if c.is_finite() && c > 0.0 => {
                    let mut p = Params::new();
                    p.insert("C".into(), json!(c));
                    Ok(p)
                }
                _ => Err(format!(
                    "spec.algorithm.grid.C[{i}]: must be a positive number, not {v}"
                )),
            })
            .collect()
    }

    fn fit(
        &self,
        algorithm: &Json,
        params: &Params,
        x: &[f64],
        width: usize,
        y: &[usize],
        n_classes: usize,
        cancel: &dyn Fn() -> Result<(), JobError>,
    ) -> Result<Box<dyn Fitted>, JobError> {
        let opts = options(algorithm).map_err(JobError::Failed)?;
        let c = params.get("C").and_then(Json::as_f64).unwrap_or(1.0);
        let n = y.len();
        // Binary: one vector for class 1; multinomial: one per class.
        let k = if n_classes == 2 { 1 } else { n_classes };
        let dim = k * width + k;
        let objective = |theta: &[f64], grad: &mut [f64]| -> f64 {
            grad.iter_mut().for_each(|g| *g = 0.0);
            let (w, b) = theta.split_at(k * width);
            let mut loss = 0.0;
            let mut z = vec![0.0; k];
            for i in 0..n {
                let row = &x[i * width..(i + 1) * width];
                for (cls, zc) in z.iter_mut().enumerate() {
                    let wc = &w[cls * width..(cls + 1) * width];
                    *zc = dot(wc, row) + if opts.fit_intercept { b[cls] } else { 0.0 };
                }
                // d loss / d z, per class.
                let mut dz = vec![0.0; k];
                if k == 1 {
                    let s = if y[i] == 1 { 1.0 } else { -1.0 };
                    let m = s * z[0];
                    loss += log1p_exp(-m);
                    dz[0] = -s * sigmoid(-m);
                } else {
                    let lse = log_sum_exp(&z);
                    loss += lse - z[y[i]];
                    for cls in 0..k {
                        dz[cls] = (z[cls] - lse).exp() - if cls == y[i] { 1.0 } else { 0.0 };
                    }
                }
                for cls in 0..k {
                    let g = &mut grad[cls * width..(cls + 1) * width];
                    for (gj, xj) in g.iter_mut().zip(row) {
                        *gj += dz[cls] * xj;
                    }
                    if opts.fit_intercept {
                        grad[k * width + cls] += dz[cls];
                    }
                }
            }
            let reg: f64 = w.iter().map(|v| v * v).sum::<f64>() / (2.0 * c);
            for (g, wv) in grad.iter_mut().zip(w) {
                *g += wv / c;
            }
            loss + reg
        };
        let theta = lbfgs(
            dim,
            objective,
            opts.max_iter,
            opts.tol * n.max(1) as f64,
            cancel,
        )?;
        let (w, b) = theta.split_at(k * width);
        Ok(Box::new(LinearModel {
            k,
            n_classes,
            width,
            w: w.to_vec(),
            b: if opts.fit_intercept {
                b.to_vec()
            } else {
                vec![0.0; k]
            },
        }))
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + eᶻ)` without overflow.
fn log1p_exp(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

fn log_sum_exp(z: &[f64]) -> f64 {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// Minimizes a smooth convex `f` (which writes its gradient into the slice) from
/// zero with limited-memory BFGS (10 pairs) and a backtracking Armijo line search.
/// Stops when the largest gradient component is at most `gtol`, when `f` stops
/// moving, or after `max_iter` iterations; `cancel` is asked every iteration.
///
/// Hand-written rather than linfa-logistic: the same solver serves binary and
/// multinomial with scikit-learn's exact objective, and it keeps ndarray 0.16 and
/// argmin out of a build that already has ndarray 0.17 (see docs/architecture.md).
pub fn lbfgs(
    dim: usize,
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    max_iter: usize,
    gtol: f64,
    cancel: &dyn Fn() -> Result<(), JobError>,
) -> Result<Vec<f64>, JobError> {
    const M: usize = 10;
    let mut x = vec![0.0; dim];
    let mut g = vec![0.0; dim];
    let mut fx = f(&x, &mut g);
    let mut s_hist: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> = Default::default();
    let mut x_new = vec![0.0; dim];
    let mut g_new = vec![0.0; dim];
    for _ in 0..max_iter {
        cancel()?;
        let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if gmax <= gtol {
            break;
        }
        // Two-loop recursion: d = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(s_hist.len());
        for (s, y, rho) in s_hist.iter().rev() {
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(y) {
                *qi -= a * yi;
            }
            alphas.push(a);
        }
        let gamma = match s_hist.back() {
            Some((s, y, _)) => dot(s, y) / dot(y, y),
            None => 1.0 / g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12),
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y, rho), a) in s_hist.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += (a - b) * si;
            }
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): steepest descent.
            s_hist.clear();
            d = g.iter().map(|v| -v).collect();
            slope = dot(&g, &d);
        }
        let mut step = 1.0;
        let mut f_new;
        let mut tries = 0;
        loop {
            for i in 0..dim {
                x_new[i] = x[i] + step * d[i];
            }
            f_new = f(&x_new, &mut g_new);
            if f_new <= fx + 1e-4 * step * slope || tries >= 40 {
                break;
            }
            step *= 0.5;
            tries += 1;
        }
        if tries >= 40 {
            break;
        }
        let s: Vec<f64> = (0..dim).map(|i| x_new[i] - x[i]).collect();
        let y: Vec<f64> = (0..dim).map(|i| g_new[i] - g[i]).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            if s_hist.len() == M {
                s_hist.pop_front();
            }
            s_hist.push_back((s, y, 1.0 / sy));
        }
        let moved = (fx - f_new).abs();
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut g, &mut g_new);
        fx = f_new;
        if moved <= 1e-14 * fx.abs().max(1.0) {
            break;
        }
    }
    Ok(x)
}

/// A fitted logistic regression.
struct LinearModel {
    /// 1 (binary) or the number of classes.
    k: usize,
    n_classes: usize,
    width: usize,
    w: Vec<f64>,
    b: Vec<f64>,
}

impl Fitted for LinearModel {
    fn predict_proba(&self, row: &[f64]) -> Vec<f64> {
        let z: Vec<f64> = (0..self.k)
            .map(|c| dot(&self.w[c * self.width..(c + 1) * self.width], row) + self.b[c])
            .collect();
        if self.k == 1 {
            let p = sigmoid(z[0]);
            vec![1.0 - p, p]
        } else {
            let lse = log_sum_exp(&z);
            z.iter().map(|v| (v - lse).exp()).collect()
        }
    }

    fn onnx_node(&self, input: &str, labels: onnx::AttributeProto) -> onnx::NodeProto {
        // Binary as skl2onnx writes it: two rows (-w, w) under LOGISTIC, which gives
        // σ(-z), σ(z); multinomial: one row per class under SOFTMAX.
        let (coefficients, intercepts, post) = if self.k == 1 {
            let mut c: Vec<f32> = self.w.iter().map(|v| -*v as f32).collect();
            c.extend(self.w.iter().map(|v| *v as f32));
            (c, vec![-self.b[0] as f32, self.b[0] as f32], "LOGISTIC")
        } else {
            (
                self.w.iter().map(|v| *v as f32).collect(),
                self.b.iter().map(|v| *v as f32).collect(),
                "SOFTMAX",
            )
        };
        let _ = self.n_classes;
        super::onnx::node(
            "LinearClassifier",
            "ai.onnx.ml",
            &[input],
            &["label", "probabilities"],
            vec![
                labels,
                super::onnx::floats("coefficients", coefficients),
                super::onnx::floats("intercepts", intercepts),
                super::onnx::int("multi_class", 0),
                super::onnx::string("post_transform", post),
            ],
        )
    }

    fn describe(&self) -> Json {
        json!({"coefficients": self.w, "intercepts": self.b})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lbfgs_finds_a_quadratic_minimum() {
        let x = lbfgs(
            3,
            |x, g| {
                let t = [1.0, -2.0, 3.0];
                let mut f = 0.0;
                for i in 0..3 {
                    let d = x[i] - t[i];
                    f += (i + 1) as f64 * d * d;
                    g[i] = 2.0 * (i + 1) as f64 * d;
                }
                f
            },
            100,
            1e-10,
            &|| Ok(()),
        )
        .unwrap();
        for (a, b) in x.iter().zip([1.0, -2.0, 3.0]) {
            assert!((a - b).abs() < 1e-8, "{x:?}");
        }
    }
}
