//! A safe reader of fastText supervised models (`.bin`, and `.ftz` quantized by
//! `fasttext quantize`), with predictions equal to the fasttext package's.
//!
//! The format and the arithmetic follow facebookresearch/fastText's C++ sources
//! (`fasttext.cc`, `args.cc`, `dictionary.cc`, `densematrix.cc`, `quantmatrix.cc`,
//! `productquantizer.cc`, `loss.cc`, `model.cc`): the same tokenization, FNV-1a
//! hashing of sign-extended bytes, character and word n-grams hashed into buckets,
//! the pruned dictionary index of quantized models, `f32` sums in the same order,
//! the lookup-table sigmoid of one-vs-all and negative sampling, the Huffman tree
//! of hierarchical softmax, `log(p + 1e-5)` scores and the heap that keeps the k
//! best (so ties break the same way).
//!
//! Safety: no `unsafe`; the whole file is in memory and every size the file
//! declares is checked against the bytes left before anything is allocated for
//! it, so a hostile or truncated file costs at most about its own size
//! (bounded by [`Limits::max_file_bytes`]) and is refused with a message that
//! names the field. Indices the prediction uses (words, n-gram buckets, the pruned
//! index, labels, tree nodes) are checked against the matrices at load, so
//! prediction cannot index out of bounds.
#![forbid(unsafe_code)]

mod heap;
mod matrix;
mod reader;

use std::collections::HashMap;
use std::path::Path;

use matrix::Matrix;
use reader::Reader;

/// `FASTTEXT_FILEFORMAT_MAGIC_INT32`.
pub const MAGIC: i32 = 793_712_314;
/// The newest format version fastText writes (and the newest read here).
pub const MAX_VERSION: i32 = 12;
const EOS: &[u8] = b"</s>";
const BOW: u8 = b'<';
const EOW: u8 = b'>';
const LABEL_PREFIX: &[u8] = b"__label__";
const SIGMOID_TABLE_SIZE: usize = 512;
const MAX_SIGMOID: f32 = 8.0;
const HS_UNBUILT_COUNT: i64 = 1_000_000_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a fastText model: the file does not start with fastText's magic number")]
    NotFastText,
    #[error("fastText format version {0} is not supported (versions 11 and 12 are)")]
    Version(i32),
    #[error("truncated fastText model: the file ends in {what} (at byte {offset})")]
    Truncated { what: String, offset: u64 },
    #[error("invalid fastText model: {0}")]
    Invalid(String),
    #[error("fastText model of {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("cannot read the model file: {0}")]
    Io(#[from] std::io::Error),
    /// A request the model cannot answer (bad `k`, a newline in the text).
    #[error("{0}")]
    InvalidRequest(String),
    /// The model's weights gave NaN (fastText throws "Encountered NaN.").
    #[error("the model's weights give NaN")]
    NaN,
}

/// What loading may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest file read (default 4 GiB); everything allocated is bounded by it.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_file_bytes: 4 << 30,
        }
    }
}

/// The training loss, which decides how outputs become probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    HierarchicalSoftmax,
    NegativeSampling,
    Softmax,
    OneVsAll,
}

impl Loss {
    pub fn name(self) -> &'static str {
        match self {
            Loss::HierarchicalSoftmax => "hs",
            Loss::NegativeSampling => "ns",
            Loss::Softmax => "softmax",
            Loss::OneVsAll => "ova",
        }
    }
}

/// The saved training arguments (`args.cc`), those prediction uses and the rest.
#[derive(Debug, Clone)]
pub struct Args {
    pub dim: i32,
    pub ws: i32,
    pub epoch: i32,
    pub min_count: i32,
    pub neg: i32,
    pub word_ngrams: i32,
    pub loss: Loss,
    pub model: i32,
    pub bucket: i32,
    pub minn: i32,
    pub maxn: i32,
    pub lr_update_rate: i32,
    pub t: f64,
}

/// One prediction: a label and its probability as the fasttext package gives it
/// (`exp(log(p + 1e-5))`, rounded to `f32`).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label: String,
    pub probability: f32,
}

struct Dictionary {
    /// Every entry's bytes, words first then labels.
    words: Vec<Vec<u8>>,
    counts: Vec<i64>,
    ids: HashMap<Vec<u8>, i32>,
    nwords: i32,
    nlabels: i32,
    /// `-1`: not pruned; otherwise bucket → row after the words.
    pruneidx_size: i64,
    pruneidx: HashMap<i32, i32>,
}

#[derive(Clone, Copy)]
struct HsNode {
    left: i32,
    right: i32,
    count: i64,
}

/// A loaded supervised fastText model.
pub struct FastText {
    args: Args,
    version: i32,
    dict: Dictionary,
    input: Matrix,
    output: Matrix,
    labels: Vec<String>,
    sigmoid_table: Vec<f32>,
    /// The Huffman tree over label counts (hierarchical softmax only).
    tree: Vec<HsNode>,
}

impl std::fmt::Debug for FastText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastText")
            .field("version", &self.version)
            .field("args", &self.args)
            .field("nwords", &self.dict.nwords)
            .field("nlabels", &self.dict.nlabels)
            .field("quantized", &self.is_quantized())
            .finish()
    }
}

/// fastText's `Dictionary::hash`: FNV-1a over bytes sign-extended to 32 bits.
pub fn hash(bytes: &[u8]) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for &b in bytes {
        h ^= b as i8 as i32 as u32;
        h = h.wrapping_mul(16_777_619);
    }
    h
}

fn std_log(x: f32) -> f32 {
    (x as f64 + 1e-5).ln() as f32
}

impl FastText {
    /// Reads a model file, refusing one over `limits.max_file_bytes` before reading it.
    pub fn load(path: &Path, limits: &Limits) -> Result<FastText, Error> {
        let size = std::fs::metadata(path)?.len();
        if size > limits.max_file_bytes {
            return Err(Error::TooLarge {
                size,
                limit: limits.max_file_bytes,
            });
        }
        let bytes = std::fs::read(path)?;
        FastText::from_bytes(&bytes, limits)
    }

    /// Reads a model from its bytes.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<FastText, Error> {
        if bytes.len() as u64 > limits.max_file_bytes {
            return Err(Error::TooLarge {
                size: bytes.len() as u64,
                limit: limits.max_file_bytes,
            });
        }
        let mut r = Reader::new(bytes);
        if r.remaining() < 4 || r.i32("magic")? != MAGIC {
            return Err(Error::NotFastText);
        }
        let version = r.i32("version")?;
        if !(11..=MAX_VERSION).contains(&version) {
            return Err(Error::Version(version));
        }
        let mut args = read_args(&mut r)?;
        if args.model != 3 {
            return Err(Error::Invalid(format!(
                "model type {} is not supervised (only supervised classifiers are served)",
                args.model
            )));
        }
        // fasttext.cc: old supervised models do not use character n-grams.
        if version == 11 {
            args.maxn = 0;
        }
        let dict = read_dictionary(&mut r)?;
        let quant_input = r.bool("quant_input")?;
        let input = if quant_input {
            Matrix::read_quantized(&mut r, "input matrix")?
        } else {
            Matrix::read_dense(&mut r, "input matrix")?
        };
        if !quant_input && dict.pruneidx_size >= 0 {
            return Err(Error::Invalid(
                "a pruned dictionary with a dense input matrix (fastText refuses it too: issue #332)"
                    .into(),
            ));
        }
        let qout = r.bool("qout")?;
        let output = if quant_input && qout {
            Matrix::read_quantized(&mut r, "output matrix")?
        } else {
            Matrix::read_dense(&mut r, "output matrix")?
        };
        if r.remaining() != 0 {
            return Err(Error::Invalid(format!(
                "{} bytes after the output matrix",
                r.remaining()
            )));
        }
        let model = FastText::build(args, version, dict, input, output)?;
        Ok(model)
    }

    /// Checks every index prediction can use against the matrices.
    fn build(
        args: Args,
        version: i32,
        dict: Dictionary,
        input: Matrix,
        output: Matrix,
    ) -> Result<FastText, Error> {
        let dim = args.dim;
        if dim <= 0 || input.cols() != dim as usize || output.cols() != dim as usize {
            return Err(Error::Invalid(format!(
                "dimension {dim} but an input matrix of {} columns and an output matrix of {}",
                input.cols(),
                output.cols()
            )));
        }
        if dict.nlabels < 1 {
            return Err(Error::Invalid("the dictionary has no labels".into()));
        }
        if output.rows() != dict.nlabels as usize {
            return Err(Error::Invalid(format!(
                "{} labels but {} output rows",
                dict.nlabels,
                output.rows()
            )));
        }
        let hashing = args.maxn > 0 || args.word_ngrams > 1;
        if hashing && args.bucket <= 0 {
            return Err(Error::Invalid(format!(
                "n-grams (maxn {}, wordNgrams {}) with {} buckets",
                args.maxn, args.word_ngrams, args.bucket
            )));
        }
        let nwords = dict.nwords as usize;
        let needed_rows = if !hashing || dict.pruneidx_size == 0 {
            nwords
        } else if dict.pruneidx_size > 0 {
            let max = dict.pruneidx.values().copied().max().unwrap_or(-1);
            nwords + (max + 1) as usize
        } else {
            nwords + args.bucket as usize
        };
        if input.rows() < needed_rows {
            return Err(Error::Invalid(format!(
                "the input matrix has {} rows; the dictionary and buckets need {needed_rows}",
                input.rows()
            )));
        }
        let labels = dict.words[nwords..]
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        let mut table = Vec::with_capacity(SIGMOID_TABLE_SIZE + 1);
        for i in 0..=SIGMOID_TABLE_SIZE {
            let x = ((i * 2) as f32 * MAX_SIGMOID) / SIGMOID_TABLE_SIZE as f32 - MAX_SIGMOID;
            table.push((1.0 / (1.0 + ((-x).exp() as f64))) as f32);
        }
        let tree = if args.loss == Loss::HierarchicalSoftmax {
            // buildTree gives its internal nodes a count of 1e15 before they are
            // built; a label counted as much would make it pick a node not built yet.
            if let Some(c) = dict.counts[nwords..]
                .iter()
                .find(|&&c| c >= HS_UNBUILT_COUNT)
            {
                return Err(Error::Invalid(format!(
                    "a label count of {c} (hierarchical softmax needs counts under 10^15)"
                )));
            }
            build_tree(&dict.counts[nwords..])
        } else {
            Vec::new()
        };
        Ok(FastText {
            args,
            version,
            dict,
            input,
            output,
            labels,
            sigmoid_table: table,
            tree,
        })
    }

    pub fn args(&self) -> &Args {
        &self.args
    }
    pub fn version(&self) -> i32 {
        self.version
    }
    pub fn dim(&self) -> usize {
        self.args.dim as usize
    }
    /// Labels in the dictionary's order (with their `__label__` prefix).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }
    pub fn is_quantized(&self) -> bool {
        matches!(self.input, Matrix::Quantized { .. })
    }

    /// Input rows of one line (`Dictionary::getLine` without sampling), as the
    /// Python package reads `text + "\n"`.
    fn line_ids(&self, text: &str) -> Vec<i32> {
        let mut ids = Vec::new();
        let mut word_hashes: Vec<i32> = Vec::new();
        let tokens = text
            .as_bytes()
            .split(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c | 0))
            .filter(|t| !t.is_empty())
            .chain(std::iter::once(EOS));
        for token in tokens {
            let h = hash(token);
            let wid = self.dict.ids.get(token).copied().unwrap_or(-1);
            let is_label = if wid < 0 {
                token.starts_with(LABEL_PREFIX)
            } else {
                wid >= self.dict.nwords
            };
            if !is_label {
                self.add_subwords(&mut ids, token, wid);
                word_hashes.push(h as i32);
            }
            if token == EOS {
                break;
            }
        }
        self.add_word_ngrams(&mut ids, &word_hashes);
        ids
    }

    fn add_subwords(&self, ids: &mut Vec<i32>, token: &[u8], wid: i32) {
        if wid < 0 {
            if token != EOS {
                self.compute_subwords(token, ids);
            }
        } else {
            ids.push(wid);
            if self.args.maxn > 0 && token != EOS {
                self.compute_subwords(token, ids);
            }
        }
    }

    /// `Dictionary::computeSubwords` over `<token>`: character n-grams of `minn`
    /// to `maxn` UTF-8 characters.
    fn compute_subwords(&self, token: &[u8], ids: &mut Vec<i32>) {
        if self.args.maxn <= 0 {
            return;
        }
        let mut word = Vec::with_capacity(token.len() + 2);
        word.push(BOW);
        word.extend_from_slice(token);
        word.push(EOW);
        let maxn = self.args.maxn as usize;
        let minn = self.args.minn.max(0) as usize;
        for i in 0..word.len() {
            if word[i] & 0xC0 == 0x80 {
                continue;
            }
            let mut j = i;
            let mut n = 1;
            while j < word.len() && n <= maxn {
                j += 1;
                while j < word.len() && word[j] & 0xC0 == 0x80 {
                    j += 1;
                }
                if n >= minn && !(n == 1 && (i == 0 || j == word.len())) {
                    let h = hash(&word[i..j]) % self.args.bucket as u32;
                    self.push_hash(ids, h as i32);
                }
                n += 1;
            }
        }
    }

    fn add_word_ngrams(&self, ids: &mut Vec<i32>, hashes: &[i32]) {
        let n = self.args.word_ngrams.max(0) as usize;
        for i in 0..hashes.len() {
            let mut h = hashes[i] as i64 as u64;
            for &next in hashes.iter().take(i + n).skip(i + 1) {
                h = h.wrapping_mul(116_049_371).wrapping_add(next as i64 as u64);
                self.push_hash(ids, (h % self.args.bucket as u64) as i32);
            }
        }
    }

    fn push_hash(&self, ids: &mut Vec<i32>, id: i32) {
        if self.dict.pruneidx_size == 0 || id < 0 {
            return;
        }
        let id = if self.dict.pruneidx_size > 0 {
            match self.dict.pruneidx.get(&id) {
                Some(&mapped) => mapped,
                None => return,
            }
        } else {
            id
        };
        ids.push(self.dict.nwords + id);
    }

    /// The average of the line's input rows (`Model::computeHidden`), or `None`
    /// for a line with no known word, n-gram or end-of-sentence.
    fn hidden(&self, text: &str) -> Option<Vec<f32>> {
        let ids = self.line_ids(text);
        if ids.is_empty() {
            return None;
        }
        let mut hidden = vec![0.0f32; self.dim()];
        for &id in &ids {
            self.input.add_row_to(&mut hidden, id as usize);
        }
        let scale = (1.0 / ids.len() as f64) as f32;
        for v in &mut hidden {
            *v *= scale;
        }
        Some(hidden)
    }

    fn check_line(text: &str) -> Result<(), Error> {
        if text.contains('\n') {
            return Err(Error::InvalidRequest(
                "a text must be one line: it contains a newline".into(),
            ));
        }
        Ok(())
    }

    /// The sentence vector the fasttext package's `get_sentence_vector` gives
    /// (for a supervised model: the average of the line's input rows).
    pub fn sentence_vector(&self, text: &str) -> Result<Vec<f32>, Error> {
        FastText::check_line(text)?;
        Ok(self.hidden(text).unwrap_or_else(|| vec![0.0; self.dim()]))
    }

    /// The `k` most probable labels with a probability of at least `threshold`,
    /// most probable first, as `model.predict(text, k, threshold)` gives them;
    /// `k = -1` asks for every label.
    pub fn predict(&self, text: &str, k: i32, threshold: f32) -> Result<Vec<Prediction>, Error> {
        FastText::check_line(text)?;
        let k = match k {
            -1 => self.labels.len(),
            k if k >= 1 => k as usize,
            _ => {
                return Err(Error::InvalidRequest(format!(
                    "k must be 1 or more, or -1 for every label; got {k}"
                )))
            }
        };
        let Some(hidden) = self.hidden(text) else {
            return Ok(Vec::new());
        };
        let mut heap: Vec<heap::Pred> = Vec::with_capacity(k.min(self.labels.len()) + 1);
        match self.args.loss {
            Loss::HierarchicalSoftmax => self.hs_predict(k, threshold, &hidden, &mut heap)?,
            loss => {
                let output = self.compute_output(loss, &hidden)?;
                for (i, &p) in output.iter().enumerate() {
                    if p < threshold {
                        continue;
                    }
                    let score = std_log(p);
                    if heap.len() == k && score < heap[0].0 {
                        continue;
                    }
                    heap.push((score, i as i32));
                    heap::push_heap(&mut heap);
                    if heap.len() > k {
                        heap::pop_heap(&mut heap);
                        heap.pop();
                    }
                }
            }
        }
        heap::sort_heap(&mut heap);
        Ok(heap
            .into_iter()
            .map(|(score, i)| Prediction {
                label: self.labels[i as usize].clone(),
                probability: score.exp(),
            })
            .collect())
    }

    fn compute_output(&self, loss: Loss, hidden: &[f32]) -> Result<Vec<f32>, Error> {
        let mut output = Vec::with_capacity(self.labels.len());
        for i in 0..self.labels.len() {
            output.push(self.output.dot_row(hidden, i).ok_or(Error::NaN)?);
        }
        match loss {
            Loss::Softmax => {
                let max = output.iter().copied().fold(output[0], f32::max);
                let mut z = 0.0f32;
                for v in &mut output {
                    *v = (*v - max).exp();
                    z += *v;
                }
                for v in &mut output {
                    *v /= z;
                }
            }
            Loss::OneVsAll | Loss::NegativeSampling => {
                for v in &mut output {
                    *v = self.sigmoid(*v);
                }
            }
            Loss::HierarchicalSoftmax => unreachable!("hierarchical softmax walks its tree"),
        }
        Ok(output)
    }

    /// `Loss::sigmoid`: the 512-entry lookup table.
    fn sigmoid(&self, x: f32) -> f32 {
        if x < -MAX_SIGMOID {
            0.0
        } else if x > MAX_SIGMOID {
            1.0
        } else {
            let i = ((x + MAX_SIGMOID) * SIGMOID_TABLE_SIZE as f32 / MAX_SIGMOID / 2.0) as usize;
            self.sigmoid_table[i.min(SIGMOID_TABLE_SIZE)]
        }
    }

    /// `HierarchicalSoftmaxLoss::dfs` with an explicit stack (a hostile tree can be
    /// as deep as there are labels), visiting nodes in the recursion's order.
    fn hs_predict(
        &self,
        k: usize,
        threshold: f32,
        hidden: &[f32],
        heap: &mut Vec<heap::Pred>,
    ) -> Result<(), Error> {
        let osz = self.labels.len();
        let log_threshold = std_log(threshold);
        let mut stack: Vec<(usize, f32)> = vec![(2 * osz - 2, 0.0)];
        while let Some((node, score)) = stack.pop() {
            if score < log_threshold {
                continue;
            }
            if heap.len() == k && score < heap[0].0 {
                continue;
            }
            let n = self.tree[node];
            if n.left == -1 && n.right == -1 {
                heap.push((score, node as i32));
                heap::push_heap(heap);
                if heap.len() > k {
                    heap::pop_heap(heap);
                    heap.pop();
                }
                continue;
            }
            let f = self.output.dot_row(hidden, node - osz).ok_or(Error::NaN)?;
            let f = (1.0 / (1.0 + (-f).exp()) as f64) as f32;
            // Right is pushed first so that left is visited first, as in the recursion.
            stack.push((n.right as usize, score + std_log(f)));
            stack.push((n.left as usize, score + std_log((1.0 - f as f64) as f32)));
        }
        Ok(())
    }
}

fn read_args(r: &mut Reader<'_>) -> Result<Args, Error> {
    let dim = r.i32("args.dim")?;
    let ws = r.i32("args.ws")?;
    let epoch = r.i32("args.epoch")?;
    let min_count = r.i32("args.minCount")?;
    let neg = r.i32("args.neg")?;
    let word_ngrams = r.i32("args.wordNgrams")?;
    let loss = match r.i32("args.loss")? {
        1 => Loss::HierarchicalSoftmax,
        2 => Loss::NegativeSampling,
        3 => Loss::Softmax,
        4 => Loss::OneVsAll,
        other => return Err(Error::Invalid(format!("unknown loss {other}"))),
    };
    let model = r.i32("args.model")?;
    let bucket = r.i32("args.bucket")?;
    let minn = r.i32("args.minn")?;
    let maxn = r.i32("args.maxn")?;
    let lr_update_rate = r.i32("args.lrUpdateRate")?;
    let t = r.f64("args.t")?;
    Ok(Args {
        dim,
        ws,
        epoch,
        min_count,
        neg,
        word_ngrams,
        loss,
        model,
        bucket,
        minn,
        maxn,
        lr_update_rate,
        t,
    })
}

fn read_dictionary(r: &mut Reader<'_>) -> Result<Dictionary, Error> {
    let size = r.i32("dictionary size")?;
    let nwords = r.i32("dictionary nwords")?;
    let nlabels = r.i32("dictionary nlabels")?;
    let _ntokens = r.i64("dictionary ntokens")?;
    let pruneidx_size = r.i64("dictionary pruneidx_size")?;
    if size < 0 || nwords < 0 || nlabels < 0 || nwords.checked_add(nlabels) != Some(size) {
        return Err(Error::Invalid(format!(
            "dictionary of {size} entries with {nwords} words and {nlabels} labels"
        )));
    }
    // Each entry takes at least 10 bytes (a NUL, an i64 count and a type byte).
    if size as usize > r.remaining() / 10 {
        return Err(Error::Invalid(format!(
            "{size} dictionary entries do not fit in the file"
        )));
    }
    let size = size as usize;
    let mut words = Vec::with_capacity(size);
    let mut counts = Vec::with_capacity(size);
    let mut ids = HashMap::with_capacity(size);
    for i in 0..size {
        let word = r.c_string("a dictionary word")?.to_vec();
        counts.push(r.i64("a dictionary count")?);
        let kind = r.u8("a dictionary entry type")?;
        let expected = u8::from(i >= nwords as usize);
        if kind != expected {
            return Err(Error::Invalid(format!(
                "dictionary entry {i} has type {kind}; words (0) must come before labels (1)"
            )));
        }
        // As fastText's word2int, a word listed twice maps to its last entry.
        ids.insert(word.clone(), i as i32);
        words.push(word);
    }
    if pruneidx_size < -1 || pruneidx_size > (r.remaining() / 8) as i64 {
        return Err(Error::Invalid(format!(
            "pruned index of {pruneidx_size} entries does not fit in the file"
        )));
    }
    let mut pruneidx = HashMap::with_capacity(pruneidx_size.max(0) as usize);
    for _ in 0..pruneidx_size.max(0) {
        let from = r.i32("pruned index")?;
        let to = r.i32("pruned index")?;
        if to < 0 {
            return Err(Error::Invalid(format!("pruned index maps {from} to {to}")));
        }
        pruneidx.insert(from, to);
    }
    Ok(Dictionary {
        words,
        counts,
        ids,
        nwords,
        nlabels,
        pruneidx_size,
        pruneidx,
    })
}

/// `HierarchicalSoftmaxLoss::buildTree`: a Huffman tree over the label counts
/// (sorted by decreasing count in the dictionary), leaves first.
fn build_tree(counts: &[i64]) -> Vec<HsNode> {
    let osz = counts.len();
    let mut tree = vec![
        HsNode {
            left: -1,
            right: -1,
            count: HS_UNBUILT_COUNT,
        };
        2 * osz - 1
    ];
    for (node, &count) in tree.iter_mut().zip(counts) {
        node.count = count;
    }
    let mut leaf = osz as i64 - 1;
    let mut node = osz;
    for i in osz..2 * osz - 1 {
        let mut mini = [0usize; 2];
        for m in &mut mini {
            if leaf >= 0 && tree[leaf as usize].count < tree[node].count {
                *m = leaf as usize;
                leaf -= 1;
            } else {
                *m = node;
                node += 1;
            }
        }
        tree[i].left = mini[0] as i32;
        tree[i].right = mini[1] as i32;
        tree[i].count = tree[mini[0]].count.saturating_add(tree[mini[1]].count);
    }
    tree
}

#[cfg(test)]
mod tests;
