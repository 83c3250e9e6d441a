//! Features into a model's input tensors: positional or named rows laid out for the
//! model (one `[rows, features]` tensor, or one input per column), each value
//! converted for its input's kind, as the simple API and scoring jobs
//! (`crate::jobs::score`) both read them; and the outputs that answer.

use std::collections::BTreeMap;

use super::Rows;
use crate::api::ApiError;
use crate::manager::ServableHandle;
use crate::model_config::{FeatureValue, ModelConfig};
use crate::tensor::{DataType, Tensor, TensorData, TensorSpec};

/// The model's input tensors for `rows`: column by column for a model with one input
/// per column, else one `[rows, features]` tensor. Batch scoring (`crate::jobs`)
/// lays out its rows through this too, so both read features the same way.
pub fn row_inputs(handle: &ServableHandle, rows: &Rows) -> Result<Vec<(String, Tensor)>, ApiError> {
    if let (Some(_), Rows::Positional(rows)) = (&handle.pipeline.tokenizer, rows) {
        // A text model with a tokenizer: one text per row, tokenized by its pipeline.
        let texts = rows
            .iter()
            .map(|row| match row.as_slice() {
                [FeatureValue::Text(t)] => Ok(t.clone().into_bytes()),
                _ => Err(ApiError::InvalidArgument(format!(
                    "model {:?} takes text: send \"text\" or \"texts\"",
                    handle.model
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tensor = Tensor::new(vec![texts.len()], TensorData::Bytes(texts))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok(vec![(crate::preprocess::TEXT_INPUT.to_string(), tensor)]);
    }
    if let Rows::Files(files) = rows {
        // Unnamed: the pipeline's image input (else the model's only input, which
        // refuses bytes by its dtype).
        let tensor = Tensor::new(vec![files.len()], TensorData::Bytes(files.clone()))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok(vec![(String::new(), tensor)]);
    }
    Ok(match per_column_inputs(handle, rows) {
        Some(specs) => rows_to_columns(handle, specs, rows)?,
        None => {
            let input = input_spec(handle)?;
            vec![(input.name.clone(), rows_to_tensor(handle, input, rows)?)]
        }
    })
}

/// How named features feed the model, decided once for a whole batch job: for each
/// input, the features whose values fill it, in order. One input per column (as
/// [`row_inputs`] lays out named rows for such a model), or every feature into the
/// one `[rows, features]` input (`[rows]` for a rank-1 input fed one feature).
pub fn named_layout(handle: &ServableHandle) -> Result<Vec<(TensorSpec, Vec<String>)>, ApiError> {
    let inputs = handle.backend.signature().inputs.as_slice();
    if inputs.len() >= 2 && handle.config().input_name.is_none() {
        return Ok(inputs
            .iter()
            .map(|s| (s.clone(), vec![s.name.clone()]))
            .collect());
    }
    let input = input_spec(handle)?.clone();
    Ok(vec![(input, feature_columns(handle)?)])
}

/// A text feature value read as a number for `input` (surrounding spaces allowed).
pub fn number_from_text(input: &TensorSpec, text: &str) -> Result<f64, ApiError> {
    let trimmed = text.trim();
    let n = trimmed.parse::<f64>().map_err(|_| {
        ApiError::InvalidArgument(format!(
            "feature value {text:?} is not a number, and the model's input {:?} takes numbers",
            input.name
        ))
    })?;
    // Infinity is asked for by name ("inf", "Infinity"); a number too large for a
    // double ("1e400") is out of range, as the same number unquoted is.
    let named = trimmed
        .trim_start_matches(['+', '-'])
        .chars()
        .next()
        .is_some_and(|c| c.eq_ignore_ascii_case(&'i'));
    if n.is_infinite() && !named {
        return Err(ApiError::InvalidArgument(format!(
            "feature value {text:?} is out of range for a number (the largest is about 1.8e308)"
        )));
    }
    Ok(n)
}

/// Each row's class with the highest score (the first of equals), `[rows]`, from a
/// TensorFlow classification signature's `classes` (every class name of each row)
/// and `scores`, `[rows, classes]` each, checked as TF Serving's Classify checks them.
pub fn top_class_per_row(classes: &Tensor, scores: &Tensor) -> Result<Tensor, ApiError> {
    let misfit = || {
        ApiError::InvalidArgument(format!(
            "the classification signature's classes {:?} and scores {:?} should both be \
             [batch_size, num_classes], with the same shape",
            classes.shape(),
            scores.shape()
        ))
    };
    let (&[rows, k], true) = (classes.shape(), classes.shape() == scores.shape()) else {
        return Err(misfit());
    };
    let (TensorData::Bytes(names), Ok(TensorData::F64(values))) = (
        classes.data(),
        scores
            .clone()
            .cast(DataType::F64)
            .map(Tensor::into_parts)
            .map(|(_, d)| d),
    ) else {
        return Err(misfit());
    };
    if k == 0 {
        return Err(misfit());
    }
    let best: Vec<Vec<u8>> = values
        .chunks(k)
        .zip(names.chunks(k))
        .map(|(row, row_names)| {
            let top = (1..k).fold(0, |best, j| if row[j] > row[best] { j } else { best });
            row_names[top].clone()
        })
        .collect();
    Tensor::new(vec![rows], TensorData::Bytes(best)).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The outputs a simple answer gives: the prediction's, and the class
/// probabilities' when the model has them (config first, then the model's traits,
/// then its first output). A TensorFlow classification signature's are its
/// `classes` and `scores` (the model's traits), and the answer's prediction is each
/// row's top class ([`top_class_per_row`]).
pub fn answer_outputs(handle: &ServableHandle) -> Result<(String, Option<String>), ApiError> {
    let traits = handle.backend.traits();
    let outputs = &handle.backend.signature().outputs;
    let prediction_output = handle
        .config()
        .prediction_output
        .clone()
        .or_else(|| traits.prediction_output.clone())
        .or_else(|| outputs.first().map(|o| o.name.clone()))
        .ok_or_else(|| ApiError::Internal("the model has no outputs".into()))?;
    let probabilities_output = handle
        .config()
        .probabilities_output
        .clone()
        .or_else(|| traits.probabilities_output.clone())
        .filter(|p| *p != prediction_output);
    Ok((prediction_output, probabilities_output))
}

/// The feature names a named row may carry for this model: its inputs' names for a
/// model fed column by column, else its feature names (config, then model).
pub fn feature_columns(handle: &ServableHandle) -> Result<Vec<String>, ApiError> {
    let inputs = &handle.backend.signature().inputs;
    if inputs.len() >= 2 && handle.config().input_name.is_none() {
        return Ok(inputs.iter().map(|s| s.name.clone()).collect());
    }
    let config = handle.config();
    feature_names(handle, &config)
        .map(|n| n.to_vec())
        .ok_or_else(|| {
            ApiError::InvalidArgument(format!(
                "model {:?} does not know its feature names (set feature_names in its \
             config.toml), so rows cannot be read by column name",
                handle.model
            ))
        })
}

/// The model's inputs when the rows feed it column by column: it has several inputs,
/// its config names none of them as the one to use, and the rows are named, or
/// positional with one value per input.
fn per_column_inputs<'h>(handle: &'h ServableHandle, rows: &Rows) -> Option<&'h [TensorSpec]> {
    let inputs = handle.backend.signature().inputs.as_slice();
    if inputs.len() < 2 || handle.config().input_name.is_some() {
        return None;
    }
    match rows {
        Rows::Named(_) => Some(inputs),
        Rows::Files(_) => None,
        Rows::Positional(r) => r
            .iter()
            .all(|row| row.len() == inputs.len())
            .then_some(inputs),
    }
}

/// One tensor per model input from the rows: by name (the input's name; a missing
/// one from `feature_defaults`), or by position in input order.
fn rows_to_columns(
    handle: &ServableHandle,
    inputs: &[TensorSpec],
    rows: &Rows,
) -> Result<Vec<(String, Tensor)>, ApiError> {
    // One read of the config in force for the whole request.
    let config = handle.config();
    let defaults = &config.feature_defaults;
    let columns: Vec<Vec<&FeatureValue>> = match rows {
        Rows::Files(_) => return Err(ApiError::Internal("files are not columns".into())),
        Rows::Positional(rows) => (0..inputs.len())
            .map(|i| rows.iter().map(|row| &row[i]).collect())
            .collect(),
        Rows::Named(rows) => {
            // Features the model knows but does not use (a dropped column) are accepted.
            let known = |name: &str| {
                inputs.iter().any(|s| s.name == name)
                    || feature_names(handle, &config).is_some_and(|n| n.iter().any(|f| f == name))
            };
            let input_names: Vec<&str> = inputs.iter().map(|s| s.name.as_str()).collect();
            for (i, row) in rows.iter().enumerate() {
                let unknown: Vec<&String> = row.keys().filter(|k| !known(k)).collect();
                let missing: Vec<&str> = input_names
                    .iter()
                    .copied()
                    .filter(|n| !row.contains_key(*n) && !defaults.contains_key(*n))
                    .collect();
                if !unknown.is_empty() || !missing.is_empty() {
                    let mut why = Vec::new();
                    if !unknown.is_empty() {
                        why.push(format!("unknown feature(s) {unknown:?}"));
                    }
                    if !missing.is_empty() {
                        why.push(format!("missing feature(s) {missing:?}"));
                    }
                    let which = if rows.len() > 1 {
                        format!("row {i}: ")
                    } else {
                        String::new()
                    };
                    return Err(ApiError::InvalidArgument(format!(
                        "{which}{}; model {:?} takes one input per column: {input_names:?}",
                        why.join(", "),
                        handle.model
                    )));
                }
            }
            inputs
                .iter()
                .map(|spec| {
                    let n = spec.name.as_str();
                    let imputes = imputes(handle, spec);
                    rows.iter()
                        .map(|row| named_value(handle, spec, n, row.get(n), defaults, imputes))
                        .collect::<Result<_, _>>()
                })
                .collect::<Result<_, _>>()?
        }
    };
    inputs
        .iter()
        .zip(columns)
        .map(|(spec, column)| {
            let n = column.len();
            let data = column_data(
                spec,
                imputes(handle, spec),
                takes_nan(handle, spec),
                numeric_categories(handle, spec),
                &|_| format!("feature {:?}", spec.name),
                column.into_iter(),
            )?;
            let shape = if spec.shape.len() == 1 {
                vec![n]
            } else {
                vec![n, 1]
            };
            let tensor =
                Tensor::new(shape, data).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
            Ok((spec.name.clone(), tensor))
        })
        .collect()
}

/// A named feature's value: the one given, else its `feature_defaults` value; a
/// missing value given (JSON null) is the default's too, for an input the model
/// does not impute (where it would be refused). A boolean default for a text input
/// is the config's mistake (a TOML `true` where `"true"` was meant), told as such.
fn named_value<'a>(
    handle: &ServableHandle,
    input: &TensorSpec,
    feature: &str,
    given: Option<&'a FeatureValue>,
    defaults: &'a BTreeMap<String, FeatureValue>,
    imputes: bool,
) -> Result<&'a FeatureValue, ApiError> {
    let uses_default = match given {
        Some(FeatureValue::Missing) => !imputes,
        Some(_) => false,
        None => true,
    };
    let default = defaults.get(feature).filter(|_| uses_default);
    if let (Some(FeatureValue::Bool(b)), DataType::Bytes) = (default, input.dtype) {
        return Err(ApiError::Internal(format!(
            "model {:?}: its config.toml's feature_defaults gives feature {feature:?} the \
             boolean {b}, and the model's input {:?} takes text: write the default as a \
             string (\"{b}\") in config.toml",
            handle.model, input.name
        )));
    }
    default.or(given).ok_or_else(|| {
        ApiError::Internal(format!(
            "feature {feature:?} has no value and no default (it was checked to have one)"
        ))
    })
}

/// Whether the model fills missing values of `input` itself
/// (`ModelTraits::missing_inputs`).
pub fn imputes(handle: &ServableHandle, input: &TensorSpec) -> bool {
    handle.backend.traits().missing_inputs.contains(&input.name)
}

/// Whether `input` takes the text "NaN" as a number: every input but those of a
/// model a training job wrote that do not impute (`ModelTraits::trained`), for
/// which NaN is a missing value their training refused.
pub fn takes_nan(handle: &ServableHandle, input: &TensorSpec) -> bool {
    let traits = handle.backend.traits();
    !traits.trained || traits.missing_inputs.contains(&input.name)
}

/// Whether `input` is a categorical feature of a model a training job wrote whose
/// categories are numbers (`ModelTraits::numeric_category_inputs`): a number or
/// a text that reads as one goes in as the number's category text (`1`, `1.0` and
/// `"1.0"` all as `1`), as training read the column.
fn numeric_categories(handle: &ServableHandle, input: &TensorSpec) -> bool {
    input.dtype == DataType::Bytes
        && handle
            .backend
            .traits()
            .numeric_category_inputs
            .contains(&input.name)
}

/// The error for a missing value (JSON null) given to an input the model does not
/// impute.
pub fn missing_refused(input: &TensorSpec) -> ApiError {
    ApiError::InvalidArgument(format!(
        "a feature value is null, and the model's input {:?} does not take missing values \
         (only a trained model whose feature has a \"missing\" policy does)",
        input.name
    ))
}

/// `n`, read from the text `text`, unless it is NaN (a missing value) and `input`
/// does not take one (`takes_nan`): that is refused as a null is, as training
/// refuses it.
pub fn nan_refused(
    input: &TensorSpec,
    takes_nan: bool,
    text: &str,
    n: f64,
) -> Result<f64, ApiError> {
    if n.is_nan() && !takes_nan {
        return Err(ApiError::InvalidArgument(format!(
            "feature value {text:?} is a missing value, and the model's input {:?} does not \
             take missing values (only a trained model whose feature has a \"missing\" policy does)",
            input.name
        )));
    }
    Ok(n)
}

/// Feature values as the data of `input`: text for a string input (numbers written
/// out; with `numeric_categories`, numbers and text that reads as one written as
/// their category, `jobs::train::data::number_category`), numbers otherwise (text
/// that reads as a number is one). For an input the model imputes (`imputes`), a
/// null or a blank text is a missing value: NaN for a number, `""` for a string,
/// which the model fills as it was trained to.
///
/// A boolean is 1 or 0 to a numeric input (a pandas bool column a model was trained
/// on), itself to a BOOL input whose values are all booleans (numbers for a BOOL
/// input go as doubles, which `api::inputs` refuses, as for TF REST), and refused
/// by a text input, naming its feature (`feature_of` the value's index: `feature
/// "job"`, `the feature at position 2`): as "1" or "0" it was a wrong answer with
/// no error.
fn column_data<'a>(
    input: &TensorSpec,
    imputes: bool,
    takes_nan: bool,
    numeric_categories: bool,
    feature_of: &dyn Fn(usize) -> String,
    values: impl Iterator<Item = &'a FeatureValue> + Clone,
) -> Result<TensorData, ApiError> {
    use crate::jobs::train::data::{float_category, text_number_category};
    let blank = |s: &str| imputes && s.trim().is_empty();
    if input.dtype == DataType::Bool {
        let booleans = values.clone().map(|v| match v {
            FeatureValue::Bool(b) => Some(*b),
            _ => None,
        });
        if let Some(all) = booleans.collect::<Option<Vec<bool>>>() {
            return Ok(TensorData::Bool(all));
        }
    }
    if is_integer(input.dtype) {
        if let Some(data) = exact_integers(values.clone()) {
            return Ok(data);
        }
    }
    Ok(if input.dtype == DataType::Bytes {
        TensorData::Bytes(
            values
                .enumerate()
                .map(|(i, v)| match v {
                    FeatureValue::Text(s) if blank(s) => Ok(Vec::new()),
                    FeatureValue::Text(s) if numeric_categories => Ok(text_number_category(s)
                        .map_or_else(|| s.as_bytes().to_vec(), String::into_bytes)),
                    FeatureValue::Text(s) => Ok(s.as_bytes().to_vec()),
                    FeatureValue::Number(n) if numeric_categories => Ok(float_category(*n)
                        .unwrap_or_else(|| n.to_string())
                        .into_bytes()),
                    FeatureValue::Number(n) => Ok(n.to_string().into_bytes()),
                    FeatureValue::Bool(b) => Err(boolean_refused(&feature_of(i), *b, input)),
                    FeatureValue::Missing if imputes => Ok(Vec::new()),
                    FeatureValue::Missing => Err(missing_refused(input)),
                })
                .collect::<Result<_, _>>()?,
        )
    } else {
        TensorData::F64(
            values
                .map(|v| match v {
                    FeatureValue::Number(n) => Ok(*n),
                    FeatureValue::Bool(b) => Ok(f64::from(u8::from(*b))),
                    FeatureValue::Text(s) if blank(s) => Ok(f64::NAN),
                    FeatureValue::Text(s) => {
                        number_from_text(input, s).and_then(|n| nan_refused(input, takes_nan, s, n))
                    }
                    FeatureValue::Missing if imputes => Ok(f64::NAN),
                    FeatureValue::Missing => Err(missing_refused(input)),
                })
                .collect::<Result<_, _>>()?,
        )
    })
}

/// The error for a boolean given to a text input: written as "1" (as it once was)
/// it is a category the client did not mean, and which text was meant ("true",
/// "yes") only the client knows. `feature` names the value's feature (`feature "job"`, `the feature at position 2`).
fn boolean_refused(feature: &str, b: bool, input: &TensorSpec) -> ApiError {
    ApiError::InvalidArgument(format!(
        "{feature} is a boolean ({b}), and the model's input {:?} takes text: send it as a \
         string",
        input.name
    ))
}

fn is_integer(dtype: DataType) -> bool {
    use DataType::*;
    matches!(dtype, U8 | U16 | U32 | U64 | I8 | I16 | I32 | I64)
}

/// The values as integers, exactly, for an integer input: INT64, or UINT64 when one
/// is above `i64::MAX`; `None` when one is not an integer (a fraction, text that is
/// no integer, a missing value), which then goes as a double and is refused by the
/// cast to the input's dtype as before. Integers beyond 2^53 reach here as their
/// digits (`FeatureValue::integer`): as doubles they were rounded (9007199254740993
/// went in as ...992).
fn exact_integers<'a>(
    values: impl Iterator<Item = &'a FeatureValue> + Clone,
) -> Option<TensorData> {
    let integer = |v: &FeatureValue| -> Option<i128> {
        match v {
            // Past 2^53 a double is not the number written (integers that large come
            // as their digits): -2^63 - 1 read as a double is i64::MIN.
            FeatureValue::Number(n) if n.fract() == 0.0 && n.abs() <= 2f64.powi(53) => {
                Some(*n as i128)
            }
            FeatureValue::Text(s) => s.trim().parse::<i128>().ok(),
            FeatureValue::Bool(b) => Some(i128::from(*b)),
            _ => None,
        }
    };
    let all: Vec<i128> = values.map(integer).collect::<Option<_>>()?;
    if let Ok(v) = all.iter().map(|&i| i64::try_from(i)).collect() {
        return Some(TensorData::I64(v));
    }
    all.iter()
        .map(|&i| u64::try_from(i))
        .collect::<Result<_, _>>()
        .ok()
        .map(TensorData::U64)
}

fn input_spec(handle: &ServableHandle) -> Result<&TensorSpec, ApiError> {
    let inputs = &handle.backend.signature().inputs;
    match handle.config().input_name.as_deref() {
        Some(name) => inputs.iter().find(|s| s.name == name).ok_or_else(|| {
            ApiError::Internal(format!(
                "the model config names input {name:?}, which the model does not have"
            ))
        }),
        None => match inputs.as_slice() {
            [only] => Ok(only),
            _ => {
                let names: Vec<&str> = inputs.iter().map(|s| s.name.as_str()).collect();
                Err(ApiError::InvalidArgument(format!(
                    "model {:?} takes one input per column: give each row {} values, one per \
                     input in this order, or name them ({names:?}); to feed one input of it \
                     instead, set input_name in its config.toml",
                    handle.model,
                    names.len()
                )))
            }
        },
    }
}

/// The model's feature names: its config's (`config`, the one in force), else the
/// model's own, else, for a model of one input that takes one value a row (`[n]` or
/// `[n, 1]`: a trained model of one feature), that input's name.
pub fn feature_names<'a>(
    handle: &'a ServableHandle,
    config: &'a ModelConfig,
) -> Option<std::borrow::Cow<'a, [String]>> {
    use std::borrow::Cow;
    if let Some(names) = config.feature_names.as_ref().or(handle
        .backend
        .traits()
        .feature_names
        .as_ref())
    {
        return Some(Cow::Borrowed(names.as_slice()));
    }
    let inputs = &handle.backend.signature().inputs;
    let one = match config.input_name.as_deref() {
        Some(name) => inputs.iter().find(|s| s.name == name)?,
        None => match inputs.as_slice() {
            [only] => only,
            _ => return None,
        },
    };
    (!one.any_rank() && matches!(one.shape.as_slice(), [_] | [_, 1]))
        .then(|| Cow::Owned(vec![one.name.clone()]))
}

fn rows_to_tensor(
    handle: &ServableHandle,
    input: &TensorSpec,
    rows: &Rows,
) -> Result<Tensor, ApiError> {
    // One read of the config in force for the whole request.
    let config = handle.config();
    let positional: Vec<Vec<&FeatureValue>> = match rows {
        Rows::Files(_) => return Err(ApiError::Internal("files are not features".into())),
        Rows::Positional(rows) => rows.iter().map(|r| r.iter().collect()).collect(),
        Rows::Named(rows) => {
            let names = feature_names(handle, &config).ok_or_else(|| {
                ApiError::InvalidArgument(format!(
                    "model {:?} does not know its feature names (set feature_names in its \
                     config.toml), so features must be given as a list of values",
                    handle.model
                ))
            })?;
            let defaults = &config.feature_defaults;
            let imputes = imputes(handle, input);
            rows.iter()
                .map(|row| {
                    let unknown: Vec<&String> = row.keys().filter(|k| !names.contains(k)).collect();
                    let missing: Vec<&String> = names
                        .iter()
                        .filter(|n| !row.contains_key(*n) && !defaults.contains_key(*n))
                        .collect();
                    if !unknown.is_empty() || !missing.is_empty() {
                        let mut why = Vec::new();
                        if !unknown.is_empty() {
                            why.push(format!("unknown feature(s) {unknown:?}"));
                        }
                        if !missing.is_empty() {
                            why.push(format!("missing feature(s) {missing:?}"));
                        }
                        return Err(ApiError::InvalidArgument(format!(
                            "{}; model {:?} takes {names:?}",
                            why.join(", "),
                            handle.model
                        )));
                    }
                    names
                        .iter()
                        .map(|n| named_value(handle, input, n, row.get(n), defaults, imputes))
                        .collect()
                })
                .collect::<Result<_, _>>()?
        }
    };
    let width = positional[0].len();
    if width == 0 {
        return Err(ApiError::InvalidArgument(
            "a row of features is empty".into(),
        ));
    }
    if let Some(i) = positional.iter().position(|r| r.len() != width) {
        return Err(ApiError::InvalidArgument(format!(
            "row {i} has {} features but row 0 has {width}",
            positional[i].len()
        )));
    }
    // The feature of each value, for an error: by name where the model has names
    // for its `width` features, else by position in the row.
    let names = feature_names(handle, &config).filter(|n| n.len() == width);
    let feature_of = |i: usize| match &names {
        Some(names) => format!("feature {:?}", names[i % width]),
        None => format!("the feature at position {}", i % width),
    };
    let data = column_data(
        input,
        imputes(handle, input),
        takes_nan(handle, input),
        numeric_categories(handle, input),
        &feature_of,
        positional.iter().flatten().copied(),
    )?;
    // A rank-1 input (a text model's `[batch]` of strings) takes one value per row.
    let shape = if input.shape.len() == 1 && width == 1 {
        vec![positional.len()]
    } else {
        vec![positional.len(), width]
    };
    Tensor::new(shape, data).map_err(|e| ApiError::InvalidArgument(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The feature of every value in these tests.
    fn x(_: usize) -> String {
        "feature \"x\"".into()
    }

    fn spec(dtype: DataType) -> TensorSpec {
        TensorSpec {
            name: "x".into(),
            dtype,
            shape: vec![-1, 2],
        }
    }

    #[test]
    fn nan_text_is_a_missing_value_only_an_imputing_input_takes() {
        let nan = [FeatureValue::Text("NaN".into()), FeatureValue::Number(1.0)];
        // A trained model's input that does not impute.
        let e = column_data(&spec(DataType::F32), false, false, false, &x, nan.iter()).unwrap_err();
        assert!(e.to_string().contains("\"NaN\" is a missing value"), "{e}");
        // One that imputes, and any other model's input (NaN is a number to it).
        for (imputes, takes_nan) in [(true, true), (false, true)] {
            let TensorData::F64(v) = column_data(
                &spec(DataType::F32),
                imputes,
                takes_nan,
                false,
                &x,
                nan.iter(),
            )
            .unwrap() else {
                panic!()
            };
            assert!(v[0].is_nan() && v[1] == 1.0);
        }
    }

    #[test]
    fn integers_past_2_to_the_53_reach_an_integer_input_exactly() {
        // As doubles they went in as ...992 and i64::MAX "did not fit INT64".
        let values = [
            FeatureValue::integer(9_007_199_254_740_993),
            FeatureValue::integer(i64::MAX.into()),
        ];
        assert_eq!(
            column_data(&spec(DataType::I64), false, true, false, &x, values.iter()).unwrap(),
            TensorData::I64(vec![9_007_199_254_740_993, i64::MAX])
        );
        let values = [
            FeatureValue::integer(u64::MAX.into()),
            FeatureValue::Number(1.0),
        ];
        assert_eq!(
            column_data(&spec(DataType::U64), false, true, false, &x, values.iter()).unwrap(),
            TensorData::U64(vec![u64::MAX, 1])
        );
        // A text input gets the digits; a float input the nearest double, as before.
        let big = [FeatureValue::integer(9_007_199_254_740_993)];
        assert_eq!(
            column_data(&spec(DataType::Bytes), false, true, false, &x, big.iter()).unwrap(),
            TensorData::Bytes(vec![b"9007199254740993".to_vec()])
        );
        assert_eq!(
            column_data(&spec(DataType::F64), false, true, false, &x, big.iter()).unwrap(),
            TensorData::F64(vec![9_007_199_254_740_992.0])
        );
        // Not an integer: a double, which the cast to the input's dtype refuses.
        let half = [FeatureValue::Number(1.5)];
        assert_eq!(
            column_data(&spec(DataType::I64), false, true, false, &x, half.iter()).unwrap(),
            TensorData::F64(vec![1.5])
        );
        assert_eq!(FeatureValue::integer(3), FeatureValue::Number(3.0));
        // 2^63 is a double, but prints as ...6000: a text input gets the digits.
        let exact = [FeatureValue::integer(1 << 63)];
        assert_eq!(
            column_data(&spec(DataType::Bytes), false, true, false, &x, exact.iter()).unwrap(),
            TensorData::Bytes(vec![b"9223372036854775808".to_vec()])
        );
        // A number no integer type holds, read as a double (-2^63 - 1 is then
        // exactly i64::MIN), goes as a double, which the cast refuses, as before.
        let beyond = [FeatureValue::Number(-9_223_372_036_854_775_809.0)];
        assert!(matches!(
            column_data(&spec(DataType::I64), false, true, false, &x, beyond.iter()).unwrap(),
            TensorData::F64(_)
        ));
    }

    #[test]
    fn a_feature_whose_categories_are_numbers_gets_each_number_as_one_text() {
        let text = |s: &str| FeatureValue::Text(s.into());
        let values = [
            FeatureValue::Number(1.0),
            text("1.0"),
            text(" 1 "),
            text("01"),
            text("abc"),
            FeatureValue::Number(0.5),
            text(""),
        ];
        let bytes =
            |v: &[&str]| TensorData::Bytes(v.iter().map(|s| s.as_bytes().to_vec()).collect());
        assert_eq!(
            column_data(&spec(DataType::Bytes), true, true, true, &x, values.iter()).unwrap(),
            bytes(&["1", "1", "1", "1", "abc", "0.5", ""])
        );
        // Any other string input takes text as written.
        assert_eq!(
            column_data(&spec(DataType::Bytes), true, true, false, &x, values.iter()).unwrap(),
            bytes(&["1", "1.0", " 1 ", "01", "abc", "0.5", ""])
        );
    }

    #[test]
    fn a_boolean_is_a_number_to_a_numeric_input_a_bool_to_a_bool_input_and_no_text() {
        let booleans = [FeatureValue::Bool(true), FeatureValue::Bool(false)];
        // Numeric inputs take 1 and 0, as before (a pandas bool column).
        assert_eq!(
            column_data(
                &spec(DataType::F32),
                false,
                true,
                false,
                &x,
                booleans.iter()
            )
            .unwrap(),
            TensorData::F64(vec![1.0, 0.0])
        );
        assert_eq!(
            column_data(
                &spec(DataType::I64),
                false,
                true,
                false,
                &x,
                booleans.iter()
            )
            .unwrap(),
            TensorData::I64(vec![1, 0])
        );
        // A BOOL input takes them as booleans (it refused them as FP64).
        assert_eq!(
            column_data(
                &spec(DataType::Bool),
                false,
                true,
                false,
                &x,
                booleans.iter()
            )
            .unwrap(),
            TensorData::Bool(vec![true, false])
        );
        // Numbers for a BOOL input stay numbers, which `api::inputs` refuses.
        let mixed = [FeatureValue::Bool(true), FeatureValue::Number(1.0)];
        assert_eq!(
            column_data(&spec(DataType::Bool), false, true, false, &x, mixed.iter()).unwrap(),
            TensorData::F64(vec![1.0, 1.0])
        );
        // A text input refuses one, naming the feature (it went in as "1").
        for numeric_categories in [false, true] {
            let e = column_data(
                &spec(DataType::Bytes),
                false,
                true,
                numeric_categories,
                &x,
                booleans.iter(),
            )
            .unwrap_err();
            assert!(matches!(e, ApiError::InvalidArgument(_)), "{e:?}");
            assert_eq!(
                e.to_string(),
                "feature \"x\" is a boolean (true), and the model's input \"x\" takes text: \
                 send it as a string"
            );
        }
    }
}
