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

mod cells;
mod plan;

use std::time::Duration;

use serde_json::json;

use super::io::{self, Value};
use super::spec::ScoreSpec;
use super::{JobContext, JobError};
use crate::api::{ApiError, PredictRequest, Protocol};
use crate::manager::{ServableHandle, VersionRequest};
use crate::tensor::{DataType, Tensor, TensorData};
use cells::{input_tensors, plan_inputs, TrainedFeatures};
use plan::check_distinct_columns;
pub use plan::ScoringPlan;

/// Longest a job waits between tries while the model's queue is full.
const FULL_QUEUE_BACKOFF: Duration = Duration::from_millis(50);

fn failed(e: impl std::fmt::Display) -> JobError {
    JobError::Failed(e.to_string())
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
    let mut first_widths: Option<Vec<usize>> = None;
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
        // The sink's columns are the first batch's: an output whose width per row
        // changes (a dynamic dimension past the batch's) cannot be written in them.
        if let Some(widths) = &first_widths {
            check_widths(widths, &outputs).map_err(|m| {
                failed(format!(
                    "rows {first_row} to {rows_read} ({}): {m}",
                    source.describe_position()
                ))
            })?;
        } else {
            first_widths = Some(outputs.iter().map(|(_, t)| row_width(t)).collect());
        }
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
    // The last moment a cancel stops the job: from here on it is refused (409), as
    // the commit cannot be taken back, rather than answered 200 and then not
    // honoured (the job ended `succeeded` with its output written).
    ctx.begin_publishing()?;
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

/// Checks that each output has as many values per row as in the first batch
/// (`widths`), whose columns the sink was opened with.
fn check_widths(widths: &[usize], outputs: &[(String, Tensor)]) -> Result<(), String> {
    for ((name, tensor), &first) in outputs.iter().zip(widths) {
        let now = row_width(tensor);
        if now != first {
            return Err(format!(
                "output {name:?} has {now} values per row where the first rows had \
                 {first}: the output's columns are set by the first batch, so an output \
                 whose width changes from batch to batch cannot be written"
            ));
        }
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

    fn output(name: &str, shape: Vec<usize>) -> (String, Tensor) {
        let n = shape.iter().product();
        let tensor = Tensor::new(shape, TensorData::F32(vec![0.5; n])).unwrap();
        (name.to_string(), tensor)
    }

    /// Was: a later batch whose output was narrower or wider than the first's
    /// (a dynamic dimension past the batch's) was written in the first batch's
    /// columns: the Parquet and SQL sinks indexed past a row's end (a panic), JSON
    /// lines put values under other columns' names.
    #[test]
    fn an_output_whose_width_changes_between_batches_is_refused() {
        let first = [output("scores", vec![4, 3]), output("label", vec![4])];
        let widths: Vec<usize> = first.iter().map(|(_, t)| row_width(t)).collect();
        assert_eq!(widths, [3, 1]);
        assert!(check_widths(&widths, &first).is_ok());
        // The last batch is shorter: the batch dimension may change.
        let last = [output("scores", vec![1, 3]), output("label", vec![1])];
        assert!(check_widths(&widths, &last).is_ok());
        let narrower = [output("scores", vec![4, 2]), output("label", vec![4])];
        let e = check_widths(&widths, &narrower).unwrap_err();
        assert!(
            e.contains("\"scores\" has 2 values per row where the first rows had 3"),
            "{e}"
        );
    }
}
