//! One deployment's supervision: start its worker, wait until it serves its model,
//! check its health every second, and restart it with exponential backoff when it
//! exits or fails three checks in a row; crash-loop after too many failures in the
//! window or as many starts in a row that never served (each may take the whole
//! start deadline, longer than the window), or at once when its model never
//! served (starting it again cannot fix that). A stop signal from outside (an
//! operator's `kill`, a container runtime) is no failure: the worker is restarted,
//! and it does not count toward crash-loop.
//! The deployments map, deploy and stop are in `super`; the process mechanics in
//! `super::process`.
//!
//! Invariant: only a definite answer decides a start. A readiness probe that gets
//! no answer in time (a worker starved of CPU by a low `cpu_limit` answers some
//! probes late) is asked again, until the start deadline; a worker is taken for
//! one whose model cannot load only when it said so itself.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::process::{connect_ip, exit_reason, kill_group, terminate, Spawned};
use super::{lock, process, Slot, Supervisor};
use crate::workers::forward::{self, Probe};
use crate::workers::status::{ExitReason, WorkerModel, WorkerState};

/// How long one readiness probe of a starting worker may wait for its answer: a
/// worker under a low CPU limit may take seconds to answer one.
const START_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one round of readiness probes of a starting worker found.
enum StartCheck {
    /// Its model serves.
    Ready,
    /// Its initial load is over and no version of its model serves: why.
    Unservable(String),
    /// Nothing decided yet: what was seen, for the message should the start
    /// deadline pass.
    NotYet(&'static str),
}

/// How one started worker's run ended.
enum RunEnd {
    /// Its process exited (or could not be waited for).
    Exited(std::io::Result<std::process::ExitStatus>),
    /// It failed three health checks in a row and was killed for it.
    Unhealthy(std::io::Result<std::process::ExitStatus>),
    /// It started but its model cannot load (the worker finished its initial load
    /// with no version serving); the worker was killed.
    Unservable(String),
    /// The slot stopped; the worker was drained and reaped.
    Stopped,
    /// It got a stop signal from outside this server (an operator's `kill`, a
    /// container runtime), drained, and exited (or, before it could drain, was
    /// ended by the signal itself); or, `killed`, was killed once its drain was
    /// over.
    StoppedFromOutside {
        status: std::io::Result<std::process::ExitStatus>,
        killed: bool,
    },
}

impl Supervisor {
    async fn spawn(&self, slot: &Slot, port: u16) -> std::io::Result<Spawned> {
        let command = process::command(&self.config, &self.token, slot, port);
        self.spawner.spawn(command).await
    }

    /// The supervision loop of one slot: start, wait ready, watch, restart with
    /// backoff; crash-loop after too many failures in the window.
    pub(super) async fn supervise(self: Arc<Self>, slot: Arc<Slot>) {
        // Failures (crashes, failed health checks, a model that cannot load), which
        // put the deployment in crash-loop past `crash_loop_failures`; and stops from
        // outside, which do not, but lengthen the wait before a restart as
        // failures do (an agent that stops the worker again and again does not
        // have it reload its model ten times a second).
        let mut failures: VecDeque<Instant> = VecDeque::new();
        let mut stops_from_outside: VecDeque<Instant> = VecDeque::new();
        // Runs in a row whose worker never served (stops from outside aside): a
        // start that times out takes the whole start deadline, longer than the
        // crash-loop window, so these are counted apart, or a deployment that
        // cannot start in time (restored after a restart, with no deploy call to
        // fail) would be started again forever.
        let mut failed_starts = 0;
        loop {
            let port = slot.port.load(Ordering::Relaxed);
            // Left over from a run on this port that was stopped from outside, it
            // would make any early exit of this one read as such a stop.
            let _ = std::fs::remove_file(process::draining_file(&self.config, &slot, port));
            // gRPC on a port the system picks (not one of --worker-ports).
            let grpc_port = std::net::TcpListener::bind(SocketAddr::new(self.config.bind, 0))
                .and_then(|l| l.local_addr())
                .map_or(0, |a| a.port());
            slot.grpc_port.store(grpc_port, Ordering::Relaxed);
            let oom_kills_before = slot.cgroups.oom_kills();
            let mut unservable = false;
            let mut stopped_from_outside = false;
            let mut served = false;
            let exit = match self.spawn(&slot, port).await {
                Err(e) => ExitReason {
                    exit_code: None,
                    signal: None,
                    oom: false,
                    reason: format!(
                        "cannot start the worker: {e} (either a limit could not be applied, \
                         and the server's stderr names which, or its executable could not run)"
                    ),
                    at: SystemTime::now(),
                },
                Ok(spawned) => {
                    slot.pid.store(spawned.pid, Ordering::Relaxed);
                    lock(&slot.status).started_at = Some(SystemTime::now());
                    match self.run_one(&slot, port, spawned, &mut served).await {
                        RunEnd::Exited(status) => exit_reason(&slot, status, oom_kills_before),
                        RunEnd::Unhealthy(status) => {
                            let mut exit = exit_reason(&slot, status, oom_kills_before);
                            exit.reason = format!(
                                "failed 3 health checks in a row and was killed ({})",
                                exit.reason
                            );
                            exit
                        }
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
                        RunEnd::StoppedFromOutside { status, killed } => {
                            stopped_from_outside = true;
                            let undrained = process::ended_by_stop_signal(&status);
                            let mut exit = exit_reason(&slot, status, oom_kills_before);
                            let drain = process::drain_of(&self.config, &slot).as_secs_f64();
                            exit.reason = if killed {
                                format!(
                                    "it was sent a stop signal (SIGTERM or SIGINT) from outside \
                                     this server and was still draining {drain} s later, so \
                                     it was killed ({})",
                                    exit.reason
                                )
                            } else if undrained {
                                format!(
                                    "it was sent a stop signal (SIGTERM or SIGINT) from outside \
                                     this server before it could drain ({})",
                                    exit.reason
                                )
                            } else {
                                format!(
                                    "it was sent a stop signal (SIGTERM or SIGINT) from outside \
                                     this server, drained its requests and {}",
                                    exit.reason
                                )
                            };
                            exit
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
            if stopped_from_outside {
                stops_from_outside.push_back(now);
            } else {
                failures.push_back(now);
            }
            if served {
                failed_starts = 0;
            } else if !stopped_from_outside {
                failed_starts += 1;
            }
            for exits in [&mut failures, &mut stops_from_outside] {
                while exits
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > self.config.crash_loop_window)
                {
                    exits.pop_front();
                }
            }
            // A model that never served cannot be fixed by starting it again.
            let never_served = unservable && !slot.ever_ready.load(Ordering::Relaxed);
            let starts_failing = failed_starts >= self.config.crash_loop_failures;
            if never_served || starts_failing || failures.len() >= self.config.crash_loop_failures {
                if starts_failing {
                    if let Some(exit) = &mut lock(&slot.status).last_exit {
                        exit.reason.push_str(&format!(
                            "; its last {failed_starts} starts in a row did not serve, so it \
                             is not started again"
                        ));
                    }
                }
                self.set_state(&slot, WorkerState::CrashLoop);
                self.record(&slot).await;
                return;
            }
            self.set_state(&slot, WorkerState::Restarting);
            self.record(&slot).await;
            // This exit is in one of the two, so their sum is at least 1.
            let recent_exits = failures.len() + stops_from_outside.len();
            let backoff = Duration::from_millis(100)
                .saturating_mul(1 << recent_exits.saturating_sub(1).min(7))
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

    /// Drains a worker whose slot stopped (SIGTERM, then SIGKILL past its drain:
    /// [`process::drain_of`]) and reaps it.
    async fn drain(
        &self,
        slot: &Slot,
        pid: u32,
        exited: &mut tokio::sync::oneshot::Receiver<std::io::Result<std::process::ExitStatus>>,
    ) {
        terminate(
            pid,
            exited,
            process::drain_of(&self.config, slot),
            &self.shutting_down,
            self.config.stop_timeout,
        )
        .await;
    }

    /// Runs one started worker until it exits, turns out unable to serve its
    /// model, or the slot stops (after draining and reaping it). `served` is set
    /// once it serves its model.
    async fn run_one(&self, slot: &Slot, port: u16, spawned: Spawned, served: &mut bool) -> RunEnd {
        let Spawned { pid, mut exited } = spawned;
        let addr = SocketAddr::new(connect_ip(self.config.bind), port);
        let ready_path = format!("/v2/models/{}/ready", slot.model);
        // Told apart from a crash when its exit is seen, however soon after the
        // signal that came (an idle worker drains in milliseconds).
        let draining_file = process::draining_file(&self.config, slot, port);
        // Starting: probe readiness until a definite answer, or the deadline.
        let deadline = tokio::time::Instant::now() + self.config.startup_timeout;
        let mut last_seen = "it did not answer";
        loop {
            let check = async {
                tokio::time::sleep(Duration::from_millis(25)).await;
                self.start_check(addr, &slot.model, &ready_path).await
            };
            let check = tokio::select! {
                status = &mut exited => {
                    let status = status.unwrap_or_else(|_| Err(std::io::Error::other("lost")));
                    return unasked_exit(status, &draining_file);
                }
                _ = slot.stop.cancelled() => {
                    self.drain(slot, pid, &mut exited).await;
                    return RunEnd::Stopped;
                }
                _ = tokio::time::sleep_until(deadline) => None,
                check = check => Some(check),
            };
            match check {
                Some(StartCheck::Ready) => break,
                Some(StartCheck::Unservable(why)) => {
                    kill_group(pid, libc::SIGKILL);
                    let _ = (&mut exited).await;
                    return RunEnd::Unservable(format!(
                        "the worker cannot serve model {}: {why}",
                        slot.model
                    ));
                }
                Some(StartCheck::NotYet(seen)) => last_seen = seen,
                None => {}
            }
            if tokio::time::Instant::now() >= deadline {
                kill_group(pid, libc::SIGKILL);
                let _ = (&mut exited).await;
                return RunEnd::Exited(Err(std::io::Error::other(
                    self.too_slow_to_start(slot, last_seen),
                )));
            }
        }
        {
            let model_status = self
                .model_status(addr, &slot.model, slot.limits.probe_timeout())
                .await;
            let mut status = lock(&slot.status);
            status.healthy = true;
            status.model_status = model_status;
        }
        slot.ever_ready.store(true, Ordering::Relaxed);
        *served = true;
        self.set_state(slot, WorkerState::Ready);
        self.record(slot).await;
        // Serving: a liveness check every second, each given its
        // `Limits::probe_timeout` (longer under a CPU limit below one core); three
        // failures in a row kill it (then it is restarted like any exit). A worker that got a stop signal
        // from outside (it says so in its state directory) drains: it answers no
        // health check (its listeners are closed), so none is counted; it is
        // killed only past its drain, and restarted once it exits.
        let mut failed_checks = 0;
        let mut killed_unhealthy = false;
        let mut draining_until: Option<Instant> = None;
        let mut killed_past_drain = false;
        loop {
            tokio::select! {
                status = &mut exited => {
                    slot.ready.store(false, Ordering::Release);
                    let status = status.unwrap_or_else(|_| Err(std::io::Error::other("lost")));
                    return if draining_until.is_some() {
                        RunEnd::StoppedFromOutside { status, killed: killed_past_drain }
                    } else if killed_unhealthy {
                        RunEnd::Unhealthy(status)
                    } else {
                        unasked_exit(status, &draining_file)
                    };
                }
                _ = slot.stop.cancelled() => {
                    self.drain(slot, pid, &mut exited).await;
                    return RunEnd::Stopped;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if draining_until.is_none() && draining_file.exists() {
                let drain = process::drain_of(&self.config, slot);
                tracing::warn!(
                    model = %slot.model,
                    pid,
                    "the worker got a stop signal from outside this server; it drains (up to \
                     {} s), then it is restarted",
                    drain.as_secs_f64()
                );
                draining_until = Some(Instant::now() + drain + process::KILL_MARGIN);
                // New requests get 503 with Retry-After: it is restarted once it ends.
                self.set_state(slot, WorkerState::Restarting);
                lock(&slot.status).healthy = false;
            }
            if let Some(until) = draining_until {
                if Instant::now() >= until && !killed_past_drain {
                    kill_group(pid, libc::SIGKILL);
                    killed_past_drain = true;
                }
                continue;
            }
            let healthy = forward::get_ok(
                &self.client,
                &self.authorization,
                addr,
                "/v2/health/live",
                slot.limits.probe_timeout(),
            )
            .await;
            // A status the worker does not give (it is busy, or just failed) keeps
            // the last one.
            let model_status = if healthy {
                self.model_status(addr, &slot.model, slot.limits.probe_timeout())
                    .await
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
                killed_unhealthy = true;
            }
        }
    }

    /// One round of readiness probes of a starting worker. Only answers decide: a
    /// probe with no answer in time leaves the start undecided.
    async fn start_check(&self, addr: SocketAddr, model: &str, ready_path: &str) -> StartCheck {
        const NO_ANSWER: &str = "its readiness probes got no answer in time";
        let probe = |path: &str| {
            let path = path.to_string();
            async move {
                forward::probe(
                    &self.client,
                    &self.authorization,
                    addr,
                    &path,
                    START_PROBE_TIMEOUT,
                )
                .await
            }
        };
        match probe(ready_path).await {
            Probe::Ok => return StartCheck::Ready,
            Probe::NoAnswer => return StartCheck::NotYet(NO_ANSWER),
            Probe::Refused => {}
        }
        // The worker is ready (its initial load is over) but its model is not: no
        // version of it can load. Asked in this order, so a model that turned
        // ready in between is not taken for one that failed.
        match probe("/v2/health/ready").await {
            Probe::Ok => {}
            Probe::Refused => return StartCheck::NotYet("it was still loading its model"),
            Probe::NoAnswer => return StartCheck::NotYet(NO_ANSWER),
        }
        match probe(ready_path).await {
            Probe::Ok => return StartCheck::Ready,
            Probe::NoAnswer => return StartCheck::NotYet(NO_ANSWER),
            Probe::Refused => {}
        }
        match self.model_status(addr, model, START_PROBE_TIMEOUT).await {
            // A version serves after all (it turned ready since): the next round
            // sees it.
            Some(m) if !m.served_versions.is_empty() => {
                StartCheck::NotYet("its model was not ready yet")
            }
            Some(m) => StartCheck::Unservable(unservable_reason(&m)),
            None => StartCheck::NotYet("its model's status got no answer in time"),
        }
    }

    /// Why a worker killed at its start deadline did not start, naming its CPU
    /// limit, the likely cause when one is set.
    fn too_slow_to_start(&self, slot: &Slot, last_seen: &str) -> String {
        let mut why = format!(
            "the worker did not become ready within {} s ({last_seen})",
            self.config.startup_timeout.as_secs_f64()
        );
        if let Some(cpu) = &slot.deployment.cpu_limit {
            why.push_str(&format!(
                "; its CPU limit ({cpu}) may be too low for it to start in time"
            ));
        }
        why
    }

    /// The worker's status of its model (its `/models/status` entry), if it answers.
    pub(super) async fn model_status(
        &self,
        addr: SocketAddr,
        model: &str,
        timeout: Duration,
    ) -> Option<WorkerModel> {
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
        let body = forward::get_body(
            &self.client,
            &self.authorization,
            addr,
            "/models/status",
            timeout,
        )
        .await?;
        let status: Status = serde_json::from_slice(&body).ok()?;
        status
            .models
            .into_iter()
            .find(|e| e.model_id == model)
            .map(|e| e.status)
    }
}

/// How an exit the supervision did not cause reads: a stop from outside when the
/// worker said it got one (its draining file, looked for now that the exit is
/// seen) or when a stop signal ended it before its handler was in place; else an
/// exit.
fn unasked_exit(
    status: std::io::Result<std::process::ExitStatus>,
    draining_file: &std::path::Path,
) -> RunEnd {
    if draining_file.exists() || process::ended_by_stop_signal(&status) {
        RunEnd::StoppedFromOutside {
            status,
            killed: false,
        }
    } else {
        RunEnd::Exited(status)
    }
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
