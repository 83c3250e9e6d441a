use crate::inference::JobError;
use crate::manager::ResolveError;

/// How the message of an [`ApiError::OutOfMemory`] begins (the backends' own
/// `BackendError::OutOfMemory` display).
pub const OUT_OF_MEMORY: &str = "out of memory";

/// Every way an operation can fail, in terms a client understands. Each adapter
/// maps it to its status codes in one exhaustive `match`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or does not fit the model (HTTP 400, INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown model, version or label (404, NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this, e.g. a model base path outside the allowed roots
    /// (403, PERMISSION_DENIED).
    #[error("{0}")]
    PermissionDenied(String),
    /// The request conflicts with the current state, e.g. a version that already
    /// exists (409, ALREADY_EXISTS / FAILED_PRECONDITION).
    #[error("{0}")]
    Conflict(String),
    /// The request body or message is larger than allowed (413, RESOURCE_EXHAUSTED).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Overloaded: the model's queue is full (429, RESOURCE_EXHAUSTED).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The model exists but cannot serve now: loading, failed, shutting down (503, UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// The runtime could not allocate the memory the request needs (503,
    /// UNAVAILABLE): the server's limit, not the client's fault, and the same
    /// request alone may fit once other batches are done. The message begins with
    /// [`OUT_OF_MEMORY`], which is how a worker's answer is read back as this.
    #[error("{0}")]
    OutOfMemory(String),
    /// The request's deadline passed (504, DEADLINE_EXCEEDED).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The client stopped sending its request body for the body read timeout (408,
    /// DEADLINE_EXCEEDED).
    #[error("{0}")]
    RequestTimeout(String),
    /// A failure inside the server or the model runtime (500, INTERNAL).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument(_) => "invalid_argument",
            ApiError::NotFound(_) => "not_found",
            ApiError::PermissionDenied(_) => "permission_denied",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::ResourceExhausted(_) => "resource_exhausted",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::OutOfMemory(_) => "out_of_memory",
            ApiError::DeadlineExceeded(_) => "deadline_exceeded",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> ApiError {
        match e {
            ResolveError::ModelNotFound(_)
            | ResolveError::ModelStopped(_)
            | ResolveError::VersionNotFound { .. }
            | ResolveError::LabelNotFound { .. } => ApiError::NotFound(e.to_string()),
            ResolveError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        match e {
            JobError::DeadlineExceeded => ApiError::DeadlineExceeded(e.to_string()),
            JobError::ShutDown => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<crate::preprocess::PreprocessError> for ApiError {
    fn from(e: crate::preprocess::PreprocessError) -> ApiError {
        match e {
            crate::preprocess::PreprocessError::InvalidInput(m) => ApiError::InvalidArgument(m),
            crate::preprocess::PreprocessError::Internal(m) => ApiError::Internal(m),
            crate::preprocess::PreprocessError::TooLarge(m) => ApiError::PayloadTooLarge(m),
            crate::preprocess::PreprocessError::Stopped(m) => ApiError::DeadlineExceeded(m),
        }
    }
}
