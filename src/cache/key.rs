//! The cache key: BLAKE3 (256 bits) of a canonical encoding of everything that
//! decides the output tensors of a prediction.
//!
//! The encoding, fed to BLAKE3 in key-derivation mode with the context string
//! [`KEY_CONTEXT`] (so no other use of BLAKE3 can produce the same keys); every
//! integer is a little-endian `u64`, every string is its length then its UTF-8 bytes:
//!
//! 1. the model's name;
//! 2. the version number that answers (labels and "latest" are resolved first, so a
//!    new version never answers from an old one's entries);
//! 3. the number of inputs, then each input, in byte order of their names: its
//!    name, its dtype's KServe V2 name (`FP32`, `BYTES`, …), its rank, each
//!    dimension, then its elements: fixed-size dtypes as their little-endian bytes
//!    (`BOOL` one byte 0 or 1, `FP16` its bits), `BYTES` as each element's length then
//!    its bytes. The inputs are those the model runs on: named as the model names
//!    them and cast to its dtypes, so `[[1, 2]]` sent as JSON integers and as FP32
//!    raw bytes are the same request;
//! 4. the number of requested outputs (0: every output), then their names in byte
//!    order. Their order in the request only orders the answer, which a hit
//!    rebuilds in the order asked.
//!
//! Nothing else changes the tensors: the protocol, TF Serving's signature name
//! (only the default one, or its classification / regression aliases, is served),
//! KServe's `binary_data` parameters, the response format and classify / regress
//! versus predict only change how the same tensors are encoded or laid out into an
//! answer, and that happens after the cache, per request. (Classify and regress run
//! through predict with the examples laid out as the model's input and the output
//! they read named, both of which are in the key.)
//!
//! The encoding is unambiguous: lengths and counts come before what they measure,
//! and the shape and dtype fix the byte length of fixed-size data.

use crate::tensor::{NamedTensor, Tensor, TensorData};

/// BLAKE3's key-derivation context: versioned, so a change of the encoding starts
/// afresh instead of colliding with entries made by the old one.
pub const KEY_CONTEXT: &str = "ferroserve 2026-12 response cache key v1";

/// A 256-bit cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

impl CacheKey {
    /// The key of a prediction of `model` at `version` on `inputs` (as prepared for
    /// the model), asking for `outputs` (empty: every output).
    pub fn new(model: &str, version: u64, inputs: &[NamedTensor], outputs: &[String]) -> CacheKey {
        let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
        write_str(&mut h, model);
        write_u64(&mut h, version);
        let mut sorted: Vec<&NamedTensor> = inputs.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        write_u64(&mut h, sorted.len() as u64);
        for (name, tensor) in sorted {
            write_str(&mut h, name);
            write_tensor(&mut h, tensor);
        }
        let mut wanted: Vec<&String> = outputs.iter().collect();
        wanted.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        write_u64(&mut h, wanted.len() as u64);
        for name in wanted {
            write_str(&mut h, name);
        }
        CacheKey(*h.finalize().as_bytes())
    }

    pub fn to_hex(self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

fn write_u64(h: &mut blake3::Hasher, v: u64) {
    h.update(&v.to_le_bytes());
}

fn write_str(h: &mut blake3::Hasher, s: &str) {
    write_u64(h, s.len() as u64);
    h.update(s.as_bytes());
}

fn write_tensor(h: &mut blake3::Hasher, tensor: &Tensor) {
    write_str(h, tensor.dtype().v2_name());
    write_u64(h, tensor.shape().len() as u64);
    for &d in tensor.shape() {
        write_u64(h, d as u64);
    }
    // Elements go through a small buffer: one `update` per element would cost more
    // than the hashing itself.
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    macro_rules! le {
        ($v:expr) => {
            for chunk in $v.chunks(CHUNK_BYTES / 8) {
                buf.clear();
                for x in chunk {
                    buf.extend_from_slice(&x.to_le_bytes());
                }
                h.update(&buf);
            }
        };
    }
    match tensor.data() {
        TensorData::Bool(v) => {
            for chunk in v.chunks(CHUNK_BYTES) {
                buf.clear();
                buf.extend(chunk.iter().map(|&b| b as u8));
                h.update(&buf);
            }
        }
        TensorData::U8(v) => {
            h.update(v);
        }
        TensorData::I8(v) => le!(v),
        TensorData::U16(v) | TensorData::F16(v) => le!(v),
        TensorData::I16(v) => le!(v),
        TensorData::U32(v) => le!(v),
        TensorData::I32(v) => le!(v),
        TensorData::F32(v) => le!(v),
        TensorData::U64(v) => le!(v),
        TensorData::I64(v) => le!(v),
        TensorData::F64(v) => le!(v),
        TensorData::Bytes(v) => {
            for item in v {
                write_u64(h, item.len() as u64);
                h.update(item);
            }
        }
    }
}

const CHUNK_BYTES: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::new(shape, TensorData::F32(v)).unwrap()
    }

    fn key(model: &str, version: u64, inputs: &[NamedTensor], outputs: &[&str]) -> CacheKey {
        let outputs: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
        CacheKey::new(model, version, inputs, &outputs)
    }

    #[test]
    fn everything_that_decides_the_answer_is_in_the_key() {
        let x = vec![("x".to_string(), f32s(vec![1, 2], vec![1.0, 2.0]))];
        let base = key("m", 1, &x, &[]);
        assert_eq!(base, key("m", 1, &x, &[]), "deterministic");
        assert_ne!(base, key("n", 1, &x, &[]), "model name");
        assert_ne!(base, key("m", 2, &x, &[]), "version");
        assert_ne!(base, key("m", 1, &x, &["y"]), "requested outputs");
        let y = vec![("y".to_string(), f32s(vec![1, 2], vec![1.0, 2.0]))];
        assert_ne!(base, key("m", 1, &y, &[]), "input name");
        let reshaped = vec![("x".to_string(), f32s(vec![2, 1], vec![1.0, 2.0]))];
        assert_ne!(base, key("m", 1, &reshaped, &[]), "shape");
        let other = vec![("x".to_string(), f32s(vec![1, 2], vec![1.0, 2.5]))];
        assert_ne!(base, key("m", 1, &other, &[]), "values");
        let f64s = vec![(
            "x".to_string(),
            Tensor::new(vec![1, 2], TensorData::F64(vec![1.0, 2.0])).unwrap(),
        )];
        assert_ne!(base, key("m", 1, &f64s, &[]), "dtype");
        let negative_zero = vec![("x".to_string(), f32s(vec![1, 2], vec![-0.0, 2.0]))];
        let zero = vec![("x".to_string(), f32s(vec![1, 2], vec![0.0, 2.0]))];
        assert_ne!(
            key("m", 1, &negative_zero, &[]),
            key("m", 1, &zero, &[]),
            "bytes, not values, are compared"
        );
    }

    #[test]
    fn order_of_inputs_and_outputs_does_not_matter() {
        let a = ("a".to_string(), f32s(vec![1], vec![1.0]));
        let b = ("b".to_string(), f32s(vec![1], vec![2.0]));
        assert_eq!(
            key("m", 1, &[a.clone(), b.clone()], &["p", "q"]),
            key("m", 1, &[b, a], &["q", "p"])
        );
    }

    #[test]
    fn byte_strings_cannot_run_into_each_other() {
        let strings = |v: Vec<&[u8]>| {
            vec![(
                "s".to_string(),
                Tensor::new(
                    vec![v.len()],
                    TensorData::Bytes(v.into_iter().map(<[u8]>::to_vec).collect()),
                )
                .unwrap(),
            )]
        };
        assert_ne!(
            key("m", 1, &strings(vec![b"ab", b"c"]), &[]),
            key("m", 1, &strings(vec![b"a", b"bc"]), &[])
        );
        // A model name that swallows the version's bytes cannot collide either.
        assert_ne!(key("m\u{1}", 0, &[], &[]), key("m", 1, &[], &[]));
    }

    #[test]
    fn large_tensors_hash_in_chunks_like_small_ones() {
        let n = CHUNK_BYTES; // several chunks of f32
        let v: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut w = v.clone();
        w[n - 1] = -1.0;
        let t = |v: Vec<f32>| vec![("x".to_string(), f32s(vec![n], v))];
        assert_ne!(key("m", 1, &t(v.clone()), &[]), key("m", 1, &t(w), &[]));
        assert_eq!(key("m", 1, &t(v.clone()), &[]), key("m", 1, &t(v), &[]));
    }
}
