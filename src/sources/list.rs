//! The model config list (`--model-config-file`, gRPC `HandleReloadConfigRequest`)
//! in force, and what a listed entry and a deployment change in a model's
//! `config.toml`.

use std::sync::Arc;

use super::{guard, CancellationToken, Deployment, ReloadAll, Sources, SourcesError};
use crate::model_config::ModelConfig;
use crate::model_config_list::{ModelConfigList, ModelListEntry};

impl Sources {
    /// Sets the model config list without loading anything (start-up, before the
    /// initial load).
    pub fn set_config_list(&self, list: ModelConfigList) {
        warn_of_missing_base_paths(&list);
        *guard(&self.listed) = Some(Arc::new(list));
    }

    /// Replaces the model config list and brings serving in line with it: listed
    /// models are (re)loaded, every other model is unloaded. The list is checked
    /// whole first (names, policies, base paths that are directories); a list that
    /// fails changes nothing. This is gRPC `HandleReloadConfigRequest`'s path; the
    /// config file's is [`Sources::apply_config_file_list`]. Blocking.
    pub fn apply_config_list(
        &self,
        list: ModelConfigList,
        cancel: &CancellationToken,
    ) -> Result<ReloadAll, SourcesError> {
        list.validate().map_err(SourcesError::InvalidName)?;
        if let Some(m) = list.models.iter().find(|m| !m.base_path.is_dir()) {
            return Err(SourcesError::InvalidName(format!(
                "model {:?}: base path {} is not a directory",
                m.name,
                m.base_path.display()
            )));
        }
        *guard(&self.listed) = Some(Arc::new(list));
        Ok(self.reload_all(cancel))
    }

    /// [`Sources::apply_config_list`] for a list the watcher read from the model
    /// config file, checked as the file is at start-up: a base path that is not a
    /// directory (yet) is a warning, not a refusal. Its model is listed with no
    /// version and loads once the directory appears, as TF Serving keeps polling a
    /// missing base path; refusing it would keep every other edit of the file out
    /// until then. Blocking.
    pub fn apply_config_file_list(
        &self,
        list: ModelConfigList,
        cancel: &CancellationToken,
    ) -> Result<ReloadAll, SourcesError> {
        list.validate().map_err(SourcesError::InvalidName)?;
        warn_of_missing_base_paths(&list);
        *guard(&self.listed) = Some(Arc::new(list));
        Ok(self.reload_all(cancel))
    }
}

/// Says which listed models have no directory (yet): they serve nothing until it
/// appears.
fn warn_of_missing_base_paths(list: &ModelConfigList) {
    for m in &list.models {
        if !m.base_path.is_dir() {
            tracing::warn!(
                model = %m.name,
                "base path {} is not a directory (yet): the model serves no version \
                 until it appears",
                m.base_path.display()
            );
        }
    }
}

/// The list's policy and labels, and a deployment's timeout, over `config.toml`.
pub(super) fn apply_overrides(
    config: &mut ModelConfig,
    listed: Option<&ModelListEntry>,
    deployment: Option<&Deployment>,
) {
    if let Some(entry) = listed {
        if let Some(policy) = &entry.version_policy {
            config.version_policy = policy.clone();
        }
        if !entry.labels.is_empty() {
            config.labels = entry.labels.clone();
        }
    }
    if let Some(t) = deployment.and_then(|d| d.timeout_secs) {
        config.timeout_secs = Some(t);
    }
}
