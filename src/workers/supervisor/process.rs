//! A worker's process: its command line, the spawner thread that starts every
//! worker (so that each worker's parent-death signal, which fires when the *thread*
//! that forked it exits, fires only when this process dies), its process group's
//! signals, and the words for how it ended. The supervision itself (readiness,
//! health checks, restarts, crash-loop) is in `super`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{lock, Slot, WorkerConfig};
use crate::workers::limits::{self, PreExec};
use crate::workers::status::{AppliedDeployment, ExitReason};
use crate::workers::WATCHDOG_EXIT_CODE;

/// A started worker: its pid and the receiver of its exit status.
pub(super) struct Spawned {
    pub pid: u32,
    pub exited: oneshot::Receiver<std::io::Result<std::process::ExitStatus>>,
}

/// A request to the spawner thread.
struct SpawnJob {
    command: std::process::Command,
    reply: oneshot::Sender<std::io::Result<Spawned>>,
}

/// The one long-lived thread that starts every worker (see the module's note), and
/// a reaping thread per worker.
pub(super) struct Spawner {
    jobs: Mutex<std::sync::mpsc::Sender<SpawnJob>>,
}

impl Spawner {
    pub fn start() -> std::io::Result<Spawner> {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        // The spawner lives as long as the process (see the module's note).
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
        Ok(Spawner {
            jobs: Mutex::new(tx),
        })
    }

    /// Starts `command` on the spawner thread.
    pub async fn spawn(&self, command: std::process::Command) -> std::io::Result<Spawned> {
        let (reply, answer) = oneshot::channel();
        lock(&self.jobs)
            .send(SpawnJob { command, reply })
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
    }
}

/// The command line of `slot`'s worker: its flags, its environment (the
/// supervisor's `token`, the inherited Redis URL, none of the main server's other
/// settings) and what runs in the child between fork and exec (cgroups, cores,
/// address-space limit, parent-death signal).
pub(super) fn command(
    c: &WorkerConfig,
    token: &str,
    slot: &Slot,
    port: u16,
) -> std::process::Command {
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
        .arg(state_dir(c, slot, port))
        .arg("--drain-secs")
        .arg(drain_of(c, slot).as_secs_f64().to_string())
        .arg("--grpc-addr")
        .arg(SocketAddr::new(c.bind, slot.grpc_port.load(Ordering::Relaxed)).to_string())
        .arg("--parent-pid")
        .arg(std::process::id().to_string());
    if let Some(cores) = slot.limits.cores() {
        // As many threads as the cores it is pinned to: a limit above the
        // machine's cores (`"1000"`) gives no more threads than there are cores.
        let pinned = limits::cores_for(cores, usize::from(port)).len();
        command
            .arg("--threads")
            .arg(pinned.clamp(1, cores).to_string());
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
    // Every access rule the main server enforces, the worker enforces on its port
    // (clients may call it directly: `service_url`).
    if c.metrics_require_token {
        command.arg("--metrics-require-token");
    }
    if let Some(path) = &c.metrics_path {
        command.arg("--metrics-path").arg(path);
    }
    // Every bound on one request the main server enforces, the worker enforces
    // too, and a model's config.toml gets the same defaults (batching, ...): a
    // deployed model answers as an in-process one does.
    command.args(c.inherited.args());
    // Management goes through the main server only; the worker refuses it.
    if let Some(url) = &c.main_server_url {
        command.arg("--main-server").arg(url);
    }
    // What was decided for this process (limits as given, how each is enforced),
    // for the worker to report as its model's deployment: only the supervisor
    // knows (a cgroup, pinned cores, RLIMIT_AS are set before the worker runs).
    let applied = AppliedDeployment::of(&slot.deployment, slot.enforced);
    match serde_json::to_string(&applied) {
        Ok(json) => {
            command.arg("--deployment").arg(json);
        }
        // Strings, numbers and names serialize; were it ever to fail, the worker
        // still serves, and its status says only what it knows itself.
        Err(e) => {
            tracing::warn!(model = %slot.model, "the deployment is not passed to its worker: {e}")
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
    // In the environment, not on the command line (which every user may read): the
    // token, and the inherited settings that may be secret (the Redis URL).
    command.env(crate::workers::worker::SUPERVISOR_TOKEN_ENV, token);
    // The tokens in force here, for the worker to serve with while the tokens file
    // does not parse (a bad edit this server keeps its tokens through): hashes
    // only, read now, so a worker (re)started during such an edit gets the latest.
    if let Some(entries) = c.main_auth.as_ref().and_then(|a| a.tokens_in_force()) {
        let encoded = crate::auth::encode_entries(&entries);
        if encoded.len() <= MAX_TOKENS_IN_FORCE_BYTES {
            command.env(crate::workers::worker::TOKENS_IN_FORCE_ENV, encoded);
        } else {
            tracing::warn!(
                model = %slot.model,
                tokens = entries.len(),
                "the tokens in force are too many to hand to the worker in its environment: \
                 while the tokens file does not parse, it refuses every request that needs a token"
            );
        }
    }
    command.envs(c.inherited.environment());
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

/// The most bytes of tokens in force handed to a worker in one environment variable:
/// Linux refuses to start a process with one longer than 128 KiB (about 900
/// entries fit).
const MAX_TOKENS_IN_FORCE_BYTES: usize = 120 * 1024;

/// The state directory of `slot`'s worker on `port` (its store, its
/// [`DRAINING_FILE`](crate::workers::worker::DRAINING_FILE)).
pub(super) fn state_dir(c: &WorkerConfig, slot: &Slot, port: u16) -> PathBuf {
    c.state_dir.join(format!("{}-{port}", slot.model))
}

/// The file `slot`'s worker on `port` creates when it gets a stop signal, before
/// it drains ([`DRAINING_FILE`](crate::workers::worker::DRAINING_FILE)).
pub(super) fn draining_file(c: &WorkerConfig, slot: &Slot, port: u16) -> PathBuf {
    state_dir(c, slot, port).join(crate::workers::worker::DRAINING_FILE)
}

/// Whether an exit status is the end a stop signal from outside gives a process
/// that did not handle it (it came before the worker's handler was in place). The
/// supervisor itself sends `SIGTERM` only to a worker whose slot stops.
pub(super) fn ended_by_stop_signal(status: &std::io::Result<std::process::ExitStatus>) -> bool {
    matches!(status, Ok(s) if matches!(s.signal(), Some(libc::SIGTERM | libc::SIGINT)))
}

/// How long `slot`'s worker drains its in-flight requests once told to stop (a
/// redeploy, `stop_deployment`, a stop signal from outside): as long as a request
/// to it may last, its deployment's `timeout`, and at least the main server's
/// `--shutdown-timeout` (`WorkerConfig::stop_timeout`), which bounds a request
/// with no deployment timeout as it bounds the main server's own drain. The worker
/// is told (`--drain-secs`) and drains that long; it is killed only
/// [`KILL_MARGIN`] later.
pub(super) fn drain_of(c: &WorkerConfig, slot: &Slot) -> Duration {
    let longest_request = slot
        .limits
        .timeout_secs
        .and_then(|t| Duration::try_from_secs_f64(t).ok())
        .unwrap_or_default();
    c.stop_timeout.max(longest_request)
}

/// What a draining worker gets past its drain to exit (its inference threads, its
/// store's buffers) before it is killed.
pub(super) const KILL_MARGIN: Duration = Duration::from_secs(2);

/// SIGTERM (the worker drains for `drain`), then SIGKILL [`KILL_MARGIN`] past it;
/// reaps it. Once `shutdown` is cancelled (the server's shutdown, now or while it
/// drains), the drain is cut to `shutdown_drain` from the SIGTERM.
pub(super) async fn terminate(
    pid: u32,
    exited: &mut oneshot::Receiver<std::io::Result<std::process::ExitStatus>>,
    drain: Duration,
    shutdown: &CancellationToken,
    shutdown_drain: Duration,
) {
    kill_group(pid, libc::SIGTERM);
    let signalled = tokio::time::Instant::now();
    let cut_short = async {
        shutdown.cancelled().await;
        tokio::time::sleep_until(signalled + shutdown_drain.min(drain) + KILL_MARGIN).await;
    };
    tokio::select! {
        _ = &mut *exited => return,
        _ = tokio::time::sleep(drain + KILL_MARGIN) => {}
        _ = cut_short => {}
    }
    kill_group(pid, libc::SIGKILL);
    let _ = exited.await;
}

/// Why a worker's process ended, in words, with its OOM kill told apart (the
/// cgroup's OOM-kill count rose, or the RSS watchdog's exit code).
pub(super) fn exit_reason(
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

/// A fresh random token for a supervisor's workers (256 bits, URL-safe).
pub(super) fn supervisor_token() -> std::io::Result<String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| std::io::Error::other(format!("no randomness available: {e}")))?;
    Ok(format!(
        "fsw_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Sends `signal` to the process group `pid` leads (every worker leads its own).
pub(super) fn kill_group(pid: u32, signal: libc::c_int) {
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
