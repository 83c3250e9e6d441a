//! Cross-validation: `cv` of the spec, scikit-learn's `StratifiedKFold` fold
//! assignment, the hold-out split and the scores.

use serde_json::{json, Value as Json};

/// How candidates are scored; higher is better (log loss is reported negated, as
/// scikit-learn's `neg_log_loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    Accuracy,
    RocAuc,
    NegLogLoss,
}

impl Scoring {
    pub fn name(self) -> &'static str {
        match self {
            Scoring::Accuracy => "accuracy",
            Scoring::RocAuc => "roc_auc",
            Scoring::NegLogLoss => "neg_log_loss",
        }
    }

    /// The score of `proba` (one row per case, classes in order) against `truth`.
    pub fn score(self, truth: &[usize], proba: &[Vec<f64>], n_classes: usize) -> f64 {
        match self {
            Scoring::Accuracy => accuracy(truth, proba),
            Scoring::RocAuc => roc_auc(truth, proba, n_classes),
            Scoring::NegLogLoss => -log_loss(truth, proba),
        }
    }
}

/// `cv` of a training spec.
#[derive(Debug, Clone)]
pub struct CvSpec {
    /// Default 5.
    pub folds: usize,
    /// Default 0; used when `shuffle` is true and for the hold-out.
    pub seed: u64,
    /// Default false: folds exactly as scikit-learn's `StratifiedKFold(folds)`.
    pub shuffle: bool,
    /// Default accuracy.
    pub scoring: Scoring,
    /// A fraction of rows (stratified) kept out of the search and the refit.
    pub holdout: Option<f64>,
}

impl CvSpec {
    pub fn parse(cv: &Json) -> Result<CvSpec, String> {
        let obj = match cv {
            Json::Null => return Ok(CvSpec::default()),
            Json::Object(o) => o,
            _ => return Err("spec.cv: must be an object".into()),
        };
        let known = ["folds", "seed", "shuffle", "scoring", "holdout"];
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!(
                "spec.cv.{k}: unknown field (known: {})",
                known.join(", ")
            ));
        }
        let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
        let mut out = CvSpec::default();
        if let Some(v) = get("folds") {
            out.folds = v
                .as_u64()
                .filter(|n| (2..=50).contains(n))
                .ok_or("spec.cv.folds: must be a whole number from 2 to 50")?
                as usize;
        }
        if let Some(v) = get("seed") {
            out.seed = v.as_u64().ok_or("spec.cv.seed: must be a whole number")?;
        }
        if let Some(v) = get("shuffle") {
            out.shuffle = v
                .as_bool()
                .ok_or("spec.cv.shuffle: must be true or false")?;
        }
        if let Some(v) = get("scoring") {
            out.scoring = match v.as_str() {
                Some("accuracy") => Scoring::Accuracy,
                Some("roc_auc") => Scoring::RocAuc,
                Some("log_loss" | "neg_log_loss") => Scoring::NegLogLoss,
                _ => {
                    return Err(format!(
                        "spec.cv.scoring: must be accuracy, roc_auc or log_loss, not {v}"
                    ))
                }
            };
        }
        if let Some(v) = get("holdout") {
            out.holdout = Some(
                v.as_f64()
                    .filter(|h| *h > 0.0 && *h < 0.9)
                    .ok_or("spec.cv.holdout: must be a fraction above 0 and below 0.9")?,
            );
        }
        Ok(out)
    }
}

impl Default for CvSpec {
    fn default() -> CvSpec {
        CvSpec {
            folds: 5,
            seed: 0,
            shuffle: false,
            scoring: Scoring::Accuracy,
            holdout: None,
        }
    }
}

/// The test fold of each row, as scikit-learn's `StratifiedKFold._make_test_folds`
/// assigns them: classes numbered by first appearance; each fold's share of each
/// class from a round robin over the sorted labels; each class's rows, in data
/// order, given to folds in blocks. With `shuffle`, each class's block order is
/// shuffled by the seed (not scikit-learn's generator: the same split only
/// without shuffling).
pub fn stratified_folds(
    y: &[usize],
    n_classes: usize,
    spec: &CvSpec,
) -> Result<Vec<usize>, String> {
    let k = spec.folds;
    if y.len() < k {
        return Err(format!(
            "{} rows cannot be split into {k} folds (cv.folds)",
            y.len()
        ));
    }
    // Classes by order of appearance.
    let mut order = vec![usize::MAX; n_classes];
    let mut next = 0;
    for &c in y {
        if order[c] == usize::MAX {
            order[c] = next;
            next += 1;
        }
    }
    let enc: Vec<usize> = y.iter().map(|&c| order[c]).collect();
    let mut counts = vec![0usize; next];
    for &c in &enc {
        counts[c] += 1;
    }
    if counts.iter().all(|c| *c < k) {
        return Err(format!(
            "cv.folds is {k}, more than the rows of every class: lower cv.folds"
        ));
    }
    let mut sorted = enc.clone();
    sorted.sort_unstable();
    // allocation[fold][class] = bincount(sorted[fold::k])
    let mut allocation = vec![vec![0usize; next]; k];
    for (i, &c) in sorted.iter().enumerate() {
        allocation[i % k][c] += 1;
    }
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let mut folds = vec![0usize; y.len()];
    for class in 0..next {
        let mut blocks: Vec<usize> = allocation
            .iter()
            .enumerate()
            .flat_map(|(f, shares)| std::iter::repeat_n(f, shares[class]))
            .collect();
        if spec.shuffle {
            rng.shuffle(&mut blocks);
        }
        let mut it = blocks.into_iter();
        for (i, &c) in enc.iter().enumerate() {
            if c == class {
                folds[i] = it.next().unwrap_or(0);
            }
        }
    }
    Ok(folds)
}

/// A stratified, seeded split: (rows kept, hold-out rows), each in data order.
pub fn stratified_holdout(y: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let n_classes = y.iter().copied().max().map_or(0, |m| m + 1);
    let mut held = vec![false; y.len()];
    for class in 0..n_classes {
        let mut rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == class).collect();
        rng.shuffle(&mut rows);
        let take = ((rows.len() as f64) * fraction).round() as usize;
        let take = take.min(rows.len().saturating_sub(1));
        for &r in rows.iter().take(take) {
            held[r] = true;
        }
    }
    (0..y.len()).partition(|&i| !held[i])
}

pub fn argmax(p: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}

fn accuracy(truth: &[usize], proba: &[Vec<f64>]) -> f64 {
    let right = truth
        .iter()
        .zip(proba)
        .filter(|(t, p)| argmax(p) == **t)
        .count();
    right as f64 / truth.len().max(1) as f64
}

/// Mean of `-ln p(true class)`, probabilities clipped to [ε, 1-ε] as scikit-learn.
fn log_loss(truth: &[usize], proba: &[Vec<f64>]) -> f64 {
    let eps = f64::EPSILON;
    let total: f64 = truth
        .iter()
        .zip(proba)
        .map(|(t, p)| {
            let sum: f64 = p.iter().sum();
            -((p[*t] / sum).clamp(eps, 1.0 - eps)).ln()
        })
        .sum();
    total / truth.len().max(1) as f64
}

/// Area under the ROC curve of `score` for `positive` (ties count half).
fn binary_auc(positive: &[bool], score: &[f64]) -> f64 {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|a, b| score[*a].total_cmp(&score[*b]));
    // Average ranks over ties (Mann-Whitney U).
    let mut ranks = vec![0.0; score.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && score[idx[j + 1]] == score[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    let n_pos = positive.iter().filter(|p| **p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    let sum_pos: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p)
        .map(|(r, _)| r)
        .sum();
    (sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// Binary: the AUC of the second class's probability; more classes: the mean of
/// each class's one-vs-rest AUC (scikit-learn's `roc_auc_ovr`).
fn roc_auc(truth: &[usize], proba: &[Vec<f64>], n_classes: usize) -> f64 {
    if n_classes == 2 {
        let pos: Vec<bool> = truth.iter().map(|t| *t == 1).collect();
        let s: Vec<f64> = proba.iter().map(|p| p[1]).collect();
        return binary_auc(&pos, &s);
    }
    let aucs: Vec<f64> = (0..n_classes)
        .map(|c| {
            let pos: Vec<bool> = truth.iter().map(|t| *t == c).collect();
            let s: Vec<f64> = proba.iter().map(|p| p[c]).collect();
            binary_auc(&pos, &s)
        })
        .filter(|a| a.is_finite())
        .collect();
    aucs.iter().sum::<f64>() / aucs.len().max(1) as f64
}

/// Metrics on the hold-out rows.
pub fn holdout_metrics(truth: &[usize], proba: &[Vec<f64>], n_classes: usize) -> Json {
    let mut confusion = vec![vec![0u64; n_classes]; n_classes];
    for (t, p) in truth.iter().zip(proba) {
        confusion[*t][argmax(p)] += 1;
    }
    let auc = roc_auc(truth, proba, n_classes);
    json!({
        "rows": truth.len(),
        "accuracy": accuracy(truth, proba),
        "roc_auc": if auc.is_finite() { json!(auc) } else { Json::Null },
        "log_loss": log_loss(truth, proba),
        "confusion_matrix": confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_match_scikit_learn_stratified_kfold() {
        // StratifiedKFold(3).split(X, y) for y = [1,1,0,0,1,0,1,1,0,1]:
        // test folds [0,0,0,0,1,1,1,2,2,2] (worked by hand from _make_test_folds:
        // class 1 (first seen, encoded 0) has 6 rows → 2,2,2; class 0 has 4 → 2,1,1).
        let y = [1, 1, 0, 0, 1, 0, 1, 1, 0, 1];
        let spec = CvSpec {
            folds: 3,
            ..CvSpec::default()
        };
        let f = stratified_folds(&y, 2, &spec).unwrap();
        assert_eq!(f, vec![0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn shuffled_folds_stay_stratified_and_follow_the_seed() {
        let y: Vec<usize> = (0..100).map(|i| usize::from(i % 4 == 0)).collect();
        let spec = |seed| CvSpec {
            folds: 5,
            shuffle: true,
            seed,
            ..CvSpec::default()
        };
        let a = stratified_folds(&y, 2, &spec(1)).unwrap();
        assert_eq!(a, stratified_folds(&y, 2, &spec(1)).unwrap());
        assert_ne!(a, stratified_folds(&y, 2, &spec(2)).unwrap());
        for fold in 0..5 {
            let ones = (0..100).filter(|&i| a[i] == fold && y[i] == 1).count();
            let zeros = (0..100).filter(|&i| a[i] == fold && y[i] == 0).count();
            assert_eq!((ones, zeros), (5, 15), "fold {fold}");
        }
        let (kept, held) = stratified_holdout(&y, 0.2, 0);
        assert_eq!(held.len(), 20);
        assert_eq!(held.iter().filter(|&&i| y[i] == 1).count(), 5);
        assert_eq!(kept.len() + held.len(), 100);
    }

    #[test]
    fn log_loss_is_clipped_and_negated_for_scoring() {
        let p = vec![vec![1.0, 0.0], vec![0.25, 0.75]];
        let s = Scoring::NegLogLoss.score(&[1, 1], &p, 2);
        assert!(s.is_finite() && s < -10.0, "{s}");
        assert!((Scoring::Accuracy.score(&[1, 1], &p, 2) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn auc_counts_ties_half() {
        assert_eq!(binary_auc(&[false, true], &[0.2, 0.8]), 1.0);
        assert_eq!(binary_auc(&[false, true], &[0.5, 0.5]), 0.5);
    }
}
