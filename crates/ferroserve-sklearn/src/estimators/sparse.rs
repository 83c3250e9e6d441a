//! Compressed sparse rows: what the text vectorizers produce and what linear models,
//! naive Bayes and SVMs read without densifying a vocabulary-wide row.
//!
//! Invariant: every row's column indices are strictly increasing and below `n_cols`
//! (as scipy's `sum_duplicates` / `sort_indices` leave them), so a merge over two rows
//! and a dot product in index order are both well defined.

use super::access::{array_i64, as_i64, Obj};
use super::{Matrix, MatrixRef};
use crate::model::{ModelError, PredictError};
use crate::value::Value;

/// The widest row an estimator without a sparse path may densify (one row at a time):
/// 2^22 columns, 32 MiB. A wider model is refused at prediction, never allocated.
pub(crate) const MAX_DENSE_ROW: usize = 1 << 22;
/// The most values a whole sparse batch may be densified into (64 MiB).
pub(crate) const MAX_DENSE_VALUES: usize = 1 << 23;

#[derive(Debug, Clone, PartialEq)]
pub struct SparseRows {
    pub n_rows: usize,
    pub n_cols: usize,
    /// `n_rows + 1` offsets into `indices` / `data`.
    pub indptr: Vec<usize>,
    pub indices: Vec<usize>,
    pub data: Vec<f64>,
}

impl SparseRows {
    pub fn empty(n_cols: usize) -> SparseRows {
        SparseRows {
            n_rows: 0,
            n_cols,
            indptr: vec![0],
            indices: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Appends a row given as (column, value) pairs sorted by column, without duplicates.
    pub fn push_row(&mut self, entries: impl IntoIterator<Item = (usize, f64)>) {
        for (j, v) in entries {
            debug_assert!(j < self.n_cols);
            self.indices.push(j);
            self.data.push(v);
        }
        self.indptr.push(self.indices.len());
        self.n_rows += 1;
    }

    pub fn row(&self, i: usize) -> (&[usize], &[f64]) {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[a..b], &self.data[a..b])
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [f64] {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        &mut self.data[a..b]
    }

    /// A dense matrix's nonzero entries (scipy's `csr_matrix(X)`).
    pub fn from_dense(m: MatrixRef<'_>) -> SparseRows {
        let mut out = SparseRows::empty(m.n_cols);
        for i in 0..m.n_rows {
            out.push_row(
                m.row(i)
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0.0)
                    .map(|(j, v)| (j, *v)),
            );
        }
        out
    }

    /// The whole batch as a dense matrix, refused above [`MAX_DENSE_VALUES`].
    pub fn to_dense(&self, who: &str) -> Result<Matrix, PredictError> {
        let total = self.n_rows.saturating_mul(self.n_cols);
        if total > MAX_DENSE_VALUES {
            return Err(PredictError::InvalidInput(format!(
                "{who}: {} rows of {} sparse features are too many to densify ({} values, \
                 at most {MAX_DENSE_VALUES})",
                self.n_rows, self.n_cols, total
            )));
        }
        let mut data = vec![0.0; total];
        for i in 0..self.n_rows {
            let (idx, val) = self.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                data[i * self.n_cols + j] = v;
            }
        }
        Ok(Matrix {
            data,
            n_rows: self.n_rows,
            n_cols: self.n_cols,
        })
    }

    /// Calls `f` on each row densified alone (for estimators without a sparse path),
    /// refused above [`MAX_DENSE_ROW`] columns.
    pub fn for_each_dense_row(
        &self,
        who: &str,
        mut f: impl FnMut(MatrixRef<'_>) -> Result<(), PredictError>,
    ) -> Result<(), PredictError> {
        if self.n_cols > MAX_DENSE_ROW {
            return Err(PredictError::InvalidInput(format!(
                "{who} has no sparse path and {} features are too many to densify a row \
                 (at most {MAX_DENSE_ROW})",
                self.n_cols
            )));
        }
        let mut row = vec![0.0; self.n_cols];
        for i in 0..self.n_rows {
            let (idx, val) = self.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                row[j] = v;
            }
            f(MatrixRef {
                data: &row,
                n_rows: 1,
                n_cols: self.n_cols,
            })?;
            for &j in idx {
                row[j] = 0.0;
            }
        }
        Ok(())
    }

    /// Refuses NaN and infinity among the stored values, as scikit-learn's
    /// `check_array` does for sparse input.
    pub fn check_finite(&self, who: &str) -> Result<(), PredictError> {
        if let Some(v) = self.data.iter().find(|v| !v.is_finite()) {
            return Err(PredictError::InvalidInput(format!(
                "Input X contains {} ({who} does not accept missing or infinite values)",
                if v.is_nan() { "NaN" } else { "infinity" }
            )));
        }
        Ok(())
    }

    /// A pickled `scipy.sparse` CSR matrix (`csr_matrix` / `csr_array`), validated:
    /// offsets increasing and in range, indices in range; each row's indices are sorted
    /// (duplicates are refused: scikit-learn never stores them in a fitted attribute).
    pub fn from_scipy(value: &Value) -> Result<SparseRows, ModelError> {
        let obj = Obj::new(value)?;
        if !matches!(obj.name, "csr_matrix" | "csr_array") {
            return Err(obj.unsupported("a sparse matrix that is not CSR"));
        }
        let shape = obj
            .list("_shape")?
            .iter()
            .map(|v| as_i64(v).and_then(|n| usize::try_from(n).ok()))
            .collect::<Option<Vec<usize>>>()
            .filter(|s| s.len() == 2)
            .ok_or_else(|| obj.malformed("`_shape` is not two sizes"))?;
        let (data, _) = obj.f64s("data")?;
        let ints = |key: &str| -> Result<Vec<usize>, ModelError> {
            array_i64(&obj.array(key)?.data)
                .and_then(|v| v.into_iter().map(|i| usize::try_from(i).ok()).collect())
                .ok_or_else(|| obj.malformed(format!("`{key}` is not an array of offsets")))
        };
        let indptr = ints("indptr")?;
        let mut indices = ints("indices")?;
        let (n_rows, n_cols) = (shape[0], shape[1]);
        let nnz = data.len();
        if indptr.len() != n_rows + 1
            || indptr.first() != Some(&0)
            || indptr.last() != Some(&nnz)
            || indices.len() != nnz
            || indptr.windows(2).any(|w| w[0] > w[1])
            || indices.iter().any(|&j| j >= n_cols)
        {
            return Err(obj.malformed("inconsistent CSR offsets, indices and shape"));
        }
        let mut data = data;
        for i in 0..n_rows {
            let (a, b) = (indptr[i], indptr[i + 1]);
            let mut pairs: Vec<(usize, f64)> = indices[a..b]
                .iter()
                .copied()
                .zip(data[a..b].iter().copied())
                .collect();
            pairs.sort_by_key(|p| p.0);
            if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(obj.malformed("duplicate column indices in a CSR row"));
            }
            for (k, (j, v)) in pairs.into_iter().enumerate() {
                indices[a + k] = j;
                data[a + k] = v;
            }
        }
        Ok(SparseRows {
            n_rows,
            n_cols,
            indptr,
            indices,
            data,
        })
    }
}

/// A 2-D attribute that may be a dense array or a scipy CSR matrix, as sparse rows.
pub(crate) fn dense_or_csr(obj: Obj<'_>, key: &str) -> Result<SparseRows, ModelError> {
    match obj.req(key)? {
        Value::Array(_) => {
            let (v, shape) = obj.f64s(key)?;
            let (r, c) = match shape.as_slice() {
                [r, c] => (*r, *c),
                _ => return Err(obj.malformed(format!("`{key}` is not 2-D"))),
            };
            // Every stored value is kept (zeros too), so a dense kernel sums the same
            // products in the same order as libsvm's dense kernels.
            let mut out = SparseRows::empty(c);
            for i in 0..r {
                out.push_row((0..c).map(|j| (j, v[i * c + j])));
            }
            Ok(out)
        }
        other @ Value::Object { .. } => SparseRows::from_scipy(other),
        _ => Err(obj.malformed(format!("`{key}` is neither an array nor a CSR matrix"))),
    }
}
