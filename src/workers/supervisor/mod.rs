//! The supervisor: starts one `ferroserve worker` process per deployed model, waits
//! for it to serve, restarts it with exponential backoff when it exits or stops
//! answering health checks, gives up into crash-loop after too many failures in a
//! window, and stops it (drained) when the deployment stops.
//!
//! Invariants:
//! * every worker is started from one long-lived spawner thread, so its
//!   parent-death signal (which fires when the *thread* that forked it exits) fires
//!   only when this process dies; each worker leads its own process group, and every
//!   kill goes to the group: no worker, and nothing a worker started, outlives us;
//! * the serving map (`slots`) is an `ArcSwap`: forwarding reads it without a lock,
//!   and a slot's port and readiness are atomics;
//! * a redeploy starts the new worker before the old one leaves the map: requests
//!   go to the old one until the new one is ready, then the old one drains;
//! * each slot has one supervision task, owned by the slot (its `stop` token ends it,
//!   and the task kills and reaps its process before it returns);
//! * a deploy and a stop run on tasks of their own: a caller dropped halfway (a
//!   client that left) never leaves a worker running outside the map, nor one out
//!   of the map that was not told to stop;
//! * what the main server reports of a deployed model (versions, states, labels)
//!   is the worker's own word: its `/models/status` entry, read when it turns ready
//!   and with every health check, cleared when it exits. The main server holds no
//!   copy of the model to answer from (`crate::sources`, isolated models);
//! * the store's `workers` row of a model is its deployed slot's: only the slot in
//!   the map writes it (`record`), so a refused deploy (whose slot never joins the
//!   map) and an old worker draining leave it as it was.
//!
//! Here: the deployments map (deploy, restore, stop, shutdown, statuses, where to
//! forward). `supervise`: one slot's loop (readiness, health checks, restarts,
//! crash-loop). `process`: the process mechanics (command line, spawner thread,
//! signals to the process group, how a process ended). `records`: the `workers`
//! row, and the workers' own stores moved into the main one (their state
//! directories).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::limits::{self, Enforcement, WorkerCgroups};
use super::resources::Limits;
use super::status::{Enforcements, ExitReason, WorkerModel, WorkerState, WorkerStatus};
use crate::api::ApiError;
use crate::manager::VersionState;
use crate::sources::Deployment;
use crate::store::Store;

mod process;
mod records;
mod supervise;

pub use process::connect_ip;
use process::{supervisor_token, Spawner};

/// Where a deployed model's requests go: its worker's address, and its deployment,
/// which says why when the worker fails a request
/// ([`Supervisor::forwarding_failed`]).
pub struct Target {
    pub addr: SocketAddr,
    slot: Arc<Slot>,
}

/// Why a deployed model's requests cannot reach its worker now (a 503), and
/// whether that heals by itself: a worker starting or restarting does, one in
/// crash-loop is not restarted (it needs a deploy or `stop_deployment`), so its
/// answer invites no retry (no `Retry-After`).
#[derive(Debug, Clone, PartialEq)]
pub struct Unreachable {
    pub message: String,
    pub heals: bool,
}

/// How workers are started, from the server's settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The ferroserve binary (`worker` subcommand).
    pub binary: PathBuf,
    /// Ports workers may listen on (`--worker-ports`), tried in order.
    pub ports: (u16, u16),
    /// The address workers bind (`--worker-bind`).
    pub bind: IpAddr,
    /// Where workers keep their own state (`<state dir>/workers`).
    pub state_dir: PathBuf,
    pub onnxruntime_path: Option<PathBuf>,
    pub tensorflow_path: Option<PathBuf>,
    /// The access rules each worker enforces on its own port, as the main server
    /// does on its: the tokens file (`--auth-tokens`), whether `/metrics` needs a
    /// token (`--metrics-require-token`), and the metrics' second path (TF Serving's
    /// `--monitoring_config_file`), which needs what `/metrics` needs.
    pub auth_tokens: Option<PathBuf>,
    pub metrics_require_token: bool,
    /// The main server's access rules: the tokens in force in it when a worker
    /// starts are handed to the worker (hashes, in its environment), which serves
    /// with them while the tokens file does not parse (`crate::auth`).
    pub main_auth: Option<Arc<crate::auth::Auth>>,
    pub metrics_path: Option<String>,
    /// The main server's URL (its `public_url`), which a worker names when it
    /// refuses a management request on its port (`Settings::management_server`).
    pub main_server_url: Option<String>,
    /// The main server's bounds on one request (rows, body and answer sizes, body
    /// and head timeouts, the default deadline), which each worker enforces as the
    /// main server does, and its defaults for what a model's `config.toml` leaves out.
    pub inherited: crate::workers::worker::Inherited,
    /// How long a worker may take to serve its model.
    pub startup_timeout: Duration,
    /// How long a stopping worker drains at least: the main server's
    /// `--shutdown-timeout`. A deployment whose `timeout` is longer drains that
    /// long (`process::drain_of`); at the server's shutdown, when the main server
    /// has drained its own requests already, every worker gets only this.
    pub stop_timeout: Duration,
    /// Failures within `crash_loop_window` that put a deployment in crash-loop; as
    /// many runs in a row whose worker never served do too, however far apart.
    pub crash_loop_failures: usize,
    pub crash_loop_window: Duration,
    /// Whether limits may use cgroup v1 groups (`--worker-cgroups`).
    pub cgroups: bool,
}

/// One deployment's worker and its supervision.
struct Slot {
    model: String,
    model_dir: PathBuf,
    deployment: Deployment,
    limits: Limits,
    enforced: Enforcements,
    cgroups: WorkerCgroups,
    /// Where the worker listens; kept across restarts.
    port: AtomicU16,
    /// Where the worker's gRPC API listens (an ephemeral port, chosen at each start).
    grpc_port: AtomicU16,
    /// A channel to `grpc_port`, made on first use and remade when the port changes.
    grpc_channel: Mutex<Option<(u16, tonic::transport::Channel)>>,
    /// Set while the worker serves; forwarding answers 503 otherwise.
    ready: AtomicBool,
    /// Set once a worker of this slot has served: a model that cannot load before
    /// that is a failed deployment (crash-loop at once), not a crash to retry.
    ever_ready: AtomicBool,
    pid: AtomicU32,
    restarts: AtomicU64,
    /// Everything else the registry shows (read rarely, written on state changes).
    status: Mutex<SlotStatus>,
    state: watch::Sender<WorkerState>,
    /// Ends the supervision task (which stops the worker).
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct SlotStatus {
    started_at: Option<SystemTime>,
    last_exit: Option<ExitReason>,
    healthy: bool,
    model_status: Option<WorkerModel>,
}

/// One per-deployment gauge's value of a deployment, if it has one.
type GaugeOf = dyn Fn(&WorkerStatus) -> Option<f64>;

/// A Prometheus label value, escaped as the text format requires.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Supervisor {
    config: WorkerConfig,
    /// The deployments forwarding reaches, by model (read without a lock).
    slots: ArcSwap<HashMap<String, Arc<Slot>>>,
    /// Serialises changes to `slots` (deploy, stop) per server.
    changing: tokio::sync::Mutex<()>,
    spawner: Spawner,
    pub(super) client: super::forward::Client,
    store: Option<Arc<Store>>,
    /// Old workers draining after a redeploy; awaited at shutdown.
    draining: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Cancelled at the server's shutdown: workers draining then, or stopped from
    /// then on, drain for `WorkerConfig::stop_timeout` at most (the main server's
    /// requests are over), however long their own drain (`process::terminate`).
    pub(super) shutting_down: CancellationToken,
    /// Held while a worker's records move into the main store (`harvest`): one
    /// mover at a time, so that no row is read twice.
    harvesting: tokio::sync::Mutex<()>,
    /// Held while a slot's `workers` row is written (`record`): a slot writes it
    /// only while it is the one in the map, checked under this lock, so that a
    /// slot that is not (a refused deploy's, an old worker draining) never
    /// overwrites the row of the worker that serves.
    recording: tokio::sync::Mutex<()>,
    /// This server's token for its own workers (random, made at start, never
    /// stored, logged or shown): each worker gets it in its environment and accepts
    /// it with every scope, so health checks, status reads and the main server's
    /// own requests pass a worker's tokens file.
    token: String,
    /// `Bearer <token>`, marked sensitive (kept out of hyper's debug output).
    authorization: axum::http::HeaderValue,
}

impl Supervisor {
    pub fn new(
        config: WorkerConfig,
        store: Option<Arc<Store>>,
    ) -> std::io::Result<Arc<Supervisor>> {
        if config.cgroups {
            limits::remove_stale_groups();
        }
        let spawner = Spawner::start()?;
        let token = supervisor_token()?;
        let mut authorization = axum::http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(std::io::Error::other)?;
        authorization.set_sensitive(true);
        Ok(Arc::new(Supervisor {
            token,
            authorization,
            config,
            slots: ArcSwap::from_pointee(HashMap::new()),
            changing: tokio::sync::Mutex::new(()),
            spawner,
            client: super::forward::client(),
            store,
            draining: Mutex::new(Vec::new()),
            shutting_down: CancellationToken::new(),
            harvesting: tokio::sync::Mutex::new(()),
            recording: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// The `Authorization` value workers accept from this server (every scope).
    pub(crate) fn authorization(&self) -> &axum::http::HeaderValue {
        &self.authorization
    }

    /// Whether `model` is deployed in a worker; where to forward its requests when it
    /// is ready (`Err` says why not).
    pub fn target(&self, model: &str) -> Option<Result<Target, Unreachable>> {
        let slots = self.slots.load();
        let slot = slots.get(model)?;
        let state = *slot.state.borrow();
        if slot.ready.load(Ordering::Acquire) {
            Some(Ok(Target {
                addr: SocketAddr::new(
                    connect_ip(self.config.bind),
                    slot.port.load(Ordering::Relaxed),
                ),
                slot: slot.clone(),
            }))
        } else {
            Some(Err(Unreachable {
                message: state.unavailable(model),
                heals: state != WorkerState::CrashLoop,
            }))
        }
    }

    /// Why a request forwarded to `target` got no answer (`error`, the
    /// connection's failure), for the client: a worker that ended while the request
    /// was in flight (since `sent`) is seen ending by its supervision within moments
    /// (its exit is reaped at once), so this waits for that, briefly, and says why
    /// it ended; killed past its memory limit (by the kernel's OOM killer or its RSS
    /// watchdog), that is out of memory. Whether retrying can help: not once the
    /// deployment is in crash-loop.
    pub(crate) async fn forwarding_failed(
        &self,
        target: &Target,
        sent: SystemTime,
        error: &(dyn std::fmt::Display + Sync),
    ) -> (ApiError, bool) {
        let slot = &target.slot;
        let mut state = slot.state.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            state.wait_for(|s| *s != WorkerState::Ready),
        )
        .await;
        let state = *slot.state.borrow();
        let exit = lock(&slot.status)
            .last_exit
            .clone()
            .filter(|e| e.at >= sent);
        let model = &slot.model;
        let heals = state != WorkerState::CrashLoop;
        let then = match state {
            WorkerState::CrashLoop => state.unavailable(model),
            WorkerState::Starting | WorkerState::Restarting => {
                "it is being restarted, retry shortly".to_string()
            }
            // Still serving (it did not end), or replaced by a new worker.
            WorkerState::Ready | WorkerState::Stopped => "retry shortly".to_string(),
        };
        let error = match exit {
            Some(exit) if exit.oom => ApiError::OutOfMemory(format!(
                "{}: model {model:?}'s worker ended while answering this request: {}; {then}",
                crate::api::OUT_OF_MEMORY,
                exit.reason
            )),
            // Told to stop (replaced by a redeploy, a stop_deployment, the server's
            // shutdown): it drained, and this request outlasted the drain.
            _ if slot.stop.is_cancelled() => ApiError::Unavailable(format!(
                "model {model:?}'s worker was replaced or stopped while this request ran, \
                 and the request outlasted its drain ({} s, the longer of the deployment's \
                 timeout and --shutdown-timeout); retry shortly",
                self.stop_drain(slot).as_secs_f64()
            )),
            Some(exit) => ApiError::Unavailable(format!(
                "model {model:?}'s worker ended while answering this request: {}; {then}",
                exit.reason
            )),
            None => ApiError::Unavailable(format!(
                "model {model:?}'s worker at {} did not answer ({error}); {then}",
                target.addr
            )),
        };
        (error, heals)
    }

    /// Like [`Supervisor::target`], for gRPC: a channel to the worker's gRPC port.
    pub fn grpc_target(&self, model: &str) -> Option<Result<tonic::transport::Channel, String>> {
        let slots = self.slots.load();
        let slot = slots.get(model)?;
        if !slot.ready.load(Ordering::Acquire) {
            return Some(Err(slot.state.borrow().unavailable(model)));
        }
        let port = slot.grpc_port.load(Ordering::Relaxed);
        let mut cached = lock(&slot.grpc_channel);
        if let Some((p, channel)) = cached.as_ref() {
            if *p == port {
                return Some(Ok(channel.clone()));
            }
        }
        let uri = format!(
            "http://{}",
            SocketAddr::new(connect_ip(self.config.bind), port)
        );
        let channel = match tonic::transport::Endpoint::from_shared(uri) {
            Ok(e) => e
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .connect_lazy(),
            Err(e) => return Some(Err(format!("cannot reach model {model}'s worker: {e}"))),
        };
        *cached = Some((port, channel.clone()));
        Some(Ok(channel))
    }

    pub fn has_deployments(&self) -> bool {
        !self.slots.load().is_empty()
    }

    /// Starts `model` in a worker with `deployment`'s limits and waits until it
    /// serves. A deployed model gets a new worker (started before the old one
    /// stops). `preferred_port` is tried first (the port before a restart).
    pub async fn deploy(
        self: &Arc<Self>,
        model: &str,
        model_dir: PathBuf,
        deployment: Deployment,
    ) -> Result<WorkerStatus, ApiError> {
        // On a task of its own: a caller dropped while the worker starts must not
        // leave a worker running that the map does not hold.
        let (this, model) = (self.clone(), model.to_string());
        tokio::spawn(async move { this.deploy_now(&model, model_dir, deployment).await })
            .await
            .map_err(|e| ApiError::Internal(format!("the deployment failed: {e}")))?
    }

    async fn deploy_now(
        self: &Arc<Self>,
        model: &str,
        model_dir: PathBuf,
        deployment: Deployment,
    ) -> Result<WorkerStatus, ApiError> {
        let _changing = self.changing.lock().await;
        let slot = self.start_slot(model, model_dir, deployment, None)?;
        let mut state = slot.state.subscribe();
        let ready = {
            let waited = tokio::time::timeout(
                self.config.startup_timeout + Duration::from_secs(5),
                state.wait_for(|s| {
                    matches!(
                        s,
                        WorkerState::Ready | WorkerState::CrashLoop | WorkerState::Stopped
                    )
                }),
            )
            .await;
            matches!(&waited, Ok(Ok(s)) if **s == WorkerState::Ready)
        };
        if !ready {
            let why = lock(&slot.status)
                .last_exit
                .as_ref()
                .map(|e| e.reason.clone())
                .unwrap_or_else(|| "it did not become ready in time".into());
            self.finish_slot(&slot).await;
            // Nothing of the failed worker stays behind: its events (why it could
            // not load) move into the main store, as a retired worker's do.
            self.retire_state_dir(&slot).await;
            return Err(ApiError::Unavailable(format!(
                "model {model:?}'s worker did not start: {why}"
            )));
        }
        let old = self.insert(slot.clone());
        if let Some(old) = old {
            // Switched: the old worker finishes what it has, then goes.
            let this = self.clone();
            let handle = tokio::spawn(async move {
                // Requests that read the old target just before the switch reach it
                // before it starts draining.
                tokio::time::sleep(Duration::from_millis(500)).await;
                this.finish_slot(&old).await;
                this.retire_state_dir(&old).await;
            });
            lock(&self.draining).push(handle);
        }
        self.record(&slot).await;
        Ok(self.status_of(&slot))
    }

    /// Starts the worker of a deployment recorded before a restart, without waiting
    /// for it (forwarding answers 503 until it is ready).
    pub async fn restore(
        self: &Arc<Self>,
        model: &str,
        model_dir: PathBuf,
        deployment: Deployment,
        preferred_port: Option<u16>,
    ) -> Result<(), ApiError> {
        let _changing = self.changing.lock().await;
        let slot = self.start_slot(model, model_dir, deployment, preferred_port)?;
        self.insert(slot);
        Ok(())
    }

    /// Stops `model`'s worker (drained); false when it had none.
    pub async fn stop(self: &Arc<Self>, model: &str) -> bool {
        self.stop_with_grace(model, Duration::ZERO).await
    }

    /// Stops forwarding `model`'s requests, then (after a moment for requests that
    /// read the old target just before) drains and stops its worker: the main
    /// server serves the model itself again. False when it had no worker.
    pub async fn hand_back(self: &Arc<Self>, model: &str) -> bool {
        self.stop_with_grace(model, Duration::from_millis(500))
            .await
    }

    /// On a task of its own: a caller dropped once the worker has left the map
    /// (a client that left) must not leave it running with nothing tracking it.
    async fn stop_with_grace(self: &Arc<Self>, model: &str, grace: Duration) -> bool {
        let (this, model) = (self.clone(), model.to_string());
        tokio::spawn(async move { this.stop_now(&model, grace).await })
            .await
            .unwrap_or(false)
    }

    async fn stop_now(&self, model: &str, grace: Duration) -> bool {
        let _changing = self.changing.lock().await;
        let mut map = (**self.slots.load()).clone();
        let Some(slot) = map.remove(model) else {
            return false;
        };
        self.slots.store(Arc::new(map));
        if !grace.is_zero() {
            tokio::time::sleep(grace).await;
        }
        self.finish_slot(&slot).await;
        self.retire_state_dir(&slot).await;
        if let Some(store) = &self.store {
            let _one = self.recording.lock().await;
            if let Err(e) = store.forget_worker(model).await {
                tracing::warn!(model, "the stopped worker stays in the store: {e}");
            }
        }
        true
    }

    /// Stops every worker (server shutdown). Their rows stay in the store: the next
    /// start re-spawns them.
    pub async fn shutdown(&self) {
        self.shutting_down.cancel();
        let _changing = self.changing.lock().await;
        let slots: Vec<Arc<Slot>> = self.slots.load().values().cloned().collect();
        self.slots.store(Arc::new(HashMap::new()));
        let stops = slots.iter().map(|s| self.finish_slot(s));
        futures::future::join_all(stops).await;
        let draining: Vec<_> = lock(&self.draining).drain(..).collect();
        for handle in draining {
            let _ = handle.await;
        }
        // What they recorded up to their end is the main server's before it stops
        // (their state stays, for the next start to restart them).
        for slot in &slots {
            self.harvest(slot).await;
        }
    }

    /// Waits until `model`'s worker has done with `version` (an upload's new
    /// version, which the worker's own repository watch finds): it serves it, and
    /// no version outside `selected` (the versions its policy selects, when known)
    /// still serves; or its load failed (ERROR, or END with an error); or `until`. The worker is
    /// asked directly (every 50 ms), not through the supervision's once-a-second
    /// status, which is brought up to date with what it says. Answers the
    /// deployment's status then; `None` when the model is not deployed (any more).
    pub async fn wait_for_version(
        &self,
        model: &str,
        version: u64,
        selected: Option<&[u64]>,
        until: tokio::time::Instant,
    ) -> Option<WorkerStatus> {
        loop {
            let slot = self.slots.load().get(model).cloned()?;
            if slot.ready.load(Ordering::Acquire) {
                let addr = SocketAddr::new(
                    connect_ip(self.config.bind),
                    slot.port.load(Ordering::Relaxed),
                );
                if let Some(m) = self
                    .model_status(addr, model, slot.limits.probe_timeout())
                    .await
                {
                    // Served, and no version the policy no longer selects still
                    // is (the worker loads the new version before it unloads the
                    // old one); or failed.
                    let settled =
                        selected.is_none_or(|s| m.served_versions.iter().all(|v| s.contains(v)));
                    let done = (m.served_versions.contains(&version) && settled)
                        || m.versions.iter().any(|v| {
                            v.version == version
                                && (v.state == VersionState::Error.as_str()
                                    || (v.state == VersionState::End.as_str() && v.error.is_some()))
                        });
                    lock(&slot.status).model_status = Some(m);
                    if done {
                        return Some(self.status_of(&slot));
                    }
                }
            }
            if tokio::time::Instant::now() >= until {
                return Some(self.status_of(&slot));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every deployment's status, by model.
    pub fn statuses(&self) -> BTreeMap<String, WorkerStatus> {
        self.slots
            .load()
            .iter()
            .map(|(m, s)| (m.clone(), self.status_of(s)))
            .collect()
    }

    pub fn status(&self, model: &str) -> Option<WorkerStatus> {
        self.slots.load().get(model).map(|s| self.status_of(s))
    }

    /// Per-deployment gauges for the main server's `/metrics`, as Prometheus text
    /// made from the deployments of this moment. They are not kept in the metrics
    /// recorder, which can never forget a series: a stopped deployment's gauges
    /// (`ferroserve_worker_up` at 0, its last memory) would stay there for good.
    pub fn gauges_exposition(&self) -> String {
        let statuses = self.statuses();
        let families: [(&str, &str, &GaugeOf); 6] = [
            (
                "ferroserve_worker_up",
                "Whether the deployment's worker serves (1) or not (0).",
                &|s| Some(f64::from(u8::from(s.state == WorkerState::Ready))),
            ),
            (
                "ferroserve_worker_restarts",
                "Restarts of the deployment's worker.",
                &|s| Some(s.restarts as f64),
            ),
            (
                "ferroserve_worker_resident_memory_bytes",
                "Resident memory of the deployment's worker.",
                &|s| s.usage.map(|u| u.rss_bytes as f64),
            ),
            (
                "ferroserve_worker_cpu_seconds",
                "CPU time of the deployment's worker.",
                &|s| s.usage.map(|u| u.cpu_seconds),
            ),
            (
                "ferroserve_worker_memory_limit_bytes",
                "The deployment's memory limit.",
                &|s| s.limits.memory.map(|m| m as f64),
            ),
            (
                "ferroserve_worker_cpu_limit_cores",
                "The deployment's CPU limit, in cores.",
                &|s| s.limits.cpu,
            ),
        ];
        let mut text = String::new();
        for (name, help, value) in families {
            let samples: Vec<String> = statuses
                .iter()
                .filter_map(|(model, s)| {
                    let v = value(s)?;
                    Some(format!("{name}{{model=\"{}\"}} {v}\n", label_value(model)))
                })
                .collect();
            if samples.is_empty() {
                continue;
            }
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            text.extend(samples);
            text.push('\n');
        }
        text
    }

    fn status_of(&self, slot: &Slot) -> WorkerStatus {
        let pid = match slot.pid.load(Ordering::Relaxed) {
            0 => None,
            p => Some(p),
        };
        let status = lock(&slot.status);
        WorkerStatus {
            model: slot.model.clone(),
            host: connect_ip(self.config.bind),
            port: slot.port.load(Ordering::Relaxed),
            grpc_port: slot.grpc_port.load(Ordering::Relaxed),
            pid,
            state: *slot.state.borrow(),
            started_at: status.started_at,
            restarts: slot.restarts.load(Ordering::Relaxed),
            last_exit: status.last_exit.clone(),
            healthy: status.healthy,
            usage: pid.and_then(limits::process_usage),
            cores_allowed: pid.and_then(limits::allowed_cores),
            deployment: slot.deployment.clone(),
            limits: slot.limits,
            enforced: slot.enforced,
            model_status: status.model_status.clone(),
        }
    }

    /// Puts `slot` in the map; the slot it replaces.
    fn insert(&self, slot: Arc<Slot>) -> Option<Arc<Slot>> {
        let mut map = (**self.slots.load()).clone();
        let old = map.insert(slot.model.clone(), slot);
        self.slots.store(Arc::new(map));
        old
    }

    /// Makes a slot on a free port and starts its supervision task.
    fn start_slot(
        self: &Arc<Self>,
        model: &str,
        model_dir: PathBuf,
        deployment: Deployment,
        preferred_port: Option<u16>,
    ) -> Result<Arc<Slot>, ApiError> {
        let limits = Limits::parse(
            deployment.cpu_limit.as_deref(),
            deployment.memory_limit.as_deref(),
            deployment.timeout_secs,
        )
        .map_err(ApiError::InvalidArgument)?;
        let port = self.free_port(preferred_port)?;
        let cgroups = if self.config.cgroups {
            WorkerCgroups::create(
                &format!("ferroserve-{}-{model}-{port}", std::process::id()),
                &limits,
            )
        } else {
            WorkerCgroups::default()
        };
        let enforced = Enforcements {
            cpu_limit: match (limits.cpu, &cgroups.cpu) {
                (None, _) => Enforcement::None,
                (Some(_), Some(_)) => Enforcement::AffinityAndCgroup,
                (Some(_), None) => Enforcement::Affinity,
            },
            memory_limit: match (limits.memory, &cgroups.memory) {
                (None, _) => Enforcement::None,
                (Some(_), Some(_)) => Enforcement::Cgroup,
                (Some(_), None) => Enforcement::RlimitAndWatchdog,
            },
            timeout: match limits.timeout_secs {
                None => Enforcement::None,
                Some(_) => Enforcement::RequestDeadline,
            },
        };
        let (state, _) = watch::channel(WorkerState::Starting);
        let slot = Arc::new(Slot {
            model: model.to_string(),
            model_dir,
            deployment,
            limits,
            enforced,
            cgroups,
            port: AtomicU16::new(port),
            grpc_port: AtomicU16::new(0),
            grpc_channel: Mutex::new(None),
            ready: AtomicBool::new(false),
            ever_ready: AtomicBool::new(false),
            pid: AtomicU32::new(0),
            restarts: AtomicU64::new(0),
            status: Mutex::new(SlotStatus::default()),
            state,
            stop: CancellationToken::new(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(self.clone().supervise(slot.clone()));
        *lock(&slot.task) = Some(task);
        Ok(slot)
    }

    /// Ends a slot's supervision (which drains and stops its worker) and removes its
    /// cgroups.
    async fn finish_slot(&self, slot: &Slot) {
        slot.ready.store(false, Ordering::Release);
        slot.stop.cancel();
        let task = lock(&slot.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        slot.cgroups.remove();
    }

    /// The next port of the range that no deployment uses and nothing listens on. A
    /// deployment in crash-loop runs no process and holds no port.
    fn free_port(&self, preferred: Option<u16>) -> Result<u16, ApiError> {
        let used: Vec<u16> = self
            .slots
            .load()
            .values()
            .filter(|s| {
                !matches!(
                    *s.state.borrow(),
                    WorkerState::CrashLoop | WorkerState::Stopped
                )
            })
            .map(|s| s.port.load(Ordering::Relaxed))
            .collect();
        let (first, last) = self.config.ports;
        let candidates = preferred
            .into_iter()
            .filter(|p| (first..=last).contains(p))
            .chain(first..=last);
        for port in candidates {
            if used.contains(&port) {
                continue;
            }
            if std::net::TcpListener::bind(SocketAddr::new(self.config.bind, port)).is_ok() {
                return Ok(port);
            }
        }
        Err(ApiError::Unavailable(format!(
            "no free worker port: every port of --worker-ports {first}-{last} is in use \
             ({} by deployments); stop a deployment or widen the range",
            used.len()
        )))
    }

    /// How long `slot`'s worker drains when its supervision stops it now: its
    /// drain (`process::drain_of`), or at the server's shutdown only
    /// `WorkerConfig::stop_timeout`.
    fn stop_drain(&self, slot: &Slot) -> Duration {
        if self.shutting_down.is_cancelled() {
            self.config.stop_timeout
        } else {
            process::drain_of(&self.config, slot)
        }
    }

    fn set_state(&self, slot: &Slot, state: WorkerState) {
        slot.ready
            .store(state == WorkerState::Ready, Ordering::Release);
        slot.state.send_replace(state);
        tracing::info!(model = %slot.model, state = state.as_str(), "worker");
    }
}
