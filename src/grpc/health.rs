//! `grpc.health.v1.Health`: the server's health (service `""` or the name of one of
//! its gRPC services) and each model's (service = the model name).
//!
//! The answer is computed from the manager on each call, so it is never stale and no
//! task has to keep a status table in step with model loads. `Watch` polls once a
//! second and sends a message whenever the answer changes; it ends when the client
//! goes away (the stream is dropped) or the server shuts down.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::api::ServerState;
use crate::manager::VersionRequest;

/// gRPC service names this server answers for, besides `""`.
const SERVICES: [&str; 4] = [
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
    "inference.GRPCInferenceService",
    "grpc.health.v1.Health",
];

/// How often `Watch` looks again.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

pub struct HealthService {
    state: Arc<ServerState>,
    /// Cancelled when the server shuts down, so that open `Watch` streams end and
    /// do not hold the graceful shutdown open forever.
    shutdown: CancellationToken,
}

impl HealthService {
    pub fn new(state: Arc<ServerState>, shutdown: CancellationToken) -> HealthService {
        HealthService { state, shutdown }
    }
}

fn serving(yes: bool) -> ServingStatus {
    if yes {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// The status of `service`, or `None` when it names neither a service nor a model.
fn status_of(state: &ServerState, service: &str) -> Option<ServingStatus> {
    if service.is_empty() || SERVICES.contains(&service) {
        return Some(serving(state.is_ready()));
    }
    match state.manager.resolve(service, &VersionRequest::Latest) {
        Ok(_) => Some(ServingStatus::Serving),
        Err(crate::manager::ResolveError::ModelNotFound(_)) => None,
        Err(_) => Some(ServingStatus::NotServing),
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match status_of(&self.state, &service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!(
                "unknown service or model {service:?}"
            ))),
        }
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    /// As the health protocol asks, an unknown service is watched as SERVICE_UNKNOWN
    /// (it may appear later, e.g. a model being added) rather than refused.
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let state = self.state.clone();
        let shutdown = self.shutdown.clone();
        let stream = futures::stream::unfold(None, move |last: Option<ServingStatus>| {
            let state = state.clone();
            let service = service.clone();
            let shutdown = shutdown.clone();
            async move {
                loop {
                    let now = status_of(&state, &service).unwrap_or(ServingStatus::ServiceUnknown);
                    if last != Some(now) {
                        return Some((Ok(response(now)), Some(now)));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                        _ = shutdown.cancelled() => return None,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
