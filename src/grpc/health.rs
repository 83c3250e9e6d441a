//! `grpc.health.v1.Health`: the server's health (service `""` or the name of one of
//! its gRPC services) and each model's (service = the model name).
//!
//! The answer is computed from the manager on each call (a deployed model's from its
//! worker), so it is never stale and no task has to keep a status table in step with
//! model loads. `Watch` polls once a second and sends a message whenever the answer
//! changes; it ends when the client goes away (the stream is dropped) or the server
//! shuts down. From the stop signal on (the drain of `--shutdown-delay`) every
//! service and every model is NOT_SERVING.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
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

/// The status of `service`, or `None` when it names neither a service nor a model
/// this server knows. A model is SERVING while a request for its latest version
/// would be answered; a model deployed in a worker process is its worker's word.
/// After the stop signal (the drain of `--shutdown-delay`), nothing is: every
/// model is NOT_SERVING, as the server is, so that a load balancer that checks a
/// model sends elsewhere at once too.
async fn status_of(state: &ServerState, service: &str) -> Option<ServingStatus> {
    if service.is_empty() || SERVICES.contains(&service) {
        return Some(serving(state.is_ready()));
    }
    let draining = state.is_draining();
    if let Some(forward) = crate::workers::grpc_forward(state, service) {
        return Some(match forward {
            Ok(forward) if !draining => worker_status(state, forward.channel(), service).await,
            // Draining, or its worker is not ready (starting, restarting).
            _ => ServingStatus::NotServing,
        });
    }
    let status = match state.manager.resolve(service, &VersionRequest::Latest) {
        Ok(_) => ServingStatus::Serving,
        // A model the server knows but does not serve (unloaded through the
        // management API, its versions gone) is not serving, not unknown: a client
        // watching it sees NOT_SERVING, not SERVICE_UNKNOWN.
        Err(crate::manager::ResolveError::ModelNotFound(_)) => {
            if !state.sources.is_stopped(service) && state.manager.model_record(service).is_none() {
                return None;
            }
            ServingStatus::NotServing
        }
        Err(_) => ServingStatus::NotServing,
    };
    Some(if draining {
        ServingStatus::NotServing
    } else {
        status
    })
}

/// How long a deployed model's worker may take to say its health.
const WORKER_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A deployed model's health, as its worker says it; NOT_SERVING when the worker
/// does not answer in time.
async fn worker_status(
    state: &ServerState,
    channel: tonic::transport::Channel,
    model: &str,
) -> ServingStatus {
    let mut client = super::worker_client!(HealthClient<_>, state, channel);
    let check = client.check(HealthCheckRequest {
        service: model.to_string(),
    });
    match tokio::time::timeout(WORKER_CHECK_TIMEOUT, check).await {
        Ok(Ok(answer)) => {
            ServingStatus::try_from(answer.into_inner().status).unwrap_or(ServingStatus::NotServing)
        }
        _ => ServingStatus::NotServing,
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
        match status_of(&self.state, &service).await {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!(
                "unknown service or model {service:?}"
            ))),
        }
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    /// As the health protocol asks, an unknown service is watched as SERVICE_UNKNOWN
    /// (it may appear later, e.g. a model being added) rather than refused. A model
    /// seen on this stream that then goes unknown (its record dropped with it) is
    /// NOT_SERVING: the client was told of it.
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
                    let unknown = match last {
                        None | Some(ServingStatus::ServiceUnknown) => ServingStatus::ServiceUnknown,
                        Some(_) => ServingStatus::NotServing,
                    };
                    let now = status_of(&state, &service).await.unwrap_or(unknown);
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
