//! The fallback of a `latest` policy whose chosen versions do not serve (see
//! [`Manager::fall_back`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::{new_record, same_dir, set_state, Manager, StillWanted, VersionState};
use crate::model_config::ModelConfig;
use crate::repository::ModelOnDisk;

impl Manager {
    /// Under a `latest` policy, when none of the versions it asks for (`aspired`) is
    /// available and no version of the model's directory serves, loads the newest
    /// older version instead, one at a time, newest first, until one serves: after
    /// a restart, a model whose newest version is broken serves the one before it, as
    /// it did before the restart. A version in ERROR whose files have not changed
    /// since it failed is not tried again. The version served this way stays until a
    /// version the policy asks for is available; that one's reconcile unloads it, as
    /// any version the policy no longer asks for. A `specific` policy never falls
    /// back: the operator named its versions (and `all` asks for every version).
    pub(super) fn fall_back(
        &self,
        name: &str,
        model: &ModelOnDisk,
        config: &Arc<ModelConfig>,
        aspired: &BTreeSet<u64>,
        still_wanted: &StillWanted<'_>,
    ) {
        if !matches!(
            config.version_policy,
            crate::model_config::VersionPolicy::Latest(_)
        ) {
            return;
        }
        let serves = || {
            self.serving().models.get(name).is_some_and(|m| {
                m.versions
                    .values()
                    .any(|h| h.dir.parent().is_some_and(|p| same_dir(p, &model.dir)))
            })
        };
        let older: Vec<(u64, PathBuf, PathBuf)> = model
            .versions
            .values()
            .rev()
            .filter(|v| !aspired.contains(&v.version))
            .filter_map(|v| Some((v.version, v.artifact.clone()?, v.dir.clone())))
            .collect();
        for (version, artifact, dir) in older {
            if serves() {
                return;
            }
            let known_broken = {
                let records = self.records();
                let record = records.get(name);
                // A version the policy asks for that is still loading (another
                // reconcile's) may yet serve; so may an older one being loaded.
                let loading = |v: &u64| {
                    record
                        .and_then(|r| r.versions.get(v))
                        .is_some_and(|r| r.state == VersionState::Loading)
                };
                if aspired.iter().any(loading) || loading(&version) {
                    return;
                }
                record
                    .and_then(|r| r.versions.get(&version))
                    .filter(|r| r.state == VersionState::Error)
                    .and_then(|r| r.failed_files.clone())
            };
            if known_broken.is_some_and(|f| f == crate::repository::version_files(&dir)) {
                continue;
            }
            {
                let mut records = self.records();
                let record = records.entry(name.to_string()).or_default();
                let entry = record.versions.entry(version).or_insert_with(new_record);
                entry.artifact = Some(artifact.clone());
                set_state(
                    &self.observer,
                    name,
                    version,
                    entry,
                    VersionState::Loading,
                    None,
                );
            }
            tracing::warn!(
                model = name,
                version,
                "none of the versions the version policy ({}) asks for ({aspired:?}) is \
                 available and no other version serves: falling back to version {version}, \
                 the newest older version not known to be broken",
                config.version_policy
            );
            {
                let _slot = self.load_slots.acquire();
                self.load_version(name, version, &artifact, config.clone(), still_wanted);
            }
            if serves() {
                tracing::warn!(
                    model = name,
                    version,
                    "version {version} serves in place of {aspired:?} until a version the \
                     policy asks for loads"
                );
                return;
            }
        }
    }
}
