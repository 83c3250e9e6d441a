//! `[preprocess]`: what is done to text and image inputs before the model.

use serde::Deserialize;

use super::is_plain_file_name;

/// A text segmenter of `[preprocess] segmenter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Segmenter {
    /// jieba (jieba-rs): Chinese words joined with spaces, as Python's
    /// `" ".join(jieba.cut(text))`.
    Jieba,
}

/// The `[preprocess]` table: what is done to every text input before the model,
/// per version (read when a version loads).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessConfig {
    /// Segment every text before the model. Default: none.
    pub segmenter: Option<Segmenter>,
    /// jieba's HMM for words not in its dictionary (`jieba.cut(text, HMM=…)`).
    /// Default true, as Python jieba.
    pub hmm: bool,
    /// A jieba user dictionary (`word [freq [tag]]` per line), a file name in the
    /// version directory. Default: none.
    pub user_dict: Option<String>,
    /// Decode JPEG / PNG / WebP bytes sent to the model's image input into its
    /// tensor (`image = { width, height, … }`, see [`ImageConfig`]). Default: none.
    pub image: Option<ImageConfig>,
    /// A Hugging Face `tokenizer.json` in the version directory: text sent to the
    /// model becomes its `input_ids`, `attention_mask` and `token_type_ids` (those
    /// of them the graph has). Default: none.
    pub tokenizer: Option<String>,
    /// Tokens per text, special tokens included. Default 128.
    pub max_length: usize,
    /// Cut a longer text to `max_length` tokens; false makes it a 400. Default true.
    pub truncation: bool,
    /// `"max_length"` (default: every text padded to `max_length`, so requests
    /// batch together) or `"longest"` (to the longest text of the request).
    pub padding: Padding,
}

/// How tokenized texts are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    #[default]
    MaxLength,
    Longest,
}
/// How an image is brought to the model's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Resized to exactly `width` × `height`, whatever its aspect ratio. Default.
    #[default]
    Stretch,
    /// Scaled to fit inside, aspect ratio kept, centred on a black canvas.
    FitPad,
    /// Scaled to cover, aspect ratio kept, the centre cut out.
    Crop,
    /// Scaled to `height`, the width in proportion rounded up (`ceil(height * w / h)`,
    /// at most `width`: a wider image is squeezed to `width`), and the rest of each
    /// row, on the right, 0 in the tensor (after normalization): how PaddleOCR and
    /// rapidocr feed text-line models (the PP-OCR direction classifier).
    FitHeight,
}

/// The channels of the model's image tensor, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue. Default.
    #[default]
    Rgb,
    /// Blue, green, red (OpenCV-trained models).
    Bgr,
    /// One luma channel, PIL's `convert("L")` (ITU-R 601-2).
    Gray,
}

impl ChannelOrder {
    pub fn count(self) -> usize {
        match self {
            ChannelOrder::Gray => 1,
            ChannelOrder::Rgb | ChannelOrder::Bgr => 3,
        }
    }
}

/// Where the channel dimension sits in the image tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageLayout {
    /// `[n, channels, height, width]`. Default.
    #[default]
    Nchw,
    /// `[n, height, width, channels]`.
    Nhwc,
}

/// The element type of the image tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageDtype {
    /// `(pixel * scale - mean) / std` as 32-bit floats. Default.
    #[default]
    Fp32,
    /// The pixels as they are (0 to 255); scale, mean and std do not apply.
    Uint8,
}

/// `[preprocess] image`: how bytes sent to the image input become its tensor:
/// decoded (JPEG, PNG, WebP), converted to the channels, resized (bilinear, as
/// PIL's `Image.BILINEAR`), then `(pixel * scale - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// The model's image width in pixels.
    pub width: u32,
    /// The model's image height in pixels.
    pub height: u32,
    #[serde(default)]
    pub resize: ResizeMode,
    #[serde(default)]
    pub channels: ChannelOrder,
    #[serde(default)]
    pub layout: ImageLayout,
    /// Multiplies every pixel (0 to 255) first. Default 1/255.
    pub scale: Option<f32>,
    /// Subtracted per channel after scaling, in the tensor's channel order.
    /// Default 0.
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Divides per channel after the mean. Default 1.
    #[serde(default)]
    pub std: Vec<f32>,
    #[serde(default)]
    pub dtype: ImageDtype,
    /// The largest image (width × height, as its header declares) decoded; a larger
    /// one is refused with a 400 before it is decompressed. Default 33554432 (32 Mi).
    pub max_pixels: Option<u64>,
    /// The input the images go to. Default: the model's only input.
    pub input: Option<String>,
}

impl ImageConfig {
    pub const DEFAULT_MAX_PIXELS: u64 = 32 << 20;
    const MAX_SIDE: u32 = 16_384;

    pub fn scale(&self) -> f32 {
        self.scale.unwrap_or(1.0 / 255.0)
    }

    pub fn max_pixels(&self) -> u64 {
        self.max_pixels.unwrap_or(Self::DEFAULT_MAX_PIXELS)
    }

    fn validate(&self) -> Result<(), String> {
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if v == 0 || v > Self::MAX_SIDE {
                return Err(format!(
                    "preprocess.image.{name} must be between 1 and {}, not {v}",
                    Self::MAX_SIDE
                ));
            }
        }
        let c = self.channels.count();
        for (name, v) in [("mean", &self.mean), ("std", &self.std)] {
            if !v.is_empty() && v.len() != c {
                return Err(format!(
                    "preprocess.image.{name} must give {c} values (one per channel), not {}",
                    v.len()
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(format!("preprocess.image.{name} must be finite numbers"));
            }
        }
        if self.std.contains(&0.0) {
            return Err("preprocess.image.std must not be 0".into());
        }
        if self.scale.is_some_and(|s| !s.is_finite()) {
            return Err("preprocess.image.scale must be a finite number".into());
        }
        if self.dtype == ImageDtype::Uint8
            && (self.scale.is_some() || !self.mean.is_empty() || !self.std.is_empty())
        {
            return Err(
                "preprocess.image: dtype \"uint8\" takes the pixels as they are; scale, mean and std do not apply"
                    .into(),
            );
        }
        if self.max_pixels == Some(0) {
            return Err("preprocess.image.max_pixels must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for PreprocessConfig {
    fn default() -> PreprocessConfig {
        PreprocessConfig {
            segmenter: None,
            hmm: true,
            user_dict: None,
            image: None,
            tokenizer: None,
            max_length: 128,
            truncation: true,
            padding: Padding::MaxLength,
        }
    }
}

impl PreprocessConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.tokenizer {
            if !is_plain_file_name(name) {
                return Err(format!(
                    "preprocess.tokenizer must be a file name in the version directory, not {name:?}"
                ));
            }
            if self.segmenter.is_some() || self.image.is_some() {
                return Err(
                    "preprocess.tokenizer cannot be combined with a segmenter or an image".into(),
                );
            }
            if self.max_length == 0 || self.max_length > 65_536 {
                return Err(format!(
                    "preprocess.max_length must be between 1 and 65536, not {}",
                    self.max_length
                ));
            }
        }
        if let Some(image) = &self.image {
            if self.segmenter.is_some() {
                return Err("preprocess.image and preprocess.segmenter cannot both be set".into());
            }
            image.validate()?;
        }
        if let Some(name) = &self.user_dict {
            if self.segmenter.is_none() {
                return Err("preprocess.user_dict needs a segmenter".into());
            }
            if !is_plain_file_name(name) {
                return Err(format!(
                    "preprocess.user_dict must be a file name in the version directory, not {name:?}"
                ));
            }
        }
        Ok(())
    }
}
