//! Model status: the lifecycle state of each version, as TF Serving's
//! GetModelStatus reports it ([`model_status`]), and each model's summary for
//! ferroserve's `/models/status`, the console and management answers
//! ([`models_status`], [`ModelSummary`]): versions, what is served, stopped or
//! deployed, and why nothing is served.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{ApiError, ServerState};
use crate::manager::{ModelRecord, VersionRequest, VersionState};
use crate::sources::Deployment;

#[derive(Debug, Clone, PartialEq)]
pub struct VersionStatus {
    pub version: u64,
    pub state: VersionState,
    /// Empty unless the version is in ERROR.
    pub error_message: String,
}

/// Status of a model's versions, or of the one version a request names.
pub fn model_status(
    state: &ServerState,
    model: &str,
    version: Option<&VersionRequest>,
) -> Result<Vec<VersionStatus>, ApiError> {
    let record = state.manager.model_record(model).ok_or_else(|| {
        // Still a 404 (NOT_FOUND), as TF Serving answers for a model it does not
        // serve, but in the words every other route uses for a stopped model.
        if state.sources.is_stopped(model) {
            ApiError::NotFound(crate::manager::ResolveError::ModelStopped(model.into()).to_string())
        } else {
            ApiError::NotFound(format!("model {model:?} not found"))
        }
    })?;
    let wanted = match version {
        None | Some(VersionRequest::Latest) => None,
        Some(VersionRequest::Specific(v)) => Some(*v),
        Some(VersionRequest::Label(label)) => match record.labels.get(label) {
            Some(v) => Some(*v),
            // Declared, but its version does not serve: as a request through it is told.
            None => match record.unavailable_labels.get(label) {
                Some(why) => return Err(ApiError::Unavailable(why.clone())),
                None => {
                    return Err(ApiError::NotFound(format!(
                        "model {model:?} has no label {label:?}"
                    )))
                }
            },
        },
    };
    let mut statuses: Vec<VersionStatus> = record
        .versions
        .iter()
        .filter(|(v, _)| wanted.is_none_or(|w| w == **v))
        .map(|(v, r)| VersionStatus {
            version: *v,
            state: r.state,
            error_message: r.error.clone().unwrap_or_default(),
        })
        .collect();
    if let (Some(w), true) = (wanted, statuses.is_empty()) {
        return Err(ApiError::NotFound(format!(
            "model {model:?} has no version {w}"
        )));
    }
    if statuses.is_empty() {
        if let Some(e) = record.config_error {
            return Err(ApiError::Unavailable(e));
        }
        // Known, but no version at all (a `specific` policy that selects none of
        // those on disk): TF Serving's GetModelStatus says NOT_FOUND, in these
        // words, over gRPC and REST alike; the policy's warning says why.
        let why = record
            .policy_warning
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        return Err(ApiError::NotFound(format!(
            "Could not find any versions of model {model}{why}"
        )));
    }
    // Highest version first, as TF Serving lists them.
    statuses.reverse();
    Ok(statuses)
}

/// One version of a model, for status.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionSummary {
    pub version: u64,
    pub state: VersionState,
    pub error: Option<String>,
    pub format: Option<&'static str>,
}

/// Everything status reports about one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    pub model: String,
    pub dir: Option<PathBuf>,
    /// Listed in the model config list (else found in the repository root).
    pub from_config_list: bool,
    pub stopped: bool,
    /// Another management operation holds the model now.
    pub busy: bool,
    pub deployment: Option<Deployment>,
    pub versions: Vec<VersionSummary>,
    /// Versions requests can reach now, highest last.
    pub served_versions: Vec<u64>,
    pub labels: BTreeMap<String, u64>,
    pub label_errors: Vec<String>,
    pub config_error: Option<String>,
    /// Set when the policy asks for more versions than may be served.
    pub policy_warning: Option<String>,
    /// Settings of the model's config.toml that changed since a served version
    /// loaded and take effect only when a version loads (`batching`, `warmup`,
    /// `sklearn`);
    /// every other setting already applies to the served versions.
    pub settings_needing_reload: Vec<&'static str>,
    /// The model's latest audit events, newest first (empty without a store).
    pub recent_events: Vec<crate::store::Event>,
    /// The worker process serving the model, when it is deployed in one.
    pub worker: Option<crate::workers::WorkerStatus>,
}

impl ModelSummary {
    /// Leaves out who made the recent events (token names, client addresses), for
    /// a caller that may not read the audit trail.
    pub fn hide_callers(&mut self) {
        for event in &mut self.recent_events {
            event.client = None;
            event.actor = None;
        }
    }

    /// Requests reach a version of it now: here, or in its worker.
    pub fn is_served(&self) -> bool {
        !self.served_versions.is_empty()
            || self
                .worker
                .as_ref()
                .is_some_and(|w| w.state == crate::workers::WorkerState::Ready)
    }

    /// A model deployed in a worker is reported as its worker reports it: this
    /// process holds no copy of it (`crate::sources`, isolated models).
    pub(crate) fn take_worker_status(&mut self) {
        let Some(worker) = &self.worker else { return };
        let status = worker.model_status.clone().unwrap_or_default();
        let serving = worker.state == crate::workers::WorkerState::Ready;
        self.served_versions = if serving {
            status.served_versions
        } else {
            Vec::new()
        };
        self.versions = status
            .versions
            .into_iter()
            .map(|v| VersionSummary {
                version: v.version,
                state: VersionState::ALL
                    .into_iter()
                    .find(|s| s.as_str() == v.state)
                    .unwrap_or(VersionState::Error),
                error: v.error,
                format: v.format.and_then(|f| format_name(&f)),
            })
            .collect();
        self.labels = status.labels;
        self.label_errors = status.label_errors;
        self.config_error = status.config_error;
        self.policy_warning = None;
        self.settings_needing_reload = Vec::new();
    }
}

/// The name of a backend format, as `Backend::format` gives it.
fn format_name(name: &str) -> Option<&'static str> {
    ["onnx", "sklearn", "tensorflow", "fasttext"]
        .into_iter()
        .find(|f| *f == name)
}

/// Status of every model the server knows: on disk, listed, stopped or unloading.
pub fn models_status(state: &ServerState) -> Vec<ModelSummary> {
    let mut records = state.manager.records_snapshot();
    let serving = state.manager.serving();
    let mut out: Vec<ModelSummary> = Vec::new();
    for info in state.sources.describe() {
        let record = records.remove(&info.name).unwrap_or_default();
        let served = served_versions(&serving, &info.name);
        let needing_reload = settings_needing_reload(&serving, &info.name);
        let flat_conflict = info.flat_conflict.clone();
        let mut model = summary(
            info.name,
            Some(info.dir),
            info.listed,
            info.stopped,
            info.deployment,
            record,
            served,
        );
        model.busy = info.busy;
        model.settings_needing_reload = needing_reload;
        if model.config_error.is_none() {
            model.config_error = flat_conflict;
        }
        if let Some(store) = &state.store {
            model.recent_events = store.recent_events(&model.model);
        }
        if let Some(workers) = state.workers.get() {
            model.worker = workers.status(&model.model);
            model.take_worker_status();
        }
        out.push(model);
    }
    // Models whose directory is gone but whose versions still finish requests.
    for (name, record) in records {
        let served = served_versions(&serving, &name);
        out.push(summary(name, None, false, false, None, record, served));
    }
    out.sort_by(|a, b| a.model.cmp(&b.model));
    out
}

/// Status of one model.
pub fn model_summary(state: &ServerState, model: &str) -> Result<ModelSummary, ApiError> {
    models_status(state)
        .into_iter()
        .find(|m| m.model == model)
        .ok_or_else(|| ApiError::NotFound(format!("model {model:?} not found")))
}

/// [`model_summary`] read by the operation that holds the model's lock, so that a
/// delete or stop by another client right after does not change this operation's
/// answer; the model is not "busy" on account of the operation reading it.
pub(super) fn summary_under_lock(
    state: &ServerState,
    model: &str,
) -> Result<ModelSummary, ApiError> {
    let mut summary = model_summary(state, model)?;
    summary.busy = false;
    Ok(summary)
}

fn served_versions(map: &crate::manager::ServingMap, model: &str) -> Vec<u64> {
    map.models
        .get(model)
        .map(|m| m.versions.keys().copied().collect())
        .unwrap_or_default()
}

fn settings_needing_reload(map: &crate::manager::ServingMap, model: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = map
        .models
        .get(model)
        .into_iter()
        .flat_map(|m| m.versions.values())
        .flat_map(|v| v.settings_needing_reload())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn summary(
    model: String,
    dir: Option<PathBuf>,
    from_config_list: bool,
    stopped: bool,
    deployment: Option<Deployment>,
    record: ModelRecord,
    served_versions: Vec<u64>,
) -> ModelSummary {
    ModelSummary {
        model,
        dir,
        from_config_list,
        stopped,
        busy: false,
        deployment,
        versions: record
            .versions
            .into_iter()
            .map(|(version, r)| VersionSummary {
                version,
                state: r.state,
                error: r.error,
                format: r.format,
            })
            .collect(),
        served_versions,
        labels: record.labels,
        label_errors: record.label_errors,
        config_error: record.config_error,
        policy_warning: record.policy_warning,
        settings_needing_reload: Vec::new(),
        recent_events: Vec::new(),
        worker: None,
    }
}

/// Why a model serves nothing, in one line: its versions' errors, its config's, or
/// what its versions are doing.
pub(crate) fn describe_failures(summary: &ModelSummary) -> String {
    let mut why: Vec<String> = summary
        .versions
        .iter()
        .filter_map(|v| {
            v.error
                .as_ref()
                .map(|e| format!("version {}: {e}", v.version))
        })
        .collect();
    if let Some(e) = &summary.config_error {
        why.insert(0, e.clone());
    }
    if summary.versions.is_empty() && why.is_empty() {
        why.push("no version directory with a model file".into());
    }
    if why.is_empty() {
        // No error, none served: stopped, unloading or still loading.
        why = summary
            .versions
            .iter()
            .map(|v| format!("version {} is {}", v.version, v.state.as_str()))
            .collect();
        if summary.stopped {
            why.insert(0, "the model is stopped".into());
        }
    }
    why.join("; ")
}
