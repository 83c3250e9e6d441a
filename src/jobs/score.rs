//! Scoring: every row of a source through a served model, into a sink.
//!
//! Rows are read a batch at a time, laid out for the model exactly as the simple
//! API lays out named features (`api::simple::row_inputs`), and predicted through
//! `api::predict`, so the version's queue, batcher and backend do the work as for
//! any request. The version is fixed when the job starts ("latest" or a label is
//! resolved once), so every row is scored by the same model.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::io::{self, Value};
use super::spec::ScoreSpec;
use super::{JobContext, JobError};
use crate::api::simple::{self, Rows};
use crate::api::{ApiError, PredictRequest, Protocol};
use crate::manager::{ServableHandle, VersionRequest};
use crate::model_config::FeatureValue;
use crate::tensor::{DataType, Tensor, TensorData};

/// Longest a job waits between tries while the model's queue is full.
const FULL_QUEUE_BACKOFF: Duration = Duration::from_millis(50);

fn failed(e: impl std::fmt::Display) -> JobError {
    JobError::Failed(e.to_string())
}

pub fn run(ctx: &JobContext, spec: &ScoreSpec) -> Result<serde_json::Value, JobError> {
    ctx.progress(|p| p.stage = "resolving the model".into());
    let handle = ctx
        .state
        .manager
        .resolve(&spec.model, &spec.version)
        .map_err(|e| failed(format!("model {:?}: {e}", spec.model)))?;
    let version = handle.version;
    ctx.message(format!("scoring with {} version {version}", spec.model));
    let features = simple::feature_columns(&handle).map_err(failed)?;
    let (prediction, probabilities) = simple::answer_outputs(&handle).map_err(failed)?;
    let wanted = match &spec.outputs {
        Some(o) => o.clone(),
        None => std::iter::once(prediction.clone())
            .chain(probabilities.clone())
            .collect(),
    };

    ctx.progress(|p| p.stage = "reading".into());
    let mut source = io::open_source(&spec.source, &ctx.runtime).map_err(failed)?;
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
    let defaults = handle.config().feature_defaults.clone();
    let missing: Vec<&String> = features
        .iter()
        .filter(|f| index_of(f).is_none() && !defaults.contains_key(*f))
        .collect();
    if !missing.is_empty() {
        return Err(failed(format!(
            "the source has no column {missing:?}, which model {:?} needs (its features: \
             {features:?}; the source's columns: {columns:?})",
            spec.model
        )));
    }
    let feature_index: Vec<(String, usize)> = features
        .iter()
        .filter_map(|f| index_of(f).map(|i| (f.clone(), i)))
        .collect();

    let mut sink: Option<Box<dyn io::Sink>> = None;
    let mut output_columns: Vec<String> = Vec::new();
    let (mut rows_read, mut rows_written) = (0u64, 0u64);
    loop {
        ctx.check_cancelled()?;
        let Some(batch) = source.next_batch(spec.batch_size).map_err(failed)? else {
            break;
        };
        let first_row = rows_read + 1;
        rows_read += batch.len() as u64;
        let rows = named_rows(&batch, &feature_index)
            .map_err(|e| failed(format!("row {}: {e}", first_row + e.row as u64)))?;
        let outputs = predict(ctx, &handle, &rows, &wanted).map_err(|e| match e {
            JobError::Failed(m) => failed(format!(
                "rows {first_row} to {rows_read} ({}): {m}",
                source.describe_position()
            )),
            other => other,
        })?;
        let out_rows = output_rows(&batch, &carry, &outputs, batch.len());
        if sink.is_none() {
            output_columns = spec.carry.clone();
            output_columns.extend(output_names(&handle, &outputs, probabilities.as_deref()));
            sink = Some(
                io::open_sink(
                    &spec.sink,
                    output_columns.clone(),
                    &ctx.job.id,
                    &ctx.runtime,
                )
                .map_err(failed)?,
            );
        }
        ctx.check_cancelled()?;
        sink.as_mut()
            .expect("opened above")
            .write(&out_rows)
            .map_err(failed)?;
        rows_written += out_rows.len() as u64;
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

/// The batch's feature cells by name, as the simple API takes them.
fn named_rows(batch: &[Vec<Value>], features: &[(String, usize)]) -> Result<Rows, RowError> {
    batch
        .iter()
        .enumerate()
        .map(|(r, row)| {
            features
                .iter()
                .map(|(name, i)| {
                    let value = match &row[*i] {
                        Value::Null => {
                            return Err(RowError {
                                row: r,
                                message: format!("column {name:?} is empty"),
                            })
                        }
                        Value::Bool(b) => FeatureValue::Number(f64::from(u8::from(*b))),
                        Value::Int(v) => FeatureValue::Number(*v as f64),
                        Value::Float(v) => FeatureValue::Number(*v),
                        Value::Text(s) => FeatureValue::Text(s.clone()),
                    };
                    Ok((name.clone(), value))
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Rows::Named)
}

/// Predicts one batch, waiting (and checking for a cancel) while the version's
/// queue is full: online requests go first.
fn predict(
    ctx: &JobContext,
    handle: &ServableHandle,
    rows: &Rows,
    wanted: &[String],
) -> Result<Vec<(String, Tensor)>, JobError> {
    let inputs = simple::row_inputs(handle, rows).map_err(failed)?;
    loop {
        ctx.check_cancelled()?;
        let mut request = PredictRequest::new(
            handle.model.to_string(),
            VersionRequest::Specific(handle.version),
            Protocol::Job,
        );
        request.inputs = inputs.clone();
        request.outputs = wanted.to_vec();
        match ctx
            .runtime
            .block_on(crate::api::predict(&ctx.state, request))
        {
            Ok(response) => return Ok(response.outputs),
            Err(ApiError::ResourceExhausted(_)) => std::thread::sleep(FULL_QUEUE_BACKOFF),
            Err(e) => return Err(failed(e)),
        }
    }
}

/// Column names for the outputs: a one-column output keeps its name; a
/// `[rows, k]` output gives `name_<class>` (the model's class labels for its
/// probabilities) or `name_<j>`.
fn output_names(
    handle: &ServableHandle,
    outputs: &[(String, Tensor)],
    probabilities: Option<&str>,
) -> Vec<String> {
    let labels = handle.class_labels().map(<[String]>::to_vec);
    let mut names = Vec::new();
    for (name, tensor) in outputs {
        let width = row_width(tensor);
        if width == 1 {
            names.push(name.clone());
            continue;
        }
        for j in 0..width {
            let suffix = match &labels {
                Some(l) if Some(name.as_str()) == probabilities && l.len() == width => l[j].clone(),
                _ => j.to_string(),
            };
            names.push(format!("{name}_{suffix}"));
        }
    }
    names
}

fn row_width(tensor: &Tensor) -> usize {
    tensor.shape().iter().skip(1).product::<usize>().max(1)
}

/// Each output row: the carried cells, then every output's values for that row.
fn output_rows(
    batch: &[Vec<Value>],
    carry: &[usize],
    outputs: &[(String, Tensor)],
    n: usize,
) -> Vec<Vec<Value>> {
    let flat: Vec<(usize, Vec<Value>)> = outputs
        .iter()
        .map(|(_, t)| (row_width(t), values(t)))
        .collect();
    (0..n)
        .map(|r| {
            let mut row: Vec<Value> = carry.iter().map(|&i| batch[r][i].clone()).collect();
            for (width, values) in &flat {
                row.extend(values[r * width..(r + 1) * width].iter().cloned());
            }
            row
        })
        .collect()
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
