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
