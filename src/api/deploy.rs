//! Deployments (`POST /deploy`, `stop_deployment`): a stored model served with its
//! settings, in this process or in its own worker process (`crate::workers`), and
//! brought back from a worker without failing a request. The rest of model
//! management is in [`super::manage`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::manage::{
    audit, deadline, describe_failures, recorded_locked, restore_model_settings, run_locked,
    settings_now, stop_model, stop_model_locked, summary_under_lock, to_the_end, ModelSummary,
};
use super::{ApiError, Caller, ServerState};
use crate::sources::{Deployment, SourcesError};
use crate::store::{EventKind, ModelSettings};

/// What `POST /deploy` asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeployRequest {
    pub model: String,
    pub deployment: Deployment,
}

/// Serves a stored model with the given settings. With workers on
/// (`--worker-ports`), the model is served by its own `ferroserve worker` process
/// with its limits enforced (see `crate::workers`), and only there: once the worker
/// serves and requests are forwarded to it, the versions loaded in this process are
/// unloaded and not loaded again while it is deployed. A deployed model deployed
/// again gets a new worker (started before the old one stops). Without workers the
/// model serves in this process: the timeout is its request deadline, CPU and
/// memory limits are recorded and reported as not enforced.
pub async fn deploy(
    state: &Arc<ServerState>,
    request: DeployRequest,
    caller: &Caller,
) -> Result<ModelSummary, ApiError> {
    if let Some(t) = request.deployment.timeout_secs {
        if crate::settings::deadline(t, 86_400.0).is_none() {
            return Err(ApiError::InvalidArgument(format!(
                "resources.timeout must be a positive number of seconds (at most 86400), not {t}"
            )));
        }
    }
    let d = &request.deployment;
    crate::workers::resources::Limits::parse(
        d.cpu_limit.as_deref(),
        d.memory_limit.as_deref(),
        d.timeout_secs,
    )
    .map_err(ApiError::InvalidArgument)?;
    let deadline = deadline(state);
    let sources = state.sources.clone();
    sources.model_dir(&request.model)?; // a valid name, before waiting
    let lock = sources.lock_model(&request.model, deadline).await?;
    let (state, caller) = (state.clone(), caller.clone());
    if let Some(workers) = state.workers.get().cloned() {
        // Starting a worker takes seconds and has its own deadline; the deployment
        // runs to its end on a task of its own once it has the model's lock.
        return to_the_end(async move {
            deploy_in_worker(&state, &workers, request, lock, &caller).await
        })
        .await;
    }
    // Refused before anything is recorded, as in a worker.
    sources.deployable_dir(&request.model)?;
    let runtime = tokio::runtime::Handle::current();
    let summary = run_locked(deadline, "the deployment", move |_| {
        // Recorded before it takes effect, so that after a restart the deployment
        // comes back with its settings; refused (no such model), nothing changed.
        let detail = deployment_json(&request.deployment);
        recorded_locked(&state, &runtime, deployed_row(&request), || {
            sources.deploy_locked(&request.model, request.deployment, &lock)
        })?;
        audit(
            &state,
            &caller,
            EventKind::Deploy,
            &request.model,
            None,
            detail,
        );
        summary_under_lock(&state, &request.model)
    })
    .await?;
    if !summary.is_served() {
        return Err(ApiError::Unavailable(format!(
            "model {:?} was deployed but no version is available: {}",
            summary.model,
            describe_failures(&summary)
        )));
    }
    Ok(summary)
}

/// The store's row of a model deployed as `request` asks.
fn deployed_row(request: &DeployRequest) -> ModelSettings {
    ModelSettings {
        model: request.model.clone(),
        stopped: false,
        deployment: Some(request.deployment.clone()),
    }
}

/// A deployment in a worker process, in the order that fails no request: the worker
/// starts and serves, forwarding switches to it, and only then are the versions
/// loaded in this process unloaded (requests holding them finish on them). The
/// model never loads here meanwhile: the caller holds its lock. A worker that
/// cannot serve the model changes nothing (the store's row is written back).
/// Answers the model's summary read under the lock, so that a delete right after
/// cannot turn this deployment's answer into a 404.
async fn deploy_in_worker(
    state: &Arc<ServerState>,
    workers: &Arc<crate::workers::Supervisor>,
    request: DeployRequest,
    lock: crate::sources::ModelGuard,
    caller: &Caller,
) -> Result<ModelSummary, ApiError> {
    // A folder that holds only an upload's staging is not a model yet (as status
    // and an in-process deployment see it): refused before anything is recorded.
    let dir = state.sources.deployable_dir(&request.model)?;
    let before = settings_now(&state.sources, &request.model);
    // Recorded before it takes effect, as in process.
    if let Some(store) = &state.store {
        store
            .save_model_settings(&deployed_row(&request), &before)
            .await?;
    }
    let started = workers
        .deploy(&request.model, dir.dir, request.deployment.clone())
        .await;
    if let Err(e) = started {
        restore_model_settings(state, &before).await;
        return Err(e);
    }
    // The worker serves already: isolating is quick and must happen, whatever the
    // management deadline.
    let detail = deployment_json(&request.deployment);
    let (sources, reader, name) = (state.sources.clone(), state.clone(), request.model.clone());
    let summary = tokio::task::spawn_blocking(move || {
        sources.isolate_locked(&name, request.deployment, &lock)?;
        summary_under_lock(&reader, &name)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the deployment failed: {e}")));
    let summary = match summary {
        Ok(Ok(summary)) => summary,
        Ok(Err(e)) | Err(e) => {
            restore_model_settings(state, &before).await;
            return Err(e);
        }
    };
    audit(
        state,
        caller,
        EventKind::Deploy,
        &summary.model,
        None,
        detail,
    );
    Ok(summary)
}

/// What `stop_deployment` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopDeployment {
    /// The model was deployed in a worker: it serves in this process again and its
    /// worker is gone.
    BackInProcess,
    /// The model was deployed in a worker but is gone from the model repository (its
    /// directory removed): its worker is gone and its deployment forgotten, and
    /// nothing serves it. It is not marked stopped: should its directory come back,
    /// it is served in this process as any other model. `reason` says why it cannot
    /// be served ("its directory is gone from the model repository").
    EndedModelGone { reason: String },
    /// The model served in this process: it is stopped.
    Stopped,
}

/// Ends a model's deployment. A model deployed in a worker process comes back to
/// this process with no request failing: it loads here first (its worker serving
/// meanwhile), then forwarding stops and the worker drains and goes; when no
/// version loads here (503), or the load outlives the management timeout (504,
/// the load undone when it finishes: [`load_back_in_process`]), nothing changes
/// and the worker keeps serving. A deployed model that is gone from the model
/// repository cannot come back here: its deployment ends and its worker goes
/// ([`end_deployment_of_gone_model`]). Any other model stops ([`stop_model`]).
/// Which of these it is, is decided under the model's lock, so a stop sent while
/// a deploy of the model runs acts on what that deploy left.
pub async fn stop_deployment(
    state: &Arc<ServerState>,
    model: &str,
    caller: &Caller,
) -> Result<StopDeployment, ApiError> {
    let Some(workers) = state.workers.get() else {
        stop_model(state, model, caller).await?;
        return Ok(StopDeployment::Stopped);
    };
    let deadline = deadline(state);
    let sources = state.sources.clone();
    sources.check_stoppable(model)?;
    // Whether the model is deployed is decided under its lock: a deploy that is
    // starting the model's worker holds it, and once it is over the model is
    // deployed (and comes back in-process here) or not (and stops). Decided
    // before, a stop sent while a deploy started stopped the new worker and the
    // model with it. The stop is recorded as pending meanwhile, as `stop_model`
    // does, so the watcher does not load the model while this waits.
    let intent = sources.intend_stop(model);
    let lock = sources.lock_model(model, deadline).await?;
    if workers.status(model).is_none() {
        stop_model_locked(state, model, caller, lock, intent, deadline).await?;
        return Ok(StopDeployment::Stopped);
    }
    drop(intent);
    let (state, workers, model, caller) = (
        state.clone(),
        workers.clone(),
        model.to_string(),
        caller.clone(),
    );
    // From here on it runs to its end even if its caller leaves: a hand-back cut
    // short would leave a worker running that nothing tracks.
    to_the_end(async move {
        let gone = {
            let (sources, name) = (sources.clone(), model.clone());
            tokio::task::spawn_blocking(move || gone_from_repository(&sources, &name))
                .await
                .map_err(|e| ApiError::Internal(format!("model operation failed: {e}")))?
        };
        if let Some(why) = gone {
            return end_deployment_of_gone_model(&state, &workers, &model, lock, &caller, why)
                .await;
        }
        if let Some(store) = &state.store {
            let ended = ModelSettings {
                model: model.clone(),
                stopped: false,
                deployment: None,
            };
            store
                .save_model_settings(&ended, &settings_now(&state.sources, &model))
                .await?;
        }
        // On an error the model is still deployed, and load_back_in_process has put
        // its deployment's row back under the model's lock.
        load_back_in_process(&sources, state.store.clone(), &model, lock, deadline).await?;
        workers.hand_back(&model).await;
        audit(
            &state,
            &caller,
            EventKind::Stop,
            &model,
            None,
            serde_json::json!({ "deployment": "ended", "serving": "in-process" }),
        );
        Ok(StopDeployment::BackInProcess)
    })
    .await
}

/// Why a deployed model can no longer be served from the model repository, if it
/// cannot: its directory is gone (removed by hand while it was deployed), or the
/// model config list in force leaves it out. Such a model cannot be loaded back in
/// this process, so ending its deployment cannot wait for that. Blocking (it looks
/// at the repository as a deploy does).
pub(crate) fn gone_from_repository(
    sources: &crate::sources::Sources,
    model: &str,
) -> Option<String> {
    match sources.deployable_dir(model) {
        Err(SourcesError::NotFound(why)) => {
            let dir_gone = sources.model_dir(model).is_ok_and(|d| !d.dir.is_dir());
            Some(if dir_gone {
                "its directory is gone from the model repository".to_string()
            } else {
                why
            })
        }
        _ => None,
    }
}

/// The end of a deployment whose model is gone from the model repository
/// ([`gone_from_repository`]): recorded in the store first (with the store down
/// nothing changes: 503), then the deployment is forgotten here and the worker
/// drains and stops, all under the model's lock (`lock`, released only once the
/// worker is gone, so no deploy can come between), and the stop goes to the audit
/// trail with why nothing serves the model now.
async fn end_deployment_of_gone_model(
    state: &Arc<ServerState>,
    workers: &Arc<crate::workers::Supervisor>,
    model: &str,
    lock: crate::sources::ModelGuard,
    caller: &Caller,
    why: String,
) -> Result<StopDeployment, ApiError> {
    if let Some(store) = &state.store {
        let ended = ModelSettings {
            model: model.to_string(),
            stopped: false,
            deployment: None,
        };
        store
            .save_model_settings(&ended, &settings_now(&state.sources, model))
            .await?;
    }
    forget_gone_deployment(state, workers, model, lock, &why).await?;
    audit(
        state,
        caller,
        EventKind::Stop,
        model,
        None,
        serde_json::json!({
            "deployment": "ended",
            "serving": "nowhere",
            "reason": format!("{why}, so it cannot be served in-process"),
        }),
    );
    Ok(StopDeployment::EndedModelGone { reason: why })
}

/// The in-memory end of a deployment whose model is gone from the model repository,
/// once the store says so (or has no deployment of it to say): the deployment is
/// forgotten here, then the worker drains and stops, and only then is `lock`
/// released, so no deploy can come between.
async fn forget_gone_deployment(
    state: &ServerState,
    workers: &Arc<crate::workers::Supervisor>,
    model: &str,
    lock: crate::sources::ModelGuard,
    why: &str,
) -> Result<(), ApiError> {
    let (sources, name) = (state.sources.clone(), model.to_string());
    let lock = tokio::task::spawn_blocking(move || {
        sources.forget_deployment_locked(&name, &lock);
        lock
    })
    .await
    .map_err(|e| ApiError::Internal(format!("ending model {model:?}'s deployment failed: {e}")))?;
    workers.stop(model).await;
    drop(lock);
    tracing::info!(
        model,
        "deployment ended; {why}, so nothing serves the model"
    );
    Ok(())
}

/// Has the repository watch end the deployments of models gone from the model
/// repository ([`crate::sources::Sources::on_deployment_gone`]; the watch waits
/// until the model has been gone for a grace of a few seconds, on two polls, and
/// hands over its lock, taken without waiting): each end
/// runs on a task of its own ([`end_deployment_gone_from_watch`]), so the
/// watch's thread never waits for a worker's drain. Called once, at start, when
/// deployments run in workers; the hook holds the state weakly (the state owns
/// the sources that own the hook).
pub(crate) fn end_deployments_gone_from_watch(state: &Arc<ServerState>) {
    let weak = Arc::downgrade(state);
    let runtime = tokio::runtime::Handle::current();
    state
        .sources
        .on_deployment_gone(Box::new(move |model, lock| {
            let Some(state) = weak.upgrade() else {
                return;
            };
            runtime.spawn(async move {
                end_deployment_gone_from_watch(&state, &model, lock).await;
            });
        }));
}

/// The end of a deployment whose model the repository watch found gone from the
/// model repository (its directory removed by hand, or by a delete on another
/// server sharing the repository and the store), under the model's lock (`lock`).
/// The stored settings lose the deployment only if they still hold one: after a
/// delete on another server the row is gone already, nothing is written, and that
/// delete's own event says what happened; otherwise a `stop` event says why nothing
/// serves the model. With the store down nothing changes, and a later poll tries
/// again.
async fn end_deployment_gone_from_watch(
    state: &Arc<ServerState>,
    model: &str,
    lock: crate::sources::ModelGuard,
) {
    let Some(workers) = state.workers.get() else {
        return;
    };
    let gone = {
        let (sources, name) = (state.sources.clone(), model.to_string());
        tokio::task::spawn_blocking(move || gone_from_repository(&sources, &name)).await
    };
    let Ok(Some(why)) = gone else {
        return; // back in the repository meanwhile
    };
    let mut recorded = false;
    if let Some(store) = &state.store {
        let stored = match store.model_settings().await {
            Ok(rows) => rows
                .into_iter()
                .any(|row| row.model == model && row.deployment.is_some()),
            Err(e) => {
                tracing::warn!(
                    model,
                    "deployed, but {why}; the deployment ends once the store answers: {e}"
                );
                return;
            }
        };
        if stored {
            let ended = ModelSettings {
                model: model.to_string(),
                stopped: false,
                deployment: None,
            };
            if let Err(e) = store
                .save_model_settings(&ended, &settings_now(&state.sources, model))
                .await
            {
                tracing::warn!(
                    model,
                    "deployed, but {why}; the deployment ends once the store answers: {e}"
                );
                return;
            }
            recorded = true;
        }
    }
    if let Err(e) = forget_gone_deployment(state, workers, model, lock, &why).await {
        tracing::error!(model, "{e}");
        return;
    }
    if recorded {
        audit(
            state,
            &Caller::default(),
            EventKind::Stop,
            model,
            None,
            serde_json::json!({
                "deployment": "ended",
                "serving": "nowhere",
                "reason": format!("{why}, so nothing serves it"),
            }),
        );
    }
}

/// Where a load back in process stands between the caller and the blocking
/// thread that loads: whoever moves it from `PENDING` first decides the outcome.
const LOAD_PENDING: u8 = 0;
const LOAD_COMMITTED: u8 = 1;
const LOAD_ABANDONED: u8 = 2;

/// Gives the load up (if it has not committed) when the caller's future is dropped:
/// the deadline (`stop_deployment` runs on a task of its own, which a client that
/// leaves does not drop).
struct AbandonOnDrop(Arc<std::sync::atomic::AtomicU8>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        let _ = self.0.compare_exchange(
            LOAD_PENDING,
            LOAD_ABANDONED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

/// Loads a deployed model back in this process ([`Sources::end_isolation_locked`])
/// within `deadline`, all or nothing: a load that outlives the deadline cannot be
/// interrupted, so it finishes, and is then undone on its
/// thread, under the model's lock, before anything else can see the model: its
/// versions are unloaded and it is isolated again with its deployment. The caller
/// gets 504 and its worker never stopped serving. A load that finished first wins
/// even when the deadline passes a moment later (the caller waits for its answer):
/// the answer always says what happened. Whenever the model stays deployed (the
/// load failed, was abandoned, or never started) the deployment's row goes back into
/// `store` here, before the lock is released: a caller that was answered 504 leaves
/// the store right too, and no later management call's row is overwritten by a
/// late write.
///
/// [`Sources::end_isolation_locked`]: crate::sources::Sources::end_isolation_locked
async fn load_back_in_process(
    sources: &Arc<crate::sources::Sources>,
    store: Option<Arc<crate::store::Store>>,
    model: &str,
    lock: crate::sources::ModelGuard,
    deadline: tokio::time::Instant,
) -> Result<(), ApiError> {
    let decided = Arc::new(std::sync::atomic::AtomicU8::new(LOAD_PENDING));
    let _abandon_when_gone = AbandonOnDrop(decided.clone());
    let (sources, name, decision) = (sources.clone(), model.to_string(), decided.clone());
    let runtime = tokio::runtime::Handle::current();
    let mut task = tokio::task::spawn_blocking(move || {
        let deployment = sources.deployment(&name);
        let (loaded, still_deployed) = if decision.load(Ordering::Acquire) != LOAD_PENDING {
            let given_up =
                SourcesError::Cancelled("the operation was given up before it started".into());
            (Err(given_up), true)
        } else {
            let loaded = sources.end_isolation_locked(&name, &lock);
            let committed = decision
                .compare_exchange(
                    LOAD_PENDING,
                    LOAD_COMMITTED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
            if !committed && loaded.is_ok() {
                // The caller was told nothing changed: make it so.
                tracing::info!(
                    model = %name,
                    "loaded back in process past the management deadline; undone, the \
                     deployment stays"
                );
                sources.isolate_locked(&name, deployment.clone().unwrap_or_default(), &lock)?;
            }
            // A failed load leaves the model isolated (end_isolation_locked isolates
            // it again), and an abandoned one was just undone.
            let still_deployed = !committed || loaded.is_err();
            (loaded, still_deployed)
        };
        // The caller wrote the row without the deployment before the load: put it
        // back here, still under the model's lock, so that no later management call
        // can come between (the caller itself may have left).
        if still_deployed {
            if let (Some(store), Some(d)) = (store, deployment) {
                let saved = ModelSettings {
                    model: name.clone(),
                    stopped: false,
                    deployment: Some(d),
                };
                if let Err(e) = runtime.block_on(store.write_back_model_settings(&saved)) {
                    tracing::warn!(model = %name, "the deployment is not yet recorded again: {e}");
                }
            }
        }
        loaded
    });
    let joined = match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(joined) => joined,
        Err(_) => {
            let abandoned = decided
                .compare_exchange(
                    LOAD_PENDING,
                    LOAD_ABANDONED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
            if abandoned {
                return Err(ApiError::DeadlineExceeded(format!(
                    "loading model {model:?} in this process did not finish within the \
                     management timeout; nothing changed: it stays deployed and its \
                     worker keeps serving it (the load that had started is undone when it \
                     finishes)"
                )));
            }
            // It committed just now: its answer is a moment away.
            task.await
        }
    };
    joined
        .map_err(|e| ApiError::Internal(format!("model operation failed: {e}")))?
        .map_err(ApiError::from)
}

/// A deployment's settings, as its audit event records them.
fn deployment_json(d: &Deployment) -> serde_json::Value {
    serde_json::json!({
        "environment": d.environment,
        "cpu_limit": d.cpu_limit,
        "memory_limit": d.memory_limit,
        "timeout_secs": d.timeout_secs,
    })
}
