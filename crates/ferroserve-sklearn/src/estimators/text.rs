//! Text vectorizers: `CountVectorizer`, `TfidfVectorizer`, `TfidfTransformer` and
//! `HashingVectorizer`, from one string per row to [`SparseRows`].
//!
//! The analysis follows `sklearn.feature_extraction.text` step by step: lowercase, then
//! strip accents (NFKD, then drop combining characters or everything non-ASCII), then
//! word tokens (`token_pattern.findall`) with stop words removed and word n-grams joined
//! by one space, or character n-grams (`char`: over the text with whitespace runs
//! collapsed; `char_wb`: over each space-padded word). Counting, `binary`, `sublinear_tf`,
//! idf weighting and l1/l2 normalization follow scipy's CSR kernels in index order.
//!
//! Word tokens follow `token_pattern` with Python's meaning ([`super::token_pattern`]).
//!
//! Callables (`tokenizer`, `preprocessor`, `analyzer`, `strip_accents`) are code in the
//! pickle and are refused at load, by the parameter's name.

use std::collections::{BTreeMap, HashMap, HashSet};

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use super::access::{as_i64, as_list, as_str, describe, Obj};
use super::sparse::SparseRows;
use super::stop_words::ENGLISH_STOP_WORDS;
use super::token_pattern::{TokenPattern, DEFAULT_TOKEN_PATTERN};
use super::{Column, ColumnKind, Data, Transformer};
use crate::model::{ModelError, PredictError};
use crate::value::{DType, Value};

/// The longest n-gram served. scikit-learn has no limit, but an n-gram range of
/// (1, 10^6) makes every request quadratic in its length; real models use a handful.
pub(crate) const MAX_NGRAM: usize = 64;
/// `HashingVectorizer`'s `n_features` must fit scikit-learn's int32 indices.
const MAX_HASH_FEATURES: i64 = i32::MAX as i64;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Accents {
    Ascii,
    Unicode,
}

#[derive(Debug)]
enum Kind {
    Word {
        pattern: TokenPattern,
        /// Whether `findall` returns the pattern's one capturing group.
        group: bool,
        stop_words: Option<HashSet<String>>,
    },
    Char,
    CharWb,
}

/// `build_analyzer()` of a vectorizer: one document to its terms.
#[derive(Debug)]
struct Analyzer {
    kind: Kind,
    lowercase: bool,
    accents: Option<Accents>,
    min_n: usize,
    max_n: usize,
}

/// Refuses a parameter that holds a callable (or anything but a string or None).
fn refuse_callable(obj: Obj<'_>, key: &str) -> Result<Option<&'static str>, ModelError> {
    match obj.get(key) {
        None | Some(Value::None) => Ok(None),
        Some(v) => Err(obj.unsupported(format!(
            "a custom `{key}` ({}) is code in the pickle and is never run; refit with \
             {key}=None (pre-tokenize the text, e.g. join jieba's words with spaces)",
            describe(v)
        ))),
    }
}

impl Analyzer {
    fn from_obj(obj: Obj<'_>) -> Result<Analyzer, ModelError> {
        refuse_callable(obj, "preprocessor")?;
        refuse_callable(obj, "tokenizer")?;
        if let Some(input) = obj.opt_str("input")? {
            if input != "content" {
                return Err(obj.unsupported(format!(
                    "input={input:?} (only text content is served, not file names)"
                )));
            }
        }
        let analyzer = match obj.req("analyzer")? {
            Value::Str(s) => s.as_str(),
            other => {
                return Err(obj.unsupported(format!(
                    "a custom `analyzer` ({}) is code in the pickle and is never run",
                    describe(other)
                )))
            }
        };
        let accents = match obj.get("strip_accents") {
            None | Some(Value::None) | Some(Value::Bool(false)) => None,
            Some(Value::Str(s)) if s.is_empty() => None,
            Some(Value::Str(s)) if s == "ascii" => Some(Accents::Ascii),
            Some(Value::Str(s)) if s == "unicode" => Some(Accents::Unicode),
            Some(other) => {
                return Err(obj.unsupported(format!(
                    "strip_accents={} (only 'ascii', 'unicode' or None)",
                    describe(other)
                )))
            }
        };
        let range = obj.list("ngram_range")?;
        let (min_n, max_n) = match range {
            [a, b] => (as_i64(a), as_i64(b)),
            _ => (None, None),
        };
        let (min_n, max_n) = match (min_n, max_n) {
            (Some(a), Some(b)) if 1 <= a && a <= b => (a, b),
            _ => {
                return Err(
                    obj.malformed("`ngram_range` is not (min_n, max_n) with 1 <= min_n <= max_n")
                )
            }
        };
        if max_n > MAX_NGRAM as i64 {
            return Err(obj.unsupported(format!(
                "ngram_range up to {max_n} (at most {MAX_NGRAM} is served)"
            )));
        }
        let kind = match analyzer {
            "word" => {
                let text = match obj.get("token_pattern") {
                    None | Some(Value::None) => DEFAULT_TOKEN_PATTERN,
                    Some(v) => {
                        as_str(v).ok_or_else(|| obj.malformed("`token_pattern` is not a string"))?
                    }
                };
                let pattern = TokenPattern::compile(text).map_err(|why| {
                    obj.unsupported(format!(
                        "token_pattern {text:?}: {why}; it cannot be matched exactly as \
                         Python's re matches it"
                    ))
                })?;
                let groups = pattern.groups();
                if groups > 1 {
                    return Err(obj.malformed("more than one capturing group in token_pattern"));
                }
                Kind::Word {
                    pattern,
                    group: groups == 1,
                    stop_words: stop_words(obj)?,
                }
            }
            "char" => Kind::Char,
            "char_wb" => Kind::CharWb,
            other => return Err(obj.unsupported(format!("analyzer {other:?}"))),
        };
        Ok(Analyzer {
            kind,
            lowercase: obj.bool_or("lowercase", true)?,
            accents,
            min_n: min_n as usize,
            max_n: max_n as usize,
        })
    }

    fn preprocess(&self, doc: &str) -> String {
        let doc = if self.lowercase {
            doc.to_lowercase()
        } else {
            doc.to_owned()
        };
        match self.accents {
            None => doc,
            // `strip_accents_unicode` returns pure ASCII text unchanged.
            Some(Accents::Unicode) if doc.is_ascii() => doc,
            Some(Accents::Unicode) => doc.nfkd().filter(|c| !is_combining_mark(*c)).collect(),
            Some(Accents::Ascii) => doc.nfkd().filter(char::is_ascii).collect(),
        }
    }

    /// Calls `emit` with every term of `doc`, in scikit-learn's order.
    fn analyze(&self, doc: &str, emit: &mut dyn FnMut(&str)) -> Result<(), PredictError> {
        let doc = self.preprocess(doc);
        match &self.kind {
            Kind::Word {
                pattern,
                group,
                stop_words,
            } => {
                let tokens = pattern.findall(&doc, *group)?;
                let tokens: Vec<&str> = match stop_words {
                    Some(stop) => tokens.into_iter().filter(|t| !stop.contains(*t)).collect(),
                    None => tokens,
                };
                self.word_ngrams(&tokens, emit);
            }
            Kind::Char => self.char_ngrams(&collapse_whitespace(&doc), emit),
            Kind::CharWb => self.char_wb_ngrams(&collapse_whitespace(&doc), emit),
        }
        Ok(())
    }

    /// `_word_ngrams`: unigrams first (when min_n is 1), then each n in turn.
    fn word_ngrams(&self, tokens: &[&str], emit: &mut dyn FnMut(&str)) {
        let mut min_n = self.min_n;
        if self.max_n == 1 {
            tokens.iter().for_each(|t| emit(t));
            return;
        }
        if min_n == 1 {
            tokens.iter().for_each(|t| emit(t));
            min_n += 1;
        }
        let mut joined = String::new();
        for n in min_n..=self.max_n.min(tokens.len()) {
            for window in tokens.windows(n) {
                joined.clear();
                for (k, t) in window.iter().enumerate() {
                    if k > 0 {
                        joined.push(' ');
                    }
                    joined.push_str(t);
                }
                emit(&joined);
            }
        }
    }

    /// `_char_ngrams` over code points.
    fn char_ngrams(&self, text: &str, emit: &mut dyn FnMut(&str)) {
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(text.len()))
            .collect();
        let len = bounds.len() - 1;
        let mut min_n = self.min_n;
        if min_n == 1 {
            for i in 0..len {
                emit(&text[bounds[i]..bounds[i + 1]]);
            }
            min_n += 1;
        }
        for n in min_n..=self.max_n.min(len) {
            for i in 0..=len - n {
                emit(&text[bounds[i]..bounds[i + n]]);
            }
        }
    }

    /// `_char_wb_ngrams`: n-grams inside each word padded with one space on each side;
    /// a word shorter than n counts once.
    fn char_wb_ngrams(&self, text: &str, emit: &mut dyn FnMut(&str)) {
        let mut padded = String::new();
        for word in text.split(is_py_space).filter(|w| !w.is_empty()) {
            padded.clear();
            padded.push(' ');
            padded.push_str(word);
            padded.push(' ');
            let bounds: Vec<usize> = padded
                .char_indices()
                .map(|(i, _)| i)
                .chain(std::iter::once(padded.len()))
                .collect();
            let w_len = bounds.len() - 1;
            for n in self.min_n..=self.max_n {
                let mut offset = 0;
                emit(&padded[bounds[offset]..bounds[(offset + n).min(w_len)]]);
                while offset + n < w_len {
                    offset += 1;
                    emit(&padded[bounds[offset]..bounds[offset + n]]);
                }
                if offset == 0 {
                    break;
                }
            }
        }
    }
}

/// Python's `str.isspace` (what `str.split()` splits on), which also counts the ASCII
/// separators 0x1c-0x1f.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `re.compile(r"\s\s+").sub(" ", text)`: runs of two or more whitespace characters
/// become one space (a single whitespace character is kept as it is).
fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if is_py_space(c) && chars.peek().is_some_and(|n| is_py_space(*n)) {
            while chars.peek().is_some_and(|n| is_py_space(*n)) {
                chars.next();
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// `stop_words`: None, "english", or a collection of words.
fn stop_words(obj: Obj<'_>) -> Result<Option<HashSet<String>>, ModelError> {
    match obj.get("stop_words") {
        None | Some(Value::None) => Ok(None),
        Some(Value::Str(s)) if s == "english" => Ok(Some(
            ENGLISH_STOP_WORDS.iter().map(|w| w.to_string()).collect(),
        )),
        Some(Value::Str(s)) => {
            Err(obj.unsupported(format!("stop_words {s:?} (not a built-in list)")))
        }
        Some(v) => {
            let items: &[Value] = match v {
                Value::Set(items) => items,
                other => as_list(other)
                    .ok_or_else(|| obj.malformed("`stop_words` is not a list of words"))?,
            };
            items
                .iter()
                .map(|w| as_str(w).map(str::to_owned))
                .collect::<Option<HashSet<_>>>()
                .map(Some)
                .ok_or_else(|| obj.malformed("`stop_words` holds something other than strings"))
        }
    }
}

/// The element type of the vectorizer's output (`dtype`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum OutType {
    F64,
    /// float32 arithmetic, emulated by rounding every result to f32 (exact for the
    /// +, *, / and sqrt scipy's kernels use).
    F32,
    /// Integer counts (CountVectorizer's default int64).
    Int,
}

impl OutType {
    fn from_obj(obj: Obj<'_>) -> Result<OutType, ModelError> {
        match obj.get("dtype") {
            None | Some(Value::None) => Ok(OutType::F64),
            Some(Value::DType(d)) => match d {
                DType::F64 => Ok(OutType::F64),
                DType::F32 => Ok(OutType::F32),
                DType::I64 | DType::I32 | DType::I16 | DType::U64 | DType::U32 | DType::U16 => {
                    Ok(OutType::Int)
                }
                other => Err(obj.unsupported(format!("dtype {other:?}"))),
            },
            Some(other) => Err(obj.unsupported(format!("dtype {}", describe(other)))),
        }
    }

    #[inline]
    fn round(self, v: f64) -> f64 {
        match self {
            OutType::F32 => v as f32 as f64,
            OutType::F64 | OutType::Int => v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Norm {
    L1,
    L2,
}

fn norm(obj: Obj<'_>) -> Result<Option<Norm>, ModelError> {
    match obj.get("norm") {
        None | Some(Value::None) => Ok(None),
        Some(Value::Str(s)) if s == "l2" => Ok(Some(Norm::L2)),
        Some(Value::Str(s)) if s == "l1" => Ok(Some(Norm::L1)),
        Some(other) => Err(obj.unsupported(format!("norm {}", describe(other)))),
    }
}

/// `sklearn.preprocessing.normalize` on CSR rows (`inplace_csr_row_normalize_l1/l2`):
/// the sum in index order in a C double (each float32 square rounded first, as C
/// computes `float * float`), rows summing to zero left alone, each value divided in
/// double and stored in the output type.
fn normalize(x: &mut SparseRows, norm: Norm, t: OutType) {
    for i in 0..x.n_rows {
        let row = x.row_mut(i);
        let mut sum = 0.0;
        for &v in row.iter() {
            sum += match norm {
                Norm::L1 => v.abs(),
                Norm::L2 => t.round(v * v),
            };
        }
        if sum == 0.0 {
            continue;
        }
        if norm == Norm::L2 {
            sum = sum.sqrt();
        }
        for v in row.iter_mut() {
            *v = t.round(*v / sum);
        }
    }
}

/// The fitted part of `TfidfTransformer` (also `TfidfVectorizer._tfidf`).
#[derive(Debug)]
struct Tfidf {
    idf: Option<Vec<f64>>,
    norm: Option<Norm>,
    sublinear_tf: bool,
    n_features: Option<usize>,
}

impl Tfidf {
    fn from_obj(obj: Obj<'_>) -> Result<Tfidf, ModelError> {
        let use_idf = obj.bool_or("use_idf", true)?;
        let idf = if !use_idf {
            None
        } else if obj.some("idf_").is_some() {
            Some(obj.f64s("idf_")?.0)
        } else if let Some(diag) = obj.some("_idf_diag") {
            // Before scikit-learn 1.5 the idf vector was kept as a scipy diagonal matrix.
            Some(idf_from_diag(diag)?)
        } else {
            return Err(obj.malformed("use_idf is set but there is no `idf_`"));
        };
        if let Some(idf) = &idf {
            if idf.iter().any(|v| !v.is_finite()) {
                return Err(obj.malformed("`idf_` holds NaN or infinity"));
            }
        }
        Ok(Tfidf {
            n_features: match &idf {
                Some(v) => Some(v.len()),
                None => obj.n_features_in()?,
            },
            idf,
            norm: norm(obj)?,
            sublinear_tf: obj.bool_or("sublinear_tf", false)?,
        })
    }

    /// `TfidfTransformer.transform` on counts, in place.
    fn apply(&self, x: &mut SparseRows, t: OutType) -> Result<(), PredictError> {
        if let Some(n) = self.n_features {
            if x.n_cols != n {
                return Err(PredictError::InvalidInput(format!(
                    "TfidfTransformer expects {n} features, got {}",
                    x.n_cols
                )));
            }
        }
        if self.sublinear_tf {
            for v in x.data.iter_mut() {
                *v = t.round(t.round(v.ln()) + 1.0);
            }
        }
        if let Some(idf) = &self.idf {
            for (v, &j) in x.data.iter_mut().zip(&x.indices) {
                *v = t.round(*v * t.round(idf[j]));
            }
        }
        if let Some(norm) = self.norm {
            normalize(x, norm, t);
        }
        Ok(())
    }
}

/// The diagonal of a pickled `scipy.sparse.dia_matrix` (one diagonal at offset 0).
fn idf_from_diag(value: &Value) -> Result<Vec<f64>, ModelError> {
    let obj = Obj::new(value)?;
    if matches!(obj.name, "csr_matrix" | "csr_array") {
        // scikit-learn 1.2-1.4: `sp.diags(idf, format="csr")`.
        let m = SparseRows::from_scipy(value)?;
        if m.n_rows != m.n_cols {
            return Err(obj.malformed("`_idf_diag` is not square"));
        }
        let mut diag = vec![0.0; m.n_rows];
        for (i, d) in diag.iter_mut().enumerate() {
            match m.row(i) {
                ([], []) => {}
                ([j], [v]) if *j == i => *d = *v,
                _ => return Err(obj.malformed("`_idf_diag` is not diagonal")),
            }
        }
        return Ok(diag);
    }
    if obj.name != "dia_matrix" && obj.name != "dia_array" {
        return Err(obj.unsupported("`_idf_diag` that is not a diagonal matrix"));
    }
    let (data, shape) = obj.f64s("data")?;
    let offsets = obj.f64s("offsets")?.0;
    let n = match shape.as_slice() {
        [1, n] => *n,
        _ => return Err(obj.malformed("`_idf_diag` does not hold one diagonal")),
    };
    if offsets != [0.0] {
        return Err(obj.malformed("`_idf_diag` is not the main diagonal"));
    }
    let dims: Vec<i64> = obj.list("_shape")?.iter().filter_map(as_i64).collect();
    if dims != [n as i64, n as i64] {
        return Err(obj.malformed("`_idf_diag` is not square with its diagonal's length"));
    }
    Ok(data)
}

/// One text column's documents, from the step's input.
fn documents<'d>(x: &'d Data<'_>, who: &str) -> Result<Vec<&'d str>, PredictError> {
    let Data::Table(t) = x else {
        return Err(PredictError::InvalidInput(format!(
            "{who} takes one text per row, not numbers"
        )));
    };
    match t.columns.as_slice() {
        [Column::Str(docs)] => docs
            .iter()
            .map(|d| {
                d.as_deref().ok_or_else(|| {
                    PredictError::InvalidInput(format!(
                        "{who}: np.nan is an invalid document, expected byte or unicode string"
                    ))
                })
            })
            .collect(),
        _ => Err(PredictError::InvalidInput(format!(
            "{who} takes one text column, got {} columns",
            t.columns.len()
        ))),
    }
}

/// `CountVectorizer` and `TfidfVectorizer` (a count vectorizer followed by its `_tfidf`).
#[derive(Debug)]
struct CountVectorizer {
    name: &'static str,
    analyzer: Analyzer,
    vocabulary: HashMap<String, usize>,
    binary: bool,
    out: OutType,
    tfidf: Option<Tfidf>,
}

/// `vocabulary_`: term -> column; the columns must be exactly 0..len (a permutation),
/// as scikit-learn's fitted vocabularies are.
fn vocabulary(obj: Obj<'_>) -> Result<HashMap<String, usize>, ModelError> {
    let Value::Dict(items) = obj.req("vocabulary_")? else {
        return Err(obj.malformed("`vocabulary_` is not a dict"));
    };
    let n = items.len();
    let mut seen = vec![false; n];
    let mut vocab = HashMap::with_capacity(n);
    for (k, v) in items.iter() {
        let term =
            as_str(k).ok_or_else(|| obj.malformed("a `vocabulary_` term is not a string"))?;
        let j = as_i64(v)
            .and_then(|j| usize::try_from(j).ok())
            .filter(|&j| j < n)
            .ok_or_else(|| {
                obj.malformed(format!(
                    "`vocabulary_` maps {term:?} to {} (not a column below {n})",
                    describe(v)
                ))
            })?;
        if std::mem::replace(&mut seen[j], true) {
            return Err(obj.malformed(format!("`vocabulary_` maps two terms to column {j}")));
        }
        vocab.insert(term.to_owned(), j);
    }
    if vocab.len() != n {
        return Err(obj.malformed("`vocabulary_` repeats a term"));
    }
    Ok(vocab)
}

impl Transformer for CountVectorizer {
    fn n_features_in(&self) -> Option<usize> {
        None
    }

    fn input_kind(&self, _j: usize) -> ColumnKind {
        ColumnKind::String
    }

    fn transform(&self, x: Data<'_>) -> Result<Data<'static>, PredictError> {
        let docs = documents(&x, self.name)?;
        let mut out = SparseRows::empty(self.vocabulary.len());
        let mut counts: BTreeMap<usize, f64> = BTreeMap::new();
        for doc in docs {
            counts.clear();
            self.analyzer.analyze(doc, &mut |term| {
                if let Some(&j) = self.vocabulary.get(term) {
                    *counts.entry(j).or_insert(0.0) += 1.0;
                }
            })?;
            let binary = self.binary;
            let t = self.out;
            out.push_row(
                counts
                    .iter()
                    .map(|(&j, &c)| (j, if binary { 1.0 } else { t.round(c) })),
            );
        }
        if let Some(tfidf) = &self.tfidf {
            tfidf.apply(&mut out, self.out)?;
        }
        Ok(Data::Sparse(out))
    }
}

/// `HashingVectorizer`: stateless, terms hashed with `murmurhash3_32(term, seed=0)`.
#[derive(Debug)]
struct HashingVectorizer {
    analyzer: Analyzer,
    n_features: usize,
    alternate_sign: bool,
    binary: bool,
    norm: Option<Norm>,
    out: OutType,
}

impl Transformer for HashingVectorizer {
    fn n_features_in(&self) -> Option<usize> {
        None
    }

    fn input_kind(&self, _j: usize) -> ColumnKind {
        ColumnKind::String
    }

    fn transform(&self, x: Data<'_>) -> Result<Data<'static>, PredictError> {
        let docs = documents(&x, "HashingVectorizer")?;
        let mut out = SparseRows::empty(self.n_features);
        let mut sums: BTreeMap<usize, f64> = BTreeMap::new();
        let n = self.n_features as i64;
        for doc in docs {
            sums.clear();
            self.analyzer.analyze(doc, &mut |term| {
                let h = murmurhash3_32(term.as_bytes(), 0) as i32;
                let index = if h == i32::MIN {
                    (i64::from(i32::MAX) - (n - 1)) % n
                } else {
                    i64::from(h).abs() % n
                };
                let value = if self.alternate_sign && h < 0 {
                    -1.0
                } else {
                    1.0
                };
                // Duplicates are summed and zeros kept, as scipy's `sum_duplicates`.
                *sums.entry(index as usize).or_insert(0.0) += value;
            })?;
            let (binary, t) = (self.binary, self.out);
            out.push_row(
                sums.iter()
                    .map(|(&j, &v)| (j, if binary { 1.0 } else { t.round(v) })),
            );
        }
        if let Some(norm) = self.norm {
            normalize(&mut out, norm, self.out);
        }
        Ok(Data::Sparse(out))
    }
}

/// `TfidfTransformer` as its own pipeline step (after a `CountVectorizer`).
#[derive(Debug)]
struct TfidfTransformer {
    tfidf: Tfidf,
}

impl Transformer for TfidfTransformer {
    fn n_features_in(&self) -> Option<usize> {
        self.tfidf.n_features
    }

    fn input_kind(&self, _j: usize) -> ColumnKind {
        ColumnKind::Numeric
    }

    fn transform(&self, x: Data<'_>) -> Result<Data<'static>, PredictError> {
        let mut rows = match x {
            Data::Sparse(s) => s,
            other => {
                let dense = other.into_dense("TfidfTransformer")?;
                SparseRows::from_dense(dense.view())
            }
        };
        rows.check_finite("TfidfTransformer")?;
        // scikit-learn converts integer counts to float64 here.
        self.tfidf.apply(&mut rows, OutType::F64)?;
        Ok(Data::Sparse(rows))
    }
}

pub(crate) fn build(obj: Obj<'_>) -> Result<Box<dyn Transformer>, ModelError> {
    match obj.name {
        "TfidfTransformer" => Ok(Box::new(TfidfTransformer {
            tfidf: Tfidf::from_obj(obj)?,
        })),
        "HashingVectorizer" => {
            let analyzer = Analyzer::from_obj(obj)?;
            let n_features = obj.i64("n_features")?;
            if !(1..=MAX_HASH_FEATURES).contains(&n_features) {
                return Err(obj.malformed(format!(
                    "n_features {n_features} (must be between 1 and {MAX_HASH_FEATURES})"
                )));
            }
            Ok(Box::new(HashingVectorizer {
                analyzer,
                n_features: n_features as usize,
                alternate_sign: obj.bool_or("alternate_sign", true)?,
                binary: obj.bool_or("binary", false)?,
                norm: norm(obj)?,
                out: OutType::from_obj(obj)?,
            }))
        }
        "CountVectorizer" | "TfidfVectorizer" => {
            let analyzer = Analyzer::from_obj(obj)?;
            let vocabulary = vocabulary(obj)?;
            let tfidf = if obj.name == "TfidfVectorizer" {
                let tfidf = Tfidf::from_obj(obj.obj("_tfidf")?)?;
                if let Some(n) = tfidf.n_features {
                    if n != vocabulary.len() {
                        return Err(obj.malformed(format!(
                            "`idf_` has {n} values for a vocabulary of {} terms",
                            vocabulary.len()
                        )));
                    }
                }
                Some(tfidf)
            } else {
                None
            };
            let out = OutType::from_obj(obj)?;
            if tfidf.is_some() && out == OutType::Int {
                return Err(obj.unsupported("an integer dtype for TF-IDF"));
            }
            Ok(Box::new(CountVectorizer {
                name: if tfidf.is_some() {
                    "TfidfVectorizer"
                } else {
                    "CountVectorizer"
                },
                analyzer,
                vocabulary,
                binary: obj.bool_or("binary", false)?,
                out,
                tfidf,
            }))
        }
        other => Err(obj.unsupported(format!("unknown vectorizer {other}"))),
    }
}

/// Whether a class is one of the text vectorizers (a model whose first step is one takes
/// one string per row).
pub(crate) fn is_vectorizer(name: &str) -> bool {
    matches!(
        name,
        "CountVectorizer" | "TfidfVectorizer" | "HashingVectorizer"
    )
}

/// MurmurHash3_x86_32, as `sklearn.utils.murmurhash3_32(key, seed, positive=False)`
/// computes it over a string's UTF-8 bytes (read little-endian).
pub fn murmurhash3_32(key: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h1 = seed;
    let mut blocks = key.chunks_exact(4);
    for block in &mut blocks {
        let mut k1 = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k1 = k1.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    let mut k1: u32 = 0;
    if tail.len() >= 3 {
        k1 ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        k1 ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        k1 ^= u32::from(tail[0]);
        k1 = k1.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h1 ^= k1;
    }
    h1 ^= key.len() as u32;
    h1 ^= h1 >> 16;
    h1 = h1.wrapping_mul(0x85eb_ca6b);
    h1 ^= h1 >> 13;
    h1 = h1.wrapping_mul(0xc2b2_ae35);
    h1 ^= h1 >> 16;
    h1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmurhash_matches_sklearn() {
        // sklearn.utils.murmurhash3_32(s, seed=0) (signed) for these strings.
        for (s, want) in MURMUR_CASES {
            assert_eq!(murmurhash3_32(s.as_bytes(), 0) as i32, *want, "{s:?}");
        }
    }

    /// Made with `[(s, murmurhash3_32(s, seed=0)) for s in ...]` (scikit-learn 1.9.1).
    const MURMUR_CASES: &[(&str, i32)] = &[
        ("", 0),
        ("a", 1009084850),
        ("ab", -1681926305),
        ("abc", -1277324294),
        ("abcd", 1139631978),
        ("hello world", 1586663183),
        ("the cat", 1192667458),
        ("中文 分词", 730919536),
        ("café", 605818632),
        ("naïve text", 509010566),
        ("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", -1005983109),
    ];

    #[test]
    fn collapse_whitespace_keeps_single_spaces() {
        assert_eq!(collapse_whitespace("a  b\tc \n d"), "a b\tc d");
    }
}
