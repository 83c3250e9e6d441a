//! Model-repository operations: list what the repository holds and its state, load
//! (or reload) one model from disk, unload one model. KServe V2's repository extension
//! (`RepositoryIndex`, `RepositoryModelLoad`, `RepositoryModelUnload`) calls these.
//!
//! Added for issue 5 (gRPC). Loading goes through the same path as start-up: a scan of
//! the model's directory handed to `Manager::reconcile_model`, on a blocking thread.

use super::{ApiError, ServerState};

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

/// Every model version the manager knows, in name and version order; with
/// `ready_only`, only those serving.
pub fn repository_index(state: &ServerState, ready_only: bool) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    for (model, record) in state.manager.records_snapshot() {
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

/// Loads or reloads a model from `<repository>/<model>/`, as start-up does. Answers
/// once the load has finished; an error if no version of the model is serving then.
pub async fn load_model(state: &ServerState, model: &str) -> Result<(), ApiError> {
    check_model_name(model)?;
    let dir = state.settings.model_repository.join(model);
    if !dir.is_dir() {
        return Err(ApiError::NotFound(format!(
            "model {model:?} not found in the model repository"
        )));
    }
    let manager = state.manager.clone();
    let name = model.to_string();
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        let on_disk = crate::repository::scan_model(&name, &dir)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        manager.reconcile_model(&on_disk);
        Ok(())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("model load task failed: {e}")))??;
    state
        .manager
        .resolve(model, &crate::manager::VersionRequest::Latest)
        .map(|_| ())
        .map_err(ApiError::from)
}

/// Stops serving every version of a model; requests already running finish first.
pub async fn unload_model(state: &ServerState, model: &str) -> Result<(), ApiError> {
    if state.manager.model_record(model).is_none() {
        return Err(ApiError::NotFound(format!("model {model:?} not found")));
    }
    let manager = state.manager.clone();
    let name = model.to_string();
    // Unpublishing may free the last handle to a model, which can take a while.
    tokio::task::spawn_blocking(move || manager.unload_model(&name))
        .await
        .map_err(|e| ApiError::Internal(format!("model unload task failed: {e}")))
}

/// One model of a model config list (TF Serving's `ModelConfig`): where its versions
/// are, and optionally the policy and labels that override its own `config.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSource {
    pub name: String,
    /// The directory holding `<version>/` subdirectories; `None`:
    /// `<model_repository>/<name>`.
    pub base_path: Option<std::path::PathBuf>,
    pub version_policy: Option<crate::model_config::VersionPolicy>,
    /// Empty: the labels of the model's `config.toml`.
    pub labels: std::collections::BTreeMap<String, u64>,
}

/// Replaces what is served with the given model list, as TF Serving's
/// `HandleReloadConfigRequest`: models not in the list are unloaded (requests running
/// on them finish first), every listed model is scanned from its base path and
/// reconciled through `Manager::apply_scan`, the path the start-up scan takes. The
/// list is checked whole before anything changes. Answers once the loads have
/// finished; an error names the listed models that have no serving version then
/// (a model that was serving keeps its old version, as on any failed load).
///
/// Note (issue 3, hot reload): this applies the list once. The repository watcher
/// and the multi-model config file of issue 3 should keep the list as the source of
/// truth (so the next repository poll does not bring back models the list dropped);
/// when that lands, this should store the list there and trigger the same reload.
pub async fn reload_config(state: &ServerState, models: Vec<ModelSource>) -> Result<(), ApiError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut sources = Vec::with_capacity(models.len());
    for m in models {
        check_model_name(&m.name)?;
        if !seen.insert(m.name.clone()) {
            return Err(ApiError::InvalidArgument(format!(
                "model {:?} is listed twice",
                m.name
            )));
        }
        if m.version_policy == Some(crate::model_config::VersionPolicy::Latest(0)) {
            return Err(ApiError::InvalidArgument(format!(
                "model {:?}: version policy latest must be at least 1",
                m.name
            )));
        }
        let dir = m
            .base_path
            .clone()
            .unwrap_or_else(|| state.settings.model_repository.join(&m.name));
        if !dir.is_dir() {
            return Err(ApiError::InvalidArgument(format!(
                "model {:?}: base path {} is not a directory",
                m.name,
                dir.display()
            )));
        }
        sources.push((m, dir));
    }
    let manager = state.manager.clone();
    let names: Vec<String> = sources.iter().map(|(m, _)| m.name.clone()).collect();
    tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        let mut scan = crate::repository::RepositoryScan::default();
        for (source, dir) in sources {
            let mut on_disk = crate::repository::scan_model(&source.name, &dir)
                .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
            if let Ok(config) = &mut on_disk.config {
                if let Some(policy) = source.version_policy {
                    config.version_policy = policy;
                }
                if !source.labels.is_empty() {
                    config.labels = source.labels;
                }
            }
            scan.models.insert(source.name, on_disk);
        }
        manager.apply_scan(&scan);
        Ok(())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("reload task failed: {e}")))??;
    let failed: Vec<String> = names
        .iter()
        .filter_map(|name| {
            state
                .manager
                .resolve(name, &crate::manager::VersionRequest::Latest)
                .err()
                .map(|e| e.to_string())
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Unavailable(format!(
            "config applied, but some models are not serving: {}",
            failed.join("; ")
        )))
    }
}
