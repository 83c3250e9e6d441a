//! Class labels (`[postprocess] labels = "labels.txt"`) and the KServe / Triton
//! classification extension: an output's `k` best scores as `"score:index:label"`
//! strings, formatted as Triton formats them (C++ stream default: 6 significant
//! digits).

use std::path::Path;

use super::PreprocessError;
use crate::tensor::{DataType, Tensor, TensorData};

/// The most bytes a labels file may hold: a typo naming a model file must not be
/// read into memory as labels.
const MAX_LABELS_BYTES: u64 = 16 << 20;

/// One row's classes: `(index, score)` in column order.
pub type ClassScores = Vec<(usize, f64)>;

/// Reads a labels file: one label per line (UTF-8; a byte order mark, a trailing
/// newline and `\r` are ignored; an empty line is an empty label, as Triton's label
/// files).
pub fn load_labels(path: &Path, name: &str) -> Result<Vec<String>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("postprocess.labels: cannot read {name}: {e}"))?
        .len();
    if size > MAX_LABELS_BYTES {
        return Err(format!(
            "postprocess.labels: {name} is {size} bytes, more than the {MAX_LABELS_BYTES} a labels file may hold"
        ));
    }
    let bytes = crate::regular_file::read(path, MAX_LABELS_BYTES)
        .map_err(|e| format!("postprocess.labels: cannot read {name}: {e}"))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("postprocess.labels: {name} is not UTF-8 text: {e}"))?;
    // A byte order mark (Windows editors write one) is no part of the first label,
    // as the jieba dictionary loader treats it too.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let labels: Vec<String> = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect();
    if text.is_empty() {
        return Err(format!("postprocess.labels: {name} is empty"));
    }
    Ok(labels)
}

/// The scores of a tensor as rows of classes: `[rows, classes…]` gives `rows`
/// rows of the product of the other dimensions; a `[rows]` tensor, one class each.
pub fn class_rows(name: &str, tensor: &Tensor) -> Result<Vec<ClassScores>, PreprocessError> {
    if tensor.dtype() == DataType::Bytes || tensor.shape().is_empty() {
        return Err(PreprocessError::InvalidInput(format!(
            "output {name:?} ({} {:?}) holds no class scores to classify",
            tensor.dtype(),
            tensor.shape()
        )));
    }
    let rows = tensor.shape()[0];
    let values: Vec<f64> = match tensor.clone().cast(DataType::F64).map(Tensor::into_parts) {
        Ok((_, TensorData::F64(v))) => v,
        _ => {
            return Err(PreprocessError::Internal(format!(
                "output {name:?} cannot be read as numbers"
            )))
        }
    };
    let width = values.len().checked_div(rows).unwrap_or(0);
    if width == 0 {
        return Ok(vec![Vec::new(); rows]);
    }
    Ok(values
        .chunks(width)
        .map(|row| row.iter().copied().enumerate().collect())
        .collect())
}

/// The `k` best classes of a row, best first; equal scores keep column order.
pub fn top_k(mut row: ClassScores, k: usize) -> ClassScores {
    row.sort_by(|a, b| b.1.total_cmp(&a.1));
    row.truncate(k);
    row
}

/// The classification extension's answer for one output: `[rows, min(k, classes)]`
/// BYTES, each `"score:index"` or `"score:index:label"`.
pub fn classification_strings(
    name: &str,
    tensor: &Tensor,
    k: usize,
    labels: Option<&[String]>,
) -> Result<Tensor, PreprocessError> {
    let rows = class_rows(name, tensor)?;
    let n = rows.len();
    let width = rows.first().map_or(0, Vec::len).min(k);
    let mut out = Vec::with_capacity(n * width);
    for row in rows {
        for (index, score) in top_k(row, k) {
            let mut s = format!("{}:{index}", format_score(score));
            if let Some(label) = labels.and_then(|l| l.get(index)) {
                s.push(':');
                s.push_str(label);
            }
            out.push(s.into_bytes());
        }
    }
    Tensor::new(vec![n, width], TensorData::Bytes(out))
        .map_err(|e| PreprocessError::Internal(e.to_string()))
}

/// A score as C++ `std::ostream << float` writes it (`%g`, 6 significant digits),
/// which is what Triton's classification strings hold.
pub fn format_score(value: f64) -> String {
    if !value.is_finite() {
        return if value.is_nan() {
            "nan".into()
        } else if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // The exponent after rounding to 6 significant digits decides the notation.
    let sci = format!("{value:.5e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let mantissa = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = (5 - exp).max(0) as usize;
    trim_zeros(&format!("{value:.decimals$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_print_as_cpp_streams_do() {
        for (v, want) in [
            (0.982_345_678, "0.982346"),
            (1.0, "1"),
            (12.5, "12.5"),
            (123_456.7, "123457"),
            (1_234_567.0, "1.23457e+06"),
            (0.0001, "0.0001"),
            (0.000_012_34, "1.234e-05"),
            (-3.25, "-3.25"),
            (0.0, "0"),
            (999_999.5, "1e+06"),
        ] {
            assert_eq!(format_score(v), want, "{v}");
        }
    }

    /// A labels file saved with a byte order mark named its first class
    /// "\u{feff}cat".
    #[test]
    fn a_byte_order_mark_is_no_part_of_the_first_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.txt");
        std::fs::write(&path, "\u{feff}cat\r\ndog\r\n").unwrap();
        assert_eq!(load_labels(&path, "labels.txt").unwrap(), ["cat", "dog"]);
        std::fs::write(&path, "\u{feff}").unwrap();
        let e = load_labels(&path, "labels.txt").unwrap_err();
        assert!(e.contains("labels.txt is empty"), "{e}");
    }

    #[test]
    fn classification_gives_the_k_best_with_labels() {
        let t = Tensor::new(
            vec![2, 3],
            TensorData::F32(vec![0.1, 0.7, 0.2, 0.5, 0.25, 0.25]),
        )
        .unwrap();
        let labels = ["a".to_string(), "b".into(), "c".into()];
        let out = classification_strings("p", &t, 2, Some(&labels)).unwrap();
        assert_eq!(out.shape(), &[2, 2]);
        let TensorData::Bytes(v) = out.data() else {
            panic!()
        };
        let v: Vec<&str> = v.iter().map(|b| std::str::from_utf8(b).unwrap()).collect();
        assert_eq!(v, ["0.7:1:b", "0.2:2:c", "0.5:0:a", "0.25:1:b"]);
        let all = classification_strings("p", &t, 10, None).unwrap();
        assert_eq!(all.shape(), &[2, 3]);
        let text = Tensor::new(vec![1], TensorData::Bytes(vec![b"x".to_vec()])).unwrap();
        assert!(classification_strings("p", &text, 1, None).is_err());
    }
}
