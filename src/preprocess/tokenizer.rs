//! `[preprocess] tokenizer`: text becomes a transformer's `input_ids`,
//! `attention_mask` and `token_type_ids` through Hugging Face's `tokenizers` crate
//! (the same code as the Python package), with the configured `max_length`,
//! truncation and padding; and `[postprocess] pooling` / `normalize` turn token
//! embeddings into one vector per text, as sentence-transformers does.

use std::path::Path;

use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::PreprocessError;
use crate::backends::Backend;
use crate::model_config::{Padding, Pooling, PreprocessConfig};
use crate::tensor::{DataType, NamedTensor, Tensor, TensorData};

/// The graph inputs a tokenizer fills, by their conventional names.
pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
pub const TOKEN_TYPE_IDS: &str = "token_type_ids";
/// Every graph input a tokenizer fills.
pub const GRAPH_INPUTS: [&str; 3] = [INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS];

/// The most bytes a `tokenizer.json` may hold (MiniLM's is 0.7 MB; large
/// multilingual ones are ~17 MB).
const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

pub struct TextTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
    truncation: bool,
    /// Which of the three inputs the graph has (names read from the graph).
    has_mask: bool,
    has_types: bool,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("max_length", &self.max_length)
            .field("truncation", &self.truncation)
            .finish()
    }
}

impl TextTokenizer {
    pub fn load(
        version_dir: &Path,
        name: &str,
        config: &PreprocessConfig,
        backend: &dyn Backend,
    ) -> Result<TextTokenizer, String> {
        let path = version_dir.join(name);
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("preprocess.tokenizer: cannot read {name}: {e}"))?
            .len();
        if size > MAX_TOKENIZER_BYTES {
            return Err(format!(
                "preprocess.tokenizer: {name} is {size} bytes, more than {MAX_TOKENIZER_BYTES}"
            ));
        }
        let bytes = crate::regular_file::read(&path, MAX_TOKENIZER_BYTES)
            .map_err(|e| format!("preprocess.tokenizer: cannot read {name}: {e}"))?;
        let mut tokenizer = Tokenizer::from_bytes(&bytes)
            .map_err(|e| format!("preprocess.tokenizer: {name} is not a tokenizer.json: {e}"))?;
        let inputs = &backend.signature().inputs;
        let has = |n: &str| inputs.iter().any(|s| s.name == n);
        if !has(INPUT_IDS) {
            return Err(format!(
                "preprocess.tokenizer: the model has no input {INPUT_IDS:?} to feed"
            ));
        }
        if let Some(other) = inputs
            .iter()
            .find(|s| !GRAPH_INPUTS.contains(&s.name.as_str()))
        {
            return Err(format!(
                "preprocess.tokenizer: the model's input {:?} is not one a tokenizer fills \
                 ({INPUT_IDS}, {ATTENTION_MASK}, {TOKEN_TYPE_IDS})",
                other.name
            ));
        }
        // The file's own padding gives the pad token; ours gives the length.
        let (pad_id, pad_token, pad_type_id) = match tokenizer.get_padding() {
            Some(p) => (p.pad_id, p.pad_token.clone(), p.pad_type_id),
            None => (0, "[PAD]".to_string(), 0),
        };
        tokenizer.with_padding(Some(PaddingParams {
            strategy: match config.padding {
                Padding::MaxLength => PaddingStrategy::Fixed(config.max_length),
                Padding::Longest => PaddingStrategy::BatchLongest,
            },
            pad_id,
            pad_token,
            pad_type_id,
            ..PaddingParams::default()
        }));
        // Truncation keeps room for the special tokens ([CLS], [SEP]): a max_length
        // that leaves none made the tokenizers crate panic.
        let special = tokenizer
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
        // Without truncation too: no text would fit.
        if config.max_length <= special {
            return Err(format!(
                "preprocess.max_length is {}, but the tokenizer adds {special} special tokens \
                 to every text: it must be more than {special}",
                config.max_length
            ));
        }
        tokenizer
            .with_truncation(config.truncation.then(|| TruncationParams {
                max_length: config.max_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| format!("preprocess.tokenizer: {e}"))?;
        Ok(TextTokenizer {
            tokenizer,
            max_length: config.max_length,
            truncation: config.truncation,
            has_mask: has(ATTENTION_MASK),
            has_types: has(TOKEN_TYPE_IDS),
        })
    }

    /// The model's inputs for `texts` (UTF-8, not empty): `[n, tokens]` int64 each.
    pub fn encode(
        &self,
        input: &str,
        texts: &[Vec<u8>],
    ) -> Result<Vec<NamedTensor>, PreprocessError> {
        let bad = |m: String| PreprocessError::InvalidInput(format!("input {input:?} {m}"));
        let mut strings = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            let s =
                std::str::from_utf8(t).map_err(|e| bad(format!("text {i} is not UTF-8: {e}")))?;
            if s.trim().is_empty() {
                return Err(bad(format!("text {i} is empty")));
            }
            strings.push(s);
        }
        let encodings = self
            .tokenizer
            .encode_batch(strings, true)
            .map_err(|e| bad(format!("cannot be tokenized: {e}")))?;
        let n = encodings.len();
        let width = encodings.first().map_or(0, |e| e.get_ids().len());
        if !self.truncation {
            if let Some((i, e)) = encodings
                .iter()
                .enumerate()
                .find(|(_, e)| e.get_ids().len() > self.max_length)
            {
                return Err(bad(format!(
                    "text {i} has {} tokens, more than max_length ({}); shorten it",
                    e.get_ids().len(),
                    self.max_length
                )));
            }
        }
        let column =
            |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor, PreprocessError> {
                let mut v = Vec::with_capacity(n * width);
                for e in &encodings {
                    let ids = f(e);
                    if ids.len() != width {
                        return Err(PreprocessError::Internal(
                            "tokenized texts differ in length".into(),
                        ));
                    }
                    v.extend(ids.iter().map(|&x| i64::from(x)));
                }
                Tensor::new(vec![n, width], TensorData::I64(v))
                    .map_err(|e| PreprocessError::Internal(e.to_string()))
            };
        let mut out = vec![(INPUT_IDS.to_string(), column(&|e| e.get_ids())?)];
        if self.has_mask {
            out.push((
                ATTENTION_MASK.to_string(),
                column(&|e| e.get_attention_mask())?,
            ));
        }
        if self.has_types {
            out.push((TOKEN_TYPE_IDS.to_string(), column(&|e| e.get_type_ids())?));
        }
        Ok(out)
    }
}

/// Pools token embeddings `[n, tokens, dim]` into `[n, dim]` (f32), the mean over
/// the tokens `mask` keeps (`[n, tokens]`; all when `None`) or the first token,
/// then divides by the L2 norm when asked, in f64 as sentence-transformers'
/// float32 torch code gives within 1e-6.
pub fn pool(
    tensor: &Tensor,
    mask: Option<&Tensor>,
    pooling: Pooling,
    normalize: bool,
) -> Result<Tensor, PreprocessError> {
    let &[n, tokens, dim] = tensor.shape() else {
        return Err(PreprocessError::Internal(format!(
            "pooling needs token embeddings [n, tokens, dim], not {:?}",
            tensor.shape()
        )));
    };
    let values: Vec<f64> = match tensor.clone().cast(DataType::F64).map(Tensor::into_parts) {
        Ok((_, TensorData::F64(v))) => v,
        _ => {
            return Err(PreprocessError::Internal(
                "embeddings are not numbers".into(),
            ))
        }
    };
    let mask: Vec<f64> = match mask.map(|m| m.clone().cast(DataType::F64).map(Tensor::into_parts)) {
        Some(Ok((shape, TensorData::F64(v)))) if shape == [n, tokens] => v,
        None => vec![1.0; n * tokens],
        _ => {
            return Err(PreprocessError::Internal(
                "the attention mask does not match the embeddings".into(),
            ))
        }
    };
    let mut out = Vec::with_capacity(n * dim);
    for row in 0..n {
        let mut v = vec![0.0f64; dim];
        match pooling {
            Pooling::Cls => {
                v.copy_from_slice(&values[row * tokens * dim..row * tokens * dim + dim])
            }
            Pooling::Mean => {
                let mut count = 0.0;
                for t in 0..tokens {
                    let m = mask[row * tokens + t];
                    count += m;
                    let base = (row * tokens + t) * dim;
                    for (d, x) in v.iter_mut().enumerate() {
                        *x += values[base + d] * m;
                    }
                }
                let count = f64::max(count, 1e-9);
                v.iter_mut().for_each(|x| *x /= count);
            }
        }
        if normalize {
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
        }
        out.extend(v.into_iter().map(|x| x as f32));
    }
    Tensor::new(vec![n, dim], TensorData::F32(out))
        .map_err(|e| PreprocessError::Internal(e.to_string()))
}
