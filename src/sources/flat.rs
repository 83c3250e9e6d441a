//! The flat layout's side of [`Sources`]: model files directly in the repository
//! root (`crate::flat`), found, settled and copied into their managed directories.

use super::*;

/// What the sources know of the flat files in the repository root (`crate::flat`).
/// Held for a whole sync (reads and copies included) so that two syncs never
/// overlap; read by nothing else.
#[derive(Default)]
pub(super) struct FlatState {
    /// Each root file's stat at the previous look: a file is taken once it is the
    /// same on two looks in a row (a file being written is left alone).
    previous: HashMap<String, FileStat>,
    /// What each root file holds, at the stat it was read at, so that an unchanged
    /// file is read once: `None` when it is no model artifact.
    kinds: HashMap<String, (FileStat, Option<ArtifactFormat>)>,
    /// The stat of each flat model's file when its content last became (or was
    /// found equal to) the model's latest version: an equal stat needs no copy.
    synced: HashMap<String, FileStat>,
    /// The last line logged about each root file, so that an ignored file is
    /// logged once, not on every poll.
    logged: HashMap<String, String>,
}

/// The flat models found by the last sync, for `model_dirs` and status: small and
/// only ever locked briefly.
#[derive(Default, Clone)]
pub(super) struct FlatModels {
    /// Model name → the root file it is served from.
    pub(super) files: BTreeMap<String, String>,
    /// Model name → why a flat file of that name is ignored (a model directory of
    /// the same name).
    pub(super) conflicts: BTreeMap<String, String>,
}

/// How a sync of the flat files treats a file it has not seen settle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum FlatSync<'a> {
    /// A watcher poll: a file is taken once unchanged since the previous poll.
    Poll,
    /// Start-up or a reload of every model: a file never seen before is taken as
    /// complete (as a model directory is at start-up); one seen changing since
    /// the previous poll waits for the next.
    All,
    /// An explicit reload of this model, whose lock the caller holds: its file is
    /// taken as complete (the old clients replace the file, then ask for a reload).
    One(&'a str),
}

impl Sources {
    /// The root file a flat model is served from, when `name` is one (and no model
    /// config list is in force).
    pub fn flat_file(&self, name: &str) -> Option<String> {
        if self.config_list().is_some() || self.root.join(name).is_dir() {
            return None;
        }
        guard(&self.flat_models).files.get(name).cloned()
    }

    /// Whether `file_name` names a file directly in the repository root that the
    /// flat layout could serve (`reload_model?modelname=lr_iris.model` before the
    /// watcher has seen the file).
    pub fn is_flat_candidate(&self, file_name: &str) -> bool {
        self.config_list().is_none()
            && is_valid_model_name(file_name)
            && !crate::flat::is_ignored_name(file_name)
            && self.root.join(file_name).is_file()
    }

    /// A delete's first step for a flat model: its file in the root goes (so no
    /// sync can take it again), or nothing changes. Blocking.
    pub(super) fn retire_flat_locked(
        &self,
        name: &str,
        file: &str,
    ) -> Result<super::Retired, SourcesError> {
        let path = self.root.join(file);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(model = name, path = %path.display(), error = %e, "cannot delete");
                return Err(SourcesError::Io(format!(
                    "cannot delete model {name:?}: cannot remove its file {file:?}: {e}"
                )));
            }
        }
        guard(&self.flat_models).files.remove(name);
        Ok(super::Retired::Flat)
    }

    /// The end of a flat model's delete: its managed copies go. Blocking.
    pub(super) fn forget_flat(&self, name: &str) {
        let managed = self.managed_dir(name);
        if managed.exists() {
            // Out of sight in one step, as for a model directory.
            let trash = super::trash_in(managed.parent().unwrap_or(&self.root));
            let removed =
                std::fs::rename(&managed, &trash).and_then(|()| std::fs::remove_dir_all(&trash));
            if let Err(e) = removed {
                tracing::warn!(
                    model = name,
                    "cannot remove the copies in {}: {e}",
                    managed.display()
                );
            }
        }
        tracing::info!(model = name, "flat model deleted");
    }

    /// Brings the flat models in line with the files directly in the repository
    /// root (`crate::flat`; `mode` says which files count as complete): finds which
    /// files are model artifacts, copies a settled new content into its model's
    /// managed directory as the next version and, on a poll, reconciles that model
    /// at once. Skips stopped and busy models, except in [`FlatSync::One`] whose
    /// caller holds the model's lock. Blocking.
    pub(super) fn sync_flat(&self, mode: FlatSync<'_>) {
        if self.config_list().is_some() {
            // The list names every model: the root's files are not served.
            *guard(&self.flat_models) = FlatModels::default();
            return;
        }
        let only = match mode {
            FlatSync::One(name) => Some(name),
            FlatSync::Poll | FlatSync::All => None,
        };
        let mut state = guard(&self.flat);
        let files = match crate::flat::root_files(&self.root) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(
                    "cannot list the repository root {}: {e}",
                    self.root.display()
                );
                return;
            }
        };
        let present: HashSet<String> = files.iter().map(|f| f.file_name.clone()).collect();

        // Whether each file is settled and what it holds (`None`: not read yet),
        // grouped by the model it would serve.
        type Seen = (RootFile, bool, Option<Option<ArtifactFormat>>);
        let mut groups: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
        for file in files {
            let model = crate::flat::model_name(&file.file_name).to_string();
            if only.is_some_and(|o| o != model) {
                continue;
            }
            let previous = state.previous.insert(file.file_name.clone(), file.stat);
            let settled = match mode {
                FlatSync::Poll => previous == Some(file.stat),
                FlatSync::All => previous.is_none_or(|p| p == file.stat),
                FlatSync::One(_) => true,
            };
            let kind = match state.kinds.get(&file.file_name) {
                Some((stat, kind)) if *stat == file.stat => Some(*kind),
                _ if settled => match sniff_file(&file.path) {
                    Ok(kind) => {
                        state
                            .kinds
                            .insert(file.file_name.clone(), (file.stat, kind));
                        Some(kind)
                    }
                    Err(e) => {
                        let line = format!("cannot read {}: {e}", file.path.display());
                        log_once(&mut state.logged, &file.file_name, line);
                        None
                    }
                },
                _ => None,
            };
            groups.entry(model).or_default().push((file, settled, kind));
        }
        let mut models = guard(&self.flat_models).clone();
        if only.is_none() {
            state.previous.retain(|f, _| present.contains(f));
            state.kinds.retain(|f, _| present.contains(f));
            state.logged.retain(|f, _| present.contains(f));
            models.files.retain(|m, _| groups.contains_key(m));
            models.conflicts.retain(|m, _| groups.contains_key(m));
            state.synced.retain(|m, _| groups.contains_key(m));
        }

        let mut to_copy: Vec<(String, RootFile, ArtifactFormat)> = Vec::new();
        for (model, group) in groups {
            let file_names = || {
                group
                    .iter()
                    .map(|(f, ..)| f.file_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if !is_valid_model_name(&model) {
                for (f, ..) in &group {
                    let line = format!(
                        "{} in the model repository is ignored: {model:?} is not a valid model name",
                        f.file_name
                    );
                    log_once(&mut state.logged, &f.file_name, line);
                }
                continue;
            }
            if self.root.join(&model).is_dir() {
                let message = format!(
                    "the flat model file {} is ignored: the model directory {model}/ has the same name",
                    file_names()
                );
                for (f, ..) in &group {
                    log_once(&mut state.logged, &f.file_name, message.clone());
                }
                models.files.remove(&model);
                models.conflicts.insert(model, message);
                continue;
            }
            models.conflicts.remove(&model);
            for (f, _, kind) in &group {
                if *kind == Some(None) {
                    let line = format!(
                        "{} in the model repository is ignored: it is not a model file (expected {})",
                        f.file_name,
                        crate::backends::format::EXPECTED_FORMATS
                    );
                    log_once(&mut state.logged, &f.file_name, line);
                }
            }
            let current = models.files.get(&model).cloned();
            let chosen = match group
                .iter()
                .find(|(f, ..)| Some(&f.file_name) == current.as_ref())
            {
                Some(served) => served,
                None => {
                    let artifacts: Vec<&Seen> = group
                        .iter()
                        .filter(|(.., kind)| matches!(kind, Some(Some(_))))
                        .collect();
                    let pending = group.iter().any(|(.., kind)| kind.is_none());
                    match artifacts.as_slice() {
                        [one] if !pending => *one,
                        [] | [_] => continue, // nothing, or wait for the others to settle
                        _ => {
                            let line = format!(
                                "the model files {} would all be model {model:?}; none is served                                  until only one is left",
                                file_names()
                            );
                            for (f, ..) in &group {
                                log_once(&mut state.logged, &f.file_name, line.clone());
                            }
                            continue;
                        }
                    }
                }
            };
            let (file, settled, kind) = chosen;
            for (other, _, other_kind) in &group {
                if other.file_name != file.file_name && matches!(other_kind, Some(Some(_))) {
                    let line = format!(
                        "{} in the model repository is ignored: model {model:?} is served from {}",
                        other.file_name, file.file_name
                    );
                    log_once(&mut state.logged, &other.file_name, line);
                }
            }
            models.files.insert(model.clone(), file.file_name.clone());
            let Some(Some(format)) = kind else {
                continue; // not read yet, or (logged above) no longer a model file
            };
            if *settled && state.synced.get(&model) != Some(&file.stat) {
                to_copy.push((model, file.clone(), *format));
            }
        }
        *guard(&self.flat_models) = models;

        for (model, file, format) in to_copy {
            let _lock = match mode {
                FlatSync::One(_) => None, // the caller holds it
                FlatSync::Poll | FlatSync::All => {
                    let Ok(lock) = self.model_lock(&model).try_acquire_owned() else {
                        continue; // busy: the next poll
                    };
                    if self.held_back(&model) {
                        continue; // stopped: taken when it is reloaded
                    }
                    Some(lock)
                }
            };
            match crate::flat::looks_complete(&file.path, format) {
                Ok(true) => {}
                Ok(false) => {
                    let line = format!(
                        "{} looks cut short (a pickle that does not end with its STOP \
                         opcode); it is taken once complete",
                        file.file_name
                    );
                    log_once(&mut state.logged, &file.file_name, line);
                    continue;
                }
                Err(e) => {
                    let line = format!("cannot read {}: {e}", file.path.display());
                    log_once(&mut state.logged, &file.file_name, line);
                    continue;
                }
            }
            let managed = self.managed_dir(&model);
            match crate::flat::materialise(&file.path, file.stat, format, &managed) {
                Ok(Materialised::New(version)) => {
                    tracing::info!(
                        model = %model,
                        file = %file.file_name,
                        version,
                        "a new content of a flat model file becomes version {version}"
                    );
                    state.synced.insert(model.clone(), file.stat);
                    if mode == FlatSync::Poll {
                        let dir = ModelDir {
                            dir: managed.clone(),
                            listed: None,
                        };
                        self.reconcile_now(&model, &dir);
                    }
                    let serving: BTreeSet<u64> = self
                        .manager
                        .model_record(&model)
                        .iter()
                        .flat_map(|r| r.versions.iter())
                        .filter(|(_, v)| {
                            matches!(v.state, VersionState::Available | VersionState::Loading)
                        })
                        .map(|(k, _)| *k)
                        .collect();
                    crate::flat::prune(&managed, crate::flat::VERSIONS_KEPT, &serving);
                }
                Ok(Materialised::Unchanged(_)) => {
                    state.synced.insert(model, file.stat);
                }
                Ok(Materialised::Unsettled) => {
                    tracing::debug!(model = %model, file = %file.file_name, "flat model file changed while copied; next poll");
                }
                Err(e) => {
                    let line = format!(
                        "cannot copy the flat model file {} to {}: {e}",
                        file.file_name,
                        managed.display()
                    );
                    log_once(&mut state.logged, &file.file_name, line);
                }
            }
        }
    }
}

/// Logs a line about a root file unless it is the last line logged about it.
fn log_once(logged: &mut HashMap<String, String>, file_name: &str, line: String) {
    if logged.get(file_name) != Some(&line) {
        tracing::warn!("{line}");
        logged.insert(file_name.to_string(), line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_files_are_models_by_stem_unless_ambiguous_hidden_or_shadowed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let sources = Sources::new(
            Arc::new(Manager::new(crate::backends::BackendOptions::default())),
            root.to_path_buf(),
        );
        // The smallest pickle: protocol 4, the int 1, STOP.
        let pickle = |name: &str, n: u8| std::fs::write(root.join(name), [0x80, 4, b'K', n, b'.']);
        pickle("a.model", 1).unwrap();
        pickle("b.model", 1).unwrap();
        pickle("b.pkl", 2).unwrap(); // the same model twice: neither
        pickle(".c.model", 1).unwrap(); // hidden
        pickle("d.model.tmp", 1).unwrap(); // a temporary name
        pickle("e f.model", 1).unwrap(); // no valid model name
        std::fs::write(root.join("README.txt"), "not a model\n").unwrap();
        std::fs::create_dir_all(root.join("g/1")).unwrap();
        pickle("g/1/model.pkl", 1).unwrap();
        pickle("g.model", 2).unwrap(); // the directory wins
        pickle("cut.model", 1).unwrap();
        std::fs::write(root.join("cut.model"), [0x80, 4, b'K']).unwrap(); // no STOP

        sources.sync_flat(FlatSync::All);
        let dirs = sources.model_dirs();
        assert_eq!(dirs.keys().collect::<Vec<_>>(), ["a", "g"]);
        assert_eq!(dirs["a"].dir, root.join(".ferroserve/flat/a"));
        assert_eq!(dirs["g"].dir, root.join("g"));
        assert!(root.join(".ferroserve/flat/a/1/model.pkl").is_file());
        let g = sources
            .describe()
            .into_iter()
            .find(|m| m.name == "g")
            .unwrap();
        assert!(g.flat_conflict.unwrap().contains("g.model"));
        assert_eq!(sources.flat_file("a").as_deref(), Some("a.model"));

        // One of the two files goes: the other one is served.
        std::fs::remove_file(root.join("b.pkl")).unwrap();
        sources.sync_flat(FlatSync::Poll);
        assert!(sources.model_dirs().contains_key("b"));
        // A rewritten file is taken on the poll after it settles, as version 2.
        pickle("a.model", 7).unwrap();
        std::fs::File::open(root.join("a.model"))
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        sources.sync_flat(FlatSync::Poll);
        assert_eq!(
            crate::flat::versions(&root.join(".ferroserve/flat/a")).len(),
            1
        );
        sources.sync_flat(FlatSync::Poll);
        assert_eq!(
            crate::flat::versions(&root.join(".ferroserve/flat/a")),
            BTreeSet::from([1, 2])
        );
        assert!(
            !sources.model_dirs().contains_key("cut"),
            "never taken cut short"
        );
    }
}
