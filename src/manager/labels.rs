//! The labels a model publishes, and why a label's version is not available.

use std::collections::{BTreeMap, BTreeSet};

use super::{ModelRecord, VersionRecord, VersionState};
use crate::model_config::ModelConfig;
use crate::repository::ModelOnDisk;

/// The labels to publish: those of the config whose version is available (or all
/// of them when the config allows labels on unavailable versions). A refused label
/// keeps the version it pointed at before if that one is still available, so a bad
/// edit never takes a working label away; one with no such version is not published
/// but stays declared: it is returned with what a request through it is told (its
/// version and `why_not` that version is available), so that such a request is
/// UNAVAILABLE rather than "no such label", and the label works again as soon as its
/// version is available.
pub(super) fn effective_labels(
    model: &str,
    config: &ModelConfig,
    previous: &BTreeMap<String, u64>,
    available: &BTreeSet<u64>,
    why_not: impl Fn(u64) -> String,
) -> (BTreeMap<String, u64>, Vec<String>, BTreeMap<String, String>) {
    let mut labels = BTreeMap::new();
    let mut errors = Vec::new();
    let mut unavailable = BTreeMap::new();
    for (label, &version) in &config.labels {
        if available.contains(&version) {
            labels.insert(label.clone(), version);
            continue;
        }
        let unserved = format!(
            "label {label:?} of model {model:?} points at version {version}, which is not \
             available: {}",
            why_not(version)
        );
        if config.allow_unavailable_labels {
            labels.insert(label.clone(), version);
            unavailable.insert(label.clone(), unserved);
            continue;
        }
        let kept = previous
            .get(label)
            .copied()
            .filter(|p| available.contains(p));
        match kept {
            Some(p) => {
                labels.insert(label.clone(), p);
                errors.push(format!(
                    "{unserved}; the label stays at version {p} (set \
                     allow_unavailable_labels = true to move it anyway)"
                ));
            }
            None => {
                errors.push(format!(
                    "{unserved}; requests through the label are refused as unavailable \
                     until it is"
                ));
                unavailable.insert(label.clone(), unserved);
            }
        }
    }
    (labels, errors, unavailable)
}

/// Why version `version` of a model is not available, for a label that points at it:
/// its load failed or is under way, it is not on disk, or the version policy (or
/// `max_served_versions_per_model`) does not serve it.
pub(super) fn why_not_available(
    version: u64,
    model: &ModelOnDisk,
    config: &ModelConfig,
    selected: &BTreeSet<u64>,
    aspired: &BTreeSet<u64>,
    record: Option<&ModelRecord>,
) -> String {
    let state = record.and_then(|r| r.versions.get(&version));
    match state {
        Some(VersionRecord {
            state: VersionState::Error,
            error,
            ..
        }) => {
            return format!(
                "version {version} failed to load: {}",
                error.as_deref().unwrap_or("no reason recorded")
            )
        }
        Some(VersionRecord {
            state: VersionState::Start | VersionState::Loading,
            ..
        }) => return format!("version {version} is still loading"),
        _ => {}
    }
    if !model.versions.contains_key(&version) {
        let on_disk: Vec<u64> = model.versions.keys().copied().collect();
        return format!("there is no version {version} on disk (versions on disk: {on_disk:?})");
    }
    if selected.contains(&version) && !aspired.contains(&version) {
        return format!(
            "only the highest {} versions are served (max_served_versions_per_model)",
            aspired.len()
        );
    }
    if !selected.contains(&version) {
        // What the policy asks for, less the versions whose load failed: those
        // are not served, whatever the policy says.
        let failed_to_load = |v: &u64| {
            record
                .and_then(|r| r.versions.get(v))
                .is_some_and(|r| r.state == VersionState::Error || r.error.is_some())
        };
        let (failed, served): (Vec<u64>, Vec<u64>) =
            aspired.iter().copied().partition(|v| failed_to_load(v));
        let failed = match failed.as_slice() {
            [] => String::new(),
            [one] => format!("; version {one} failed to load"),
            many => format!("; versions {many:?} failed to load"),
        };
        return format!(
            "the version policy ({}) does not serve it (it serves versions {served:?}{failed})",
            config.version_policy
        );
    }
    format!("version {version} is not loaded")
}
