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
//! * a model deployed in a worker process (`crate::workers`) is *isolated*: this
//!   process never loads its versions (the watcher, reload-all and reloads leave
//!   it), so the only copy in memory is the worker's. It is isolated only once its
//!   worker serves and forwarding reaches it, and loaded here again before
//!   forwarding stops ([`Sources::isolate_locked`], [`Sources::end_isolation_locked`]);
//! * a stopped model is never reloaded by the watcher, only by an explicit reload,
//!   load or deploy of that model. A stop is recorded as pending before it waits
//!   for the lock, and reload-all and the watcher check both after taking the lock,
//!   so a stop always wins over a reload-all that raced it;
//! * nothing here waits for a model's lock on a blocking thread: the management API
//!   waits asynchronously with a deadline ([`Sources::lock_model`]) and hands the
//!   guard in; reload-all and the watcher only try the lock and skip a busy model;
//! * staging directories (`.tmp-upload-*`, `.tmp-delete-*`) that no operation of this
//!   process holds are removed at start-up, and by the watcher once older than
//!   [`STAGING_GRACE`]; a model directory that holds only staging is not a model;
//! * a model file directly in the repository root (the flat layout, `crate::flat`)
//!   is served as the model named by its stem from a managed copy under the state
//!   directory; the watcher takes a new content only once the file is the same on
//!   two polls in a row, and a model directory of the same name wins over it.
//!
//! The watcher's polls live in `watch.rs`, the flat layout's syncs in `flat.rs`,
//! stops and deletes in `stops.rs`, deployments and isolation in `deployments.rs`,
//! the model config list in `list.rs`; this file holds the locks, the model
//! directories, reloads and the reconcile of one model.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

pub use tokio_util::sync::CancellationToken;

use crate::backends::format::{sniff_file, ArtifactFormat};
use crate::flat::{FileStat, Materialised, RootFile};
use crate::manager::{Manager, Reconciled, VersionState};
use crate::model_config::{ModelConfig, ModelDefaults};
use crate::model_config_list::{is_valid_model_name, ModelConfigList, ModelListEntry};
use crate::repository::{model_directories, scan_model, ModelOnDisk};

mod deployments;
mod flat;
mod list;
mod stops;
mod watch;

pub use deployments::Deployment;
use flat::{FlatModels, FlatState, FlatSync};
use list::apply_overrides;
use stops::trash_in;
pub use stops::{Retired, StopIntent};
use watch::WatchState;
pub use watch::STAGING_GRACE;

/// The lock that serialises operations on one model: a tokio semaphore of one permit
/// (fair, first come first served), so that the management API can wait for it
/// asynchronously with a deadline (a blocking thread never waits on it), the watcher
/// and reload-all can try it, and status can tell it is held without taking it.
pub type ModelLock = Arc<tokio::sync::Semaphore>;
/// Proof that the model's lock is held; dropping it releases the lock.
pub type ModelGuard = tokio::sync::OwnedSemaphorePermit;

/// What the watcher hands a model deployed in a worker that is gone from the model
/// repository ([`Sources::on_deployment_gone`]): its name and its lock, held, so
/// that the deployment's end runs under it. It must not block: the end (a store
/// write, a worker's drain) runs elsewhere, and drops the guard once it is done.
pub type DeploymentGone = Box<dyn Fn(String, ModelGuard) + Send + Sync>;

/// What the watcher hands a stopped model whose directory is gone
/// ([`Sources::on_stop_gone`]): its name and its lock, held. The hook forgets what
/// the store recorded for it, then calls [`Sources::forget_gone_stop_locked`]; it
/// must not block (the store write runs elsewhere, and drops the guard once done).
pub type StopGone = Box<dyn Fn(String, ModelGuard) + Send + Sync>;

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
    /// Another operation holds the model's lock past the caller's deadline.
    #[error("{0}")]
    Busy(String),
    /// The caller left, or its deadline passed, before the operation started.
    #[error("{0}")]
    Cancelled(String),
    /// The model cannot be served where it was asked to be (no version loads).
    #[error("{0}")]
    Unavailable(String),
}

/// What a reload of every model did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReloadAll {
    /// Models re-scanned and reconciled.
    pub reloaded: Vec<String>,
    /// Models skipped because another operation (an upload's move, a reload, a stop)
    /// held them; the watcher reconciles them on a later poll.
    pub busy: Vec<String>,
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
    /// An operation (upload move, reload, stop, delete) holds the model now.
    pub busy: bool,
    pub deployment: Option<Deployment>,
    /// Why a flat file of this model's name is ignored (a model directory of the
    /// same name wins over it), for status.
    pub flat_conflict: Option<String>,
}

pub struct Sources {
    manager: Arc<Manager>,
    /// The repository root; every subdirectory is a model. May be absent when a
    /// model config list names every model.
    root: PathBuf,
    /// The model config list in force; `None` serves the repository root instead.
    listed: Mutex<Option<Arc<ModelConfigList>>>,
    /// Models stopped through the management API: kept on disk, never reloaded by
    /// the watcher. Shared with the manager, which tells a request for one so.
    stopped: Arc<Mutex<BTreeSet<String>>>,
    /// Stops asked for but still waiting for the model's lock (a count per model):
    /// reload-all and the watcher treat these models as stopped already, so a reload
    /// that got the lock first cannot serve the model after the stop answered.
    stopping: Mutex<HashMap<String, usize>>,
    /// Staging directories this process is writing (uploads in progress, deletes
    /// being removed): the sweep of stale staging never touches them.
    staging: Mutex<HashSet<PathBuf>>,
    /// When the watcher last swept stale staging directories.
    last_sweep: Mutex<Option<Instant>>,
    deployments: Mutex<BTreeMap<String, Deployment>>,
    /// Models deployed in a worker process: served there alone, so nothing here
    /// loads their versions (held back like stopped models, but not stopped).
    isolated: Mutex<BTreeSet<String>>,
    /// Deployed models the previous poll found gone from the repository, with when
    /// a poll first found each gone: one is ended only when a later poll finds it
    /// gone still, [`watch::DEPLOYMENT_GONE_GRACE`] on, so a directory missing for
    /// an instant (moved away and back) never ends a deployment.
    gone_deployments: Mutex<BTreeMap<String, Instant>>,
    /// Who ends the deployment of a model gone from the repository (the API's
    /// management, which knows the workers and the store; this module knows
    /// neither). Unset (a worker process, `--worker-ports off`), the watcher
    /// leaves deployments alone.
    deployment_gone: OnceLock<DeploymentGone>,
    /// Stopped models the previous poll found without a directory, with when a
    /// poll first found each so: as for `gone_deployments`, a stop is forgotten
    /// only once its model has been gone for the same grace, so a model whose
    /// directory comes back under its name (a new model, a rename while the server
    /// was down) is not stopped by a mark meant for the one that went.
    gone_stops: Mutex<BTreeMap<String, Instant>>,
    /// Who forgets the store's record of a stopped model that is gone (the API's
    /// management, which knows the store). Unset, the stop is forgotten here only.
    stop_gone: OnceLock<StopGone>,
    /// One lock per model name ever operated on (a handful of bytes each).
    locks: Mutex<HashMap<String, ModelLock>>,
    /// Watcher state per model. Only touched with the model's lock held or by the
    /// poll itself, never held across a reconcile.
    watch: Mutex<HashMap<String, WatchState>>,
    /// Reconciles the watcher's polls started and that still run (each on its own
    /// thread, see [`Sources::poll_in_background`]): bounded, so a repository of
    /// thousands of changed models never means thousands of threads.
    background_reconciles: AtomicUsize,
    /// What a model's `config.toml` leaves out takes these.
    model_defaults: ModelDefaults,
    /// The server's state directory; flat models' managed copies live in its
    /// `flat/` (see `crate::flat`).
    state_dir: PathBuf,
    /// Flat-file bookkeeping of the syncs (see [`FlatState`]).
    flat: Mutex<FlatState>,
    /// The flat models in force (see [`FlatModels`]).
    flat_models: Mutex<FlatModels>,
    /// Directories of the repository root whose name is no model name, each logged
    /// once (the scan runs every poll).
    ignored_names: Mutex<HashSet<String>>,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sources {
    pub fn new(manager: Arc<Manager>, root: PathBuf) -> Sources {
        Sources {
            stopped: manager.stopped_models(),
            manager,
            state_dir: root.join(".ferroserve"),
            flat: Mutex::new(FlatState::default()),
            flat_models: Mutex::new(FlatModels::default()),
            ignored_names: Mutex::new(HashSet::new()),
            root,
            listed: Mutex::new(None),
            stopping: Mutex::new(HashMap::new()),
            staging: Mutex::new(HashSet::new()),
            last_sweep: Mutex::new(None),
            deployments: Mutex::new(BTreeMap::new()),
            isolated: Mutex::new(BTreeSet::new()),
            gone_deployments: Mutex::new(BTreeMap::new()),
            deployment_gone: OnceLock::new(),
            gone_stops: Mutex::new(BTreeMap::new()),
            stop_gone: OnceLock::new(),
            locks: Mutex::new(HashMap::new()),
            watch: Mutex::new(HashMap::new()),
            background_reconciles: AtomicUsize::new(0),
            model_defaults: ModelDefaults::default(),
        }
    }

    /// Sets the server's state directory (`Settings::state_dir`), where flat models'
    /// managed copies are kept. Default `<root>/.ferroserve`.
    pub fn with_state_dir(mut self, state_dir: PathBuf) -> Sources {
        self.state_dir = state_dir;
        self
    }

    /// Sets the server-wide defaults for what a model's `config.toml` leaves out.
    pub fn with_model_defaults(mut self, defaults: ModelDefaults) -> Sources {
        self.model_defaults = defaults;
        self
    }

    pub fn manager(&self) -> &Arc<Manager> {
        &self.manager
    }

    /// Where a flat model's versions are kept.
    fn managed_dir(&self, name: &str) -> PathBuf {
        self.state_dir
            .join(crate::flat::MANAGED_DIR_NAME)
            .join(name)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The lock of one model (see the module invariants).
    pub fn model_lock(&self, name: &str) -> ModelLock {
        guard(&self.locks)
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(1)))
            .clone()
    }

    /// Waits for a model's lock without occupying a thread, until `deadline`.
    pub async fn lock_model(
        &self,
        name: &str,
        deadline: tokio::time::Instant,
    ) -> Result<ModelGuard, SourcesError> {
        let lock = self.model_lock(name);
        tokio::time::timeout_at(deadline, lock.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok) // the semaphore is never closed
            .ok_or_else(|| {
                SourcesError::Busy(format!(
                    "model {name:?} is busy with another management operation (an upload, \
                     reload, load or stop) that did not finish in time; try again"
                ))
            })
    }

    /// Whether an operation holds the model's lock now (for status).
    pub fn is_busy(&self, name: &str) -> bool {
        let lock = guard(&self.locks).get(name).cloned();
        lock.is_some_and(|l| l.available_permits() == 0)
    }

    /// Stopped, a stop is waiting for the lock, or served by a worker process:
    /// reload-all and the watcher leave it.
    fn held_back(&self, name: &str) -> bool {
        self.is_stopped(name) || self.is_isolated(name) || guard(&self.stopping).contains_key(name)
    }

    /// Sets who ends the deployment of a model that the watcher finds gone from the
    /// repository ([`DeploymentGone`]); once only, later calls are ignored.
    pub fn on_deployment_gone(&self, end: DeploymentGone) {
        let _ = self.deployment_gone.set(end);
    }

    /// Sets who forgets the store's record of a stopped model the watcher finds gone
    /// ([`StopGone`]); once only, later calls are ignored.
    pub fn on_stop_gone(&self, forget: StopGone) {
        let _ = self.stop_gone.set(forget);
    }

    /// Whether the model is deployed in a worker process, and so never loaded here.
    pub fn is_isolated(&self, name: &str) -> bool {
        guard(&self.isolated).contains(name)
    }

    /// Marks a staging directory as in use by this process (see `staging`).
    pub fn staging_started(&self, dir: &Path) {
        guard(&self.staging).insert(dir.to_path_buf());
    }

    pub fn staging_ended(&self, dir: &Path) {
        guard(&self.staging).remove(dir);
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
                    // A state directory set inside the repository is no model.
                    let state = self.is_state_dir(&dir);
                    if is_valid_model_name(&name) && !state {
                        dirs.insert(name, ModelDir { dir, listed: None });
                    } else if !name.starts_with('.')
                        && !state
                        && guard(&self.ignored_names).insert(name.clone())
                    {
                        // Hidden directories are never models; another name is
                        // said once, or the model would be missing without a word.
                        tracing::warn!(
                            directory = %name,
                            "not served: a model's directory name may hold only letters, \
                             digits, '.', '_' and '-'"
                        );
                    }
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
        // Flat models whose file is still there and that have a managed copy; a
        // model directory of the same name wins.
        let flat = guard(&self.flat_models).files.clone();
        for (name, file) in flat {
            if dirs.contains_key(&name) || !self.root.join(&file).is_file() {
                continue;
            }
            let dir = self.managed_dir(&name);
            if dir.is_dir() {
                dirs.insert(name, ModelDir { dir, listed: None });
            }
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
        if self.flat_file(name).is_some() {
            return Ok(ModelDir {
                dir: self.managed_dir(name),
                listed: None,
            });
        }
        let dir = self.root.join(name);
        if self.is_state_dir(&dir) {
            // Uploaded into, it would mix a model's files with the server's; deleted,
            // it would take the metadata store with it.
            return Err(SourcesError::InvalidName(format!(
                "model name {name:?} is the server's state directory (--state-dir), which \
                 is inside the model repository: choose another name"
            )));
        }
        Ok(ModelDir { dir, listed: None })
    }

    /// Whether `dir`, a directory of the repository root, is the server's state
    /// directory: by the same path, or another one to it (a relative root, a link).
    /// Only a directory of the state directory's name is looked up on disk.
    fn is_state_dir(&self, dir: &Path) -> bool {
        dir.file_name() == self.state_dir.file_name()
            && crate::manager::same_dir(dir, &self.state_dir)
    }

    /// Models as the sources know them, for status.
    pub fn describe(&self) -> Vec<SourceInfo> {
        let stopped = guard(&self.stopped).clone();
        let deployments = guard(&self.deployments).clone();
        let conflicts = guard(&self.flat_models).conflicts.clone();
        self.model_dirs()
            .into_iter()
            .map(|(name, d)| SourceInfo {
                flat_conflict: conflicts.get(&name).cloned(),
                stopped: stopped.contains(&name),
                busy: self.is_busy(&name),
                deployment: deployments.get(&name).cloned(),
                listed: d.listed.is_some(),
                dir: d.dir,
                name,
            })
            .collect()
    }

    /// Loads every model at start-up, after removing the staging directories a crash
    /// left. Files present now are taken as complete. Blocking.
    pub fn initial_load(&self) {
        self.sweep_staging(Duration::ZERO);
        *guard(&self.last_sweep) = Some(Instant::now());
        self.reload_all(&CancellationToken::new());
    }

    /// Re-scans every model that is not stopped and loads what its policy asks for,
    /// unloading models whose directory is gone. Never waits for a model's lock: a
    /// busy model is skipped and named in the answer (the watcher gets to it on a
    /// later poll). Stops starting new models once `cancel` fires. Blocking.
    pub fn reload_all(&self, cancel: &CancellationToken) -> ReloadAll {
        self.sync_flat(FlatSync::All);
        let dirs = self.model_dirs();
        self.unload_gone(&dirs);
        let names: Vec<(String, ModelDir)> = dirs
            .into_iter()
            .filter(|(name, _)| !self.held_back(name))
            .collect();
        let outcome = Mutex::new(ReloadAll::default());
        self.for_each_bounded(&names, |(name, dir)| {
            if cancel.is_cancelled() {
                return;
            }
            let Ok(_lock) = self.model_lock(name).try_acquire_owned() else {
                // Reconciled again by the next poll, whatever its files look like.
                // The operation that holds the lock may record its own view when
                // it ends, over this mark; that view names the list entry it
                // used, so a poll still sees that it differs from the list in
                // force now, and applies it (the watcher's view holds the entry).
                if let Some(state) = guard(&self.watch).get_mut(name) {
                    state.reconciled = None;
                }
                guard(&outcome).busy.push(name.clone());
                return;
            };
            // A stop that came while this reload was listing wins.
            if self.held_back(name) {
                return;
            }
            self.reconcile_now(name, dir);
            guard(&outcome).reloaded.push(name.clone());
        });
        let mut outcome = outcome.into_inner().unwrap_or_else(|e| e.into_inner());
        outcome.reloaded.sort();
        outcome.busy.sort();
        if !outcome.busy.is_empty() {
            tracing::info!(models = ?outcome.busy, "reload skipped busy models");
        }
        outcome
    }

    /// Runs `f` over `items` on at most `max_concurrent_loads` threads (their loads are
    /// bounded by the manager as well), so thousands of models never mean thousands
    /// of threads.
    fn for_each_bounded<T: Sync>(&self, items: &[T], f: impl Fn(&T) + Sync) {
        let next = AtomicUsize::new(0);
        let workers = items.len().min(self.manager.limits().max_concurrent_loads);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                        f(item);
                    }
                });
            }
        });
    }

    /// Re-scans one model and loads what its policy asks for; a stopped model is
    /// started again. Waits for the model's lock on this thread: for tests and tools;
    /// the management API takes the lock with [`Sources::lock_model`]. Blocking.
    pub fn reload_model(&self, name: &str) -> Result<(), SourcesError> {
        let lock = futures::executor::block_on(self.model_lock(name).acquire_owned())
            .map_err(|_| SourcesError::Io("the model's lock is closed".into()))?;
        self.reload_model_locked(name, &lock)
    }

    /// As [`Sources::reload_model`], for a caller that already holds the model's lock
    /// (an upload). Blocking.
    pub fn reload_model_locked(&self, name: &str, _lock: &ModelGuard) -> Result<(), SourcesError> {
        check_name(name)?;
        self.sync_flat(FlatSync::One(name));
        let dir = self.model_dir(name)?;
        if !dir.dir.is_dir() {
            tracing::debug!(model = name, path = %dir.dir.display(), "no model directory");
            return Err(SourcesError::NotFound(format!(
                "model {name:?} not found: it has no directory in the model repository"
            )));
        }
        if !self.is_source(name) {
            return Err(self.not_a_source(name));
        }
        guard(&self.stopped).remove(name);
        if self.is_isolated(name) {
            // Its worker watches the model's directory and loads what is new there.
            return Ok(());
        }
        self.reconcile_now(name, &dir);
        Ok(())
    }

    /// Refuses (409) an upload of a model that the model config list in force does
    /// not name: the version would be stored where nothing serves it (the list, not
    /// the repository root, says what is served). Checked before the upload stores
    /// anything and again under the model's lock before its version moves in.
    pub fn check_uploadable(&self, name: &str) -> Result<(), SourcesError> {
        match self.config_list() {
            Some(list) if !list.models.iter().any(|m| m.name == name) => {
                Err(SourcesError::Conflict(format!(
                    "model {name:?} is not in the model config list in force, so an upload \
                     of it would not be served; nothing was stored: add the model to the \
                     list first"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Why a model with a directory is not served from it: not in the model config
    /// list in force, or (without a list) a directory that holds only an upload's
    /// staging, which is no model yet.
    fn not_a_source(&self, name: &str) -> SourcesError {
        SourcesError::NotFound(if self.config_list().is_some() {
            format!("model {name:?} is not in the model config list in force")
        } else {
            format!(
                "model {name:?} not found in the model repository: its directory holds \
                 only an upload in progress"
            )
        })
    }

    /// Whether a model is served from the repository root or the list in force
    /// names it, i.e. whether reloading it can serve it.
    pub fn is_source(&self, name: &str) -> bool {
        self.model_dirs().contains_key(name)
    }

    /// Scans one model, applies the overrides, keeps only `settled` versions when
    /// given (the watcher), else reads the files of the versions that serve (an
    /// explicit reload loads again those whose files changed), and hands it to the
    /// manager, with how to scan it again once its loads are done (every path that
    /// loads versions, the watcher, reloads, uploads and the model config list,
    /// comes here, so none publishes a version that stopped being aspired while it
    /// loaded). The caller holds the model's lock. Answers whether the model changed
    /// while its versions loaded ([`Reconciled::disk_changed`]): the caller has the
    /// watcher reconcile it again.
    fn reconcile(&self, name: &str, dir: &ModelDir, settled: Option<&BTreeSet<u64>>) -> Reconciled {
        let mut on_disk = match scan_model(name, &dir.dir) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(model = name, "{e}");
                if !dir.dir.exists() {
                    self.manager.unload_model(name);
                }
                return Reconciled::default();
            }
        };
        if let Some(settled) = settled {
            on_disk.versions.retain(|v, _| settled.contains(v));
        } else {
            // An explicit reload (not the watcher): the manager loads again a served
            // version whose files changed since it loaded, so it is told what they
            // are now.
            let serving = self.manager.serving();
            if let Some(served) = serving.models.get(name) {
                for (v, on_disk) in on_disk.versions.iter_mut() {
                    if served.versions.contains_key(v) {
                        on_disk.files = Some(crate::repository::version_files(&on_disk.dir));
                    }
                }
            }
        }
        if let Ok(config) = &mut on_disk.config {
            self.apply_in_force(name, dir, config);
        }
        // The model as it is now, with the config in force now: a model config list
        // put in force while the model loaded (gRPC `ReloadConfig`, the config file)
        // names its policy, unless it moved the model elsewhere (the next reconcile
        // loads it from there). Only the settled versions of `on_disk` count.
        let rescan = || -> Result<ModelOnDisk, String> {
            let mut now = scan_model(name, &dir.dir).map_err(|e| e.to_string())?;
            if let Ok(config) = &mut now.config {
                let listed_now = self
                    .model_dir(name)
                    .ok()
                    .filter(|d| crate::manager::same_dir(&d.dir, &dir.dir));
                self.apply_in_force(name, listed_now.as_ref().unwrap_or(dir), config);
            }
            Ok(now)
        };
        self.manager.reconcile_model(&on_disk, &rescan)
    }

    /// What the server puts over a model's `config.toml`: its defaults, the model
    /// config list's entry and a deployment's settings.
    fn apply_in_force(&self, name: &str, dir: &ModelDir, config: &mut ModelConfig) {
        let deployment = guard(&self.deployments).get(name).cloned();
        self.model_defaults.apply(config);
        apply_overrides(config, dir.listed.as_ref(), deployment.as_ref());
    }

    /// The config a reconcile of `name` would apply now (`config.toml` with what
    /// the server puts over it); `None` when the model has no directory here or its
    /// `config.toml` does not parse. Blocking (reads the file).
    pub fn config_in_force(&self, name: &str) -> Option<ModelConfig> {
        let dir = self.model_dir(name).ok()?;
        let mut config = ModelConfig::load(&dir.dir).ok()?;
        self.apply_in_force(name, &dir, &mut config);
        Some(config)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_config::VersionPolicy;

    /// Was: a `--state-dir` set to a visible directory of the repository was kept
    /// out of the scan only when named by the very same path, and a model of its
    /// name could be deleted (the metadata store with it) or uploaded into.
    #[test]
    fn the_state_directory_inside_the_repository_is_no_model() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("models");
        std::fs::create_dir_all(root.join("state/flat")).unwrap();
        std::fs::create_dir_all(root.join("iris/1")).unwrap();
        // The state directory named through a link to the repository.
        std::os::unix::fs::symlink(&root, dir.path().join("link")).unwrap();
        let sources = Sources::new(
            Arc::new(Manager::new(crate::backends::BackendOptions::default())),
            root.clone(),
        )
        .with_state_dir(dir.path().join("link/state"));
        let names: Vec<String> = sources.model_dirs().into_keys().collect();
        assert_eq!(names, ["iris"]);
        let e = sources.model_dir("state").unwrap_err();
        assert!(
            matches!(&e, SourcesError::InvalidName(m) if m.contains("state directory")),
            "{e}"
        );
        assert_eq!(sources.model_dir("iris").unwrap().dir, root.join("iris"));
    }

    /// Was: a stop outlived its model's directory, so a new directory of that name
    /// (or one renamed back while the server was down) was never served. Now the
    /// stop, and the deployment settings kept with it, are forgotten once the
    /// directory has been gone for the grace, as a gone deployment ends; a
    /// directory back in time keeps the stop.
    #[test]
    fn a_stop_is_forgotten_once_its_model_directory_has_been_gone_for_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let sources = Sources::new(
            Arc::new(Manager::new(crate::backends::BackendOptions::default())),
            root.to_path_buf(),
        );
        let backdate = |sources: &Sources| {
            let long_ago = Instant::now()
                .checked_sub(watch::DEPLOYMENT_GONE_GRACE + Duration::from_secs(1))
                .unwrap();
            for since in guard(&sources.gone_stops).values_mut() {
                *since = long_ago;
            }
        };
        std::fs::create_dir_all(root.join("w/1")).unwrap();
        sources.restore("w", true, Some(Deployment::default()));
        assert!(sources.is_stopped("w"));

        std::fs::remove_dir_all(root.join("w")).unwrap();
        sources.forget_gone_stops();
        sources.forget_gone_stops();
        assert!(sources.is_stopped("w"), "gone for an instant only");
        // Back, then gone again: its grace starts again.
        backdate(&sources);
        std::fs::create_dir_all(root.join("w/1")).unwrap();
        sources.forget_gone_stops();
        assert!(sources.is_stopped("w"), "its directory is back");
        std::fs::remove_dir_all(root.join("w")).unwrap();
        sources.forget_gone_stops();
        sources.forget_gone_stops();
        assert!(sources.is_stopped("w"), "its grace started again");

        backdate(&sources);
        let busy = sources.model_lock("w").try_acquire_owned().unwrap();
        sources.forget_gone_stops();
        assert!(sources.is_stopped("w"), "an operation holds the model");
        drop(busy);
        sources.forget_gone_stops();
        assert!(!sources.is_stopped("w"), "gone past its grace");
        assert_eq!(sources.deployment("w"), None);
        assert!(!sources.is_busy("w"), "no hook holds its lock");
    }

    /// Was: the models gone from a listing taken before an upload (its directory
    /// made, its version loaded, its lock let go) were unloaded, the upload's
    /// model with them, until the next poll loaded it again.
    #[test]
    fn a_model_uploaded_after_the_listing_is_not_unloaded_as_gone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let manager = Arc::new(Manager::new(crate::backends::BackendOptions::default()));
        let sources = Sources::new(manager.clone(), root.to_path_buf());
        std::fs::create_dir_all(root.join("old/1")).unwrap();
        sources.reload_model("old").unwrap();
        std::fs::remove_dir_all(root.join("old")).unwrap();
        let listed = sources.model_dirs();
        assert!(listed.is_empty());

        std::fs::create_dir_all(root.join("new/1")).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/models/iris_sklearn/1/model.joblib"),
            root.join("new/1/model.joblib"),
        )
        .unwrap();
        sources.reload_model("new").unwrap();
        assert!(manager.records_snapshot().contains_key("new"));
        assert!(manager.records_snapshot().contains_key("old"));

        sources.unload_gone(&listed);
        let records = manager.records_snapshot();
        assert!(records.contains_key("new"), "the uploaded model stays");
        assert!(manager.serving().models.contains_key("new"));
        assert!(
            !records.contains_key("old"),
            "the one gone in both listings goes"
        );
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
