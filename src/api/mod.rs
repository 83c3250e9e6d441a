//! Transport-neutral operations: what every protocol adapter (TF Serving REST,
//! KServe V2 REST, the simple JSON API, gRPC) calls after decoding a request.
//!
//! Invariant: nothing here knows about HTTP, gRPC or JSON. Adapters turn wire
//! formats into [`PredictRequest`] and friends, call an operation, and encode its
//! answer or its [`ApiError`].

pub mod bounds;
pub mod classify;
mod deploy;
mod error;
pub mod inputs;
pub mod jobs;
pub mod manage;
pub mod metadata;
pub mod predict;
pub mod repository;
pub mod simple;
pub mod status;
pub mod triton;
pub mod upload;

use std::sync::Arc;

pub use error::{ApiError, OUT_OF_MEMORY};
pub use metadata::{model_metadata, ModelMetadata};
pub use predict::{admit, predict, predict_on, PredictRequest, PredictResponse};
pub use status::{model_status, VersionStatus};

use crate::inference::InferencePool;
use crate::manager::Manager;
use crate::settings::Settings;
use crate::sources::Sources;

/// Which protocol a request came in on, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TF Serving REST (`/v1/models/...`).
    TfServingRest,
    /// KServe V2 REST (`/v2/models/...`).
    V2Rest,
    /// The simple JSON API (`/predict`).
    SimpleRest,
    /// TF Serving gRPC.
    TfServingGrpc,
    /// KServe V2 gRPC.
    V2Grpc,
    /// A batch-scoring job (`crate::jobs`), through the same queue as requests.
    Job,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::TfServingRest => "tfs_rest",
            Protocol::V2Rest => "v2_rest",
            Protocol::SimpleRest => "simple_rest",
            Protocol::TfServingGrpc => "tfs_grpc",
            Protocol::V2Grpc => "v2_grpc",
            Protocol::Job => "job",
        }
    }
}

/// Who asked for a management operation, for the audit trail: the client's address
/// and the name of the token it presented. Adapters fill it from the connection and
/// the access layer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Caller {
    pub client: Option<String>,
    pub actor: Option<String>,
}

/// Everything an operation needs, shared by every adapter.
pub struct ServerState {
    pub settings: Arc<Settings>,
    pub manager: Arc<Manager>,
    pub inference: Arc<InferencePool>,
    /// Which model directories are served; the management API and the watcher
    /// change what is served through it.
    pub sources: Arc<Sources>,
    /// Who may do what (tokens, loopback-only management); the REST and gRPC
    /// access layers consult it before any operation runs.
    pub auth: Arc<crate::auth::Auth>,
    /// The metadata store (audit trail, what management decided, prediction log);
    /// `server::run` always opens one. Never consulted by a prediction except to
    /// offer a log entry to its buffer.
    pub store: Option<Arc<crate::store::Store>>,
    /// The response cache (`crate::cache`), consulted by `predict` for models whose
    /// config enables it; `None` when no tier is on (`--cache-max-bytes 0`, no Redis).
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
    /// The job runner (`crate::jobs`), set once by `server::run` after the state
    /// exists (the runner holds the state weakly to score through `predict`).
    pub jobs: std::sync::OnceLock<Arc<crate::jobs::Jobs>>,
    /// Set at the stop signal: readiness answers 503 from then on.
    pub draining: std::sync::atomic::AtomicBool,
    /// The supervisor of deployed models' worker processes, set once by
    /// `server::run` when workers are on (`--worker-ports`).
    pub workers: std::sync::OnceLock<Arc<crate::workers::Supervisor>>,
}

impl ServerState {
    pub fn new(settings: Settings, manager: Arc<Manager>) -> ServerState {
        let inference = Arc::new(InferencePool::new(settings.inference_threads));
        let sources = Arc::new(
            Sources::new(manager.clone(), settings.model_repository.clone())
                .with_state_dir(settings.state_dir())
                .with_model_defaults(settings.model_defaults.clone()),
        );
        let auth = Arc::new(crate::auth::Auth::without_tokens(
            settings.allow_unauthenticated_management,
        ));
        let cache = crate::cache::ResponseCache::from_settings(&settings);
        ServerState {
            auth,
            store: None,
            jobs: std::sync::OnceLock::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            workers: std::sync::OnceLock::new(),
            cache,
            sources,
            settings: Arc::new(settings),
            manager,
            inference,
        }
    }

    pub fn is_live(&self) -> bool {
        true
    }

    /// Ready once every model found at start-up has loaded or failed, until the
    /// stop signal (then draining: load balancers should send elsewhere).
    pub fn is_ready(&self) -> bool {
        self.manager.is_ready() && !self.is_draining()
    }

    /// Whether the stop signal came: the shutdown delay's drain, when nothing is
    /// ready (the server, every model) though requests are still answered.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Name and version of this server, for V2 server metadata and `/description`.
pub const SERVER_NAME: &str = "ferroserve";
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
