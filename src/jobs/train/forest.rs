//! A seeded random forest: bootstrap samples, CART trees split on Gini impurity over
//! a random √d of the features at each node, leaves holding class fractions; the
//! forest averages them. Written here (not smartcore's) because the ONNX export
//! needs every node's feature, threshold and leaf values, which smartcore keeps
//! private.
//!
//! Thresholds and comparisons are in `f32`, as ONNX Runtime's
//! `TreeEnsembleClassifier` compares, so the saved model routes every row to the
//! leaf the in-memory one does.

use serde_json::{json, Value as Json};

use super::{Fitted, Params, Trainer};
use crate::jobs::JobError;
use ferroserve_proto::onnx;

pub struct RandomForest;

const FIELDS: &[&str] = &[
    "name",
    "grid",
    "max_depth",
    "n_estimators",
    "seed",
    "standardize",
];

impl Trainer for RandomForest {
    fn name(&self) -> &'static str {
        "random_forest"
    }

    fn standardize_by_default(&self) -> bool {
        // Trees do not care about scale; raw values keep thresholds readable.
        false
    }

    fn grid(&self, algorithm: &Json) -> Result<Vec<Params>, String> {
        super::check_fields(algorithm, FIELDS)?;
        if let Some(v) = algorithm.get("seed").filter(|v| !v.is_null()) {
            v.as_u64()
                .ok_or("spec.algorithm.seed: must be a whole number")?;
        }
        let whole = |name: &str, default: u64, max: u64| -> Result<Vec<u64>, String> {
            super::grid_values(algorithm, name, &json!([default]))?
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_u64().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                        format!(
                            "spec.algorithm.grid.{name}[{i}]: must be a whole number from 1 to {max}, not {v}"
                        )
                    })
                })
                .collect()
        };
        let depths = whole("max_depth", 8, 32)?;
        let trees = whole("n_estimators", 50, 1000)?;
        let mut out = Vec::new();
        for d in &depths {
            for t in &trees {
                let mut p = Params::new();
                p.insert("max_depth".into(), json!(d));
                p.insert("n_estimators".into(), json!(t));
                out.push(p);
            }
        }
        Ok(out)
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
        let max_depth = params.get("max_depth").and_then(Json::as_u64).unwrap_or(8) as usize;
        let n_trees = params
            .get("n_estimators")
            .and_then(Json::as_u64)
            .unwrap_or(50) as usize;
        let seed = algorithm.get("seed").and_then(Json::as_u64).unwrap_or(0);
        let mut rng = fastrand::Rng::with_seed(seed);
        let xf: Vec<f32> = x.iter().map(|v| *v as f32).collect();
        let n = y.len();
        let mtry = ((width as f64).sqrt().ceil() as usize).clamp(1, width.max(1));
        let mut trees = Vec::with_capacity(n_trees);
        for _ in 0..n_trees {
            cancel()?;
            let sample: Vec<usize> = (0..n).map(|_| rng.usize(..n)).collect();
            let mut tree = Tree { nodes: Vec::new() };
            let mut builder = Builder {
                x: &xf,
                width,
                y,
                n_classes,
                max_depth,
                mtry,
                rng: &mut rng,
            };
            builder.grow(&mut tree, sample, 0);
            trees.push(tree);
        }
        Ok(Box::new(Forest {
            trees,
            n_classes,
            width,
        }))
    }
}

#[derive(Debug, Clone)]
enum Node {
    Split {
        feature: usize,
        threshold: f32,
        left: usize,
        right: usize,
    },
    Leaf(Vec<f64>),
}

struct Tree {
    nodes: Vec<Node>,
}

struct Builder<'a> {
    x: &'a [f32],
    width: usize,
    y: &'a [usize],
    n_classes: usize,
    max_depth: usize,
    mtry: usize,
    rng: &'a mut fastrand::Rng,
}

impl Builder<'_> {
    fn counts(&self, rows: &[usize]) -> Vec<f64> {
        let mut c = vec![0.0; self.n_classes];
        for &r in rows {
            c[self.y[r]] += 1.0;
        }
        c
    }

    /// Adds the subtree for `rows` and answers its node's index.
    fn grow(&mut self, tree: &mut Tree, rows: Vec<usize>, depth: usize) -> usize {
        let counts = self.counts(&rows);
        let total = rows.len() as f64;
        let pure = counts.iter().filter(|c| **c > 0.0).count() <= 1;
        let leaf = |tree: &mut Tree| {
            tree.nodes.push(Node::Leaf(
                counts.iter().map(|c| c / total.max(1.0)).collect(),
            ));
            tree.nodes.len() - 1
        };
        if pure || depth >= self.max_depth || rows.len() < 2 {
            return leaf(tree);
        }
        let Some((feature, threshold)) = self.best_split(&rows, &counts) else {
            return leaf(tree);
        };
        let (l, r): (Vec<usize>, Vec<usize>) = rows
            .iter()
            .partition(|&&i| self.x[i * self.width + feature] <= threshold);
        let me = tree.nodes.len();
        tree.nodes.push(Node::Leaf(Vec::new())); // replaced below
        let left = self.grow(tree, l, depth + 1);
        let right = self.grow(tree, r, depth + 1);
        tree.nodes[me] = Node::Split {
            feature,
            threshold,
            left,
            right,
        };
        me
    }

    fn best_split(&mut self, rows: &[usize], counts: &[f64]) -> Option<(usize, f32)> {
        let gini = |c: &[f64], n: f64| 1.0 - c.iter().map(|v| (v / n).powi(2)).sum::<f64>();
        let n = rows.len() as f64;
        let mut features: Vec<usize> = (0..self.width).collect();
        self.rng.shuffle(&mut features);
        let mut best: Option<(f64, usize, f32)> = None;
        let mut pairs: Vec<(f32, usize)> = Vec::with_capacity(rows.len());
        for &f in features.iter().take(self.mtry) {
            pairs.clear();
            pairs.extend(
                rows.iter()
                    .map(|&r| (self.x[r * self.width + f], self.y[r])),
            );
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut left = vec![0.0; self.n_classes];
            for i in 0..pairs.len() - 1 {
                left[pairs[i].1] += 1.0;
                if pairs[i].0 == pairs[i + 1].0 {
                    continue;
                }
                // The midpoint in f32 may round onto the upper value: then it is
                // not a split between them.
                let t = ((pairs[i].0 as f64 + pairs[i + 1].0 as f64) / 2.0) as f32;
                let t = if t >= pairs[i + 1].0 { pairs[i].0 } else { t };
                let nl = (i + 1) as f64;
                let nr = n - nl;
                let right: Vec<f64> = counts.iter().zip(&left).map(|(c, l)| c - l).collect();
                let score = nl * gini(&left, nl) + nr * gini(&right, nr);
                if best.is_none_or(|(b, _, _)| score < b - 1e-12) {
                    best = Some((score, f, t));
                }
            }
        }
        let parent = n * gini(counts, n);
        best.filter(|(s, _, _)| *s < parent - 1e-12)
            .map(|(_, f, t)| (f, t))
    }
}

struct Forest {
    trees: Vec<Tree>,
    n_classes: usize,
    width: usize,
}

impl Fitted for Forest {
    fn predict_proba(&self, row: &[f64]) -> Vec<f64> {
        let mut p = vec![0.0; self.n_classes];
        for tree in &self.trees {
            let mut i = 0;
            loop {
                match &tree.nodes[i] {
                    Node::Leaf(v) => {
                        for (pc, vc) in p.iter_mut().zip(v) {
                            *pc += vc;
                        }
                        break;
                    }
                    Node::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } => {
                        i = if (row[*feature] as f32) <= *threshold {
                            *left
                        } else {
                            *right
                        }
                    }
                }
            }
        }
        let t = self.trees.len().max(1) as f64;
        p.iter().map(|v| v / t).collect()
    }

    fn onnx_node(&self, input: &str, mut labels: onnx::AttributeProto) -> onnx::NodeProto {
        use super::onnx::{floats, ints, string, strings};
        // LinearClassifier's `classlabels_ints` is `classlabels_int64s` here.
        if labels.name.as_deref() == Some("classlabels_ints") {
            labels.name = Some("classlabels_int64s".into());
        }
        let (mut tree_ids, mut node_ids, mut feature_ids, mut modes, mut values) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut true_ids, mut false_ids) = (vec![], vec![]);
        let (mut c_tree, mut c_node, mut c_id, mut c_weight) = (vec![], vec![], vec![], vec![]);
        let t = self.trees.len().max(1) as f64;
        for (ti, tree) in self.trees.iter().enumerate() {
            for (ni, node) in tree.nodes.iter().enumerate() {
                tree_ids.push(ti as i64);
                node_ids.push(ni as i64);
                match node {
                    Node::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } => {
                        feature_ids.push(*feature as i64);
                        modes.push("BRANCH_LEQ".to_string());
                        values.push(*threshold);
                        true_ids.push(*left as i64);
                        false_ids.push(*right as i64);
                    }
                    Node::Leaf(v) => {
                        feature_ids.push(0);
                        modes.push("LEAF".to_string());
                        values.push(0.0);
                        true_ids.push(0);
                        false_ids.push(0);
                        // Binary as skl2onnx writes it: one weight per leaf, the
                        // second class's share, under class id 0; ONNX Runtime then
                        // answers [1 - p, p] and the second label when p > 0.5.
                        // (With a weight per class it labels every row the second.)
                        if self.n_classes == 2 {
                            c_tree.push(ti as i64);
                            c_node.push(ni as i64);
                            c_id.push(0);
                            c_weight.push((v[1] / t) as f32);
                            continue;
                        }
                        for (c, w) in v.iter().enumerate() {
                            c_tree.push(ti as i64);
                            c_node.push(ni as i64);
                            c_id.push(c as i64);
                            c_weight.push((w / t) as f32);
                        }
                    }
                }
            }
        }
        let _ = self.width;
        super::onnx::node(
            "TreeEnsembleClassifier",
            "ai.onnx.ml",
            &[input],
            &["label", "probabilities"],
            vec![
                labels,
                ints("nodes_treeids", tree_ids),
                ints("nodes_nodeids", node_ids),
                ints("nodes_featureids", feature_ids),
                strings("nodes_modes", modes),
                floats("nodes_values", values),
                ints("nodes_truenodeids", true_ids),
                ints("nodes_falsenodeids", false_ids),
                ints("class_treeids", c_tree),
                ints("class_nodeids", c_node),
                ints("class_ids", c_id),
                floats("class_weights", c_weight),
                string("post_transform", "NONE"),
            ],
        )
    }

    fn describe(&self) -> Json {
        json!({
            "trees": self.trees.len(),
            "nodes": self.trees.iter().map(|t| t.nodes.len()).sum::<usize>(),
        })
    }
}
