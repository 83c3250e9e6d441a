//! `[postprocess]`: what becomes of a classifier's scores or a text model's token embeddings.

use serde::Deserialize;

use super::is_plain_file_name;

/// `[postprocess] pooling`: how token embeddings `[n, tokens, dim]` become one
/// vector per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean over the tokens the attention mask keeps (sentence-transformers).
    Mean,
    /// The first token's embedding.
    Cls,
}

/// The `[postprocess]` table: what becomes of a classifier's score output, per
/// version (read when a version loads; see `crate::preprocess`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostprocessConfig {
    /// Class names, one per line in score-column order, a file name in the version
    /// directory (`labels.txt`). Used by TF Serving classify, the simple API and the
    /// KServe classification extension. Default: none (classes are numbered).
    pub labels: Option<String>,
    /// Turn the scores into probabilities with a softmax over their last dimension
    /// (for a model that gives logits), in every protocol's answer. Default false.
    pub softmax: bool,
    /// Classes per answer in TF Serving classify and the simple API: the k best,
    /// best first. Default: every class, in column order. Needs `labels`.
    pub top_k: Option<usize>,
    /// The score output these apply to (and the token embeddings `pooling` reads).
    /// Default: `probabilities_output`, else the model's own probabilities output,
    /// else its only output.
    pub output: Option<String>,
    /// Pool token embeddings `[n, tokens, dim]` into `[n, dim]` (embedding models
    /// with a tokenizer). Default: none.
    pub pooling: Option<Pooling>,
    /// Divide each pooled vector by its L2 norm. Default false.
    pub normalize: bool,
}

impl PostprocessConfig {
    /// Whether anything is asked of the version.
    pub fn is_set(&self) -> bool {
        self.labels.is_some() || self.softmax || self.top_k.is_some()
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.labels {
            if !is_plain_file_name(name) {
                return Err(format!(
                    "postprocess.labels must be a file name in the version directory, not {name:?}"
                ));
            }
        }
        if self.top_k == Some(0) {
            return Err("postprocess.top_k must be 1 or more".into());
        }
        // The simple API's `top_classes` needs class names for its k best; without
        // them the APIs would disagree (classify numbered the classes, the simple
        // API refused every request).
        if self.top_k.is_some() && self.labels.is_none() {
            return Err("postprocess.top_k needs postprocess.labels (the class names)".into());
        }
        if self.normalize && self.pooling.is_none() {
            return Err("postprocess.normalize needs pooling".into());
        }
        if self.pooling.is_some() && (self.softmax || self.labels.is_some()) {
            return Err("postprocess.pooling cannot be combined with softmax or labels".into());
        }
        Ok(())
    }
}
