//! fastText classifiers (`model.bin`, quantized `model.ftz`), read by
//! `crates/ferroserve-fasttext`. A version's `[preprocess] segmenter` (jieba) is a
//! step of its pipeline (`crate::preprocess::segmenter`), run before the batcher:
//! the texts arrive here segmented.
//!
//! Signature: input `text` (BYTES, `[batch]` or `[batch, 1]`, UTF-8, one line each);
//! outputs `labels` (BYTES `[batch, k]`, most probable first) and `probabilities`
//! (FP32 `[batch, k]`), as the fasttext package's `model.predict(text, k, threshold)`
//! gives them, and `sentence_vector` (FP32 `[batch, dim]`, `get_sentence_vector`).
//! `k` and `threshold` come from `[fasttext]` in `config.toml`. A text with fewer
//! labels over the threshold than `k` has its row padded with `""` and `0.0`, so
//! the outputs stay rectangular.

use std::path::Path;

use ferroserve_fasttext::{FastText, Limits};

use super::{Backend, BackendError, ModelTraits, PredictOptions, Signature};
use crate::model_config::ModelConfig;
use crate::tensor::{DataType, NamedTensor, Tensor, TensorData, TensorSpec};

pub const TEXT_INPUT: &str = "text";
pub const LABELS_OUTPUT: &str = "labels";
pub const PROBABILITIES_OUTPUT: &str = "probabilities";
pub const VECTOR_OUTPUT: &str = "sentence_vector";

pub struct FastTextBackend {
    model: FastText,
    k: i32,
    threshold: f32,
    signature: Signature,
    traits: ModelTraits,
}

impl FastTextBackend {
    pub fn load(artifact: &Path, config: &ModelConfig) -> Result<FastTextBackend, BackendError> {
        let model = FastText::load(artifact, &Limits::default())
            .map_err(|e| BackendError::Load(format!("{}: {e}", artifact.display())))?;
        let k = config.fasttext.k;
        let n_labels = model.labels().len();
        let columns = if k < 0 {
            n_labels
        } else {
            (k as usize).min(n_labels)
        };
        let signature = Signature {
            inputs: vec![TensorSpec {
                name: TEXT_INPUT.into(),
                dtype: DataType::Bytes,
                shape: vec![-1],
            }],
            outputs: vec![
                TensorSpec {
                    name: LABELS_OUTPUT.into(),
                    dtype: DataType::Bytes,
                    shape: vec![-1, columns as i64],
                },
                TensorSpec {
                    name: PROBABILITIES_OUTPUT.into(),
                    dtype: DataType::F32,
                    shape: vec![-1, columns as i64],
                },
                TensorSpec {
                    name: VECTOR_OUTPUT.into(),
                    dtype: DataType::F32,
                    shape: vec![-1, model.dim() as i64],
                },
            ],
        };
        let traits = ModelTraits {
            prediction_output: Some(LABELS_OUTPUT.into()),
            probabilities_output: Some(PROBABILITIES_OUTPUT.into()),
            class_labels: None,
            feature_names: None,
            missing_inputs: Vec::new(),
            numeric_category_inputs: Vec::new(),
            ignored_inputs: Vec::new(),
            trained: false,
            ranked_output: Some(PROBABILITIES_OUTPUT.into()),
        };
        Ok(FastTextBackend {
            model,
            k,
            threshold: config.fasttext.threshold,
            signature,
            traits,
        })
    }

    /// The texts of the request, checked.
    fn texts(&self, inputs: Vec<NamedTensor>) -> Result<Vec<String>, BackendError> {
        let Some((_, tensor)) = inputs.into_iter().find(|(n, _)| n == TEXT_INPUT) else {
            return Err(BackendError::InvalidInput(format!(
                "the model's input is {TEXT_INPUT:?} (text)"
            )));
        };
        let (shape, data) = tensor.into_parts();
        if !(shape.len() == 1 || (shape.len() == 2 && shape[1] == 1)) {
            return Err(BackendError::InvalidInput(format!(
                "input {TEXT_INPUT:?} must have shape [batch] or [batch, 1], got {shape:?}"
            )));
        }
        let TensorData::Bytes(rows) = data else {
            return Err(BackendError::InvalidInput(format!(
                "input {TEXT_INPUT:?} must be BYTES (text), got {}",
                data.dtype()
            )));
        };
        rows.into_iter()
            .enumerate()
            .map(|(i, bytes)| {
                let text = String::from_utf8(bytes).map_err(|_| {
                    BackendError::InvalidInput(format!(
                        "input {TEXT_INPUT:?} row {i} is not valid UTF-8"
                    ))
                })?;
                // Empty as fastText sees it: only the bytes it splits words on. Other
                // spaces (U+3000, U+00A0) are a word to it, and it predicts.
                if text
                    .bytes()
                    .all(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c | 0))
                {
                    return Err(BackendError::InvalidInput(format!(
                        "input {TEXT_INPUT:?} row {i} is an empty text"
                    )));
                }
                if text.contains('\n') {
                    return Err(BackendError::InvalidInput(format!(
                        "input {TEXT_INPUT:?} row {i} holds a newline; fastText predicts one line per text"
                    )));
                }
                Ok(text)
            })
            .collect()
    }
}

fn internal(e: impl std::fmt::Display) -> BackendError {
    BackendError::Inference(e.to_string())
}

impl Backend for FastTextBackend {
    fn format(&self) -> &'static str {
        "fasttext"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn traits(&self) -> &ModelTraits {
        &self.traits
    }

    /// The sentence vector is computed only when a request names it.
    fn answers_unasked(&self, output: &str) -> bool {
        output != VECTOR_OUTPUT
    }

    fn predict(
        &self,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        self.predict_with_options(inputs, output_names, &PredictOptions::default())
    }

    /// `k` and `threshold` of the request, else of `[fasttext]`. The outputs are
    /// `[batch, k]` (at most the number of labels) whatever the signature says.
    fn predict_with_options(
        &self,
        inputs: Vec<NamedTensor>,
        output_names: &[String],
        options: &PredictOptions,
    ) -> Result<Vec<NamedTensor>, BackendError> {
        let k = options.k.unwrap_or(self.k);
        let threshold = options.threshold.unwrap_or(self.threshold);
        let columns = if k < 0 {
            self.model.labels().len()
        } else {
            (k as usize).min(self.model.labels().len())
        };
        let wanted: Vec<&str> = if output_names.is_empty() {
            vec![LABELS_OUTPUT, PROBABILITIES_OUTPUT]
        } else {
            output_names.iter().map(String::as_str).collect()
        };
        if let Some(unknown) = wanted
            .iter()
            .find(|n| ![LABELS_OUTPUT, PROBABILITIES_OUTPUT, VECTOR_OUTPUT].contains(n))
        {
            return Err(BackendError::InvalidInput(format!(
                "model has no output {unknown:?}"
            )));
        }
        let texts = self.texts(inputs)?;
        let n = texts.len();
        let wants_labels = wanted.iter().any(|w| *w != VECTOR_OUTPUT);
        let mut labels = Vec::new();
        let mut probabilities = Vec::new();
        if wants_labels {
            labels.reserve(n * columns);
            probabilities.reserve(n * columns);
            for text in &texts {
                let predictions = self
                    .model
                    .predict(text, k, threshold)
                    .map_err(|e| match e {
                        ferroserve_fasttext::Error::InvalidRequest(m) => {
                            BackendError::InvalidInput(m)
                        }
                        other => internal(other),
                    })?;
                for i in 0..columns {
                    match predictions.get(i) {
                        Some(p) => {
                            labels.push(p.label.as_bytes().to_vec());
                            probabilities.push(p.probability);
                        }
                        None => {
                            labels.push(Vec::new());
                            probabilities.push(0.0);
                        }
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(wanted.len());
        for name in wanted {
            let tensor = match name {
                LABELS_OUTPUT => Tensor::new(
                    vec![n, columns],
                    TensorData::Bytes(std::mem::take(&mut labels)),
                ),
                PROBABILITIES_OUTPUT => Tensor::new(
                    vec![n, columns],
                    TensorData::F32(std::mem::take(&mut probabilities)),
                ),
                _ => {
                    let dim = self.model.dim();
                    let mut v = Vec::with_capacity(n * dim);
                    for text in &texts {
                        v.extend(self.model.sentence_vector(text).map_err(internal)?);
                    }
                    Tensor::new(vec![n, dim], TensorData::F32(v))
                }
            }
            .map_err(internal)?;
            out.push((name.to_string(), tensor));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fasttext")
    }

    /// A text of spaces fastText does not split on is a word to it: the fasttext
    /// package answers `predict("\u3000", k=2)` on softmax.bin with
    /// (__label__tech 0.35588658, __label__travel 0.31617939) (fasttext-wheel 0.9.3).
    /// It was refused as an empty text.
    #[test]
    fn a_text_of_other_spaces_is_predicted_as_fasttext_does() {
        use crate::tensor::{Tensor, TensorData};
        let backend =
            FastTextBackend::load(&fixtures().join("softmax.bin"), &ModelConfig::default())
                .unwrap();
        for text in ["\u{3000}", "\u{a0}"] {
            let input =
                Tensor::new(vec![1], TensorData::Bytes(vec![text.as_bytes().to_vec()])).unwrap();
            let options = crate::backends::PredictOptions {
                k: Some(2),
                ..Default::default()
            };
            let out = backend
                .predict_with_options(vec![(TEXT_INPUT.to_string(), input)], &[], &options)
                .unwrap();
            let labels = &out.iter().find(|(n, _)| n == "labels").unwrap().1;
            let probabilities = &out.iter().find(|(n, _)| n == "probabilities").unwrap().1;
            assert_eq!(
                labels.data(),
                &TensorData::Bytes(vec![b"__label__tech".to_vec(), b"__label__travel".to_vec()]),
                "{text:?}"
            );
            let TensorData::F32(p) = probabilities.data() else {
                panic!("{probabilities:?}")
            };
            assert!(
                (p[0] - 0.355_886_58).abs() < 1e-5 && (p[1] - 0.316_179_4).abs() < 1e-5,
                "{p:?}"
            );
        }
        let blank = Tensor::new(vec![1], TensorData::Bytes(vec![b" \t".to_vec()])).unwrap();
        assert!(backend
            .predict(vec![(TEXT_INPUT.to_string(), blank)], &[])
            .is_err());
    }

    #[test]
    fn fasttext_files_are_recognised_by_content() {
        use crate::backends::format::{sniff, ArtifactFormat};
        for file in ["softmax.bin", "quantized.ftz", "lid.176.ftz"] {
            let bytes = std::fs::read(fixtures().join(file)).unwrap();
            assert_eq!(
                sniff(&bytes[..64], bytes.len() as u64),
                Some(ArtifactFormat::FastText),
                "{file}"
            );
            let mut other_version = bytes[..64].to_vec();
            other_version[4] = 13;
            assert_ne!(
                sniff(&other_version, bytes.len() as u64),
                Some(ArtifactFormat::FastText)
            );
        }
    }
}
