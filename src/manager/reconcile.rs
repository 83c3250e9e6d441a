//! Reconciling a model: what its policy asks for against what serves (see
//! [`Manager::reconcile_model`]), in steps: the config to apply, the versions
//! chosen, the loads, then what goes and the labels, published at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::labels::{effective_labels, why_not_available};
use super::{new_record, same_dir, set_state, LoadedVersion, Manager, StillWanted, VersionState};
use crate::backends::ARTIFACT_NAMES;
use crate::model_config::{ModelConfig, VersionPolicy};
use crate::repository::{ModelOnDisk, VersionOnDisk};

impl Manager {
    /// Loads the versions the model's policy asks for that are not loaded yet, then
    /// unloads those it no longer asks for, provided at least one asked-for version
    /// is available (so a failed new version leaves the old one serving). Under a
    /// `latest` policy, when none of them is available and nothing of the model
    /// serves (a restart with a broken newest version), the newest older version
    /// that loads serves instead (see `fall_back`).
    ///
    /// A model whose directory changed (a config file or gRPC `ReloadConfig` giving
    /// it another base path) has every version its policy asks for loaded from the
    /// new directory, replacing the one of the same number; what the old directory
    /// served goes, whether or not the new one loads: a version number names
    /// different files there.
    ///
    /// Loads take time (a warm-up, minutes for a large SavedModel), and `model` is
    /// the scan taken before them. As TF Serving's AspiredVersionsManager, a
    /// version no longer aspired is never made available, and the serving set only
    /// changes toward what is aspired now: once each load finishes, before it is
    /// published, and once more before anything is unloaded, `rescan` gives the
    /// model as it is now (its directory and the config in force: `config.toml`
    /// with what the caller puts over it), and what its policy asks for among the
    /// versions of `model` decides. A loaded version that is not asked for any more
    /// (its directory removed, the policy changed) is discarded, END with why; a
    /// version asked for now is never unloaded. If the re-scan fails, what serves
    /// keeps serving and nothing new is published. Versions that appeared since
    /// `model` was taken are left to the next reconcile (the watcher hands over
    /// only versions whose files have settled).
    pub fn reconcile_model(&self, model: &ModelOnDisk, rescan: &Rescan<'_>) -> Reconciled {
        let name = model.name.as_str();
        let Some((config, refused)) = self.config_to_apply(model) else {
            return Reconciled::default();
        };
        let with_artifact: Vec<u64> = model
            .versions
            .values()
            .filter(|v| v.artifact.is_some())
            .map(|v| v.version)
            .collect();
        let Selection {
            selected,
            aspired,
            warning: policy_warning,
            // What goes is decided on the selection once the loads are done.
            selects_none: _,
        } = Selection::of(&config, &with_artifact, self.limits.max_served_versions);
        // One snapshot of what serves now, for the sets below.
        let serving = self.serving();
        let served: Vec<(u64, &Arc<LoadedVersion>)> = serving
            .models
            .get(name)
            .map(|m| m.versions.iter().map(|(v, h)| (*v, h)).collect())
            .unwrap_or_default();
        // Versions served from this directory's own files, not to be loaded again.
        // One loaded from another directory (the model had another base path) is
        // loaded anew from this one, and goes whether or not that load works:
        // decided per version, so a reconcile that stopped early (a config error)
        // leaves nothing of the old directory behind once it runs whole.
        let from_here =
            |handle: &LoadedVersion| handle.dir.parent().is_some_and(|p| same_dir(p, &model.dir));
        let served_here: BTreeSet<u64> = served
            .iter()
            .filter(|(_, h)| from_here(h))
            .map(|(v, _)| *v)
            .collect();
        // Served versions whose files changed since they loaded (known only on an
        // explicit reload, which reads them): loaded again, and the new load replaces
        // the old one in one publish, as a new version would; until then, and if it
        // fails, the old one keeps serving.
        let changed: BTreeSet<u64> = served
            .iter()
            .filter(|(v, h)| {
                served_here.contains(v)
                    && aspired.contains(v)
                    && model.versions.get(v).is_some_and(|d| {
                        d.artifact.is_some() && d.files.as_ref().is_some_and(|f| *f != h.files)
                    })
            })
            .map(|(v, _)| *v)
            .collect();
        // Served versions whose directory is no longer the one the repository names
        // for their number (`2/` came beside the `0002/` they loaded from, or their
        // directory went while another names the number): loaded again from the
        // named one, swapped in as a changed version is, so that what serves is what
        // the repository says (and what a restart would load). The watcher hands a
        // model over only once the named directory has settled.
        let moved: BTreeMap<u64, (String, String)> = served
            .iter()
            .filter(|(v, _)| served_here.contains(v) && aspired.contains(v))
            .filter_map(|(v, h)| {
                let named = model.versions.get(v)?;
                (!same_dir(&h.dir, &named.dir))
                    .then(|| (*v, (dir_name(&h.dir), dir_name(&named.dir))))
            })
            .collect();
        // Let go of the snapshot: it holds the versions an unload waits for.
        drop(served);
        drop(serving);
        for v in &changed {
            tracing::info!(
                model = name,
                version = v,
                "files changed since the version loaded: loading it again"
            );
        }
        for (v, (from, to)) in &moved {
            tracing::info!(
                model = name,
                version = v,
                "directory {to:?} names version {v} now, not {from:?}, which it was \
                 loaded from: loading it again from {to:?}"
            );
        }
        let changed: BTreeSet<u64> = changed.into_iter().chain(moved.keys().copied()).collect();

        let to_load = self.mark_loading(
            model,
            &config,
            policy_warning,
            &aspired,
            &served_here,
            &changed,
        );
        // Whether the model changed under the loads (or could not be read again):
        // the caller reconciles it again, whatever its own view of it says.
        let disk_changed = AtomicBool::new(false);
        let aspired_now = || {
            let now = self.aspired_now(model, &config, rescan);
            match &now {
                Ok(now) if now.aspired == aspired => {}
                _ => disk_changed.store(true, Ordering::Relaxed),
            }
            now
        };
        let still_aspired = |v: u64| match aspired_now() {
            Ok(now) if now.aspired.contains(&v) => Ok(()),
            Ok(now) => Err(now.why_not(v, &config)),
            Err(()) => Err(RESCAN_FAILED.to_string()),
        };
        self.load_versions(name, &to_load, &config, &still_aspired);
        self.keep_changed_serving(name, &changed, &moved);

        // A fallback version is not aspired: only its directory must still be there.
        let still_on_disk = |v: u64| match aspired_now() {
            Ok(now) => now.on_disk(v),
            Err(()) => Err(RESCAN_FAILED.to_string()),
        };
        self.fall_back(name, model, &config, &aspired, &still_on_disk);

        // What goes is decided on what is aspired now, not on `aspired`: a version
        // that was to be replaced but is aspired again (the replacement's directory
        // went, the policy names it again) stays. Versions of another directory
        // go whatever is aspired, as before.
        let now = aspired_now();
        let to_unload: Vec<u64> = {
            let map = self.serving();
            let current = map.models.get(name);
            let mut going: BTreeSet<u64> = match &now {
                Ok(now) => {
                    let any_aspired_available =
                        current.is_some_and(|m| m.versions.keys().any(|v| now.aspired.contains(v)));
                    if any_aspired_available || now.selects_none {
                        current
                            .iter()
                            .flat_map(|m| m.versions.keys())
                            .filter(|v| !now.aspired.contains(v))
                            .copied()
                            .collect()
                    } else {
                        BTreeSet::new()
                    }
                }
                // Unknown what is aspired now: what serves keeps serving.
                Err(()) => BTreeSet::new(),
            };
            // Whatever another directory still serves (its load here failed, or
            // its number is not asked for).
            if let (Some(m), Ok(_)) = (current, &now) {
                going.extend(
                    m.versions
                        .iter()
                        .filter(|(_, h)| !from_here(h))
                        .map(|(v, _)| *v),
                );
            }
            going.into_iter().collect()
        };
        let (labels, label_errors, unavailable_labels) = {
            let map = self.serving();
            let current = map.models.get(name);
            let available: BTreeSet<u64> = current
                .map(|m| m.versions.keys().copied().collect())
                .unwrap_or_default();
            let available: BTreeSet<u64> = available
                .into_iter()
                .filter(|v| !to_unload.contains(v))
                .collect();
            let previous = current.map(|m| m.labels.clone()).unwrap_or_default();
            let records = self.records();
            let why_not = |v: u64| {
                why_not_available(v, model, &config, &selected, &aspired, records.get(name))
            };
            effective_labels(name, &config, &previous, &available, why_not)
        };
        for e in &label_errors {
            tracing::warn!(model = name, "{e}");
        }
        self.mark_unloading(name, &to_unload);
        self.publish(|map| {
            let entry = map.models.entry(name.to_string()).or_default();
            let serving = Arc::make_mut(entry);
            for v in &to_unload {
                serving.versions.remove(v);
            }
            // A deployment's or config.toml's timeout applies to the versions already
            // serving at once, not only to versions loaded from now on.
            // So do the other settings that need no reload (feature names and
            // defaults, input and output names, the row limit).
            for handle in serving.versions.values() {
                handle.set_timeout(config.timeout());
                handle.config.store(config.clone());
            }
            serving.labels = labels.clone();
            serving.config = config.clone();
        });
        // After publishing, so status never shows a label requests cannot follow yet.
        {
            let mut records = self.records();
            let record = records.entry(name.to_string()).or_default();
            record.labels = labels;
            record.label_errors = label_errors;
            record.unavailable_labels = unavailable_labels;
        }
        // What of the config in force does not fit the versions it now applies to.
        let misfit = self.config_misfit(name, &config);
        let error = match (refused, misfit) {
            (Some(r), Some(m)) => Some(format!("{r}; and the config in force: {m}")),
            (r, m) => r.or(m),
        };
        self.set_config_error(name, error);
        Reconciled {
            disk_changed: disk_changed.into_inner(),
        }
    }

    /// What `model`'s policy asks for now, from `rescan` (see
    /// [`Manager::reconcile_model`]): among the versions with a model file in
    /// `model`, those still on disk with one, under the config in force now (the
    /// reconcile's `config` when `config.toml` does not parse now, as the config in
    /// force stays then). `Err` when the model cannot be read (logged here: the
    /// error names server paths, which status never shows).
    fn aspired_now(
        &self,
        model: &ModelOnDisk,
        config: &Arc<ModelConfig>,
        rescan: &Rescan<'_>,
    ) -> Result<AspiredNow, ()> {
        let on_disk = rescan().map_err(|e| {
            tracing::warn!(
                model = model.name.as_str(),
                "cannot read the model again after loading its versions: {e}; what \
                 serves keeps serving"
            );
        })?;
        let config = match &on_disk.config {
            Ok(c) => Arc::new(c.clone()),
            Err(_) => config.clone(),
        };
        let has_artifact =
            |m: &ModelOnDisk, v: &u64| m.versions.get(v).is_some_and(|d| d.artifact.is_some());
        let with_artifact: Vec<u64> = model
            .versions
            .keys()
            .filter(|v| has_artifact(model, v) && has_artifact(&on_disk, v))
            .copied()
            .collect();
        let selection = Selection::of(&config, &with_artifact, self.limits.max_served_versions);
        Ok(AspiredNow {
            on_disk,
            policy: config.version_policy.clone(),
            aspired: selection.aspired,
            selects_none: selection.selects_none,
        })
    }

    /// The config to apply to `model`: its `config.toml`, or, when that cannot be
    /// used, the one in force before with why the file was refused (the versions
    /// served keep serving, and versions added meanwhile follow its policy). With
    /// none before (a config that fails at start), nothing serves until the file is
    /// fixed: `None`, the error set in status. Either way the error shows in status.
    fn config_to_apply(&self, model: &ModelOnDisk) -> Option<(Arc<ModelConfig>, Option<String>)> {
        let name = model.name.as_str();
        let e = match &model.config {
            Ok(c) => return Some((Arc::new(c.clone()), None)),
            Err(e) => e,
        };
        let in_force = {
            let mut records = self.records();
            let record = records.entry(name.to_string()).or_default();
            record.dir = model.dir.clone();
            record.config_in_force.clone()
        };
        tracing::debug!(model = name, path = e.path(), "{e}");
        match in_force {
            Some(c) => Some((c, Some(format!("{e}; the config in force before stays")))),
            None => {
                let error = format!("{e}; the model serves nothing until it is fixed");
                self.set_config_error(name, Some(error));
                None
            }
        }
    }

    /// Records the config in force and the policy's warning, sets versions without
    /// a model file to ERROR, and marks LOADING each asked-for version not served
    /// from this directory yet (or whose files `changed`): those it gives back are
    /// to load. A version already LOADING is another reconcile's.
    fn mark_loading(
        &self,
        model: &ModelOnDisk,
        config: &Arc<ModelConfig>,
        policy_warning: Option<String>,
        aspired: &BTreeSet<u64>,
        served_here: &BTreeSet<u64>,
        changed: &BTreeSet<u64>,
    ) -> Vec<(u64, PathBuf)> {
        let name = model.name.as_str();
        let mut records = self.records();
        let record = records.entry(name.to_string()).or_default();
        record.dir = model.dir.clone();
        record.config_in_force = Some(config.clone());
        if record.policy_warning != policy_warning {
            if let Some(w) = &policy_warning {
                tracing::warn!(model = name, "{w}");
            }
            record.policy_warning = policy_warning;
        }
        // Versions that ended and left the disk are forgotten, so that status
        // stays bounded however many versions come and go.
        record
            .versions
            .retain(|v, r| r.state != VersionState::End || model.versions.contains_key(v));
        // A version in ERROR whose directory left the disk ends, as a served one
        // does when its directory goes: nothing of it is left to fail (and status,
        // and whatever alerts on ERROR, would otherwise keep it forever). It is
        // forgotten with the other ended versions on a later reconcile.
        for (v, r) in record.versions.iter_mut() {
            if r.state == VersionState::Error && !model.present.contains(v) {
                set_state(&self.observer, name, *v, r, VersionState::End, None);
            }
        }
        for v in model.versions.values().filter(|v| v.artifact.is_none()) {
            if served_here.contains(&v.version) {
                continue;
            }
            let entry = record.versions.entry(v.version).or_insert_with(new_record);
            let error = no_artifact_error(v);
            set_state(
                &self.observer,
                name,
                v.version,
                entry,
                VersionState::Error,
                Some(error),
            );
        }
        let mut to_load = Vec::new();
        for &v in aspired {
            if served_here.contains(&v) && !changed.contains(&v) {
                continue;
            }
            let artifact = model.versions[&v].artifact.clone().expect("filtered above");
            let entry = record.versions.entry(v).or_insert_with(new_record);
            if entry.state == VersionState::Loading {
                continue; // another reconcile is loading it
            }
            entry.artifact = Some(artifact.clone());
            set_state(&self.observer, name, v, entry, VersionState::Loading, None);
            to_load.push((v, artifact));
        }
        to_load
    }

    /// Loads each version of `to_load`: a few loader threads take them in turn, and
    /// each load also takes one of the manager's load slots, which bound loads
    /// across every model.
    fn load_versions(
        &self,
        name: &str,
        to_load: &[(u64, PathBuf)],
        config: &Arc<ModelConfig>,
        still_wanted: &StillWanted<'_>,
    ) {
        let next = AtomicUsize::new(0);
        let loaders = to_load.len().min(self.limits.max_concurrent_loads);
        std::thread::scope(|s| {
            for _ in 0..loaders {
                s.spawn(|| {
                    while let Some((version, artifact)) =
                        to_load.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        let _slot = self.load_slots.acquire();
                        self.load_version(name, *version, artifact, config.clone(), still_wanted);
                    }
                });
            }
        });
    }

    /// A changed version whose new load failed still serves what it loaded
    /// before: AVAILABLE, with why its files (or the directory that names it now,
    /// for a `moved` one: its old directory's name, then the new one's) were not
    /// taken.
    fn keep_changed_serving(
        &self,
        name: &str,
        changed: &BTreeSet<u64>,
        moved: &BTreeMap<u64, (String, String)>,
    ) {
        if changed.is_empty() {
            return;
        }
        let map = self.serving();
        let mut records = self.records();
        if let Some(record) = records.get_mut(name) {
            for v in changed {
                let still_served = map
                    .models
                    .get(name)
                    .is_some_and(|m| m.versions.contains_key(v));
                if let Some(r) = record.versions.get_mut(v) {
                    if still_served && r.state == VersionState::Error {
                        let why = r.error.as_deref().unwrap_or("no reason recorded");
                        let error = match moved.get(v) {
                            Some((from, to)) => format!(
                                "directory {to:?} names this version now but loading it \
                                 failed, so the version keeps serving what it loaded from \
                                 {from:?}: {why}"
                            ),
                            None => format!(
                                "its files changed but loading them again failed, so it \
                                 keeps serving what it loaded before: {why}"
                            ),
                        };
                        set_state(
                            &self.observer,
                            name,
                            *v,
                            r,
                            VersionState::Available,
                            Some(error),
                        );
                    }
                }
            }
        }
    }
}

/// Gives the model as it is now, its `config.toml` with what the caller puts over
/// it (the model config list's entry in force, a deployment), for
/// [`Manager::reconcile_model`]'s checks once loads finish; `Err` (with why, which
/// may name server paths: it is only logged) when the model cannot be read.
/// Called from the loader threads.
pub type Rescan<'a> = dyn Fn() -> Result<ModelOnDisk, String> + Sync + 'a;

/// What [`Manager::reconcile_model`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct Reconciled {
    /// The model changed while its versions loaded (a version's directory went, the
    /// policy in force changed) or could not be read again: the caller reconciles
    /// it again even if its own view of the model has not changed since (a
    /// `config.toml` read mid-write may have discarded a version that is wanted).
    pub disk_changed: bool,
}

/// Why a version that loaded was not made available: the model could not be read
/// again (status names no server paths; the log has the error).
const RESCAN_FAILED: &str = "the model's directory could not be read again once it \
     loaded, so nothing new is made available; a later reconcile loads it again";

/// What a model's policy asks for now (see [`Manager::aspired_now`]).
struct AspiredNow {
    on_disk: ModelOnDisk,
    policy: VersionPolicy,
    aspired: BTreeSet<u64>,
    selects_none: bool,
}

impl AspiredNow {
    /// Whether version `v` is still on disk with a model file, or why not.
    fn on_disk(&self, v: u64) -> Result<(), String> {
        match self.on_disk.versions.get(&v) {
            None => Err("its directory was removed while it loaded".to_string()),
            Some(d) if d.artifact.is_none() => {
                Err("its model file was removed while it loaded".to_string())
            }
            Some(_) => Ok(()),
        }
    }

    /// Why version `v` is not aspired now (`loaded_with`: the config its reconcile
    /// started from).
    fn why_not(&self, v: u64, loaded_with: &ModelConfig) -> String {
        if let Err(why) = self.on_disk(v) {
            return why;
        }
        if self.policy != loaded_with.version_policy {
            format!(
                "the version policy in force now ({}) no longer names it",
                self.policy
            )
        } else {
            format!(
                "the version policy ({}) no longer names it among the versions on disk",
                self.policy
            )
        }
    }
}

/// The versions a model's policy chooses among those on disk with a model file.
#[derive(Debug, PartialEq)]
struct Selection {
    /// What the policy selects.
    selected: BTreeSet<u64>,
    /// What is served of it: the highest `max_served_versions`.
    aspired: BTreeSet<u64>,
    /// The cap cut the selection, or a `specific` policy names versions not on
    /// disk: said in status, and, when it names none that are, in every request's
    /// error.
    warning: Option<String>,
    /// Versions are on disk but the policy selects none: as TF Serving does, it
    /// serves none, and the versions served before are unloaded.
    selects_none: bool,
}

impl Selection {
    fn of(config: &ModelConfig, with_artifact: &[u64], cap: usize) -> Selection {
        let selected: BTreeSet<u64> = config
            .version_policy
            .select(with_artifact)
            .into_iter()
            .collect();
        let mut aspired = selected.clone();
        // The policy may ask for thousands of versions: the highest N are served.
        let asked = aspired.len();
        let mut policy_warning = (asked > cap).then(|| {
            aspired = aspired.iter().rev().take(cap).copied().collect();
            format!(
                "the version policy asks for {asked} versions; only the highest {cap} are \
             served (max_served_versions_per_model), from version {}",
                aspired.first().copied().unwrap_or_default()
            )
        });
        // A specific policy naming versions that are not on disk (with a model file):
        // said in status, and, when it names none that are, in every request's error.
        // As TF Serving does, a policy that selects no version on disk serves none:
        // the versions served before are unloaded (see `to_unload`).
        let policy_selects_none = !with_artifact.is_empty() && selected.is_empty();
        if let VersionPolicy::Specific(wanted) = &config.version_policy {
            let missing: Vec<u64> = wanted
                .iter()
                .filter(|v| !with_artifact.contains(v))
                .copied()
                .collect();
            if !missing.is_empty() || wanted.is_empty() {
                let named = if wanted.is_empty() {
                    "names no version".to_string()
                } else {
                    format!("names versions {missing:?}, which are not on disk with a model file")
                };
                let mut w = format!("the version policy ({}) {named}", config.version_policy);
                if policy_selects_none {
                    w.push_str(&format!(
                        "; it serves none of the versions on disk ({with_artifact:?})"
                    ));
                }
                policy_warning = Some(match policy_warning {
                    Some(cap_warning) => format!("{w}; {cap_warning}"),
                    None => w,
                });
            }
        }
        Selection {
            selected,
            aspired,
            warning: policy_warning,
            selects_none: policy_selects_none,
        }
    }
}

/// A version directory's own name, for messages (status bodies carry no server
/// paths).
fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Why a version directory without a known model file is in ERROR, named
/// relative to the model: status bodies carry no server paths.
fn no_artifact_error(v: &VersionOnDisk) -> String {
    if v.candidates.len() > 1 {
        format!(
            "no model artifact in version directory {}: it holds several \
             candidate files ({}) and none has a known name; keep one, or \
             name the model one of {}",
            v.version,
            v.candidates.join(", "),
            ARTIFACT_NAMES.join(", ")
        )
    } else {
        format!(
            "no model artifact in version directory {} (expected one of {}, a \
             SavedModel's saved_model.pb, or a single model file of any name)",
            v.version,
            ARTIFACT_NAMES.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(policy: VersionPolicy, on_disk: &[u64], cap: usize) -> Selection {
        let config = ModelConfig {
            version_policy: policy,
            ..ModelConfig::default()
        };
        Selection::of(&config, on_disk, cap)
    }

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn the_policy_chooses_and_the_cap_keeps_the_highest() {
        let s = select(VersionPolicy::Latest(2), &[1, 2, 3], 10);
        assert_eq!(s.aspired, set(&[2, 3]));
        assert_eq!(s.selected, s.aspired);
        assert_eq!((s.warning, s.selects_none), (None, false));

        let s = select(VersionPolicy::All, &[1, 2, 3, 4], 2);
        assert_eq!(s.selected, set(&[1, 2, 3, 4]));
        assert_eq!(s.aspired, set(&[3, 4]));
        let w = s.warning.unwrap();
        assert!(w.contains("asks for 4 versions; only the highest 2"), "{w}");
        assert!(w.ends_with("from version 3"), "{w}");
    }

    #[test]
    fn a_specific_policy_names_what_is_missing() {
        let s = select(VersionPolicy::Specific(vec![2, 7]), &[1, 2], 10);
        assert_eq!(s.aspired, set(&[2]));
        let w = s.warning.unwrap();
        assert!(
            w.contains("names versions [7], which are not on disk"),
            "{w}"
        );
        assert!(!s.selects_none);

        let s = select(VersionPolicy::Specific(vec![7]), &[1, 2], 10);
        assert!(s.aspired.is_empty());
        assert!(s.selects_none);
        let w = s.warning.unwrap();
        assert!(
            w.contains("it serves none of the versions on disk ([1, 2])"),
            "{w}"
        );

        let s = select(VersionPolicy::Specific(vec![]), &[1], 10);
        assert!(s.warning.unwrap().contains("names no version"));
        // Nothing on disk: nothing selected, but nothing to say it serves none of.
        let s = select(VersionPolicy::Latest(1), &[], 10);
        assert!(!s.selects_none);
        assert_eq!(s.warning, None);
    }
}
