//! Training jobs: read the source whole, encode it by the schema, grid-search the
//! algorithm's parameters by stratified k-fold cross-validation, refit the best on
//! all rows (or all but a hold-out), export the model to ONNX and publish it as the
//! model's next version.
//!
//! * [`data`]: the schema, reading (`--train-max-rows`), the encoding (label map,
//!   one-hot categories, imputation, the scaler), as the saved graph encodes;
//! * [`cv`]: scikit-learn's `StratifiedKFold` folds and the scores;
//! * [`logistic`], [`forest`]: the two families behind [`Trainer`];
//! * [`onnx`]: the graph over the raw named columns.
//!
//! The model files are staged and renamed into place by
//! `api::upload::publish_files`, the upload's own path: a failed or cancelled job
//! leaves no version and no staging directory.

pub mod cv;
pub mod data;
mod forest;
mod logistic;
pub mod onnx;
pub mod schema;

use std::time::Instant;

use serde_json::{json, Value as Json};

use super::spec::{SourceSpec, TrainSpec};
use super::{JobContext, JobError};
use data::{Encoded, Scaler};

/// One parameter set of a grid (`{"C": 0.1}`).
pub type Params = serde_json::Map<String, Json>;

/// A model fitted by a [`Trainer`].
pub trait Fitted: Send {
    /// Class probabilities of one encoded row (classes in sorted order).
    fn predict_proba(&self, row: &[f64]) -> Vec<f64>;
    /// The classifier node, reading the design matrix from `input` and writing
    /// `label` and `probabilities`; `labels` is the class-labels attribute.
    fn onnx_node(
        &self,
        input: &str,
        labels: ferroserve_proto::onnx::AttributeProto,
    ) -> ferroserve_proto::onnx::NodeProto;
    /// What `training.json` records of the fitted parameters.
    fn describe(&self) -> Json;
}

/// One family of algorithms (logistic regression, a tree ensemble).
///
/// An implementer must: turn the spec's `algorithm` object into the parameter sets
/// of its grid at [`Trainer::grid`], refusing a malformed one with a message that
/// starts with the field (`spec.algorithm.grid.C[0]: …`), which submission answers
/// as a 400; in [`Trainer::fit`], call `cancel` often (once per iteration or tree)
/// and return what it returns; fit a model whose [`Fitted::onnx_node`] answers
/// exactly what its [`Fitted::predict_proba`] answers for the same `f32` inputs.
/// It never reads the source or writes files: the job does both.
pub trait Trainer: Send + Sync {
    /// The `algorithm.name` it answers to.
    fn name(&self) -> &'static str;
    /// Whether numeric columns are standardized when `algorithm.standardize` is
    /// not given.
    fn standardize_by_default(&self) -> bool {
        true
    }
    fn grid(&self, algorithm: &Json) -> Result<Vec<Params>, String>;
    #[allow(clippy::too_many_arguments)]
    fn fit(
        &self,
        algorithm: &Json,
        params: &Params,
        x: &[f64],
        width: usize,
        y: &[usize],
        n_classes: usize,
        cancel: &dyn Fn() -> Result<(), JobError>,
    ) -> Result<Box<dyn Fitted>, JobError>;
}

static TRAINERS: [&dyn Trainer; 2] = [&logistic::LogisticRegression, &forest::RandomForest];

/// The trainer for `algorithm`, when this build has one.
pub fn trainer_for(algorithm: &str) -> Option<&'static dyn Trainer> {
    TRAINERS.iter().copied().find(|t| t.name() == algorithm)
}

/// The names [`trainer_for`] knows, for messages.
pub fn trainer_names() -> Vec<&'static str> {
    TRAINERS.iter().map(|t| t.name()).collect()
}

/// Refuses an `algorithm` field no family reads.
pub(crate) fn check_fields(algorithm: &Json, known: &[&str]) -> Result<(), String> {
    let grid_known: Vec<&str> = known
        .iter()
        .copied()
        .filter(|k| {
            !matches!(
                *k,
                "name" | "grid" | "seed" | "standardize" | "max_iter" | "fit_intercept" | "tol"
            )
        })
        .collect();
    if let Some(obj) = algorithm.as_object() {
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!(
                "spec.algorithm.{k}: unknown field (known: {})",
                known.join(", ")
            ));
        }
        if let Some(s) = obj.get("standardize").filter(|v| !v.is_null()) {
            if !s.is_boolean() {
                return Err("spec.algorithm.standardize: must be true or false".into());
            }
        }
        match obj.get("grid") {
            None | Some(Json::Null) => {}
            Some(Json::Object(g)) => {
                if let Some(k) = g.keys().find(|k| !grid_known.contains(&k.as_str())) {
                    return Err(format!(
                        "spec.algorithm.grid.{k}: unknown parameter (known: {})",
                        grid_known.join(", ")
                    ));
                }
            }
            Some(_) => return Err("spec.algorithm.grid: must be an object of lists".into()),
        }
    }
    Ok(())
}

/// A grid parameter's values: `grid.NAME` (a list, or one value), else `NAME` at
/// the top of `algorithm`, else `default`.
pub(crate) fn grid_values(
    algorithm: &Json,
    name: &str,
    default: &Json,
) -> Result<Vec<Json>, String> {
    let v = algorithm
        .get("grid")
        .and_then(|g| g.get(name))
        .filter(|v| !v.is_null())
        .or_else(|| algorithm.get(name).filter(|v| !v.is_null()))
        .unwrap_or(default);
    match v {
        Json::Array(items) if items.is_empty() => {
            Err(format!("spec.algorithm.grid.{name}: must not be empty"))
        }
        Json::Array(items) if items.len() > 100 => {
            Err(format!("spec.algorithm.grid.{name}: at most 100 values"))
        }
        Json::Array(items) => Ok(items.clone()),
        Json::Number(_) => Ok(vec![v.clone()]),
        other => Err(format!(
            "spec.algorithm.grid.{name}: must be a list of numbers, not {other}"
        )),
    }
}

/// The file a trained version holds beside its model: what training saw and chose.
/// Only a training job writes it (an upload may not send it).
pub const TRAINING_FILE: &str = "training.json";
/// The largest `training.json` read (a job's record and schema: far less).
const MAX_TRAINING_FILE_BYTES: u64 = 64 << 20;

/// The `training.json` of `model`'s version `version`, when a training job made
/// that version (`None` for any other version, or one that cannot be read).
pub fn training_record(state: &crate::api::ServerState, model: &str, version: u64) -> Option<Json> {
    let dir = state.sources.model_dir(model).ok()?.dir;
    let on_disk = crate::repository::scan_model(model, &dir).ok()?;
    let path = on_disk.versions.get(&version)?.dir.join(TRAINING_FILE);
    let bytes = crate::regular_file::read(&path, MAX_TRAINING_FILE_BYTES).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The categorical features of a training record (`training.json`) whose
/// categories are numbers (`data::Encoding::Categorical::numeric`): a value sent
/// to one of them is written as its number's category text first
/// (`data::number_category`), so that `1`, `1.0` and `"1.0"` are one category. A
/// record written before training recorded it has none: its categories are the
/// texts as written.
pub fn numeric_categorical_features(training: &Json) -> Vec<String> {
    training["encodings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "categorical" && e["numeric"] == true)
        .filter_map(|e| e["key"].as_str().map(str::to_string))
        .collect()
}

/// Why saving a trained version of `model` would replace a model no training job
/// made, if it would: its newest version holds no `training.json`. A trained
/// version takes the raw named columns of its schema, so it would answer other
/// inputs than the version it replaces, and every client of that model would
/// fail. (A model trained before may be trained again, on another schema too.)
pub fn replaces_a_foreign_model(state: &crate::api::ServerState, model: &str) -> Option<String> {
    foreign_model(model, &state.sources.model_dir(model).ok()?.dir)
}

/// [`replaces_a_foreign_model`] for the model directory `dir`; checked again under
/// the model's lock when the version is stored (`api::upload`), so that a version
/// uploaded since submission is never replaced either.
pub fn foreign_model(model: &str, dir: &std::path::Path) -> Option<String> {
    let on_disk = crate::repository::scan_model(model, dir).ok()?;
    let (version, newest) = on_disk.versions.iter().next_back()?;
    (!newest.dir.join(TRAINING_FILE).is_file()).then(|| {
        format!(
            "spec.model: model {model:?} has versions no training job made (its newest, \
             {version}, has no training.json): a trained version would replace it with one \
             that takes other inputs; train into another model name"
        )
    })
}

/// Everything about a training spec that can be checked before it runs; the
/// message starts with the field. Submission answers it as a 400.
pub fn check(spec: &TrainSpec) -> Result<(), String> {
    let trainer = trainer_for(&spec.algorithm).ok_or_else(|| {
        format!(
            "spec.algorithm.name: unknown algorithm {:?} (known: {})",
            spec.algorithm,
            trainer_names().join(", ")
        )
    })?;
    trainer.grid(&spec.algorithm_spec)?;
    schema::parse_schema(spec)?;
    cv::CvSpec::parse(&spec.cv)?;
    if !crate::model_config_list::is_valid_model_name(&spec.model) {
        return Err(format!(
            "spec.model: {:?} is not a valid model name (letters, digits, '.', '_' and '-', \
             not starting with '.')",
            spec.model
        ));
    }
    Ok(())
}

/// Refuses a `values` map with more categories than a training job encodes
/// (`max_categories`, `--max-categories`), naming the feature's field. The job
/// checks it first thing; submission may check it too, with the server's setting.
pub fn check_categories(spec: &TrainSpec, max_categories: usize) -> Result<(), String> {
    schema::check_categories(&schema::parse_schema(spec)?, max_categories)
}

/// For a file source, the columns the schema names that its header lacks (reads
/// the header only). Blocking.
pub fn check_columns(spec: &TrainSpec, runtime: &tokio::runtime::Handle) -> Result<(), String> {
    if !matches!(spec.source, SourceSpec::File(_)) {
        return Ok(());
    }
    let schema = schema::parse_schema(spec)?;
    let source =
        super::io::open_source(&spec.source, runtime).map_err(|e| format!("spec.source: {e}"))?;
    match schema::missing_column(&schema, source.columns()) {
        Some(m) => Err(format!("spec.schema: {m}")),
        None => Ok(()),
    }
}

/// How many of the first rows the result lists the model's own predictions for.
const SAMPLE_PREDICTIONS: usize = 100;

pub fn run(ctx: &JobContext, spec: &TrainSpec) -> Result<Json, JobError> {
    let started = Instant::now();
    let failed = |e: String| JobError::Failed(e);
    let trainer = trainer_for(&spec.algorithm)
        .ok_or_else(|| failed(format!("unknown algorithm {:?}", spec.algorithm)))?;
    let grid = trainer.grid(&spec.algorithm_spec).map_err(failed)?;
    let schema = schema::parse_schema(spec).map_err(failed)?;
    let cvspec = cv::CvSpec::parse(&spec.cv).map_err(failed)?;
    check_categories(spec, ctx.state.settings.max_categories).map_err(failed)?;
    let standardize = spec
        .algorithm_spec
        .get("standardize")
        .and_then(Json::as_bool)
        .unwrap_or_else(|| trainer.standardize_by_default());

    let raw = data::read(ctx, spec, &schema)?;
    let read_ms = started.elapsed().as_millis() as u64;
    ctx.message(format!("read {} rows", raw.rows.len()));
    let data = data::encode(&raw, &schema, ctx.state.settings.max_categories)?;
    let n_classes = data.classes.len();

    // The hold-out, then the folds over the rest.
    let all: Vec<usize> = (0..data.rows()).collect();
    let (train_rows, holdout_rows) = match cvspec.holdout {
        Some(h) => cv::stratified_holdout(&data.y, h, cvspec.seed),
        None => (all.clone(), Vec::new()),
    };
    let train_y: Vec<usize> = train_rows.iter().map(|&r| data.y[r]).collect();
    let folds = cv::stratified_folds(&train_y, n_classes, &cvspec).map_err(failed)?;
    let folds_total = (grid.len() * cvspec.folds + 1) as u64;
    // Asked every solver iteration and every tree. Every quarter second it also
    // refreshes the progress, which is what writes it to the store and learns of a
    // cancel asked through another server, so a long fold still stops promptly.
    let last_beat = std::cell::Cell::new(Instant::now());
    let cancel = || {
        if last_beat.get().elapsed() >= std::time::Duration::from_millis(250) {
            last_beat.set(Instant::now());
            ctx.progress(|_| {});
        }
        ctx.check_cancelled()
    };
    let fit_on = |params: &Params, rows: &[usize]| -> Result<(Box<dyn Fitted>, Scaler), JobError> {
        let scaler = if standardize {
            Scaler::fit(&data, rows)
        } else {
            Scaler::identity(data.n_numeric)
        };
        let x = scaler.transform(&data, rows);
        let y: Vec<usize> = rows.iter().map(|&r| data.y[r]).collect();
        let model = trainer.fit(
            &spec.algorithm_spec,
            params,
            &x,
            data.width,
            &y,
            n_classes,
            &cancel,
        )?;
        Ok((model, scaler))
    };

    let cv_started = Instant::now();
    let mut table = Vec::new();
    let mut done = 0u64;
    for params in &grid {
        let mut scores = Vec::new();
        for fold in 0..cvspec.folds {
            ctx.check_cancelled()?;
            ctx.progress(|p| {
                p.stage = "cross-validating".into();
                p.folds_done = Some(done);
                p.folds_total = Some(folds_total);
                p.fraction = Some(0.1 + 0.85 * done as f64 / folds_total as f64);
            });
            let fit_rows: Vec<usize> = (0..train_rows.len())
                .filter(|i| folds[*i] != fold)
                .map(|i| train_rows[i])
                .collect();
            let test_rows: Vec<usize> = (0..train_rows.len())
                .filter(|i| folds[*i] == fold)
                .map(|i| train_rows[i])
                .collect();
            let (model, scaler) = fit_on(params, &fit_rows)?;
            let proba = predict(&*model, &scaler, &data, &test_rows);
            let truth: Vec<usize> = test_rows.iter().map(|&r| data.y[r]).collect();
            scores.push(cvspec.scoring.score(&truth, &proba, n_classes));
            done += 1;
        }
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        let std =
            (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / scores.len() as f64).sqrt();
        table.push(json!({
            "params": params,
            "mean": mean,
            "std": std,
            "scores": scores,
        }));
    }
    // The first best, as scikit-learn's GridSearchCV picks.
    let mut best = 0;
    for (i, row) in table.iter().enumerate() {
        if row["mean"].as_f64() > table[best]["mean"].as_f64() {
            best = i;
        }
    }
    let cv_ms = cv_started.elapsed().as_millis() as u64;

    ctx.check_cancelled()?;
    ctx.progress(|p| {
        p.stage = "refitting".into();
        p.folds_done = Some(done);
        p.fraction = Some(0.95);
    });
    let refit_started = Instant::now();
    let (model, scaler) = fit_on(&grid[best], &train_rows)?;
    let refit_ms = refit_started.elapsed().as_millis() as u64;
    let holdout = (!holdout_rows.is_empty()).then(|| {
        let proba = predict(&*model, &scaler, &data, &holdout_rows);
        let truth: Vec<usize> = holdout_rows.iter().map(|&r| data.y[r]).collect();
        cv::holdout_metrics(&truth, &proba, n_classes)
    });
    let sample: Vec<usize> = (0..data.rows().min(SAMPLE_PREDICTIONS)).collect();
    let sample_proba = predict(&*model, &scaler, &data, &sample);
    let sample_labels: Vec<Json> = sample_proba
        .iter()
        .map(|p| data.classes[cv::argmax(p)].to_json())
        .collect();

    ctx.check_cancelled()?;
    ctx.progress(|p| {
        p.stage = "saving".into();
        p.folds_done = Some(folds_total);
    });
    let features: Vec<(String, bool)> = schema
        .features
        .iter()
        .map(|f| (f.key.clone(), f.categorical))
        .collect();
    let doc = format!("trained by ferroserve job {}", ctx.job.id);
    let model_bytes = onnx::export(
        &features,
        &data.encodings,
        standardize.then_some(&scaler),
        &data.classes,
        &*model,
        &doc,
    );
    let classes: Vec<Json> = data.classes.iter().map(|c| c.to_json()).collect();
    let best_params = Json::Object(grid[best].clone());
    let best_score = table[best]["mean"].clone();
    let training = json!({
        "job_id": ctx.job.id,
        "algorithm": spec.algorithm_spec,
        "schema": schema,
        "classes": classes,
        "encodings": data.encodings,
        "standardize": standardize,
        "scaler": if standardize { json!(scaler) } else { Json::Null },
        "best_params": best_params,
        "best_score": best_score,
        "scoring": cvspec.scoring.name(),
        "cv_results": table,
        "holdout": holdout,
        "rows": raw.rows.len(),
        "data_hash": raw.hash,
        "model": model.describe(),
    });
    let files = vec![
        ("model.onnx".to_string(), model_bytes),
        (
            TRAINING_FILE.to_string(),
            serde_json::to_vec_pretty(&training).unwrap_or_default(),
        ),
    ];
    // A cancel until now leaves nothing saved; from here one is refused (409).
    ctx.begin_publishing()?;
    let outcome = ctx
        .runtime
        .block_on(crate::api::upload::publish_files(
            ctx.state.clone(),
            &spec.model,
            &files,
            crate::api::Caller {
                client: None,
                actor: Some(format!("job {}", ctx.job.id)),
            },
        ))
        .map_err(|e| {
            failed(format!(
                "cannot save the model: {}",
                trained_model_words(&e, ctx.state.settings.max_upload_bytes)
            ))
        })?;
    ctx.message(format!(
        "saved {} version {} (best {} {} = {:.4}){}",
        spec.model,
        outcome.version,
        best_params,
        cvspec.scoring.name(),
        best_score.as_f64().unwrap_or(f64::NAN),
        if outcome.summary.stopped {
            "; the model is stopped: reload, load or deploy it to serve this version"
        } else {
            ""
        }
    ));
    Ok(json!({
        "model": spec.model,
        "version": outcome.version,
        "algorithm": spec.algorithm,
        "cv_results": table,
        "best_params": best_params,
        "best_score": best_score,
        "scoring": cvspec.scoring.name(),
        "folds": cvspec.folds,
        "holdout": holdout,
        "rows": raw.rows.len(),
        "data_hash": raw.hash,
        "classes": classes,
        "sample_predictions": {
            "labels": sample_labels,
            "probabilities": sample_proba,
        },
        "timings_ms": {
            "read": read_ms,
            "cross_validation": cv_ms,
            "refit": refit_ms,
            "total": started.elapsed().as_millis() as u64,
        },
    }))
}

/// `publish_files`' refusal in the words of a trained model: it checks the version
/// as it checks an upload, and says "the uploaded file", which a training job's
/// client never sent.
fn trained_model_words(e: &crate::api::ApiError, max_upload_bytes: u64) -> String {
    // The upload's own words name no setting, which a client of a training job
    // did not know bounds its model.
    if let crate::api::ApiError::PayloadTooLarge(_) = e {
        return format!(
            "the trained model's files (model.onnx and {TRAINING_FILE}) are larger than \
             --max-upload-bytes ({max_upload_bytes} bytes), which bounds a trained model as it \
             does an uploaded one: raise --max-upload-bytes, or train a smaller model (for a \
             forest, fewer or shallower trees)"
        );
    }
    e.to_string()
        .replace(
            "the uploaded file is not a model ferroserve can load",
            "the trained model does not load",
        )
        .replace("the uploaded model", "the trained model")
}

/// Class probabilities of `rows`, encoded with `scaler`.
fn predict(model: &dyn Fitted, scaler: &Scaler, data: &Encoded, rows: &[usize]) -> Vec<Vec<f64>> {
    let x = scaler.transform(data, rows);
    x.chunks(data.width.max(1))
        .take(rows.len())
        .map(|row| model.predict_proba(row))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model over the upload limit names the setting that bounds it.
    #[test]
    fn a_model_over_the_upload_limit_names_the_setting() {
        let e = crate::api::ApiError::PayloadTooLarge(
            "the model file is larger than the upload limit of 10000 bytes".into(),
        );
        let m = trained_model_words(&e, 10000);
        assert!(
            m.contains("larger than --max-upload-bytes (10000 bytes)")
                && m.contains("raise --max-upload-bytes"),
            "{m}"
        );
    }

    #[test]
    fn a_refused_save_speaks_of_the_trained_model() {
        let e = crate::api::ApiError::InvalidArgument(
            "the uploaded file is not a model ferroserve can load: Duplicate definition".into(),
        );
        assert_eq!(
            trained_model_words(&e, 1),
            "the trained model does not load: Duplicate definition"
        );
        let e = crate::api::ApiError::InvalidArgument(
            "the uploaded model does not fit the model's config.toml: x".into(),
        );
        assert_eq!(
            trained_model_words(&e, 1),
            "the trained model does not fit the model's config.toml: x"
        );
    }
}
