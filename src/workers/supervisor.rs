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
//!   copy of the model to answer from (`crate::sources`, isolated models).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::limits::{self, Enforcement, PreExec, WorkerCgroups};
use super::resources::Limits;
use super::status::{Enforcements, ExitReason, WorkerModel, WorkerState, WorkerStatus};
use super::WATCHDOG_EXIT_CODE;
use crate::api::ApiError;
use crate::sources::Deployment;
use crate::store::{Store, WorkerRow};

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
    pub auth_tokens: Option<PathBuf>,
    /// How long a worker may take to serve its model.
    pub startup_timeout: Duration,
    /// How long a stopping worker may drain before it is killed.
    pub stop_timeout: Duration,
    /// Failures within `crash_loop_window` that put a deployment in crash-loop.
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A started worker: its pid and the receiver of its exit status.
struct Spawned {
    pid: u32,
    exited: oneshot::Receiver<std::io::Result<std::process::ExitStatus>>,
}

/// How one started worker's run ended.
enum RunEnd {
    /// Its process exited (or could not be waited for).
    Exited(std::io::Result<std::process::ExitStatus>),
    /// It started but its model cannot load (the worker finished its initial load
    /// with no version serving); the worker was killed.
    Unservable(String),
    /// The slot stopped; the worker was drained and reaped.
    Stopped,
}

/// A request to the spawner thread.
struct SpawnJob {
    command: std::process::Command,
    reply: oneshot::Sender<std::io::Result<Spawned>>,
}

pub struct Supervisor {
    config: WorkerConfig,
    /// The deployments forwarding reaches, by model (read without a lock).
    slots: ArcSwap<HashMap<String, Arc<Slot>>>,
    /// Serialises changes to `slots` (deploy, stop) per server.
    changing: tokio::sync::Mutex<()>,
    spawner: Mutex<std::sync::mpsc::Sender<SpawnJob>>,
    pub(super) client: super::forward::Client,
    store: Option<Arc<Store>>,
    /// Old workers draining after a redeploy; awaited at shutdown.
    draining: Mutex<Vec<tokio::task::JoinHandle<()>>>,
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
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        // The spawner lives as long as the process (see the invariants above).
        std::thread::Builder::new()
            .name("ferroserve-spawner".into())
            .spawn(move || {
                for job in rx {
                    let SpawnJob { mut command, reply } = job;
                    let result = command.spawn().map(|mut child| {
                        let pid = child.id();
                        let (exit_tx, exited) = oneshot::channel();
                        // Reaps the worker when it exits; one thread per worker.
                        let _ = std::thread::Builder::new()
                            .name(format!("ferroserve-wait-{pid}"))
                            .spawn(move || {
                                let _ = exit_tx.send(child.wait());
                            });
                        Spawned { pid, exited }
                    });
                    let _ = reply.send(result);
                }
            })?;
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
            spawner: Mutex::new(tx),
            client: super::forward::client(),
            store,
            draining: Mutex::new(Vec::new()),
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
    pub fn target(&self, model: &str) -> Option<Result<SocketAddr, String>> {
        let slots = self.slots.load();
        let slot = slots.get(model)?;
        let state = *slot.state.borrow();
        if slot.ready.load(Ordering::Acquire) {
            Some(Ok(SocketAddr::new(
                connect_ip(self.config.bind),
                slot.port.load(Ordering::Relaxed),
            )))
        } else {
            Some(Err(format!(
                "model {model}'s worker is {}; retry shortly",
                state.as_str()
            )))
        }
    }

    /// Like [`Supervisor::target`], for gRPC: a channel to the worker's gRPC port.
    pub fn grpc_target(&self, model: &str) -> Option<Result<tonic::transport::Channel, String>> {
        let slots = self.slots.load();
        let slot = slots.get(model)?;
        if !slot.ready.load(Ordering::Acquire) {
            return Some(Err(format!(
                "model {model}'s worker is {}; retry shortly",
                slot.state.borrow().as_str()
            )));
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
                this.remove_state_dir(&old);
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
        metrics::gauge!("ferroserve_worker_up", "model" => model.to_string()).set(0.0);
        self.remove_state_dir(&slot);
        if let Some(store) = &self.store {
            if let Err(e) = store.forget_worker(model).await {
                tracing::warn!(model, "the stopped worker stays in the store: {e}");
            }
        }
        true
    }

    /// Stops every worker (server shutdown). Their rows stay in the store: the next
    /// start re-spawns them.
    pub async fn shutdown(&self) {
        let _changing = self.changing.lock().await;
        let slots: Vec<Arc<Slot>> = self.slots.load().values().cloned().collect();
        self.slots.store(Arc::new(HashMap::new()));
        let stops = slots.iter().map(|s| self.finish_slot(s));
        futures::future::join_all(stops).await;
        let draining: Vec<_> = lock(&self.draining).drain(..).collect();
        for handle in draining {
            let _ = handle.await;
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

    /// Per-deployment gauges for the main server's `/metrics`.
    pub fn refresh_gauges(&self) {
        for (model, s) in self.statuses() {
            let up = f64::from(u8::from(s.state == WorkerState::Ready));
            metrics::gauge!("ferroserve_worker_up", "model" => model.clone()).set(up);
            metrics::gauge!("ferroserve_worker_restarts", "model" => model.clone())
                .set(s.restarts as f64);
            if let Some(u) = s.usage {
                metrics::gauge!("ferroserve_worker_resident_memory_bytes", "model" => model.clone())
                    .set(u.rss_bytes as f64);
                metrics::gauge!("ferroserve_worker_cpu_seconds", "model" => model.clone())
                    .set(u.cpu_seconds);
            }
            if let Some(m) = s.limits.memory {
                metrics::gauge!("ferroserve_worker_memory_limit_bytes", "model" => model.clone())
                    .set(m as f64);
            }
            if let Some(c) = s.limits.cpu {
                metrics::gauge!("ferroserve_worker_cpu_limit_cores", "model" => model.clone())
                    .set(c);
            }
        }
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

    /// Removes a finished worker's state directory: its deployment is over or
    /// replaced (a restart of the main server keeps it, to start the worker again
    /// where it was).
    fn remove_state_dir(&self, slot: &Slot) {
        let dir = self.config.state_dir.join(format!(
            "{}-{}",
            slot.model,
            slot.port.load(Ordering::Relaxed)
        ));
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::debug!(dir = %dir.display(), "worker state not removed: {e}");
        }
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

    fn set_state(&self, slot: &Slot, state: WorkerState) {
        slot.ready
            .store(state == WorkerState::Ready, Ordering::Release);
        slot.state.send_replace(state);
        tracing::info!(model = %slot.model, state = state.as_str(), "worker");
    }

    /// Records the slot's row in the store (in the background: never on the
    /// request path, and a store that is down loses only the row).
    async fn record(&self, slot: &Slot) {
        let Some(store) = &self.store else { return };
        let s = self.status_of(slot);
        let row = WorkerRow {
            model: s.model.clone(),
            host: s.host.to_string(),
            port: s.port,
            pid: s.pid,
            state: s.state.as_str().to_string(),
            resources: super::status_json(&s).to_string(),
            started_ms: s
                .started_at
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64),
        };
        if let Err(e) = store.save_worker(&row).await {
            tracing::warn!(model = %s.model, "cannot record the worker: {e}");
        }
    }

    /// The command line of `slot`'s worker.
    fn command(&self, slot: &Slot, port: u16) -> std::process::Command {
        let c = &self.config;
        let mut command = std::process::Command::new(&c.binary);
        command
            .arg("worker")
            .arg("--model")
            .arg(&slot.model)
            .arg("--model-dir")
            .arg(&slot.model_dir)
            .arg("--rest-addr")
            .arg(SocketAddr::new(c.bind, port).to_string())
            .arg("--state-dir")
            .arg(c.state_dir.join(format!("{}-{port}", slot.model)))
            .arg("--grpc-addr")
            .arg(SocketAddr::new(c.bind, slot.grpc_port.load(Ordering::Relaxed)).to_string())
            .arg("--parent-pid")
            .arg(std::process::id().to_string());
        if let Some(cores) = slot.limits.cores() {
            command.arg("--threads").arg(cores.to_string());
        }
        if let Some(t) = slot.limits.timeout_secs {
            command.arg("--timeout-secs").arg(t.to_string());
        }
        if let (Some(m), None) = (slot.limits.memory, &slot.cgroups.memory) {
            command.arg("--rss-limit-bytes").arg(m.to_string());
        }
        for (flag, value) in [
            ("--onnxruntime-path", &c.onnxruntime_path),
            ("--tensorflow-path", &c.tensorflow_path),
            ("--auth-tokens", &c.auth_tokens),
        ] {
            if let Some(v) = value {
                command.arg(flag).arg(v);
            }
        }
        // The worker reads only its own flags: none of the main server's settings
        // from the environment may redirect it (a database URL, a config list).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FERROSERVE_")
                && key != "FERROSERVE_LOG"
                && key != "FERROSERVE_LOG_FORMAT"
            {
                command.env_remove(&key);
            }
        }
        // In the environment, not on the command line (which every user may read).
        command.env(super::worker::SUPERVISOR_TOKEN_ENV, &self.token);
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::inherit());
        let pre_exec = PreExec {
            procs_files: slot.cgroups.procs_files(),
            cores: slot
                .limits
                .cores()
                .map(|n| limits::cores_for(n, usize::from(port)))
                .unwrap_or_default(),
            address_space: match (slot.limits.memory, &slot.cgroups.memory) {
                (Some(m), None) => Some(limits::address_space_limit(m)),
                _ => None,
            },
            parent_pid: std::process::id() as libc::pid_t,
        };
        // SAFETY: `apply` makes only async-signal-safe system calls on data prepared
        // before the fork.
        unsafe {
            command.pre_exec(move || pre_exec.apply());
        }
        command
    }

    async fn spawn(&self, slot: &Slot, port: u16) -> std::io::Result<Spawned> {
        let (reply, answer) = oneshot::channel();
        let job = SpawnJob {
            command: self.command(slot, port),
            reply,
        };
        lock(&self.spawner)
            .send(job)
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
    }

    /// The supervision loop of one slot: start, wait ready, watch, restart with
    /// backoff; crash-loop after too many failures in the window.
    async fn supervise(self: Arc<Self>, slot: Arc<Slot>) {
        let mut failures: VecDeque<Instant> = VecDeque::new();
        loop {
            let port = slot.port.load(Ordering::Relaxed);
            // gRPC on a port the system picks (not one of --worker-ports).
            let grpc_port = std::net::TcpListener::bind(SocketAddr::new(self.config.bind, 0))
                .and_then(|l| l.local_addr())
                .map_or(0, |a| a.port());
            slot.grpc_port.store(grpc_port, Ordering::Relaxed);
            let oom_kills_before = slot.cgroups.oom_kills();
            let mut unservable = false;
            let exit = match self.spawn(&slot, port).await {
                Err(e) => ExitReason {
                    exit_code: None,
                    signal: None,
                    oom: false,
                    reason: format!("cannot start the worker: {e}"),
                    at: SystemTime::now(),
                },
                Ok(spawned) => {
                    slot.pid.store(spawned.pid, Ordering::Relaxed);
                    lock(&slot.status).started_at = Some(SystemTime::now());
                    match self.run_one(&slot, port, spawned).await {
                        RunEnd::Exited(status) => self.exit_reason(&slot, status, oom_kills_before),
                        RunEnd::Unservable(reason) => {
                            unservable = true;
                            ExitReason {
                                exit_code: None,
                                signal: None,
                                oom: false,
                                reason,
                                at: SystemTime::now(),
                            }
                        }
                        RunEnd::Stopped => {
                            slot.pid.store(0, Ordering::Relaxed);
                            lock(&slot.status).model_status = None;
                            self.set_state(&slot, WorkerState::Stopped);
                            return;
                        }
                    }
                }
            };
            slot.pid.store(0, Ordering::Relaxed);
            tracing::warn!(model = %slot.model, oom = exit.oom, "worker exited: {}", exit.reason);
            {
                let mut status = lock(&slot.status);
                status.last_exit = Some(exit);
                status.healthy = false;
                status.model_status = None;
            }
            let now = Instant::now();
            failures.push_back(now);
            while failures
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.config.crash_loop_window)
            {
                failures.pop_front();
            }
            // A model that never served cannot be fixed by starting it again.
            let never_served = unservable && !slot.ever_ready.load(Ordering::Relaxed);
            if never_served || failures.len() >= self.config.crash_loop_failures {
                self.set_state(&slot, WorkerState::CrashLoop);
                self.record(&slot).await;
                return;
            }
            self.set_state(&slot, WorkerState::Restarting);
            self.record(&slot).await;
            let backoff = Duration::from_millis(100)
                .saturating_mul(1 << (failures.len() - 1).min(7))
                .min(Duration::from_secs(10));
            tokio::select! {
                _ = slot.stop.cancelled() => {
                    self.set_state(&slot, WorkerState::Stopped);
                    return;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            slot.restarts.fetch_add(1, Ordering::Relaxed);
            // The port went to someone else while the worker was down: take another.
            if std::net::TcpListener::bind(SocketAddr::new(self.config.bind, port)).is_err() {
                match self.free_port(None) {
                    Ok(p) => slot.port.store(p, Ordering::Relaxed),
                    Err(e) => tracing::warn!(model = %slot.model, "{e}"),
                }
            }
        }
    }

    /// Runs one started worker until it exits, turns out unable to serve its
    /// model, or the slot stops (after draining and reaping it).
    async fn run_one(&self, slot: &Slot, port: u16, spawned: Spawned) -> RunEnd {
        let Spawned { pid, mut exited } = spawned;
        let addr = SocketAddr::new(connect_ip(self.config.bind), port);
        let ready_path = format!("/v2/models/{}/ready", slot.model);
        // Starting: poll readiness until the deadline.
        let deadline = Instant::now() + self.config.startup_timeout;
        loop {
            tokio::select! {
                status = &mut exited => return RunEnd::Exited(status.unwrap_or_else(|_| Err(std::io::Error::other("lost")))),
                _ = slot.stop.cancelled() => {
                    self.terminate(pid, &mut exited).await;
                    return RunEnd::Stopped;
                }
                _ = tokio::time::sleep(Duration::from_millis(25)) => {}
            }
            if super::forward::get_ok(&self.client, &self.authorization, addr, &ready_path).await {
                break;
            }
            // The worker is ready (its initial load is over) but its model is not:
            // no version of it can load. Asked in this order, so a model that
            // turned ready in between is not taken for one that failed.
            if super::forward::get_ok(&self.client, &self.authorization, addr, "/v2/health/ready")
                .await
                && !super::forward::get_ok(&self.client, &self.authorization, addr, &ready_path)
                    .await
            {
                let why = match self.model_status(addr, &slot.model).await {
                    Some(m) => unservable_reason(&m),
                    None => "no version of it loads".to_string(),
                };
                kill_group(pid, libc::SIGKILL);
                let _ = (&mut exited).await;
                return RunEnd::Unservable(format!(
                    "the worker cannot serve model {}: {why}",
                    slot.model
                ));
            }
            if Instant::now() >= deadline {
                kill_group(pid, libc::SIGKILL);
                let _ = (&mut exited).await;
                return RunEnd::Exited(Err(std::io::Error::other(format!(
                    "the worker did not serve its model within {:?}",
                    self.config.startup_timeout
                ))));
            }
        }
        {
            let model_status = self.model_status(addr, &slot.model).await;
            let mut status = lock(&slot.status);
            status.healthy = true;
            status.model_status = model_status;
        }
        slot.ever_ready.store(true, Ordering::Relaxed);
        self.set_state(slot, WorkerState::Ready);
        self.record(slot).await;
        // Serving: a liveness check every second; three failures in a row kill it
        // (then it is restarted like any exit).
        let mut failed_checks = 0;
        loop {
            tokio::select! {
                status = &mut exited => {
                    slot.ready.store(false, Ordering::Release);
                    return RunEnd::Exited(status.unwrap_or_else(|_| Err(std::io::Error::other("lost"))));
                }
                _ = slot.stop.cancelled() => {
                    self.terminate(pid, &mut exited).await;
                    return RunEnd::Stopped;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let healthy =
                super::forward::get_ok(&self.client, &self.authorization, addr, "/v2/health/live")
                    .await;
            // A status the worker does not give (it is busy, or just failed) keeps
            // the last one.
            let model_status = if healthy {
                self.model_status(addr, &slot.model).await
            } else {
                None
            };
            {
                let mut status = lock(&slot.status);
                status.healthy = healthy;
                if model_status.is_some() {
                    status.model_status = model_status;
                }
            }
            failed_checks = if healthy { 0 } else { failed_checks + 1 };
            if failed_checks >= 3 {
                tracing::warn!(model = %slot.model, pid, "worker failed 3 health checks; killing it");
                kill_group(pid, libc::SIGKILL);
            }
        }
    }

    /// The worker's status of its model (its `/models/status` entry), if it answers.
    async fn model_status(&self, addr: SocketAddr, model: &str) -> Option<WorkerModel> {
        #[derive(serde::Deserialize)]
        struct Entry {
            model_id: String,
            #[serde(flatten)]
            status: WorkerModel,
        }
        #[derive(serde::Deserialize)]
        struct Status {
            models: Vec<Entry>,
        }
        let body =
            super::forward::get_body(&self.client, &self.authorization, addr, "/models/status")
                .await?;
        let status: Status = serde_json::from_slice(&body).ok()?;
        status
            .models
            .into_iter()
            .find(|e| e.model_id == model)
            .map(|e| e.status)
    }

    /// SIGTERM (the worker drains), then SIGKILL past the stop timeout; reaps it.
    async fn terminate(
        &self,
        pid: u32,
        exited: &mut oneshot::Receiver<std::io::Result<std::process::ExitStatus>>,
    ) {
        kill_group(pid, libc::SIGTERM);
        if tokio::time::timeout(self.config.stop_timeout, &mut *exited)
            .await
            .is_err()
        {
            kill_group(pid, libc::SIGKILL);
            let _ = exited.await;
        }
    }

    fn exit_reason(
        &self,
        slot: &Slot,
        status: std::io::Result<std::process::ExitStatus>,
        oom_kills_before: Option<u64>,
    ) -> ExitReason {
        let at = SystemTime::now();
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                return ExitReason {
                    exit_code: None,
                    signal: None,
                    oom: false,
                    reason: e.to_string(),
                    at,
                }
            }
        };
        let (code, signal) = (status.code(), status.signal());
        let cgroup_oom = signal == Some(libc::SIGKILL)
            && match (oom_kills_before, slot.cgroups.oom_kills()) {
                (Some(before), Some(after)) => after > before,
                _ => false,
            };
        let watchdog_oom = code == Some(WATCHDOG_EXIT_CODE);
        let limit = slot.deployment.memory_limit.as_deref().unwrap_or("?");
        let reason = if cgroup_oom {
            format!("killed by the kernel's OOM killer past its memory limit ({limit})")
        } else if watchdog_oom {
            format!("its RSS watchdog stopped it past its memory limit ({limit})")
        } else if let Some(sig) = signal {
            format!("killed by signal {sig}")
        } else {
            format!("exited with code {}", code.unwrap_or(-1))
        };
        ExitReason {
            exit_code: code,
            signal,
            oom: cgroup_oom || watchdog_oom,
            reason,
            at,
        }
    }
}

/// A fresh random token for a supervisor's workers (256 bits, URL-safe).
fn supervisor_token() -> std::io::Result<String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| std::io::Error::other(format!("no randomness available: {e}")))?;
    Ok(format!(
        "fsw_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Why no version of a worker's model serves, from its status.
fn unservable_reason(model: &WorkerModel) -> String {
    let mut why: Vec<String> = model
        .versions
        .iter()
        .filter_map(|v| {
            v.error
                .as_ref()
                .map(|e| format!("version {}: {e}", v.version))
        })
        .collect();
    why.extend(model.config_error.clone());
    if why.is_empty() {
        "it has no version that loads".to_string()
    } else {
        why.join("; ")
    }
}

/// Sends `signal` to the process group `pid` leads (every worker leads its own).
fn kill_group(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// The address to reach a worker bound to `bind` (loopback for an unspecified bind).
pub fn connect_ip(bind: IpAddr) -> IpAddr {
    if bind.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        bind
    }
}
