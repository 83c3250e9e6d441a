//! Decision trees and the forests made of them.
//!
//! scikit-learn casts X to float32 before walking a tree and compares
//! `X[i, feature] <= threshold` with the float32 value widened to double; this code
//! does the same, so split decisions are identical, thresholds included.

use super::access::{array_i64, as_i64, record_field, Obj, SkVersion};
use super::{argmax, check_width, ClassLabels, Classifier, MatrixRef, Regressor};
use crate::model::{ModelError, PredictError};
use crate::value::{ArrayData, Value};

const LEAF: u32 = u32::MAX;

/// scikit-learn's leaf marker in `left_child` and `right_child` (`_tree.TREE_LEAF`).
const TREE_LEAF: i64 = -1;

/// Rows a forest walks together, tree by tree: every tree visits a block of rows before
/// the next tree starts, so one tree's nodes and the block's rows stay in cache (as
/// scikit-learn runs one tree over all rows). Each row's sum still adds the trees in
/// their order, starting from 0.0, so results are bit-identical to a walk of all trees
/// row by row.
const ROW_BLOCK: usize = 512;

/// The row blocks of `n_rows` rows, as index ranges.
fn row_blocks(n_rows: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n_rows)
        .step_by(ROW_BLOCK)
        .map(move |start| start..(start + ROW_BLOCK).min(n_rows))
}

#[derive(Debug, Clone, Copy)]
struct Node {
    /// `LEAF` for leaves.
    left: u32,
    right: u32,
    feature: u32,
    missing_go_to_left: bool,
    threshold: f64,
}

/// A fitted `sklearn.tree._tree.Tree`: nodes and the `value` array
/// `(node_count, n_outputs, max_n_classes)`, with one output.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    nodes: Vec<Node>,
    values: Vec<f64>,
    /// `max_n_classes` (1 for regression trees).
    stride: usize,
    n_features: usize,
    /// Whether the node layout has `missing_go_to_left` (scikit-learn >= 1.3).
    has_missing_field: bool,
}

impl Tree {
    pub fn from_value(value: &Value, owner: &str) -> Result<Tree, ModelError> {
        let obj = Obj::new(value)?;
        if obj.name != "Tree" {
            return Err(ModelError::Malformed(format!(
                "{owner}: tree_ is a {} not a Tree",
                obj.name
            )));
        }
        let bad = |m: String| ModelError::Malformed(format!("{owner}: tree: {m}"));
        let n_features = obj
            .args
            .first()
            .and_then(as_i64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("missing n_features argument".into()))?;
        let n_outputs = obj.args.get(2).and_then(as_i64).unwrap_or(1);
        if n_outputs != 1 {
            return Err(ModelError::Unsupported(format!(
                "{owner}: trees with {n_outputs} outputs"
            )));
        }
        let nodes_arr = obj.array("nodes")?;
        let column = |field: &str| -> Result<&ArrayData, ModelError> {
            record_field(nodes_arr, field).ok_or_else(|| bad(format!("nodes lack `{field}`")))
        };
        let ints = |field: &str| -> Result<Vec<i64>, ModelError> {
            array_i64(column(field)?).ok_or_else(|| bad(format!("`{field}` is not integer")))
        };
        let left = ints("left_child")?;
        let right = ints("right_child")?;
        let feature = ints("feature")?;
        let threshold = match column("threshold")? {
            ArrayData::Float(v) => v.clone(),
            _ => return Err(bad("`threshold` is not float".into())),
        };
        let missing = match record_field(nodes_arr, "missing_go_to_left") {
            Some(data) => Some(
                array_i64(data).ok_or_else(|| bad("`missing_go_to_left` is not integer".into()))?,
            ),
            None => None,
        };
        let n = left.len();
        if [right.len(), feature.len(), threshold.len()]
            .iter()
            .any(|&l| l != n)
            || missing.as_ref().is_some_and(|m| m.len() != n)
            || n == 0
        {
            return Err(bad("node columns of different lengths".into()));
        }
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            // scikit-learn marks a leaf with exactly `TREE_LEAF` (-1) for both children;
            // any other negative child, or one child -1 and the other a node, is a
            // corrupt file, refused below like a child out of range.
            let node = if left[i] == TREE_LEAF && right[i] == TREE_LEAF {
                Node {
                    left: LEAF,
                    right: LEAF,
                    feature: 0,
                    missing_go_to_left: false,
                    threshold: 0.0,
                }
            } else {
                // Children always come after their parent in scikit-learn's layout;
                // requiring it here guarantees that every walk ends.
                let child_ok = |c: i64| c > i as i64 && (c as usize) < n;
                if !child_ok(left[i]) || !child_ok(right[i]) {
                    return Err(bad(format!("node {i} has invalid children")));
                }
                if feature[i] < 0 || feature[i] as usize >= n_features {
                    return Err(bad(format!("node {i} splits on feature {}", feature[i])));
                }
                Node {
                    left: left[i] as u32,
                    right: right[i] as u32,
                    feature: feature[i] as u32,
                    missing_go_to_left: missing.as_ref().is_some_and(|m| m[i] != 0),
                    threshold: threshold[i],
                }
            };
            nodes.push(node);
        }
        let (values, shape) = obj.f64s("values")?;
        let stride = match shape.as_slice() {
            [count, 1, k] if *count == n => *k,
            _ => return Err(bad(format!("values of shape {shape:?} for {n} nodes"))),
        };
        Ok(Tree {
            nodes,
            values,
            stride,
            n_features,
            has_missing_field: missing.is_some(),
        })
    }

    /// The leaf a row (already cast to float32 and widened) lands in.
    #[inline]
    pub fn apply(&self, row: &[f64]) -> usize {
        let mut i = 0usize;
        loop {
            let node = &self.nodes[i];
            if node.left == LEAF {
                return i;
            }
            let v = row[node.feature as usize];
            let go_left = if v.is_nan() {
                node.missing_go_to_left
            } else {
                v <= node.threshold
            };
            i = if go_left { node.left } else { node.right } as usize;
        }
    }

    /// `value[leaf, 0, :]`.
    #[inline]
    pub fn leaf_values(&self, leaf: usize) -> &[f64] {
        &self.values[leaf * self.stride..(leaf + 1) * self.stride]
    }

    /// The width of the rows this tree indexes (`n_features` of the Tree).
    pub fn n_features(&self) -> usize {
        self.n_features
    }
}

/// Casts X to float32 (widened back to f64 for comparisons), as scikit-learn's
/// `check_array(dtype=np.float32)` does, refusing what it refuses: infinity (including
/// values too large for float32) always, NaN unless the model supports missing values.
pub(crate) fn to_float32(
    x: MatrixRef<'_>,
    allow_nan: bool,
    who: &str,
) -> Result<Vec<f64>, PredictError> {
    let mut out = Vec::with_capacity(x.data.len());
    for &v in x.data {
        let f = v as f32;
        if f.is_infinite() || (f.is_nan() && !allow_nan) {
            return Err(PredictError::InvalidInput(format!(
                "Input X contains {} ({who} does not accept it)",
                if f.is_nan() {
                    "NaN"
                } else {
                    "infinity or a value too large for float32"
                }
            )));
        }
        out.push(f64::from(f));
    }
    Ok(out)
}

/// Whether a tree estimator accepts NaN at predict time in the version that saved it:
/// scikit-learn >= 1.3 single trees (>= 1.4 in forests) with the best splitter and a
/// missing-value-aware criterion. Other cases refuse NaN (scikit-learn either refuses
/// it too or its rule changed between versions).
fn tree_allows_nan(obj: Obj<'_>, tree: &Tree, min_version: SkVersion) -> Result<bool, ModelError> {
    if !tree.has_missing_field || obj.version()? < min_version {
        return Ok(false);
    }
    let splitter = obj.opt_str("splitter")?.unwrap_or("best");
    let criterion = obj.opt_str("criterion")?.unwrap_or("");
    Ok(splitter == "best"
        && matches!(
            criterion,
            "gini" | "log_loss" | "entropy" | "squared_error" | "friedman_mse" | "poisson"
        )
        && obj.some("monotonic_cst").is_none())
}

/// The trees of an estimator: itself for a single tree, `estimators_` for a forest.
fn collect_trees(obj: Obj<'_>) -> Result<(Vec<Tree>, bool, bool), ModelError> {
    let forest = obj.name.contains("Forest") || obj.name.contains("ExtraTrees");
    let (members, min_nan_version): (Vec<Obj<'_>>, SkVersion) = if forest {
        let members = obj
            .list("estimators_")?
            .iter()
            .map(Obj::new)
            .collect::<Result<Vec<_>, _>>()?;
        if members.is_empty() {
            return Err(obj.malformed("empty estimators_"));
        }
        (members, SkVersion(1, 4))
    } else {
        (vec![obj], SkVersion(1, 3))
    };
    let mut trees = Vec::with_capacity(members.len());
    let mut allow_nan = !obj.name.contains("Extra");
    let mut normalize = false;
    for member in members {
        let tree = Tree::from_value(member.req("tree_")?, obj.name)?;
        allow_nan &= tree_allows_nan(member, &tree, min_nan_version)?;
        // Before 1.4 classifier leaves hold (weighted) class counts and predict_proba
        // divides by their sum; from 1.4 they hold fractions used as they are.
        normalize = member.version()? < SkVersion(1, 4);
        trees.push(tree);
    }
    if forest && obj.version()? < SkVersion(1, 4) {
        allow_nan = false;
    }
    Ok((trees, allow_nan, normalize))
}

#[derive(Debug)]
struct TreeClassifier {
    name: String,
    trees: Vec<Tree>,
    n_features: usize,
    n_classes: usize,
    allow_nan: bool,
    normalize: bool,
    forest: bool,
}

pub(crate) fn build_classifier(
    obj: Obj<'_>,
) -> Result<(ClassLabels, Box<dyn Classifier>), ModelError> {
    if obj.some("n_outputs_").is_some() && obj.i64("n_outputs_")? != 1 {
        return Err(obj.unsupported("multi-output trees (a 2-D y)"));
    }
    let classes = obj.labels("classes_")?;
    let (trees, allow_nan, normalize) = collect_trees(obj)?;
    let n_features = trees[0].n_features;
    let n_classes = classes.len();
    for t in &trees {
        if t.n_features != n_features || t.stride < n_classes {
            return Err(obj.malformed("trees disagree on features or classes"));
        }
    }
    let forest = obj.some("estimators_").is_some();
    Ok((
        classes,
        Box::new(TreeClassifier {
            name: obj.name.to_string(),
            trees,
            n_features,
            n_classes,
            allow_nan,
            normalize,
            forest,
        }),
    ))
}

impl TreeClassifier {
    /// One tree's `predict_proba` row, added into `acc`.
    fn add_tree_proba(&self, tree: &Tree, row: &[f64], acc: &mut [f64]) {
        let v = &tree.leaf_values(tree.apply(row))[..self.n_classes];
        if self.normalize {
            let mut sum = super::numpy_sum(v);
            if sum == 0.0 {
                sum = 1.0;
            }
            for (a, p) in acc.iter_mut().zip(v) {
                *a += p / sum;
            }
        } else {
            for (a, p) in acc.iter_mut().zip(v) {
                *a += p;
            }
        }
    }

    fn proba_rows(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        check_width(x, self.n_features, &self.name)?;
        let xf = to_float32(x, self.allow_nan, &self.name)?;
        let (k, n_cols) = (self.n_classes, x.n_cols);
        let n_trees = self.trees.len() as f64;
        let start = out.len();
        out.resize(start + x.n_rows * k, 0.0);
        let acc = &mut out[start..];
        // Tree-major within each block of rows (see `ROW_BLOCK`).
        for block in row_blocks(x.n_rows) {
            for tree in &self.trees {
                for i in block.clone() {
                    let row = &xf[i * n_cols..(i + 1) * n_cols];
                    self.add_tree_proba(tree, row, &mut acc[i * k..(i + 1) * k]);
                }
            }
        }
        if self.forest {
            acc.iter_mut().for_each(|a| *a /= n_trees);
        }
        Ok(())
    }
}

impl Classifier for TreeClassifier {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<usize>) -> Result<(), PredictError> {
        if !self.forest {
            // A single tree's predict takes the argmax of the raw leaf values.
            check_width(x, self.n_features, &self.name)?;
            let xf = to_float32(x, self.allow_nan, &self.name)?;
            let tree = &self.trees[0];
            for i in 0..x.n_rows {
                let row = &xf[i * x.n_cols..(i + 1) * x.n_cols];
                out.push(argmax(&tree.leaf_values(tree.apply(row))[..self.n_classes]));
            }
            return Ok(());
        }
        let mut proba = Vec::with_capacity(x.n_rows * self.n_classes);
        self.proba_rows(x, &mut proba)?;
        out.extend(proba.chunks(self.n_classes).map(argmax));
        Ok(())
    }

    fn has_proba(&self) -> bool {
        true
    }

    fn predict_proba(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        self.proba_rows(x, out)
    }
}

#[derive(Debug)]
struct TreeRegressor {
    name: String,
    trees: Vec<Tree>,
    n_features: usize,
    allow_nan: bool,
    forest: bool,
}

pub(crate) fn build_regressor(obj: Obj<'_>) -> Result<Box<dyn Regressor>, ModelError> {
    if obj.some("n_outputs_").is_some() && obj.i64("n_outputs_")? != 1 {
        return Err(obj.unsupported("multi-output trees"));
    }
    let (trees, allow_nan, _) = collect_trees(obj)?;
    let n_features = trees[0].n_features;
    if trees
        .iter()
        .any(|t| t.n_features != n_features || t.stride != 1)
    {
        return Err(obj.malformed("trees disagree on features or are not regression trees"));
    }
    Ok(Box::new(TreeRegressor {
        name: obj.name.to_string(),
        trees,
        n_features,
        allow_nan,
        forest: obj.some("estimators_").is_some(),
    }))
}

impl Regressor for TreeRegressor {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn predict(&self, x: MatrixRef<'_>, out: &mut Vec<f64>) -> Result<(), PredictError> {
        check_width(x, self.n_features, &self.name)?;
        let xf = to_float32(x, self.allow_nan, &self.name)?;
        let n_cols = x.n_cols;
        let row = |i: usize| &xf[i * n_cols..(i + 1) * n_cols];
        if !self.forest {
            let tree = &self.trees[0];
            out.extend((0..x.n_rows).map(|i| tree.leaf_values(tree.apply(row(i)))[0]));
            return Ok(());
        }
        let n_trees = self.trees.len() as f64;
        let start = out.len();
        out.resize(start + x.n_rows, 0.0);
        let acc = &mut out[start..];
        // Tree-major within each block of rows (see `ROW_BLOCK`).
        for block in row_blocks(x.n_rows) {
            for tree in &self.trees {
                for i in block.clone() {
                    acc[i] += tree.leaf_values(tree.apply(row(i)))[0];
                }
            }
        }
        acc.iter_mut().for_each(|a| *a /= n_trees);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift generator, so the test needs no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn uniform(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A complete tree of `depth` splits on random features and thresholds, whose
    /// leaves hold `stride` random values (class counts or fractions).
    fn random_tree(rng: &mut Rng, depth: u32, n_features: usize, stride: usize) -> Tree {
        let n_nodes = (1usize << (depth + 1)) - 1;
        let first_leaf = (1usize << depth) - 1;
        let nodes = (0..n_nodes)
            .map(|i| {
                let leaf = i >= first_leaf;
                Node {
                    left: if leaf { LEAF } else { (2 * i + 1) as u32 },
                    right: if leaf { LEAF } else { (2 * i + 2) as u32 },
                    feature: (rng.next() % n_features as u64) as u32,
                    missing_go_to_left: rng.next().is_multiple_of(2),
                    threshold: f64::from((rng.uniform() * 2.0 - 1.0) as f32),
                }
            })
            .collect();
        let values = (0..n_nodes * stride).map(|_| rng.uniform() * 7.0).collect();
        Tree {
            nodes,
            values,
            stride,
            n_features,
            has_missing_field: true,
        }
    }

    #[test]
    fn forests_walked_tree_by_tree_in_row_blocks_equal_a_row_by_row_walk_bit_for_bit() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (n_features, n_classes, n_trees) = (6, 3, 37);
        // Not a multiple of the block, so the last block is short.
        let n_rows = 2 * ROW_BLOCK + 77;
        let data: Vec<f64> = (0..n_rows * n_features)
            .map(|i| {
                if i % 97 == 0 {
                    f64::NAN
                } else {
                    rng.uniform() * 2.0 - 1.0
                }
            })
            .collect();
        let x = MatrixRef {
            data: &data,
            n_rows,
            n_cols: n_features,
        };
        let xf = to_float32(x, true, "test").unwrap();
        let row = |i: usize| &xf[i * n_features..(i + 1) * n_features];
        for normalize in [false, true] {
            let classifier = TreeClassifier {
                name: "RandomForestClassifier".into(),
                trees: (0..n_trees)
                    .map(|_| random_tree(&mut rng, 8, n_features, n_classes))
                    .collect(),
                n_features,
                n_classes,
                allow_nan: true,
                normalize,
                forest: true,
            };
            let mut got = Vec::new();
            classifier.proba_rows(x, &mut got).unwrap();
            // Each row on its own, every tree in order, as before the row blocks.
            let mut want = Vec::new();
            for i in 0..n_rows {
                let mut acc = vec![0.0; n_classes];
                for tree in &classifier.trees {
                    classifier.add_tree_proba(tree, row(i), &mut acc);
                }
                want.extend(acc.iter().map(|a| a / n_trees as f64));
            }
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "value {i}: {g:e} != {w:e}");
            }
        }
        let regressor = TreeRegressor {
            name: "RandomForestRegressor".into(),
            trees: (0..n_trees)
                .map(|_| random_tree(&mut rng, 8, n_features, 1))
                .collect(),
            n_features,
            allow_nan: true,
            forest: true,
        };
        let mut got = vec![-1.0]; // what is in `out` already stays
        regressor.predict(x, &mut got).unwrap();
        assert_eq!(got[0], -1.0);
        for i in 0..n_rows {
            let mut acc = 0.0;
            for tree in &regressor.trees {
                acc += tree.leaf_values(tree.apply(row(i)))[0];
            }
            let want = acc / n_trees as f64;
            assert_eq!(got[1 + i].to_bits(), want.to_bits(), "row {i}");
        }
    }

    /// A pickled `Tree` of a root split on feature 0 and two leaves, with the
    /// children columns given.
    fn tree_value(left: [i64; 3], right: [i64; 3]) -> Value {
        use crate::value::{DType, NdArray};
        use std::sync::Arc;
        let array = |dtype: DType, shape: Vec<usize>, data: ArrayData| {
            Value::Array(Arc::new(NdArray { dtype, shape, data }))
        };
        let nodes = array(
            DType::Record(Vec::new()),
            vec![3],
            ArrayData::Record(vec![
                ("left_child".into(), ArrayData::Int(left.to_vec())),
                ("right_child".into(), ArrayData::Int(right.to_vec())),
                ("feature".into(), ArrayData::Int(vec![0, -2, -2])),
                ("threshold".into(), ArrayData::Float(vec![0.5, -2.0, -2.0])),
            ]),
        );
        let values = array(
            DType::F64,
            vec![3, 1, 2],
            ArrayData::Float(vec![2.0, 2.0, 2.0, 0.0, 0.0, 2.0]),
        );
        Value::Object {
            module: "sklearn.tree._tree".into(),
            name: "Tree".into(),
            args: Arc::new(vec![Value::Int(1), Value::None, Value::Int(1)]),
            state: Some(Arc::new(Value::Dict(Arc::new(vec![
                (Value::Str("nodes".into()), nodes),
                (Value::Str("values".into()), values),
            ])))),
        }
    }

    /// scikit-learn's leaf marker is exactly -1 (`TREE_LEAF`) for both children: a
    /// node with another negative child (a tampered `left_child[0] = -7` loaded and
    /// answered the root's distribution) or with one child -1 is refused at load.
    #[test]
    fn children_other_than_two_tree_leaf_markers_or_two_later_nodes_are_refused() {
        let tree = Tree::from_value(&tree_value([1, -1, -1], [2, -1, -1]), "test").unwrap();
        assert_eq!(tree.apply(&[0.0]), 1);
        assert_eq!(tree.apply(&[1.0]), 2);
        for (left, right) in [
            ([-7, -1, -1], [2, -1, -1]),
            ([-7, -1, -1], [-7, -1, -1]),
            ([-1, -1, -1], [2, -1, -1]),
            ([1, -1, -1], [-1, -1, -1]),
            ([1, -2, -1], [2, -2, -1]),
            ([1, -1, -1], [2, -1, 0]),
        ] {
            let err = Tree::from_value(&tree_value(left, right), "test").unwrap_err();
            assert!(
                matches!(&err, ModelError::Malformed(m) if m.contains("has invalid children")),
                "{left:?} {right:?}: {err}"
            );
        }
    }
}
