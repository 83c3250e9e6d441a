//! Scalers and `SimpleImputer`.

use super::access::{as_f64, Obj};
use super::{Column, ColumnKind, Data, Matrix, Table, Transformer};
use crate::model::{ModelError, PredictError};
use crate::value::{ArrayData, Value};

pub(crate) fn build(obj: Obj<'_>) -> Result<Box<dyn Transformer>, ModelError> {
    match obj.name {
        "StandardScaler" => Ok(Box::new(Affine::standard(obj)?)),
        "MinMaxScaler" => Ok(Box::new(Affine::min_max(obj)?)),
        "RobustScaler" => Ok(Box::new(Affine::robust(obj)?)),
        "SimpleImputer" => Ok(Box::new(SimpleImputer::build(obj)?)),
        "FunctionTransformer" => Ok(Box::new(Identity::build(obj)?)),
        "MissingIndicator" => Ok(Box::new(MissingIndicator::build(obj)?)),
        other => Err(obj.unsupported(format!("unknown transformer {other}"))),
    }
}

/// The arithmetic of one scaler, applied per column in scikit-learn's order.
#[derive(Debug)]
enum Op {
    /// StandardScaler / RobustScaler: `X -= offset` then `X /= scale`.
    SubDiv {
        offset: Option<Vec<f64>>,
        scale: Option<Vec<f64>>,
    },
    /// MinMaxScaler: `X *= scale_; X += min_`, then an optional clip.
    MulAdd {
        scale: Vec<f64>,
        min: Vec<f64>,
        clip: Option<(f64, f64)>,
    },
}

#[derive(Debug)]
struct Affine {
    name: &'static str,
    n_features: usize,
    op: Op,
}

fn optional_vec(obj: Obj<'_>, key: &str, n: usize) -> Result<Option<Vec<f64>>, ModelError> {
    match obj.some(key) {
        None => Ok(None),
        Some(_) => {
            let (v, _) = obj.f64s(key)?;
            if v.len() != n {
                return Err(
                    obj.malformed(format!("`{key}` has {} values for {n} features", v.len()))
                );
            }
            Ok(Some(v))
        }
    }
}

fn n_features(obj: Obj<'_>, fallback_key: &str) -> Result<usize, ModelError> {
    match obj.n_features_in()? {
        Some(n) => Ok(n),
        None => Ok(obj.f64s(fallback_key)?.0.len()),
    }
}

impl Affine {
    fn standard(obj: Obj<'_>) -> Result<Affine, ModelError> {
        let n = n_features(obj, "scale_")?;
        let offset = if obj.bool_or("with_mean", true)? {
            optional_vec(obj, "mean_", n)?
        } else {
            None
        };
        let scale = if obj.bool_or("with_std", true)? {
            optional_vec(obj, "scale_", n)?
        } else {
            None
        };
        Ok(Affine {
            name: "StandardScaler",
            n_features: n,
            op: Op::SubDiv { offset, scale },
        })
    }

    fn robust(obj: Obj<'_>) -> Result<Affine, ModelError> {
        let n = n_features(obj, "center_")?;
        let offset = if obj.bool_or("with_centering", true)? {
            optional_vec(obj, "center_", n)?
        } else {
            None
        };
        let scale = if obj.bool_or("with_scaling", true)? {
            optional_vec(obj, "scale_", n)?
        } else {
            None
        };
        Ok(Affine {
            name: "RobustScaler",
            n_features: n,
            op: Op::SubDiv { offset, scale },
        })
    }

    fn min_max(obj: Obj<'_>) -> Result<Affine, ModelError> {
        let n = n_features(obj, "scale_")?;
        let scale = optional_vec(obj, "scale_", n)?.ok_or_else(|| obj.malformed("no scale_"))?;
        let min = optional_vec(obj, "min_", n)?.ok_or_else(|| obj.malformed("no min_"))?;
        let clip = if obj.bool_or("clip", false)? {
            let range = obj.list("feature_range")?;
            match range {
                [lo, hi] => Some((
                    as_f64(lo).ok_or_else(|| obj.malformed("feature_range"))?,
                    as_f64(hi).ok_or_else(|| obj.malformed("feature_range"))?,
                )),
                _ => return Err(obj.malformed("feature_range")),
            }
        } else {
            None
        };
        Ok(Affine {
            name: "MinMaxScaler",
            n_features: n,
            op: Op::MulAdd { scale, min, clip },
        })
    }
}

impl Transformer for Affine {
    fn n_features_in(&self) -> Option<usize> {
        Some(self.n_features)
    }

    fn input_kind(&self, _j: usize) -> ColumnKind {
        ColumnKind::Numeric
    }

    fn transform(&self, x: Data<'_>) -> Result<Data<'static>, PredictError> {
        let mut m = x.into_dense(self.name)?;
        check_cols(&m, self.n_features, self.name)?;
        // Scalers pass NaN through (scikit-learn's allow-nan check) but refuse infinity.
        if m.data.iter().any(|v| v.is_infinite()) {
            return Err(PredictError::InvalidInput(format!(
                "Input X contains infinity ({} does not accept it)",
                self.name
            )));
        }
        let n = self.n_features;
        for row in m.data.chunks_mut(n.max(1)) {
            match &self.op {
                Op::SubDiv { offset, scale } => {
                    if let Some(offset) = offset {
                        row.iter_mut().zip(offset).for_each(|(v, o)| *v -= o);
                    }
                    if let Some(scale) = scale {
                        row.iter_mut().zip(scale).for_each(|(v, s)| *v /= s);
                    }
                }
                Op::MulAdd { scale, min, clip } => {
                    for ((v, s), b) in row.iter_mut().zip(scale).zip(min) {
                        *v *= s;
                        *v += b;
                        if let Some((lo, hi)) = clip {
                            // np.clip keeps NaN.
                            if *v < *lo {
                                *v = *lo;
                            } else if *v > *hi {
                                *v = *hi;
                            }
                        }
                    }
                }
            }
        }
        Ok(Data::Dense(m))
    }
}

fn check_cols(m: &Matrix, n: usize, who: &str) -> Result<(), PredictError> {
    if m.n_cols != n {
        return Err(PredictError::InvalidInput(format!(
            "X has {} features, but {who} is expecting {n} features as input",
            m.n_cols
        )));
    }
    Ok(())
}

/// The value `SimpleImputer` fills in for one column.
#[derive(Debug, Clone, PartialEq)]
enum Fill {
    Num(f64),
    Str(String),
}

/// What counts as missing (`missing_values`).
#[derive(Debug, Clone, PartialEq)]
enum Missing {
    NaN,
    Num(f64),
    Str(String),
}

#[derive(Debug)]
struct SimpleImputer {
    n_features: usize,
    /// Per input column: the fill value, or `None` for a column scikit-learn drops
    /// (its statistic is NaN: it was all-missing during fit).
    fills: Vec<Option<Fill>>,
    missing: Missing,
    /// `indicator_` (`add_indicator=True`): its 0/1 columns are appended after the
    /// imputed ones, computed on the input before imputation.
    indicator: Option<MissingIndicator>,
}

/// `missing_values` as scikit-learn stores it.
fn missing_values(obj: Obj<'_>) -> Result<Missing, ModelError> {
    Ok(match obj.get("missing_values") {
        Some(Value::Float(f)) if f.is_nan() => Missing::NaN,
        Some(Value::Float(f)) => Missing::Num(*f),
        Some(Value::Int(i)) => Missing::Num(*i as f64),
        Some(Value::Str(s)) => Missing::Str(s.clone()),
        Some(v) => {
            return Err(obj.unsupported(format!("missing_values {}", super::access::describe(v))))
        }
        None => Missing::NaN,
    })
}

fn is_missing_num(missing: &Missing, v: f64) -> bool {
    match missing {
        Missing::NaN => v.is_nan(),
        Missing::Num(m) => v == *m,
        Missing::Str(_) => false,
    }
}

/// `MissingIndicator` on numbers: one 0/1 column per feature of `features_` (the
/// features that had missing values in fit, or all of them for `features="all"`).
#[derive(Debug)]
struct MissingIndicator {
    n_features: usize,
    missing: Missing,
    /// `features_`: the input columns that get an indicator, in order.
    features: Vec<usize>,
    /// `features="missing-only"` with `error_on_new` (true for a standalone indicator,
    /// false inside `SimpleImputer`): a batch with missing values in a feature outside
    /// `features_` is refused, as scikit-learn raises.
    error_on_new: bool,
}

impl MissingIndicator {
    fn build(obj: Obj<'_>) -> Result<MissingIndicator, ModelError> {
        let missing = missing_values(obj)?;
        if matches!(missing, Missing::Str(_)) {
            return Err(obj.unsupported("a MissingIndicator over text (missing_values a string)"));
        }
        let n_features = match obj.n_features_in()? {
            Some(n) => n,
            None => obj.usize("_n_features")?,
        };
        let all = match obj.opt_str("features")?.unwrap_or("missing-only") {
            "missing-only" => false,
            "all" => true,
            other => return Err(obj.unsupported(format!("features={other:?}"))),
        };
        let features = super::access::array_i64(&obj.array("features_")?.data)
            .ok_or_else(|| obj.malformed("features_ is not an integer array"))?
            .into_iter()
            .map(|j| usize::try_from(j).ok().filter(|&j| j < n_features))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| obj.malformed("features_ holds an index out of range"))?;
        if all && features.len() != n_features {
            return Err(obj.malformed("features=\"all\" without every feature in features_"));
        }
        Ok(MissingIndicator {
            n_features,
            missing,
            features,
            error_on_new: !all && obj.bool_or("error_on_new", true)?,
        })
    }

    /// The indicator columns of `m` (`n_rows x features.len()`), row-major.
    fn indicators(&self, m: &Matrix) -> Result<Vec<f64>, PredictError> {
        if self.error_on_new {
            let new: Vec<usize> = (0..m.n_cols)
                .filter(|j| !self.features.contains(j))
                .filter(|&j| {
                    (0..m.n_rows).any(|i| is_missing_num(&self.missing, m.data[i * m.n_cols + j]))
                })
                .collect();
            if !new.is_empty() {
                return Err(PredictError::InvalidInput(format!(
                    "The features {new:?} have missing values in transform but have no missing \
                     values in fit (MissingIndicator)"
                )));
            }
        }
        let mut out = Vec::with_capacity(m.n_rows * self.features.len());
        for i in 0..m.n_rows {
            let row = &m.data[i * m.n_cols..(i + 1) * m.n_cols];
            out.extend(
                self.features
                    .iter()
                    .map(|&j| f64::from(u8::from(is_missing_num(&self.missing, row[j])))),
            );
        }
        Ok(out)
    }
}

impl Transformer for MissingIndicator {
    fn n_features_in(&self) -> Option<usize> {
        Some(self.n_features)
    }

    fn input_kind(&self, _j: usize) -> ColumnKind {
        ColumnKind::Numeric
    }

    fn transform(&self, x: Data<'_>) -> Result<Data<'static>, PredictError> {
        if x.n_cols() != self.n_features {
            return Err(PredictError::InvalidInput(format!(
                "X has {} features, but MissingIndicator is expecting {} features as input",
                x.n_cols(),
                self.n_features
            )));
        }
        let m = x.into_dense("MissingIndicator")?;
        Ok(Data::Dense(Matrix {
            data: self.indicators(&m)?,
            n_rows: m.n_rows,
            n_cols: self.features.len(),
        }))
    }
}

impl SimpleImputer {
    fn build(obj: Obj<'_>) -> Result<SimpleImputer, ModelError> {
        let indicator = if obj.bool_or("add_indicator", false)? {
            let indicator = MissingIndicator::build(obj.obj("indicator_")?)?;
            Some(indicator)
        } else {
            None
        };
        let strategy = obj.str("strategy")?;
        if !matches!(strategy, "mean" | "median" | "most_frequent" | "constant") {
            return Err(obj.unsupported(format!("strategy {strategy:?}")));
        }
        let missing = missing_values(obj)?;
        let stats = obj.array("statistics_")?;
        let fills: Vec<Fill> = match &stats.data {
            ArrayData::Object(items) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(Fill::Str(s.clone())),
                    v => as_f64(v)
                        .map(Fill::Num)
                        .ok_or_else(|| obj.unsupported("a non-string, non-numeric statistic")),
                })
                .collect::<Result<_, _>>()?,
            ArrayData::Str(items) => items.iter().cloned().map(Fill::Str).collect(),
            _ => super::access::array_f64(stats)
                .ok_or_else(|| obj.malformed("statistics_ is not numeric"))?
                .into_iter()
                .map(Fill::Num)
                .collect(),
        };
        let keep_all = strategy == "constant" || obj.bool_or("keep_empty_features", false)?;
        let fills: Vec<Option<Fill>> = fills
            .into_iter()
            .map(|f| match f {
                Fill::Num(v) if v.is_nan() && !keep_all => None,
                f => Some(f),
            })
            .collect();
        let n_features = obj.n_features_in()?.unwrap_or(fills.len());
        if fills.len() != n_features {
            return Err(obj.malformed("statistics_ does not match n_features_in_"));
        }
        if let Some(indicator) = &indicator {
            if fills.iter().any(|f| matches!(f, Some(Fill::Str(_)))) {
                return Err(obj.unsupported("add_indicator=True over text columns"));
            }
            if indicator.n_features != n_features || indicator.missing != missing {
                return Err(obj.malformed("indicator_ does not match the imputer"));
            }
        }
        Ok(SimpleImputer {
            n_features,
            fills,
            missing,
            indicator,
        })
    }

    fn is_missing_num(&self, v: f64) -> bool {
        is_missing_num(&self.missing, v)
    }
}

impl Transformer for SimpleImputer {
    fn n_features_in(&self) -> Option<usize> {
        Some(self.n_features)
    }

    fn input_kind(&self, j: usize) -> ColumnKind {
        match self.fills.get(j) {
            Some(Some(Fill::Str(_))) => ColumnKind::String,
            _ if matches!(self.missing, Missing::Str(_)) => ColumnKind::String,
            _ => ColumnKind::Numeric,
        }
    }

    fn transform(&self, x: Data<'_>) -> Result<Data<'static>, PredictError> {
        if x.n_cols() != self.n_features {
            return Err(PredictError::InvalidInput(format!(
                "X has {} features, but SimpleImputer is expecting {} features as input",
                x.n_cols(),
                self.n_features
            )));
        }
        let any_text = self.fills.iter().any(|f| matches!(f, Some(Fill::Str(_))))
            || matches!(x, Data::Table(ref t) if t.columns.iter().any(|c| matches!(c, Column::Str(_))));
        if !any_text {
            let m = x.into_dense("SimpleImputer")?;
            if m.data.iter().any(|v| v.is_infinite()) && self.missing == Missing::NaN {
                return Err(PredictError::InvalidInput(
                    "Input X contains infinity (SimpleImputer does not accept it)".into(),
                ));
            }
            let indicators = match &self.indicator {
                Some(indicator) => Some(indicator.indicators(&m)?),
                None => None,
            };
            let kept: Vec<(usize, f64)> = self
                .fills
                .iter()
                .enumerate()
                .filter_map(|(j, f)| match f {
                    Some(Fill::Num(v)) => Some((j, *v)),
                    _ => None,
                })
                .collect();
            let n_indicators = self.indicator.as_ref().map_or(0, |ind| ind.features.len());
            let mut out = Vec::with_capacity(m.n_rows * (kept.len() + n_indicators));
            for i in 0..m.n_rows {
                let row = &m.data[i * m.n_cols..(i + 1) * m.n_cols];
                for &(j, fill) in &kept {
                    let v = row[j];
                    out.push(if self.is_missing_num(v) { fill } else { v });
                }
                if let Some(ind) = &indicators {
                    out.extend_from_slice(&ind[i * n_indicators..(i + 1) * n_indicators]);
                }
            }
            return Ok(Data::Dense(Matrix {
                data: out,
                n_rows: m.n_rows,
                n_cols: kept.len() + n_indicators,
            }));
        }
        if self.indicator.is_some() {
            return Err(PredictError::InvalidInput(
                "SimpleImputer(add_indicator=True) takes numbers only".into(),
            ));
        }
        // Text columns: scikit-learn works on an object array; missing text is NaN.
        let table = x.into_table()?;
        let mut columns = Vec::new();
        for (col, fill) in table.columns.into_iter().zip(&self.fills) {
            let Some(fill) = fill else { continue };
            let col = match (col, fill) {
                (Column::Num(v), Fill::Num(f)) => Column::Num(
                    v.into_iter()
                        .map(|x| if self.is_missing_num(x) { *f } else { x })
                        .collect(),
                ),
                (Column::Str(v), Fill::Str(f)) => Column::Str(
                    v.into_iter()
                        .map(|x| match (&x, &self.missing) {
                            (None, Missing::NaN) => Some(f.clone()),
                            (Some(s), Missing::Str(m)) if s == m => Some(f.clone()),
                            _ => x,
                        })
                        .collect(),
                ),
                (Column::Num(v), Fill::Str(f)) if v.iter().all(|x| self.is_missing_num(*x)) => {
                    Column::Str(vec![Some(f.clone()); v.len()])
                }
                _ => {
                    return Err(PredictError::InvalidInput(
                        "SimpleImputer: a column mixes text and numbers".into(),
                    ))
                }
            };
            columns.push(col);
        }
        Ok(Data::Table(Table {
            n_rows: table.n_rows,
            columns,
            names: None,
        }))
    }
}

/// `FunctionTransformer()` without a function: the identity. scikit-learn 1.7+ stores
/// a `ColumnTransformer`'s `"passthrough"` parts as one of these.
#[derive(Debug)]
struct Identity {
    n_features: Option<usize>,
}

impl Identity {
    fn build(obj: Obj<'_>) -> Result<Identity, ModelError> {
        if obj.some("func").is_some() {
            return Err(obj.unsupported("a FunctionTransformer with a function"));
        }
        Ok(Identity {
            n_features: obj.n_features_in()?,
        })
    }
}

impl Transformer for Identity {
    fn n_features_in(&self) -> Option<usize> {
        self.n_features
    }

    fn input_kind(&self, _j: usize) -> ColumnKind {
        ColumnKind::Numeric
    }

    fn transform(&self, x: Data<'_>) -> Result<Data<'static>, PredictError> {
        Ok(match x {
            Data::Borrowed(m) => Data::Dense(Matrix {
                data: m.data.to_vec(),
                n_rows: m.n_rows,
                n_cols: m.n_cols,
            }),
            Data::Dense(m) => Data::Dense(m),
            Data::Table(t) => Data::Table(t),
            Data::Sparse(s) => Data::Sparse(s),
        })
    }
}
