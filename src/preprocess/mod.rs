//! Per-version pre- and post-processing pipelines (issue 15).
//!
//! A [`Pipeline`] is built once when a version loads, from the model's
//! `[preprocess]` / `[postprocess]` tables and files in the version directory, and
//! lives on the version's handle (`crate::manager::LoadedVersion::pipeline`).
//! `crate::api::predict` runs it between the api operation and the batcher: on the
//! way out, [`Pipeline::finish_answer`] applies the pooling and the softmax once
//! the batcher answers (before the response cache keeps the answer), and
//! [`Pipeline::classify_outputs`] the classification extension to every answer,
//! cached ones included.
//!
//! Invariant: adapters never pre- or post-process; they pass what the client asked
//! (e.g. `"parameters": {"classification": k}` on an output) to the api operation,
//! so every protocol answers the same.
//! Invariant: nothing here panics on a client's tensor; bad input is a
//! [`PreprocessError::InvalidInput`] (400 / INVALID_ARGUMENT).

pub mod image;
pub mod labels;
pub mod segmenter;
pub mod tokenizer;

use std::path::Path;

use crate::backends::Backend;
use crate::model_config::ModelConfig;
use crate::tensor::{DataType, NamedTensor, Tensor, TensorData, TensorSpec};

pub use labels::{classification_strings, load_labels, ClassScores};

/// One row's named classes with their scores, best first (the simple API's
/// `top_classes`).
pub type TopClasses = Vec<(String, f64)>;

/// The name metadata gives the text input of a model with a tokenizer (any BYTES
/// input name is read as the text; the simple API sends this one).
pub const TEXT_INPUT: &str = "text";

/// Why a request cannot be pre- or post-processed.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The client's input or request does not fit the pipeline.
    #[error("{0}")]
    InvalidInput(String),
    /// The model's output does not have the shape the pipeline was set up for.
    #[error("{0}")]
    Internal(String),
    /// What the request would decode to is more than one request may take.
    #[error("{0}")]
    TooLarge(String),
    /// The request's deadline passed, or its client left, while it was prepared
    /// ([`with_stop`]): the rest is not done.
    #[error("{0}")]
    Stopped(String),
}

/// When the pre-processing of a request may stop early (see [`with_stop`]).
#[derive(Clone)]
pub struct Stop {
    pub deadline: Option<std::time::Instant>,
    /// Set once nobody waits for the answer (the client left, or was answered 504).
    pub abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

thread_local! {
    static STOP: std::cell::RefCell<Option<Stop>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a request's pre-processing, on this blocking thread) so that work done
/// item by item (images decoded one after another: up to a minute of CPU for a
/// request of many large ones) stops once `stop` says nobody waits.
pub fn with_stop<T>(stop: Stop, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Stop>);
    impl Drop for Restore {
        fn drop(&mut self) {
            STOP.with(|s| *s.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(STOP.with(|s| s.borrow_mut().replace(stop)));
    f()
}

/// Why the work under way on this thread should stop, if it should.
fn stopped() -> Option<PreprocessError> {
    STOP.with(|s| {
        let stop = s.borrow();
        let stop = stop.as_ref()?;
        if stop.abandoned.load(std::sync::atomic::Ordering::Relaxed) {
            return Some(PreprocessError::Stopped(
                "pre-processing stopped: nobody waits for the answer".into(),
            ));
        }
        stop.deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
            .then(|| PreprocessError::Stopped("the deadline passed during pre-processing".into()))
    })
}

/// A request for the classification extension on one output: its `k` best classes
/// as `"score:index:label"` strings (KServe / Triton `"classification": k`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub output: String,
    pub k: usize,
}

/// What one version does to requests and answers besides running the model.
#[derive(Debug, Default)]
pub struct Pipeline {
    /// The output that holds class scores (`[postprocess] output`, else the
    /// probabilities output, else the only output); `None` when the model has none.
    pub score_output: Option<String>,
    /// Class names in score-column order (`[postprocess] labels`).
    pub labels: Option<Vec<String>>,
    /// Softmax over the score output's last dimension.
    pub softmax: bool,
    /// Classes per TF Serving classify / simple API answer.
    pub top_k: Option<usize>,
    /// `[preprocess] image` and the input it feeds.
    pub image: Option<(String, crate::model_config::ImageConfig)>,
    /// `[preprocess] tokenizer`.
    pub tokenizer: Option<tokenizer::TextTokenizer>,
    /// `[preprocess] segmenter` (jieba), applied to every text input.
    pub segmenter: Option<segmenter::TextSegmenter>,
    /// `[postprocess] pooling` and `normalize`, on the score output (the token
    /// embeddings).
    pub pooling: Option<(crate::model_config::Pooling, bool)>,
    /// The backend's `ModelTraits::ranked_output` (fastText's `probabilities`,
    /// whose labels are in its `labels` output), which `finish` refuses to classify.
    pub ranked_output: Option<String>,
}

impl Pipeline {
    /// Builds the pipeline of the version in `version_dir` from its config, checked
    /// against the loaded model's signature: a label file whose line count differs
    /// from the score output's width, or a softmax on an output that is not
    /// floating point, fails the load with a message naming the setting.
    pub fn load(
        version_dir: &Path,
        config: &ModelConfig,
        backend: &dyn Backend,
    ) -> Result<Pipeline, String> {
        let post = &config.postprocess;
        let signature = backend.signature();
        let traits = backend.traits();
        let score_output = post
            .output
            .clone()
            .or_else(|| config.probabilities_output.clone())
            .or_else(|| traits.probabilities_output.clone())
            .or_else(|| match signature.outputs.as_slice() {
                [only] => Some(only.name.clone()),
                _ => None,
            });
        let spec = score_output
            .as_ref()
            .and_then(|name| signature.outputs.iter().find(|o| o.name == *name));
        if post.is_set() || post.pooling.is_some() {
            let Some(spec) = spec else {
                return Err(match &score_output {
                    Some(name) => format!("[postprocess]: the model has no output {name:?}"),
                    None => "[postprocess]: the model has several outputs; name the score \
                             output with postprocess.output"
                        .to_string(),
                });
            };
            if post.softmax && !matches!(spec.dtype, DataType::F32 | DataType::F64) {
                return Err(format!(
                    "postprocess.softmax needs a floating point output, but {:?} is {}",
                    spec.name, spec.dtype
                ));
            }
        }
        let labels = match &post.labels {
            Some(name) => {
                let labels = load_labels(&version_dir.join(name), name)?;
                let width = spec.and_then(|s| s.shape.last().copied()).unwrap_or(-1);
                if width > 0 && width as usize != labels.len() {
                    return Err(format!(
                        "postprocess.labels: {name} has {} labels but output {:?} has {width} classes",
                        labels.len(),
                        score_output.as_deref().unwrap_or_default()
                    ));
                }
                Some(labels)
            }
            None => None,
        };
        let image = match &config.preprocess.image {
            Some(image) => Some((image_input(image, backend)?, image.clone())),
            None => None,
        };
        let tokenizer = match &config.preprocess.tokenizer {
            Some(name) => Some(tokenizer::TextTokenizer::load(
                version_dir,
                name,
                &config.preprocess,
                backend,
            )?),
            None => None,
        };
        let segmenter = segmenter::TextSegmenter::load(version_dir, &config.preprocess)?;
        // A segmenter turns text into text: on a model that takes none it would do
        // nothing but send every request through pre-processing, a setting ignored.
        let inputs = &signature.inputs;
        if segmenter.is_some()
            && !inputs.is_empty()
            && inputs.iter().all(|i| i.dtype != DataType::Bytes)
        {
            let described: Vec<String> = inputs
                .iter()
                .map(|i| format!("{:?} {}", i.name, i.dtype))
                .collect();
            return Err(format!(
                "preprocess.segmenter segments text inputs, but the model has no text \
                 input (its inputs: {})",
                described.join(", ")
            ));
        }
        if let (Some(_), Some(spec)) = (post.pooling, spec) {
            if spec.shape.len() != 3 {
                return Err(format!(
                    "postprocess.pooling needs token embeddings [n, tokens, dim], but output {:?} has shape {:?}",
                    spec.name, spec.shape
                ));
            }
        }
        Ok(Pipeline {
            score_output,
            labels,
            softmax: post.softmax,
            top_k: post.top_k,
            image,
            tokenizer,
            segmenter,
            pooling: post.pooling.map(|p| (p, post.normalize)),
            ranked_output: backend.traits().ranked_output.clone(),
        })
    }

    /// Whether requests' inputs go through [`Pipeline::prepare_inputs`] (on a
    /// blocking thread: decoding images and segmenting text is CPU work).
    pub fn transforms_inputs(&self) -> bool {
        self.image.is_some() || self.tokenizer.is_some() || self.segmenter.is_some()
    }

    /// The attention mask of prepared inputs, which mean pooling needs after the
    /// batcher (`None` without pooling, or a model without that input).
    pub fn pooling_mask(&self, inputs: &[NamedTensor]) -> Option<Tensor> {
        self.pooling?;
        inputs
            .iter()
            .find(|(n, _)| n == tokenizer::ATTENTION_MASK)
            .map(|(_, t)| t.clone())
    }

    /// Turns what the client sent into the model's tensors: texts are segmented
    /// (jieba) or tokenized; encoded images (BYTES) sent to the image input are
    /// decoded, resized and normalized. A tensor that is not BYTES passes as it is
    /// (a client may send the tensor itself).
    pub fn prepare_inputs(
        &self,
        mut inputs: Vec<NamedTensor>,
    ) -> Result<Vec<NamedTensor>, PreprocessError> {
        if let Some(segmenter) = &self.segmenter {
            // Every text input, row by row (the config allows no tokenizer or image
            // beside a segmenter).
            return inputs
                .into_iter()
                .map(|(name, tensor)| Ok((name, segmenter.segment_tensor(tensor)?)))
                .collect();
        }
        if let Some(tokenizer) = &self.tokenizer {
            // The text: a BYTES tensor under any name but the graph's own inputs
            // (a client may send input_ids itself), one text per row.
            let Some(at) = inputs.iter().position(|(n, t)| {
                t.dtype() == DataType::Bytes && !tokenizer::GRAPH_INPUTS.contains(&n.as_str())
            }) else {
                return Ok(inputs);
            };
            let (name, tensor) = inputs.remove(at);
            let per_row = tensor.shape().iter().skip(1).product::<usize>();
            let TensorData::Bytes(texts) = tensor.data() else {
                return Ok(inputs);
            };
            // TF Serving's row format names no input: errors name the text input
            // the metadata shows.
            let label = if name.is_empty() {
                TEXT_INPUT
            } else {
                name.as_str()
            };
            if per_row != 1 || tensor.shape().is_empty() {
                return Err(PreprocessError::InvalidInput(format!(
                    "input {label:?} takes one text per row (BYTES [n] or [n, 1]), not shape {:?}",
                    tensor.shape()
                )));
            }
            inputs.extend(tokenizer.encode(label, texts)?);
            return Ok(inputs);
        }
        let Some((input, config)) = &self.image else {
            return Ok(inputs);
        };
        for (name, tensor) in inputs.iter_mut() {
            let ours = name == input || name.is_empty();
            if !ours {
                continue;
            }
            let TensorData::Bytes(images) = tensor.data() else {
                continue;
            };
            let per_row = tensor.shape().iter().skip(1).product::<usize>();
            if per_row != 1 || tensor.shape().is_empty() {
                return Err(PreprocessError::InvalidInput(format!(
                    "input {input:?} takes one encoded image per row (BYTES [n] or [n, 1]), not shape {:?}",
                    tensor.shape()
                )));
            }
            *tensor = image::images_to_tensor(input, images, config)?;
            *name = input.clone();
        }
        Ok(inputs)
    }

    /// The signature a client sees once this pipeline stands in front of the model
    /// (what metadata answers, over every API): the image input takes encoded
    /// images (BYTES `[-1]`); a tokenizer's graph inputs become one text input
    /// ([`TEXT_INPUT`], BYTES `[-1]`); pooled token embeddings `[n, tokens, dim]`
    /// are answered as `[n, dim]` FP32. Softmax and labels change no tensor type:
    /// the score output still answers scores (labels come with the classification
    /// extension, TF Serving classify and the simple API).
    pub fn request_signature(
        &self,
        graph: &crate::backends::Signature,
    ) -> crate::backends::Signature {
        let text = || TensorSpec {
            name: TEXT_INPUT.to_string(),
            dtype: DataType::Bytes,
            shape: vec![-1],
        };
        let mut inputs = Vec::with_capacity(graph.inputs.len());
        for spec in &graph.inputs {
            if self.tokenizer.is_some() && tokenizer::GRAPH_INPUTS.contains(&spec.name.as_str()) {
                if spec.name == tokenizer::INPUT_IDS {
                    inputs.push(text());
                }
            } else if self
                .image
                .as_ref()
                .is_some_and(|(input, _)| *input == spec.name)
            {
                inputs.push(TensorSpec {
                    name: spec.name.clone(),
                    dtype: DataType::Bytes,
                    shape: vec![-1],
                });
            } else {
                inputs.push(spec.clone());
            }
        }
        let outputs = graph
            .outputs
            .iter()
            .map(|spec| match (self.pooling, &spec.shape[..]) {
                (Some(_), &[n, _, dim]) if Some(&spec.name) == self.score_output.as_ref() => {
                    TensorSpec {
                        name: spec.name.clone(),
                        dtype: DataType::F32,
                        shape: vec![n, dim],
                    }
                }
                _ => spec.clone(),
            })
            .collect();
        crate::backends::Signature { inputs, outputs }
    }

    /// The output whose classes have names (`[postprocess] labels`): the score
    /// output, when the config gives labels.
    pub fn labelled_output(&self) -> Option<&str> {
        self.labels.as_ref()?;
        self.score_output.as_deref()
    }

    /// The `k` best named classes of each row of the score output, best first,
    /// with their scores (the simple API's `top_classes`): `k` the request's, else
    /// `[postprocess] top_k`, else every class. `None` for a model without labels.
    pub fn top_classes(
        &self,
        outputs: &[NamedTensor],
        k: Option<usize>,
    ) -> Result<Option<Vec<TopClasses>>, PreprocessError> {
        let (Some(labels), Some(output)) = (&self.labels, self.labelled_output()) else {
            return Ok(None);
        };
        let k = k.or(self.top_k).unwrap_or(labels.len());
        if k == 0 {
            return Err(PreprocessError::InvalidInput(
                "top_k must be 1 or more".into(),
            ));
        }
        let Some((name, tensor)) = outputs.iter().find(|(n, _)| n == output) else {
            return Err(PreprocessError::Internal(format!(
                "the answer lacks the score output {output:?}"
            )));
        };
        let rows = labels::class_rows(name, tensor)?;
        Ok(Some(
            rows.into_iter()
                .map(|row| {
                    labels::top_k(row, k)
                        .into_iter()
                        .map(|(index, score)| {
                            let label = labels.get(index).cloned().unwrap_or_default();
                            (label, score)
                        })
                        .collect()
                })
                .collect(),
        ))
    }

    /// The class names of the score output, when the config gives them.
    pub fn class_labels(&self) -> Option<&[String]> {
        self.labels.as_deref()
    }

    /// Post-processes the model's answer, the same for every request: the softmax
    /// on the score output. Runs before the response cache keeps the answer.
    pub fn finish_answer(
        &self,
        outputs: &mut [NamedTensor],
        mask: Option<&Tensor>,
    ) -> Result<(), PreprocessError> {
        if let Some((pooling, normalize)) = self.pooling {
            if let Some((_, tensor)) = outputs
                .iter_mut()
                .find(|(n, _)| Some(n) == self.score_output.as_ref())
            {
                *tensor = tokenizer::pool(tensor, mask, pooling, normalize)?;
            }
        }
        if self.softmax {
            if let Some((_, tensor)) = outputs
                .iter_mut()
                .find(|(n, _)| Some(n) == self.score_output.as_ref())
            {
                softmax_last_dim(tensor)?;
            }
        }
        // A score output whose classes the model's shape leaves open ([n, -1]) is
        // checked against the labels here, answer by answer: classes without a
        // label were named "" by one API and by their number by another.
        if let (Some(labels), Some(output)) = (&self.labels, &self.score_output) {
            if let Some((name, tensor)) = outputs.iter().find(|(n, _)| n == output) {
                let width = tensor.shape().last().copied().unwrap_or(1);
                if tensor.shape().len() >= 2 && width != labels.len() {
                    return Err(PreprocessError::Internal(format!(
                        "postprocess.labels has {} labels but output {name:?} has {width} \
                         classes in this answer",
                        labels.len()
                    )));
                }
            }
        }
        Ok(())
    }

    /// What one request asked of the answer: each classification replaces its
    /// output with `[rows, k]` BYTES strings. Runs on cached answers too.
    pub fn classify_outputs(
        &self,
        outputs: &mut [NamedTensor],
        classifications: &[Classification],
    ) -> Result<(), PreprocessError> {
        for c in classifications {
            if c.k == 0 {
                return Err(PreprocessError::InvalidInput(format!(
                    "classification of output {:?} must ask for 1 or more classes",
                    c.output
                )));
            }
            let Some((name, tensor)) = outputs.iter_mut().find(|(n, _)| *n == c.output) else {
                return Err(PreprocessError::InvalidInput(format!(
                    "classification asked for output {:?}, which the answer does not hold",
                    c.output
                )));
            };
            if Some(&*name) == self.ranked_output.as_ref() {
                return Err(PreprocessError::InvalidInput(format!(
                    "output {name:?} holds the model's k best classes, best first, not one \
                     column per class, so it cannot be classified; its labels are in output \
                     \"labels\", and parameters {{\"k\": n}} asks for the n best"
                )));
            }
            let labels = if Some(&*name) == self.score_output.as_ref() {
                self.labels.as_deref()
            } else {
                None
            };
            *tensor = classification_strings(name, tensor, c.k, labels)?;
        }
        Ok(())
    }
}

/// The input `[preprocess] image` feeds (its `input`, else the model's only input),
/// checked against the model's shape: four dimensions, the fixed ones equal to the
/// configured channels, height and width in the configured layout.
fn image_input(
    image: &crate::model_config::ImageConfig,
    backend: &dyn Backend,
) -> Result<String, String> {
    let inputs = &backend.signature().inputs;
    let spec = match &image.input {
        Some(name) => inputs
            .iter()
            .find(|s| s.name == *name)
            .ok_or_else(|| format!("preprocess.image.input: the model has no input {name:?}"))?,
        None => match inputs.as_slice() {
            [only] => only,
            _ => {
                return Err(
                    "preprocess.image: the model has several inputs; name the image input with preprocess.image.input"
                        .into(),
                )
            }
        },
    };
    let c = image.channels.count() as i64;
    let (h, w) = (i64::from(image.height), i64::from(image.width));
    let want = match image.layout {
        crate::model_config::ImageLayout::Nchw => [c, h, w],
        crate::model_config::ImageLayout::Nhwc => [h, w, c],
    };
    let fits = spec.shape.len() == 4
        && spec.shape[1..]
            .iter()
            .zip(want)
            .all(|(&d, w)| d < 0 || d == w);
    if !fits {
        return Err(format!(
            "preprocess.image makes [n, {}, {}, {}] tensors, but input {:?} has shape {:?}",
            want[0], want[1], want[2], spec.name, spec.shape
        ));
    }
    Ok(spec.name.clone())
}

/// Softmax over the last dimension, in place, computed in `f64` (max subtracted
/// first, as `scipy.special.softmax`).
///
/// Infinite logits have the softmax's limits (where scipy answers NaN for the
/// whole row): the `+inf` entries share probability 1 equally and every other
/// entry is 0; a row of only `-inf` is uniform, as any row of equal logits. A row
/// with a NaN logit stays NaN throughout, as in scipy.
fn softmax_last_dim(tensor: &mut Tensor) -> Result<(), PreprocessError> {
    let empty = Tensor::new(vec![0], TensorData::F32(Vec::new()))
        .map_err(|e| PreprocessError::Internal(e.to_string()))?;
    let (shape, mut data) = std::mem::replace(tensor, empty).into_parts();
    let width = shape.last().copied().unwrap_or(1).max(1);
    fn rows<T: Copy + Into<f64>>(v: &mut [T], width: usize, back: impl Fn(f64) -> T) {
        for row in v.chunks_mut(width) {
            let max = row
                .iter()
                .map(|&x| x.into())
                .fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = if max.is_infinite() && !row.iter().any(|&x| x.into().is_nan()) {
                // +inf: only the +inf entries count; -inf: every entry is -inf.
                row.iter()
                    .map(|&x| f64::from(u8::from(x.into() == max)))
                    .collect()
            } else {
                row.iter().map(|&x| (x.into() - max).exp()).collect()
            };
            let sum: f64 = exps.iter().sum();
            for (x, e) in row.iter_mut().zip(exps) {
                *x = back(e / sum);
            }
        }
    }
    match &mut data {
        TensorData::F32(v) => rows(v, width, |x| x as f32),
        TensorData::F64(v) => rows(v, width, |x| x),
        other => {
            return Err(PreprocessError::Internal(format!(
                "softmax needs floating point scores, not {}",
                other.dtype()
            )))
        }
    }
    *tensor = Tensor::new(shape, data).map_err(|e| PreprocessError::Internal(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax(width: usize, values: Vec<f32>) -> Vec<f32> {
        let mut t =
            Tensor::new(vec![values.len() / width, width], TensorData::F32(values)).unwrap();
        softmax_last_dim(&mut t).unwrap();
        let TensorData::F32(v) = t.data() else {
            panic!()
        };
        v.clone()
    }

    /// Logits of ±infinity (a model fed [1e38; 4]) made every probability NaN.
    #[test]
    fn softmax_of_infinite_logits_is_their_limit() {
        let inf = f32::INFINITY;
        assert_eq!(softmax(4, vec![inf, 1.0, -inf, 2.0]), [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(softmax(4, vec![inf, -inf, inf, 0.0]), [0.5, 0.0, 0.5, 0.0]);
        assert_eq!(softmax(2, vec![-inf, -inf]), [0.5, 0.5]);
        assert_eq!(softmax(3, vec![-inf, 0.0, 0.0]), [0.0, 0.5, 0.5]);
        // A NaN logit leaves its row NaN (and no other row).
        let v = softmax(2, vec![f32::NAN, inf, 0.0, 0.0]);
        assert!(v[0].is_nan() && v[1].is_nan(), "{v:?}");
        assert_eq!(v[2..], [0.5, 0.5]);
        // Finite logits as before: max subtracted, so large ones do not overflow.
        let v = softmax(2, vec![3.0e38, 3.0e38]);
        assert_eq!(v, [0.5, 0.5]);
        let v = softmax(2, vec![0.0, f32::ln(3.0)]);
        assert!(
            (v[0] - 0.25).abs() < 1e-6 && (v[1] - 0.75).abs() < 1e-6,
            "{v:?}"
        );
    }
}
