//! The input and output matrices: dense (`densematrix.cc`) or product-quantized
//! (`quantmatrix.cc`, `productquantizer.cc`), with fastText's float arithmetic in
//! the same order so sums round as they do there.

use crate::reader::Reader;
use crate::Error;

/// Centroids per sub-quantizer (8-bit codes).
const KSUB: usize = 256;

#[derive(Debug, Clone)]
pub(crate) struct ProductQuantizer {
    dim: usize,
    nsubq: usize,
    dsub: usize,
    lastdsub: usize,
    centroids: Vec<f32>,
}

impl ProductQuantizer {
    fn read(r: &mut Reader<'_>, what: &str) -> Result<ProductQuantizer, Error> {
        let dim = r.i32(&format!("{what} dim"))?;
        let nsubq = r.i32(&format!("{what} nsubq"))?;
        let dsub = r.i32(&format!("{what} dsub"))?;
        let lastdsub = r.i32(&format!("{what} lastdsub"))?;
        if dim <= 0 || nsubq <= 0 || dsub <= 0 || lastdsub <= 0 || lastdsub > dsub {
            return Err(Error::Invalid(format!(
                "{what}: dim {dim}, nsubq {nsubq}, dsub {dsub}, lastdsub {lastdsub} are not a product quantizer"
            )));
        }
        let (dim, nsubq, dsub, lastdsub) = (
            dim as usize,
            nsubq as usize,
            dsub as usize,
            lastdsub as usize,
        );
        // fastText makes nsubq = ceil(dim / dsub) with the remainder in the last one.
        if (nsubq - 1)
            .checked_mul(dsub)
            .and_then(|x| x.checked_add(lastdsub))
            != Some(dim)
        {
            return Err(Error::Invalid(format!(
                "{what}: {nsubq} sub-quantizers of {dsub} (last {lastdsub}) do not make dimension {dim}"
            )));
        }
        let count = dim
            .checked_mul(KSUB)
            .ok_or_else(|| Error::Invalid(format!("{what}: dim {dim} too large")))?;
        let centroids = r.f32s(count, &format!("{what} centroids"))?;
        Ok(ProductQuantizer {
            dim,
            nsubq,
            dsub,
            lastdsub,
            centroids,
        })
    }

    fn centroid(&self, m: usize, code: u8) -> &[f32] {
        let i = code as usize;
        if m == self.nsubq - 1 {
            let start = m * KSUB * self.dsub + i * self.lastdsub;
            &self.centroids[start..start + self.lastdsub]
        } else {
            let start = (m * KSUB + i) * self.dsub;
            &self.centroids[start..start + self.dsub]
        }
    }

    fn add_code(&self, x: &mut [f32], codes: &[u8], alpha: f32) {
        for (m, &code) in codes.iter().enumerate() {
            let c = self.centroid(m, code);
            let base = m * self.dsub;
            for (n, v) in c.iter().enumerate() {
                x[base + n] += alpha * v;
            }
        }
    }

    fn mul_code(&self, x: &[f32], codes: &[u8], alpha: f32) -> f32 {
        let mut res = 0.0f32;
        for (m, &code) in codes.iter().enumerate() {
            let c = self.centroid(m, code);
            let base = m * self.dsub;
            for (n, v) in c.iter().enumerate() {
                res += x[base + n] * v;
            }
        }
        res * alpha
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Matrix {
    Dense {
        rows: usize,
        cols: usize,
        data: Vec<f32>,
    },
    Quantized {
        rows: usize,
        cols: usize,
        codes: Vec<u8>,
        pq: ProductQuantizer,
        /// The norm quantizer (`qnorm`): one code per row into a 1-d quantizer.
        norms: Option<(Vec<u8>, ProductQuantizer)>,
    },
}

fn dims(r: &mut Reader<'_>, what: &str) -> Result<(usize, usize), Error> {
    let m = r.i64(&format!("{what} rows"))?;
    let n = r.i64(&format!("{what} columns"))?;
    if m < 0 || n <= 0 {
        return Err(Error::Invalid(format!("{what}: {m} × {n} is not a matrix")));
    }
    // A row of floats must fit in what is left of the file, so vectors of the
    // dimension are bounded by the file, whatever the number of rows.
    let (m, n) = (m as u64, n as u64);
    if n.saturating_mul(4) > r.remaining() as u64 {
        return Err(Error::Invalid(format!(
            "{what}: {n} columns do not fit in the file"
        )));
    }
    Ok((m as usize, n as usize))
}

impl Matrix {
    pub(crate) fn read_dense(r: &mut Reader<'_>, what: &str) -> Result<Matrix, Error> {
        let (rows, cols) = dims(r, what)?;
        let count = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::Invalid(format!("{what}: {rows} × {cols} overflows")))?;
        let data = r.f32s(count, what)?;
        Ok(Matrix::Dense { rows, cols, data })
    }

    pub(crate) fn read_quantized(r: &mut Reader<'_>, what: &str) -> Result<Matrix, Error> {
        let qnorm = r.bool(&format!("{what} qnorm"))?;
        let (rows, cols) = dims(r, what)?;
        let codesize = r.i32(&format!("{what} code size"))?;
        if codesize < 0 || codesize as usize > r.remaining() {
            return Err(Error::Invalid(format!(
                "{what}: code size {codesize} does not fit in the file"
            )));
        }
        let codes = r
            .take(codesize as usize, &format!("{what} codes"))?
            .to_vec();
        let pq = ProductQuantizer::read(r, &format!("{what} quantizer"))?;
        if pq.dim != cols {
            return Err(Error::Invalid(format!(
                "{what}: quantizer of dimension {} for {cols} columns",
                pq.dim
            )));
        }
        if rows.checked_mul(pq.nsubq) != Some(codes.len()) {
            return Err(Error::Invalid(format!(
                "{what}: {} codes for {rows} rows of {} sub-quantizers",
                codes.len(),
                pq.nsubq
            )));
        }
        let norms = if qnorm {
            let norm_codes = r.take(rows, &format!("{what} norm codes"))?.to_vec();
            let npq = ProductQuantizer::read(r, &format!("{what} norm quantizer"))?;
            if npq.dim != 1 {
                return Err(Error::Invalid(format!(
                    "{what}: norm quantizer of dimension {}",
                    npq.dim
                )));
            }
            Some((norm_codes, npq))
        } else {
            None
        };
        Ok(Matrix::Quantized {
            rows,
            cols,
            codes,
            pq,
            norms,
        })
    }

    pub(crate) fn rows(&self) -> usize {
        match self {
            Matrix::Dense { rows, .. } | Matrix::Quantized { rows, .. } => *rows,
        }
    }

    pub(crate) fn cols(&self) -> usize {
        match self {
            Matrix::Dense { cols, .. } | Matrix::Quantized { cols, .. } => *cols,
        }
    }

    fn norm(norms: &Option<(Vec<u8>, ProductQuantizer)>, i: usize) -> f32 {
        match norms {
            Some((codes, npq)) => npq.centroid(0, codes[i])[0],
            None => 1.0,
        }
    }

    /// `x += row i` (`addRowToVector`). `i < rows()` and `x.len() == cols()`.
    pub(crate) fn add_row_to(&self, x: &mut [f32], i: usize) {
        match self {
            Matrix::Dense { cols, data, .. } => {
                for (xj, v) in x.iter_mut().zip(&data[i * cols..(i + 1) * cols]) {
                    *xj += v;
                }
            }
            Matrix::Quantized {
                codes, pq, norms, ..
            } => {
                let alpha = Self::norm(norms, i);
                pq.add_code(x, &codes[i * pq.nsubq..(i + 1) * pq.nsubq], alpha);
            }
        }
    }

    /// `row i · x` (`dotRow`), `None` when it is NaN (fastText throws "Encountered NaN.").
    pub(crate) fn dot_row(&self, x: &[f32], i: usize) -> Option<f32> {
        let d = match self {
            Matrix::Dense { cols, data, .. } => {
                let mut d = 0.0f32;
                for (v, xj) in data[i * cols..(i + 1) * cols].iter().zip(x) {
                    d += v * xj;
                }
                d
            }
            Matrix::Quantized {
                codes, pq, norms, ..
            } => {
                let alpha = Self::norm(norms, i);
                pq.mul_code(x, &codes[i * pq.nsubq..(i + 1) * pq.nsubq], alpha)
            }
        };
        (!d.is_nan()).then_some(d)
    }
}
