//! Model-repository operations: list what the repository holds and its state, load
//! (or reload) one model from disk, unload one model. KServe V2's repository extension
//! (`RepositoryIndex`, `RepositoryModelLoad`, `RepositoryModelUnload`) calls these.
//!
//! Added for issue 5 (gRPC). Loading goes through the same path as start-up: a scan of
//! the model's directory handed to `Manager::reconcile_model`, on a blocking thread.

use super::{ApiError, Caller, ServerState};
use std::sync::Arc;

/// One model version the repository knows, or a model with no versions (`version`
/// `None`), with its lifecycle state and the reason for an error.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub model: String,
    pub version: Option<u64>,
    /// `AVAILABLE`, `LOADING`, `ERROR`, ... (`VersionState::as_str`); for a model
    /// without versions, `UNAVAILABLE`.
    pub state: &'static str,
    pub reason: String,
}

/// Every model version the manager knows, and every model of the repository (or of
/// the config list in force) that has none loaded (unloaded, never loaded) as one
/// `UNAVAILABLE` entry with the reason, as the KServe/Triton repository extension
/// lists every model whether loaded or not; in name and version order. With
/// `ready_only`, only the versions serving.
pub fn repository_index(state: &ServerState, ready_only: bool) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    let records = state.manager.records_snapshot();
    if !ready_only {
        for source in state.sources.describe() {
            if records.contains_key(&source.name) {
                continue;
            }
            let reason = if source.stopped {
                "unloaded: load the model to serve it again"
            } else {
                "no version of the model is loaded"
            };
            out.push(IndexEntry {
                model: source.name,
                version: None,
                state: "UNAVAILABLE",
                reason: reason.to_string(),
            });
        }
    }
    for (model, record) in records {
        if record.versions.is_empty() {
            if !ready_only {
                out.push(IndexEntry {
                    model: model.clone(),
                    version: None,
                    state: "UNAVAILABLE",
                    reason: record.config_error.clone().unwrap_or_default(),
                });
            }
            continue;
        }
        for (version, v) in record.versions {
            if ready_only && v.state != crate::manager::VersionState::Available {
                continue;
            }
            out.push(IndexEntry {
                model: model.clone(),
                version: Some(version),
                state: v.state.as_str(),
                reason: v.error.unwrap_or_default(),
            });
        }
    }
    // Models deployed in a worker, as their workers report them.
    let deployed = state
        .workers
        .get()
        .map(|w| w.statuses())
        .unwrap_or_default();
    for (model, worker) in deployed {
        let versions = worker.model_status.map(|m| m.versions).unwrap_or_default();
        out.retain(|e| e.model != model);
        if versions.is_empty() {
            // A worker restarting, in crash-loop or not started yet reports no
            // versions: the model is still listed, as one that has none serving.
            if !ready_only {
                let reason = if worker.state == crate::workers::WorkerState::Ready {
                    "no version of the model is loaded in its worker".to_string()
                } else {
                    worker.state.unavailable(&model)
                };
                out.push(IndexEntry {
                    model: model.clone(),
                    version: None,
                    state: "UNAVAILABLE",
                    reason,
                });
            }
            continue;
        }
        for v in versions {
            let state = crate::manager::VersionState::ALL
                .into_iter()
                .find(|s| s.as_str() == v.state)
                .unwrap_or(crate::manager::VersionState::Error);
            if ready_only && state != crate::manager::VersionState::Available {
                continue;
            }
            out.push(IndexEntry {
                model: model.clone(),
                version: Some(v.version),
                state: state.as_str(),
                reason: v.error.unwrap_or_default(),
            });
        }
    }
    out.sort_by(|a, b| (&a.model, a.version).cmp(&(&b.model, b.version)));
    out
}

/// A model name that names a directory directly under the repository root.
fn check_model_name(model: &str) -> Result<(), ApiError> {
    if model.is_empty() || model.starts_with('.') || model.contains(['/', '\\', '\0']) {
        return Err(ApiError::InvalidArgument(format!(
            "{model:?} is not a valid model name"
        )));
    }
    Ok(())
}

/// Loads or reloads a model from its directory, as start-up does, starting it again
/// if it was stopped. Answers once the load has finished; an error if no version of
/// the model is serving then.
pub async fn load_model(
    state: &Arc<ServerState>,
    model: &str,
    caller: &Caller,
) -> Result<(), ApiError> {
    check_model_name(model)?;
    let outcome = super::manage::reload(state, Some(model), caller).await?;
    // A model deployed in a worker is loaded there (it watches its directory).
    if let Some(worker) = state.workers.get().and_then(|w| w.status(model)) {
        return match worker.state {
            crate::workers::WorkerState::Ready => Ok(()),
            other => Err(ApiError::Unavailable(other.unavailable(model))),
        };
    }
    // The model as the reload left it, read under its lock: an unload or delete by
    // another client right after is that call's answer, not this one's.
    match outcome.models.first() {
        Some(summary) if summary.is_served() => Ok(()),
        Some(summary) => Err(ApiError::Unavailable(format!(
            "model {model:?} has no available version ({})",
            super::manage::describe_failures(summary)
        ))),
        None => Err(ApiError::NotFound(format!("model {model:?} not found"))),
    }
}

/// Stops serving every version of a model and keeps it stopped (the repository
/// watcher does not reload it); requests already running finish first.
pub async fn unload_model(
    state: &Arc<ServerState>,
    model: &str,
    caller: &Caller,
) -> Result<(), ApiError> {
    check_model_name(model)?;
    super::manage::stop_model(state, model, caller).await
}

/// One model of a model config list (TF Serving's `ModelConfig`): where its versions
/// are, and optionally the policy and labels that override its own `config.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSource {
    pub name: String,
    /// The directory holding `<version>/` subdirectories; `None`:
    /// `<model_repository>/<name>`. A relative path is relative to the repository.
    pub base_path: Option<std::path::PathBuf>,
    pub version_policy: Option<crate::model_config::VersionPolicy>,
    /// Empty: the labels of the model's `config.toml`.
    pub labels: std::collections::BTreeMap<String, u64>,
}

/// Replaces what is served with the given model list, as TF Serving's
/// `HandleReloadConfigRequest`: the list becomes the model config list in force
/// (`crate::sources::Sources::apply_config_list`, the path `--model-config-file`
/// takes), so models not in it are unloaded (requests running on them finish
/// first) and the repository watcher keeps to it. The list is checked whole before
/// anything changes. Answers once the loads have finished; an error names the listed
/// models that have no serving version then (a model that was serving keeps its old
/// version, as on any failed load).
pub async fn reload_config(
    state: &Arc<ServerState>,
    models: Vec<ModelSource>,
    caller: &Caller,
) -> Result<(), ApiError> {
    for m in &models {
        check_model_name(&m.name)?;
    }
    let root = &state.settings.model_repository;
    let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    let list = crate::model_config_list::ModelConfigList {
        models: models
            .into_iter()
            .map(|m| crate::model_config_list::ModelListEntry {
                base_path: match m.base_path {
                    Some(p) if p.is_absolute() => p,
                    Some(p) => root.join(p),
                    None => root.join(&m.name),
                },
                name: m.name,
                model_platform: None,
                version_policy: m.version_policy,
                labels: m.labels,
            })
            .collect(),
    };
    super::manage::reload_config(state, list, caller).await?;
    let failed: Vec<String> = names
        .iter()
        .filter_map(|name| {
            let e = state
                .manager
                .resolve(name, &crate::manager::VersionRequest::Latest)
                .err()?;
            // A stopped model is listed but not started by the list: "not found"
            // would send its owner looking for files that are there.
            Some(if state.sources.is_stopped(name) {
                format!(
                    "model {name:?} is stopped (a model list does not start it): load it \
                     (V2 repository load, or POST /reload_model?modelname={name}) to serve \
                     it again"
                )
            } else {
                e.to_string()
            })
        })
        .collect();
    if !failed.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "config applied, but some models are not serving: {}",
            failed.join("; ")
        )));
    }
    // A model whose config.toml cannot be used keeps what it served, which may be
    // another directory's versions; as TF Serving, a label that cannot point at
    // its version fails the call (unless the model allows unavailable labels).
    // Both FAILED_PRECONDITION.
    let records: Vec<_> = names
        .iter()
        .filter_map(|name| state.manager.model_record(name))
        .collect();
    let config_errors = records.iter().filter_map(|r| r.config_error.clone());
    let label_errors = records.iter().flat_map(|r| r.label_errors.clone());
    for (what, errors) in [
        (
            "some models keep what they served before",
            config_errors.collect::<Vec<_>>(),
        ),
        ("some labels are not set", label_errors.collect()),
    ] {
        if !errors.is_empty() {
            return Err(ApiError::Conflict(format!(
                "config applied, but {what}: {}",
                errors.join("; ")
            )));
        }
    }
    Ok(())
}
