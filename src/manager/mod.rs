//! The lifecycle manager: decides which model versions are loaded, and publishes
//! the serving map that requests resolve against.
//!
//! A version moves START → LOADING → AVAILABLE → UNLOADING → END, or to ERROR
//! with its message kept for status. A new version is loaded (and, later, warmed
//! up) *before* it is published; an old one is only removed from the map, and its
//! model is freed when the last request holding a handle to it finishes.
//!
//! Invariants:
//! * the manager is the only writer of the serving map, and writers are serialised
//!   by `publish_lock`; requests read the map through `ArcSwap` and take no lock;
//! * the manager never does file IO itself beyond loading a version (the backend's
//!   load, the version's `warmup.json` and the identity of its files): it acts on the
//!   `ModelOnDisk` scans it is given, the one a reconcile starts from and the fresh
//!   ones its caller's `rescan` gives once loads finish;
//! * a version no longer aspired is never made available, and the serving set only
//!   changes toward what is aspired now: a reconcile re-scans the model (`rescan`)
//!   after each load, before publishing it, and again before unloading anything, so
//!   a version whose directory went, or that the policy in force stopped naming,
//!   while it loaded is discarded (END, with why), and a version aspired now is never
//!   unloaded; when the re-scan fails, what serves keeps serving and nothing new is
//!   published;
//! * a new version is warmed up (one inference) before it is published;
//! * a label only points at an AVAILABLE version, unless the model's config sets
//!   `allow_unavailable_labels`; labels change in the same publish as versions;
//! * a version that fails to load never removes another version from serving.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::backends::{load_backend_with, Backend, BackendOptions};
use crate::batching::BatchQueue;
use crate::model_config::ModelConfig;

mod fallback;
mod labels;
mod reconcile;
mod resolve;

pub use reconcile::{Reconciled, Rescan};
pub use resolve::ResolveError;

/// Which version of a model a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRequest {
    /// The highest available version.
    Latest,
    Specific(u64),
    /// A named version from the model's labels (`stable`, `canary`).
    Label(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VersionState {
    Start,
    Loading,
    Available,
    Unloading,
    End,
    Error,
}

impl VersionState {
    pub const ALL: [VersionState; 6] = [
        VersionState::Start,
        VersionState::Loading,
        VersionState::Available,
        VersionState::Unloading,
        VersionState::End,
        VersionState::Error,
    ];

    /// The name TF Serving and ferroserve's status APIs use.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Start => "START",
            VersionState::Loading => "LOADING",
            VersionState::Available => "AVAILABLE",
            VersionState::Unloading => "UNLOADING",
            VersionState::End => "END",
            VersionState::Error => "ERROR",
        }
    }
}

/// A loaded model version: what a request holds while it runs. Holding the `Arc`
/// keeps the model in memory even after the manager has unpublished it.
pub struct LoadedVersion {
    pub model: Arc<str>,
    pub version: u64,
    pub backend: Arc<dyn Backend>,
    /// The model's config.toml in force now. Swapped when the file changes (the
    /// watcher reconciles the model), so settings that need no reload (feature
    /// names and defaults, input and output names, timeout, row limit) apply to the
    /// versions already serving. Read with [`LoadedVersion::config`].
    config: ArcSwap<ModelConfig>,
    /// The config this version was loaded with: what `[batching]` and `warmup`,
    /// which take effect only at load, were when it loaded.
    pub loaded_config: Arc<ModelConfig>,
    /// This version's pre- and post-processing (`[preprocess]`, `[postprocess]` and
    /// their files), built when it loaded; `crate::api::predict` runs it.
    pub pipeline: Arc<crate::preprocess::Pipeline>,
    /// This version's request queue and batcher (`[batching]` in its config).
    /// It lives as long as the version: requests queued when the version is
    /// unpublished hold the handle, so they drain before it is freed.
    pub queue: Arc<BatchQueue>,
    /// This version's content fingerprint (`cache::key::fingerprint`), in every key
    /// of its cached answers: computed at load when its config enables `[cache]`,
    /// else in the background the first time a request finds `[cache]` turned on
    /// (read it with [`LoadedVersion::content`]).
    content: Arc<OnceLock<[u8; 32]>>,
    /// Whether the fingerprint's computation has started (it runs once).
    fingerprinting: AtomicBool,
    /// The version's directory, which the fingerprint reads.
    dir: PathBuf,
    /// The identity of the version's files when it loaded (read just before): an
    /// explicit reload that finds them changed loads the version again.
    files: crate::repository::VersionFiles,
    /// The model's request deadline in nanoseconds (0: none, the server's default
    /// applies). Atomic, not part of `config`, because a deployment or an edited
    /// `config.toml` changes it for versions already serving, without a reload.
    timeout_nanos: AtomicU64,
    /// Lets the last holder mark the version END when it is finally freed.
    records: Weak<Mutex<Records>>,
    /// Told of that END, like every state change (see [`Manager::observe_states`]).
    observer: Arc<OnceLock<StateObserver>>,
}

impl LoadedVersion {
    /// The model's config in force now (lock-free; see the field).
    pub fn config(&self) -> arc_swap::Guard<Arc<ModelConfig>> {
        self.config.load()
    }

    /// The settings of the config in force that differ from the ones this version
    /// loaded with and take effect only when a version loads (`[batching]`, `warmup`,
    /// `[sklearn]`: how the file is read).
    pub fn settings_needing_reload(&self) -> Vec<&'static str> {
        let now = self.config.load();
        let mut out = Vec::new();
        if now.batching != self.loaded_config.batching {
            out.push("batching");
        }
        if now.warmup != self.loaded_config.warmup {
            out.push("warmup");
        }
        if now.sklearn != self.loaded_config.sklearn {
            out.push("sklearn");
        }
        if now.preprocess != self.loaded_config.preprocess {
            out.push("preprocess");
        }
        if now.postprocess != self.loaded_config.postprocess {
            out.push("postprocess");
        } else if now.postprocess_score_output() != self.loaded_config.postprocess_score_output() {
            out.push("probabilities_output");
        }
        if now.fasttext != self.loaded_config.fasttext {
            out.push("fasttext");
        }
        if now.tensorflow != self.loaded_config.tensorflow {
            out.push("tensorflow");
        }
        out
    }

    /// The version's content fingerprint, for the response cache's keys; `None`
    /// while it is not known yet: the first call starts computing it on a blocking
    /// thread (the version's files are read once), and until it is done the version's
    /// answers are not cached. A version whose files cannot be read is never cached.
    pub fn content(&self) -> Option<&[u8; 32]> {
        if let Some(content) = self.content.get() {
            return Some(content);
        }
        if !self.fingerprinting.swap(true, Ordering::AcqRel) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (cell, dir) = (self.content.clone(), self.dir.clone());
                let (model, version) = (self.model.clone(), self.version);
                let settings = self.loaded_config.answer_settings();
                let files = self.files.clone();
                runtime.spawn_blocking(move || match fingerprint_loaded(&dir, &files, &settings) {
                    Ok(content) => {
                        let _ = cell.set(content);
                    }
                    Err(e) => tracing::warn!(
                        model = &*model,
                        version,
                        "response cache left off for this version: {e}"
                    ),
                });
            }
        }
        None
    }

    /// The class names of this version's scores: `[postprocess] labels`, else the
    /// model's own (a scikit-learn classifier's `classes_`).
    pub fn class_labels(&self) -> Option<&[String]> {
        self.pipeline
            .class_labels()
            .or(self.backend.traits().class_labels.as_deref())
    }

    /// The version directory this version was loaded from: the watcher loads it
    /// again when the repository names another directory for its number.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model's request deadline now (`None`: the server's default).
    pub fn timeout(&self) -> Option<Duration> {
        match self.timeout_nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    fn set_timeout(&self, timeout: Option<Duration>) {
        let nanos = timeout.map_or(0, |t| {
            u64::try_from(t.as_nanos()).unwrap_or(u64::MAX).max(1)
        });
        self.timeout_nanos.store(nanos, Ordering::Relaxed);
    }
}

impl Drop for LoadedVersion {
    fn drop(&mut self) {
        if let Some(records) = self.records.upgrade() {
            let mut records = records.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(record) = records
                .get_mut(&*self.model)
                .and_then(|m| m.versions.get_mut(&self.version))
            {
                if record.state == VersionState::Unloading {
                    set_state(
                        &self.observer,
                        &self.model,
                        self.version,
                        record,
                        VersionState::End,
                        None,
                    );
                }
            }
        }
    }
}

/// What a request holds: a version that stays loaded as long as the handle lives.
pub type ServableHandle = Arc<LoadedVersion>;

/// The serving versions of one model, as published.
#[derive(Clone, Default)]
pub struct ServingModel {
    pub versions: BTreeMap<u64, ServableHandle>,
    pub labels: BTreeMap<String, u64>,
    pub config: Arc<ModelConfig>,
}

/// Everything requests can reach. Replaced whole on every change.
#[derive(Clone, Default)]
pub struct ServingMap {
    pub models: HashMap<String, Arc<ServingModel>>,
}

/// The lifecycle record of one version, for status.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    pub state: VersionState,
    /// Why the version is in ERROR.
    pub error: Option<String>,
    pub artifact: Option<PathBuf>,
    pub format: Option<&'static str>,
    /// The identity of the version's files when its last load failed (read just
    /// before that load): a version in ERROR is not tried again as a fallback
    /// ([`Manager::reconcile_model`]) while its files are still these.
    failed_files: Option<crate::repository::VersionFiles>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelRecord {
    pub dir: PathBuf,
    /// Why the model's config.toml could not be used, if it could not (the config
    /// in force before stays), and what of the config in force does not fit the
    /// versions it serves (a tensor name they do not have, a table of another model
    /// format).
    pub config_error: Option<String>,
    pub versions: BTreeMap<u64, VersionRecord>,
    pub labels: BTreeMap<String, u64>,
    /// Labels of the config that were refused (pointing at a version that is not
    /// available), each with the reason.
    pub label_errors: Vec<String>,
    /// Labels the config declares whose version is not available and that point at
    /// no other version, each with what a request through it is told (the version and
    /// why it is not available). Such a label is not published, but a request for it
    /// is UNAVAILABLE, not "no such label": the config still declares it, and it works
    /// again as soon as its version is available, as TF Serving's label map does.
    pub unavailable_labels: BTreeMap<String, String>,
    /// Set when the policy asks for more versions than `max_served_versions_per_model`
    /// allows: says how many are served and which are left out.
    pub policy_warning: Option<String>,
    /// The last config that could be used: it stays in force while `config.toml`
    /// cannot be used, so that versions added meanwhile are still served by its
    /// policy. `None` until a config was applied (a model whose config fails at
    /// start serves nothing until it is fixed).
    config_in_force: Option<Arc<ModelConfig>>,
}

type Records = BTreeMap<String, ModelRecord>;

/// Told of every version state change: model, version, from, to, error. Called with
/// the manager's records locked, so it must only hand the change on (the metadata
/// store buffers it), never wait or call back into the manager.
pub type StateObserver =
    Box<dyn Fn(&str, u64, VersionState, VersionState, Option<&str>) + Send + Sync>;

fn set_state(
    observer: &OnceLock<StateObserver>,
    model: &str,
    version: u64,
    record: &mut VersionRecord,
    state: VersionState,
    error: Option<String>,
) {
    if record.state == state && record.error == error {
        return;
    }
    match &error {
        Some(e) => {
            tracing::warn!(model, version, from = record.state.as_str(), to = state.as_str(), error = %e, "model version state")
        }
        None => tracing::info!(
            model,
            version,
            from = record.state.as_str(),
            to = state.as_str(),
            "model version state"
        ),
    }
    if let Some(observe) = observer.get() {
        observe(model, version, record.state, state, error.as_deref());
    }
    record.state = state;
    record.error = error;
}

/// Asked of each version whose load and warm-up finished, just before it is
/// published: `Ok` to publish it, or why it is no longer to be served (the
/// reconcile's re-scan of the model, see `Manager::reconcile_model`). Called from
/// the loader threads.
type StillWanted<'a> = dyn Fn(u64) -> Result<(), String> + Sync + 'a;

/// Bounds on what loading may cost (`Settings::max_concurrent_loads`,
/// `Settings::max_served_versions_per_model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Most versions loading at once, across every model.
    pub max_concurrent_loads: usize,
    /// Most versions one model serves; the highest are kept.
    pub max_served_versions: usize,
}

impl Default for LoadLimits {
    fn default() -> LoadLimits {
        LoadLimits {
            max_concurrent_loads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            max_served_versions: 100,
        }
    }
}

/// A counting semaphore for loads, on blocking threads (loads never run on the async
/// workers). Also keeps the highest number of loads seen at once, for tests and
/// diagnostics.
struct LoadSlots {
    limit: usize,
    running: Mutex<usize>,
    freed: Condvar,
    peak: AtomicUsize,
}

impl LoadSlots {
    fn acquire(&self) -> LoadSlot<'_> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= self.limit {
            running = self.freed.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        self.peak.fetch_max(*running, Ordering::Relaxed);
        LoadSlot(self)
    }
}

struct LoadSlot<'a>(&'a LoadSlots);

impl Drop for LoadSlot<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        self.0.freed.notify_one();
    }
}

pub struct Manager {
    /// Read by every request with a lock-free load; replaced whole by `publish`.
    serving: ArcSwap<ServingMap>,
    /// Lifecycle of every version seen, for status and metrics. Behind a mutex
    /// because loads on several threads update it; requests never touch it, and
    /// it is never held across an await or a model load. In an `Arc` so that a
    /// `LoadedVersion` freed after unpublishing can still mark itself END.
    records: Arc<Mutex<Records>>,
    /// Serialises writers of `serving` so concurrent loads never lose an update.
    publish_lock: Mutex<()>,
    options: BackendOptions,
    /// Set once the initial load of the repository has finished (or failed).
    ready: AtomicBool,
    limits: LoadLimits,
    /// Bounds loads across every model: without it a policy `all` over thousands of
    /// version directories started a thread and a load for each at once.
    load_slots: LoadSlots,
    /// Told of every version state change (the audit trail), once set.
    observer: Arc<OnceLock<StateObserver>>,
    /// The server's request timeout (`Settings::request_timeout`): the time limit of
    /// each warm-up request of a model whose `config.toml` sets no `timeout_secs`,
    /// so that a warm-up that never ends cannot hold a load (and its model) for good.
    request_timeout: Duration,
    /// The models stopped through the management API, kept by `crate::sources`
    /// (which shares this set): a request for one is told so, not "not found".
    stopped: Arc<Mutex<BTreeSet<String>>>,
}

impl Manager {
    pub fn new(options: BackendOptions) -> Manager {
        Manager {
            serving: ArcSwap::from_pointee(ServingMap::default()),
            records: Arc::new(Mutex::new(Records::new())),
            publish_lock: Mutex::new(()),
            options,
            ready: AtomicBool::new(false),
            observer: Arc::new(OnceLock::new()),
            limits: LoadLimits::default(),
            load_slots: LoadSlots {
                limit: LoadLimits::default().max_concurrent_loads,
                running: Mutex::new(0),
                freed: Condvar::new(),
                peak: AtomicUsize::new(0),
            },
            request_timeout: crate::settings::Settings::default().request_timeout,
            stopped: Arc::default(),
        }
    }

    /// The set of stopped models, which the sources keep and the manager reads to
    /// explain a request for one of them ([`ResolveError::ModelStopped`]).
    pub fn stopped_models(&self) -> Arc<Mutex<BTreeSet<String>>> {
        self.stopped.clone()
    }

    /// Whether `model` is stopped (see [`Manager::stopped_models`]).
    fn is_stopped(&self, model: &str) -> bool {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(model)
    }

    /// The same manager with the server's request timeout (`--request-timeout-secs`)
    /// as the warm-up time limit of models that set no `timeout_secs`.
    pub fn with_request_timeout(mut self, request_timeout: Duration) -> Manager {
        self.request_timeout = request_timeout;
        self
    }

    /// The time limit of each warm-up request of a model with `config`: its
    /// `timeout_secs`, else the server's request timeout.
    pub fn warm_up_limit(&self, config: &ModelConfig) -> Duration {
        config.timeout().unwrap_or(self.request_timeout)
    }

    /// Sets who is told of every version state change from now on (the metadata
    /// store's audit trail). Only the first call counts.
    pub fn observe_states(&self, observer: StateObserver) {
        let _ = self.observer.set(observer);
    }

    /// The same manager with other load limits (zeros are taken as 1).
    pub fn with_limits(mut self, limits: LoadLimits) -> Manager {
        let limits = LoadLimits {
            max_concurrent_loads: limits.max_concurrent_loads.max(1),
            max_served_versions: limits.max_served_versions.max(1),
        };
        self.limits = limits;
        self.load_slots.limit = limits.max_concurrent_loads;
        self
    }

    pub fn limits(&self) -> LoadLimits {
        self.limits
    }

    /// The most versions that were ever loading at the same time.
    pub fn peak_concurrent_loads(&self) -> usize {
        self.load_slots.peak.load(Ordering::Relaxed)
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What backends are loaded with, so an upload can be checked the same way.
    pub fn backend_options(&self) -> &BackendOptions {
        &self.options
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// The current serving map (a cheap `Arc` clone; no lock).
    pub fn serving(&self) -> Arc<ServingMap> {
        self.serving.load_full()
    }

    /// Lifecycle records of every model, for status.
    pub fn records_snapshot(&self) -> BTreeMap<String, ModelRecord> {
        self.records().clone()
    }

    pub fn model_record(&self, model: &str) -> Option<ModelRecord> {
        self.records().get(model).cloned()
    }

    /// Number of versions in each state, for metrics.
    pub fn state_counts(&self) -> BTreeMap<VersionState, usize> {
        let mut counts: BTreeMap<VersionState, usize> =
            VersionState::ALL.iter().map(|&s| (s, 0)).collect();
        for model in self.records().values() {
            for v in model.versions.values() {
                *counts.entry(v.state).or_default() += 1;
            }
        }
        counts
    }

    /// Sets a model's config error, logging it when it is new.
    fn set_config_error(&self, name: &str, error: Option<String>) {
        let mut records = self.records();
        let record = records.entry(name.to_string()).or_default();
        if record.config_error != error {
            if let Some(e) = &error {
                tracing::warn!(model = name, "{e}");
            }
        }
        record.config_error = error;
    }

    /// What of `config` does not fit the versions of the model that serve: a tensor
    /// name (`input_name`, `prediction_output`, `probabilities_output`) one of them
    /// does not have, or a format's table (`[fasttext]`, …) none of them reads.
    /// These settings would otherwise only show as a 500 on every request that needs
    /// them.
    fn config_misfit(&self, name: &str, config: &ModelConfig) -> Option<String> {
        let serving = self.serving();
        let versions: Vec<&ServableHandle> = serving
            .models
            .get(name)
            .map(|m| m.versions.values().collect())
            .unwrap_or_default();
        let mut misfits: Vec<String> = versions
            .iter()
            .filter_map(|h| {
                config
                    .check_names(h.backend.signature())
                    .err()
                    .map(|e| format!("version {}: {e}", h.version))
            })
            .collect();
        let formats: Vec<&str> = versions.iter().map(|h| h.backend.format()).collect();
        misfits.extend(config.unused_format_tables(&formats).err());
        (!misfits.is_empty()).then(|| {
            format!(
                "config.toml does not fit the versions served: {}",
                misfits.join("; ")
            )
        })
    }

    /// Loads and warms up one version, then asks `still_wanted` whether it is still
    /// to be served (the repository and the config in force may have changed while it
    /// loaded): if so it is published and AVAILABLE; if not it is dropped unpublished
    /// (END, with why; a served version of the same number keeps serving).
    fn load_version(
        &self,
        model: &str,
        version: u64,
        artifact: &Path,
        config: Arc<ModelConfig>,
        still_wanted: &StillWanted<'_>,
    ) {
        let started = std::time::Instant::now();
        // A panic while loading (a bug, a backend's or ours) is the version's error,
        // not a version left LOADING for good.
        // Read before the load, so that a file replaced while it loads reads as
        // changed on the next explicit reload rather than as what was loaded.
        let files = crate::repository::version_files(artifact.parent().unwrap_or(Path::new(".")));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            load_backend_with(artifact, &self.options, &config)
                .map_err(|e| e.to_string())
                .and_then(|backend| {
                    let dir = artifact.parent().unwrap_or(Path::new("."));
                    let pipeline = crate::preprocess::Pipeline::load(dir, &config, &*backend)?;
                    if config.warmup_enabled() {
                        let limit = self.warm_up_limit(&config);
                        crate::warmup::warm_up(model, version, &*backend, dir, limit)?;
                    }
                    // A cache never fails a load: unreadable files leave it off (and the
                    // fingerprint is tried once more if a request finds the cache on).
                    let content = OnceLock::new();
                    if config.cache.enabled {
                        match fingerprint_loaded(dir, &files, &config.answer_settings()) {
                            Ok(c) => {
                                let _ = content.set(c);
                            }
                            Err(e) => tracing::warn!(
                                model,
                                version,
                                "response cache left off for this version: {e}"
                            ),
                        }
                    }
                    Ok((backend, pipeline, content))
                })
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("no message");
            Err(format!(
                "loading panicked (a bug, please report it): {what}"
            ))
        });
        let mut failed_files = None;
        // Asked after the load and warm-up, which may take minutes, and just before
        // the publish: what was aspired when the load started may not be any more.
        let result = result.map(|loaded| (loaded, still_wanted(version)));
        let (state, error) = match result {
            Ok((loaded, Err(why))) => {
                drop(loaded);
                self.discard_loaded(model, version, why)
            }
            Ok(((backend, pipeline, content), Ok(()))) => {
                let format = backend.format();
                let model_name: Arc<str> = Arc::from(model);
                let queue = Arc::new(BatchQueue::new(
                    model_name.clone(),
                    version,
                    backend.clone(),
                    &config.batching,
                ));
                let handle = Arc::new(LoadedVersion {
                    model: model_name,
                    version,
                    backend,
                    timeout_nanos: AtomicU64::new(0),
                    config: ArcSwap::new(config.clone()),
                    loaded_config: config,
                    pipeline: Arc::new(pipeline),
                    content: Arc::new(content),
                    fingerprinting: AtomicBool::new(false),
                    dir: artifact.parent().unwrap_or(Path::new(".")).to_path_buf(),
                    files,
                    queue,
                    records: Arc::downgrade(&self.records),
                    observer: self.observer.clone(),
                });
                handle.set_timeout(handle.config().timeout());
                // Publish before marking AVAILABLE, so status never says AVAILABLE for
                // a version requests cannot reach. The records lock is not held here:
                // publishing may free an old version, whose Drop takes that lock.
                self.publish(|map| {
                    let entry = map.models.entry(model.to_string()).or_default();
                    Arc::make_mut(entry).versions.insert(version, handle);
                });
                if let Some(r) = self
                    .records()
                    .get_mut(model)
                    .and_then(|m| m.versions.get_mut(&version))
                {
                    r.format = Some(format);
                }
                tracing::info!(
                    model,
                    version,
                    format,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "loaded"
                );
                (VersionState::Available, None)
            }
            Err(e) => {
                failed_files = Some(files);
                (VersionState::Error, Some(e))
            }
        };
        let mut records = self.records();
        if let Some(record) = records
            .get_mut(model)
            .and_then(|m| m.versions.get_mut(&version))
        {
            record.failed_files = failed_files;
            set_state(&self.observer, model, version, record, state, error);
        }
    }

    /// The state of a version whose load finished but that is no longer to be served
    /// (see [`Manager::load_version`]): END with `why`, or, when a version of the
    /// same number serves (its files changed, or another directory names it now, and
    /// this was their new load), AVAILABLE still; the reconcile decides whether that
    /// one goes.
    fn discard_loaded(
        &self,
        model: &str,
        version: u64,
        why: String,
    ) -> (VersionState, Option<String>) {
        tracing::info!(model, version, "loaded but not made available: {why}");
        let serves = self
            .serving()
            .models
            .get(model)
            .is_some_and(|m| m.versions.contains_key(&version));
        if serves {
            (VersionState::Available, None)
        } else {
            (
                VersionState::End,
                Some(format!("loaded but not made available: {why}")),
            )
        }
    }

    /// Stops serving every version of a model. Versions still held by requests stay
    /// visible as UNLOADING until the last request finishes, then END.
    pub fn unload_model(&self, model: &str) {
        let versions: Vec<u64> = self
            .serving()
            .models
            .get(model)
            .map(|m| m.versions.keys().copied().collect())
            .unwrap_or_default();
        self.mark_unloading(model, &versions);
        self.publish(|map| {
            map.models.remove(model);
        });
        let mut records = self.records();
        if let Some(record) = records.get_mut(model) {
            // A model that is unloaded is forgotten, except versions still held by
            // requests (UNLOADING until the last one finishes) or being loaded.
            record
                .versions
                .retain(|_, r| matches!(r.state, VersionState::Unloading | VersionState::Loading));
            record.labels.clear();
            record.label_errors.clear();
            record.unavailable_labels.clear();
            record.config_error = None;
            record.policy_warning = None;
            record.config_in_force = None;
            if record.versions.is_empty() {
                records.remove(model);
            }
        }
    }

    /// Marks versions UNLOADING *before* they are unpublished, so that the Drop of
    /// the last handle, wherever it happens, finds them UNLOADING and marks END.
    fn mark_unloading(&self, model: &str, versions: &[u64]) {
        let mut records = self.records();
        let Some(record) = records.get_mut(model) else {
            return;
        };
        for v in versions {
            if let Some(r) = record.versions.get_mut(v) {
                if r.state == VersionState::Available {
                    set_state(&self.observer, model, *v, r, VersionState::Unloading, None);
                }
            }
        }
    }

    /// Applies `change` to a copy of the serving map and publishes it atomically.
    fn publish(&self, change: impl FnOnce(&mut ServingMap)) {
        let _writer = self.publish_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = ServingMap::clone(&self.serving.load());
        change(&mut next);
        next.models
            .retain(|_, m| !m.versions.is_empty() || !m.labels.is_empty());
        self.serving.store(Arc::new(next));
    }
}

/// The content fingerprint of a loaded version's files (`cache::key::fingerprint`),
/// only while they are still the files it loaded (`files`, their identity read just
/// before the load): the fingerprint, in every key of the version's cached answers,
/// must describe the model that answers. Files replaced in place after the load (which
/// only an explicit reload loads) would otherwise key the old model's answers under
/// the new files' fingerprint, and the reloaded version would answer from them.
fn fingerprint_loaded(
    dir: &Path,
    files: &crate::repository::VersionFiles,
    settings: &str,
) -> Result<[u8; 32], String> {
    let changed = || {
        "its files changed since it loaded (an explicit reload loads them, and caches \
         the new version's answers)"
            .to_string()
    };
    if crate::repository::version_files(dir) != *files {
        return Err(changed());
    }
    let content = crate::cache::key::fingerprint(dir, settings)
        .map_err(|e| format!("cannot read its files: {e}"))?;
    if crate::repository::version_files(dir) != *files {
        return Err(changed());
    }
    Ok(content)
}

/// Whether two paths name the same directory (`models/x` and `/srv/models/x`, say).
pub(crate) fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

fn new_record() -> VersionRecord {
    VersionRecord {
        state: VersionState::Start,
        error: None,
        artifact: None,
        format: None,
        failed_files: None,
    }
}
