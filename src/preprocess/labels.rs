//! Class labels (`[postprocess] labels = "labels.txt"`) and the KServe / Triton
//! classification extension: an output's `k` best scores as `"score:index:label"`
//! strings, formatted as Triton formats them (C++ stream default: 6 significant
//! digits).

use std::path::Path;

use super::PreprocessError;
use crate::tensor::{Tensor, TensorData};

/// The most bytes a labels file may hold: a typo naming a model file must not be
/// read into memory as labels.
const MAX_LABELS_BYTES: u64 = 16 << 20;

/// One row's classes: `(index, score)`, best first (see [`class_rows`]).
pub type ClassScores = Vec<(usize, f64)>;

/// A class score in the output's own element type: integers are ranked and printed
/// as integers (an INT64 score past 2^53 is no longer exact as an f64, so
/// 9007199254740993 tied with 9007199254740992 and both printed as `9.0072e+15`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Score {
    Float(f64),
    Signed(i64),
    Unsigned(u64),
}

impl Score {
    /// How `self` ranks against `other`, best first: the higher score first; a NaN
    /// after every number whatever its sign bit (`total_cmp` put a positive NaN above
    /// +inf and a negative one below -inf); equal scores (and `0` with `-0`) are
    /// `Equal`, so a stable sort keeps them in column order, lower index first.
    fn rank(self, other: Score) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Score::Float(a), Score::Float(b)) => match (a.is_nan(), b.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
            },
            (Score::Signed(a), Score::Signed(b)) => b.cmp(&a),
            (Score::Unsigned(a), Score::Unsigned(b)) => b.cmp(&a),
            // One tensor holds one element type: no row mixes kinds of score.
            (a, b) => rank_f64(a.as_f64(), b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Score::Float(v) => v,
            Score::Signed(v) => v as f64,
            Score::Unsigned(v) => v as f64,
        }
    }

    /// The score as Triton's classification strings print it: a float as a C++
    /// stream does (see [`format_score`]), an integer exactly.
    fn text(self) -> String {
        match self {
            Score::Float(v) => format_score(v),
            Score::Signed(v) => v.to_string(),
            Score::Unsigned(v) => v.to_string(),
        }
    }
}

/// [`Score::rank`] for scores already read as f64.
fn rank_f64(a: f64, b: f64) -> std::cmp::Ordering {
    Score::Float(a).rank(Score::Float(b))
}

/// The elements of a numeric or boolean tensor as scores in its own type; `None`
/// for BYTES.
fn scores_of(tensor: &Tensor) -> Option<Vec<Score>> {
    fn all<T: Copy>(v: &[T], f: impl Fn(T) -> Score) -> Option<Vec<Score>> {
        Some(v.iter().map(|&x| f(x)).collect())
    }
    match tensor.data() {
        TensorData::Bool(v) => all(v, |x| Score::Unsigned(u64::from(x))),
        TensorData::U8(v) => all(v, |x| Score::Unsigned(x.into())),
        TensorData::U16(v) => all(v, |x| Score::Unsigned(x.into())),
        TensorData::U32(v) => all(v, |x| Score::Unsigned(x.into())),
        TensorData::U64(v) => all(v, Score::Unsigned),
        TensorData::I8(v) => all(v, |x| Score::Signed(x.into())),
        TensorData::I16(v) => all(v, |x| Score::Signed(x.into())),
        TensorData::I32(v) => all(v, |x| Score::Signed(x.into())),
        TensorData::I64(v) => all(v, Score::Signed),
        TensorData::F16(v) => all(v, |x| Score::Float(half::f16::from_bits(x).to_f64())),
        TensorData::F32(v) => all(v, |x| Score::Float(x.into())),
        TensorData::F64(v) => all(v, Score::Float),
        TensorData::Bytes(_) => None,
    }
}

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

/// The scores of a tensor as rows of classes, each row best first (ranked in the
/// tensor's own element type, so integers past 2^53 keep their order; NaN last;
/// equal scores in column order): `[rows, classes…]` gives `rows` rows of the
/// product of the other dimensions; a `[rows]` tensor, one class each.
pub fn class_rows(name: &str, tensor: &Tensor) -> Result<Vec<ClassScores>, PreprocessError> {
    Ok(ranked_rows(name, tensor)?
        .into_iter()
        .map(|row| row.into_iter().map(|(i, s)| (i, s.as_f64())).collect())
        .collect())
}

/// [`class_rows`] with the scores in the tensor's own type.
fn ranked_rows(name: &str, tensor: &Tensor) -> Result<Vec<Vec<(usize, Score)>>, PreprocessError> {
    let no_scores = || {
        PreprocessError::InvalidInput(format!(
            "output {name:?} ({} {:?}) holds no class scores to classify",
            tensor.dtype(),
            tensor.shape()
        ))
    };
    if tensor.shape().is_empty() {
        return Err(no_scores());
    }
    let values = scores_of(tensor).ok_or_else(no_scores)?;
    let rows = tensor.shape()[0];
    let width = values.len().checked_div(rows).unwrap_or(0);
    if width == 0 {
        return Ok(vec![Vec::new(); rows]);
    }
    Ok(values.chunks(width).map(rank_row).collect())
}

/// A row's `(column, score)` pairs, best first; the sort is stable, so equal
/// scores stay in column order.
fn rank_row(row: &[Score]) -> Vec<(usize, Score)> {
    let mut row: Vec<(usize, Score)> = row.iter().copied().enumerate().collect();
    row.sort_by(|a, b| a.1.rank(b.1));
    row
}

/// The columns of each row of `width` elements of a numeric tensor, best score
/// first, ranked as [`class_rows`] ranks them (in the tensor's own element type);
/// `None` for a BYTES tensor or a width of 0.
pub fn ranked_columns(tensor: &Tensor, width: usize) -> Option<Vec<Vec<usize>>> {
    if width == 0 {
        return None;
    }
    let values = scores_of(tensor)?;
    Some(
        values
            .chunks(width)
            .map(|row| rank_row(row).into_iter().map(|(i, _)| i).collect())
            .collect(),
    )
}

/// The `k` best classes of a row, best first: the higher score first, NaN last,
/// equal scores in the order the row has them. The sort is stable, so a row from
/// [`class_rows`] (already ranked in the output's own type) keeps that order where
/// its f64 scores tie.
pub fn top_k(mut row: ClassScores, k: usize) -> ClassScores {
    row.sort_by(|a, b| rank_f64(a.1, b.1));
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
    let rows = ranked_rows(name, tensor)?;
    let n = rows.len();
    let width = rows.first().map_or(0, Vec::len).min(k);
    let mut out = Vec::with_capacity(n * width);
    for row in rows {
        for (index, score) in row.into_iter().take(k) {
            let mut s = format!("{}:{index}", score.text());
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

    fn strings(t: &Tensor) -> Vec<String> {
        let TensorData::Bytes(v) = t.data() else {
            panic!("{t:?}")
        };
        v.iter()
            .map(|b| String::from_utf8(b.clone()).unwrap())
            .collect()
    }

    /// `total_cmp` put a positive NaN above +inf (so it was the best class) and a
    /// negative NaN last: a NaN is now last whatever its sign, after -inf.
    #[test]
    fn nan_ranks_last_whatever_its_sign() {
        for nan in [f64::NAN, -f64::NAN] {
            let t = Tensor::new(
                vec![1, 4],
                TensorData::F64(vec![1.0, nan, 2.0, f64::NEG_INFINITY]),
            )
            .unwrap();
            let out = classification_strings("y", &t, 4, None).unwrap();
            assert_eq!(strings(&out), ["2:2", "1:0", "-inf:3", "nan:1"], "{nan}");
            let rows = class_rows("y", &t).unwrap();
            let order: Vec<usize> = top_k(rows[0].clone(), 4).iter().map(|c| c.0).collect();
            assert_eq!(order, [2, 0, 3, 1], "{nan}");
            let shuffled = vec![(0, nan), (1, 1.0), (2, f64::NEG_INFINITY)];
            let order: Vec<usize> = top_k(shuffled, 3).iter().map(|c| c.0).collect();
            assert_eq!(order, [1, 2, 0], "{nan}");
        }
    }

    /// Equal scores (and 0 with -0) keep column order, lower index first.
    #[test]
    fn ties_keep_column_order() {
        let t = Tensor::new(vec![1, 4], TensorData::F32(vec![-0.0, 0.5, 0.0, 0.5])).unwrap();
        let out = classification_strings("y", &t, 4, None).unwrap();
        assert_eq!(strings(&out), ["0.5:1", "0.5:3", "-0:0", "0:2"]);
    }

    /// INT64 scores were cast to f64 first: past 2^53 they tied, the first
    /// column won, and the score printed as `9.0072e+15`.
    #[test]
    fn integer_scores_rank_and_print_exactly() {
        let t = Tensor::new(
            vec![1, 3],
            TensorData::I64(vec![9_007_199_254_740_992, 9_007_199_254_740_993, 1]),
        )
        .unwrap();
        let out = classification_strings("y", &t, 1, None).unwrap();
        assert_eq!(strings(&out), ["9007199254740993:1"]);
        let rows = class_rows("y", &t).unwrap();
        let order: Vec<usize> = top_k(rows[0].clone(), 3).iter().map(|c| c.0).collect();
        assert_eq!(
            order,
            [1, 0, 2],
            "top_k keeps the exact order where f64s tie"
        );
        let t = Tensor::new(vec![1, 3], TensorData::U64(vec![u64::MAX - 1, u64::MAX, 7])).unwrap();
        let out = classification_strings("y", &t, 3, None).unwrap();
        assert_eq!(
            strings(&out),
            ["18446744073709551615:1", "18446744073709551614:0", "7:2"]
        );
        let t = Tensor::new(vec![1, 3], TensorData::I8(vec![-3, 5, -128])).unwrap();
        let out = classification_strings("y", &t, 3, None).unwrap();
        assert_eq!(strings(&out), ["5:1", "-3:0", "-128:2"]);
    }
}
