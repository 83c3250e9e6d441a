//! Which model directories are served, and when each is reconciled with the manager.
//!
//! The models are the subdirectories of the repository root or, once a model config
//! list is in force (`--model-config-file` or gRPC `ReloadConfig`), exactly the
//! models it lists, as in TF Serving; minus those stopped through the management API. [`Sources`] scans a model's directory (`repository::scan_model`),
//! applies the list's policy and labels and a deployment's timeout over the model's
//! `config.toml`, and hands the result to `Manager::reconcile_model`.
//!
//! Invariants:
//! * at most one operation (reconcile, upload, stop, delete) runs on one model at a
//!   time: each takes the model's lock. The watcher only tries the lock and leaves a
//!   busy model for its next poll, so a long upload never stalls the others;
//! * the watcher loads a new version only once its files (name, size, mtime of each)
//!   are the same on two polls in a row, so a directory being copied is never loaded
//!   half-written; uploads appear by an atomic rename and are reconciled at once;
//! * a stopped model is never reloaded by the watcher, only by an explicit reload,
//!   load or deploy of that model.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::manager::{Manager, VersionState};
use crate::model_config::ModelConfig;
use crate::model_config_list::{is_valid_model_name, ModelConfigList, ModelListEntry};
use crate::repository::{model_directories, parse_version, scan_model};

/// The lock that serialises operations on one model. A tokio mutex, so that an upload
/// can hold it across the awaits of streaming the file; blocking code takes it with
/// `blocking_lock_owned`.
pub type ModelLock = Arc<tokio::sync::Mutex<()>>;
pub type ModelGuard = tokio::sync::OwnedMutexGuard<()>;

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

/// Why a source operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourcesError {
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Io(String),
}

/// Where a model's directory comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDir {
    pub dir: PathBuf,
    /// The entry of the model config list, when the model is listed there.
    pub listed: Option<ModelListEntry>,
}

/// One model as the sources know it, for status.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    pub name: String,
    pub dir: PathBuf,
    pub listed: bool,
    pub stopped: bool,
    pub deployment: Option<Deployment>,
}

/// What the watcher saw of one model: its config file and every file of every version.
#[derive(Debug, Clone, PartialEq, Default)]
struct ModelView {
    config: Option<Vec<u8>>,
    versions: BTreeMap<u64, Fingerprint>,
}

/// Name, size and modification time of every file under a version directory.
type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

#[derive(Default)]
struct WatchState {
    /// The view of the previous poll, to tell which versions have settled.
    previous: ModelView,
    /// The view last handed to the manager; a poll reconciles only when it differs.
    reconciled: Option<ModelView>,
}

pub struct Sources {
    manager: Arc<Manager>,
    /// The repository root; every subdirectory is a model. May be absent when a
    /// model config list names every model.
    root: PathBuf,
    /// The model config list in force; `None` serves the repository root instead.
    listed: Mutex<Option<Arc<ModelConfigList>>>,
    /// Models stopped through the management API: kept on disk, never reloaded by
    /// the watcher.
    stopped: Mutex<BTreeSet<String>>,
    deployments: Mutex<BTreeMap<String, Deployment>>,
    /// One lock per model name ever operated on (a handful of bytes each).
    locks: Mutex<HashMap<String, ModelLock>>,
    /// Watcher state per model. Only touched with the model's lock held or by the
    /// poll itself, never held across a reconcile.
    watch: Mutex<HashMap<String, WatchState>>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deepest directory level and most files looked at in one version directory.
/// Numbers the `.tmp-delete-<pid>-<n>` directories a deleted model is renamed to.
static TRASH_COUNTER: AtomicU64 = AtomicU64::new(0);

const MAX_FINGERPRINT_DEPTH: usize = 4;
const MAX_FINGERPRINT_FILES: usize = 10_000;

impl Sources {
    pub fn new(manager: Arc<Manager>, root: PathBuf) -> Sources {
        Sources {
            manager,
            root,
            listed: Mutex::new(None),
            stopped: Mutex::new(BTreeSet::new()),
            deployments: Mutex::new(BTreeMap::new()),
            locks: Mutex::new(HashMap::new()),
            watch: Mutex::new(HashMap::new()),
        }
    }

    pub fn manager(&self) -> &Arc<Manager> {
        &self.manager
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The lock of one model (see the module invariants).
    pub fn model_lock(&self, name: &str) -> ModelLock {
        guard(&self.locks)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub fn config_list(&self) -> Option<Arc<ModelConfigList>> {
        guard(&self.listed).clone()
    }

    pub fn is_stopped(&self, name: &str) -> bool {
        guard(&self.stopped).contains(name)
    }

    /// Every model directory: those of the model config list when one is in force,
    /// else the repository root's subdirectories.
    pub fn model_dirs(&self) -> BTreeMap<String, ModelDir> {
        let mut dirs = BTreeMap::new();
        if let Some(list) = self.config_list() {
            for m in &list.models {
                dirs.insert(
                    m.name.clone(),
                    ModelDir {
                        dir: m.base_path.clone(),
                        listed: Some(m.clone()),
                    },
                );
            }
            return dirs;
        }
        match model_directories(&self.root) {
            Ok(found) => {
                for (name, dir) in found {
                    if is_valid_model_name(&name) {
                        dirs.insert(name, ModelDir { dir, listed: None });
                    }
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
        dirs
    }

    /// The directory a model lives in, or would be created in by an upload (under
    /// the repository root unless the config list names it).
    pub fn model_dir(&self, name: &str) -> Result<ModelDir, SourcesError> {
        check_name(name)?;
        let list = self.config_list();
        if let Some(m) = list
            .iter()
            .flat_map(|l| l.models.iter())
            .find(|m| m.name == name)
        {
            return Ok(ModelDir {
                dir: m.base_path.clone(),
                listed: Some(m.clone()),
            });
        }
        Ok(ModelDir {
            dir: self.root.join(name),
            listed: None,
        })
    }

    /// Models as the sources know them, for status.
    pub fn describe(&self) -> Vec<SourceInfo> {
        let stopped = guard(&self.stopped).clone();
        let deployments = guard(&self.deployments).clone();
        self.model_dirs()
            .into_iter()
            .map(|(name, d)| SourceInfo {
                stopped: stopped.contains(&name),
                deployment: deployments.get(&name).cloned(),
                listed: d.listed.is_some(),
                dir: d.dir,
                name,
            })
            .collect()
    }

    /// Loads every model at start-up. Files present now are taken as complete.
    /// Blocking.
    pub fn initial_load(&self) {
        self.reload_all();
    }

    /// Re-scans every model that is not stopped and loads what its policy asks for,
    /// unloading models whose directory is gone. Returns the models reconciled.
    /// Blocking.
    pub fn reload_all(&self) -> Vec<String> {
        let dirs = self.model_dirs();
        self.unload_gone(&dirs, true);
        let names: Vec<(String, ModelDir)> = dirs
            .into_iter()
            .filter(|(name, _)| !self.is_stopped(name))
            .collect();
        std::thread::scope(|s| {
            for (name, dir) in &names {
                s.spawn(move || {
                    let _lock = self.model_lock(name).blocking_lock_owned();
                    self.reconcile_now(name, dir);
                });
            }
        });
        names.into_iter().map(|(n, _)| n).collect()
    }

    /// Re-scans one model and loads what its policy asks for; a stopped model is
    /// started again. Blocking.
    pub fn reload_model(&self, name: &str) -> Result<(), SourcesError> {
        let lock = self.model_lock(name).blocking_lock_owned();
        self.reload_model_locked(name, &lock)
    }

    /// As [`Sources::reload_model`], for a caller that already holds the model's lock
    /// (an upload). Blocking.
    pub fn reload_model_locked(&self, name: &str, _lock: &ModelGuard) -> Result<(), SourcesError> {
        let dir = self.model_dir(name)?;
        if !dir.dir.is_dir() {
            tracing::debug!(model = name, path = %dir.dir.display(), "no model directory");
            return Err(SourcesError::NotFound(format!(
                "model {name:?} not found: it has no directory in the model repository"
            )));
        }
        if !self.is_source(name) {
            return Err(SourcesError::NotFound(format!(
                "model {name:?} is not in the model config list in force"
            )));
        }
        guard(&self.stopped).remove(name);
        self.reconcile_now(name, &dir);
        Ok(())
    }

    /// Records a deployment's settings, then (re)loads the model. Blocking.
    pub fn deploy(&self, name: &str, deployment: Deployment) -> Result<(), SourcesError> {
        let lock = self.model_lock(name).blocking_lock_owned();
        let dir = self.model_dir(name)?;
        if !dir.dir.is_dir() {
            return Err(SourcesError::NotFound(format!(
                "model {name:?} not found in the model repository"
            )));
        }
        guard(&self.deployments).insert(name.to_string(), deployment);
        self.reload_model_locked(name, &lock)
    }

    /// Stops serving a model and keeps its files; the watcher leaves it alone until
    /// it is reloaded, loaded or deployed again. Blocking.
    pub fn stop(&self, name: &str) -> Result<(), SourcesError> {
        check_name(name)?;
        let _lock = self.model_lock(name).blocking_lock_owned();
        let known =
            self.manager.model_record(name).is_some() || self.model_dirs().contains_key(name);
        if !known {
            return Err(SourcesError::NotFound(format!("model {name:?} not found")));
        }
        guard(&self.stopped).insert(name.to_string());
        guard(&self.deployments).remove(name);
        guard(&self.watch).remove(name);
        self.manager.unload_model(name);
        Ok(())
    }

    /// Stops serving a model and deletes its directory. Only models under the
    /// repository root can be deleted; a listed model's files are not ours. Blocking.
    pub fn delete(&self, name: &str) -> Result<(), SourcesError> {
        check_name(name)?;
        let _lock = self.model_lock(name).blocking_lock_owned();
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
        // Stopped first, so that the watcher cannot reload it meanwhile.
        guard(&self.stopped).insert(name.to_string());
        guard(&self.deployments).remove(name);
        self.manager.unload_model(name);
        // Renamed out of sight in one step, then removed: a failure halfway through
        // the removal leaves only a hidden directory the scan ignores.
        // Without the model's name, which may use up all 255 bytes a name may have.
        let trash = self.root.join(format!(
            ".tmp-delete-{}-{}",
            std::process::id(),
            TRASH_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::rename(&dir.dir, &trash).map_err(|e| {
            tracing::error!(model = name, path = %dir.dir.display(), error = %e, "cannot delete");
            SourcesError::Io(format!("cannot delete model {name:?}: {e}"))
        })?;
        guard(&self.stopped).remove(name);
        guard(&self.watch).remove(name);
        if let Err(e) = std::fs::remove_dir_all(&trash) {
            tracing::warn!(model = name, "cannot remove {}: {e}", trash.display());
        }
        Ok(())
    }

    /// Sets the model config list without loading anything (start-up, before the
    /// initial load).
    pub fn set_config_list(&self, list: ModelConfigList) {
        for m in &list.models {
            if !m.base_path.is_dir() {
                tracing::warn!(model = %m.name, "base path {} is not a directory", m.base_path.display());
            }
        }
        *guard(&self.listed) = Some(Arc::new(list));
    }

    /// Replaces the model config list and brings serving in line with it: listed
    /// models are (re)loaded, every other model is unloaded. The list is checked
    /// whole first (names, policies, base paths that are directories); a list that
    /// fails changes nothing. The same path serves the config file and gRPC
    /// `HandleReloadConfigRequest`. Blocking.
    pub fn apply_config_list(&self, list: ModelConfigList) -> Result<Vec<String>, SourcesError> {
        list.validate().map_err(SourcesError::InvalidName)?;
        if let Some(m) = list.models.iter().find(|m| !m.base_path.is_dir()) {
            return Err(SourcesError::InvalidName(format!(
                "model {:?}: base path {} is not a directory",
                m.name,
                m.base_path.display()
            )));
        }
        *guard(&self.listed) = Some(Arc::new(list));
        Ok(self.reload_all())
    }

    /// One watcher poll: reconciles each model whose settled view changed since it was
    /// last reconciled, and unloads models whose directory is gone. Blocking.
    pub fn poll(&self) {
        let dirs = self.model_dirs();
        self.unload_gone(&dirs, false);
        let mut work = Vec::new();
        for (name, dir) in dirs {
            if self.is_stopped(&name) {
                continue;
            }
            let seen = observe(&dir.dir);
            let serving: BTreeSet<u64> = self
                .manager
                .model_record(&name)
                .map(|r| {
                    r.versions
                        .iter()
                        .filter(|(_, v)| {
                            matches!(v.state, VersionState::Available | VersionState::Loading)
                        })
                        .map(|(k, _)| *k)
                        .collect()
                })
                .unwrap_or_default();
            let mut watch = guard(&self.watch);
            let state = watch.entry(name.clone()).or_default();
            // Settled: unchanged since the previous poll, or already serving (a served
            // version is never unloaded because its files are being touched).
            let settled: BTreeMap<u64, Fingerprint> = seen
                .versions
                .iter()
                .filter(|(v, f)| state.previous.versions.get(v) == Some(f) || serving.contains(v))
                .map(|(v, f)| (*v, f.clone()))
                .collect();
            let candidate = ModelView {
                config: seen.config.clone(),
                versions: settled,
            };
            state.previous = seen;
            if state.reconciled.as_ref() != Some(&candidate) {
                work.push((name, dir, candidate));
            }
        }
        std::thread::scope(|s| {
            for (name, dir, candidate) in &work {
                s.spawn(move || {
                    let Ok(_lock) = self.model_lock(name).try_lock_owned() else {
                        return; // busy (an upload, a reload): next poll
                    };
                    if self.is_stopped(name) {
                        return;
                    }
                    let settled: BTreeSet<u64> = candidate.versions.keys().copied().collect();
                    self.reconcile(name, dir, Some(&settled));
                    if let Some(state) = guard(&self.watch).get_mut(name) {
                        state.reconciled = Some(candidate.clone());
                    }
                });
            }
        });
    }

    /// Whether a model is served from the repository root or the list in force
    /// names it, i.e. whether reloading it can serve it.
    pub fn is_source(&self, name: &str) -> bool {
        self.model_dirs().contains_key(name)
    }

    /// Reconciles a model with everything on disk now, and records what was seen so
    /// the watcher does not redo it. The caller holds the model's lock.
    fn reconcile_now(&self, name: &str, dir: &ModelDir) {
        let seen = observe(&dir.dir);
        self.reconcile(name, dir, None);
        guard(&self.watch).insert(
            name.to_string(),
            WatchState {
                previous: seen.clone(),
                reconciled: Some(seen),
            },
        );
    }

    /// Scans one model, applies the overrides, keeps only `settled` versions when
    /// given, and hands it to the manager. The caller holds the model's lock.
    fn reconcile(&self, name: &str, dir: &ModelDir, settled: Option<&BTreeSet<u64>>) {
        let mut on_disk = match scan_model(name, &dir.dir) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(model = name, "{e}");
                if !dir.dir.exists() {
                    self.manager.unload_model(name);
                }
                return;
            }
        };
        if let Some(settled) = settled {
            on_disk.versions.retain(|v, _| settled.contains(v));
        }
        let deployment = guard(&self.deployments).get(name).cloned();
        if let Ok(config) = &mut on_disk.config {
            apply_overrides(config, dir.listed.as_ref(), deployment.as_ref());
        }
        self.manager.reconcile_model(&on_disk);
    }

    /// Unloads models the manager serves whose directory is gone. With `all`, also
    /// models that are not stopped but busy are waited for; the watcher skips them.
    fn unload_gone(&self, dirs: &BTreeMap<String, ModelDir>, wait: bool) {
        let known: Vec<String> = self
            .manager
            .serving()
            .models
            .keys()
            .cloned()
            .chain(self.manager.records_snapshot().into_keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|name| !dirs.contains_key(name))
            .collect();
        for name in known {
            let lock = self.model_lock(&name);
            let _held = if wait {
                lock.blocking_lock_owned()
            } else {
                match lock.try_lock_owned() {
                    Ok(held) => held,
                    Err(_) => continue,
                }
            };
            self.manager.unload_model(&name);
            guard(&self.watch).remove(&name);
        }
    }
}

fn check_name(name: &str) -> Result<(), SourcesError> {
    if is_valid_model_name(name) {
        Ok(())
    } else {
        Err(SourcesError::InvalidName(format!(
            "{name:?} is not a valid model id: use letters, digits, '.', '_' and '-', \
             not starting with '.'"
        )))
    }
}

/// The list's policy and labels, and a deployment's timeout, over `config.toml`.
fn apply_overrides(
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

/// Reads what the watcher compares between polls. Unreadable parts read as absent.
fn observe(model_dir: &Path) -> ModelView {
    let config = std::fs::read(model_dir.join(ModelConfig::FILE_NAME)).ok();
    let mut versions = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(model_dir) {
        for entry in entries.flatten() {
            let Some(version) = entry.file_name().to_str().and_then(parse_version) else {
                continue;
            };
            if entry.path().is_dir() {
                let mut files = Vec::new();
                fingerprint(&entry.path(), "", 0, &mut files);
                files.sort();
                versions.insert(version, files);
            }
        }
    }
    ModelView { config, versions }
}

fn fingerprint(dir: &Path, prefix: &str, depth: usize, out: &mut Fingerprint) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if out.len() >= MAX_FINGERPRINT_FILES {
            return;
        }
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_FINGERPRINT_DEPTH {
                fingerprint(&entry.path(), &format!("{name}/"), depth + 1, out);
            }
            out.push((format!("{name}/"), 0, meta.modified().ok()));
        } else {
            out.push((name, meta.len(), meta.modified().ok()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_config::VersionPolicy;

    #[test]
    fn fingerprints_change_with_size_and_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("1");
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join("model.onnx"), b"abc").unwrap();
        let a = observe(dir.path());
        assert_eq!(a, observe(dir.path()), "stable when nothing changes");
        std::fs::write(v.join("model.onnx"), b"abcd").unwrap();
        let b = observe(dir.path());
        assert_ne!(a, b);
        std::fs::write(v.join("extra"), b"").unwrap();
        assert_ne!(b, observe(dir.path()));
        std::fs::create_dir_all(dir.path().join(".tmp-upload-1")).unwrap();
        std::fs::create_dir_all(dir.path().join("latest")).unwrap();
        assert_eq!(observe(dir.path()).versions.len(), 1, "only version dirs");
    }

    #[test]
    fn list_overrides_policy_and_labels_and_deployment_the_timeout() {
        let mut config = ModelConfig {
            timeout_secs: Some(5.0),
            ..ModelConfig::default()
        };
        let entry = ModelListEntry {
            name: "m".into(),
            base_path: "/m".into(),
            model_platform: None,
            version_policy: Some(VersionPolicy::All),
            labels: [("stable".to_string(), 2)].into(),
        };
        let deployment = Deployment {
            timeout_secs: Some(9.0),
            ..Deployment::default()
        };
        apply_overrides(&mut config, Some(&entry), Some(&deployment));
        assert_eq!(config.version_policy, VersionPolicy::All);
        assert_eq!(config.labels["stable"], 2);
        assert_eq!(config.timeout_secs, Some(9.0));
    }
}
