//! The repository watch of [`Sources`]: each poll's view of every model directory
//! (fingerprints), what has settled since the previous poll, the reconcile of what
//! changed, and the sweep of stale staging directories.

use super::*;

/// Staging directories older than this that no operation of this process holds are
/// debris (a crash, or a process sharing the repository that died): the watcher
/// removes them. Younger ones may belong to another process still writing.
pub const STAGING_GRACE: Duration = Duration::from_secs(10 * 60);
/// How long a deployed model's directory must stay gone (seen on two polls at least
/// this far apart) before the watcher ends its deployment: a directory moved away
/// and straight back, or replaced by a tool that removes before it copies, keeps
/// its worker, and an explicit `stop_deployment` or delete of a model whose
/// directory was just removed finds the deployment still there to end.
pub(super) const DEPLOYMENT_GONE_GRACE: Duration = Duration::from_secs(5);
/// How often the watcher looks for stale staging directories.
const STAGING_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// What the watcher saw of one model: its config file and every file of every version.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct ModelView {
    /// `config.toml`'s bytes; why it cannot be read (a FIFO, too large): a file
    /// that turns unreadable is a change, which the model's config error then tells.
    config: Option<Result<Vec<u8>, String>>,
    versions: BTreeMap<u64, Fingerprint>,
    /// The name of the directory that names each version (`2`, or `0002` when
    /// there is no shorter one): a version served from another directory is loaded
    /// again from this one once it has settled.
    names: BTreeMap<u64, String>,
    /// The model config list's entry the model was reconciled with (its policy and
    /// labels win over `config.toml`'s): a list put in force while the model was
    /// busy (a long load or warm-up, a reload) differs from the one its reconcile
    /// used, and the first poll after that reconciles it again with the list in
    /// force, so a list is never lost because it came at the wrong moment.
    listed: Option<ModelListEntry>,
}

/// What the watcher compares of one version between polls.
#[derive(Debug, Clone, PartialEq)]
enum Fingerprint {
    /// Name, size and modification time of every file under the version directory:
    /// for versions not yet handed to the manager (they may still be being copied),
    /// versions in ERROR (a fix copied over them is picked up), and versions served
    /// from another directory than the one that names them now (the manager loads
    /// them again from it).
    Files(Vec<(String, u64, Option<SystemTime>)>),
    /// Only the directory's modification time, for versions already reconciled:
    /// the watcher never has a version reloaded from the directory it serves from,
    /// so reading every file of every version on every poll would cost without
    /// changing anything.
    Dir(Option<SystemTime>),
}

#[derive(Default)]
pub(super) struct WatchState {
    /// The view of the previous poll, to tell which versions have settled.
    previous: ModelView,
    /// The view last handed to the manager; a poll reconciles only when it differs.
    pub(super) reconciled: Option<ModelView>,
}

/// One of the reconciles [`Sources::poll_in_background`] runs at once, counted in
/// `Sources::background_reconciles` until dropped (a panic included).
struct ReconcileSlot(Arc<Sources>);

impl ReconcileSlot {
    /// A slot, unless `limit` reconciles run already.
    fn take(sources: &Arc<Sources>, limit: usize) -> Option<ReconcileSlot> {
        sources
            .background_reconciles
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit.max(1)).then_some(n + 1)
            })
            .ok()
            .map(|_| ReconcileSlot(sources.clone()))
    }
}

impl Drop for ReconcileSlot {
    fn drop(&mut self) {
        self.0.background_reconciles.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Deepest directory level and most files looked at in one version directory.
const MAX_FINGERPRINT_DEPTH: usize = 4;
const MAX_FINGERPRINT_FILES: usize = 10_000;

impl Sources {
    /// One watcher poll, waiting for the reconciles it starts: as
    /// [`Sources::poll_in_background`], but each model whose settled view changed is
    /// reconciled before this returns (for tests and tools). Blocking.
    pub fn poll(&self) {
        let work = self.poll_work();
        self.for_each_bounded(&work, |(name, dir, candidate)| {
            let Ok(lock) = self.model_lock(name).try_acquire_owned() else {
                return; // busy (an upload, a reload): next poll
            };
            self.reconcile_settled(name, dir, candidate, lock);
        });
    }

    /// One watcher poll: reconciles each model whose settled view changed since it was
    /// last reconciled (a changed `config.toml` waits for a poll that reads it the same
    /// again), unloads models whose directory is gone, has the deployments of models
    /// gone for two polls ended, and now and then removes stale staging
    /// directories. Blocking, but not for the reconciles: each runs on a thread of
    /// its own, holding its model's lock, and the poll returns without waiting for
    /// them, so one model's long load or warm-up never holds up the others (its
    /// model stays busy, and is skipped, until it is done). At most
    /// `max_concurrent_loads` of them run at once; a model past that bound waits
    /// for a later poll.
    pub fn poll_in_background(self: &Arc<Self>) {
        let work = self.poll_work();
        let limit = self.manager.limits().max_concurrent_loads;
        for (name, dir, candidate) in work {
            let Some(slot) = ReconcileSlot::take(self, limit) else {
                break; // as many as may run: the rest at a later poll
            };
            let Ok(lock) = self.model_lock(&name).try_acquire_owned() else {
                continue; // busy (a load still running, an upload, a reload): next poll
            };
            let sources = self.clone();
            let spawned = std::thread::Builder::new()
                .name("ferroserve-reconcile".into())
                .spawn(move || {
                    let _slot = slot;
                    sources.reconcile_settled(&name, &dir, &candidate, lock);
                });
            if let Err(e) = spawned {
                // The slot and the lock went with the closure: the next poll tries again.
                tracing::error!("cannot start a thread to reconcile a model: {e}");
                break;
            }
        }
    }

    /// Reconciles one model with the settled view a poll took of it, under its lock
    /// (`_lock`), unless it was stopped or isolated since. Blocking.
    fn reconcile_settled(
        &self,
        name: &str,
        dir: &ModelDir,
        candidate: &ModelView,
        _lock: ModelGuard,
    ) {
        if self.held_back(name) {
            return;
        }
        let settled: BTreeSet<u64> = candidate.versions.keys().copied().collect();
        let reconciled = self.reconcile(name, dir, Some(&settled));
        if let Some(state) = guard(&self.watch).get_mut(name) {
            // Changed while it loaded: the next poll reconciles it again, whatever
            // its files look like then.
            state.reconciled = (!reconciled.disk_changed).then(|| candidate.clone());
        }
    }

    /// What one poll finds to do, after sweeping stale staging, syncing flat model
    /// files, unloading models gone and ending gone deployments: each model whose
    /// settled view differs from the one last reconciled, with that view.
    fn poll_work(&self) -> Vec<(String, ModelDir, ModelView)> {
        let sweep_due = {
            let mut last = guard(&self.last_sweep);
            let due = last.is_none_or(|t| t.elapsed() >= STAGING_SWEEP_INTERVAL);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if sweep_due {
            self.sweep_staging(STAGING_GRACE);
        }
        self.sync_flat(FlatSync::Poll);
        let dirs = self.model_dirs();
        self.unload_gone(&dirs);
        self.end_gone_deployments();
        self.forget_gone_stops();
        let mut work = Vec::new();
        for (name, dir) in dirs {
            if self.held_back(&name) {
                continue;
            }
            let record = self.manager.model_record(&name);
            let state_of = |v: &u64| {
                record
                    .as_ref()
                    .and_then(|r| r.versions.get(v))
                    .map(|r| r.state)
            };
            let serving: BTreeSet<u64> = record
                .iter()
                .flat_map(|r| r.versions.iter())
                .filter(|(_, v)| matches!(v.state, VersionState::Available | VersionState::Loading))
                .map(|(k, _)| *k)
                .collect();
            let known: BTreeSet<u64> = guard(&self.watch)
                .get(&name)
                .and_then(|w| w.reconciled.as_ref())
                .map(|r| r.versions.keys().copied().collect())
                .unwrap_or_default();
            // Every file is read only for versions the manager has not had yet and
            // versions that failed to load.
            let mut seen = observe(&dir.dir, |v| {
                !known.contains(&v) || state_of(&v) == Some(VersionState::Error)
            });
            // Served versions loaded from another directory than the one that names
            // them now (`2/` came beside their `0002/`, or their directory went while
            // another names them): every file of the named one is read, as for a
            // new version, since the manager loads them again from it.
            let moved: BTreeSet<u64> = {
                let serving_map = self.manager.serving();
                let served = serving_map.models.get(&name);
                seen.names
                    .iter()
                    .filter(|(v, n)| {
                        served
                            .and_then(|m| m.versions.get(v))
                            .is_some_and(|h| !crate::manager::same_dir(h.dir(), &dir.dir.join(n)))
                    })
                    .map(|(v, _)| *v)
                    .collect()
            };
            for v in &moved {
                if let (Some(print), Some(n)) = (seen.versions.get_mut(v), seen.names.get(v)) {
                    if matches!(print, Fingerprint::Dir(_)) {
                        *print = files_print(&dir.dir.join(n));
                    }
                }
            }
            let mut watch = guard(&self.watch);
            let state = watch.entry(name.clone()).or_default();
            let same_as_before = |v: &u64, f: &Fingerprint| {
                state.previous.versions.get(v) == Some(f)
                    && state.previous.names.get(v) == seen.names.get(v)
            };
            // Settled: unchanged since the previous poll, or already serving (a served
            // version is never unloaded because its files are being touched). A version
            // whose fingerprint changed kind was settled when it was reconciled.
            let settled: BTreeMap<u64, Fingerprint> = seen
                .versions
                .iter()
                .filter(|(v, f)| match state.previous.versions.get(v) {
                    Some(p) => same_as_before(v, f) || !same_kind(p, f) || serving.contains(v),
                    None => serving.contains(v),
                })
                .map(|(v, f)| (*v, f.clone()))
                .collect();
            // A moved version is loaded again only once the directory that names it
            // reads the same on two polls in a row: until then the model waits (a
            // served version must stay in what is handed over, or it would be
            // unloaded), and the version serves on from where it is.
            let moving = moved
                .iter()
                .any(|v| seen.versions.get(v).is_some_and(|f| !same_as_before(v, f)));
            let names = seen
                .names
                .iter()
                .filter(|(v, _)| settled.contains_key(v))
                .map(|(v, n)| (*v, n.clone()))
                .collect();
            // config.toml counts once it reads the same on two polls in a row, as a
            // version directory does: a file caught mid-write (emptied, then written
            // again) is never applied. The first view of a model (a new model, or
            // one a busy reload left unreconciled) takes it as it is.
            let config_settled = state.reconciled.is_none() || seen.config == state.previous.config;
            let candidate = ModelView {
                config: seen.config.clone(),
                versions: settled,
                names,
                listed: dir.listed.clone(),
            };
            state.previous = seen;
            if config_settled && !moving && state.reconciled.as_ref() != Some(&candidate) {
                work.push((name, dir, candidate));
            }
        }
        work
    }

    /// Removes staging directories (`.tmp-upload-*` in model directories,
    /// `.tmp-delete-*` and `.tmp-upload-*` in the root) that no operation of this
    /// process holds and that are at least `min_age` old; a root directory left
    /// empty by that (an upload of a new model that never finished) goes too.
    /// Blocking.
    pub(super) fn sweep_staging(&self, min_age: Duration) {
        let mut dirs: Vec<(PathBuf, bool)> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if is_staging_name(&name) {
                    self.remove_if_stale(&path, min_age);
                } else if !name.starts_with('.') && path.is_dir() {
                    dirs.push((path, true));
                }
            }
        }
        for m in self.config_list().iter().flat_map(|l| l.models.iter()) {
            dirs.push((m.base_path.clone(), false));
        }
        for (dir, under_root) in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut removed = false;
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".tmp-upload-")
                {
                    removed |= self.remove_if_stale(&entry.path(), min_age);
                }
            }
            if removed && under_root {
                let _ = std::fs::remove_dir(&dir); // only if nothing else is left
            }
        }
    }

    fn remove_if_stale(&self, path: &Path, min_age: Duration) -> bool {
        if guard(&self.staging).contains(path) {
            return false;
        }
        let age = std::fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if age < min_age {
            return false;
        }
        let removed = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) => {
                tracing::info!("removed stale staging {}", path.display());
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::warn!("cannot remove stale staging {}: {e}", path.display());
                false
            }
        }
    }

    /// Reconciles a model with everything on disk now, and records what was seen so
    /// the watcher does not redo it. The caller holds the model's lock.
    pub(super) fn reconcile_now(&self, name: &str, dir: &ModelDir) {
        let seen = ModelView {
            listed: dir.listed.clone(),
            ..observe(&dir.dir, |_| true)
        };
        let reconciled = self.reconcile(name, dir, None);
        guard(&self.watch).insert(
            name.to_string(),
            WatchState {
                previous: seen.clone(),
                // Changed while it loaded: the next poll reconciles it again.
                reconciled: (!reconciled.disk_changed).then_some(seen),
            },
        );
    }

    /// Unloads models the manager serves whose directory is gone. A busy model is
    /// left for the next poll or reload. `dirs` was listed before the locks were
    /// taken: a model uploaded (its directory made, loaded, its lock let go) since
    /// is not in it, so what is gone is listed again under the locks, and only a
    /// model gone in both listings is unloaded.
    pub(super) fn unload_gone(&self, dirs: &BTreeMap<String, ModelDir>) {
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
        let held: Vec<(String, ModelGuard)> = known
            .into_iter()
            .filter_map(|name| {
                let lock = self.model_lock(&name).try_acquire_owned().ok()?;
                Some((name, lock))
            })
            .collect();
        if held.is_empty() {
            return;
        }
        let now = self.model_dirs();
        for (name, _lock) in held {
            if now.contains_key(&name) {
                continue;
            }
            self.manager.unload_model(&name);
            guard(&self.watch).remove(&name);
        }
    }

    /// Hands the deployments of models gone from the repository (no deployable
    /// directory: removed by hand, or by a delete on another server sharing the
    /// repository) to [`Sources::on_deployment_gone`]'s hook, each with its lock:
    /// only a model found gone on two polls in a row at least
    /// [`DEPLOYMENT_GONE_GRACE`] apart, only when its lock is free (a busy one, an
    /// upload or a delete of it under way, waits for a later poll), and only if,
    /// under the lock, it is deployed and gone still.
    fn end_gone_deployments(&self) {
        let Some(end) = self.deployment_gone.get() else {
            return;
        };
        let deployed: Vec<String> = guard(&self.isolated).iter().cloned().collect();
        let gone_now: Vec<String> = deployed
            .into_iter()
            .filter(|name| self.deployment_is_gone(name))
            .collect();
        for name in gone_for_the_grace(&self.gone_deployments, gone_now) {
            let Ok(lock) = self.model_lock(&name).try_acquire_owned() else {
                continue; // busy: a later poll
            };
            if self.is_isolated(&name) && self.deployment_is_gone(&name) {
                end(name, lock);
            }
        }
    }

    /// Whether a deployed model has no directory it could be served from (the test
    /// of `api::deploy::gone_from_repository`).
    fn deployment_is_gone(&self, name: &str) -> bool {
        matches!(self.deployable_dir(name), Err(SourcesError::NotFound(_)))
    }
}

/// Of `gone_now`, the models found gone by this poll, those already found gone
/// by the previous one at least [`DEPLOYMENT_GONE_GRACE`] ago; `seen` keeps when a
/// poll first found each model gone, and forgets those found back.
pub(super) fn gone_for_the_grace(
    seen: &Mutex<BTreeMap<String, Instant>>,
    gone_now: Vec<String>,
) -> Vec<String> {
    let mut gone = guard(seen);
    let seen_before = std::mem::take(&mut *gone);
    let now = Instant::now();
    gone_now
        .into_iter()
        .filter(|name| {
            let since = seen_before.get(name).copied();
            gone.insert(name.clone(), since.unwrap_or(now));
            since.is_some_and(|t| now.duration_since(t) >= DEPLOYMENT_GONE_GRACE)
        })
        .collect()
}

/// Staging made by an upload or a delete (a crash may leave them behind).
fn is_staging_name(name: &str) -> bool {
    name.starts_with(".tmp-upload-") || name.starts_with(".tmp-delete-")
}

/// Reads what the watcher compares between polls; `files(v)` says whether every file
/// of version `v` is read, or only its directory. Unreadable parts read as absent.
fn observe(model_dir: &Path, files: impl Fn(u64) -> bool) -> ModelView {
    // Only a regular file, bounded: a FIFO or a device named config.toml must not
    // hold the watcher (and every model's updates) on one read.
    let config = match crate::regular_file::read(
        &model_dir.join(ModelConfig::FILE_NAME),
        ModelConfig::MAX_FILE_BYTES,
    ) {
        Ok(bytes) => Some(Ok(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(e.to_string())),
    };
    let mut versions = BTreeMap::new();
    // The directory that serves each version (`repository::scan_model` chooses the
    // same way when two names give one number).
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(model_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let Some(version) = crate::repository::version_of_dir(name) else {
                continue;
            };
            if names
                .get(&version)
                .is_some_and(|current| !crate::repository::prefer_version_dir(name, current))
            {
                continue;
            }
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            let print = if files(version) {
                files_print(&entry.path())
            } else {
                Fingerprint::Dir(meta.modified().ok())
            };
            names.insert(version, name.to_string());
            versions.insert(version, print);
        }
    }
    ModelView {
        config,
        versions,
        names,
        listed: None,
    }
}

/// The fingerprint of every file of a version directory.
fn files_print(dir: &Path) -> Fingerprint {
    let mut list = Vec::new();
    fingerprint(dir, &mut list);
    list.sort();
    Fingerprint::Files(list)
}

fn same_kind(a: &Fingerprint, b: &Fingerprint) -> bool {
    matches!(
        (a, b),
        (Fingerprint::Files(_), Fingerprint::Files(_)) | (Fingerprint::Dir(_), Fingerprint::Dir(_))
    )
}

/// The path, size (0 for a directory) and modification time of every entry under
/// `dir`, at most `MAX_FINGERPRINT_FILES` of them, `MAX_FINGERPRINT_DEPTH` levels deep.
fn fingerprint(dir: &Path, out: &mut Vec<(String, u64, Option<SystemTime>)>) {
    crate::repository::walk_entries(dir, MAX_FINGERPRINT_DEPTH, &mut |name, meta| {
        if out.len() >= MAX_FINGERPRINT_FILES {
            return false;
        }
        let size = if meta.is_dir() { 0 } else { meta.len() };
        out.push((name.to_string(), size, meta.modified().ok()));
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_sweeps_only_old_staging_that_no_operation_holds() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let sources = Sources::new(
            Arc::new(Manager::new(crate::backends::BackendOptions::default())),
            root.to_path_buf(),
        );
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let staging = |path: &str, old: bool| {
            let p = root.join(path);
            std::fs::create_dir_all(p.join("sub")).unwrap();
            if old {
                std::fs::File::open(&p)
                    .unwrap()
                    .set_modified(an_hour_ago)
                    .unwrap();
            }
            p
        };
        std::fs::create_dir_all(root.join("m/1")).unwrap();
        let old = staging("m/.tmp-upload-1-1", true);
        let young = staging("m/.tmp-upload-1-2", false);
        let held = staging("m/.tmp-upload-1-3", true);
        let trash = staging(".tmp-delete-x-1", true);
        let ghost = staging("ghost/.tmp-upload-1-4", true);
        let other = staging("m/.tmp-copy-1", true);
        sources.staging_started(&held);

        sources.sweep_staging(STAGING_GRACE);
        assert!(!old.exists() && !trash.exists() && !ghost.exists());
        assert!(
            !root.join("ghost").exists(),
            "a directory of debris only goes too"
        );
        assert!(
            young.exists(),
            "may belong to another process still writing"
        );
        assert!(held.exists(), "an upload of this process is writing it");
        assert!(other.exists(), "not staging ferroserve makes");
        assert!(root.join("m/1").exists());

        // At start-up, age does not matter; what this process holds still does.
        sources.sweep_staging(Duration::ZERO);
        assert!(!young.exists() && held.exists());
    }

    /// The watcher ends a deployment only once its model has been gone for
    /// [`DEPLOYMENT_GONE_GRACE`] (a directory back in between starts it again),
    /// never while its lock is held, and hands the hook the lock, held.
    #[test]
    fn a_deployment_gone_from_the_repository_ends_after_its_grace_under_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let sources = Sources::new(
            Arc::new(Manager::new(crate::backends::BackendOptions::default())),
            root.to_path_buf(),
        );
        let ended: Arc<Mutex<Vec<(String, ModelGuard)>>> = Arc::default();
        {
            let ended = ended.clone();
            sources.on_deployment_gone(Box::new(move |name, lock| {
                guard(&ended).push((name, lock));
            }));
        }
        std::fs::create_dir_all(root.join("m/1")).unwrap();
        let lock = sources.model_lock("m").try_acquire_owned().unwrap();
        sources
            .isolate_locked("m", Deployment::default(), &lock)
            .unwrap();
        drop(lock);
        let backdate = |sources: &Sources| {
            let long_ago = Instant::now()
                .checked_sub(DEPLOYMENT_GONE_GRACE + Duration::from_secs(1))
                .unwrap();
            for since in guard(&sources.gone_deployments).values_mut() {
                *since = long_ago;
            }
        };

        std::fs::remove_dir_all(root.join("m")).unwrap();
        sources.end_gone_deployments();
        sources.end_gone_deployments();
        assert!(guard(&ended).is_empty(), "gone for an instant only");
        // Back, then gone again: its grace starts again.
        backdate(&sources);
        std::fs::create_dir_all(root.join("m/1")).unwrap();
        sources.end_gone_deployments();
        std::fs::remove_dir_all(root.join("m")).unwrap();
        sources.end_gone_deployments();
        sources.end_gone_deployments();
        assert!(guard(&ended).is_empty(), "its grace started again");

        backdate(&sources);
        let busy = sources.model_lock("m").try_acquire_owned().unwrap();
        sources.end_gone_deployments();
        assert!(guard(&ended).is_empty(), "an operation holds the model");
        drop(busy);
        sources.end_gone_deployments();
        let names: Vec<String> = guard(&ended).iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, ["m"]);
        assert!(sources.is_busy("m"), "the hook holds the model's lock");
        sources.end_gone_deployments();
        assert_eq!(guard(&ended).len(), 1, "its end is under way");
    }

    #[test]
    fn fingerprints_change_with_size_and_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("1");
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join("model.onnx"), b"abc").unwrap();
        let all = |_| true;
        let a = observe(dir.path(), all);
        assert_eq!(a, observe(dir.path(), all), "stable when nothing changes");
        std::fs::write(v.join("model.onnx"), b"abcd").unwrap();
        let b = observe(dir.path(), all);
        assert_ne!(a, b);
        std::fs::write(v.join("extra"), b"").unwrap();
        assert_ne!(b, observe(dir.path(), all));
        std::fs::create_dir_all(dir.path().join(".tmp-upload-1")).unwrap();
        std::fs::create_dir_all(dir.path().join("latest")).unwrap();
        assert_eq!(
            observe(dir.path(), all).versions.len(),
            1,
            "only version dirs"
        );
        // A reconciled version is looked at as a directory only.
        let dir_only = observe(dir.path(), |_| false);
        assert!(matches!(dir_only.versions[&1], Fingerprint::Dir(_)));
    }
}
