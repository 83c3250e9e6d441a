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
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enforcements {
    pub cpu_limit: Enforcement,
    pub memory_limit: Enforcement,
    pub timeout: Enforcement,
}

/// The most bytes of a deployment's `environment` its worker is told
/// ([`AppliedDeployment::of`]). The description travels on the worker's command
/// line, where one argument holds at most 128 KiB (Linux's `MAX_ARG_STRLEN`): a
/// longer environment, which `POST /deploy` takes, would keep the worker from
/// starting at all.
pub const MAX_PASSED_ENVIRONMENT_BYTES: usize = 4096;

/// A deployment as its supervisor applies it to the worker's process: what
/// `POST /deploy` asked for, and how each limit is enforced. The supervisor passes
/// it to the worker (`ferroserve worker --deployment JSON`, kept in
/// `Settings::worker_deployment`), and the worker reports it as its model's
/// deployment (its `/models/status`, its console): the CPU and memory limits are
/// the supervisor's doing (cgroups, pinned cores, `RLIMIT_AS`, set before the
/// worker's code runs), so the worker could not tell them from what it sees of
/// itself. It holds nothing secret (the registry shows all of it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedDeployment {
    pub environment: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
    /// The request deadline in seconds.
    pub timeout_secs: Option<f64>,
    pub enforcement: Enforcements,
}

impl AppliedDeployment {
    /// `deployment` as applied with `enforcement`. An environment longer than
    /// [`MAX_PASSED_ENVIRONMENT_BYTES`] is cut there, at a character's boundary, and
    /// ends in `…` (the main server's status and registry keep it whole).
    pub fn of(deployment: &Deployment, enforcement: Enforcements) -> AppliedDeployment {
        let environment = deployment.environment.as_ref().map(|e| {
            if e.len() <= MAX_PASSED_ENVIRONMENT_BYTES {
                return e.clone();
            }
            let mut end = MAX_PASSED_ENVIRONMENT_BYTES;
            while !e.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &e[..end])
        });
        AppliedDeployment {
            environment,
            cpu_limit: deployment.cpu_limit.clone(),
            memory_limit: deployment.memory_limit.clone(),
            timeout_secs: deployment.timeout_secs,
            enforcement,
        }
    }

    /// The deployment's settings, as `POST /deploy` gave them.
    pub fn deployment(&self) -> Deployment {
        Deployment {
            environment: self.environment.clone(),
            cpu_limit: self.cpu_limit.clone(),
            memory_limit: self.memory_limit.clone(),
            timeout_secs: self.timeout_secs,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn enforced() -> Enforcements {
        Enforcements {
            cpu_limit: Enforcement::Affinity,
            memory_limit: Enforcement::RlimitAndWatchdog,
            timeout: Enforcement::RequestDeadline,
        }
    }

    /// What the supervisor tells its worker reads back as it was written, and is
    /// the deployment as given.
    #[test]
    fn an_applied_deployment_survives_its_json() {
        let given = Deployment {
            environment: Some("staging".into()),
            cpu_limit: Some("500m".into()),
            memory_limit: Some("256Mi".into()),
            timeout_secs: Some(2.0),
        };
        let applied = AppliedDeployment::of(&given, enforced());
        let text = serde_json::to_string(&applied).unwrap();
        let back: AppliedDeployment = serde_json::from_str(&text).unwrap();
        assert_eq!(back, applied);
        assert_eq!(back.deployment(), given);
        let nothing = AppliedDeployment::of(&Deployment::default(), enforced());
        assert_eq!(nothing.deployment(), Deployment::default());
        assert!(serde_json::from_str::<AppliedDeployment>(r#"{"enforcement": {}}"#).is_err());
    }

    /// An environment too long for a command-line argument is cut, at a character's
    /// boundary, so the worker still starts (one of 200 KiB kept it from starting).
    #[test]
    fn a_long_environment_is_cut_for_the_command_line() {
        let long = "é".repeat(100_000);
        let applied = AppliedDeployment::of(
            &Deployment {
                environment: Some(long.clone()),
                ..Deployment::default()
            },
            enforced(),
        );
        let cut = applied.environment.unwrap();
        assert!(
            cut.len() <= MAX_PASSED_ENVIRONMENT_BYTES + "…".len(),
            "{}",
            cut.len()
        );
        assert!(cut.ends_with('…') && long.starts_with(cut.trim_end_matches('…')));
        let short = AppliedDeployment::of(
            &Deployment {
                environment: Some("prod".into()),
                ..Deployment::default()
            },
            enforced(),
        );
        assert_eq!(short.environment.as_deref(), Some("prod"));
    }
}
