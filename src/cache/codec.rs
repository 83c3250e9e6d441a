//! How an answer is stored in Redis: the output tensors, never an encoded answer,
//! so that an entry written by a REST request answers a gRPC one.
//!
//! Layout (integers little-endian): the magic `FSC1`, a `u32` count of outputs, then
//! per output a `u32` name length and the name (UTF-8), a `u8` dtype name length and
//! the dtype's KServe V2 name, a `u32` rank and a `u64` per dimension, a `u64` byte
//! length and the elements in the raw tensor encoding (`crate::raw_tensor`).
//!
//! A value is read back only when it is exactly this: anything else (another
//! program's value, a truncated one) is refused and the lookup counts as a miss.

use crate::tensor::{DataType, NamedTensor, Tensor};

const MAGIC: &[u8; 4] = b"FSC1";

pub fn encode(outputs: &[NamedTensor]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        64 + outputs
            .iter()
            .map(|(n, t)| n.len() + 64 + super::memory::data_bytes(t))
            .sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(outputs.len() as u32).to_le_bytes());
    let mut raw = Vec::new();
    for (name, tensor) in outputs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        let dtype = tensor.dtype().v2_name();
        out.push(dtype.len() as u8);
        out.extend_from_slice(dtype.as_bytes());
        out.extend_from_slice(&(tensor.shape().len() as u32).to_le_bytes());
        for &d in tensor.shape() {
            out.extend_from_slice(&(d as u64).to_le_bytes());
        }
        raw.clear();
        crate::raw_tensor::encode(tensor.data(), &mut raw);
        out.extend_from_slice(&(raw.len() as u64).to_le_bytes());
        out.extend_from_slice(&raw);
    }
    out
}

/// Reads a value [`encode`] wrote. Every length is checked against what is left
/// before anything is allocated, so a damaged value cannot ask for memory.
pub fn decode(value: &[u8]) -> Result<Vec<NamedTensor>, String> {
    let mut r = Reader(value);
    if r.take(4)? != MAGIC {
        return Err("not a ferroserve cache entry".into());
    }
    let count = r.u32()? as usize;
    // Each output takes at least 21 bytes: a bound on the allocation.
    let mut outputs = Vec::with_capacity(count.min(value.len() / 21));
    for _ in 0..count {
        let name_len = r.u32()? as usize;
        let name = String::from_utf8(r.take(name_len)?.to_vec())
            .map_err(|_| "an output name is not UTF-8")?;
        let dtype_len = r.take(1)?[0] as usize;
        let dtype_name =
            std::str::from_utf8(r.take(dtype_len)?).map_err(|_| "a dtype is not UTF-8")?;
        let dtype = DataType::from_v2_name(dtype_name)
            .ok_or_else(|| format!("unknown dtype {dtype_name:?}"))?;
        let rank = r.u32()? as usize;
        if rank > 64 {
            return Err(format!("rank {rank} is implausible"));
        }
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(usize::try_from(r.u64()?).map_err(|_| "a dimension is too large")?);
        }
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or("the shape's element count overflows")?;
        let raw_len = usize::try_from(r.u64()?).map_err(|_| "a length is too large")?;
        let data = crate::raw_tensor::decode(dtype, count, r.take(raw_len)?)?;
        let tensor = Tensor::new(shape, data).map_err(|e| e.to_string())?;
        outputs.push((name, tensor));
    }
    if !r.0.is_empty() {
        return Err("bytes left after the last output".into());
    }
    Ok(outputs)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("the value ends early".into());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn sample() -> Vec<NamedTensor> {
        vec![
            (
                "probabilities".to_string(),
                Tensor::new(vec![2, 2], TensorData::F32(vec![0.25, 0.75, -0.0, 1e-30])).unwrap(),
            ),
            (
                "label".to_string(),
                Tensor::new(
                    vec![2],
                    TensorData::Bytes(vec![b"setosa".to_vec(), vec![0, 0xff]]),
                )
                .unwrap(),
            ),
            (
                "flags".to_string(),
                Tensor::new(vec![1, 0], TensorData::Bool(vec![])).unwrap(),
            ),
        ]
    }

    #[test]
    fn round_trips_bit_for_bit() {
        let outputs = sample();
        let back = decode(&encode(&outputs)).unwrap();
        assert_eq!(back.len(), outputs.len());
        for ((n1, t1), (n2, t2)) in outputs.iter().zip(&back) {
            assert_eq!(n1, n2);
            assert_eq!(t1.shape(), t2.shape());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            crate::raw_tensor::encode(t1.data(), &mut a);
            crate::raw_tensor::encode(t2.data(), &mut b);
            assert_eq!(a, b, "{n1}");
            assert_eq!(t1.dtype(), t2.dtype());
        }
    }

    #[test]
    fn damaged_values_are_refused() {
        let good = encode(&sample());
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        assert!(decode(b"hello world").is_err());
        // A huge count or dimension asks for nothing before it is checked.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
    }
}
