//! Model status: the lifecycle state of each version, as TF Serving's
//! GetModelStatus and ferroserve's `/models/status` report it.

use super::{ApiError, ServerState};
use crate::manager::{VersionRequest, VersionState};

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
    let record = state
        .manager
        .model_record(model)
        .ok_or_else(|| ApiError::NotFound(format!("model {model:?} not found")))?;
    let wanted = match version {
        None | Some(VersionRequest::Latest) => None,
        Some(VersionRequest::Specific(v)) => Some(*v),
        Some(VersionRequest::Label(label)) => Some(*record.labels.get(label).ok_or_else(|| {
            ApiError::NotFound(format!("model {model:?} has no label {label:?}"))
        })?),
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
    }
    // Highest version first, as TF Serving lists them.
    statuses.reverse();
    Ok(statuses)
}
