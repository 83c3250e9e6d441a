//! `[preprocess] segmenter = "jieba"`: every text sent to the model becomes its words
//! joined by spaces, as Python's `" ".join(jieba.cut(text, HMM=hmm))`, through
//! jieba-rs with its default dictionary or a user dictionary in the version
//! directory (`user_dict`). The old Chinese fastText service did exactly this before
//! `model.predict`.
//!
//! It runs in `Pipeline::prepare_inputs`, before the batcher and on a blocking
//! thread like the other pre-processing. A row that is not UTF-8 is passed on as it
//! is, so the model refuses it with its own message (400), as it does unsegmented.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use jieba_rs::Jieba;

use super::PreprocessError;
use crate::model_config::{PreprocessConfig, Segmenter};
use crate::tensor::{Tensor, TensorData};

/// The user dictionary may hold at most this many bytes (jieba's own default
/// dictionary is about 5 MB).
const MAX_USER_DICT_BYTES: u64 = 64 << 20;

/// jieba with its default dictionary, built once per process (about 0.3 s and
/// tens of MB) and shared by every version without a user dictionary.
fn default_jieba() -> Arc<Jieba> {
    static JIEBA: OnceLock<Arc<Jieba>> = OnceLock::new();
    JIEBA.get_or_init(|| Arc::new(Jieba::new())).clone()
}

/// A version's segmenter.
pub struct TextSegmenter {
    jieba: Arc<Jieba>,
    hmm: bool,
}

impl std::fmt::Debug for TextSegmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextSegmenter")
            .field("hmm", &self.hmm)
            .finish()
    }
}

impl TextSegmenter {
    /// The segmenter `[preprocess]` asks for (`None` without one), with its user
    /// dictionary read from the version directory.
    pub fn load(
        version_dir: &Path,
        config: &PreprocessConfig,
    ) -> Result<Option<TextSegmenter>, String> {
        let Some(Segmenter::Jieba) = config.segmenter else {
            return Ok(None);
        };
        let jieba = match &config.user_dict {
            None => default_jieba(),
            Some(name) => Arc::new(load_user_dict(&version_dir.join(name), name)?),
        };
        Ok(Some(TextSegmenter {
            jieba,
            hmm: config.hmm,
        }))
    }

    /// `" ".join(jieba.cut(text, HMM=hmm))`.
    pub fn segment(&self, text: &str) -> String {
        let tokens = self.jieba.cut(text, self.hmm);
        let mut out = String::with_capacity(text.len() + tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(t.word);
        }
        out
    }

    /// Every UTF-8 row of a BYTES tensor segmented; a tensor of another type, and
    /// a row that is not UTF-8, unchanged.
    pub fn segment_tensor(&self, tensor: Tensor) -> Result<Tensor, PreprocessError> {
        let (shape, data) = tensor.into_parts();
        let data = match data {
            TensorData::Bytes(rows) => TensorData::Bytes(
                rows.into_iter()
                    .map(|row| match std::str::from_utf8(&row) {
                        Ok(text) => self.segment(text).into_bytes(),
                        Err(_) => row,
                    })
                    .collect(),
            ),
            other => other,
        };
        Tensor::new(shape, data).map_err(|e| PreprocessError::Internal(e.to_string()))
    }
}

fn load_user_dict(path: &Path, name: &str) -> Result<Jieba, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("jieba user dictionary {name}: {e}"))?
        .len();
    if size > MAX_USER_DICT_BYTES {
        return Err(format!(
            "jieba user dictionary {name} is {size} bytes, over the limit of {MAX_USER_DICT_BYTES}"
        ));
    }
    let bytes = crate::regular_file::read(path, MAX_USER_DICT_BYTES)
        .map_err(|e| format!("jieba user dictionary {name}: {e}"))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("jieba user dictionary {name} is not UTF-8: {e}"))?;
    let mut jieba = Jieba::new();
    // As Python jieba's `load_userdict`: each line `word [freq] [tag]` is added in
    // turn with `add_word`, a word without a frequency getting the one
    // `suggest_freq` gives it (so that it is cut whole).
    for (i, line) in text.lines().enumerate() {
        let Some(entry) = user_dict_entry(line) else {
            continue;
        };
        let freq = match entry.freq {
            Some(f) => Some(
                f.parse::<usize>()
                    .ok()
                    .filter(|&f| f <= MAX_USER_FREQ)
                    .ok_or_else(|| {
                        format!(
                            "jieba user dictionary {name} line {}: frequency {f} is not a whole \
                         number up to {MAX_USER_FREQ}",
                            i + 1
                        )
                    })?,
            ),
            None => None,
        };
        jieba.add_word(entry.word, freq, entry.tag);
    }
    Ok(jieba)
}

/// Most a user dictionary's word frequency may be (the dictionary jieba ships tops
/// out near 10^6); their sum must fit a counter.
const MAX_USER_FREQ: usize = 1_000_000_000_000;

/// One line of a user dictionary, as Python jieba's `^(.+?)( [0-9]+)?( [a-z]+)?$`
/// reads the stripped line: the shortest word that leaves a frequency and a tag,
/// each after one space, when they are there.
struct UserDictEntry<'a> {
    word: &'a str,
    freq: Option<&'a str>,
    tag: Option<&'a str>,
}

fn user_dict_entry(line: &str) -> Option<UserDictEntry<'_>> {
    // As jieba strips each line it reads in bytes: ASCII whitespace only (an
    // U+00A0 or U+3000 stays part of the word), then a BOM, on any line.
    let line = line
        .trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'))
        .trim_start_matches('\u{feff}');
    if line.is_empty() {
        return None;
    }
    let (rest, tag) = split_last(line, |b| b.is_ascii_lowercase());
    let (word, freq) = split_last(rest, |b| b.is_ascii_digit());
    Some(UserDictEntry { word, freq, tag })
}

/// `text` without its last space-separated part when every byte of that part
/// `fits` and a non-empty head is left; else `text` whole.
fn split_last(text: &str, fits: fn(u8) -> bool) -> (&str, Option<&str>) {
    match text.rsplit_once(' ') {
        Some((head, last)) if !head.is_empty() && !last.is_empty() && last.bytes().all(fits) => {
            (head, Some(last))
        }
        _ => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fasttext")
    }

    /// jieba-rs against Python jieba 0.42.1's `" ".join(jieba.cut(text, HMM=…))`, with
    /// and without HMM and with a user dictionary (python/make_fasttext_models.py).
    #[test]
    fn jieba_segments_as_python_jieba() {
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("jieba_expected.json")).unwrap(),
        )
        .unwrap();
        let config = |hmm: bool, user_dict: Option<&str>| PreprocessConfig {
            segmenter: Some(Segmenter::Jieba),
            hmm,
            user_dict: user_dict.map(str::to_string),
            ..PreprocessConfig::default()
        };
        for (key, hmm, user_dict) in [
            ("hmm", true, None),
            ("no_hmm", false, None),
            ("with_user_dict", true, Some("user_dict.txt")),
            // Words without a frequency (jieba-rs's own reader ignored them), with a
            // tag only (refused), holding a space.
            ("with_user_dict_forms", true, Some("user_dict_forms.txt")),
        ] {
            let s = TextSegmenter::load(&fixtures(), &config(hmm, user_dict))
                .unwrap()
                .unwrap();
            for case in expected[key].as_array().unwrap() {
                let text = case["text"].as_str().unwrap();
                assert_eq!(
                    s.segment(text),
                    case["segmented"].as_str().unwrap(),
                    "{key}: {text}"
                );
            }
        }
        assert!(
            TextSegmenter::load(&fixtures(), &PreprocessConfig::default())
                .unwrap()
                .is_none()
        );
        let missing = TextSegmenter::load(&fixtures(), &config(true, Some("nope.txt")));
        assert!(missing
            .unwrap_err()
            .contains("jieba user dictionary nope.txt"));
    }

    #[test]
    fn tensors_are_segmented_row_by_row() {
        let s = TextSegmenter::load(
            &fixtures(),
            &PreprocessConfig {
                segmenter: Some(Segmenter::Jieba),
                ..PreprocessConfig::default()
            },
        )
        .unwrap()
        .unwrap();
        let t = Tensor::new(
            vec![2, 1],
            TensorData::Bytes(vec!["我爱北京".as_bytes().to_vec(), vec![0xff, 0xfe]]),
        )
        .unwrap();
        let out = s.segment_tensor(t).unwrap();
        assert_eq!(out.shape(), &[2, 1]);
        let TensorData::Bytes(rows) = out.data() else {
            panic!("not bytes")
        };
        assert_eq!(rows[0], s.segment("我爱北京").into_bytes());
        assert_eq!(rows[1], vec![0xff, 0xfe]);
        let numbers = Tensor::new(vec![1], TensorData::F32(vec![1.0])).unwrap();
        assert_eq!(s.segment_tensor(numbers.clone()).unwrap(), numbers);
    }

    /// A frequency past what the counters hold made jieba-rs panic (an upload
    /// answered 500); it is refused naming the line. Other lines are as jieba reads
    /// them.
    #[test]
    fn user_dictionary_lines_are_read_as_python_jieba_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dict.txt");
        std::fs::write(&path, "云计算 5\n\n石墨烯 18446744073709551615\n").unwrap();
        let e = load_user_dict(&path, "dict.txt").err().unwrap();
        assert!(
            e.contains("dict.txt line 3: frequency 18446744073709551615"),
            "{e}"
        );
        for (line, word, freq, tag) in [
            ("石墨烯", "石墨烯", None, None),
            ("  凱特琳 nz ", "凱特琳", None, Some("nz")),
            ("机器 学习 5", "机器 学习", Some("5"), None),
            ("x 12 ab", "x", Some("12"), Some("ab")),
            ("x ab 12", "x ab", Some("12"), None),
            ("abc", "abc", None, None),
            ("5", "5", None, None),
            ("词 5x", "词 5x", None, None),
            // Python strips bytes: ASCII whitespace, then a BOM, line by line.
            ("\u{feff}深度学习 100 n", "深度学习", Some("100"), Some("n")),
            ("石墨烯\u{a0}", "石墨烯\u{a0}", None, None),
            ("\u{feff} 机器学习 3", " 机器学习", Some("3"), None),
            ("\t石墨烯\r", "石墨烯", None, None),
        ] {
            let e = user_dict_entry(line).unwrap();
            assert_eq!((e.word, e.freq, e.tag), (word, freq, tag), "{line:?}");
        }
        assert!(user_dict_entry("   ").is_none());
    }
}
