//! Per-model settings from `<repo>/<model>/config.toml`.
//!
//! ```toml
//! version_policy = { latest = 2 }   # or "all", or { specific = [1, 3] }
//! timeout_secs = 30                 # request deadline for this model
//! input_name = "input"              # the input the simple API feeds features into
//! prediction_output = "label"       # output the simple API calls "prediction"
//! probabilities_output = "probabilities"
//! feature_names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
//! allow_unavailable_labels = false  # let a label name a version that is not served
//! warmup = true                     # run one inference before a new version serves
//! max_request_rows = 65536          # most rows per predict request (default: the server's)
//!
//! [feature_defaults]                # values the simple API uses for missing features
//! sepal_width = 3.0
//!
//! [labels]
//! stable = 1
//! canary = 2
//!
//! [batching]                        # see `BatchingConfig` and README.md, "Batching and overload"
//! enabled = true
//! max_batch_size = 32
//! max_queue_delay_micros = 200
//! preferred_batch_sizes = [8, 32]
//! max_queue_length = 512
//! instances = 1
//! inline_max_micros = 50           # cheaper runs skip the hand-off to an inference thread
//!
//! [postprocess]                     # labels, softmax, top-k (see `crate::preprocess`)
//! labels = "labels.txt"
//! softmax = true
//! top_k = 3
//!
//! [cache]                           # the response cache (see `crate::cache`)
//! enabled = true
//! ttl_secs = 300
//! admission = "first_miss"          # or "second_miss": store an answer when its request misses again
//! ```
//! Every key is optional; an unknown key is an error, so a typo never passes silently.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

mod batching;
mod cache;
mod formats;
mod log;
mod postprocess;
mod preprocess;

pub use batching::BatchingConfig;
pub use cache::{Admission, CacheConfig};
pub use formats::{FastTextConfig, SklearnConfig, TensorflowConfig};
pub use log::LogConfig;
pub use postprocess::{Pooling, PostprocessConfig};
pub use preprocess::{
    ChannelOrder, ImageConfig, ImageDtype, ImageLayout, Padding, PreprocessConfig, ResizeMode,
    Segmenter,
};

/// Which versions of a model are served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionPolicy {
    /// The N highest versions. Default: `latest = 1`.
    Latest(usize),
    /// Every version on disk.
    All,
    /// Exactly these versions.
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> VersionPolicy {
        VersionPolicy::Latest(1)
    }
}

/// As in config.toml: `latest 1`, `all`, `specific [1, 3]`.
impl std::fmt::Display for VersionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionPolicy::Latest(n) => write!(f, "latest {n}"),
            VersionPolicy::All => write!(f, "all"),
            VersionPolicy::Specific(versions) => write!(f, "specific {versions:?}"),
        }
    }
}

impl VersionPolicy {
    /// Picks the versions to serve from those available on disk (any order).
    pub fn select(&self, on_disk: &[u64]) -> Vec<u64> {
        let mut sorted = on_disk.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        match self {
            VersionPolicy::Latest(n) => sorted.into_iter().rev().take(*n).rev().collect(),
            VersionPolicy::All => sorted,
            VersionPolicy::Specific(wanted) => {
                sorted.into_iter().filter(|v| wanted.contains(v)).collect()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Label name → version, e.g. `stable = 3`.
    #[serde(default)]
    pub labels: BTreeMap<String, u64>,
    /// Request deadline for this model, overriding the server's default.
    pub timeout_secs: Option<f64>,
    /// The input the simple API fills with features (default: the model's only input).
    pub input_name: Option<String>,
    /// The output the simple API reports as "prediction".
    pub prediction_output: Option<String>,
    /// The output the simple API reports as "probabilities".
    pub probabilities_output: Option<String>,
    /// Feature names in input column order, for named features in the simple API.
    pub feature_names: Option<Vec<String>>,
    /// Per-feature defaults for the simple API, used when a request leaves a feature
    /// out. Default: none, so every feature must be given.
    #[serde(default)]
    pub feature_defaults: BTreeMap<String, FeatureValue>,
    /// Lets a label name a version that is not AVAILABLE (requests through it then get
    /// UNAVAILABLE). Default false: such a label is refused and keeps its old version.
    #[serde(default)]
    pub allow_unavailable_labels: bool,
    /// Whether a new version runs one inference (the version's `warmup.json`, else a
    /// synthetic input) before it serves. Default true.
    pub warmup: Option<bool>,
    /// Most rows (dimension 0 of the inputs) one predict request for this model may
    /// carry, overriding the server's `max_request_rows`.
    pub max_request_rows: Option<usize>,
    /// Dynamic batching and the request queue (`[batching]`); the queue bound and
    /// instance count apply even when batching is off.
    #[serde(default)]
    pub batching: BatchingConfig,
    /// scikit-learn options (`[sklearn]`).
    #[serde(default)]
    pub sklearn: SklearnConfig,
    /// fastText options (`[fasttext]`): how many labels a prediction gives.
    #[serde(default)]
    pub fasttext: FastTextConfig,
    /// Pre-processing of text inputs (`[preprocess]`), applied per version.
    #[serde(default)]
    pub preprocess: PreprocessConfig,
    /// Post-processing of a classifier's scores (`[postprocess]`), applied per
    /// version: labels, softmax, top-k.
    #[serde(default)]
    pub postprocess: PostprocessConfig,
    /// TensorFlow SavedModel options (`[tensorflow]`).
    #[serde(default)]
    pub tensorflow: TensorflowConfig,
    /// The prediction log (`[log]`): which requests are kept in the metadata store.
    #[serde(default)]
    pub log: LogConfig,
    /// The response cache (`[cache]`); applies to the versions already serving as
    /// soon as the file changes.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Whether the file had a `[batching]` table (else the server's default
    /// batching, [`ModelDefaults::batching`], applies).
    #[serde(skip)]
    pub batching_given: bool,
    /// The tables of one model format the file has (`[fasttext]`, `[sklearn]`,
    /// `[tensorflow]`), each by the format's name as `Backend::format` gives it: a
    /// table no served version's format reads is a config error in status
    /// ([`ModelConfig::unused_format_tables`]), not a setting ignored in silence.
    #[serde(skip)]
    pub format_tables: Vec<&'static str>,
    /// The keys the file's `[tensorflow]` table gives (`tags`, `intra_op_threads`,
    /// `inter_op_threads`): the server's defaults ([`ModelDefaults::tensorflow`])
    /// fill in the others.
    #[serde(skip)]
    pub tensorflow_given: Vec<String>,
}

/// The tables of `config.toml` that only one model format reads, with that format's
/// name (`Backend::format`).
const FORMAT_TABLES: [&str; 3] = ["fasttext", "sklearn", "tensorflow"];

/// Whether `name` may name a version label: one or more ASCII letters, digits, `.`,
/// `_` and `-`, so that a REST path (`/v1/models/M/labels/L`) carries it as it is.
/// The one rule for labels, wherever they are declared (`config.toml`, the model
/// config list).
pub fn is_valid_label_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks one label as declared: its name ([`is_valid_label_name`]) and its version
/// (from 1 to `repository::MAX_VERSION`; no directory is version 0). The message
/// names the label, for the config's error.
pub fn check_label(name: &str, version: u64) -> Result<(), String> {
    if !is_valid_label_name(name) {
        return Err(format!(
            "label {name:?} is not a valid label name: use one or more ASCII letters, \
             digits, '.', '_' and '-'"
        ));
    }
    let max = crate::repository::MAX_VERSION;
    if version == 0 || version > max {
        return Err(format!(
            "label {name:?} points at version {version}; versions are from 1 to {max}"
        ));
    }
    Ok(())
}

/// Server-wide defaults for what a model's `config.toml` leaves out (TF Serving's
/// `--enable_batching` with `--batching_parameters_file`,
/// `--allow_version_labels_for_unavailable_models`, `--enable_model_warmup`,
/// `--saved_model_tags` and its session thread flags).
/// A deployed model's worker gets its main server's, as JSON
/// (`worker::Inherited::model_defaults`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelDefaults {
    /// `[batching]` for a model whose file has none.
    pub batching: Option<BatchingConfig>,
    /// `allow_unavailable_labels = true` for every model.
    pub allow_unavailable_labels: bool,
    /// `warmup` for a model whose file does not say.
    pub warmup: Option<bool>,
    /// `[tensorflow]` settings for a model whose table does not give them.
    pub tensorflow: TensorflowDefaults,
}

/// The server's `[tensorflow]` settings for SavedModels whose `config.toml` leaves
/// them out (TF Serving's `--saved_model_tags`, `--tensorflow_intra_op_parallelism`,
/// `--tensorflow_inter_op_parallelism`, `--tensorflow_session_parallelism`). `None`:
/// the table's own default.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TensorflowDefaults {
    pub tags: Option<Vec<String>>,
    pub intra_op_threads: Option<u32>,
    pub inter_op_threads: Option<u32>,
}

impl ModelDefaults {
    /// Fills in what `config` left out.
    pub fn apply(&self, config: &mut ModelConfig) {
        if let (false, Some(b)) = (config.batching_given, &self.batching) {
            config.batching = b.clone();
        }
        if self.allow_unavailable_labels {
            config.allow_unavailable_labels = true;
        }
        if config.warmup.is_none() {
            config.warmup = self.warmup;
        }
        let given = |key: &str| config.tensorflow_given.iter().any(|k| k == key);
        let tf = &self.tensorflow;
        if let (false, Some(tags)) = (given("tags"), &tf.tags) {
            config.tensorflow.tags = tags.clone();
        }
        if let (false, Some(n)) = (given("intra_op_threads"), tf.intra_op_threads) {
            config.tensorflow.intra_op_threads = n;
        }
        if let (false, Some(n)) = (given("inter_op_threads"), tf.inter_op_threads) {
            config.tensorflow.inter_op_threads = n;
        }
    }
}

/// A file name with no directory part (no `/`, `\`, `..`): what a config may
/// name inside a version directory.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// A feature value in a model config: a number, or a string for string inputs; in a
/// request also a JSON null, a missing value (which only an input the model imputes
/// takes: `ModelTraits::missing_inputs`).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum FeatureValue {
    Number(f64),
    Text(String),
    /// A JSON (or TOML) `true` or `false`, kept as one until the input's type is
    /// known: a numeric input takes it as 1 or 0 (a pandas bool column a model was
    /// trained on), a BOOL input as the boolean, and a text input refuses it (it
    /// once went in silently as "1" or "0").
    Bool(bool),
    Missing,
}

impl FeatureValue {
    /// An integer a client wrote (JSON, a form): a `Number` up to 2^53 in size,
    /// where every integer is a double, else `Text` of its digits, so an integer
    /// input takes it exactly and a text input gets the digits written (both saw it
    /// rounded, or printed as the double's shortest form: 2^63 as ...6000).
    pub fn integer(n: i128) -> FeatureValue {
        if n.unsigned_abs() <= 1 << 53 {
            FeatureValue::Number(n as f64)
        } else {
            FeatureValue::Text(n.to_string())
        }
    }
}

/// A test seam, in debug builds only (release builds have none): while a file
/// `config.toml.hold` is beside `path`, reading it waits, as a read on a hung network
/// file system would, so that a test holds a model's lock under a reload for as long
/// as it wants (`tests/management_wedge.rs`; at most two minutes). The tests once made
/// `config.toml` a FIFO for this, which is refused now ([`crate::regular_file`]).
#[cfg(debug_assertions)]
fn hold_for_tests(path: &Path) {
    let hold = path.with_extension("toml.hold");
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while hold.exists() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Why a model's `config.toml` cannot be used. The message names the file relative
/// to the model (it shows in status); `path` is the full one, for the log.
#[derive(Debug, thiserror::Error)]
pub enum ModelConfigError {
    #[error("cannot read config.toml: {reason}")]
    Read { path: String, reason: String },
    #[error("config.toml is not a valid model config: {reason}")]
    Invalid { path: String, reason: String },
}

impl ModelConfigError {
    /// The file's path on the server, for the log.
    pub fn path(&self) -> &str {
        match self {
            ModelConfigError::Read { path, .. } | ModelConfigError::Invalid { path, .. } => path,
        }
    }
}

impl ModelConfig {
    /// The settings that take effect when a version loads and change its answers to
    /// the same inputs (`[preprocess]`, `[postprocess]`, `[fasttext]`, `[sklearn]`,
    /// `[tensorflow]`), as one canonical text: their `Debug` form (field names and
    /// values; no map in them has a random order). The response cache's keys include
    /// it (`cache::key::fingerprint`), so a version loaded again with other such
    /// settings never answers from the entries the old ones made.
    pub fn answer_settings(&self) -> String {
        format!(
            "{:?}",
            (
                &self.preprocess,
                &self.postprocess,
                &self.fasttext,
                &self.sklearn,
                &self.tensorflow,
                self.postprocess_score_output(),
            )
        )
    }

    /// `probabilities_output` where post-processing reads it at load: the output
    /// a softmax, pooling, labels or top-k apply to when `[postprocess] output` is
    /// not set (`preprocess::Pipeline::load`). A change of it then changes the
    /// answers, and takes a reload.
    pub fn postprocess_score_output(&self) -> Option<&str> {
        let post = &self.postprocess;
        if (post.is_set() || post.pooling.is_some()) && post.output.is_none() {
            self.probabilities_output.as_deref()
        } else {
            None
        }
    }

    pub const FILE_NAME: &'static str = "config.toml";
    /// The largest `config.toml` read (4 MiB): a file past it is a config error.
    pub const MAX_FILE_BYTES: u64 = 4 << 20;
    /// The file's keys, in every table, which its errors may name.
    const KEYS: &'static [&'static str] = &[
        "version_policy",
        "latest",
        "all",
        "specific",
        "labels",
        "timeout_secs",
        "input_name",
        "prediction_output",
        "probabilities_output",
        "feature_names",
        "feature_defaults",
        "allow_unavailable_labels",
        "warmup",
        "max_request_rows",
        "batching",
        "sklearn",
        "fasttext",
        "preprocess",
        "postprocess",
        "tensorflow",
        "log",
        "cache",
        // [batching]
        "enabled",
        "max_batch_size",
        "max_queue_delay_micros",
        "preferred_batch_sizes",
        "max_queue_length",
        "instances",
        "inline_max_micros",
        // [cache], [log]
        "ttl_secs",
        "admission",
        "sample_rate",
        "max_rows",
        "max_age_days",
        // [sklearn], [fasttext], [tensorflow]
        "wrapper_attribute",
        "k",
        "threshold",
        "tags",
        "intra_op_threads",
        "inter_op_threads",
        // [preprocess], its image, [postprocess]
        "segmenter",
        "hmm",
        "user_dict",
        "image",
        "tokenizer",
        "max_length",
        "truncation",
        "padding",
        "width",
        "height",
        "resize",
        "channels",
        "layout",
        "scale",
        "mean",
        "std",
        "dtype",
        "max_pixels",
        "input",
        "softmax",
        "top_k",
        "output",
        "pooling",
        "normalize",
    ];
    /// The highest `max_request_rows` a config may set, so that a typo cannot lift
    /// the bound altogether.
    pub const MAX_REQUEST_ROWS: usize = 1 << 30;

    /// Reads `<model_dir>/config.toml`; a missing file means all defaults.
    pub fn load(model_dir: &Path) -> Result<ModelConfig, ModelConfigError> {
        let path = model_dir.join(Self::FILE_NAME);
        #[cfg(debug_assertions)]
        hold_for_tests(&path);
        let text = match crate::regular_file::read_to_string(&path, Self::MAX_FILE_BYTES) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ModelConfig::default()),
            Err(e) => {
                return Err(ModelConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        Self::parse(&text).map_err(|reason| ModelConfigError::Invalid {
            path: path.display().to_string(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<ModelConfig, String> {
        // Told without the file's text, as every config file's errors are
        // (`toml_error`): the message reaches inference clients and the log.
        let mut config: ModelConfig = toml::from_str(text)
            .map_err(|e| crate::toml_error::without_text(&e, text, Self::KEYS))?;
        let table = text.parse::<toml::Table>().ok();
        let given = |key: &str| table.as_ref().is_some_and(|t| t.contains_key(key));
        config.batching_given = given("batching");
        config.format_tables = FORMAT_TABLES.into_iter().filter(|t| given(t)).collect();
        config.tensorflow_given = table
            .as_ref()
            .and_then(|t| t.get("tensorflow"))
            .and_then(toml::Value::as_table)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(t) = self.timeout_secs {
            let max = crate::settings::MAX_REQUEST_TIMEOUT_SECS;
            if crate::settings::deadline(t, max).is_none() {
                return Err(format!(
                    "timeout_secs must be a number of seconds above 0 and at most {max}, not {t:?}"
                ));
            }
        }
        if let (Some(names), false) = (&self.feature_names, self.feature_defaults.is_empty()) {
            if let Some(unknown) = self.feature_defaults.keys().find(|k| !names.contains(k)) {
                return Err(format!(
                    "feature_defaults names {unknown:?}, which is not in feature_names"
                ));
            }
        }
        if let Some(names) = &self.feature_names {
            let mut seen = std::collections::BTreeSet::new();
            if let Some(twice) = names.iter().find(|n| !seen.insert(n.as_str())) {
                return Err(format!(
                    "feature_names names {twice:?} twice; each feature is one column"
                ));
            }
        }
        for (label, &version) in &self.labels {
            check_label(label, version).map_err(|e| format!("[labels]: {e}"))?;
        }
        if self.version_policy == VersionPolicy::Latest(0) {
            return Err("version_policy latest must be at least 1".into());
        }
        if let VersionPolicy::Specific(versions) = &self.version_policy {
            // As the model config file refuses it: no directory is version 0.
            let max = crate::repository::MAX_VERSION;
            if let Some(v) = versions.iter().find(|&&v| v == 0 || v > max) {
                return Err(format!(
                    "version_policy specific names version {v}; versions are from 1 to {max}"
                ));
            }
        }
        if let Some(rows) = self.max_request_rows {
            if rows == 0 || rows > Self::MAX_REQUEST_ROWS {
                return Err(format!(
                    "max_request_rows must be between 1 and {}, not {rows}",
                    Self::MAX_REQUEST_ROWS
                ));
            }
        }
        self.batching.validate()?;
        self.log.validate()?;
        self.cache.validate()?;
        self.fasttext.validate()?;
        self.preprocess.validate()?;
        self.postprocess.validate()?;
        if let Some(attr) = &self.sklearn.wrapper_attribute {
            let ok = attr
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && attr.chars().all(|c| c.is_alphanumeric() || c == '_');
            if !ok {
                return Err(format!(
                    "sklearn.wrapper_attribute must be a Python attribute name, not {attr:?}"
                ));
            }
        }
        Ok(())
    }

    /// The request deadline `timeout_secs` gives (a value no `Duration` holds, which
    /// only a stored deployment could bring past `validate`, gives none).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_secs
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    }

    pub fn warmup_enabled(&self) -> bool {
        self.warmup.unwrap_or(true)
    }

    /// Checks the tensors this config names against a model's signature: an
    /// `input_name` must be one of its inputs, a `prediction_output` and a
    /// `probabilities_output` among its outputs. These settings apply to the versions
    /// already serving when the file changes, so the manager checks them for each
    /// served version (a mismatch is the model's config error in status, and the
    /// requests that need the setting fail); an upload may check its model the same
    /// way before it is stored.
    pub fn check_names(&self, signature: &crate::backends::Signature) -> Result<(), String> {
        fn names(specs: &[crate::tensor::TensorSpec]) -> Vec<&str> {
            specs.iter().map(|s| s.name.as_str()).collect()
        }
        if let Some(input) = &self.input_name {
            if !signature.inputs.iter().any(|s| s.name == *input) {
                return Err(format!(
                    "input_name names input {input:?}, which the model does not have (its \
                     inputs: {:?})",
                    names(&signature.inputs)
                ));
            }
        }
        for (key, output) in [
            ("prediction_output", &self.prediction_output),
            ("probabilities_output", &self.probabilities_output),
        ] {
            if let Some(output) = output {
                if !signature.outputs.iter().any(|s| s.name == *output) {
                    return Err(format!(
                        "{key} names output {output:?}, which the model does not have (its \
                         outputs: {:?})",
                        names(&signature.outputs)
                    ));
                }
            }
        }
        Ok(())
    }

    /// The format tables of the file (`[fasttext]`, `[sklearn]`, `[tensorflow]`) that
    /// none of `formats` (the served versions' `Backend::format`) reads, as an error
    /// naming them; `Ok` when there is no served version to judge by.
    pub fn unused_format_tables(&self, formats: &[&str]) -> Result<(), String> {
        if formats.is_empty() {
            return Ok(());
        }
        let mut served: Vec<&str> = formats.to_vec();
        served.sort_unstable();
        served.dedup();
        let unused: Vec<String> = self
            .format_tables
            .iter()
            .filter(|t| !formats.contains(t))
            .map(|t| {
                format!(
                    "[{t}] is read only for {t} models, and the versions served are {} \
                     models: remove the table",
                    served.join(" and ")
                )
            })
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(unused.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fasttext_and_preprocess_tables() {
        let c = ModelConfig::parse(
            "[fasttext]\nk = 3\nthreshold = 0.1\n[preprocess]\nsegmenter = \"jieba\"\nhmm = false\nuser_dict = \"dict.txt\"",
        )
        .unwrap();
        assert_eq!(c.fasttext.k, 3);
        assert_eq!(c.preprocess.segmenter, Some(Segmenter::Jieba));
        assert!(!c.preprocess.hmm);
        assert_eq!(ModelConfig::parse("").unwrap().fasttext.k, 1);
        assert!(ModelConfig::parse("[fasttext]\nk = 0").is_err());
        assert!(ModelConfig::parse("[fasttext]\nk = -1").is_ok());
        assert!(ModelConfig::parse("[preprocess]\nsegmenter = \"spacy\"").is_err());
        assert!(ModelConfig::parse("[preprocess]\nuser_dict = \"d.txt\"").is_err());
        assert!(ModelConfig::parse(
            "[preprocess]\nsegmenter = \"jieba\"\nuser_dict = \"../d.txt\""
        )
        .is_err());
    }

    #[test]
    fn image_table_is_validated() {
        let c = ModelConfig::parse(
            "[preprocess]\nimage = { width = 32, height = 24, resize = \"fit_pad\", channels = \"bgr\", layout = \"nhwc\", mean = [0.5, 0.5, 0.5], std = [0.25, 0.25, 0.25] }",
        )
        .unwrap();
        let image = c.preprocess.image.unwrap();
        assert_eq!((image.width, image.height), (32, 24));
        assert_eq!(image.resize, ResizeMode::FitPad);
        assert_eq!(image.channels, ChannelOrder::Bgr);
        assert_eq!(image.layout, ImageLayout::Nhwc);
        assert_eq!(image.scale(), 1.0 / 255.0);
        assert_eq!(image.max_pixels(), ImageConfig::DEFAULT_MAX_PIXELS);
        let text_line = ModelConfig::parse(
            "[preprocess]\nimage = { width = 192, height = 48, resize = \"fit_height\" }",
        )
        .unwrap();
        assert_eq!(
            text_line.preprocess.image.unwrap().resize,
            ResizeMode::FitHeight
        );
        for bad in [
            "[preprocess]\nimage = { width = 0, height = 24 }",
            "[preprocess]\nimage = { width = 32, height = 24, mean = [0.5] }",
            "[preprocess]\nimage = { width = 32, height = 24, std = [1, 0, 1] }",
            "[preprocess]\nimage = { width = 32, height = 24, dtype = \"uint8\", scale = 1.0 }",
            "[preprocess]\nimage = { width = 32, height = 24, resize = \"squash\" }",
            "[preprocess]\nimage = { width = 32, height = 24, colour = \"rgb\" }",
            "[preprocess]\nsegmenter = \"jieba\"\nimage = { width = 32, height = 24 }",
        ] {
            assert!(ModelConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokenizer_and_pooling_are_validated() {
        let c = ModelConfig::parse(
            "[preprocess]\ntokenizer = \"tokenizer.json\"\nmax_length = 32\npadding = \"longest\"\n[postprocess]\npooling = \"mean\"\nnormalize = true",
        )
        .unwrap();
        assert_eq!(c.preprocess.max_length, 32);
        assert_eq!(c.preprocess.padding, Padding::Longest);
        assert!(c.preprocess.truncation);
        assert_eq!(c.postprocess.pooling, Some(Pooling::Mean));
        for bad in [
            "[preprocess]\ntokenizer = \"../tokenizer.json\"",
            "[preprocess]\ntokenizer = \"t.json\"\nmax_length = 0",
            "[preprocess]\ntokenizer = \"t.json\"\nsegmenter = \"jieba\"",
            "[postprocess]\nnormalize = true",
            "[postprocess]\npooling = \"max\"",
            "[postprocess]\npooling = \"cls\"\nsoftmax = true",
        ] {
            assert!(ModelConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn postprocess_table_is_validated() {
        let c = ModelConfig::parse(
            "[postprocess]\nlabels = \"labels.txt\"\nsoftmax = true\ntop_k = 2\noutput = \"logits\"",
        )
        .unwrap();
        assert_eq!(c.postprocess.labels.as_deref(), Some("labels.txt"));
        assert!(c.postprocess.softmax && c.postprocess.is_set());
        assert_eq!(c.postprocess.top_k, Some(2));
        assert!(!ModelConfig::parse("").unwrap().postprocess.is_set());
        let e = ModelConfig::parse("[postprocess]\ntop_k = 2").unwrap_err();
        assert!(
            e.contains("postprocess.top_k needs postprocess.labels"),
            "{e}"
        );
        for bad in [
            "[postprocess]\nlabels = \"../labels.txt\"",
            "[postprocess]\ntop_k = 0",
            "[postprocess]\nlabel = \"labels.txt\"",
            "[postprocess]\ntop_k = 2",
            "[postprocess]\nsoftmax = true\ntop_k = 2",
        ] {
            assert!(ModelConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tensorflow_table_gives_tags_and_threads_with_tf_servings_defaults() {
        let c = ModelConfig::parse("").unwrap();
        assert_eq!(c.tensorflow.tags, ["serve"]);
        assert_eq!(
            (c.tensorflow.intra_op_threads, c.tensorflow.inter_op_threads),
            (0, 0)
        );
        let c =
            ModelConfig::parse("[tensorflow]\ntags = [\"serve\", \"gpu\"]\nintra_op_threads = 2\n")
                .unwrap();
        assert_eq!(c.tensorflow.tags, ["serve", "gpu"]);
        assert_eq!(
            (c.tensorflow.intra_op_threads, c.tensorflow.inter_op_threads),
            (2, 0)
        );
        assert!(ModelConfig::parse("[tensorflow]\ntag = \"serve\"").is_err());
    }

    /// The server's `[tensorflow]` defaults (TF Serving's flags) fill in what a
    /// model's table leaves out, and never what it gives, 0 included.
    #[test]
    fn tensorflow_defaults_fill_in_what_the_table_leaves_out() {
        let defaults = ModelDefaults {
            tensorflow: TensorflowDefaults {
                tags: Some(vec!["serve".into(), "gpu".into()]),
                intra_op_threads: Some(3),
                inter_op_threads: Some(5),
            },
            ..ModelDefaults::default()
        };
        let mut c = ModelConfig::parse("").unwrap();
        defaults.apply(&mut c);
        assert_eq!(c.tensorflow.tags, ["serve", "gpu"]);
        assert_eq!(
            (c.tensorflow.intra_op_threads, c.tensorflow.inter_op_threads),
            (3, 5)
        );
        // A [tensorflow] table is a format table only when the file has one.
        assert!(c.format_tables.is_empty());
        let mut c =
            ModelConfig::parse("[tensorflow]\ntags = [\"serve\"]\ninter_op_threads = 0\n").unwrap();
        defaults.apply(&mut c);
        assert_eq!(c.tensorflow.tags, ["serve"]);
        assert_eq!(
            (c.tensorflow.intra_op_threads, c.tensorflow.inter_op_threads),
            (3, 0)
        );
        let mut c = ModelConfig::parse("").unwrap();
        ModelDefaults::default().apply(&mut c);
        assert_eq!(c, ModelConfig::parse("").unwrap());
    }

    #[test]
    fn sklearn_wrapper_attribute_is_a_python_name() {
        let c = ModelConfig::parse("[sklearn]\nwrapper_attribute = \"model\"").unwrap();
        assert_eq!(c.sklearn.wrapper_attribute.as_deref(), Some("model"));
        assert!(ModelConfig::parse("[sklearn]\nwrapper_attribute = \"a.b\"").is_err());
        assert!(ModelConfig::parse("[sklearn]\nwrapper_attribute = \"\"").is_err());
        assert!(ModelConfig::parse("[sklearn]\nwrapper = \"model\"").is_err());
    }

    #[test]
    fn parses_every_policy_form() {
        let all = ModelConfig::parse("version_policy = \"all\"").unwrap();
        assert_eq!(all.version_policy, VersionPolicy::All);
        let latest = ModelConfig::parse("version_policy = { latest = 2 }").unwrap();
        assert_eq!(latest.version_policy, VersionPolicy::Latest(2));
        let specific = ModelConfig::parse("version_policy = { specific = [1, 3] }").unwrap();
        assert_eq!(specific.version_policy, VersionPolicy::Specific(vec![1, 3]));
        assert_eq!(ModelConfig::parse("").unwrap(), ModelConfig::default());
    }

    #[test]
    fn refuses_typos_and_bad_values() {
        assert!(ModelConfig::parse("timeout_sec = 3").is_err());
        assert!(ModelConfig::parse("timeout_secs = -3").is_err());
        // Past a year: once a panic when the version loaded, stuck in LOADING.
        let err = ModelConfig::parse("timeout_secs = 1e300").unwrap_err();
        assert!(err.to_string().contains("at most 31536000"), "{err}");
        // Told as written, not as 300 digits.
        assert!(err.ends_with("not 1e300"), "{err}");
        // As the model config file: no directory is version 0.
        let err = ModelConfig::parse("version_policy = { specific = [0, 2] }").unwrap_err();
        assert!(err.contains("names version 0"), "{err}");
        // The file's text is never quoted (the message reaches clients and the log).
        let err = ModelConfig::parse("[labels]\ncanary = 2x_secret\n").unwrap_err();
        assert!(err.starts_with("line 2, column "), "{err}");
        assert!(!err.contains("secret"), "{err}");
        // A value's own check names its key, the file's text aside.
        let err = ModelConfig::parse("[batching]\nmax_batch_size = -3\n").unwrap_err();
        assert!(
            err.starts_with("line 2, column 18 (max_batch_size): "),
            "{err}"
        );
        assert!(ModelConfig::parse("timeout_secs = 31536000").is_ok());
        assert!(ModelConfig::parse("version_policy = { latest = 0 }").is_err());
        assert!(ModelConfig::parse("max_request_rows = 0").is_err());
        assert!(ModelConfig::parse("max_request_rows = 99999999999").is_err());
        assert_eq!(
            ModelConfig::parse("max_request_rows = 10")
                .unwrap()
                .max_request_rows,
            Some(10)
        );
        assert!(
            ModelConfig::parse("feature_names = [\"a\"]\n[feature_defaults]\nb = 1.0").is_err()
        );
    }

    #[test]
    fn parses_simple_api_defaults_and_label_rules() {
        let c = ModelConfig::parse(
            "allow_unavailable_labels = true\nwarmup = false\n[feature_defaults]\nx = 1.5\ncolor = \"red\"",
        )
        .unwrap();
        assert!(c.allow_unavailable_labels);
        assert!(!c.warmup_enabled());
        assert_eq!(c.feature_defaults["x"], FeatureValue::Number(1.5));
        assert_eq!(
            c.feature_defaults["color"],
            FeatureValue::Text("red".into())
        );
        // A TOML boolean is one (it was refused as no feature value), left to the
        // input's type: 1 or 0 to a number, itself to a BOOL input, no text.
        let c = ModelConfig::parse("[feature_defaults]\nflag = true\nn = 2").unwrap();
        assert_eq!(c.feature_defaults["flag"], FeatureValue::Bool(true));
        assert_eq!(c.feature_defaults["n"], FeatureValue::Number(2.0));
    }

    #[test]
    fn batching_table_parses_and_is_validated() {
        let c = ModelConfig::parse(
            "[batching]\nenabled = true\nmax_batch_size = 8\nmax_queue_delay_micros = 500\npreferred_batch_sizes = [4, 8]\nmax_queue_length = 16\ninstances = 2",
        )
        .unwrap();
        assert!(c.batching.enabled);
        assert_eq!(c.batching.max_batch_size, 8);
        assert_eq!(c.batching.max_queue_delay(), Duration::from_micros(500));
        assert_eq!(c.batching.preferred_batch_sizes, vec![4, 8]);
        assert_eq!(c.batching.max_queue_length, 16);
        assert_eq!(c.batching.instances, 2);
        let partial = ModelConfig::parse("[batching]\nenabled = true").unwrap();
        assert_eq!(
            partial.batching.max_queue_length, 512,
            "defaults fill the rest"
        );
        for bad in [
            "[batching]\nmax_batch_size = 0",
            "[batching]\nmax_queue_length = 0",
            "[batching]\ninstances = 0",
            "[batching]\nmax_queue_delay_micros = 99999999",
            "[batching]\nmax_batch_size = 4\npreferred_batch_sizes = [8]",
            "[batching]\nmax_batch = 4",
        ] {
            assert!(ModelConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cache_table_parses_and_is_validated() {
        let c = ModelConfig::parse("[cache]\nenabled = true\nttl_secs = 60").unwrap();
        assert!(c.cache.enabled);
        assert_eq!(c.cache.ttl(), Duration::from_secs(60));
        let d = ModelConfig::parse("[cache]\nenabled = true").unwrap();
        assert_eq!(d.cache.ttl_secs, 300, "default TTL");
        assert_eq!(d.cache.admission, Admission::FirstMiss, "default admission");
        let e = ModelConfig::parse("[cache]\nenabled = true\nadmission = \"second_miss\"").unwrap();
        assert_eq!(e.cache.admission, Admission::SecondMiss);
        assert!(
            !ModelConfig::parse("").unwrap().cache.enabled,
            "off by default"
        );
        for bad in [
            "[cache]\nttl_secs = 0",
            "[cache]\nttl_secs = 99999999999",
            "[cache]\nttl = 5",
            "[cache]\nenabled = \"yes\"",
            "[cache]\nadmission = \"third_miss\"",
        ] {
            assert!(ModelConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn feature_names_and_labels_are_validated() {
        let e = ModelConfig::parse("feature_names = [\"a\", \"a\", \"b\", \"c\"]").unwrap_err();
        assert!(e.contains("feature_names names \"a\" twice"), "{e}");
        assert!(ModelConfig::parse("feature_names = [\"a\", \"b\"]").is_ok());
        let e = ModelConfig::parse("[labels]\nstable = 0").unwrap_err();
        assert!(e.contains("label \"stable\" points at version 0"), "{e}");
        assert!(ModelConfig::parse("[labels]\nstable = 9007199254740992").is_err());
        for bad in ["\"\"", "\"a b\"", "\"a/b\"", "\"caf\u{e9}\"", "\"a:b\""] {
            let e = ModelConfig::parse(&format!("[labels]\n{bad} = 1")).unwrap_err();
            assert!(e.contains("is not a valid label name"), "{bad}: {e}");
        }
        let c = ModelConfig::parse("[labels]\nstable = 1\n\"canary-2.x_y\" = 2").unwrap();
        assert_eq!(c.labels["canary-2.x_y"], 2);
        assert!(check_label("stable", 1).is_ok());
        assert!(!is_valid_label_name(""));
    }

    #[test]
    fn tensor_names_and_format_tables_are_checked_against_the_model() {
        use crate::tensor::{DataType, TensorSpec};
        let spec = |name: &str| TensorSpec {
            name: name.into(),
            dtype: DataType::F32,
            shape: vec![-1, 4],
        };
        let signature = crate::backends::Signature {
            inputs: vec![spec("x")],
            outputs: vec![spec("label"), spec("probabilities")],
        };
        let fits = ModelConfig::parse(
            "input_name = \"x\"\nprediction_output = \"label\"\nprobabilities_output = \"probabilities\"",
        )
        .unwrap();
        assert!(fits.check_names(&signature).is_ok());
        let e = ModelConfig::parse("input_name = \"nope\"")
            .unwrap()
            .check_names(&signature)
            .unwrap_err();
        assert!(e.contains("input \"nope\"") && e.contains("[\"x\"]"), "{e}");
        for key in ["prediction_output", "probabilities_output"] {
            let e = ModelConfig::parse(&format!("{key} = \"zzz\""))
                .unwrap()
                .check_names(&signature)
                .unwrap_err();
            assert!(e.contains(&format!("{key} names output \"zzz\"")), "{e}");
        }

        let c =
            ModelConfig::parse("[fasttext]\nk = -1\n[sklearn]\nwrapper_attribute = \"m\"").unwrap();
        assert_eq!(c.format_tables, ["fasttext", "sklearn"]);
        let e = c.unused_format_tables(&["onnx"]).unwrap_err();
        assert!(e.contains("[fasttext]") && e.contains("[sklearn]"), "{e}");
        assert!(c.unused_format_tables(&["fasttext", "sklearn"]).is_ok());
        assert!(
            c.unused_format_tables(&[]).is_ok(),
            "nothing served to judge by"
        );
        assert!(ModelConfig::parse("")
            .unwrap()
            .unused_format_tables(&["onnx"])
            .is_ok());
    }

    #[test]
    fn policy_selects_versions() {
        let disk = [10, 1, 2];
        assert_eq!(VersionPolicy::Latest(1).select(&disk), vec![10]);
        assert_eq!(VersionPolicy::Latest(2).select(&disk), vec![2, 10]);
        assert_eq!(VersionPolicy::All.select(&disk), vec![1, 2, 10]);
        assert_eq!(VersionPolicy::Specific(vec![2, 7]).select(&disk), vec![2]);
    }
}
