//! What the model pages show of each model: rows built from the status summaries
//! (`api::manage::ModelSummary`) and the registry's worker statuses, for the
//! templates to render.

use std::net::SocketAddr;

use serde_json::Value;

use crate::api::manage::ModelSummary;
use crate::workers::{AppliedDeployment, Enforcements, WorkerStatus};

/// One model as the pages show it.
pub(super) struct ModelRow {
    pub(super) name: String,
    pub(super) served: bool,
    pub(super) stopped: bool,
    pub(super) busy: bool,
    pub(super) source: &'static str,
    pub(super) versions: Vec<VersionRow>,
    pub(super) labels: Vec<(String, u64)>,
    pub(super) problems: Vec<String>,
    pub(super) events: Vec<EventRow>,
    pub(super) deployment: Vec<(&'static str, String)>,
    /// The worker process serving the model when it is deployed in one.
    pub(super) worker: Option<WorkerRow>,
}

pub(super) struct VersionRow {
    pub(super) version: u64,
    pub(super) state: &'static str,
    pub(super) format: String,
    pub(super) error: String,
}

pub(super) struct EventRow {
    pub(super) time: String,
    pub(super) version: String,
    pub(super) kind: String,
    /// The kind, and for a state change the states (`state LOADING → AVAILABLE`).
    pub(super) short: String,
    pub(super) detail: String,
    pub(super) who: String,
}

pub(super) fn time_text(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A deployment's settings as applied to its worker process: each limit with how
/// it is enforced (or that it is not).
pub(super) fn applied_rows(
    d: &crate::sources::Deployment,
    enforced: &Enforcements,
) -> Vec<(&'static str, String)> {
    let limit = |v: &Option<String>, e: crate::workers::limits::Enforcement| {
        v.as_ref()
            .map_or_else(|| "—".into(), |v| format!("{v} ({})", e.describe()))
    };
    vec![
        (
            "environment",
            d.environment.clone().unwrap_or_else(|| "—".into()),
        ),
        ("cpu limit", limit(&d.cpu_limit, enforced.cpu_limit)),
        (
            "memory limit",
            limit(&d.memory_limit, enforced.memory_limit),
        ),
        (
            "timeout",
            d.timeout_secs.map_or_else(
                || "—".into(),
                |t| format!("{t} s ({})", enforced.timeout.describe()),
            ),
        ),
    ]
}

impl ModelRow {
    /// `worker`: the model's worker process when it is deployed in one; its limits
    /// are then enforced (or said not to be), so they are not shown as merely recorded.
    /// `applied`: on the model's own worker, its deployment as the supervisor applied
    /// it to this process (`workers::applied_deployment`), shown the same way.
    pub(super) fn from_summary(
        m: ModelSummary,
        worker: Option<&WorkerStatus>,
        applied: Option<&AppliedDeployment>,
    ) -> ModelRow {
        let mut problems = Vec::new();
        problems.extend(m.config_error.clone());
        problems.extend(m.policy_warning.clone());
        problems.extend(m.label_errors.iter().cloned());
        if !m.settings_needing_reload.is_empty() {
            problems.push(format!(
                "changed settings take effect at the next reload: {}",
                m.settings_needing_reload.join(", ")
            ));
        }
        let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
        let deployment = match (&m.deployment, worker, applied) {
            (_, _, Some(a)) => applied_rows(&a.deployment(), &a.enforcement),
            (None, _, None) => Vec::new(),
            (Some(d), Some(w), None) => applied_rows(d, &w.enforced),
            (Some(d), None, None) => {
                vec![
                    ("environment", or_none(&d.environment)),
                    (
                        "timeout (request deadline, applied)",
                        d.timeout_secs
                            .map_or_else(|| "—".into(), |t| format!("{t} s")),
                    ),
                    ("cpu limit (recorded, not applied)", or_none(&d.cpu_limit)),
                    (
                        "memory limit (recorded, not applied)",
                        or_none(&d.memory_limit),
                    ),
                ]
            }
        };
        ModelRow {
            served: m.is_served(),
            stopped: m.stopped,
            busy: m.busy,
            source: if m.from_config_list {
                "config file"
            } else {
                "repository"
            },
            // Highest version first, as the status APIs list them.
            versions: m
                .versions
                .iter()
                .rev()
                .map(|v| VersionRow {
                    version: v.version,
                    state: v.state.as_str(),
                    format: v.format.unwrap_or("").to_string(),
                    error: v.error.clone().unwrap_or_default(),
                })
                .collect(),
            labels: m.labels.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            problems,
            // Newest first, as the store keeps them (the models list shows the
            // first three).
            events: m
                .recent_events
                .iter()
                .map(|e| EventRow {
                    time: time_text(e.at_ms),
                    version: e.version.map(|v| v.to_string()).unwrap_or_default(),
                    kind: e.kind.clone(),
                    short: match (
                        e.detail.get("from").and_then(Value::as_str),
                        e.detail.get("to").and_then(Value::as_str),
                    ) {
                        (Some(from), Some(to)) => format!("{} {from} → {to}", e.kind),
                        _ => e.kind.clone(),
                    },
                    detail: event_detail(&e.detail),
                    who: match (&e.actor, &e.client) {
                        (Some(a), Some(c)) => format!("{a} ({c})"),
                        (Some(a), None) => a.clone(),
                        (None, Some(c)) => c.clone(),
                        (None, None) => String::new(),
                    },
                })
                .collect(),
            deployment,
            worker: worker.map(WorkerRow::from_status),
            name: m.model,
        }
    }
}

/// A deployed model's worker process, as the registry reports it.
pub(super) struct WorkerRow {
    pub(super) state: &'static str,
    pub(super) healthy: bool,
    pub(super) pid: String,
    pub(super) service_url: String,
    pub(super) restarts: u64,
    pub(super) started: String,
    pub(super) last_exit: String,
    pub(super) rss: String,
    pub(super) cpu_seconds: String,
    pub(super) cores: String,
}

impl WorkerRow {
    pub(super) fn from_status(w: &WorkerStatus) -> WorkerRow {
        let base = format!("http://{}", SocketAddr::new(w.host, w.port));
        WorkerRow {
            state: w.state.as_str(),
            healthy: w.healthy,
            pid: w.pid.map(|p| p.to_string()).unwrap_or_else(|| "—".into()),
            // One path segment, as the templates encode theirs.
            service_url: format!("{base}/predict/{}", path_segment(&w.model)),
            restarts: w.restarts,
            started: w
                .started_at
                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .unwrap_or_else(|| "—".into()),
            last_exit: w.last_exit.as_ref().map_or_else(
                || "—".into(),
                |e| {
                    let oom = if e.oom { " (out of memory)" } else { "" };
                    format!("{}{oom}", e.reason)
                },
            ),
            rss: w.usage.map_or_else(
                || "—".into(),
                |u| format!("{:.1} MiB", u.rss_bytes as f64 / (1024.0 * 1024.0)),
            ),
            cpu_seconds: w
                .usage
                .map_or_else(|| "—".into(), |u| format!("{:.2} s", u.cpu_seconds)),
            cores: w.cores_allowed.clone().unwrap_or_else(|| "any".into()),
        }
    }
}

/// `text` encoded as one URL path segment: every byte but ASCII letters, digits and
/// `-._~` percent-encoded, `/` included (askama's `urlencode_strict`).
pub(super) fn path_segment(text: &str) -> String {
    match askama::filters::urlencode_strict(text) {
        Ok(encoded) => encoded.to_string(),
        Err(never) => match never {},
    }
}

/// An event's detail object as `key: value` pairs on one line.
pub(super) fn event_detail(detail: &Value) -> String {
    match detail {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
