//! A training job's data: the rows read from the source (under the schema of
//! `schema.rs`), and their encoding into a design matrix the way the saved ONNX graph
//! encodes a request (numeric values as `f32`, imputed, standardized in `f32`;
//! categorical values one-hot), so the in-memory model sees exactly the numbers the
//! served model will.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::jobs::io::{self, Value};
use crate::jobs::spec::TrainSpec;
use crate::jobs::{JobContext, JobError};

use super::schema::{missing_column, needed_columns};
pub use super::schema::{Class, FeatureSpec, Missing, Schema};

/// The rows read, only the needed columns (label first), and their hash.
pub struct RawData {
    pub rows: Vec<Vec<Value>>,
    pub hash: String,
}

/// Reads the source whole: at most `max_rows` rows, cancellable between batches.
pub fn read(ctx: &JobContext, spec: &TrainSpec, schema: &Schema) -> Result<RawData, JobError> {
    let max_rows = ctx.state.settings.train_max_rows;
    ctx.progress(|p| p.stage = "reading".into());
    // A SQL source stops waiting on its database at a cancel, as a scoring job's.
    let mut source = io::open_source_until(&spec.source, &ctx.runtime, ctx.stop_check())
        .map_err(|e| JobError::Failed(e.0))?;
    if let Some(m) = missing_column(schema, source.columns()) {
        return Err(JobError::Failed(m));
    }
    let index: Vec<usize> = needed_columns(schema)
        .iter()
        .map(|c| source.columns().iter().position(|h| h == c).unwrap_or(0))
        .collect();
    let mut hasher = blake3::Hasher::new();
    let mut rows = Vec::new();
    loop {
        ctx.check_cancelled()?;
        let Some(batch) = source.next_batch(4096).map_err(|e| JobError::Failed(e.0))? else {
            break;
        };
        for row in batch {
            if rows.len() >= max_rows {
                return Err(JobError::Failed(format!(
                    "the source has more than {max_rows} rows, the most a training job reads \
                     (--train-max-rows)"
                )));
            }
            let picked: Vec<Value> = index
                .iter()
                .map(|&i| row.get(i).cloned().unwrap_or(Value::Null))
                .collect();
            for v in &picked {
                hash_value(&mut hasher, v);
            }
            rows.push(picked);
        }
        let fraction = source.fraction();
        let n = rows.len() as u64;
        ctx.progress(|p| {
            p.rows_read = n;
            p.fraction = fraction.map(|f| f * 0.1);
        });
    }
    if rows.is_empty() {
        return Err(JobError::Failed(
            "the source has no rows: there is nothing to train on".into(),
        ));
    }
    Ok(RawData {
        rows,
        hash: hasher.finalize().to_hex().to_string(),
    })
}

fn hash_value(h: &mut blake3::Hasher, v: &Value) {
    match v {
        Value::Null => h.update(&[0]),
        Value::Bool(b) => h.update(&[1, *b as u8]),
        Value::Int(i) => h.update(&[2]).update(&i.to_le_bytes()),
        Value::Float(f) => h.update(&[3]).update(&f.to_le_bytes()),
        Value::Text(s) => h
            .update(&[4])
            .update(&(s.len() as u64).to_le_bytes())
            .update(s.as_bytes()),
    };
}

fn is_missing(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Text(s) => s.trim().is_empty(),
        Value::Float(f) => f.is_nan(),
        _ => false,
    }
}

/// A cell as category text: what the ONNX graph's string input carries. For a
/// column whose values are not all numbers (see [`number_category`] for one whose
/// values are): text as written.
pub fn category_text(v: &Value) -> String {
    match v {
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        other => other.to_text(),
    }
}

/// A cell of a categorical column whose values are all numbers, as its category:
/// the number, in one text whatever wrote it, as pandas reads such a column (a
/// CSV's `1`, `1.0`, ` 1.0 ` and `1e0`, a JSON or Parquet float 1.0 and an integer 1
/// are all the category `1`). Whole numbers are written as integers, any other
/// number in its shortest decimal text (`0.5`). `None` for a value that is no finite
/// number (text, a boolean, a null). The serving side writes a feature of such a
/// column the same way before it reaches the saved graph's string input
/// (`api::simple`, the score job), so every format and API meets the same category.
pub fn number_category(v: &Value) -> Option<String> {
    match v {
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => float_category(*f),
        Value::Text(s) => text_number_category(s),
        Value::Bool(_) | Value::Null => None,
    }
}

/// A number as [`number_category`] writes it (`None` for NaN and the infinities).
pub fn float_category(f: f64) -> Option<String> {
    if !f.is_finite() {
        return None;
    }
    // Every whole float below 2^127 is an integer an i128 holds exactly, so its
    // digits are the number's own (1e20 is `100000000000000000000`), the same as
    // the text of that integer gives; -0 is `0`.
    if f.fract() == 0.0 && f.abs() < i128::MAX as f64 {
        return Some((f as i128).to_string());
    }
    Some(Value::Float(f).to_text())
}

/// A text that reads as a finite number (surrounding spaces allowed), as
/// [`number_category`] writes it; `None` for any other text.
pub fn text_number_category(text: &str) -> Option<String> {
    let text = text.trim();
    match text.parse::<i128>() {
        Ok(i) => Some(i.to_string()),
        Err(_) => float_category(text.parse::<f64>().ok()?),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Bool(b) => Some(*b as u8 as f64),
        Value::Text(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        Value::Null => None,
    }
}

/// How one feature is encoded, learned from the training rows.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Encoding {
    Numeric {
        key: String,
        /// What a missing value becomes (`None`: missing is an error).
        impute: Option<f32>,
    },
    Categorical {
        key: String,
        categories: Vec<String>,
        impute: Option<String>,
        /// Whether every value of the column is a number: its categories are then
        /// the numbers' texts ([`number_category`]), and a feature sent to the
        /// saved model is written the same way first (`training.json` records it:
        /// [`super::numeric_categorical_features`]).
        numeric: bool,
    },
}

/// The encoded data set: a row-major design matrix with the numeric columns first
/// (in schema order, raw `f32` values, imputed), then each categorical feature's
/// one-hot block; and the class of each row.
pub struct Encoded {
    pub encodings: Vec<Encoding>,
    pub n_numeric: usize,
    pub width: usize,
    pub x: Vec<f64>,
    pub y: Vec<usize>,
    pub classes: Vec<Class>,
}

impl Encoded {
    pub fn rows(&self) -> usize {
        self.y.len()
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.width..(i + 1) * self.width]
    }
}

/// Encodes the rows: classes, categories, imputation. Fails with a message naming
/// the column and row for a value that cannot be used.
pub fn encode(raw: &RawData, schema: &Schema, max_categories: usize) -> Result<Encoded, JobError> {
    encode_within(raw, schema, max_categories, MAX_DESIGN_BYTES)
}

/// The most memory a training job's design matrix may take (rows × columns of
/// 64-bit floats, a categorical feature one column per category): 2 GiB. Each fit
/// holds a scaled copy of its rows beside it, so a job's peak is about twice this.
/// Checked before the matrix is allocated.
pub const MAX_DESIGN_BYTES: usize = 2 << 30;

/// Refuses a design matrix of `rows` × `width` that would take more than
/// `max_bytes`, before it is allocated.
fn check_design_size(rows: usize, width: usize, max_bytes: usize) -> Result<(), String> {
    let cell = std::mem::size_of::<f64>();
    match rows.checked_mul(width).and_then(|c| c.checked_mul(cell)) {
        Some(bytes) if bytes <= max_bytes => Ok(()),
        bytes => Err(format!(
            "the encoded data would be {rows} rows × {width} columns ({} as 64-bit floats), \
             more than the {} a training job's design matrix may take: train on fewer rows, \
             or with fewer categories (each category of a categorical feature is a column)",
            bytes.map_or_else(|| "more than the memory there is".to_string(), shown_bytes),
            shown_bytes(max_bytes)
        )),
    }
}

/// A size in bytes as a person reads it (`2 GiB`, `763 MiB`).
fn shown_bytes(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match value.fract() == 0.0 || unit == 0 {
        true => format!("{value:.0} {}", UNITS[unit]),
        false => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// A label column's cell as a number, as pandas reads a column: an integer or a
/// float (a CSV's text that reads as a finite number is one). `None` for any other
/// value (text, a boolean).
#[derive(Debug, Clone, Copy, PartialEq)]
enum LabelNumber {
    Int(i128),
    Float(f64),
}

/// Floats up to 2^53 are integers exactly.
const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0;

fn label_number(v: &Value) -> Option<LabelNumber> {
    let float = |f: f64| match f.fract() == 0.0 && f.abs() <= EXACT_INTEGERS {
        true => LabelNumber::Int(f as i128),
        false => LabelNumber::Float(f),
    };
    match v {
        Value::Int(i) => Some(LabelNumber::Int(i128::from(*i))),
        Value::Float(f) => Some(float(*f)),
        Value::Text(s) => {
            let s = s.trim();
            match s.parse::<i128>() {
                Ok(i) => Some(LabelNumber::Int(i)),
                Err(_) => s.parse::<f64>().ok().filter(|f| f.is_finite()).map(float),
            }
        }
        Value::Bool(_) | Value::Null => None,
    }
}

/// The classes of a label column without a value map, the same whatever the file
/// format: a column whose values are all numbers gives numbers (`1`, `1.0` and the
/// float 1 are one class), integers when every value is one, else the numbers as
/// text in their shortest form (`"0.5"`, `"1.0"`); any other column is text, each
/// value as written. Integers beyond an `i64` (pandas reads them as `uint64` or
/// Python ints) are each their own class, as their digits: an ONNX label is an
/// `int64` or a string. The flag says the classes are numbers
/// ([`numeric_class_order`] sorts them).
fn column_classes(cells: &[&Value]) -> (Vec<Class>, bool) {
    let Some(numbers) = cells
        .iter()
        .map(|v| label_number(v))
        .collect::<Option<Vec<_>>>()
    else {
        let classes = cells
            .iter()
            .map(|v| Class::Text(category_text(v)))
            .collect();
        return (classes, false);
    };
    let all_integers = numbers.iter().all(|n| matches!(n, LabelNumber::Int(_)));
    let all_i64 = numbers
        .iter()
        .all(|n| matches!(n, LabelNumber::Int(i) if i64::try_from(*i).is_ok()));
    let classes = numbers
        .into_iter()
        .map(|n| match (n, all_integers) {
            (LabelNumber::Int(i), true) => match i64::try_from(i) {
                Ok(i) if all_i64 => Class::Int(i),
                _ => Class::Text(i.to_string()),
            },
            (LabelNumber::Int(i), false) => Class::Text(format!("{:?}", i as f64)),
            (LabelNumber::Float(f), _) => Class::Text(format!("{f:?}")),
        })
        .collect();
    (classes, true)
}

/// The order of a numeric label column's classes: by value, as scikit-learn's
/// `classes_` of numbers are (`2` before `10`, `0.5` before `10.5`), where the
/// classes' text would sort `10` first. Exact for integers of any size.
fn numeric_class_order(a: &Class, b: &Class) -> std::cmp::Ordering {
    let integer = |c: &Class| match c {
        Class::Int(i) => Some(i128::from(*i)),
        Class::Text(s) => s.parse::<i128>().ok(),
    };
    let float = |c: &Class| match c {
        Class::Int(i) => *i as f64,
        Class::Text(s) => s.parse::<f64>().unwrap_or(f64::NAN),
    };
    match (integer(a), integer(b)) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => float(a).total_cmp(&float(b)),
    }
}

/// [`encode`] with the design matrix bounded by `max_design_bytes`.
fn encode_within(
    raw: &RawData,
    schema: &Schema,
    max_categories: usize,
    max_design_bytes: usize,
) -> Result<Encoded, JobError> {
    let fail = |m: String| Err(JobError::Failed(m));
    let n = raw.rows.len();
    // The label.
    let mut labels: Vec<Class> = Vec::with_capacity(n);
    // Without a map: the cells, whose classes are decided once all are read.
    let mut cells: Vec<&Value> = Vec::new();
    let mut unmapped: BTreeSet<String> = BTreeSet::new();
    let label_map = label_index(raw, schema)?;
    for (r, row) in raw.rows.iter().enumerate() {
        let v = &row[0];
        if is_missing(v) {
            return fail(format!(
                "label column {:?}, row {}: the label is missing",
                schema.label,
                r + 1
            ));
        }
        match &label_map {
            Some((map, numeric)) => {
                let text = match numeric {
                    true => number_category(v).unwrap_or_else(|| category_text(v)),
                    false => category_text(v),
                };
                match map.get(&text) {
                    Some(c) => labels.push((*c).clone()),
                    None => {
                        unmapped.insert(text);
                    }
                }
            }
            None => cells.push(v),
        }
    }
    let mut numeric_labels = false;
    if schema.label_map.is_none() {
        (labels, numeric_labels) = column_classes(&cells);
    }
    if !unmapped.is_empty() {
        let shown: Vec<String> = unmapped.iter().take(5).map(|s| format!("{s:?}")).collect();
        let known: Vec<&String> = schema
            .label_map
            .as_ref()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        return fail(format!(
            "label column {:?} has values not in schema.label.values: {}{} (the map has {:?})",
            schema.label,
            shown.join(", "),
            if unmapped.len() > 5 { ", …" } else { "" },
            known
        ));
    }
    let mut classes: Vec<Class> = labels
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if numeric_labels {
        classes.sort_by(numeric_class_order);
    }
    if classes.len() < 2 {
        return fail(format!(
            "label column {:?} has a single class ({}): training needs at least two",
            schema.label,
            classes
                .first()
                .map(|c| c.to_json().to_string())
                .unwrap_or_default()
        ));
    }
    let class_index: HashMap<&Class, usize> =
        classes.iter().enumerate().map(|(i, c)| (c, i)).collect();
    let y: Vec<usize> = labels.iter().map(|c| class_index[c]).collect();

    // The features' encodings.
    let mut encodings = Vec::new();
    let numeric: Vec<(usize, &FeatureSpec)> = schema
        .features
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.categorical)
        .collect();
    let categorical: Vec<(usize, &FeatureSpec)> = schema
        .features
        .iter()
        .enumerate()
        .filter(|(_, f)| f.categorical)
        .collect();
    let mut numeric_values: Vec<Vec<Option<f32>>> = Vec::new();
    for (i, f) in &numeric {
        let col = i + 1;
        let mut values = Vec::with_capacity(n);
        for (r, row) in raw.rows.iter().enumerate() {
            let v = &row[col];
            if is_missing(v) {
                if f.missing == Missing::Error {
                    return fail(format!(
                        "column {:?}, row {}: the value is missing (set \"missing\": \"mean\" or \
                         \"most_frequent\" on the feature to impute it)",
                        f.key,
                        r + 1
                    ));
                }
                values.push(None);
                continue;
            }
            match number(v) {
                Some(x) if (x as f32).is_finite() => values.push(Some(x as f32)),
                Some(x) => {
                    // As the source wrote it, else in short scientific form (1e308):
                    // such a number's decimal digits run to hundreds.
                    let shown = match v {
                        Value::Text(s) => s.trim().to_string(),
                        _ => format!("{x:e}"),
                    };
                    return fail(format!(
                        "column {:?}, row {}: {shown} is not a finite 32-bit float, which the \
                         saved model takes (at most about 3.4e38 in size)",
                        f.key,
                        r + 1
                    ));
                }
                None => {
                    return fail(format!(
                        "column {:?}, row {}: {:?} is not a number (list the feature in \
                         schema.categorical if it is a category)",
                        f.key,
                        r + 1,
                        v.to_text()
                    ))
                }
            }
        }
        let present: Vec<f32> = values.iter().flatten().copied().collect();
        let impute = match f.missing {
            Missing::Error => None,
            _ if present.is_empty() => {
                return fail(format!("column {:?} has no values to impute from", f.key))
            }
            Missing::Mean => {
                Some((present.iter().map(|v| *v as f64).sum::<f64>() / present.len() as f64) as f32)
            }
            Missing::MostFrequent => {
                let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
                for v in &present {
                    // -0 and 0 are one value, as numpy's comparisons count them.
                    let v = if *v == 0.0 { 0.0 } else { *v };
                    *counts.entry(ordered_bits(v)).or_default() += 1;
                }
                // The smallest of the most frequent values, as scikit-learn's SimpleImputer.
                let best = counts.values().copied().max().unwrap_or(0);
                counts
                    .iter()
                    .find(|(_, c)| **c == best)
                    .map(|(bits, _)| from_ordered_bits(*bits))
            }
        };
        encodings.push(Encoding::Numeric {
            key: f.key.clone(),
            impute,
        });
        numeric_values.push(values.into_iter().map(|v| v.or(impute)).collect());
    }
    let mut categorical_values: Vec<Vec<Option<usize>>> = Vec::new();
    for (i, f) in &categorical {
        let col = i + 1;
        // A column of numbers has the numbers for categories, as pandas reads it
        // (a CSV's `1` and `1.0` are one); any other keeps each value's text.
        let mut present = raw
            .rows
            .iter()
            .map(|row| &row[col])
            .filter(|v| !is_missing(v))
            .peekable();
        let numeric = present.peek().is_some() && present.all(|v| number_category(v).is_some());
        let mut texts: Vec<Option<String>> = Vec::with_capacity(n);
        for (r, row) in raw.rows.iter().enumerate() {
            let v = &row[col];
            if is_missing(v) {
                if f.missing == Missing::Error {
                    return fail(format!(
                        "column {:?}, row {}: the value is missing (set \"missing\": \
                         \"most_frequent\" on the feature to impute it)",
                        f.key,
                        r + 1
                    ));
                }
                texts.push(None);
            } else if numeric {
                texts.push(number_category(v));
            } else {
                texts.push(Some(category_text(v)));
            }
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in texts.iter().flatten() {
            *counts.entry(t.as_str()).or_default() += 1;
        }
        let categories = match &f.categories {
            Some(c) if numeric => numeric_index_map(&format!("categorical feature {:?}", f.key), c)
                .map_err(JobError::Failed)?,
            Some(c) => c.clone(),
            None => {
                if counts.len() > max_categories {
                    return fail(format!(
                        "categorical feature {:?} has more than {max_categories} distinct values, \
                         the most a training job learns (--max-categories); give its categories \
                         in schema.features[].values or treat it as numeric",
                        f.key
                    ));
                }
                if counts.is_empty() {
                    return fail(format!(
                        "categorical feature {:?} has no values to learn its categories from",
                        f.key
                    ));
                }
                counts.keys().map(|s| s.to_string()).collect()
            }
        };
        let impute = match f.missing {
            Missing::Error | Missing::Mean => None,
            Missing::MostFrequent => {
                let best = counts.values().copied().max().unwrap_or(0);
                counts
                    .iter()
                    .find(|(_, c)| **c == best)
                    .map(|(s, _)| s.to_string())
            }
        };
        let index: HashMap<&str, usize> = categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        categorical_values.push(
            texts
                .iter()
                .map(|t| {
                    t.as_deref()
                        .or(impute.as_deref())
                        .and_then(|t| index.get(t).copied())
                })
                .collect(),
        );
        encodings.push(Encoding::Categorical {
            key: f.key.clone(),
            categories,
            impute,
            numeric,
        });
    }
    let n_numeric = numeric.len();
    let width = n_numeric
        + encodings
            .iter()
            .map(|e| match e {
                Encoding::Categorical { categories, .. } => categories.len(),
                Encoding::Numeric { .. } => 0,
            })
            .sum::<usize>();
    check_design_size(n, width, max_design_bytes).map_err(JobError::Failed)?;
    let mut x = vec![0.0; n * width];
    for r in 0..n {
        let row = &mut x[r * width..(r + 1) * width];
        for (j, col) in numeric_values.iter().enumerate() {
            row[j] = col[r].map_or(f64::NAN, f64::from);
        }
        let mut offset = n_numeric;
        for (k, col) in categorical_values.iter().enumerate() {
            if let Some(c) = col[r] {
                row[offset + c] = 1.0;
            }
            if let Encoding::Categorical { categories, .. } = &encodings[n_numeric + k] {
                offset += categories.len();
            }
        }
    }
    Ok(Encoded {
        encodings,
        n_numeric,
        width,
        x,
        y,
        classes,
    })
}

/// The label's `values` map as the label column's cells meet it, and whether the
/// column is one of numbers: then the map's keys are read as its numbers, as a
/// feature's map is ([`numeric_index_map`]: `"1.0"` is `1`, two keys of one number
/// fail the job), and each cell is looked up by [`number_category`]; otherwise by
/// its text. `None` without a map.
#[allow(clippy::type_complexity)]
fn label_index<'s>(
    raw: &RawData,
    schema: &'s Schema,
) -> Result<Option<(HashMap<String, &'s Class>, bool)>, JobError> {
    let Some(map) = &schema.label_map else {
        return Ok(None);
    };
    let numeric = raw
        .rows
        .iter()
        .all(|row| number_category(&row[0]).is_some());
    if !numeric {
        return Ok(Some((
            map.iter().map(|(k, c)| (k.clone(), c)).collect(),
            false,
        )));
    }
    let keys: Vec<String> = map.keys().cloned().collect();
    let read = numeric_index_map(&format!("label column {:?}", schema.label), &keys)
        .map_err(JobError::Failed)?;
    Ok(Some((read.into_iter().zip(map.values()).collect(), true)))
}

/// A `values` map's categories (in index order) for a column of numbers: each that
/// is a number written as the column's values are ([`text_number_category`]: `"1.0"`
/// is the category `1`), any other as given (no value meets it). Two that are the
/// same number are refused, naming the column (`column`: `categorical feature "x"`
/// or `label column "y"`).
fn numeric_index_map(column: &str, categories: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(categories.len());
    for c in categories {
        let text = text_number_category(c).unwrap_or_else(|| c.clone());
        if let Some(j) = out.iter().position(|o| *o == text) {
            return Err(format!(
                "{column}: its values map gives {:?} and {c:?}, which are the same number \
                 to a column of numbers ({text}); give each number once",
                categories[j]
            ));
        }
        out.push(text);
    }
    Ok(out)
}

/// `f32` bits ordered like the numbers (for a sorted map of values).
fn ordered_bits(v: f32) -> u32 {
    let b = v.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

fn from_ordered_bits(b: u32) -> f32 {
    if b & 0x8000_0000 != 0 {
        f32::from_bits(b & 0x7fff_ffff)
    } else {
        f32::from_bits(!b)
    }
}

/// Whether a column of this variance and mean is constant but for rounding, by
/// scikit-learn's test (`_is_constant_feature`: the error bound of the two-pass
/// variance), which is relative to the column's size: a column of values near
/// 1e-13 varies, one of 1e9 + 0.1 whose variance came out as 1.7e-13 does not.
fn is_constant_feature(var: f64, mean: f64, n: f64) -> bool {
    let eps = f64::EPSILON;
    var <= n * eps * var + (n * mean * eps).powi(2)
}

/// StandardScaler's parameters for the numeric columns, as the ONNX `Scaler` takes
/// them: `(x - offset) * scale`, in `f32`.
#[derive(Debug, Clone, Serialize)]
pub struct Scaler {
    pub offset: Vec<f32>,
    pub scale: Vec<f32>,
}

impl Scaler {
    /// Mean and population standard deviation of `rows` (a zero deviation scales
    /// by 1, as scikit-learn does).
    pub fn fit(data: &Encoded, rows: &[usize]) -> Scaler {
        let k = data.n_numeric;
        let mut offset = Vec::with_capacity(k);
        let mut scale = Vec::with_capacity(k);
        for j in 0..k {
            let n = rows.len().max(1) as f64;
            let mean = rows.iter().map(|&r| data.row(r)[j]).sum::<f64>() / n;
            let var = rows
                .iter()
                .map(|&r| (data.row(r)[j] - mean).powi(2))
                .sum::<f64>()
                / n;
            offset.push(mean as f32);
            scale.push(if is_constant_feature(var, mean, n) {
                1.0
            } else {
                (1.0 / var.sqrt()) as f32
            });
        }
        Scaler { offset, scale }
    }

    /// No scaling (`algorithm.standardize: false`).
    pub fn identity(n_numeric: usize) -> Scaler {
        Scaler {
            offset: vec![0.0; n_numeric],
            scale: vec![1.0; n_numeric],
        }
    }

    /// The rows' features, scaled as ONNX Runtime's `Scaler` computes it.
    pub fn transform(&self, data: &Encoded, rows: &[usize]) -> Vec<f64> {
        let mut out = Vec::with_capacity(rows.len() * data.width);
        for &r in rows {
            let row = data.row(r);
            for (j, v) in row.iter().enumerate() {
                if j < self.offset.len() {
                    out.push(((*v as f32 - self.offset[j]) * self.scale[j]) as f64);
                } else {
                    out.push(*v);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
