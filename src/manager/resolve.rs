//! Resolving a request's model and version (number, label or latest) to a handle on
//! the serving map, and, on the failure path only, the most useful explanation of
//! why nothing serves it.

use super::{Manager, ModelRecord, ServableHandle, VersionRequest, VersionState};

/// Why a request could not get a handle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    #[error("model {0:?} not found")]
    ModelNotFound(String),
    /// Stopped through the management API (`POST /stop_deployment/{model}`): its
    /// files are kept, nothing of it serves until a reload or a deploy.
    #[error(
        "model {0:?} is stopped: a reload (POST /reload_model?modelname={0}) or a deploy \
         serves it again"
    )]
    ModelStopped(String),
    #[error("model {model:?} has no version {version}{}", state_suffix(.state))]
    VersionNotFound {
        model: String,
        version: u64,
        state: Option<VersionState>,
    },
    #[error("model {model:?} has no label {label:?}")]
    LabelNotFound { model: String, label: String },
    /// The model or version exists but cannot serve now (loading, failed, label
    /// pointing at a version that is not available).
    #[error("{0}")]
    Unavailable(String),
}

fn state_suffix(state: &Option<VersionState>) -> String {
    match state {
        Some(s) => format!(" available (it is {})", s.as_str()),
        None => String::new(),
    }
}

impl Manager {
    /// Finds the version a request asks for and returns a handle to it.
    pub fn resolve(
        &self,
        model: &str,
        request: &VersionRequest,
    ) -> Result<ServableHandle, ResolveError> {
        let map = self.serving.load();
        let Some(serving) = map.models.get(model) else {
            return Err(self.explain_missing(model, request));
        };
        let found = match request {
            VersionRequest::Latest => serving.versions.values().next_back(),
            VersionRequest::Specific(v) => serving.versions.get(v),
            VersionRequest::Label(label) => {
                let Some(&v) = serving.labels.get(label) else {
                    return Err(self.explain_missing(model, request));
                };
                match serving.versions.get(&v) {
                    Some(h) => Some(h),
                    None => {
                        let why = self
                            .records()
                            .get(model)
                            .and_then(|r| r.unavailable_labels.get(label).cloned());
                        return Err(ResolveError::Unavailable(why.unwrap_or_else(|| {
                            format!(
                                "label {label:?} of model {model:?} points at version {v}, \
                                 which is not available"
                            )
                        })));
                    }
                }
            }
        };
        found
            .cloned()
            .ok_or_else(|| self.explain_missing(model, request))
    }

    /// Builds the most useful error for a request that found nothing to serve.
    /// Only reached on the failure path, so it may take the records lock.
    fn explain_missing(&self, model: &str, request: &VersionRequest) -> ResolveError {
        let records = self.records();
        let gone = |r: &ModelRecord| {
            r.config_error.is_none()
                && r.policy_warning.is_none()
                && !r.versions.is_empty()
                && r.versions
                    .values()
                    .all(|v| matches!(v.state, VersionState::End | VersionState::Unloading))
        };
        let Some(record) = records.get(model).filter(|r| !gone(r)) else {
            if self.is_stopped(model) {
                return ResolveError::ModelStopped(model.to_string());
            }
            return ResolveError::ModelNotFound(model.to_string());
        };
        match request {
            VersionRequest::Specific(v) => {
                let state = record.versions.get(v).map(|r| r.state);
                if matches!(state, Some(VersionState::Start | VersionState::Loading)) {
                    ResolveError::Unavailable(format!(
                        "model {model:?} version {v} is still loading"
                    ))
                } else {
                    ResolveError::VersionNotFound {
                        model: model.to_string(),
                        version: *v,
                        state,
                    }
                }
            }
            VersionRequest::Label(label) if record.unavailable_labels.contains_key(label) => {
                ResolveError::Unavailable(record.unavailable_labels[label].clone())
            }
            VersionRequest::Label(label) if !record.labels.contains_key(label) => {
                ResolveError::LabelNotFound {
                    model: model.to_string(),
                    label: label.clone(),
                }
            }
            _ => {
                // The records and the serving map change one after the other: a
                // version the records call AVAILABLE that the map does not hold is
                // entering or leaving service this moment (it read "no available
                // version (version 1 is AVAILABLE)").
                let serving = self.serving.load();
                let in_map = |v: &u64| {
                    serving
                        .models
                        .get(model)
                        .is_some_and(|s| s.versions.contains_key(v))
                };
                let mut why: Vec<String> = record
                    .versions
                    .iter()
                    .map(|(v, r)| match &r.error {
                        Some(e) => format!("version {v} is {}: {e}", r.state.as_str()),
                        None if r.state == VersionState::Available && !in_map(v) => {
                            format!("version {v} is entering or leaving service: try again")
                        }
                        None => format!("version {v} is {}", r.state.as_str()),
                    })
                    .collect();
                if let Some(e) = &record.config_error {
                    why.insert(0, e.clone());
                }
                if let Some(w) = &record.policy_warning {
                    why.insert(0, w.clone());
                }
                if why.is_empty() {
                    why.push("no versions found".into());
                }
                ResolveError::Unavailable(format!(
                    "model {model:?} has no available version ({})",
                    why.join("; ")
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::VersionRecord;
    use super::*;

    /// A version the records call AVAILABLE that the serving map does not hold (it
    /// is being published, or was just taken out to be unloaded) is said to be
    /// entering or leaving service: the message read "no available version (version
    /// 1 is AVAILABLE)".
    #[test]
    fn a_version_between_the_records_and_the_serving_map_is_said_to_be_changing() {
        let manager = Manager::new(crate::backends::BackendOptions::default());
        let available = VersionRecord {
            state: VersionState::Available,
            error: None,
            artifact: None,
            format: None,
            failed_files: None,
        };
        manager.records().insert(
            "m".into(),
            ModelRecord {
                versions: [(1, available)].into(),
                ..ModelRecord::default()
            },
        );
        let e = manager
            .resolve("m", &VersionRequest::Latest)
            .err()
            .expect("nothing serves m");
        let text = e.to_string();
        assert!(matches!(e, ResolveError::Unavailable(_)), "{e:?}");
        assert!(
            text.contains("version 1 is entering or leaving service"),
            "{text}"
        );
        assert!(!text.contains("is AVAILABLE"), "{text}");
    }
}
