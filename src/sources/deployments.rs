//! Deployments: the settings `POST /deploy` recorded for a model, and the
//! isolation of a model its worker process serves (never loaded here meanwhile).

use super::{check_name, guard, FlatSync, ModelDir, ModelGuard, Sources, SourcesError};

/// Settings a deployment (`POST /deploy`) asked for. The timeout is applied as the
/// model's request deadline; the limits are stored and reported until isolated
/// worker processes can enforce them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Deployment {
    pub environment: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
    pub timeout_secs: Option<f64>,
}

impl Sources {
    /// Models deployed in this process (a deployment's settings, no worker).
    pub fn deployed_in_process(&self) -> Vec<String> {
        let isolated = guard(&self.isolated).clone();
        guard(&self.deployments)
            .keys()
            .filter(|name| !isolated.contains(*name))
            .cloned()
            .collect()
    }

    /// Records a deployment's settings, then (re)loads the model. The caller holds
    /// the model's lock. Blocking.
    /// A model that is not there (no directory, or one holding only an upload in
    /// progress) changes nothing: its deployment is not recorded.
    pub fn deploy_locked(
        &self,
        name: &str,
        deployment: Deployment,
        lock: &ModelGuard,
    ) -> Result<(), SourcesError> {
        self.deployable_dir(name)?;
        guard(&self.deployments).insert(name.to_string(), deployment);
        self.reload_model_locked(name, lock)
    }

    /// The directory of a model that can be deployed, in this process or into a
    /// worker: 404 when there is none, or when it holds only an upload in progress
    /// (or, with a model config list in force, the model is not in it).
    pub fn deployable_dir(&self, name: &str) -> Result<ModelDir, SourcesError> {
        check_name(name)?;
        self.sync_flat(FlatSync::One(name));
        let dir = self.model_dir(name)?;
        if !dir.dir.is_dir() {
            return Err(SourcesError::NotFound(format!(
                "model {name:?} not found in the model repository"
            )));
        }
        if !self.is_source(name) {
            return Err(self.not_a_source(name));
        }
        Ok(dir)
    }

    /// Isolates a model whose worker process serves it now (forwarding reaches the
    /// worker): records the deployment and unloads every version loaded here.
    /// Requests that hold a version finish on it. The caller holds the model's
    /// lock. Blocking.
    pub fn isolate_locked(
        &self,
        name: &str,
        deployment: Deployment,
        _lock: &ModelGuard,
    ) -> Result<(), SourcesError> {
        check_name(name)?;
        guard(&self.deployments).insert(name.to_string(), deployment);
        guard(&self.stopped).remove(name);
        guard(&self.isolated).insert(name.to_string());
        guard(&self.watch).remove(name);
        self.manager.unload_model(name);
        Ok(())
    }

    /// Ends a model's isolation: the deployment is forgotten and the model loads
    /// here, as a reload does. Answers whether a version serves here now; when none
    /// does, the model is isolated again (its worker must keep serving it) and the
    /// error names the failed versions. The caller holds the model's lock and stops
    /// forwarding only after this succeeded. Blocking.
    pub fn end_isolation_locked(&self, name: &str, lock: &ModelGuard) -> Result<(), SourcesError> {
        let deployment = guard(&self.deployments).get(name).cloned();
        guard(&self.isolated).remove(name);
        guard(&self.deployments).remove(name);
        let loaded = self.reload_model_locked(name, lock).and_then(|()| {
            if self.manager.serving().models.contains_key(name) {
                return Ok(());
            }
            let why: Vec<String> = self
                .manager
                .model_record(name)
                .into_iter()
                .flat_map(|r| r.versions.into_iter())
                .filter_map(|(v, r)| r.error.map(|e| format!("version {v}: {e}")))
                .collect();
            Err(SourcesError::Unavailable(format!(
                "model {name:?} cannot be served in this process ({}); its worker keeps \
                 serving it",
                if why.is_empty() {
                    "no version loaded".to_string()
                } else {
                    why.join("; ")
                }
            )))
        });
        if loaded.is_err() {
            if let Some(d) = deployment {
                guard(&self.deployments).insert(name.to_string(), d);
            }
            guard(&self.isolated).insert(name.to_string());
            guard(&self.watch).remove(name);
            self.manager.unload_model(name);
        }
        loaded
    }

    /// Forgets a deployment whose model is no longer a source (the model config
    /// list in force left it out): it is neither isolated nor loaded here any more,
    /// and not marked stopped, so a list that names it again serves it again. The
    /// caller holds the model's lock and stops its worker. Blocking.
    pub fn forget_deployment_locked(&self, name: &str, _lock: &ModelGuard) {
        guard(&self.deployments).remove(name);
        guard(&self.isolated).remove(name);
        guard(&self.watch).remove(name);
        self.manager.unload_model(name);
    }

    /// Marks a model deployed in a worker before the initial load (a restart), so
    /// it is never loaded here.
    pub fn restore_isolated(&self, name: &str) {
        guard(&self.isolated).insert(name.to_string());
    }

    /// Undoes [`Sources::restore_isolated`] when the worker cannot be started: the
    /// initial load serves the model here, with its deployment's settings.
    pub fn end_restored_isolation(&self, name: &str) {
        guard(&self.isolated).remove(name);
    }

    /// Restores what management decided before a restart (from the metadata
    /// store): a stopped model stays stopped, a deployed one gets its settings
    /// back. Called before the initial load.
    pub fn restore(&self, name: &str, stopped: bool, deployment: Option<Deployment>) {
        if stopped {
            guard(&self.stopped).insert(name.to_string());
        }
        if let Some(d) = deployment {
            guard(&self.deployments).insert(name.to_string(), d);
        }
    }

    /// The deployment recorded for `name`, if any.
    pub fn deployment(&self, name: &str) -> Option<Deployment> {
        guard(&self.deployments).get(name).cloned()
    }
}
