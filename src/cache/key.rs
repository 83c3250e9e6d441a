//! The cache key: BLAKE3 (256 bits) of a canonical encoding of everything that
//! decides the output tensors of a prediction.
//!
//! The encoding, fed to BLAKE3 in key-derivation mode with the context string
//! [`KEY_CONTEXT`] (so no other use of BLAKE3 can produce the same keys); every
//! integer is a little-endian `u64`, every string is its length then its UTF-8 bytes:
//!
//! 1. the model's name;
//! 2. the version number that answers (labels and "latest" are resolved first, so a
//!    new version never answers from an old one's entries), then the 32 bytes of
//!    that version's content fingerprint ([`fingerprint`]: a model deleted and
//!    uploaded again under the same name and version number is other weights, and
//!    never answers from the old one's entries; the same files loaded again with
//!    other load-time settings that change answers, `[postprocess] softmax` or
//!    `[fasttext] k`, never answer from the entries the old settings made);
//! 3. the number of inputs, then each input, in byte order of their names: its
//!    name, its dtype's KServe V2 name (`FP32`, `BYTES`, …), its rank, each
//!    dimension, then its elements: fixed-size dtypes as their little-endian bytes
//!    (`BOOL` one byte 0 or 1, `FP16` its bits), `BYTES` as each element's length then
//!    its bytes. The inputs are those the model runs on: named as the model names
//!    them and cast to its dtypes, so `[[1, 2]]` sent as JSON integers and as FP32
//!    raw bytes are the same request;
//! 4. the number of requested outputs (0: every output), then their names in byte
//!    order. Their order in the request only orders the answer, which a hit
//!    rebuilds in the order asked. A list that names exactly the outputs a request
//!    naming none is answered with, in the model's order, is that same answer and
//!    is keyed as none ([`keyed_outputs`]): the simple API, which always names its
//!    outputs, and a KServe V2 request listing every output share entries with a
//!    request that names none.
//!
//! Nothing else changes the tensors: the protocol, TF Serving's signature name
//! (the default one, or its classification / regression aliases: a request naming
//! another signature, or giving its own options, is not cached, `api::predict`),
//! KServe's `binary_data` parameters, the response format and classify / regress
//! versus predict only change how the same tensors are encoded or laid out into an
//! answer, and that happens after the cache, per request. (Classify and regress run
//! through predict with the examples laid out as the model's input and the one
//! output they read named, both of which are in the key: they share entries with a
//! predict of the same rows asking that output, or asking none when it is the only
//! output the model answers unasked.)
//!
//! The encoding is unambiguous: lengths and counts come before what they measure,
//! and the shape and dtype fix the byte length of fixed-size data.

use crate::tensor::{NamedTensor, Tensor, TensorData};

/// BLAKE3's key-derivation context: versioned, so a change of the encoding starts
/// afresh instead of colliding with entries made by the old one.
pub const KEY_CONTEXT: &str = "ferroserve 2026-12 response cache key v2";

/// A 256-bit cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

/// The hasher in key-derivation mode for [`KEY_CONTEXT`], made once: deriving the
/// context key costs as much as hashing a small request, so each key starts from a
/// copy of this one.
static BASE: std::sync::LazyLock<blake3::Hasher> =
    std::sync::LazyLock::new(|| blake3::Hasher::new_derive_key(KEY_CONTEXT));

impl CacheKey {
    /// The key of a prediction of `model` at `version` (whose files have the
    /// [`fingerprint`] `content`) on `inputs` (as prepared for the model), asking for
    /// `outputs` (empty: every output).
    pub fn new(
        model: &str,
        version: u64,
        content: &[u8; 32],
        inputs: &[NamedTensor],
        outputs: &[String],
    ) -> CacheKey {
        // Everything but the elements goes through one small buffer: an `update` per
        // integer costs more than the hashing itself. The byte stream is the same.
        let mut h = Encoder {
            hasher: BASE.clone(),
            buf: Vec::with_capacity(256),
        };
        h.str(model);
        h.u64(version);
        h.buf.extend_from_slice(content);
        let mut by_name: [usize; 4] = [0, 1, 2, 3];
        let mut many: Vec<usize> = Vec::new();
        let order: &mut [usize] = if inputs.len() <= by_name.len() {
            &mut by_name[..inputs.len()]
        } else {
            many.extend(0..inputs.len());
            &mut many
        };
        order.sort_unstable_by(|&a, &b| inputs[a].0.as_bytes().cmp(inputs[b].0.as_bytes()));
        h.u64(order.len() as u64);
        for &i in order.iter() {
            let (name, tensor) = &inputs[i];
            h.str(name);
            h.tensor(tensor);
        }
        let mut wanted: Vec<&String> = outputs.iter().collect();
        wanted.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        h.u64(wanted.len() as u64);
        for name in wanted {
            h.str(name);
        }
        h.flush();
        CacheKey(*h.hasher.finalize().as_bytes())
    }

    pub fn to_hex(self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

/// The requested outputs as the key counts them: none when `requested` names
/// exactly the outputs a request naming none is answered with (`answered_unasked`:
/// the signature's outputs the backend gives unasked, in the signature's order), as
/// it is the same answer, the same tensors in the same order; else `requested`.
///
/// Only the signature's order: an answer stored for a request naming none is given
/// as stored to the next request naming none, so what is stored under that key
/// must be in the order such a request gets from the model. Another order keeps its
/// own entry (shared by every order but this one, as the key sorts the names).
pub fn keyed_outputs<'a, 'b>(
    requested: &'a [String],
    answered_unasked: impl IntoIterator<Item = &'b str>,
) -> &'a [String] {
    let mut unasked = answered_unasked.into_iter();
    let same = !requested.is_empty()
        && requested
            .iter()
            .all(|name| unasked.next() == Some(name.as_str()))
        && unasked.next().is_none();
    if same {
        &[]
    } else {
        requested
    }
}

/// Writes the encoding to BLAKE3: small fields gathered in `buf`, elements straight
/// from the tensor's buffer where their memory already is their little-endian bytes.
struct Encoder {
    hasher: blake3::Hasher,
    buf: Vec<u8>,
}

impl Encoder {
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    /// Bytes of any length: small ones into the buffer, large ones hashed in place.
    fn bytes(&mut self, b: &[u8]) {
        if b.len() <= 64 {
            self.buf.extend_from_slice(b);
        } else {
            self.flush();
            self.hasher.update(b);
        }
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
    }

    fn tensor(&mut self, tensor: &Tensor) {
        self.str(tensor.dtype().v2_name());
        self.u64(tensor.shape().len() as u64);
        for &d in tensor.shape() {
            self.u64(d as u64);
        }
        if let TensorData::Bytes(v) = tensor.data() {
            for item in v {
                self.u64(item.len() as u64);
                self.bytes(item);
            }
        } else if let Some(elements) = crate::raw_tensor::fixed_size_bytes(tensor.data()) {
            self.bytes(&elements);
        }
    }
}

/// A version's content fingerprint: BLAKE3 over every file under its directory
/// (in byte order of their paths relative to it: each path, its length and its
/// bytes), then `settings`, the load-time settings it was loaded with that change
/// its answers (`ModelConfig::answer_settings`, length then bytes); computed when a
/// cache-enabled version loads. The same files and settings give the same
/// fingerprint on every replica, so they share entries through Redis.
pub fn fingerprint(version_dir: &std::path::Path, settings: &str) -> std::io::Result<[u8; 32]> {
    let mut files = Vec::new();
    let mut dirs = vec![version_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            // Links are not followed into directories (a loop would never end): a
            // link to one fails to read, and leaves the cache off.
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    let relative = |p: &std::path::PathBuf| {
        p.strip_prefix(version_dir)
            .unwrap_or(p)
            .as_os_str()
            .as_encoded_bytes()
            .to_vec()
    };
    files.sort_by_key(relative);
    let mut h = blake3::Hasher::new_derive_key("ferroserve 2026-12 version content fingerprint v2");
    for path in &files {
        let name = relative(path);
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(&name);
        // Followed through links, as the backends read them.
        let length = std::fs::metadata(path)?.len();
        h.update(&length.to_le_bytes());
        h.update_reader(crate::regular_file::open(path)?)?;
    }
    h.update(&(settings.len() as u64).to_le_bytes());
    h.update(settings.as_bytes());
    Ok(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::new(shape, TensorData::F32(v)).unwrap()
    }

    fn key(model: &str, version: u64, inputs: &[NamedTensor], outputs: &[&str]) -> CacheKey {
        let outputs: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
        CacheKey::new(model, version, &[7; 32], inputs, &outputs)
    }

    #[test]
    fn the_fingerprint_follows_the_files_and_the_answer_settings_and_only_them() {
        let write = |dir: &std::path::Path, files: &[(&str, &[u8])]| {
            for (name, bytes) in files {
                let path = dir.join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
        };
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8])] = &[("model.onnx", b"weights"), ("assets/vocab.txt", b"a b")];
        write(one.path(), files);
        write(two.path(), files);
        let a = fingerprint(one.path(), "").unwrap();
        assert_eq!(
            a,
            fingerprint(two.path(), "").unwrap(),
            "same files, same fingerprint"
        );
        write(two.path(), &[("model.onnx", b"weightz")]);
        assert_ne!(a, fingerprint(two.path(), "").unwrap(), "other weights");
        write(two.path(), &[("model.onnx", b"weights")]);
        std::fs::rename(two.path().join("assets"), two.path().join("extra")).unwrap();
        assert_ne!(a, fingerprint(two.path(), "").unwrap(), "a renamed file");
        assert!(fingerprint(&one.path().join("missing"), "").is_err());
        let softmax = |on: bool| {
            let mut c = crate::model_config::ModelConfig::default();
            c.postprocess.softmax = on;
            c.answer_settings()
        };
        assert_ne!(
            fingerprint(one.path(), &softmax(false)).unwrap(),
            fingerprint(one.path(), &softmax(true)).unwrap(),
            "other load-time settings"
        );
        // Settings that take effect live, or never change an answer, are not in it.
        let mut live = crate::model_config::ModelConfig::default();
        live.cache.ttl_secs = 7;
        live.timeout_secs = Some(1.0);
        live.batching.max_batch_size = 3;
        live.probabilities_output = Some("aux".into());
        assert_eq!(live.answer_settings(), softmax(false));
        // Was: the output a softmax applies to, when `[postprocess] output` does
        // not name it, was not in it: a server started with another
        // `probabilities_output` took the old one's answers from Redis.
        let score_output = |name: &str| {
            let mut c = crate::model_config::ModelConfig::default();
            c.postprocess.softmax = true;
            c.probabilities_output = Some(name.into());
            c.answer_settings()
        };
        assert_ne!(score_output("logits"), score_output("aux"));
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

    /// A list naming exactly the outputs a request naming none gets, in the
    /// signature's order, is keyed as none (the simple API and a V2 request listing
    /// every output missed after the same request naming none); a subset, a list
    /// in another order, or one naming an output given only when asked is not.
    #[test]
    fn every_output_named_in_the_models_order_is_keyed_as_none() {
        let x = vec![("x".to_string(), f32s(vec![1, 2], vec![1.0, 2.0]))];
        let names = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
        let keyed = |requested: &[&str], unasked: &[&str]| {
            let requested = names(requested);
            let outputs = keyed_outputs(&requested, unasked.iter().copied());
            CacheKey::new("m", 1, &[7; 32], &x, outputs)
        };
        let none = key("m", 1, &x, &[]);
        let model = ["label", "probabilities"];
        assert_eq!(keyed(&["label", "probabilities"], &model), none);
        assert_eq!(keyed(&[], &model), none);
        assert_eq!(keyed(&["label"], &["label"]), none, "a model's only output");
        for (requested, unasked) in [
            (&["probabilities", "label"][..], &model[..]),
            (&["label"], &model),
            (&["probabilities"], &model),
            (&["label", "probabilities", "label"], &model),
            (&["label", "probabilities", "vector"], &model),
            (
                &["label", "probabilities"],
                &["label", "probabilities", "vector"],
            ),
        ] {
            let requested_key = key("m", 1, &x, requested);
            assert_eq!(keyed(requested, unasked), requested_key, "{requested:?}");
            assert_ne!(requested_key, none, "{requested:?} of {unasked:?}");
        }
        assert_eq!(keyed_outputs(&[], model.iter().copied()), &[] as &[String]);
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

    /// The encoding of the module's documentation, one field per `update`, as
    /// plainly as it reads: what the buffered [`CacheKey::new`] must agree with.
    fn reference(model: &str, version: u64, inputs: &[NamedTensor], outputs: &[&str]) -> CacheKey {
        let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
        let u = |h: &mut blake3::Hasher, v: u64| {
            h.update(&v.to_le_bytes());
        };
        let st = |h: &mut blake3::Hasher, s: &[u8]| {
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s);
        };
        st(&mut h, model.as_bytes());
        u(&mut h, version);
        h.update(&[7; 32]);
        let mut sorted: Vec<&NamedTensor> = inputs.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        u(&mut h, sorted.len() as u64);
        for (name, t) in sorted {
            st(&mut h, name.as_bytes());
            st(&mut h, t.dtype().v2_name().as_bytes());
            u(&mut h, t.shape().len() as u64);
            for &d in t.shape() {
                u(&mut h, d as u64);
            }
            match t.data() {
                TensorData::Bool(v) => v.iter().for_each(|&b| {
                    h.update(&[b as u8]);
                }),
                TensorData::U8(v) => v.iter().for_each(|x| {
                    h.update(&x.to_le_bytes());
                }),
                TensorData::I8(v) => v.iter().for_each(|x| {
                    h.update(&x.to_le_bytes());
                }),
                TensorData::U16(v) | TensorData::F16(v) => v.iter().for_each(|x| {
                    h.update(&x.to_le_bytes());
                }),
                TensorData::I16(v) => v.iter().for_each(|x| {
                    h.update(&x.to_le_bytes());
                }),
                TensorData::U32(v) => v.iter().for_each(|x| {
                    h.update(&x.to_le_bytes());
                }),
                TensorData::I32(v) => v.iter().for_each(|x| {
                    h.update(&x.to_le_bytes());
                }),
                TensorData::F32(v) => v.iter().for_each(|x| {
                    h.update(&x.to_le_bytes());
                }),
                TensorData::U64(v) => v.iter().for_each(|x| {
                    h.update(&x.to_le_bytes());
                }),
                TensorData::I64(v) => v.iter().for_each(|x| {
                    h.update(&x.to_le_bytes());
                }),
                TensorData::F64(v) => v.iter().for_each(|x| {
                    h.update(&x.to_le_bytes());
                }),
                TensorData::Bytes(v) => v.iter().for_each(|b| st(&mut h, b)),
            }
        }
        let mut wanted = outputs.to_vec();
        wanted.sort();
        u(&mut h, wanted.len() as u64);
        for name in wanted {
            st(&mut h, name.as_bytes());
        }
        CacheKey(*h.finalize().as_bytes())
    }

    #[test]
    fn keys_hash_exactly_the_documented_encoding() {
        let t = |data: TensorData| {
            let n = data.len();
            Tensor::new(vec![n], data).unwrap()
        };
        // Every dtype, small (gathered in the buffer) and large (hashed in place).
        let all = |n: usize| -> Vec<NamedTensor> {
            vec![
                (
                    "bool".into(),
                    t(TensorData::Bool((0..n).map(|i| i % 3 == 0).collect())),
                ),
                (
                    "u8".into(),
                    t(TensorData::U8((0..n).map(|i| i as u8).collect())),
                ),
                (
                    "i8".into(),
                    t(TensorData::I8((0..n).map(|i| i as i8).collect())),
                ),
                (
                    "u16".into(),
                    t(TensorData::U16((0..n).map(|i| i as u16).collect())),
                ),
                (
                    "f16".into(),
                    t(TensorData::F16((0..n).map(|i| (i * 7) as u16).collect())),
                ),
                (
                    "i16".into(),
                    t(TensorData::I16((0..n).map(|i| -(i as i16)).collect())),
                ),
                (
                    "u32".into(),
                    t(TensorData::U32((0..n).map(|i| i as u32 * 65_537).collect())),
                ),
                (
                    "i32".into(),
                    t(TensorData::I32((0..n).map(|i| -(i as i32)).collect())),
                ),
                (
                    "f32".into(),
                    t(TensorData::F32((0..n).map(|i| i as f32 / 3.0).collect())),
                ),
                (
                    "u64".into(),
                    t(TensorData::U64((0..n).map(|i| (i as u64) << 40).collect())),
                ),
                (
                    "i64".into(),
                    t(TensorData::I64((0..n).map(|i| -(i as i64) << 33).collect())),
                ),
                (
                    "f64".into(),
                    t(TensorData::F64((0..n).map(|i| i as f64 / 7.0).collect())),
                ),
                (
                    "bytes".into(),
                    t(TensorData::Bytes(
                        (0..n).map(|i| vec![b'x'; i % 100]).collect(),
                    )),
                ),
            ]
        };
        for n in [0, 1, 4, 63, 65, 5000] {
            let inputs = all(n);
            assert_eq!(
                CacheKey::new("model", 3, &[7; 32], &inputs, &["b".into(), "a".into()]),
                reference("model", 3, &inputs, &["b", "a"]),
                "{n} elements"
            );
            // Four inputs or fewer take the other path to their order.
            let few = &inputs[..3];
            assert_eq!(
                CacheKey::new("m", 1, &[7; 32], few, &[]),
                reference("m", 1, few, &[])
            );
        }
        let long_name = "n".repeat(300);
        assert_eq!(
            CacheKey::new(&long_name, 1, &[7; 32], &all(2), &[]),
            reference(&long_name, 1, &all(2), &[])
        );
    }
}
