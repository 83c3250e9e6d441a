//! A job this server knows in memory ([`LiveJob`]: queued or running here) and what
//! a running job uses ([`JobContext`]): its view, progress, messages and cancel state.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::watch;

use super::io;
use super::spec::JobKind;
use super::{JobView, Message, Progress, PERSIST_EVERY};
use crate::api::ServerState;
use crate::store::{now_ms, Store};

/// Messages a job keeps (the oldest go first).
const MAX_MESSAGES: usize = 100;

/// How often a job waiting on a database refreshes its progress (see
/// [`JobContext::stop_check`]).
const STOP_BEAT: Duration = Duration::from_millis(250);

/// Why a job stopped early.
#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    /// Asked to stop (by a client, or by shutdown).
    Cancelled,
    Failed(String),
}

pub(super) const NOT_CANCELLED: u8 = 0;
pub(super) const CANCELLED_BY_CLIENT: u8 = 1;
pub(super) const CANCELLED_BY_SHUTDOWN: u8 = 2;
/// A job publishing its result (a training job its version, a scoring job its
/// output): past the last moment a cancel could leave nothing saved, so a cancel
/// is refused ([`CancelError::TooLate`]) rather than answered and then not
/// honoured.
pub(super) const SAVING: u8 = 3;
/// Another server failed the job under this one (this one was paused past the
/// heartbeat's grace): it stops at once, writes nothing more, and the store's
/// state and error stand (see [`JobContext::progress`]).
pub(super) const TAKEN_ELSEWHERE: u8 = 4;

/// Why a cancel was not taken.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The job is publishing its result (see [`JobContext::begin_publishing`]): a
    /// training job its model version, a scoring job its output.
    #[error("too late to cancel: {}", saving(*.0))]
    TooLate(JobKind),
}

/// What a job past its last cancel is doing.
fn saving(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Train => "the model is being saved",
        JobKind::Score => "its output is being committed",
    }
}

/// A job this server knows in memory: queued here or running here.
pub struct LiveJob {
    pub id: String,
    pub kind: JobKind,
    /// The spec as submitted.
    pub spec_json: serde_json::Value,
    /// Everything the API shows; every change notifies the events streams.
    pub(super) view: watch::Sender<JobView>,
    pub(super) cancel: AtomicU8,
    pub(super) last_persist: Mutex<Instant>,
    pub(super) started: Mutex<Option<Instant>>,
    /// The latest progress and messages (as JSON) waiting for the progress
    /// writer: a newer one replaces one that waits, so a store that answers
    /// slowly gets fewer writes, never a queue of stale ones.
    pending_progress: Mutex<Option<(String, String)>>,
    /// Whether a progress writer task runs for this job: at most one write is
    /// in flight, and the job's thread never waits for it.
    progress_writing: AtomicBool,
    /// Set once the job's end is being recorded: the store's answers to progress
    /// writes still in flight say nothing about the job then (the end itself is
    /// written only while the job is still this server's).
    pub(super) ending: AtomicBool,
}

impl LiveJob {
    pub(super) fn new(view: JobView, kind: JobKind) -> LiveJob {
        LiveJob {
            id: view.job_id.clone(),
            kind,
            spec_json: view.spec.clone(),
            view: watch::Sender::new(view),
            cancel: AtomicU8::new(NOT_CANCELLED),
            last_persist: Mutex::new(Instant::now()),
            started: Mutex::new(None),
            pending_progress: Mutex::new(None),
            progress_writing: AtomicBool::new(false),
            ending: AtomicBool::new(false),
        }
    }

    pub fn view(&self) -> JobView {
        self.view.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<JobView> {
        self.view.subscribe()
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(
            self.cancel.load(Ordering::Relaxed),
            CANCELLED_BY_CLIENT | CANCELLED_BY_SHUTDOWN | TAKEN_ELSEWHERE
        )
    }

    /// Whether another server failed the job under this one.
    pub fn is_taken_elsewhere(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) == TAKEN_ELSEWHERE
    }

    /// Takes in the store's answer to a progress write: a cancel asked through
    /// another server, or the job failed by another server under this one.
    fn heard_from_store(&self, cancel_requested: bool, still_ours: bool) {
        let flag = if !still_ours {
            TAKEN_ELSEWHERE
        } else if cancel_requested {
            CANCELLED_BY_CLIENT
        } else {
            return;
        };
        // A job publishing its version, or already asked to stop, keeps its flag.
        let _ =
            self.cancel
                .compare_exchange(NOT_CANCELLED, flag, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether the job is publishing its model version: a cancel now is too late.
    pub fn is_publishing(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) == SAVING
    }

    /// See [`JobContext::begin_publishing`].
    pub(super) fn begin_publishing(&self) -> Result<(), JobError> {
        match self.cancel.compare_exchange(
            NOT_CANCELLED,
            SAVING,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => Ok(()),
            Err(_) => Err(JobError::Cancelled),
        }
    }

    /// Marks the job cancelled by its client, unless it is publishing its version.
    pub(super) fn cancel_by_client(&self) -> Result<(), CancelError> {
        match self.cancel.compare_exchange(
            NOT_CANCELLED,
            CANCELLED_BY_CLIENT,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Err(SAVING) => Err(CancelError::TooLate(self.kind)),
            _ => Ok(()),
        }
    }
}

/// What a running job uses: the server, the runtime, and its own record.
#[derive(Clone)]
pub struct JobContext {
    pub state: Arc<ServerState>,
    pub runtime: Handle,
    pub job: Arc<LiveJob>,
    pub(super) store: Arc<Store>,
}

impl JobContext {
    /// The last moment a cancel stops the job: `Err(Cancelled)` if one was asked;
    /// else from now on a cancel is refused as too late (a training job calls it
    /// just before it publishes its version, which then always completes: a
    /// cancel answered 200 never leaves a saved version behind). A shutdown
    /// meanwhile waits for the publication.
    pub fn begin_publishing(&self) -> Result<(), JobError> {
        self.job.begin_publishing()
    }

    /// `Err(Cancelled)` once a cancel was asked.
    pub fn check_cancelled(&self) -> Result<(), JobError> {
        if self.job.is_cancelled() {
            Err(JobError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// What a source or sink waiting on a database asks (`io::StopCheck`): whether
    /// this job was cancelled (or the server stops). Every quarter second it also
    /// refreshes the progress, which is what writes it to the store and learns of a
    /// cancel asked through another server, as training's solvers do.
    pub fn stop_check(&self) -> io::StopCheck {
        let ctx = self.clone();
        let last_beat = Mutex::new(Instant::now());
        std::sync::Arc::new(move || {
            let beat = {
                let mut last = last_beat.lock().unwrap_or_else(|e| e.into_inner());
                let due = last.elapsed() >= STOP_BEAT;
                if due {
                    *last = Instant::now();
                }
                due
            };
            if beat {
                ctx.progress(|_| {});
            }
            ctx.job.is_cancelled()
        })
    }

    /// Updates the progress (elapsed and remaining are filled in here) and, at most
    /// every [`PERSIST_EVERY`], hands it to the job's progress writer, which
    /// writes it to the store in the background and learns whether another
    /// server asked to cancel or failed the job under this one (see
    /// [`JobContext::start_progress_writer`]).
    pub fn progress(&self, update: impl FnOnce(&mut Progress)) {
        let elapsed = self
            .job
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|s| s.elapsed())
            .unwrap_or_default();
        let kind = self.job.kind;
        self.job.view.send_modify(|v| {
            update(&mut v.progress);
            v.progress.elapsed_ms = elapsed.as_millis() as u64;
            v.progress.remaining_ms = remaining_ms(kind, &v.progress, elapsed);
        });
        let due = {
            let mut last = self
                .job
                .last_persist
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= PERSIST_EVERY {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        if due {
            let view = self.job.view();
            let progress = serde_json::to_string(&view.progress).unwrap_or_default();
            let messages = serde_json::to_string(&view.messages).unwrap_or_default();
            *self
                .job
                .pending_progress
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some((progress, messages));
            self.start_progress_writer();
        }
    }

    /// Starts the job's progress writer unless one runs: a task that writes the
    /// waiting progress to the store until none waits, and takes in each answer
    /// (a cancel asked elsewhere, the job failed by another server), which the
    /// job sees at its next check. The job's thread never waits on the store: a
    /// store that does not answer (each write then takes the database timeout)
    /// must not slow the job. The task ends by itself once nothing waits.
    fn start_progress_writer(&self) {
        if self.job.progress_writing.swap(true, Ordering::SeqCst) {
            return;
        }
        let (job, store) = (self.job.clone(), self.store.clone());
        self.runtime.spawn(async move {
            loop {
                let waiting = job
                    .pending_progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                let Some((progress, messages)) = waiting else {
                    job.progress_writing.store(false, Ordering::SeqCst);
                    // A progress put in after the take above found this writer
                    // still running and started none: write it here.
                    let more = job
                        .pending_progress
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_some();
                    if more && !job.progress_writing.swap(true, Ordering::SeqCst) {
                        continue;
                    }
                    return;
                };
                match store.save_job_progress(&job.id, &progress, &messages).await {
                    Ok(_) if job.ending.load(Ordering::SeqCst) => {}
                    Ok(answer) => {
                        if !answer.still_ours && !job.is_taken_elsewhere() {
                            tracing::warn!(
                                job = %job.id,
                                "another replica failed this job while this one was paused (its heartbeat stood still): the job stops here and writes nothing more"
                            );
                        }
                        job.heard_from_store(answer.cancel_requested, answer.still_ours);
                    }
                    Err(e) => {
                        tracing::warn!(job = %job.id, "cannot record the job's progress: {e}")
                    }
                }
            }
        });
    }

    /// Adds a message the job's record shows.
    pub fn message(&self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(job = %self.job.id, "{text}");
        self.job.view.send_modify(|v| {
            v.messages.push(Message {
                at_ms: now_ms(),
                text,
            });
            if v.messages.len() > MAX_MESSAGES {
                v.messages.remove(0);
            }
        });
    }
}

/// The time a running job has left, from the fraction it has done and the time it
/// took: unknown (`None`) before a fraction is known, and for a training job until
/// its first cross-validation fold has finished. Before that a training job has
/// only read its source, which its fraction counts as a tenth of the work however
/// long the folds will take, so an estimate from it says nothing.
fn remaining_ms(kind: JobKind, progress: &Progress, elapsed: Duration) -> Option<u64> {
    if kind == JobKind::Train && progress.folds_done.unwrap_or(0) == 0 {
        return None;
    }
    progress
        .fraction
        .filter(|f| *f > 0.0)
        .map(|f| (elapsed.as_secs_f64() * (1.0 - f.min(1.0)) / f * 1000.0) as u64)
}

#[cfg(test)]
mod remaining_tests {
    use super::*;

    /// A training job's time left is unknown until a fold has finished (it was
    /// nine times the reading time, whatever the folds would take); a scoring
    /// job's is estimated from its fraction as soon as it has one.
    #[test]
    fn a_training_job_estimates_no_time_left_before_its_first_fold() {
        let elapsed = Duration::from_secs(3);
        let progress = |fraction: Option<f64>, folds_done: Option<u64>| Progress {
            fraction,
            folds_done,
            folds_total: folds_done.map(|_| 160_001),
            ..Progress::default()
        };
        // Reading, then cross-validating before any fold ended.
        for p in [progress(Some(0.05), None), progress(Some(0.1), Some(0))] {
            assert_eq!(remaining_ms(JobKind::Train, &p, elapsed), None, "{p:?}");
        }
        assert_eq!(
            remaining_ms(JobKind::Train, &progress(Some(0.5), Some(80_000)), elapsed),
            Some(3000)
        );
        assert_eq!(
            remaining_ms(JobKind::Score, &progress(Some(0.25), None), elapsed),
            Some(9000)
        );
        assert_eq!(
            remaining_ms(JobKind::Score, &progress(None, None), elapsed),
            None
        );
    }
}
