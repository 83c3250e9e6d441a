//! What a restart brings back from the metadata store, before anything is served:
//! the models stopped before it stay stopped, deployments come back with their
//! settings, and (with `--worker-ports`) the supervisor starts with the workers of the
//! recorded deployments, on their old ports when free.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::ServerState;
use crate::store::Store;

/// Restores every model's saved settings (stopped, deployment) into the sources,
/// ending a deployment in a worker whose model is gone from the repository, and
/// forgets the `workers` rows that name no deployment.
pub(super) async fn saved_settings(
    state: &Arc<ServerState>,
    store: &Arc<Store>,
) -> anyhow::Result<()> {
    // What management decided before a restart: stopped models stay stopped,
    // deployments come back with their settings.
    let saved_settings = store
        .model_settings()
        .await
        .map_err(|e| anyhow::anyhow!("metadata store: {e}"))?;
    // A `workers` row names a deployment's worker; one whose model has no
    // deployment in the store (a delete or stop interrupted by a kill after the
    // settings went and before the row did, or a deployment ended just below)
    // names nothing, and goes.
    let mut deployed = std::collections::HashSet::new();
    for mut saved in saved_settings {
        if !saved.stopped && saved.deployment.is_some() && state.settings.worker_ports.is_some() {
            saved.deployment = end_deployment_gone_from_repository(state, store, &saved).await;
        }
        if !saved.stopped && saved.deployment.is_some() {
            deployed.insert(saved.model.clone());
        }
        if saved.stopped {
            tracing::info!(model = %saved.model, "stopped before the restart; kept stopped");
        }
        state
            .sources
            .restore(&saved.model, saved.stopped, saved.deployment);
    }
    for stale in store
        .workers()
        .await
        .map_err(|e| anyhow::anyhow!("metadata store: {e}"))?
        .into_iter()
        .filter(|w| !deployed.contains(&w.model))
    {
        match store.forget_worker(&stale.model).await {
            Ok(()) => {
                tracing::info!(model = %stale.model, "forgot the worker of a deployment that no longer exists")
            }
            Err(e) => {
                tracing::warn!(model = %stale.model, "a stale worker row stays in the store: {e}")
            }
        }
    }
    Ok(())
}

/// With `--worker-ports`, starts the worker supervisor and the workers of the
/// deployments recorded before a restart; without it, does nothing.
pub(super) async fn start_workers(
    state: &Arc<ServerState>,
    store: &Arc<Store>,
) -> anyhow::Result<()> {
    // Isolated deployments (issue 14): the supervisor, and the workers of the
    // deployments recorded before a restart, on their old ports when free.
    let Some(ports) = state.settings.worker_ports else {
        return Ok(());
    };
    let binary = match &state.settings.worker_binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot find this executable")?,
    };
    let config = crate::workers::WorkerConfig {
        binary,
        ports,
        bind: state.settings.worker_bind,
        state_dir: state.settings.state_dir().join("workers"),
        onnxruntime_path: state.settings.onnxruntime_path.clone(),
        tensorflow_path: state.settings.tensorflow_path.clone(),
        auth_tokens: state.settings.auth_tokens.clone(),
        metrics_require_token: state.settings.metrics_require_token,
        main_auth: Some(state.auth.clone()),
        metrics_path: state.settings.metrics_path.clone(),
        main_server_url: state.settings.public_url.clone(),
        inherited: crate::workers::worker::Inherited::of(&state.settings),
        startup_timeout: state.settings.worker_start_timeout,
        // A stopping worker drains at least as long as this server does; a
        // deployment's longer timeout lengthens its own drain.
        stop_timeout: state.settings.shutdown_timeout,
        crash_loop_failures: 5,
        crash_loop_window: Duration::from_secs(60),
        cgroups: state.settings.worker_cgroups,
    };
    let supervisor = crate::workers::Supervisor::new(config, Some(store.clone()))
        .context("cannot start the worker supervisor")?;
    let _ = state.workers.set(supervisor.clone());
    // A deployed model whose directory goes while the server runs loses its
    // worker and its deployment (the watcher notices it).
    crate::api::manage::end_deployments_gone_from_watch(state);
    supervisor.start_harvesting();
    let old_ports: std::collections::HashMap<String, u16> = store
        .workers()
        .await
        .map_err(|e| anyhow::anyhow!("metadata store: {e}"))?
        .into_iter()
        .map(|w| (w.model, w.port))
        .collect();
    for saved in store
        .model_settings()
        .await
        .map_err(|e| anyhow::anyhow!("metadata store: {e}"))?
    {
        let (false, Some(deployment)) = (saved.stopped, saved.deployment) else {
            continue;
        };
        let dir = match state.sources.model_dir(&saved.model) {
            Ok(d) if d.dir.is_dir() => d.dir,
            _ => {
                tracing::warn!(model = %saved.model, "deployed model's directory is gone; no worker");
                continue;
            }
        };
        // Served by its worker alone: never loaded in this process (the
        // initial load has not started yet).
        state.sources.restore_isolated(&saved.model);
        let port = old_ports.get(&saved.model).copied();
        if let Err(e) = supervisor
            .restore(&saved.model, dir, deployment, port)
            .await
        {
            // Served here rather than not at all (its deployment's settings
            // stay); deploying it again moves it into a worker.
            state.sources.end_restored_isolation(&saved.model);
            tracing::warn!(model = %saved.model, "cannot restore the deployment's worker: {e}; the model is served in this process until it is deployed again");
            crate::api::manage::audit(
                state,
                &crate::api::Caller::default(),
                crate::store::EventKind::Deploy,
                &saved.model,
                None,
                serde_json::json!({
                    "worker": format!("not restored: {e}"),
                    "serving": "in-process",
                }),
            );
        }
    }
    // The state directories of workers no restored deployment claims (their
    // deployment ended, was replaced or deleted, or came back on another port
    // while this server was down): their records are the main store's, then
    // they go.
    supervisor.retire_unclaimed_state_dirs().await;
    Ok(())
}

/// A deployment in a worker recorded before a restart whose model is gone from the
/// model repository (its directory removed, say, while the server was down) gets no
/// worker, and is not left half-alive either: it is forgotten in the store, and the
/// audit trail says why (a `stop` event), so that should the model's directory
/// come back it is an ordinary model served in this process, as every endpoint
/// then says. Answers the deployment to restore: none once forgotten; the one
/// recorded when the store does not take the change (the model then gets no worker
/// and is served in this process should its directory come back, with the
/// deployment's settings, until it is deployed again or its deployment ended).
async fn end_deployment_gone_from_repository(
    state: &Arc<ServerState>,
    store: &Arc<crate::store::Store>,
    saved: &crate::store::ModelSettings,
) -> Option<crate::sources::Deployment> {
    let (sources, name) = (state.sources.clone(), saved.model.clone());
    let looked = tokio::task::spawn_blocking(move || {
        crate::api::manage::gone_from_repository(&sources, &name)
    })
    .await;
    let Ok(Some(why)) = looked else {
        return saved.deployment.clone();
    };
    let ended = crate::store::ModelSettings {
        model: saved.model.clone(),
        stopped: false,
        deployment: None,
    };
    if let Err(e) = store.save_model_settings(&ended, saved).await {
        tracing::warn!(
            model = %saved.model,
            "deployed, but {why}: no worker; the deployment stays recorded: {e}"
        );
        return saved.deployment.clone();
    }
    tracing::warn!(
        model = %saved.model,
        "deployment ended: {why}; should the model come back, it is served in this process"
    );
    crate::api::manage::audit(
        state,
        &crate::api::Caller::default(),
        crate::store::EventKind::Stop,
        &saved.model,
        None,
        serde_json::json!({
            "deployment": "ended",
            "serving": "nowhere",
            "reason": format!("{why} at the server's start, so no worker was started for it"),
        }),
    );
    None
}
