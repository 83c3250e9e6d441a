//! A batch of source rows as the model's input tensors: each input's features
//! found among the source's columns (or the model config's defaults) once per job,
//! then every cell converted as `/predict` converts a named feature.

use super::failed;
use crate::api::simple;
use crate::jobs::io::Value;
use crate::jobs::train::data::{float_category, text_number_category};
use crate::jobs::{JobContext, JobError};
use crate::model_config::FeatureValue;
use crate::tensor::{DataType, Tensor, TensorData, TensorSpec};

use super::ScoringPlan;

pub(super) struct RowError {
    pub(super) row: usize,
    pub(super) message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a trained version's `training.json` says of its categorical features, read
/// once per job. Both lists are empty for a model no training job wrote.
#[derive(Default)]
pub(super) struct TrainedFeatures {
    /// Those whose `missing` policy is `error`: their inputs refuse a blank value as
    /// training did.
    refusing_missing: Vec<String>,
    /// Those whose categories are numbers (`train::numeric_categorical_features`):
    /// a cell that is a number, or text that reads as one, goes in as its number's
    /// category text (`train::data::number_category`).
    numeric: Vec<String>,
}

impl TrainedFeatures {
    pub(super) fn of(ctx: &JobContext, model: &str, version: u64) -> TrainedFeatures {
        let Some(training) = crate::jobs::train::training_record(&ctx.state, model, version) else {
            return TrainedFeatures::default();
        };
        TrainedFeatures {
            refusing_missing: training["encodings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["kind"] == "categorical" && e["impute"].is_null())
                .filter_map(|e| e["key"].as_str().map(str::to_string))
                .collect(),
            numeric: crate::jobs::train::numeric_categorical_features(&training),
        }
    }
}

/// Where one feature's cells come from: a column of the source, or the model
/// config's `feature_defaults` value when the source lacks the column.
enum Cell {
    Column(usize),
    Default(FeatureValue),
}

/// One model input and the features that fill it, in order: the layout
/// `api::simple::row_inputs` gives named rows, decided once for the whole job so
/// that each batch goes from the source's cells straight into the input tensors
/// (no per-row map of names, no copy of a text cell that is read as a number).
pub(super) struct InputPlan {
    spec: TensorSpec,
    features: Vec<(String, Cell)>,
    /// Whether the model fills this input's missing values (an empty or blank cell,
    /// a null): they go in as NaN or `""`.
    imputes: bool,
    /// Whether the text `NaN` (or a NaN cell) goes in as a number: unless the model
    /// is a trained one and this input does not impute (`ScoringPlan::trained`).
    takes_nan: bool,
    /// Whether a blank text is a missing value this input refuses: a trained
    /// model's categorical feature whose `missing` policy is `error` (training
    /// refused it; otherwise it would score as an unseen category). Any other
    /// string input takes `""` as text.
    blank_is_missing: bool,
    /// Whether this input is a trained model's categorical feature whose categories
    /// are numbers: a number, or a text that reads as one, goes in as the number's
    /// category text (`1.0`, `"1.0"` and `" 1 "` all as `1`), as training read it.
    numeric_categories: bool,
}

/// The plan of each input in `layout` (`api::simple::named_layout`) over the
/// source's `columns`; a feature the source lacks takes the config's default, and
/// one without a default fails the job, naming every such feature.
pub(super) fn plan_inputs(
    plan: &ScoringPlan,
    columns: &[String],
    trained: &TrainedFeatures,
) -> Result<Vec<InputPlan>, JobError> {
    let (layout, model) = (plan.layout.clone(), &plan.model);
    let index_of = |name: &str| columns.iter().position(|c| c == name);
    let defaults = &plan.feature_defaults;
    let features: Vec<&String> = layout.iter().flat_map(|(_, names)| names).collect();
    let missing: Vec<&&String> = features
        .iter()
        .filter(|f| index_of(f).is_none() && !defaults.contains_key(**f))
        .collect();
    if !missing.is_empty() {
        return Err(failed(format!(
            "the source has no column {missing:?}, which model {model:?} needs (its \
             features: {features:?}; the source's columns: {columns:?})"
        )));
    }
    layout
        .into_iter()
        .map(|(spec, names)| {
            if names.is_empty() {
                return Err(failed(format!(
                    "model {model:?} has no features to read from the source"
                )));
            }
            let features = names
                .into_iter()
                .map(|name| {
                    let cell = match index_of(&name) {
                        Some(i) => Cell::Column(i),
                        // Checked above: a missing column has a default.
                        None => Cell::Default(defaults[&name].clone()),
                    };
                    (name, cell)
                })
                .collect();
            let imputes = plan.missing_inputs.contains(&spec.name);
            let blank_is_missing = !imputes && trained.refusing_missing.contains(&spec.name);
            let numeric_categories =
                spec.dtype == DataType::Bytes && trained.numeric.contains(&spec.name);
            Ok(InputPlan {
                spec,
                features,
                imputes,
                takes_nan: imputes || !plan.trained,
                blank_is_missing,
                numeric_categories,
            })
        })
        .collect()
}

/// The batch's input tensors, laid out by `plans`: numbers for a numeric input (a
/// text cell that reads as a number is one), text for a string input (numbers
/// written out), as `/predict` reads features.
pub(super) fn input_tensors(
    plans: &[InputPlan],
    batch: &[Vec<Value>],
) -> Result<Vec<(String, Tensor)>, RowError> {
    plans
        .iter()
        .map(|plan| {
            let (n, width) = (batch.len(), plan.features.len());
            let data = if plan.spec.dtype == DataType::Bytes {
                let mut data = Vec::with_capacity(n * width);
                for (r, row) in batch.iter().enumerate() {
                    for (name, cell) in &plan.features {
                        data.push(
                            text_cell(plan, row, name, cell)
                                .map_err(|message| RowError { row: r, message })?,
                        );
                    }
                }
                TensorData::Bytes(data)
            } else {
                let mut data = Vec::with_capacity(n * width);
                for (r, row) in batch.iter().enumerate() {
                    for (name, cell) in &plan.features {
                        data.push(
                            number_cell(&plan.spec, row, name, cell, plan.imputes, plan.takes_nan)
                                .map_err(|message| RowError { row: r, message })?,
                        );
                    }
                }
                TensorData::F64(data)
            };
            // A rank-1 input (a text model's `[batch]`) takes one value per row.
            let shape = if plan.spec.shape.len() == 1 && width == 1 {
                vec![n]
            } else {
                vec![n, width]
            };
            let tensor = Tensor::new(shape, data).map_err(|e| RowError {
                row: 0,
                message: e.to_string(),
            })?;
            Ok((plan.spec.name.clone(), tensor))
        })
        .collect()
}

/// A cell as a number for `spec`; with `imputes`, an empty or blank cell is NaN,
/// which the model fills. NaN (the text, or a NaN cell) is a number to an input that
/// `takes_nan`, else a missing value, refused as a null is and as training refused it.
fn number_cell(
    spec: &TensorSpec,
    row: &[Value],
    name: &str,
    cell: &Cell,
    imputes: bool,
    takes_nan: bool,
) -> Result<f64, String> {
    let text = |s: &str| match imputes && s.trim().is_empty() {
        true => Ok(f64::NAN),
        false => simple::number_from_text(spec, s)
            .and_then(|n| simple::nan_refused(spec, takes_nan, s, n))
            .map_err(|e| format!("column {name:?}: {e}")),
    };
    match cell {
        Cell::Default(FeatureValue::Number(v)) => Ok(*v),
        // A TOML `true` default: 1 or 0, as `/predict` gives a numeric input.
        Cell::Default(FeatureValue::Bool(b)) => Ok(f64::from(u8::from(*b))),
        Cell::Default(FeatureValue::Text(s)) => text(s),
        Cell::Default(FeatureValue::Missing) | Cell::Column(_) if is_null(row, cell) && imputes => {
            Ok(f64::NAN)
        }
        Cell::Default(FeatureValue::Missing) => Err(simple::missing_refused(spec).to_string()),
        Cell::Column(i) => match &row[*i] {
            Value::Null => Err(format!("column {name:?} is empty")),
            Value::Bool(b) => Ok(f64::from(u8::from(*b))),
            Value::Int(v) => Ok(*v as f64),
            Value::Float(v) => simple::nan_refused(spec, takes_nan, "NaN", *v)
                .map_err(|e| format!("column {name:?}: {e}")),
            Value::Text(s) => text(s),
        },
    }
}

/// A cell as text; with `imputes`, an empty or blank cell is `""`, which the model
/// fills; with `blank_is_missing`, one is refused as missing.
fn text_cell(plan: &InputPlan, row: &[Value], name: &str, cell: &Cell) -> Result<Vec<u8>, String> {
    let imputes = plan.imputes;
    // Numbers are written as `/predict` writes a number feature: an f64's shortest
    // form, or, to a feature whose categories are numbers, the number's category.
    let number = |v: f64| {
        match plan.numeric_categories {
            true => float_category(v).unwrap_or_else(|| v.to_string()),
            false => v.to_string(),
        }
        .into_bytes()
    };
    // Text as written, or, to a feature whose categories are numbers, the category
    // of the number it reads as (text that is no number stays itself: unseen).
    let text = |s: &str| match plan.numeric_categories {
        true => text_number_category(s).map_or_else(|| s.as_bytes().to_vec(), String::into_bytes),
        false => s.as_bytes().to_vec(),
    };
    let blank = match cell {
        Cell::Column(i) => matches!(&row[*i], Value::Text(s) if s.trim().is_empty()),
        Cell::Default(FeatureValue::Text(s)) => s.trim().is_empty(),
        Cell::Default(_) => false,
    };
    if blank && plan.blank_is_missing {
        return Err(format!(
            "column {name:?}: the value is missing (empty), and the model's input {:?} does \
             not take missing values (its training's \"missing\" policy is \"error\")",
            plan.spec.name
        ));
    }
    match cell {
        Cell::Default(FeatureValue::Number(v)) => Ok(number(*v)),
        // Refused, as `/predict` refuses a boolean for a text input: as "1" it would
        // be a category nobody meant.
        Cell::Default(FeatureValue::Bool(b)) => Err(format!(
            "feature {name:?}: the model config's feature_defaults value is a boolean ({b}), \
             and the model's input {:?} takes text: write the default as a string (\"{b}\") \
             in config.toml",
            plan.spec.name
        )),
        Cell::Default(FeatureValue::Text(s)) => Ok(text(s)),
        Cell::Default(FeatureValue::Missing) | Cell::Column(_) if is_null(row, cell) && imputes => {
            Ok(Vec::new())
        }
        Cell::Default(FeatureValue::Missing) => Err(format!("feature {name:?} is null")),
        Cell::Column(i) => match &row[*i] {
            Value::Text(s) if imputes && s.trim().is_empty() => Ok(Vec::new()),
            Value::Null => Err(format!("column {name:?} is empty")),
            // As training writes a boolean cell's category (`category_text`: "true",
            // "false"); as "1" it was a category the model never saw.
            Value::Bool(b) => Ok(text(if *b { "true" } else { "false" })),
            // An integer's own digits (an f64 would round one past 2^53).
            Value::Int(v) if plan.numeric_categories => Ok(v.to_string().into_bytes()),
            Value::Int(v) => Ok(number(*v as f64)),
            Value::Float(v) => Ok(number(*v)),
            Value::Text(s) => Ok(text(s)),
        },
    }
}

/// Whether `cell` is a missing value: a null cell of the source, or a null default.
fn is_null(row: &[Value], cell: &Cell) -> bool {
    match cell {
        Cell::Column(i) => matches!(row[*i], Value::Null),
        Cell::Default(v) => matches!(v, FeatureValue::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boolean_default_is_a_number_to_a_numeric_input_and_refused_by_a_text_one() {
        let spec = |dtype| TensorSpec {
            name: "job".into(),
            dtype,
            shape: vec![-1, 1],
        };
        let yes = Cell::Default(FeatureValue::Bool(true));
        assert_eq!(
            number_cell(&spec(DataType::F32), &[], "job", &yes, false, true),
            Ok(1.0)
        );
        let plan = InputPlan {
            spec: spec(DataType::Bytes),
            features: Vec::new(),
            imputes: false,
            takes_nan: true,
            blank_is_missing: false,
            numeric_categories: false,
        };
        // It went in as "1", a category nobody meant.
        let m = text_cell(&plan, &[], "job", &yes).unwrap_err();
        assert!(
            m.contains("feature \"job\"") && m.contains("is a boolean (true)"),
            "{m}"
        );
        assert!(m.contains("takes text"), "{m}");
    }

    /// A source's boolean cell (Parquet, JSON lines) sent to a text input is the
    /// category training learned of it (`train::data::category_text`: "true"): it
    /// was "1", a category the model never saw, so a wrong score and no error.
    #[test]
    fn a_boolean_cell_to_a_text_input_is_the_category_training_wrote() {
        let plan = InputPlan {
            spec: TensorSpec {
                name: "member".into(),
                dtype: DataType::Bytes,
                shape: vec![-1, 1],
            },
            features: Vec::new(),
            imputes: false,
            takes_nan: true,
            blank_is_missing: false,
            numeric_categories: false,
        };
        let row = [Value::Bool(true), Value::Bool(false)];
        for (i, b) in [(0, true), (1, false)] {
            assert_eq!(
                text_cell(&plan, &row, "member", &Cell::Column(i)).unwrap(),
                crate::jobs::train::data::category_text(&Value::Bool(b)).into_bytes()
            );
        }
    }
}
