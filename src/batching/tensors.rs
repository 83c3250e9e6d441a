//! Joining requests' tensors along the batch dimension (dim 0) and cutting a
//! batch's outputs back into one piece per request.

use crate::tensor::{Tensor, TensorData};

/// Applies `$body` to the vectors of two [`TensorData`] of the same variant;
/// evaluates `$mismatch` when the variants differ.
macro_rules! same_variant {
    ($a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr, $mismatch:expr) => {
        match ($a, $b) {
            (TensorData::Bool($x), TensorData::Bool($y)) => $body,
            (TensorData::U8($x), TensorData::U8($y)) => $body,
            (TensorData::U16($x), TensorData::U16($y)) => $body,
            (TensorData::U32($x), TensorData::U32($y)) => $body,
            (TensorData::U64($x), TensorData::U64($y)) => $body,
            (TensorData::I8($x), TensorData::I8($y)) => $body,
            (TensorData::I16($x), TensorData::I16($y)) => $body,
            (TensorData::I32($x), TensorData::I32($y)) => $body,
            (TensorData::I64($x), TensorData::I64($y)) => $body,
            (TensorData::F16($x), TensorData::F16($y)) => $body,
            (TensorData::F32($x), TensorData::F32($y)) => $body,
            (TensorData::F64($x), TensorData::F64($y)) => $body,
            (TensorData::Bytes($x), TensorData::Bytes($y)) => $body,
            _ => $mismatch,
        }
    };
}

/// Splits the vector inside any [`TensorData`] into consecutive pieces of the
/// given lengths, keeping the variant.
macro_rules! split_variant {
    ($data:expr, $lens:expr; $($variant:ident),*) => {
        match $data {
            $(TensorData::$variant(v) => split_vec(v, $lens)
                .into_iter()
                .map(TensorData::$variant)
                .collect(),)*
        }
    };
}

/// Whether two tensors can be stacked along dim 0: same dtype, same rank, same
/// size in every other dimension.
pub fn stackable(a: &Tensor, b: &Tensor) -> bool {
    a.dtype() == b.dtype() && !a.shape().is_empty() && a.shape()[1..] == b.shape()[1..]
}

/// Stacks tensors along dim 0. The caller has checked [`stackable`]; a mismatch
/// is still refused here rather than producing a tensor that lies about its shape.
/// The parts are borrowed (copied into the batch), so that each request keeps its
/// own inputs while the batch runs: a batch that fails runs them one by one.
pub fn concat(parts: &[&Tensor]) -> Result<Tensor, String> {
    let total: usize = parts.iter().map(|t| t.len()).sum();
    let first = parts.first().ok_or("nothing to concatenate")?;
    let mut shape = first.shape().to_vec();
    if shape.is_empty() {
        return Err("a scalar has no batch dimension".into());
    }
    // One allocation of the batch's size, and every part copied once into it.
    let mut data = TensorData::with_capacity(first.dtype(), total);
    shape[0] = 0;
    for part in parts {
        let s = part.shape();
        if s.len() != shape.len() || s[1..] != shape[1..] {
            return Err(format!("cannot stack shape {s:?} under {shape:?}"));
        }
        shape[0] += s[0];
        same_variant!(&mut data, part.data(), (into, from) => into.extend_from_slice(from), {
            return Err("cannot stack tensors of different dtypes".into())
        });
    }
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

/// Cuts a tensor along dim 0 into pieces of `rows[i]` rows each; `None` when the
/// rows do not add up to its first dimension.
pub fn split(tensor: Tensor, rows: &[usize]) -> Option<Vec<Tensor>> {
    let (shape, data) = tensor.into_parts();
    let batch = *shape.first()?;
    if rows.iter().sum::<usize>() != batch {
        return None;
    }
    let row_len: usize = shape[1..].iter().product();
    let lens: Vec<usize> = rows.iter().map(|r| r * row_len).collect();
    let pieces: Vec<TensorData> = split_variant!(data, &lens;
        Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, F32, F64, Bytes);
    rows.iter()
        .zip(pieces)
        .map(|(&r, piece)| {
            let mut s = shape.clone();
            s[0] = r;
            Tensor::new(s, piece).ok()
        })
        .collect()
}

/// Moves the elements of `v` into consecutive vectors of the given lengths.
fn split_vec<T>(v: Vec<T>, lens: &[usize]) -> Vec<Vec<T>> {
    let mut items = v.into_iter();
    lens.iter()
        .map(|&n| items.by_ref().take(n).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::new(shape, TensorData::F32(v)).unwrap()
    }

    #[test]
    fn concat_then_split_round_trips() {
        let a = f32s(vec![1, 2], vec![1.0, 2.0]);
        let b = f32s(vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]);
        assert!(stackable(&a, &b));
        let joined = concat(&[&a, &b]).unwrap();
        assert_eq!(joined.shape(), &[3, 2]);
        assert_eq!(split(joined, &[1, 2]).unwrap(), vec![a, b]);
    }

    #[test]
    fn bytes_split_too() {
        let t = Tensor::new(
            vec![3],
            TensorData::Bytes(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]),
        )
        .unwrap();
        let parts = split(t, &[2, 1]).unwrap();
        assert_eq!(parts[1].data(), &TensorData::Bytes(vec![b"c".to_vec()]));
    }

    #[test]
    fn mismatches_are_refused() {
        let a = f32s(vec![1, 2], vec![1.0, 2.0]);
        let c = f32s(vec![1, 3], vec![1.0, 2.0, 3.0]);
        let d = Tensor::new(vec![1, 2], TensorData::F64(vec![1.0, 2.0])).unwrap();
        assert!(!stackable(&a, &c));
        assert!(!stackable(&a, &d));
        assert!(concat(&[&a, &c]).is_err());
        assert!(concat(&[&a, &d]).is_err());
        assert!(split(a, &[2]).is_none(), "rows must add up");
    }
}
