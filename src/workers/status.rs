//! What the registry reports of each deployment (`/registry/services`, and the
//! `workers` table through [`super::Supervisor`]): a worker's state, why its last
//! process ended, how each limit is enforced, and what the worker last said of its
//! model.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use super::limits::{self, Enforcement};
use super::resources::Limits;
use crate::sources::Deployment;

/// A worker's life, as the registry shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerState {
    Starting,
    Ready,
    Restarting,
    CrashLoop,
    Stopped,
}

impl WorkerState {
    /// Why requests cannot reach a worker in this state, and what to do: a
    /// worker in crash-loop restarts no more, so retrying is no use.
    pub fn unavailable(self, model: &str) -> String {
        match self {
            WorkerState::CrashLoop => format!(
                "model {model:?}'s worker is in crash-loop: it failed too often and is not \
                 restarted; deploy the model again (POST /deploy) or end its deployment \
                 (POST /stop_deployment/{model})"
            ),
            other => format!(
                "model {model:?}'s worker is {}; retry shortly",
                other.as_str()
            ),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Restarting => "restarting",
            WorkerState::CrashLoop => "crash-loop",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// Why a worker's process ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExitReason {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Killed past its memory limit (the kernel's cgroup OOM killer, or its own RSS
    /// watchdog).
    pub oom: bool,
    pub reason: String,
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
}

/// What a worker last said of its model: its `/models/status` entry (the fields
/// the main server's status shows).
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize, serde::Serialize)]
pub struct WorkerModel {
    #[serde(default)]
    pub served_versions: Vec<u64>,
    #[serde(default)]
    pub versions: Vec<WorkerVersion>,
    #[serde(default)]
    pub labels: BTreeMap<String, u64>,
    #[serde(default)]
    pub label_errors: Vec<String>,
    #[serde(default)]
    pub config_error: Option<String>,
}

/// One version of a worker's model, as its status names it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct WorkerVersion {
    pub version: u64,
    pub state: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
}

/// How each limit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Enforcements {
    pub cpu_limit: Enforcement,
    pub memory_limit: Enforcement,
    pub timeout: Enforcement,
}

/// What the registry reports about one deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStatus {
    pub model: String,
    pub host: IpAddr,
    pub port: u16,
    pub grpc_port: u16,
    pub pid: Option<u32>,
    pub state: WorkerState,
    pub started_at: Option<SystemTime>,
    pub restarts: u64,
    pub last_exit: Option<ExitReason>,
    /// The last health check passed.
    pub healthy: bool,
    pub usage: Option<limits::ProcessUsage>,
    /// The cores the worker may run on (its affinity list).
    pub cores_allowed: Option<String>,
    pub deployment: Deployment,
    pub limits: Limits,
    pub enforced: Enforcements,
    /// The worker's status of its model, while it serves.
    pub model_status: Option<WorkerModel>,
}
