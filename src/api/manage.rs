//! Model management: reload, deploy, stop, delete, and reloading the model config
//! list (uploads are in [`super::upload`], deployments in [`super::deploy`], the
//! models' summaries that status and these answers show in [`super::status`]). The
//! REST management API calls these, and so does gRPC (`HandleReloadConfigRequest` →
//! [`reload_config`]).
//!
//! Every change goes through `crate::sources::Sources`, under the model's lock, on a
//! blocking thread; the manager does the loading and the hot swap.
//!
//! Invariants (issue 10, "management must not wedge"):
//! * every operation has a deadline, `Settings::management_timeout`, that counts the
//!   wait for the model's lock; the lock is awaited asynchronously, so a busy model
//!   never occupies a blocking thread;
//! * an operation whose caller left (the request future dropped) or whose deadline
//!   passed before it started never starts its effect: the blocking part checks a
//!   cancellation token first (`run_locked`);
//! * an operation that started runs to its end whatever its caller does: everything
//!   it changes (the store's row, what is served, a worker, the audit trail) is done
//!   on its blocking thread (`run_locked`) or on a task of its own (`to_the_end`),
//!   never in the caller's future after an `.await` the caller could be dropped at.
//!   A client whose timeout fires halfway leaves no store that disagrees with what
//!   is served, and no worker that nothing tracks;
//! * no lock is held while waiting on a client: an upload streams into its staging
//!   directory without the lock and takes it only to move the checked file into place.

use std::sync::Arc;

// Deployments live in their own file; their API stays here with the rest.
pub use super::deploy::{deploy, stop_deployment, DeployRequest, StopDeployment};
pub(crate) use super::deploy::{end_deployments_gone_from_watch, gone_from_repository};
pub(super) use super::status::{describe_failures, summary_under_lock};
pub use super::status::{model_summary, models_status, ModelSummary, VersionSummary};
use super::{ApiError, Caller, ServerState};
use crate::model_config_list::ModelConfigList;
use crate::sources::{CancellationToken, ReloadAll, SourcesError};
use crate::store::{EventKind, ModelSettings, StoreError};

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Unavailable(m) | StoreError::Broken(m) => ApiError::Unavailable(m),
            StoreError::Invalid(m) => ApiError::Internal(m),
        }
    }
}

/// Records an audit event for what `caller` did (when the server has a store).
pub(crate) fn audit(
    state: &ServerState,
    caller: &Caller,
    kind: EventKind,
    model: &str,
    version: Option<u64>,
    detail: serde_json::Value,
) {
    if let Some(store) = &state.store {
        store.record(
            kind,
            model,
            version,
            detail,
            caller.client.clone(),
            caller.actor.clone(),
        );
    }
}

impl From<SourcesError> for ApiError {
    fn from(e: SourcesError) -> ApiError {
        match e {
            SourcesError::InvalidName(m) => ApiError::InvalidArgument(m),
            SourcesError::NotFound(m) => ApiError::NotFound(m),
            SourcesError::Conflict(m) => ApiError::Conflict(m),
            SourcesError::Io(m) => ApiError::Internal(m),
            SourcesError::Busy(m) => ApiError::Unavailable(m),
            SourcesError::Cancelled(m) => ApiError::DeadlineExceeded(m),
            SourcesError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

/// When an operation that starts now must have answered.
pub(super) fn deadline(state: &ServerState) -> tokio::time::Instant {
    tokio::time::Instant::now() + state.settings.management_timeout
}

/// Runs the effect of a management operation on a blocking thread, with whatever
/// lock the caller took moved into `f`. The effect does not start if the caller has
/// gone (this future was dropped) or the deadline passed before a thread picked it
/// up; past the deadline the caller gets 504 and `f` sees its token cancelled (what
/// it had started, a load, finishes; nothing new starts). Once `f` starts it runs
/// to its end whatever the caller does, so everything an operation changes (the
/// store, what is served, a worker, the audit trail) is done inside `f`: a caller
/// that leaves never stops an operation halfway.
pub(super) async fn run_locked<T: Send + 'static>(
    deadline: tokio::time::Instant,
    what: &str,
    f: impl FnOnce(&CancellationToken) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let cancel = CancellationToken::new();
    // Dropped with this future: when the client leaves, or when it returns.
    let _cancel_when_gone = cancel.clone().drop_guard();
    let task = tokio::task::spawn_blocking(move || {
        if cancel.is_cancelled() {
            return Err(ApiError::DeadlineExceeded(
                "the operation was given up before it started".into(),
            ));
        }
        f(&cancel)
    });
    match tokio::time::timeout_at(deadline, task).await {
        Ok(joined) => {
            joined.map_err(|e| ApiError::Internal(format!("model operation failed: {e}")))?
        }
        Err(_) => Err(ApiError::DeadlineExceeded(format!(
            "{what} did not finish within the management timeout; what had started \
             (a model load) finishes in the background"
        ))),
    }
}

/// What a reload did: the status of the models reloaded, and the models skipped
/// because another operation held them.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadOutcome {
    pub models: Vec<ModelSummary>,
    pub busy: Vec<String>,
}

/// Re-scans every model, or one (starting it again if it was stopped), and loads
/// what each policy asks for. Reloading every model skips (and names) busy models;
/// reloading one waits for it, up to the management timeout.
pub async fn reload(
    state: &Arc<ServerState>,
    model: Option<&str>,
    caller: &Caller,
) -> Result<ReloadOutcome, ApiError> {
    // An empty name is a mistake (`?modelname=` with the value left out), not a
    // request to reload every model.
    if model == Some("") {
        return Err(ApiError::InvalidArgument(
            "modelname is empty: name a model, or leave the parameter out to reload every \
             model"
                .into(),
        ));
    }
    let deadline = deadline(state);
    let sources = state.sources.clone();
    // One model's status is read under its lock, as the reload left it; a reload of
    // every model reads them after (no one lock covers them all). What a reload
    // records (the store, the audit trail) is done with its effect, on its thread.
    let runtime = tokio::runtime::Handle::current();
    let (state, caller) = (state.clone(), caller.clone());
    let (outcome, status) = match model {
        Some(name) => {
            let name = model_named_by_file(&sources, name);
            sources.model_dir(&name)?; // a valid name, before waiting
            let lock = sources.lock_model(&name, deadline).await?;
            run_locked(deadline, "the reload", move |_| {
                // A reload starts a stopped model again: recorded first, so a
                // restart keeps it started, and written back when the reload is
                // refused (no such model any more), which leaves it stopped. A
                // model not stopped has nothing to record: its reload works while
                // the store is down, as a reload of every model does.
                let before = settings_now(&sources, &name);
                if let (Some(store), true) = (&state.store, before.stopped) {
                    runtime.block_on(store.unstop_model(&name, &before))?;
                }
                if let Err(e) = sources.reload_model_locked(&name, &lock) {
                    if before.stopped {
                        runtime.block_on(restore_model_settings(&state, &before));
                    }
                    return Err(e.into());
                }
                audit_reloads(&state, &caller, std::slice::from_ref(&name));
                let status = summary_under_lock(&state, &name).into_iter().collect();
                let reloaded = ReloadAll {
                    reloaded: vec![name],
                    busy: Vec::new(),
                };
                Ok((reloaded, status))
            })
            .await?
        }
        None => {
            let reloaded = run_locked(deadline, "the reload", {
                let state = state.clone();
                move |cancel| {
                    let reloaded = sources.reload_all(cancel);
                    audit_reloads(&state, &caller, &reloaded.reloaded);
                    Ok(reloaded)
                }
            })
            .await?;
            (reloaded, models_status(&state))
        }
    };
    Ok(ReloadOutcome {
        models: status
            .into_iter()
            .filter(|m| outcome.reloaded.contains(&m.model))
            .collect(),
        busy: outcome.busy,
    })
}

fn audit_reloads(state: &ServerState, caller: &Caller, models: &[String]) {
    for model in models {
        audit(
            state,
            caller,
            EventKind::Reload,
            model,
            None,
            serde_json::json!({}),
        );
    }
}

/// The model a reload names. Old clients name the model by its file
/// (`reload_model?modelname=lr_iris.model`): when no model has the full name but
/// one has the name without its extension, that one is meant; so is the model a
/// file of that name directly in the repository root serves (the flat layout), even
/// before the watcher has seen the file.
fn model_named_by_file(sources: &crate::sources::Sources, name: &str) -> String {
    if sources.is_source(name) {
        return name.to_string();
    }
    match name.rsplit_once('.') {
        Some((stem, _))
            if !stem.is_empty() && (sources.is_source(stem) || sources.is_flat_candidate(name)) =>
        {
            stem.to_string()
        }
        _ => name.to_string(),
    }
}

/// Replaces the model config list (from the config file or gRPC `ReloadConfig`) and
/// brings serving in line with it. Answers the status of every model.
pub async fn reload_config(
    state: &Arc<ServerState>,
    list: ModelConfigList,
    caller: &Caller,
) -> Result<Vec<ModelSummary>, ApiError> {
    list.validate().map_err(ApiError::InvalidArgument)?;
    list.check_roots(&state.settings.model_roots())
        .map_err(ApiError::PermissionDenied)?;
    let listed: Vec<(String, String)> = list
        .models
        .iter()
        .map(|m| (m.name.clone(), m.base_path.display().to_string()))
        .collect();
    let sources = state.sources.clone();
    // The deployments the list leaves out end on a task of their own, started with
    // the list in force: a caller that leaves meanwhile stops neither.
    let (ending, busy) = run_locked(deadline(state), "applying the model config list", {
        let (state, caller) = (state.clone(), caller.clone());
        move |cancel| {
            let applied = sources.apply_config_list(list, cancel)?;
            for (model, base_path) in listed {
                let detail = serde_json::json!({ "base_path": base_path });
                audit(
                    &state,
                    &caller,
                    EventKind::ReloadConfig,
                    &model,
                    None,
                    detail,
                );
            }
            let ending = tokio::runtime::Handle::current()
                .spawn(async move { end_unlisted_deployments(&state, &caller).await });
            Ok((ending, applied.busy))
        }
    })
    .await?;
    ending
        .await
        .map_err(|e| ApiError::Internal(format!("ending unlisted deployments failed: {e}")))??;
    // A model busy now (a load or warm-up under way, another operation) takes the
    // list's policy and labels at the first repository poll after it is free: the
    // watcher sees that the list entry it was reconciled with is not the one in
    // force. With that poll off nothing would, so the caller is told.
    if !busy.is_empty() && state.settings.file_system_poll_wait.is_zero() {
        return Err(ApiError::Unavailable(format!(
            "the model config list is in force, but these models were busy (a load, \
             warm-up or another operation under way) and keep what they served until \
             they are reloaded, as the repository poll is off \
             (--file-system-poll-wait-seconds 0): {busy:?}"
        )));
    }
    Ok(models_status(state))
}

/// Ends the deployment of every model deployed (in a worker, or in this process
/// with `--worker-ports off`) that the model config list in force leaves out, as
/// stopping its deployment would (its record in the store, its worker), but
/// without marking it stopped: the list decides what is served, and a list that
/// names it again serves it again, in this process and with no deployment
/// settings. The list is in force already; a model whose lock stays busy past the
/// management deadline keeps its deployment, and the error names it.
pub(crate) async fn end_unlisted_deployments(
    state: &ServerState,
    caller: &Caller,
) -> Result<(), ApiError> {
    let workers = state.workers.get();
    let in_worker = |m: &str| workers.is_some_and(|w| w.status(m).is_some());
    let mut unlisted: std::collections::BTreeSet<String> = workers
        .map(|w| w.statuses().into_keys().collect())
        .unwrap_or_default();
    unlisted.extend(state.sources.deployed_in_process());
    unlisted.retain(|m| !state.sources.is_source(m));
    let mut kept = Vec::new();
    for model in unlisted {
        let sources = state.sources.clone();
        let lock = match sources.lock_model(&model, deadline(state)).await {
            Ok(lock) => lock,
            Err(e) => {
                tracing::warn!(model, "left out of the model config list, but kept: {e}");
                kept.push(model);
                continue;
            }
        };
        // Another operation may have decided meanwhile (its deployment ended, or a
        // list that names it again).
        let worker = in_worker(&model);
        let deployed = worker || state.sources.deployment(&model).is_some();
        if !deployed || state.sources.is_source(&model) {
            continue;
        }
        // Recorded first: after a restart the model is no deployment either.
        if let Some(store) = &state.store {
            let ended = ModelSettings {
                model: model.clone(),
                stopped: false,
                deployment: None,
            };
            if let Err(e) = store
                .save_model_settings(&ended, &settings_now(&state.sources, &model))
                .await
            {
                tracing::warn!(model, "left out of the model config list, but kept: {e}");
                kept.push(model);
                continue;
            }
        }
        let name = model.clone();
        let forgotten = tokio::task::spawn_blocking(move || {
            sources.forget_deployment_locked(&name, &lock);
        })
        .await;
        if let Err(e) = forgotten {
            return Err(ApiError::Internal(format!(
                "ending model {model:?}'s deployment failed: {e}"
            )));
        }
        if let (true, Some(workers)) = (worker, workers) {
            workers.stop(&model).await;
        }
        audit(
            state,
            caller,
            EventKind::Stop,
            &model,
            None,
            serde_json::json!({
                "deployment": "ended",
                "reason": "left out of the model config list",
            }),
        );
    }
    if kept.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Unavailable(format!(
            "the model config list is in force, but these models it leaves out are \
             still deployed (busy or the store is down; reload the config again): \
             {kept:?}"
        )))
    }
}

/// Has the repository watch forget, in the store first, the stop of a model whose
/// directory is gone ([`crate::sources::Sources::on_stop_gone`]; the watch waits
/// until the model has been gone for a grace of a few seconds, on two polls, and
/// hands over its lock, taken without waiting), so that a new directory of that
/// name, now or after a restart, is served like any new model. Each runs on a
/// task of its own; with the store down nothing changes and a later poll tries
/// again. Called once, at start, by the server that owns the store; the hook holds
/// the state weakly (the state owns the sources that own the hook).
pub fn forget_stops_gone_from_watch(state: &Arc<ServerState>) {
    let weak = Arc::downgrade(state);
    let runtime = tokio::runtime::Handle::current();
    state.sources.on_stop_gone(Box::new(move |model, lock| {
        let Some(state) = weak.upgrade() else {
            return;
        };
        runtime.spawn(async move {
            let before = settings_now(&state.sources, &model);
            if let Some(store) = &state.store {
                if let Err(e) = store.forget_model(&model, &before).await {
                    tracing::warn!(
                        model,
                        "stopped, but its directory is gone; the stop is forgotten once \
                         the store answers: {e}"
                    );
                    return;
                }
            }
            let sources = state.sources.clone();
            let name = model.clone();
            let forgot =
                tokio::task::spawn_blocking(move || sources.forget_gone_stop_locked(&name, &lock))
                    .await;
            if !matches!(forgot, Ok(true)) {
                // Back meanwhile: it stays stopped, and the store says so again.
                restore_model_settings(&state, &before).await;
            }
        });
    }));
}

/// Follows the model config list `--model-config-file` puts in force (the watcher
/// re-reads the file every `poll`): each time it changes, the deployments of the
/// models it leaves out end ([`end_unlisted_deployments`], as after a gRPC
/// `HandleReloadConfigRequest`). Runs until `stop` turns true.
pub async fn follow_config_file(
    state: Arc<ServerState>,
    poll: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut in_force = state.sources.config_list();
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let now = state.sources.config_list();
        let changed = match (&in_force, &now) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (None, None) => false,
            _ => true,
        };
        if !changed {
            continue;
        }
        in_force = now;
        if let Err(e) = end_unlisted_deployments(&state, &Caller::default()).await {
            tracing::warn!("the model config file changed: {e}");
        }
    }
}

/// Stops serving a model and keeps its files. Requests already running finish. The
/// stop is recorded before it waits for the model's lock, so a reload of every model
/// that gets the lock first leaves the model alone: the stop wins.
pub async fn stop_model(
    state: &Arc<ServerState>,
    model: &str,
    caller: &Caller,
) -> Result<(), ApiError> {
    let deadline = deadline(state);
    let sources = state.sources.clone();
    sources.check_stoppable(model)?;
    let intent = sources.intend_stop(model);
    let lock = sources.lock_model(model, deadline).await?;
    stop_model_locked(state, model, caller, lock, intent, deadline).await
}

/// The part of [`stop_model`] that runs once the model's lock is held (`lock`, and
/// the stop recorded as pending by `intent`, taken before waiting for it), within
/// `deadline`: for a caller that decided under the lock that a stop is what to do
/// (`stop_deployment` of a model that turned out not deployed).
pub(super) async fn stop_model_locked(
    state: &Arc<ServerState>,
    model: &str,
    caller: &Caller,
    lock: crate::sources::ModelGuard,
    intent: crate::sources::StopIntent,
    deadline: tokio::time::Instant,
) -> Result<(), ApiError> {
    let sources = state.sources.clone();
    let (state, name, caller) = (state.clone(), model.to_string(), caller.clone());
    let runtime = tokio::runtime::Handle::current();
    run_locked(deadline, "the stop", move |_| {
        // Recorded under the model's lock: a stop refused before (the model busy
        // past the deadline) records nothing; one refused here (a delete came
        // first, a listed model) writes the row back.
        let stopped = ModelSettings {
            model: name.clone(),
            stopped: true,
            deployment: None,
        };
        recorded_locked(&state, &runtime, stopped, || {
            let stopped = sources.stop_locked(&name, &lock);
            drop(intent); // only once the stopped set holds the model
            stopped
        })?;
        // Its worker, if any, drains and goes.
        if let Some(workers) = state.workers.get() {
            runtime.block_on(workers.stop(&name));
        }
        audit(
            &state,
            &caller,
            EventKind::Stop,
            &name,
            None,
            serde_json::json!({}),
        );
        Ok(())
    })
    .await
}

/// The part of a stop or an in-process deployment that runs on its blocking thread,
/// under the model's lock: `row` goes to the store first (with the store down
/// nothing changes: 503; after a restart what did happen stays), then `effect`; an
/// effect that is refused writes the settings in force before back, so that the
/// store says nothing changed either.
pub(super) fn recorded_locked<T>(
    state: &ServerState,
    runtime: &tokio::runtime::Handle,
    row: ModelSettings,
    effect: impl FnOnce() -> Result<T, SourcesError>,
) -> Result<T, ApiError> {
    let before = settings_now(&state.sources, &row.model);
    if let Some(store) = &state.store {
        runtime.block_on(store.save_model_settings(&row, &before))?;
    }
    effect().map_err(|e| {
        runtime.block_on(restore_model_settings(state, &before));
        e.into()
    })
}

/// A model's stored settings as they are in force now: what a refused change writes
/// back ([`restore_model_settings`]).
pub(super) fn settings_now(sources: &crate::sources::Sources, model: &str) -> ModelSettings {
    ModelSettings {
        model: model.to_string(),
        stopped: sources.is_stopped(model),
        deployment: sources.deployment(model),
    }
}

/// After a stop or deployment that was refused: nothing changed, and the store says
/// so again (it was written first, so that a restart keeps what did change); a
/// store that does not take it at once is written until it does
/// ([`crate::store::Store::write_back_model_settings`]).
pub(super) async fn restore_model_settings(state: &ServerState, before: &ModelSettings) {
    if let Some(store) = &state.store {
        if let Err(e) = store.write_back_model_settings(before).await {
            tracing::warn!(model = %before.model, "a refused change is not yet written back: {e}");
        }
    }
}

/// Stops serving a model and deletes its files. A delete whose caller gave up while
/// it waited for the model's lock never happens; once it starts, on its blocking
/// thread, it runs to its end whatever its caller does. The files go out of sight
/// first: a delete that cannot move them changes nothing, and a deployed model's
/// worker goes only once they are gone. A model deployed in a worker whose files
/// are gone already (its directory removed by hand) is deleted too: what is left
/// of it, its deployment and its worker, goes
/// ([`delete_deployment_of_gone_model_locked`]).
pub async fn delete_model(
    state: &Arc<ServerState>,
    model: &str,
    caller: &Caller,
) -> Result<(), ApiError> {
    let deadline = deadline(state);
    let sources = state.sources.clone();
    sources.model_dir(model)?; // a valid name, before waiting
    let lock = sources.lock_model(model, deadline).await?;
    let (state, name, caller) = (state.clone(), model.to_string(), caller.clone());
    let runtime = tokio::runtime::Handle::current();
    run_locked(deadline, "the delete", move |_| {
        // What was decided for the model (stopped, deployed) must not carry over to
        // a new one of the same name: forgotten first, and written back if the files
        // cannot be moved. With the store down (or an earlier write of the model's
        // not settled) nothing is deleted (503), so the delete's audit record is
        // never lost to an outage already known.
        if let Err(e) = sources.check_deletable_locked(&name, &lock) {
            if matches!(e, SourcesError::NotFound(_)) && sources.is_isolated(&name) {
                return delete_deployment_of_gone_model_locked(
                    &state, &runtime, &name, &lock, &caller,
                );
            }
            return Err(e.into());
        }
        let before = settings_now(&sources, &name);
        if let Some(store) = &state.store {
            runtime.block_on(store.forget_model(&name, &before))?;
        }
        let retired = match sources.retire_locked(&name, &lock) {
            Ok(retired) => retired,
            Err(e) => {
                runtime.block_on(restore_model_settings(&state, &before));
                return Err(e.into());
            }
        };
        // The files are gone: the delete is recorded now, in the database before
        // anything slow (a worker draining), so that a kill from here on leaves the
        // delete in the audit trail.
        if let Some(store) = &state.store {
            runtime.block_on(store.record_now(
                EventKind::Delete,
                &name,
                None,
                serde_json::json!({}),
                caller.client.clone(),
                caller.actor.clone(),
            ));
        }
        // Its worker, if any, drains and goes.
        if let Some(workers) = state.workers.get() {
            runtime.block_on(workers.stop(&name));
        }
        sources.forget_deleted_locked(&name, retired, &lock);
        Ok(())
    })
    .await
}

/// The delete of a model deployed in a worker whose directory is gone already: on
/// the delete's blocking thread, under the model's lock, its settings leave the
/// store (with the store down nothing changes: 503), its deployment is forgotten
/// here, the delete is recorded in the database, and then its worker drains and
/// stops, as in any delete.
fn delete_deployment_of_gone_model_locked(
    state: &ServerState,
    runtime: &tokio::runtime::Handle,
    name: &str,
    lock: &crate::sources::ModelGuard,
    caller: &Caller,
) -> Result<(), ApiError> {
    let before = settings_now(&state.sources, name);
    if let Some(store) = &state.store {
        runtime.block_on(store.forget_model(name, &before))?;
    }
    state.sources.forget_deployment_locked(name, lock);
    if let Some(store) = &state.store {
        runtime.block_on(store.record_now(
            EventKind::Delete,
            name,
            None,
            serde_json::json!({
                "files": "already gone from the model repository",
                "deployment": "ended",
            }),
            caller.client.clone(),
            caller.actor.clone(),
        ));
    }
    if let Some(workers) = state.workers.get() {
        runtime.block_on(workers.stop(name));
    }
    Ok(())
}

/// Runs the rest of a management operation on a task of its own and waits for it.
/// Once an operation holds the model's lock it changes things in several steps (the
/// store, what is served, a worker, the audit trail); its caller leaving (the
/// request's future dropped, e.g. a client whose timeout fired) must not stop it
/// halfway, which would leave them disagreeing: a store that says stopped for a
/// model that serves, a worker no one tracks. Past the management deadline the
/// caller still gets 504 where the operation says so.
pub(super) async fn to_the_end<T: Send + 'static>(
    op: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(op)
        .await
        .map_err(|e| ApiError::Internal(format!("model operation failed: {e}")))?
}
