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
//! The watcher's polls live in `watch.rs`, the flat layout's syncs in `flat.rs`;
//! this file holds the locks, the model directories and the operations on one model.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

pub use tokio_util::sync::CancellationToken;

use crate::backends::format::{sniff_file, ArtifactFormat};
use crate::flat::{FileStat, Materialised, RootFile};
use crate::manager::{Manager, VersionState};
use crate::model_config::{ModelConfig, ModelDefaults};
use crate::model_config_list::{is_valid_model_name, ModelConfigList, ModelListEntry};
use crate::repository::{model_directories, scan_model};

mod flat;
mod watch;

use flat::{FlatModels, FlatState, FlatSync};
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

/// Numbers the `.tmp-delete-<pid>-<n>` directories a deleted model is renamed to.
static TRASH_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new hidden `.tmp-delete-*` path in `parent` to rename a deleted model's files
/// to (without the model's name, which may use up all 255 bytes a name may have).
fn trash_in(parent: &Path) -> PathBuf {
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

    /// Records a stop as pending until the returned intent is dropped (see
    /// `stopping`).
    pub fn intend_stop(self: &Arc<Self>, name: &str) -> StopIntent {
        *guard(&self.stopping).entry(name.to_string()).or_default() += 1;
        StopIntent {
            sources: self.clone(),
            name: name.to_string(),
        }
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

    /// Models deployed in this process (a deployment's settings, no worker).
    pub fn deployed_in_process(&self) -> Vec<String> {
        let isolated = guard(&self.isolated).clone();
        guard(&self.deployments)
            .keys()
            .filter(|name| !isolated.contains(*name))
            .cloned()
            .collect()
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
                    if is_valid_model_name(&name) && dir != self.state_dir {
                        dirs.insert(name, ModelDir { dir, listed: None });
                    } else if !name.starts_with('.')
                        && dir != self.state_dir
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
        Ok(ModelDir {
            dir: self.root.join(name),
            listed: None,
        })
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

    /// Whether a model is served from the repository root or the list in force
    /// names it, i.e. whether reloading it can serve it.
    pub fn is_source(&self, name: &str) -> bool {
        self.model_dirs().contains_key(name)
    }

    /// Scans one model, applies the overrides, keeps only `settled` versions when
    /// given (the watcher), else reads the files of the versions that serve (an
    /// explicit reload loads again those whose files changed), and hands it to the
    /// manager. The caller holds the model's lock.
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
        let deployment = guard(&self.deployments).get(name).cloned();
        if let Ok(config) = &mut on_disk.config {
            self.model_defaults.apply(config);
            apply_overrides(config, dir.listed.as_ref(), deployment.as_ref());
        }
        self.manager.reconcile_model(&on_disk);
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_config::VersionPolicy;

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
