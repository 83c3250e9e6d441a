//! Job operations (`crate::jobs`) for every adapter: submit, look up, list, cancel,
//! follow; and the old prediction service's `/predictall/` and
//! `/training/status/<id>` in its own terms.

use std::sync::Arc;

use super::manage::to_the_end;
use super::{ApiError, Caller, ServerState};
use crate::jobs::spec::{self, JobSpec};
use crate::jobs::uploads::{StagedUploads, UploadError};
use crate::jobs::{JobState, JobView, Jobs};
use crate::json_tensor::NestedJson;
use crate::manager::{ResolveError, VersionRequest};
use crate::store::EventKind;
use crate::store::JobQuery;

fn runner(state: &ServerState) -> Result<&Arc<Jobs>, ApiError> {
    state
        .jobs
        .get()
        .ok_or_else(|| ApiError::Unavailable("this server runs without a job runner".into()))
}

/// `POST /v1/jobs`: checks the spec at once (400 naming the field) and queues the
/// job. Answers its id.
pub async fn submit(
    state: &Arc<ServerState>,
    body: serde_json::Value,
    caller: &Caller,
) -> Result<String, ApiError> {
    let jobs = runner(state)?;
    let spec = spec::parse_job(&body, &jobs.data_dir)
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    check_spec(state, &spec).await?;
    let spec_json = body.get("spec").cloned().unwrap_or_default();
    // Queued, recorded and audited whatever the client does meanwhile: a job row
    // written but never queued here would wait for a restart.
    let (state, jobs, caller) = (state.clone(), jobs.clone(), caller.clone());
    to_the_end(async move {
        let id = jobs.submit(&spec, spec_json).await?;
        audit_submit(&state, &caller, &spec, &id);
        Ok(id)
    })
    .await
}

impl From<crate::jobs::SubmitError> for ApiError {
    fn from(e: crate::jobs::SubmitError) -> ApiError {
        match e {
            crate::jobs::SubmitError::Store(e) => e.into(),
            crate::jobs::SubmitError::SinkTaken(m) => ApiError::Conflict(m),
        }
    }
}

/// The submission in the model's audit trail.
fn audit_submit(state: &ServerState, caller: &Caller, spec: &JobSpec, id: &str) {
    super::manage::audit(
        state,
        caller,
        EventKind::JobSubmit,
        spec.model(),
        None,
        serde_json::json!({"job_id": id, "kind": spec.kind().as_str()}),
    );
}

/// What can be checked before a job runs, beyond the spec's shape.
async fn check_spec(state: &ServerState, spec: &JobSpec) -> Result<(), ApiError> {
    match spec {
        JobSpec::Score(s) => check_score(state, s).await?,
        JobSpec::Train(t) => {
            crate::jobs::train::check(t).map_err(ApiError::InvalidArgument)?;
            crate::jobs::train::check_categories(t, state.settings.max_categories)
                .map_err(ApiError::InvalidArgument)?;
            if let Some(why) = crate::jobs::train::replaces_a_foreign_model(state, &t.model) {
                return Err(ApiError::Conflict(why));
            }
            // A file's header is read here, so an unknown column is a 400 now.
            let (t, runtime) = (t.clone(), tokio::runtime::Handle::current());
            tokio::task::spawn_blocking(move || crate::jobs::train::check_columns(&t, &runtime))
                .await
                .map_err(|e| ApiError::Internal(format!("checking the source failed: {e}")))?
                .map_err(ApiError::InvalidArgument)?;
        }
    }
    Ok(())
}

/// A scoring job's model that exists but cannot answer now (loading, its worker
/// restarting): a 503 the client may retry, not a 400 to fix its spec.
fn not_available_now(why: &str) -> ApiError {
    ApiError::Unavailable(format!("spec.model: not available now: {why}"))
}

/// What can be checked before a scoring job runs: the model and version exist,
/// rows can be named for it, the outputs asked for are its. A model deployed in a
/// worker process is asked through its worker ([`crate::workers::scoring`]).
async fn check_score(state: &ServerState, s: &spec::ScoreSpec) -> Result<(), ApiError> {
    let deployed = state.workers.get().filter(|w| w.status(&s.model).is_some());
    if let Some(plan) = match deployed {
        Some(workers) => workers.scoring_plan(&s.model, &s.version).await,
        None => None,
    } {
        let plan = plan.map_err(|e| match e {
            // The worker serves the model: what it cannot find is the version or label.
            ApiError::NotFound(m) if s.version != VersionRequest::Latest => {
                ApiError::InvalidArgument(format!("spec.version: {m}"))
            }
            ApiError::NotFound(m) | ApiError::InvalidArgument(m) => {
                ApiError::InvalidArgument(format!("spec.model: {m}"))
            }
            ApiError::Unavailable(m) => not_available_now(&m),
            other => other,
        })?;
        return check_outputs(s, &plan.outputs);
    }
    let handle = state
        .manager
        .resolve(&s.model, &s.version)
        .map_err(|e| match e {
            ResolveError::VersionNotFound { .. } | ResolveError::LabelNotFound { .. } => {
                ApiError::InvalidArgument(format!("spec.version: {e}"))
            }
            e => match ApiError::from(e) {
                // At start, before the repository's first scan has loaded every
                // model, an unknown name may be one not loaded yet: retry, not fix.
                ApiError::NotFound(m) if !state.is_ready() => ApiError::Unavailable(format!(
                    "spec.model: {m}; the server is still loading its models at start, \
                     submit the job again shortly"
                )),
                ApiError::NotFound(m) => ApiError::InvalidArgument(format!("spec.model: {m}")),
                ApiError::Unavailable(m) => not_available_now(&m),
                other => other,
            },
        })?;
    crate::api::simple::feature_columns(&handle)
        .map_err(|e| ApiError::InvalidArgument(format!("spec.model: {e}")))?;
    let known: Vec<String> = handle
        .backend
        .signature()
        .outputs
        .iter()
        .map(|o| o.name.clone())
        .collect();
    check_outputs(s, &known)?;
    // A carried column named like an output column would be written twice: refused
    // where the signature's shapes and the class labels tell the output columns now
    // (the job checks them all again before its sink opens).
    if let Ok(plan) = crate::jobs::ScoringPlan::of(&handle) {
        plan.with_trained_class_labels(state)
            .check_carry(s, &handle.backend.signature().outputs)
            .map_err(|e| ApiError::InvalidArgument(format!("spec.carry: {e}")))?;
    }
    Ok(())
}

/// The outputs a score job asks for are among the model's `known` ones.
fn check_outputs(s: &spec::ScoreSpec, known: &[String]) -> Result<(), ApiError> {
    if let Some(outputs) = &s.outputs {
        if let Some(bad) = outputs.iter().find(|o| !known.contains(o)) {
            return Err(ApiError::InvalidArgument(format!(
                "spec.outputs: model {:?} has no output {bad:?} (its outputs: {known:?})",
                s.model
            )));
        }
    }
    Ok(())
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no job {id:?}"))
}

/// `GET /v1/jobs/{id}`.
pub async fn get(state: &ServerState, id: &str) -> Result<JobView, ApiError> {
    runner(state)?.get(id).await?.ok_or_else(|| not_found(id))
}

/// Filters and page of `GET /v1/jobs`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub state: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// `GET /v1/jobs`: newest first; answers the page and the number matching.
pub async fn list(state: &ServerState, query: ListQuery) -> Result<(Vec<JobView>, i64), ApiError> {
    let jobs = runner(state)?;
    if let Some(s) = &query.state {
        JobState::parse(s).ok_or_else(|| {
            ApiError::InvalidArgument(format!(
                "state must be queued, running, succeeded, failed or cancelled, not {s:?}"
            ))
        })?;
    }
    if let Some(k) = &query.kind {
        spec::JobKind::parse(k).ok_or_else(|| {
            ApiError::InvalidArgument(format!("kind must be score or train, not {k:?}"))
        })?;
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidArgument(
            "limit must be from 1 to 1000".into(),
        ));
    }
    let offset = query.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::InvalidArgument(
            "offset must not be negative".into(),
        ));
    }
    let (rows, total) = jobs
        .store()
        .jobs(&JobQuery {
            state: query.state,
            kind: query.kind,
            limit,
            offset,
        })
        .await?;
    // A job running here shows its latest progress, not the last one written; a
    // job whose end is stored shows that, even while its runner is still
    // publishing it; one whose end the store refused so far shows that end.
    let views = rows
        .into_iter()
        .map(|row| {
            let stored = JobView::from_row(row);
            if stored.state.is_finished() {
                return stored;
            }
            match jobs.live(&stored.job_id) {
                Some(live) => live.view(),
                None => jobs.unrecorded_end(&stored.job_id).unwrap_or(stored),
            }
        })
        .collect();
    Ok((views, total))
}

/// `POST /v1/jobs/{id}/cancel`: a queued job is cancelled at once, a running one
/// stops at its next batch. A finished job is a 409, as is a training job
/// publishing its version (too late: it is saved).
pub async fn cancel(
    state: &Arc<ServerState>,
    id: &str,
    caller: &Caller,
) -> Result<JobView, ApiError> {
    let jobs = runner(state)?;
    let before = jobs.get(id).await?.ok_or_else(|| not_found(id))?;
    if before.state.is_finished() {
        return Err(ApiError::Conflict(format!(
            "job {id:?} has already finished ({})",
            before.state.as_str()
        )));
    }
    // Cancelled and audited whatever the client does meanwhile.
    let (state, jobs, id, caller) = (state.clone(), jobs.clone(), id.to_string(), caller.clone());
    to_the_end(async move {
        let after = match jobs.cancel(&id).await {
            Ok(after) => after.ok_or_else(|| not_found(&id))?,
            Err(crate::jobs::CancelError::Store(e)) => return Err(e.into()),
            Err(e @ crate::jobs::CancelError::TooLate(_)) => {
                return Err(ApiError::Conflict(format!("job {id:?}: {e}")))
            }
        };
        // It finished between the first look and the cancel (its end recorded,
        // the job gone from memory): as finished before, a 409, and no cancel
        // in the audit trail.
        if after.state.is_finished() && after.state != crate::jobs::JobState::Cancelled {
            return Err(ApiError::Conflict(format!(
                "job {id:?} has already finished ({})",
                after.state.as_str()
            )));
        }
        let model = before
            .spec
            .get("model")
            .and_then(|m| m.as_str())
            .unwrap_or("");
        super::manage::audit(
            &state,
            &caller,
            EventKind::JobCancel,
            model,
            None,
            serde_json::json!({"job_id": id, "kind": before.kind}),
        );
        Ok(after)
    })
    .await
}

/// What `GET /v1/jobs/{id}/events` follows: the live job's changes, or the record
/// of one that is not running here.
pub enum JobEvents {
    Live(tokio::sync::watch::Receiver<JobView>),
    Finished(Box<JobView>),
}

/// The job's events, and a token cancelled once the server's job runner has
/// stopped (at shutdown, after its running jobs ended): a stream that follows a
/// job ends then, rather than hold the server's drain.
pub async fn events(
    state: &ServerState,
    id: &str,
) -> Result<(JobEvents, tokio_util::sync::CancellationToken), ApiError> {
    let jobs = runner(state)?;
    let stopped = jobs.stopped();
    if let Some(live) = jobs.live(id) {
        return Ok((JobEvents::Live(live.subscribe()), stopped));
    }
    Ok((
        JobEvents::Finished(Box::new(jobs.get(id).await?.ok_or_else(|| not_found(id))?)),
        stopped,
    ))
}

/// `POST /predictall/` with the old job.json (see `jobs::old_service::predictall_to_score`).
pub async fn predictall(
    state: &Arc<ServerState>,
    job: serde_json::Value,
    caller: &Caller,
) -> Result<String, ApiError> {
    let body = predictall_body(state, &job).await?;
    submit(state, body, caller).await
}

/// The old job.json as a score job; `modelkey` is the training job's id: score with
/// the version it trained (or a served model's name).
async fn predictall_body(
    state: &ServerState,
    job: &serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    let mut body = crate::jobs::old_service::predictall_to_score(job)
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    let key = body["spec"]["model"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some((model, version)) = trained_by_job(state, &key).await? {
        check_version_of_trained(body["spec"].get("version"), &key, &model, version)?;
        check_still_served(state, &key, &model, version)?;
        body["spec"]["model"] = serde_json::Value::String(model);
        body["spec"]["version"] = serde_json::json!(version);
    }
    Ok(body)
}

/// A `version` given beside a `modelkey` that is a training job's id must be the
/// version that job saved (the key names it): another would score with a model
/// another job saved. Given as a number or its digits; anything else (another
/// number, `"latest"`, a label) is an error naming both fields.
fn check_version_of_trained(
    given: Option<&serde_json::Value>,
    key: &str,
    model: &str,
    version: u64,
) -> Result<(), ApiError> {
    let Some(given) = given.filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let same = match given {
        serde_json::Value::Number(n) => n.as_u64() == Some(version),
        serde_json::Value::String(s) => s.trim() == version.to_string(),
        _ => false,
    };
    if same {
        return Ok(());
    }
    Err(ApiError::InvalidArgument(format!(
        "version: {given} conflicts with modelkey {key:?}, the training job that saved \
         version {version} of {model:?}: give the version it saved, or leave version out"
    )))
}

/// `POST /train/` with the old job.json (see `jobs::old_service::train_job_to_spec`).
pub async fn train(
    state: &Arc<ServerState>,
    job: serde_json::Value,
    caller: &Caller,
) -> Result<String, ApiError> {
    let body = crate::jobs::old_service::train_job_to_spec(&job)
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    submit(state, body, caller).await
}

/// The model name and version a training job saved, when `key` is a training
/// job's id: `None` when no job has that id (the caller may then read it as a
/// model name); an error when the job is not a training job or has no model yet.
pub async fn trained_by_job(
    state: &ServerState,
    key: &str,
) -> Result<Option<(String, u64)>, ApiError> {
    let Some(jobs) = state.jobs.get() else {
        return Ok(None);
    };
    let Some(view) = jobs.get(key).await? else {
        return Ok(None);
    };
    if view.kind != spec::JobKind::Train.as_str() {
        return Err(ApiError::InvalidArgument(format!(
            "modelkey {key:?} is a {} job, not a training job",
            view.kind
        )));
    }
    match view.state {
        JobState::Succeeded => {}
        JobState::Failed | JobState::Cancelled => {
            return Err(ApiError::Conflict(format!(
                "training job {key:?} {} and saved no model{}",
                view.state.as_str(),
                view.error.map(|e| format!(": {e}")).unwrap_or_default()
            )))
        }
        JobState::Queued | JobState::Running => {
            return Err(ApiError::Conflict(format!(
                "training job {key:?} is still {}; its model is not saved yet",
                view.state.as_str()
            )))
        }
    }
    let result = view.result.unwrap_or_default();
    let model = result["model"].as_str().map(str::to_string);
    let version = result["version"].as_u64();
    match (model, version) {
        (Some(m), Some(v)) => Ok(Some((m, v))),
        _ => Err(ApiError::Internal(format!(
            "training job {key:?} recorded no model and version"
        ))),
    }
}

/// Refuses a training job's model version that is served no more (a later
/// training replaced it under a policy that serves the newest, or it was removed)
/// with a message that says so, not the version's state alone; and one whose
/// number now holds another model: the model was deleted (or its version removed)
/// and a later job or an upload saved a new version under the same number. The
/// version's `training.json` names the job that wrote it; it is read from the
/// repository, whose files are what this process and a worker process alike load.
fn check_still_served(
    state: &ServerState,
    key: &str,
    model: &str,
    version: u64,
) -> Result<(), ApiError> {
    use crate::manager::VersionState;
    // A model deployed in a worker is served there, not here: its files tell.
    let deployed = state.workers.get().and_then(|w| w.status(model)).is_some();
    let resolved = (!deployed).then(|| {
        state
            .manager
            .resolve(model, &VersionRequest::Specific(version))
    });
    if let Some(Err(
        ResolveError::VersionNotFound {
            state: None | Some(VersionState::End),
            ..
        }
        | ResolveError::ModelNotFound(_),
    )) = resolved
    {
        return Err(ApiError::NotFound(format!(
            "the model training job {key:?} saved ({model:?} version {version}) is \
             not served any more: a later version replaced it (a version_policy that \
             serves the newest only; version_policy = \"all\" in its config.toml keeps \
             every version) or it was removed; use the newest training job's id"
        )));
    }
    let saved_by = crate::jobs::train::training_record(state, model, version)
        .and_then(|training| training["job_id"].as_str().map(str::to_string));
    match saved_by {
        Some(job) if job == key => Ok(()),
        Some(job) => Err(ApiError::NotFound(format!(
            "the model training job {key:?} saved ({model:?} version {version}) is not \
             served any more: the model was deleted or that version removed, and version \
             {version} now holds the model training job {job:?} saved; use that job's id"
        ))),
        None => Err(ApiError::NotFound(format!(
            "the model training job {key:?} saved ({model:?} version {version}) is not \
             served any more: version {version} of {model:?} in the repository is not the \
             one that job saved (the model was deleted or that version removed)"
        ))),
    }
}

/// `POST /predict/` of the old service: `{"modelkey": <training job id or model
/// name>, "record": {…one row…}, "schema"?}`. The row is scored with the model
/// the job trained; fields of the record that are not the model's features (the
/// label, ids) are left out. Answers the predicted label (mapped back through the
/// training schema's label map, `"yes"` rather than `1`) and the probability of
/// each class.
pub async fn old_predict(
    state: &ServerState,
    body: serde_json::Value,
) -> Result<serde_json::Value, ApiError> {
    use crate::api::simple::{feature_columns, simple_predict, Rows, SimpleRequest};
    let invalid = |m: &str| ApiError::InvalidArgument(m.to_string());
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("the body must be a JSON object {\"modelkey\", \"record\"}"))?;
    if let Some(unknown) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "modelkey" | "modelKey" | "record" | "schema"))
    {
        return Err(invalid(&format!(
            "unknown field {unknown:?} (known: modelkey, record, schema)"
        )));
    }
    let given = |k: &str| obj.get(k).filter(|v| !v.is_null());
    if let (Some(a), Some(b)) = (given("modelkey"), given("modelKey")) {
        if text(a) != text(b) {
            return Err(invalid(&format!(
                "modelKey: {b} conflicts with modelkey = {a}: both name the model; give one \
                 of them (or the same value in both)"
            )));
        }
    }
    let key = match obj.get("modelkey").or_else(|| obj.get("modelKey")) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err(invalid("modelkey is required (the training job's id)")),
    };
    let record = obj
        .get("record")
        .and_then(|r| r.as_object())
        .ok_or_else(|| invalid("record is required (an object of the row's fields)"))?;
    let (model, version, label_map, trained_classes) = match trained_by_job(state, &key).await? {
        Some((model, version)) => {
            check_still_served(state, &key, &model, version)?;
            let view = runner(state)?
                .get(&key)
                .await?
                .ok_or_else(|| not_found(&key))?;
            let map = view.spec["schema"]["label"]["values"].as_object().cloned();
            // The probabilities' columns, in the order the job recorded.
            let classes: Option<Vec<String>> = view
                .result
                .as_ref()
                .and_then(|r| r["classes"].as_array())
                .map(|c| c.iter().map(text).collect());
            (model, VersionRequest::Specific(version), map, classes)
        }
        None if state.manager.resolve(&key, &VersionRequest::Latest).is_ok() => {
            (key.clone(), VersionRequest::Latest, None, None)
        }
        None => {
            return Err(ApiError::NotFound(format!(
                "no training job and no model {key:?}"
            )))
        }
    };
    let handle = state.manager.resolve(&model, &version)?;
    // A served model's name: a version a training job made has its label map and
    // classes in its training.json, as the job's record has them.
    // Only a model a training job wrote has one: others skip the read.
    let by_name = model == key
        && label_map.is_none()
        && trained_classes.is_none()
        && handle.backend.traits().trained;
    let (label_map, trained_classes) =
        match by_name.then(|| crate::jobs::train::training_record(state, &model, handle.version)) {
            Some(Some(training)) => (
                training["schema"]["label_map"].as_object().cloned(),
                training["classes"]
                    .as_array()
                    .map(|c| c.iter().map(text).collect()),
            ),
            _ => (label_map, trained_classes),
        };
    let columns = feature_columns(&handle)?;
    let mut row = std::collections::BTreeMap::new();
    for column in &columns {
        let value = record.get(column).ok_or_else(|| {
            invalid(&format!(
                "record has no field {column:?} (the model's features: {columns:?})"
            ))
        })?;
        row.insert(column.clone(), feature_value(column, value)?);
    }
    let response = simple_predict(
        state,
        SimpleRequest {
            model: model.clone(),
            version: VersionRequest::Specific(handle.version),
            rows: Rows::Named(vec![row]),
            options: Default::default(),
            top_k: None,
        },
    )
    .await?;
    let label = serde_json::to_value(NestedJson::row(&response.prediction, 0))
        .map_err(|e| ApiError::Internal(format!("cannot encode the prediction: {e}")))?;
    // The label map sends "yes" to 1: answer "yes" for 1.
    let unmapped = |l: &str| -> Option<String> {
        label_map
            .as_ref()
            .and_then(|m| m.iter().find(|(_, v)| text(v) == l))
            .map(|(k, _)| k.clone())
    };
    let mut answer = serde_json::json!({
        "modelkey": key,
        "model": model,
        "version": response.handle.version,
        "prediction": unmapped(&text(&label)).map(serde_json::Value::String).unwrap_or_else(|| label.clone()),
        "label": label,
    });
    let classes = response
        .handle
        .class_labels()
        .map(<[String]>::to_vec)
        .or(trained_classes);
    if let Some(p) = &response.probabilities {
        let row = serde_json::to_value(NestedJson::row(p, 0))
            .map_err(|e| ApiError::Internal(format!("cannot encode the probabilities: {e}")))?;
        if let Some(row) = row.as_array() {
            // A model that names no classes: its classes by position, as classify
            // answers them.
            let classes =
                classes.unwrap_or_else(|| (0..row.len()).map(|i| i.to_string()).collect());
            let by_class: serde_json::Map<String, serde_json::Value> = classes
                .iter()
                .zip(row)
                .map(|(class, p)| (unmapped(class).unwrap_or_else(|| class.clone()), p.clone()))
                .collect();
            answer["probabilities"] = serde_json::Value::Object(by_class);
        }
    }
    Ok(answer)
}

/// A JSON value as the text a label has (`"yes"`, `1`).
fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn feature_value(
    column: &str,
    v: &serde_json::Value,
) -> Result<crate::model_config::FeatureValue, ApiError> {
    use crate::model_config::FeatureValue;
    match v {
        serde_json::Value::Number(n) => n.as_f64().map(FeatureValue::Number).ok_or_else(|| {
            ApiError::InvalidArgument(format!("record.{column}: {n} is not a number"))
        }),
        serde_json::Value::String(s) => Ok(FeatureValue::Text(s.clone())),
        // As `/predict` takes one: 1 or 0 to a numeric input, a text input refuses it.
        serde_json::Value::Bool(b) => Ok(FeatureValue::Bool(*b)),
        serde_json::Value::Null => Ok(FeatureValue::Missing),
        other => Err(ApiError::InvalidArgument(format!(
            "record.{column}: a value must be a number, a string, a boolean or null, not {other}"
        ))),
    }
}

/// `GET /training/status/<id>` as the old service answered it: `PENDING` while
/// queued, the latest progress message while running, `SUCCESS`, or `FAILURE`
/// with the reason (a cancelled job is a failure "cancelled").
pub async fn old_status(state: &ServerState, id: &str) -> Result<(String, String), ApiError> {
    let view = get(state, id).await?;
    let latest = view.messages.last().map(|m| m.text.clone());
    Ok(match view.state {
        JobState::Queued => ("PENDING".into(), "queued".into()),
        JobState::Running => (
            "PROGRESS".into(),
            latest.unwrap_or_else(|| {
                format!(
                    "{}: {} rows read",
                    view.progress.stage, view.progress.rows_read
                )
            }),
        ),
        JobState::Succeeded if view.kind == spec::JobKind::Train.as_str() => {
            let r = view.result.unwrap_or_default();
            (
                "SUCCESS".into(),
                format!(
                    "model {} version {} trained on {} rows; best parameters {}, {} {}",
                    r["model"].as_str().unwrap_or("?"),
                    r["version"],
                    r["rows"],
                    r["best_params"],
                    r["scoring"].as_str().unwrap_or("score"),
                    r["best_score"]
                ),
            )
        }
        JobState::Succeeded => (
            "SUCCESS".into(),
            format!("{} rows written", view.progress.rows_written),
        ),
        JobState::Failed => (
            "FAILURE".into(),
            view.error.unwrap_or_else(|| "failed".into()),
        ),
        JobState::Cancelled => ("FAILURE".into(), "cancelled".into()),
    })
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> ApiError {
        match e {
            UploadError::TooLarge(_) => ApiError::PayloadTooLarge(e.to_string()),
            UploadError::Invalid(m) => ApiError::InvalidArgument(m),
            UploadError::Io(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// `POST /v1/jobs` as `multipart/form-data`: `body` is the `spec` part, `uploads`
/// the file parts. Every `{"upload": "<part>"}` source must name a part (400
/// naming it), and every part must be named by the spec (400 naming the part). A
/// source without `format` takes it from the part's file name. The files move to
/// the job's own directory, removed when the job ends.
pub async fn submit_uploaded(
    state: &Arc<ServerState>,
    mut body: serde_json::Value,
    uploads: StagedUploads,
    caller: &Caller,
) -> Result<String, ApiError> {
    let jobs = runner(state)?;
    let mut used = Vec::new();
    if let Some(source) = body
        .get_mut("spec")
        .and_then(|s| s.get_mut("source"))
        .and_then(serde_json::Value::as_object_mut)
    {
        if let Some(part) = source.get("upload").and_then(|p| p.as_str()) {
            let part = part.to_string();
            let file = uploads.file(&part).ok_or_else(|| {
                let sent: Vec<&str> = uploads.files().iter().map(|f| f.part.as_str()).collect();
                ApiError::InvalidArgument(format!(
                    "spec.source.upload: the request has no part {part:?} (its file parts: {sent:?})"
                ))
            })?;
            if !source.contains_key("format") {
                if let Some(format) = file.format() {
                    source.insert("format".into(), format_name(format).into());
                }
            }
            used.push(part);
        }
    }
    if let Some(unused) = uploads.files().iter().find(|f| !used.contains(&f.part)) {
        return Err(ApiError::InvalidArgument(format!(
            "part {:?} is not used by the spec (refer to it as {{\"upload\": {:?}}})",
            unused.part, unused.part
        )));
    }
    let spec = spec::parse_job_in(
        &body,
        spec::Roots {
            data_dir: &jobs.data_dir,
            uploads: Some(uploads.dir()),
        },
    )
    .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    check_spec(state, &spec).await?;
    let id = crate::jobs::new_job_id();
    let spec_json = body.get("spec").cloned().unwrap_or_default();
    // The files move to the job's directory and the job is queued (or the files
    // removed) whatever the client does meanwhile: no directory without a job.
    let (state, jobs, caller) = (state.clone(), jobs.clone(), caller.clone());
    to_the_end(async move {
        let dir = uploads.persist(&id).await?;
        match jobs.submit_as(id, &spec, spec_json).await {
            Ok(id) => {
                audit_submit(&state, &caller, &spec, &id);
                Ok(id)
            }
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&dir).await;
                Err(e.into())
            }
        }
    })
    .await
}

fn format_name(format: spec::FileFormat) -> &'static str {
    match format {
        spec::FileFormat::Csv => "csv",
        spec::FileFormat::JsonLines => "jsonl",
        spec::FileFormat::Parquet => "parquet",
    }
}

/// `POST /predictall/` as `multipart/form-data`: the old job.json in the `spec`
/// part, `inputCollection` may be `{"upload": "<part>"}`.
pub async fn predictall_uploaded(
    state: &Arc<ServerState>,
    job: serde_json::Value,
    uploads: StagedUploads,
    caller: &Caller,
) -> Result<String, ApiError> {
    let body = predictall_body(state, &job).await?;
    submit_uploaded(state, body, uploads, caller).await
}

/// `POST /train/` as `multipart/form-data`: the old job.json in the `spec` part,
/// `inputCollection` may be `{"upload": "<part>"}`.
pub async fn train_uploaded(
    state: &Arc<ServerState>,
    job: serde_json::Value,
    uploads: StagedUploads,
    caller: &Caller,
) -> Result<String, ApiError> {
    let body = crate::jobs::old_service::train_job_to_spec(&job)
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    submit_uploaded(state, body, uploads, caller).await
}

/// A staging directory for the file parts of a job request (see
/// `crate::jobs::uploads`), bounded by `max_upload_bytes`.
pub async fn stage_uploads(state: &ServerState) -> Result<StagedUploads, ApiError> {
    let jobs = runner(state)?;
    Ok(StagedUploads::new(&jobs.uploads_dir, state.settings.max_upload_bytes).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/predictall/` with a training job's id as `modelkey` scores the version
    /// that job saved: a `version` beside it must be that one (it scored another
    /// job's model), as a number or its digits.
    #[test]
    fn a_version_beside_a_training_jobs_modelkey_must_be_the_one_it_saved() {
        let check =
            |given: serde_json::Value| check_version_of_trained(Some(&given), "job1", "bank", 1);
        for same in [
            serde_json::json!(1),
            serde_json::json!("1"),
            serde_json::Value::Null,
        ] {
            assert!(check(same.clone()).is_ok(), "{same}");
        }
        assert!(check_version_of_trained(None, "job1", "bank", 1).is_ok());
        for other in [
            serde_json::json!(2),
            serde_json::json!("2"),
            serde_json::json!("latest"),
            serde_json::json!("stable"),
            serde_json::json!(1.5),
        ] {
            match check(other.clone()) {
                Err(ApiError::InvalidArgument(m)) => {
                    assert!(
                        m.starts_with(&format!(
                            "version: {other} conflicts with modelkey \"job1\""
                        )),
                        "{m}"
                    );
                    assert!(m.contains("version 1 of \"bank\""), "{m}");
                }
                answer => panic!("{other}: {answer:?}"),
            }
        }
    }

    /// A scoring job for a model the server does not know is a 400 naming the
    /// field, except at start, before the first scan has loaded the models: then
    /// it may be one not loaded yet, a 503 to retry.
    #[tokio::test]
    async fn an_unknown_model_at_start_is_a_503_to_retry() {
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("in.csv"), "a\n1\n").unwrap();
        let spec = crate::jobs::spec::parse_job(
            &serde_json::json!({"kind": "score", "spec": {"model": "bank",
                "source": {"path": "in.csv"}, "sink": {"path": "out.csv"}}}),
            data.path(),
        )
        .unwrap();
        let settings = crate::settings::Settings::default();
        let manager = std::sync::Arc::new(crate::manager::Manager::new(
            crate::server::backend_options(&settings),
        ));
        let state = ServerState::new(settings, manager.clone());
        match check_spec(&state, &spec).await {
            Err(ApiError::Unavailable(m)) => {
                assert!(m.starts_with("spec.model: "), "{m}");
                assert!(m.contains("still loading its models"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        manager.set_ready();
        match check_spec(&state, &spec).await {
            Err(ApiError::InvalidArgument(m)) => assert!(m.starts_with("spec.model: "), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
