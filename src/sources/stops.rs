//! Stops and deletes: a stop pending while it waits for the model's lock
//! ([`StopIntent`]), the stopped set (and forgetting the stop of a model whose
//! directory is gone), and a delete's two steps (its files taken out of sight, then
//! what was decided for the model forgotten).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{check_name, guard, watch, ModelGuard, Sources, SourcesError};

/// A stop waiting for its model's lock; dropping it (the stop done, or given up)
/// clears the pending mark.
pub struct StopIntent {
    sources: Arc<Sources>,
    name: String,
}

impl Drop for StopIntent {
    fn drop(&mut self) {
        let mut stopping = guard(&self.sources.stopping);
        if let Some(n) = stopping.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                stopping.remove(&self.name);
            }
        }
    }
}

/// Numbers the `.tmp-delete-<pid>-<n>` directories a deleted model is renamed to.
static TRASH_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new hidden `.tmp-delete-*` path in `parent` to rename a deleted model's files
/// to (without the model's name, which may use up all 255 bytes a name may have).
pub(super) fn trash_in(parent: &Path) -> PathBuf {
    parent.join(format!(
        ".tmp-delete-{}-{}",
        std::process::id(),
        TRASH_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A model whose files a delete took away ([`Sources::retire_locked`]), still
/// served until [`Sources::forget_deleted_locked`].
#[derive(Debug)]
pub enum Retired {
    /// Its directory, renamed to this hidden one.
    Dir(PathBuf),
    /// A flat model: its file in the root is gone.
    Flat,
}

impl Sources {
    /// Records a stop as pending until the returned intent is dropped (see
    /// `stopping`).
    pub fn intend_stop(self: &Arc<Self>, name: &str) -> StopIntent {
        *guard(&self.stopping).entry(name.to_string()).or_default() += 1;
        StopIntent {
            sources: self.clone(),
            name: name.to_string(),
        }
    }

    /// Whether a stopped model has no directory any more (removed, renamed): its
    /// stop is then no one's to keep.
    fn stopped_model_is_gone(&self, name: &str) -> bool {
        self.model_dir(name).is_ok_and(|d| !d.dir.is_dir())
    }

    /// Forgets the stop (and a deployment's settings) of stopped models whose
    /// directory is gone, as the deployments of models gone are ended: only a
    /// model found gone on two polls at least [`watch::DEPLOYMENT_GONE_GRACE`]
    /// apart, only when its lock is free, and only if, under the lock, it is
    /// stopped and gone still. With a [`Sources::on_stop_gone`] hook the store's
    /// record goes first; the hook then forgets it here.
    pub(super) fn forget_gone_stops(&self) {
        let stopped: Vec<String> = guard(&self.stopped).iter().cloned().collect();
        let gone_now: Vec<String> = stopped
            .into_iter()
            .filter(|name| self.stopped_model_is_gone(name))
            .collect();
        for name in watch::gone_for_the_grace(&self.gone_stops, gone_now) {
            let Ok(lock) = self.model_lock(&name).try_acquire_owned() else {
                continue; // busy: a later poll
            };
            if !self.is_stopped(&name) || !self.stopped_model_is_gone(&name) {
                continue;
            }
            match self.stop_gone.get() {
                Some(forget) => forget(name, lock),
                None => {
                    self.forget_gone_stop_locked(&name, &lock);
                }
            }
        }
    }

    /// Forgets the stop and the deployment settings of a stopped model whose
    /// directory is gone (see [`Sources::forget_gone_stops`]), if it is gone still:
    /// a directory of that name that appears later is a model like any new one.
    /// The caller holds the model's lock. Answers whether it forgot it.
    pub fn forget_gone_stop_locked(&self, name: &str, _lock: &ModelGuard) -> bool {
        if !self.is_stopped(name) || !self.stopped_model_is_gone(name) {
            return false;
        }
        guard(&self.stopped).remove(name);
        guard(&self.deployments).remove(name);
        guard(&self.gone_stops).remove(name);
        guard(&self.watch).remove(name);
        tracing::info!(
            model = name,
            "stopped, but its directory is gone: the stop is forgotten, and a new \
             directory of that name is served"
        );
        true
    }

    /// Checks that a model can be stopped (a valid name the server knows). A model
    /// deployed in a worker is known even once its directory is gone: stopping it
    /// is how its worker goes.
    pub fn check_stoppable(&self, name: &str) -> Result<(), SourcesError> {
        check_name(name)?;
        let known = self.manager.model_record(name).is_some()
            || self.model_dirs().contains_key(name)
            || self.is_isolated(name);
        if !known {
            return Err(SourcesError::NotFound(format!("model {name:?} not found")));
        }
        Ok(())
    }

    /// Stops serving a model and keeps its files; the watcher leaves it alone until
    /// it is reloaded, loaded or deployed again. The caller holds the model's lock
    /// (and should have recorded the stop with [`Sources::intend_stop`] before
    /// waiting for it). Blocking.
    pub fn stop_locked(&self, name: &str, _lock: &ModelGuard) -> Result<(), SourcesError> {
        self.check_stoppable(name)?;
        guard(&self.stopped).insert(name.to_string());
        guard(&self.deployments).remove(name);
        guard(&self.isolated).remove(name);
        guard(&self.watch).remove(name);
        self.manager.unload_model(name);
        Ok(())
    }

    /// Whether a delete may take the model: refused for a model of the model config
    /// list (409) or one that is not there (404). The caller holds the model's lock.
    pub fn check_deletable_locked(
        &self,
        name: &str,
        _lock: &ModelGuard,
    ) -> Result<(), SourcesError> {
        check_name(name)?;
        if self.flat_file(name).is_some() {
            return Ok(());
        }
        let dir = self.model_dir(name)?;
        if dir.listed.is_some() {
            return Err(SourcesError::Conflict(format!(
                "model {name:?} comes from the model config list; remove it there, \
                 or stop it instead"
            )));
        }
        if !dir.dir.is_dir() {
            return Err(SourcesError::NotFound(format!("model {name:?} not found")));
        }
        Ok(())
    }

    /// The first step of a delete: takes the model's files out of sight, or fails
    /// having changed nothing (the model serves on). A model directory is renamed
    /// in one step to a hidden `.tmp-delete-*` directory the scan ignores (without
    /// the model's name, which may use up all 255 bytes a name may have); a flat
    /// model's file in the root is removed. What is served is untouched until
    /// [`Sources::forget_deleted_locked`]: the caller holds the model's lock, so no
    /// scan reloads or unloads it meanwhile. Only models under the repository root
    /// can be deleted; a listed model's files are not ours. Blocking.
    pub fn retire_locked(&self, name: &str, lock: &ModelGuard) -> Result<Retired, SourcesError> {
        self.check_deletable_locked(name, lock)?;
        if let Some(file) = self.flat_file(name) {
            return self.retire_flat_locked(name, &file);
        }
        let dir = self.model_dir(name)?;
        let trash = trash_in(&self.root);
        self.staging_started(&trash);
        if let Err(e) = std::fs::rename(&dir.dir, &trash) {
            self.staging_ended(&trash);
            tracing::error!(model = name, path = %dir.dir.display(), error = %e, "cannot delete");
            return Err(SourcesError::Io(format!(
                "cannot delete model {name:?}: {e}"
            )));
        }
        Ok(Retired::Dir(trash))
    }

    /// The rest of a delete, once [`Sources::retire_locked`] took the files away:
    /// the model stops being served and what was decided for it is forgotten, and
    /// its renamed directory (or a flat model's managed copies) is removed; a
    /// failure there leaves only a hidden directory the staging sweep removes
    /// later. The caller still holds the model's lock. Blocking.
    pub fn forget_deleted_locked(&self, name: &str, retired: Retired, _lock: &ModelGuard) {
        guard(&self.deployments).remove(name);
        guard(&self.isolated).remove(name);
        guard(&self.stopped).remove(name);
        guard(&self.watch).remove(name);
        self.manager.unload_model(name);
        match retired {
            Retired::Dir(trash) => {
                if let Err(e) = std::fs::remove_dir_all(&trash) {
                    tracing::warn!(model = name, "cannot remove {}: {e}", trash.display());
                }
                self.staging_ended(&trash);
            }
            Retired::Flat => self.forget_flat(name),
        }
    }
}
