//! Scoring: every row of a source through a served model, into a sink.
//!
//! Rows are read a batch at a time, laid out for the model exactly as the simple
//! API lays out named features (the [`ScoringPlan`], from `api::simple::named_layout`,
//! once per job), and predicted through
//! `api::predict_on`, so the version's queue, batcher and backend do the work as for
//! any request. The version is fixed when the job starts ("latest" or a label is
//! resolved once) and its handle held to the end, so every row is scored by the same
//! model: a new version, or a delete of the model, meanwhile leaves the job's version
//! draining (UNLOADING) until the job lets it go.
//!
//! A model deployed in a worker process (`crate::workers`) lives only there: its plan
//! comes from the worker (`GET /v1/scoring-plans/{model}`, the same [`ScoringPlan`]
//! made from the worker's own handle) and each batch goes to the worker's V2 infer
//! (binary tensors both ways, so the values are the ones the model gave). Which way
//! a batch goes is decided per batch, so a deploy or `stop_deployment` while the job
//! runs moves it along with the model.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::io::{self, Value};
use super::spec::ScoreSpec;
use super::train::data::{float_category, text_number_category};
use super::{JobContext, JobError};
use crate::api::simple;
use crate::api::{ApiError, PredictRequest, Protocol};
use crate::manager::{ServableHandle, VersionRequest};
use crate::model_config::FeatureValue;
use crate::tensor::{DataType, Tensor, TensorData, TensorSpec};

/// Longest a job waits between tries while the model's queue is full.
const FULL_QUEUE_BACKOFF: Duration = Duration::from_millis(50);

fn failed(e: impl std::fmt::Display) -> JobError {
    JobError::Failed(e.to_string())
}

/// What a scoring job needs of the model version it scores with, decided once per
/// job: how named features fill its inputs, its answer's outputs, the features'
/// defaults and the class labels. Made from a handle here, or read from the worker
/// a deployed model lives in (which makes it the same way).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringPlan {
    pub model: String,
    pub version: u64,
    /// Each input and the features that fill it, in order (`simple::named_layout`).
    pub layout: Vec<(TensorSpec, Vec<String>)>,
    /// The prediction's output and the class probabilities' (`simple::answer_outputs`).
    pub prediction: String,
    pub probabilities: Option<String>,
    /// Every output of the signature.
    pub outputs: Vec<String>,
    pub feature_defaults: BTreeMap<String, FeatureValue>,
    pub class_labels: Option<Vec<String>>,
    /// The inputs whose missing values the model fills (`ModelTraits::missing_inputs`).
    pub missing_inputs: Vec<String>,
    /// A model a training job wrote (`ModelTraits::trained`): NaN is a missing value
    /// to its inputs that do not impute. Other models take NaN as a number.
    pub trained: bool,
}

impl ScoringPlan {
    /// The plan of a version served in this process.
    pub fn of(handle: &ServableHandle) -> Result<ScoringPlan, ApiError> {
        let layout = simple::named_layout(handle)?;
        let (prediction, probabilities) = simple::answer_outputs(handle)?;
        Ok(ScoringPlan {
            model: handle.model.to_string(),
            version: handle.version,
            layout,
            prediction,
            probabilities,
            outputs: handle
                .backend
                .signature()
                .outputs
                .iter()
                .map(|o| o.name.clone())
                .collect(),
            feature_defaults: handle.config().feature_defaults.clone(),
            class_labels: handle.class_labels().map(<[String]>::to_vec),
            missing_inputs: handle.backend.traits().missing_inputs.clone(),
            trained: handle.backend.traits().trained,
        })
    }

    /// The plan with the class labels of a version a training job wrote, read from
    /// its `training.json` when the plan has none: the ONNX backend does not read
    /// them from the graph, and without them its probabilities' columns would be
    /// named by position (`probabilities_0`) rather than by class.
    pub fn with_trained_class_labels(mut self, state: &crate::api::ServerState) -> ScoringPlan {
        if self.class_labels.is_some() || !self.trained {
            return self;
        }
        let Some(training) = crate::jobs::train::training_record(state, &self.model, self.version)
        else {
            return self;
        };
        self.class_labels = training["classes"].as_array().map(|classes| {
            classes
                .iter()
                .map(|c| match c {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        });
        self
    }

    /// The outputs a job with `spec` writes: those it names, else the prediction
    /// and the class probabilities.
    fn wanted_outputs(&self, spec: &ScoreSpec) -> Vec<String> {
        match &spec.outputs {
            Some(o) => o.clone(),
            None => std::iter::once(self.prediction.clone())
                .chain(self.probabilities.clone())
                .collect(),
        }
    }

    /// The sink's columns for the output `name` with `width` values a row: its
    /// name for one, else `name_<class>` (the class labels of the probabilities)
    /// or `name_<j>`.
    fn columns_of_output(&self, name: &str, width: usize) -> Vec<String> {
        if width == 1 {
            return vec![name.to_string()];
        }
        let labels = self
            .class_labels
            .as_deref()
            .filter(|l| Some(name) == self.probabilities.as_deref() && l.len() == width);
        (0..width)
            .map(|j| match labels {
                Some(l) => format!("{name}_{}", l[j]),
                None => format!("{name}_{j}"),
            })
            .collect()
    }

    /// Refuses a job whose carried columns share a name with an output column that
    /// can be known before any row is predicted: the outputs whose width the
    /// signature's shapes (`declared`, the version's outputs) give. The message
    /// starts with the carried column; submission prefixes `spec.carry`. The job
    /// checks every column again once the first batch gives every output's width.
    pub fn check_carry(&self, spec: &ScoreSpec, declared: &[TensorSpec]) -> Result<(), String> {
        let known: Vec<String> = self
            .wanted_outputs(spec)
            .iter()
            .filter_map(|name| {
                let width = declared_width(declared.iter().find(|o| &o.name == name)?)?;
                Some(self.columns_of_output(name, width))
            })
            .flatten()
            .collect();
        check_distinct_columns(&spec.carry, &known, &spec.sink)
    }

    /// As `GET /v1/scoring-plans/{model}` answers it ([`PlanJson`]).
    pub fn to_json(&self) -> serde_json::Value {
        let plan = PlanJson {
            model: self.model.clone(),
            version: self.version,
            inputs: self
                .layout
                .iter()
                .map(|(spec, features)| InputJson {
                    name: spec.name.clone(),
                    datatype: spec.dtype.v2_name().to_string(),
                    shape: spec.v2_shape(),
                    features: features.clone(),
                })
                .collect(),
            prediction_output: self.prediction.clone(),
            probabilities_output: self.probabilities.clone(),
            outputs: self.outputs.clone(),
            feature_defaults: self.feature_defaults.clone(),
            class_labels: self.class_labels.clone(),
            missing_inputs: self.missing_inputs.clone(),
            trained: self.trained,
        };
        serde_json::to_value(plan).expect("a scoring plan is plain JSON")
    }

    /// Reads [`ScoringPlan::to_json`]'s answer.
    pub fn from_json(value: serde_json::Value) -> Result<ScoringPlan, String> {
        let plan: PlanJson = serde_json::from_value(value).map_err(|e| e.to_string())?;
        let layout = plan
            .inputs
            .into_iter()
            .map(|i| {
                let dtype = DataType::from_v2_name(&i.datatype).ok_or_else(|| {
                    format!("input {:?}: unknown datatype {:?}", i.name, i.datatype)
                })?;
                let spec = TensorSpec {
                    name: i.name,
                    dtype,
                    shape: i.shape,
                };
                Ok((spec, i.features))
            })
            .collect::<Result<_, String>>()?;
        Ok(ScoringPlan {
            model: plan.model,
            version: plan.version,
            layout,
            prediction: plan.prediction_output,
            probabilities: plan.probabilities_output,
            outputs: plan.outputs,
            feature_defaults: plan.feature_defaults,
            class_labels: plan.class_labels,
            missing_inputs: plan.missing_inputs,
            trained: plan.trained,
        })
    }
}

/// A [`ScoringPlan`] on the wire (`GET /v1/scoring-plans/{model}`, read by the main
/// server from a worker): one description for both directions.
#[derive(serde::Serialize, serde::Deserialize)]
struct PlanJson {
    model: String,
    version: u64,
    inputs: Vec<InputJson>,
    prediction_output: String,
    probabilities_output: Option<String>,
    outputs: Vec<String>,
    #[serde(default)]
    feature_defaults: BTreeMap<String, FeatureValue>,
    class_labels: Option<Vec<String>>,
    #[serde(default)]
    missing_inputs: Vec<String>,
    #[serde(default)]
    trained: bool,
}

/// One input of a [`PlanJson`]: its tensor (V2 datatype name) and its features.
#[derive(serde::Serialize, serde::Deserialize)]
struct InputJson {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    features: Vec<String>,
}

/// The supervisor, when `model` is deployed in a worker process now.
fn deployed_in_worker(
    state: &crate::api::ServerState,
    model: &str,
) -> Option<std::sync::Arc<crate::workers::Supervisor>> {
    state
        .workers
        .get()
        .filter(|w| w.status(model).is_some())
        .cloned()
}

/// How long a job waits, in all, for a deployed model's worker that is restarting.
const WORKER_WAIT: Duration = Duration::from_secs(30);

/// The plan of the version `spec` asks for, and the handle that keeps it loaded
/// when it is served in this process (a deployed model's worker holds its own).
fn resolve_plan(
    ctx: &JobContext,
    spec: &ScoreSpec,
) -> Result<(ScoringPlan, Option<ServableHandle>), JobError> {
    let started = std::time::Instant::now();
    loop {
        ctx.check_cancelled()?;
        let Some(workers) = deployed_in_worker(&ctx.state, &spec.model) else {
            let handle = ctx
                .state
                .manager
                .resolve(&spec.model, &spec.version)
                .map_err(|e| failed(format!("model {:?}: {e}", spec.model)))?;
            let plan = ScoringPlan::of(&handle).map_err(failed)?;
            return Ok((plan, Some(handle)));
        };
        match ctx
            .runtime
            .block_on(workers.scoring_plan(&spec.model, &spec.version))
        {
            Some(Ok(plan)) => return Ok((plan, None)),
            Some(Err(ApiError::Unavailable(_))) if started.elapsed() < WORKER_WAIT => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Some(Err(e)) => return Err(failed(format!("model {:?}: {e}", spec.model))),
            // Its deployment ended meanwhile: served here again.
            None => {}
        }
    }
}

pub fn run(ctx: &JobContext, spec: &ScoreSpec) -> Result<serde_json::Value, JobError> {
    ctx.progress(|p| p.stage = "resolving the model".into());
    let (plan, handle) = resolve_plan(ctx, spec)?;
    let plan = plan.with_trained_class_labels(&ctx.state);
    let version = plan.version;
    ctx.message(format!("scoring with {} version {version}", spec.model));
    let wanted = plan.wanted_outputs(spec);
    // A carried column named like an output column fails the job before anything
    // is read where the signature tells the output columns now (checked again,
    // whole, before the sink opens).
    if let Some(handle) = &handle {
        plan.check_carry(spec, &handle.backend.signature().outputs)
            .map_err(failed)?;
    }

    ctx.progress(|p| p.stage = "reading".into());
    // A SQL source or sink waiting on its database (connecting, a query running,
    // rows inserted) leaves the wait when the job is cancelled.
    let stop = ctx.stop_check();
    let mut source =
        io::open_source_until(&spec.source, &ctx.runtime, stop.clone()).map_err(failed)?;
    let columns = source.columns().to_vec();
    let index_of = |name: &str| columns.iter().position(|c| c == name);
    let carry: Vec<usize> = spec
        .carry
        .iter()
        .map(|c| {
            index_of(c).ok_or_else(|| {
                failed(format!(
                    "carry column {c:?} is not in the source (its columns: {columns:?})"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let trained = TrainedFeatures::of(ctx, &spec.model, version);
    let plans = plan_inputs(&plan, &columns, &trained)?;
    let (mut batch, mut out_rows): (Vec<Vec<Value>>, Vec<Vec<Value>>) = (Vec::new(), Vec::new());

    let mut sink: Option<Box<dyn io::Sink>> = None;
    let mut output_columns: Vec<String> = Vec::new();
    let (mut rows_read, mut rows_written) = (0u64, 0u64);
    loop {
        ctx.check_cancelled()?;
        let n = source
            .next_batch_into(spec.batch_size, &mut batch)
            .map_err(failed)?;
        if n == 0 {
            break;
        }
        let batch = &batch[..n];
        let first_row = rows_read + 1;
        rows_read += n as u64;
        let inputs = input_tensors(&plans, batch).map_err(|e| {
            let row = first_row + e.row as u64;
            match source.describe_batch_row(e.row) {
                Some(at) => failed(format!("row {row} ({at}): {e}")),
                None => failed(format!("row {row}: {e}")),
            }
        })?;
        let outputs =
            predict(ctx, &plan, handle.as_ref(), inputs, &wanted).map_err(|e| match e {
                JobError::Failed(m) => failed(format!(
                    "rows {first_row} to {rows_read} ({}): {m}",
                    source.describe_position()
                )),
                other => other,
            })?;
        fill_output_rows(&mut out_rows, batch, &carry, outputs.iter().map(|(_, t)| t));
        if sink.is_none() {
            let names = output_names(&plan, &outputs);
            check_distinct_columns(&spec.carry, &names, &spec.sink).map_err(failed)?;
            output_columns = spec.carry.clone();
            output_columns.extend(names);
            sink = Some(
                io::open_sink(
                    &spec.sink,
                    output_columns.clone(),
                    &ctx.job.id,
                    &ctx.runtime,
                    stop.clone(),
                )
                .map_err(failed)?,
            );
        }
        ctx.check_cancelled()?;
        sink.as_mut()
            .expect("opened above")
            .write(&out_rows[..n])
            .map_err(failed)?;
        rows_written += n as u64;
        let fraction = source.fraction();
        ctx.progress(|p| {
            p.stage = "scoring".into();
            p.rows_read = rows_read;
            p.rows_written = rows_written;
            p.fraction = fraction;
        });
    }
    let Some(sink) = sink else {
        return Err(failed("the source has no rows (empty data)"));
    };
    ctx.check_cancelled()?;
    ctx.progress(|p| p.stage = "committing".into());
    sink.commit().map_err(failed)?;
    ctx.message(format!(
        "{rows_written} rows written to {}",
        spec.sink.describe()
    ));
    Ok(json!({
        "model": spec.model,
        "version": version,
        "rows": rows_written,
        "columns": output_columns,
        "sink": spec.sink.describe(),
    }))
}

struct RowError {
    row: usize,
    message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a trained version's `training.json` says of its categorical features, read
/// once per job. Both lists are empty for a model no training job wrote.
#[derive(Default)]
struct TrainedFeatures {
    /// Those whose `missing` policy is `error`: their inputs refuse a blank value as
    /// training did.
    refusing_missing: Vec<String>,
    /// Those whose categories are numbers (`train::numeric_categorical_features`):
    /// a cell that is a number, or text that reads as one, goes in as its number's
    /// category text (`train::data::number_category`).
    numeric: Vec<String>,
}

impl TrainedFeatures {
    fn of(ctx: &JobContext, model: &str, version: u64) -> TrainedFeatures {
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
struct InputPlan {
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
fn plan_inputs(
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
fn input_tensors(
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

/// Predicts one batch, waiting (and checking for a cancel) while the version's
/// queue is full (online requests go first) and, for a deployed model, while its
/// worker restarts (up to [`WORKER_WAIT`]). A deployed model's batch goes to its
/// worker; any other is predicted here, on the version the job resolved at its
/// start (`handle`), held rather than looked up again by number, so a delete of the
/// model or a new version unloading it does not fail the job halfway.
fn predict(
    ctx: &JobContext,
    plan: &ScoringPlan,
    handle: Option<&ServableHandle>,
    inputs: Vec<(String, Tensor)>,
    wanted: &[String],
) -> Result<Vec<(String, Tensor)>, JobError> {
    let mut unavailable_since: Option<std::time::Instant> = None;
    loop {
        ctx.check_cancelled()?;
        let remote = deployed_in_worker(&ctx.state, &plan.model).and_then(|workers| {
            ctx.runtime
                .block_on(workers.infer(&plan.model, plan.version, &inputs, wanted))
        });
        let answer = match remote {
            Some(answer) => answer,
            None => {
                let mut request = PredictRequest::new(
                    plan.model.clone(),
                    VersionRequest::Specific(plan.version),
                    Protocol::Job,
                );
                request.inputs = inputs.clone();
                request.outputs = wanted.to_vec();
                let answer = match handle {
                    Some(handle) => ctx.runtime.block_on(crate::api::predict_on(
                        &ctx.state,
                        handle.clone(),
                        request,
                    )),
                    // Deployed in a worker when the job began, back here since.
                    None => ctx
                        .runtime
                        .block_on(crate::api::predict(&ctx.state, request)),
                };
                answer.map(|r| r.outputs)
            }
        };
        match answer {
            Ok(outputs) => return Ok(outputs),
            Err(ApiError::ResourceExhausted(_)) => std::thread::sleep(FULL_QUEUE_BACKOFF),
            // A worker restarting is waited for; one out of memory for this batch
            // (`ApiError::OutOfMemory`) would only be asked the same again.
            Err(ApiError::Unavailable(m))
                if unavailable_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed()
                    < WORKER_WAIT
                    && deployed_in_worker(&ctx.state, &plan.model).is_some() =>
            {
                tracing::debug!(model = %plan.model, "scoring waits for the worker: {m}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(failed(e)),
        }
    }
}

/// Column names for the outputs ([`ScoringPlan::columns_of_output`], each output's
/// width as the model answered).
fn output_names(plan: &ScoringPlan, outputs: &[(String, Tensor)]) -> Vec<String> {
    outputs
        .iter()
        .flat_map(|(name, tensor)| plan.columns_of_output(name, row_width(tensor)))
        .collect()
}

/// An output's values a row as its signature declares them (`[-1]`: one; `[-1, k]`:
/// `k`), when every dimension after the batch is known; as [`row_width`] counts.
fn declared_width(output: &TensorSpec) -> Option<usize> {
    output
        .shape
        .iter()
        .skip(1)
        .try_fold(1usize, |w, d| w.checked_mul(usize::try_from(*d).ok()?))
        .map(|w| w.max(1))
}

/// Refuses columns a sink cannot hold side by side: a carried column with the name
/// of an output column (a JSON line would keep one of the two values, a Parquet
/// file would have two fields of one name, a table would refuse it), or output
/// columns of one name. A SQL table other than PostgreSQL's takes names that
/// differ only in case for the same (SQLite, MySQL).
fn check_distinct_columns(
    carry: &[String],
    outputs: &[String],
    sink: &super::spec::SinkSpec,
) -> Result<(), String> {
    let ignores_case = matches!(sink, super::spec::SinkSpec::Sql { url, .. }
        if !url.starts_with("postgres"));
    let same = |a: &str, b: &str| match ignores_case {
        true => a.to_lowercase() == b.to_lowercase(),
        false => a == b,
    };
    if let Some((c, o)) = carry
        .iter()
        .find_map(|c| outputs.iter().find(|o| same(c, o)).map(|o| (c, o)))
    {
        let named = match c == o {
            true => String::new(),
            false => format!(
                " ({o:?}: the table's database takes names that differ only in case for one)"
            ),
        };
        return Err(format!(
            "carry column {c:?} has the name of one of the model's output columns{named}, \
             which the output would hold twice (the model's output columns: {outputs:?}); \
             carry another column, or rename it in the source"
        ));
    }
    if let Some(o) = outputs
        .iter()
        .enumerate()
        .find_map(|(i, o)| outputs[..i].iter().any(|p| same(p, o)).then_some(o))
    {
        return Err(format!(
            "the model's output columns {outputs:?} name {o:?} twice, which the output \
             cannot hold: choose the outputs to write with spec.outputs"
        ));
    }
    Ok(())
}

fn row_width(tensor: &Tensor) -> usize {
    tensor.shape().iter().skip(1).product::<usize>().max(1)
}

/// Fills `out` with the batch's output rows (the carried cells, then every output's
/// values for that row), reusing the rows and text buffers left from the last batch:
/// a job writes millions of rows, and a fresh vector and string per cell would cost
/// more than the model. Only `out[..batch.len()]` is this batch's.
fn fill_output_rows<'t>(
    out: &mut Vec<Vec<Value>>,
    batch: &[Vec<Value>],
    carry: &[usize],
    outputs: impl Iterator<Item = &'t Tensor>,
) {
    let mut flat: Vec<(usize, std::vec::IntoIter<Value>)> = outputs
        .map(|t| (row_width(t), values(t).into_iter()))
        .collect();
    let columns = carry.len() + flat.iter().map(|(w, _)| w).sum::<usize>();
    if out.len() < batch.len() {
        out.resize_with(batch.len(), Vec::new);
    }
    for (row, input) in out.iter_mut().zip(batch) {
        row.resize(columns, Value::Null);
        let mut cells = row.iter_mut();
        for &i in carry {
            assign(cells.next().expect("sized above"), &input[i]);
        }
        for (width, values) in &mut flat {
            for _ in 0..*width {
                *cells.next().expect("sized above") = values.next().unwrap_or(Value::Null);
            }
        }
    }
}

/// `*to = from.clone()`, keeping `to`'s text buffer when both are text.
fn assign(to: &mut Value, from: &Value) {
    match (to, from) {
        (Value::Text(to), Value::Text(from)) => to.clone_from(from),
        (to, from) => *to = from.clone(),
    }
}

fn values(tensor: &Tensor) -> Vec<Value> {
    match tensor.data() {
        TensorData::Bool(v) => v.iter().map(|b| Value::Bool(*b)).collect(),
        TensorData::U8(v) => v.iter().map(|x| Value::Int((*x).into())).collect(),
        TensorData::U16(v) => v.iter().map(|x| Value::Int((*x).into())).collect(),
        TensorData::U32(v) => v.iter().map(|x| Value::Int((*x).into())).collect(),
        TensorData::U64(v) => v
            .iter()
            .map(|x| i64::try_from(*x).map_or(Value::Float(*x as f64), Value::Int))
            .collect(),
        TensorData::I8(v) => v.iter().map(|x| Value::Int((*x).into())).collect(),
        TensorData::I16(v) => v.iter().map(|x| Value::Int((*x).into())).collect(),
        TensorData::I32(v) => v.iter().map(|x| Value::Int((*x).into())).collect(),
        TensorData::I64(v) => v.iter().map(|x| Value::Int(*x)).collect(),
        TensorData::F16(_) => match tensor.clone().cast(DataType::F64) {
            Ok(t) => values(&t),
            Err(_) => vec![Value::Null; tensor.data().len()],
        },
        TensorData::F32(v) => v.iter().map(|x| Value::Float((*x).into())).collect(),
        TensorData::F64(v) => v.iter().map(|x| Value::Float(*x)).collect(),
        TensorData::Bytes(v) => v
            .iter()
            .map(|b| Value::Text(String::from_utf8_lossy(b).into_owned()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scoring_plan_reads_back_what_it_wrote() {
        let plan = ScoringPlan {
            model: "iris".into(),
            version: 3,
            layout: vec![(
                TensorSpec {
                    name: "input".into(),
                    dtype: DataType::F32,
                    shape: vec![-1, 2],
                },
                vec!["a".into(), "b".into()],
            )],
            prediction: "label".into(),
            probabilities: Some("probabilities".into()),
            outputs: vec!["label".into(), "probabilities".into()],
            feature_defaults: BTreeMap::from([
                ("a".to_string(), FeatureValue::Number(0.5)),
                ("city".to_string(), FeatureValue::Text("Paris".into())),
            ]),
            class_labels: Some(vec!["no".into(), "yes".into()]),
            missing_inputs: vec!["input".into()],
            trained: true,
        };
        let json = plan.to_json();
        assert_eq!(json["inputs"][0]["datatype"], "FP32", "{json}");
        assert_eq!(json["feature_defaults"]["city"], "Paris", "{json}");
        assert_eq!(ScoringPlan::from_json(json).unwrap(), plan);
        let unknown = serde_json::json!({
            "model": "m", "version": 1, "prediction_output": "y", "probabilities_output": null,
            "outputs": ["y"], "class_labels": null,
            "inputs": [{"name": "x", "datatype": "FP128", "shape": [1], "features": []}],
        });
        assert!(ScoringPlan::from_json(unknown)
            .unwrap_err()
            .contains("FP128"));
    }

    fn sink(json: serde_json::Value) -> super::super::spec::SinkSpec {
        super::super::spec::parse_sink(Some(&json), "spec.sink", &std::env::temp_dir()).unwrap()
    }

    #[test]
    fn a_sink_never_gets_two_columns_of_one_name() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let outputs = strings(&["label", "probabilities_no", "probabilities_yes"]);
        let file = sink(serde_json::json!({"path": "out.parquet"}));
        assert!(check_distinct_columns(&strings(&["id", "Label"]), &outputs, &file).is_ok());
        let m = check_distinct_columns(&strings(&["id", "label"]), &outputs, &file).unwrap_err();
        assert!(
            m.starts_with("carry column \"label\" has the name of"),
            "{m}"
        );
        // SQLite and MySQL take names that differ in case for one; PostgreSQL does not.
        let sqlite = sink(serde_json::json!({"url": "sqlite://out.db", "table": "t"}));
        let m = check_distinct_columns(&strings(&["Label"]), &outputs, &sqlite).unwrap_err();
        assert!(
            m.contains("\"Label\"") && m.contains("differ only in case"),
            "{m}"
        );
        let postgres = sink(serde_json::json!({"url": "postgres://u@h/db", "table": "t"}));
        assert!(check_distinct_columns(&strings(&["Label"]), &outputs, &postgres).is_ok());
        // Output columns of one name (an output `p` two wide beside an output `p_0`).
        let m = check_distinct_columns(&[], &strings(&["p_0", "p_1", "p_0"]), &file).unwrap_err();
        assert!(m.contains("name \"p_0\" twice"), "{m}");
    }

    #[test]
    fn output_columns_known_from_the_signature() {
        let spec = |shape: Vec<i64>| TensorSpec {
            name: "p".into(),
            dtype: DataType::F32,
            shape,
        };
        assert_eq!(declared_width(&spec(vec![-1])), Some(1));
        assert_eq!(declared_width(&spec(vec![-1, 1])), Some(1));
        assert_eq!(declared_width(&spec(vec![-1, 3])), Some(3));
        assert_eq!(declared_width(&spec(vec![-1, 2, 3])), Some(6));
        assert_eq!(declared_width(&spec(vec![-1, -1])), None);
        let plan = ScoringPlan {
            model: "m".into(),
            version: 1,
            layout: Vec::new(),
            prediction: "label".into(),
            probabilities: Some("probabilities".into()),
            outputs: vec!["label".into(), "probabilities".into(), "other".into()],
            feature_defaults: BTreeMap::new(),
            class_labels: Some(vec!["a".into(), "b".into()]),
            missing_inputs: Vec::new(),
            trained: true,
        };
        assert_eq!(
            plan.columns_of_output("probabilities", 2),
            ["probabilities_a", "probabilities_b"]
        );
        assert_eq!(plan.columns_of_output("other", 2), ["other_0", "other_1"]);
        assert_eq!(
            plan.columns_of_output("probabilities", 3)[2],
            "probabilities_2"
        );
    }

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
