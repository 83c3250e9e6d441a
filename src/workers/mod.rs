//! Isolated deployments (issue 14): each deployed model served by its own
//! `ferroserve worker` process on its own port, supervised, with enforced limits,
//! listed in a registry.
//!
//! * `resources`: `cpu_limit` / `memory_limit` spellings → numbers;
//! * `limits`: cgroup v1 groups, CPU affinity, RLIMIT_AS, /proc usage;
//! * `supervisor`: spawns, health-checks, restarts (backoff, crash-loop), stops;
//! * `forward`: the REST layer that sends a deployed model's requests to its worker;
//! * `worker`: the `ferroserve worker` subcommand (the same server, one model);
//! * `scoring`: scoring jobs for deployed models (plan and batches from the worker);
//! * this file: the registry's JSON and routes (`/registry/services[/{model}]`).

pub mod forward;
pub mod limits;
pub mod resources;
pub mod scoring;
pub mod status;
pub mod supervisor;
pub mod worker;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub use status::{
    AppliedDeployment, Enforcements, WorkerModel, WorkerState, WorkerStatus, WorkerVersion,
};
pub use supervisor::{Supervisor, WorkerConfig};

use crate::api::ApiError;
use crate::http::{AppState, HttpError};
use crate::settings::Settings;
use crate::sources::Deployment;

/// The exit code of a worker whose RSS watchdog found it past its memory limit
/// (reported as OOM, like a kill by the kernel's OOM killer).
pub const WATCHDOG_EXIT_CODE: i32 = 88;

fn time(t: Option<std::time::SystemTime>) -> Value {
    t.map_or(Value::Null, |t| {
        json!(humantime::format_rfc3339_millis(t).to_string())
    })
}

/// A gRPC call for a model deployed in a worker, on its way there: the channel to
/// the worker's gRPC port, and the deployment it goes to, which says why when the
/// worker fails the call ([`Supervisor::forwarding_failed`], as for REST).
pub struct GrpcForward {
    channel: tonic::transport::Channel,
    // The supervisor and the target are taken when the call is sent: after a
    // failure the worker is no longer ready, and its deployment's last exit is
    // what says how it ended.
    supervisor: std::sync::Arc<Supervisor>,
    target: supervisor::Target,
}

/// Where a gRPC call for `model` goes when it is deployed in a worker: `None` when
/// it is not (the main server answers), UNAVAILABLE while its worker is not ready.
/// Every per-model gRPC method asks this first, and sends the call through
/// [`GrpcForward::answer`]. An inference call answered UNAVAILABLE here is counted
/// in metrics by this server ([`crate::metrics::note_worker_did_not_answer`]).
pub fn grpc_forward(
    state: &crate::api::ServerState,
    model: &str,
) -> Option<Result<GrpcForward, tonic::Status>> {
    let supervisor = state.workers.get()?;
    let unavailable = |message: String| {
        crate::metrics::note_worker_did_not_answer();
        tonic::Status::unavailable(message)
    };
    let target = match supervisor.target(model)? {
        Ok(target) => target,
        Err(unreachable) => return Some(Err(unavailable(unreachable.message))),
    };
    // `None` or `Err` only when the worker stopped being ready, or its deployment
    // was removed, since `target` was taken.
    let channel = match supervisor.grpc_target(model) {
        Some(Ok(channel)) => channel,
        Some(Err(message)) => return Some(Err(unavailable(message))),
        None => return Some(Err(unavailable(format!("model {model:?} is not deployed")))),
    };
    Some(Ok(GrpcForward {
        channel,
        supervisor: supervisor.clone(),
        target,
    }))
}

impl GrpcForward {
    /// The channel to the worker's gRPC port, for a client of the method's service.
    pub fn channel(&self) -> tonic::transport::Channel {
        self.channel.clone()
    }

    /// The forwarded `call`'s answer as the client sees it: the worker's own
    /// answers (a status it sent) pass through unchanged; a call that never got one
    /// (the worker died or restarted mid-call, the connection was reset: a status
    /// tonic made from a transport error, which carries that error as its source)
    /// is answered as the REST forwarding answers it, by the same
    /// [`Supervisor::forwarding_failed`]: UNAVAILABLE, the code a client retries on,
    /// with the 503's message, which says how the worker ended ("out of memory: …"
    /// when killed past its memory limit). An inference call that got no status
    /// from the worker is this server's answer, so this server counts it in metrics
    /// ([`crate::metrics::note_worker_did_not_answer`], and the error's kind through
    /// [`crate::grpc::status_from`]); one the worker answered is the worker's to
    /// count.
    pub async fn answer<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        let sent = std::time::SystemTime::now();
        let status = match call.await {
            Ok(answer) => return Ok(answer),
            Err(status) => status,
        };
        if std::error::Error::source(&status).is_none() {
            return Err(status);
        }
        crate::metrics::note_worker_did_not_answer();
        tracing::debug!(addr = %self.target.addr, "gRPC forwarding failed: {status}");
        let (error, _heals) = self
            .supervisor
            .forwarding_failed(&self.target, sent, &status.message())
            .await;
        Err(crate::grpc::status_from(error))
    }
}

/// A deployment's registry entry.
pub fn status_json(s: &WorkerStatus) -> Value {
    let base = format!("http://{}", std::net::SocketAddr::new(s.host, s.port));
    json!({
        "model": s.model,
        "model_id": s.model,
        "state": s.state.as_str(),
        "pid": s.pid,
        "host": s.host.to_string(),
        "port": s.port,
        "grpc_port": s.grpc_port,
        "service_url": format!("{base}/predict/{}", s.model),
        "base_url": base,
        "started_at": time(s.started_at),
        "restarts": s.restarts,
        "last_exit": s.last_exit,
        "healthy": s.healthy,
        "rss_bytes": s.usage.map(|u| u.rss_bytes),
        "cpu_seconds": s.usage.map(|u| u.cpu_seconds),
        "cores_allowed": s.cores_allowed,
        "environment": s.deployment.environment,
        "resources": {
            "cpu_limit": s.deployment.cpu_limit,
            "memory_limit": s.deployment.memory_limit,
            "timeout": s.deployment.timeout_secs,
        },
        "limits": {
            "cpu_cores": s.limits.cpu,
            "memory_bytes": s.limits.memory,
            "timeout_secs": s.limits.timeout_secs,
        },
        "enforced": {
            "cpu_limit": s.enforced.cpu_limit.is_enforced(),
            "memory_limit": s.enforced.memory_limit.is_enforced(),
            "timeout": s.enforced.timeout.is_enforced(),
        },
        "enforcement": s.enforced,
        // The worker's own status of its model (none while it is not serving).
        "served_versions": s.model_status.as_ref().map(|m| &m.served_versions),
        "versions": s.model_status.as_ref().map(|m| &m.versions),
    })
}

/// A deployment in a worker as a model's status shows it (its `deployment`): the
/// environment, the resources as given, and whether and how each limit is enforced
/// on the worker's process. The main server's status and the worker's own say the
/// same of a deployed model.
pub fn deployment_json(d: &Deployment, enforced: &Enforcements) -> Value {
    json!({
        "environment": d.environment,
        "resources": {
            "cpu_limit": d.cpu_limit,
            "memory_limit": d.memory_limit,
            "timeout": d.timeout_secs,
        },
        "enforced": {
            "cpu_limit": enforced.cpu_limit.is_enforced(),
            "memory_limit": enforced.memory_limit.is_enforced(),
            "timeout": enforced.timeout.is_enforced(),
        },
        "enforcement": enforced,
    })
}

/// On a deployed model's worker, `model`'s deployment as its supervisor applied it
/// to this process (`Settings::worker_deployment`); `None` anywhere else, and for
/// any other model.
pub fn applied_deployment<'a>(
    settings: &'a Settings,
    model: &str,
) -> Option<&'a AppliedDeployment> {
    let own = settings.single_model.as_ref()?;
    settings
        .worker_deployment
        .as_ref()
        .filter(|_| settings.management_server.is_some() && own.name == model)
}

/// Why this server has no registry: workers are off, or it is a deployed model's
/// worker (`Settings::management_server`), whose registry is its main server's.
fn no_registry(settings: &Settings) -> String {
    let Some(main) = &settings.management_server else {
        return "this server runs no workers (--worker-ports off): deployments are served \
                in-process"
            .into();
    };
    let worker = match &settings.single_model {
        Some(own) => format!("model {:?}'s worker process", own.name),
        None => "a deployed model's worker process".into(),
    };
    let registry = if main.is_empty() {
        "the main server's, which deployed the model".to_string()
    } else {
        format!(
            "the main server's, at {}/registry/services",
            main.trim_end_matches('/')
        )
    };
    format!(
        "this is {worker}, which runs no workers and keeps no registry: the registry is {registry}"
    )
}

/// `/registry/services` and `/registry/services/{model}`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/registry/services", get(services))
        .route("/registry/services/{model}", get(service))
        .route("/v1/scoring-plans/{model}", get(scoring::scoring_plan))
}

fn supervisor(state: &AppState) -> Result<&std::sync::Arc<Supervisor>, HttpError> {
    state
        .workers
        .get()
        .ok_or_else(|| HttpError(ApiError::NotFound(no_registry(&state.settings))))
}

#[utoipa::path(get, path = "/registry/services", tag = "workers",
    responses(
        (status = 200, description = "Every deployment's worker: model, port, pid, state \
            (starting, ready, restarting, crash-loop, stopped), started at, restarts, last \
            exit reason, health, RSS, CPU time, limits and how each is enforced",
            body = Object),
        (status = 404, description = "The server runs no workers (--worker-ports off), or is \
            a deployed model's worker (the registry is its main server's)",
            body = crate::http::openapi::ErrorBody),
    ))]
pub(crate) async fn services(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    let workers = supervisor(&state)?;
    let services: Vec<Value> = workers.statuses().values().map(status_json).collect();
    Ok(Json(json!({ "services": services })))
}

#[utoipa::path(get, path = "/registry/services/{model}", tag = "workers",
    params(("model" = String, Path, description = "The deployed model's name")),
    responses(
        (status = 200, description = "The model's worker, as in /registry/services", body = Object),
        (status = 404, description = "The model is not deployed in a worker, or the server \
            runs no workers (or is a deployed model's worker)",
            body = crate::http::openapi::ErrorBody),
    ))]
pub(crate) async fn service(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let workers = supervisor(&state)?;
    let status = workers.status(&model).ok_or_else(|| {
        HttpError(ApiError::NotFound(format!(
            "model {model:?} is not deployed in a worker"
        )))
    })?;
    Ok(Json(status_json(&status)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::SingleModel;

    fn worker_settings(main: &str) -> Settings {
        Settings {
            single_model: Some(SingleModel {
                name: "iris".into(),
                base_path: "/models/iris".into(),
            }),
            management_server: Some(main.into()),
            ..Settings::default()
        }
    }

    /// A worker's registry routes say whose worker it is and where the registry
    /// is (they said the server ran with `--worker-ports off`).
    #[test]
    fn a_worker_names_the_registry_of_its_main_server() {
        let message = no_registry(&worker_settings("http://main.example:8501/"));
        assert!(
            message.contains("model \"iris\"'s worker process")
                && message.contains("http://main.example:8501/registry/services")
                && !message.contains("--worker-ports"),
            "{message}"
        );
        let message = no_registry(&worker_settings(""));
        assert!(
            message.contains("the main server's, which deployed the model"),
            "{message}"
        );
        let message = no_registry(&Settings::default());
        assert!(message.contains("--worker-ports off"), "{message}");
    }

    /// The applied deployment is the worker's own model's, on a worker only.
    #[test]
    fn only_a_worker_reports_an_applied_deployment_for_its_model() {
        let applied = AppliedDeployment::of(
            &Deployment {
                cpu_limit: Some("1".into()),
                ..Deployment::default()
            },
            Enforcements {
                cpu_limit: limits::Enforcement::Affinity,
                memory_limit: limits::Enforcement::None,
                timeout: limits::Enforcement::None,
            },
        );
        let mut settings = worker_settings("http://main.example:8501");
        settings.worker_deployment = Some(applied.clone());
        assert_eq!(applied_deployment(&settings, "iris"), Some(&applied));
        assert_eq!(applied_deployment(&settings, "other"), None);
        let json = deployment_json(&applied.deployment(), &applied.enforcement);
        assert_eq!(
            json["enforced"],
            json!({"cpu_limit": true, "memory_limit": false, "timeout": false})
        );
        assert_eq!(json["enforcement"]["cpu_limit"], "affinity");
        settings.management_server = None;
        assert_eq!(applied_deployment(&settings, "iris"), None);
    }
}
