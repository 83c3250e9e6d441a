//! `OneHotEncoder` and `OrdinalEncoder`.
//!
//! Categories match by exact equality (strings) or exact f64 equality (numbers);
//! a missing value (NaN, or missing text) matches a NaN category when there is one.

use super::access::{as_f64, as_i64, as_list, Obj};
use super::{Column, ColumnKind, Data, Matrix, Transformer};
use crate::model::{ModelError, PredictError};
use crate::value::{ArrayData, Value};

pub(crate) fn build(obj: Obj<'_>) -> Result<Box<dyn Transformer>, ModelError> {
    if obj.bool_or("_infrequent_enabled", false)? {
        return Err(obj.unsupported("infrequent categories (min_frequency / max_categories)"));
    }
    let categories = obj
        .list("categories_")?
        .iter()
        .map(|v| Categories::from_value(obj, v))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(n) = obj.n_features_in()? {
        if n != categories.len() {
            return Err(obj.malformed("categories_ does not match n_features_in_"));
        }
    }
    match obj.name {
        "OneHotEncoder" => Ok(Box::new(OneHot::build(obj, categories)?)),
        "OrdinalEncoder" => Ok(Box::new(Ordinal::build(obj, categories)?)),
        other => Err(obj.unsupported(format!("unknown encoder {other}"))),
    }
}

/// The categories of one feature, sorted as scikit-learn sorted them.
#[derive(Debug)]
enum Categories {
    Num(Vec<f64>),
    /// Text categories; `None` stands for a NaN category (missing text seen in fit).
    Str(Vec<Option<String>>),
}

impl Categories {
    fn from_value(obj: Obj<'_>, v: &Value) -> Result<Categories, ModelError> {
        let Value::Array(a) = v else {
            return Err(obj.malformed("a categories_ entry is not an array"));
        };
        Ok(match &a.data {
            ArrayData::Str(s) => Categories::Str(s.iter().cloned().map(Some).collect()),
            ArrayData::Object(items) if items.iter().any(|i| matches!(i, Value::Str(_))) => {
                Categories::Str(
                    items
                        .iter()
                        .map(|i| match i {
                            Value::Str(s) => Ok(Some(s.clone())),
                            Value::Float(f) if f.is_nan() => Ok(None),
                            _ => Err(obj.unsupported("categories mixing text and other values")),
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
            _ => Categories::Num(
                super::access::array_f64(a)
                    .ok_or_else(|| obj.unsupported("categories of this dtype"))?,
            ),
        })
    }

    fn len(&self) -> usize {
        match self {
            Categories::Num(v) => v.len(),
            Categories::Str(v) => v.len(),
        }
    }

    fn kind(&self) -> ColumnKind {
        match self {
            Categories::Num(_) => ColumnKind::Numeric,
            Categories::Str(_) => ColumnKind::String,
        }
    }

    /// The index of each value of `col` among the categories (`None`: unknown).
    fn encode(&self, col: &Column, feature: usize) -> Result<Vec<Option<usize>>, PredictError> {
        match (self, col) {
            (Categories::Num(cats), Column::Num(v)) => Ok(v
                .iter()
                .map(|x| {
                    if x.is_nan() {
                        cats.iter().position(|c| c.is_nan())
                    } else {
                        cats.iter().position(|c| c == x)
                    }
                })
                .collect()),
            (Categories::Str(cats), Column::Str(v)) => {
                Ok(v.iter().map(|x| cats.iter().position(|c| c == x)).collect())
            }
            // An all-missing numeric column is missing text.
            (Categories::Str(cats), Column::Num(v)) if v.iter().all(|x| x.is_nan()) => Ok(v
                .iter()
                .map(|_| cats.iter().position(Option::is_none))
                .collect()),
            _ => Err(PredictError::InvalidInput(format!(
                "feature {feature} must hold {}",
                if self.kind() == ColumnKind::Numeric {
                    "numbers"
                } else {
                    "text"
                }
            ))),
        }
    }
}

fn describe_unknown(col: &Column, row: usize) -> String {
    match col {
        Column::Num(v) => v[row].to_string(),
        Column::Str(v) => match &v[row] {
            Some(s) => format!("{s:?}"),
            None => "NaN".to_string(),
        },
    }
}

#[derive(Debug)]
struct OneHot {
    categories: Vec<Categories>,
    /// Per feature, the index of the dropped category.
    drop: Vec<Option<usize>>,
    ignore_unknown: bool,
}

impl OneHot {
    fn build(obj: Obj<'_>, categories: Vec<Categories>) -> Result<OneHot, ModelError> {
        let ignore_unknown = match obj.str("handle_unknown")? {
            "error" => false,
            // Without infrequent categories (refused above), infrequent_if_exist
            // treats unknown values as ignore does.
            "ignore" | "infrequent_if_exist" => true,
            other => return Err(obj.unsupported(format!("handle_unknown {other:?}"))),
        };
        let drop = match obj.some("drop_idx_") {
            None => vec![None; categories.len()],
            Some(v) => {
                let items: Vec<Option<usize>> = match v {
                    Value::Array(a) => match &a.data {
                        ArrayData::Object(items) => items
                            .iter()
                            .map(|i| match i {
                                Value::None => Ok(None),
                                i => as_i64(i)
                                    .and_then(|n| usize::try_from(n).ok())
                                    .map(Some)
                                    .ok_or_else(|| obj.malformed("drop_idx_")),
                            })
                            .collect::<Result<_, _>>()?,
                        data => super::access::array_i64(data)
                            .ok_or_else(|| obj.malformed("drop_idx_"))?
                            .into_iter()
                            .map(|n| usize::try_from(n).ok())
                            .collect(),
                    },
                    other => as_list(other)
                        .ok_or_else(|| obj.malformed("drop_idx_"))?
                        .iter()
                        .map(|i| as_i64(i).and_then(|n| usize::try_from(n).ok()))
                        .collect(),
                };
                if items.len() != categories.len()
                    || items
                        .iter()
                        .zip(&categories)
                        .any(|(d, c)| d.is_some_and(|d| d >= c.len()))
                {
                    return Err(obj.malformed("drop_idx_ does not match categories_"));
                }
                items
            }
        };
        Ok(OneHot {
            categories,
            drop,
            ignore_unknown,
        })
    }
}

impl Transformer for OneHot {
    fn n_features_in(&self) -> Option<usize> {
        Some(self.categories.len())
    }

    fn input_kind(&self, j: usize) -> ColumnKind {
        self.categories
            .get(j)
            .map_or(ColumnKind::Numeric, Categories::kind)
    }

    fn transform(&self, x: Data<'_>) -> Result<Data<'static>, PredictError> {
        check_n(&x, self.categories.len(), "OneHotEncoder")?;
        let n_rows = x.n_rows();
        let widths: Vec<usize> = self
            .categories
            .iter()
            .zip(&self.drop)
            .map(|(c, d)| c.len() - usize::from(d.is_some()))
            .collect();
        let n_cols: usize = widths.iter().sum();
        let mut out = vec![0.0; n_rows * n_cols];
        let mut offset = 0;
        for (j, cats) in self.categories.iter().enumerate() {
            let col = x.column(j);
            let codes = cats.encode(&col, j)?;
            for (i, code) in codes.into_iter().enumerate() {
                let Some(code) = code else {
                    if self.ignore_unknown {
                        continue;
                    }
                    return Err(PredictError::InvalidInput(format!(
                        "Found unknown categories [{}] in column {j} during transform",
                        describe_unknown(&col, i)
                    )));
                };
                let pos = match self.drop[j] {
                    Some(d) if code == d => continue,
                    Some(d) if code > d => code - 1,
                    _ => code,
                };
                out[i * n_cols + offset + pos] = 1.0;
            }
            offset += widths[j];
        }
        Ok(Data::Dense(Matrix {
            data: out,
            n_rows,
            n_cols,
        }))
    }
}

#[derive(Debug)]
struct Ordinal {
    categories: Vec<Categories>,
    /// `Some(unknown_value)` for `handle_unknown="use_encoded_value"`.
    unknown_value: Option<f64>,
    encoded_missing_value: f64,
    /// Per feature, the index of its NaN category, if any (`_missing_indices`).
    missing_index: Vec<Option<usize>>,
}

impl Ordinal {
    fn build(obj: Obj<'_>, categories: Vec<Categories>) -> Result<Ordinal, ModelError> {
        let unknown_value = match obj.str("handle_unknown")? {
            "error" => None,
            "use_encoded_value" => Some(
                as_f64(obj.req("unknown_value")?)
                    .ok_or_else(|| obj.malformed("unknown_value is not a number"))?,
            ),
            other => return Err(obj.unsupported(format!("handle_unknown {other:?}"))),
        };
        let encoded_missing_value = match obj.some("encoded_missing_value") {
            Some(v) => as_f64(v).ok_or_else(|| obj.malformed("encoded_missing_value"))?,
            None => f64::NAN,
        };
        let missing_index = categories
            .iter()
            .map(|c| match c {
                Categories::Num(v) => v.iter().position(|x| x.is_nan()),
                Categories::Str(v) => v.iter().position(Option::is_none),
            })
            .collect();
        Ok(Ordinal {
            categories,
            unknown_value,
            encoded_missing_value,
            missing_index,
        })
    }
}

impl Transformer for Ordinal {
    fn n_features_in(&self) -> Option<usize> {
        Some(self.categories.len())
    }

    fn input_kind(&self, j: usize) -> ColumnKind {
        self.categories
            .get(j)
            .map_or(ColumnKind::Numeric, Categories::kind)
    }

    fn transform(&self, x: Data<'_>) -> Result<Data<'static>, PredictError> {
        let n_features = self.categories.len();
        check_n(&x, n_features, "OrdinalEncoder")?;
        let n_rows = x.n_rows();
        let mut out = vec![0.0; n_rows * n_features];
        for (j, cats) in self.categories.iter().enumerate() {
            let col = x.column(j);
            for (i, code) in cats.encode(&col, j)?.into_iter().enumerate() {
                // scikit-learn encodes an unknown value as 0 first, then overwrites
                // missing-category codes and finally unknown ones; same order here.
                let int_code = code.unwrap_or(0);
                let mut v = int_code as f64;
                if self.missing_index[j] == Some(int_code) {
                    v = self.encoded_missing_value;
                }
                if code.is_none() {
                    match self.unknown_value {
                        Some(u) => v = u,
                        None => {
                            return Err(PredictError::InvalidInput(format!(
                                "Found unknown categories [{}] in column {j} during transform",
                                describe_unknown(&col, i)
                            )))
                        }
                    }
                }
                out[i * n_features + j] = v;
            }
        }
        Ok(Data::Dense(Matrix {
            data: out,
            n_rows,
            n_cols: n_features,
        }))
    }
}

fn check_n(x: &Data<'_>, n: usize, who: &str) -> Result<(), PredictError> {
    if x.n_cols() != n {
        return Err(PredictError::InvalidInput(format!(
            "X has {} features, but {who} is expecting {n} features as input",
            x.n_cols()
        )));
    }
    Ok(())
}
