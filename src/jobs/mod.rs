//! Jobs: batch scoring and training (`score/`, `train/`) inside the server, asynchronously.
//!
//! [`Jobs`] is the runner: `job_workers` threads of its own take queued jobs one at
//! a time. A job never runs on the async workers: it reads and writes on its own
//! thread and predicts through `api::predict` (the version's queue and batcher,
//! like any request, one batch in flight per job), so online requests are never
//! queued behind a whole job. A running job's progress lives in memory (a `watch`
//! channel the events stream follows) and is written to the store at most every
//! [`PERSIST_EVERY`] and at every state change.
//!
//! Invariants:
//! * a job never blocks serving: no job work on the async workers, one batch of at
//!   most `MAX_BATCH_SIZE` rows in a version's queue per job, and a full queue
//!   makes the job wait, not the request;
//! * a job's output appears whole or not at all: sinks commit at the end (rename,
//!   transaction); a failed or cancelled job drops its sink, which discards it;
//! * cancellation is checked before every batch and while waiting for a full
//!   queue, so a cancel stops a running job within one batch;
//! * a job the store says is running belongs to a live replica until that
//!   replica is seen gone (see [`replicas`]): its process, in this pid namespace
//!   on this machine, no longer exists, or this replica has seen its heartbeat
//!   (refreshed every [`replicas::HEARTBEAT_EVERY`]) stand still for
//!   [`replicas::STALE_AFTER`] (a time stamp alone is never believed). Then it is
//!   marked failed ("interrupted by restart"), at start and by the sweep; other
//!   replicas' live jobs are never touched;
//! * queued jobs run on whichever replica claims them first: each replica picks
//!   up the queued jobs it does not know, at start and every
//!   [`replicas::HEARTBEAT_EVERY`]; one queued here that the store shows ended
//!   (cancelled through another replica) takes the store's word then too, as does
//!   one a worker finds taken.

pub mod io;
mod live;
pub mod old_service;
pub use live::{CancelError, JobContext, JobError, LiveJob};
use live::{CANCELLED_BY_CLIENT, CANCELLED_BY_SHUTDOWN, NOT_CANCELLED, TAKEN_ELSEWHERE};
mod replicas;
mod score;
pub use score::ScoringPlan;
pub mod spec;
pub mod train;
pub mod uploads;
mod view;
use view::row_of;
pub use view::{JobState, JobView, Message, Progress};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::api::ServerState;
use crate::store::{now_ms, JobRow, Store};
use spec::{JobKind, JobSpec};

/// How often a running job's progress is written to the store.
pub const PERSIST_EVERY: Duration = Duration::from_millis(500);
/// How often finished jobs past the retention are deleted.
const RETENTION_SWEEP: Duration = Duration::from_secs(3600);
/// The error of a job whose process ended while it ran.
pub const INTERRUPTED: &str = "interrupted by restart";
/// The error of a queued job whose uploaded files were on a server that is gone.
pub const FILES_GONE: &str =
    "never run: the server that holds its uploaded files is gone (submit it again)";

/// Why a job was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Its sink is the sink of a job queued or running (the message names it):
    /// one of the two outputs would be lost.
    #[error("{0}")]
    SinkTaken(String),
}

/// The job runner.
pub struct Jobs {
    store: Arc<Store>,
    /// Held weakly: the state holds the runner, and a job only needs the state
    /// while it runs.
    state: Weak<ServerState>,
    runtime: Handle,
    /// Jobs queued or running here. Finished ones leave (the store has them).
    live: Mutex<HashMap<String, Arc<LiveJob>>>,
    /// Ids of queued jobs for the worker threads; `None` once shut down.
    queue: Mutex<Option<crossbeam_channel::Sender<String>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stopping: AtomicBool,
    stop_sweeper: CancellationToken,
    /// Cancelled once the runner has stopped (every job that ran here has ended,
    /// recorded interrupted): the events streams then end, so that none holds the
    /// server's drain.
    stopped: CancellationToken,
    /// Held while a job is checked against the sinks of the jobs queued and
    /// running and recorded, so that two submissions to this server cannot both
    /// pass the check before either is recorded. An async lock: the check and the
    /// record wait on the store.
    submitting: tokio::sync::Mutex<()>,
    /// How long the sink checks wait for the store (`--database-timeout-secs`):
    /// its reads have no bound of their own, and a locked table would hold a
    /// submission for ever.
    database_timeout: Duration,
    /// The held jobs' heartbeats as the recovery sweep last saw them.
    seen: Mutex<replicas::Seen>,
    /// How long another server's queued job with uploaded files waits for that
    /// server, its heartbeat standing still, before it is failed here.
    upload_grace: Duration,
    /// When this replica's own heartbeat last landed in the store.
    beat_landed: Mutex<Instant>,
    /// Ends of jobs that left this server's memory, so that their worker could go
    /// on, because the store refused to record them as such: the recovery sweep
    /// tries them again, and the heartbeat keeps their rows from looking orphaned.
    refused_ends: Mutex<HashMap<String, JobEnd>>,
    pub data_dir: PathBuf,
    /// Files uploaded with jobs (`<state dir>/job-uploads/<job id>/`): private to
    /// the server, never in the data directory; a job's directory is removed when
    /// the job ends, and leftovers at start and by the retention sweep.
    pub uploads_dir: PathBuf,
}

impl Jobs {
    /// Starts the runner on the current runtime: marks jobs left running by a
    /// previous process as failed, queues the queued ones, starts `workers` threads
    /// and the retention sweep.
    pub async fn start(
        state: &Arc<ServerState>,
        store: Arc<Store>,
        workers: usize,
        retention: Duration,
        data_dir: PathBuf,
    ) -> Result<Arc<Jobs>, crate::store::StoreError> {
        let (tx, rx) = crossbeam_channel::unbounded::<String>();
        let jobs = Arc::new(Jobs {
            store: store.clone(),
            state: Arc::downgrade(state),
            runtime: Handle::current(),
            live: Mutex::new(HashMap::new()),
            queue: Mutex::new(Some(tx)),
            threads: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            stop_sweeper: CancellationToken::new(),
            stopped: CancellationToken::new(),
            submitting: tokio::sync::Mutex::new(()),
            database_timeout: state.settings.database_timeout,
            seen: Mutex::new(replicas::Seen::default()),
            upload_grace: state.settings.upload_job_grace,
            beat_landed: Mutex::new(Instant::now()),
            refused_ends: Mutex::new(HashMap::new()),
            data_dir,
            uploads_dir: state.settings.state_dir().join(uploads::UPLOADS_DIR),
        });
        let interrupted = jobs.recover_orphans().await?;
        if interrupted > 0 {
            tracing::warn!(interrupted, "jobs whose server is gone are marked failed");
        }
        uploads::remove_leftovers(&jobs.uploads_dir, &store, None).await;
        jobs.pick_up_queued().await?;
        for n in 0..workers {
            let rx = rx.clone();
            let runner = Arc::downgrade(&jobs);
            let handle = std::thread::Builder::new()
                .name(format!("ferroserve-job-{n}"))
                .spawn(move || {
                    lower_priority();
                    while let Ok(id) = rx.recv() {
                        let Some(runner) = runner.upgrade() else {
                            return;
                        };
                        // Queued jobs wait for the models found at start to load.
                        while !runner.is_ready() {
                            if runner.stopping.load(Ordering::Relaxed) {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        if runner.stopping.load(Ordering::Relaxed) {
                            return;
                        }
                        runner.run_one(&id);
                    }
                })
                .map_err(|e| {
                    crate::store::StoreError::Unavailable(format!("cannot start a job thread: {e}"))
                })?;
            jobs.threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(handle);
        }
        tokio::spawn(sweep(
            store,
            retention,
            jobs.stop_sweeper.clone(),
            jobs.uploads_dir.clone(),
        ));
        tokio::spawn(replicas::beat(
            Arc::downgrade(&jobs),
            jobs.stop_sweeper.clone(),
        ));
        tokio::spawn(replicas::watch(
            Arc::downgrade(&jobs),
            jobs.stop_sweeper.clone(),
        ));
        Ok(jobs)
    }

    fn is_ready(&self) -> bool {
        self.state.upgrade().is_none_or(|s| s.is_ready())
    }

    /// Queues a job once: a job already known here is not queued twice.
    fn enqueue(&self, job: Arc<LiveJob>) {
        let id = job.id.clone();
        {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            if live.contains_key(&id) {
                return;
            }
            live.insert(id.clone(), job);
        }
        if let Some(queue) = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = queue.send(id);
        }
    }

    /// Records a new job (queued) and queues it. `spec` was checked by the caller;
    /// a scoring job whose sink is the sink of a job queued or running (on any
    /// replica) is refused ([`SubmitError::SinkTaken`]).
    pub async fn submit(
        &self,
        spec: &JobSpec,
        spec_json: serde_json::Value,
    ) -> Result<String, SubmitError> {
        self.submit_as(new_job_id(), spec, spec_json).await
    }

    /// [`Jobs::submit`] under an id chosen by the caller ([`new_job_id`]), for a job
    /// whose uploaded files were moved to its directory first.
    pub async fn submit_as(
        &self,
        id: String,
        spec: &JobSpec,
        spec_json: serde_json::Value,
    ) -> Result<String, SubmitError> {
        // Checked and recorded under one lock: a second submission to this server
        // sees the first one's row.
        let _submitting = self.submitting.lock().await;
        if let JobSpec::Score(score) = spec {
            // A store that does not answer the check (within its timeout: a read
            // waits on a lock for ever) leaves the record to say so, or to be
            // taken; the check at the job's start still applies then.
            let holder = match tokio::time::timeout(
                self.database_timeout,
                self.sink_holder(&score.sink, None),
            )
            .await
            {
                Ok(Ok(holder)) => holder,
                Ok(Err(e)) => {
                    tracing::warn!(
                        "cannot check the new job's sink against the jobs queued and running: {e}"
                    );
                    None
                }
                Err(_) => {
                    tracing::warn!(
                        timeout = ?self.database_timeout,
                        "the store did not answer the check of the new job's sink against the jobs queued and running"
                    );
                    None
                }
            };
            if let Some(holder) = holder {
                return Err(SubmitError::SinkTaken(format!(
                    "{}: {:?} is the sink of job {} ({}): two jobs writing one output at \
                     once would lose one's rows; submit this one once that job has ended, \
                     or write elsewhere",
                    score.sink.field(),
                    score.sink.describe(),
                    holder.id,
                    holder.state,
                )));
            }
        }
        let view = JobView {
            job_id: id.clone(),
            kind: spec.kind().as_str().to_string(),
            state: JobState::Queued,
            spec: spec_json,
            progress: Progress {
                stage: "queued".into(),
                ..Progress::default()
            },
            messages: Vec::new(),
            result: None,
            error: None,
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
        };
        let held = has_uploads(&view.spec);
        self.store.insert_job(&row_of(&view), held).await?;
        self.enqueue(Arc::new(LiveJob::new(view, spec.kind())));
        Ok(id)
    }

    /// The first job queued or running, on any replica (the store's word), other
    /// than `except`, whose sink clashes with `sink` (see
    /// [`spec::SinkSpec::clashes_with`]); its sink is read as this server reads
    /// its own, in its data directory.
    async fn sink_holder(
        &self,
        sink: &spec::SinkSpec,
        except: Option<&str>,
    ) -> Result<Option<JobRow>, crate::store::StoreError> {
        const PAGE: i64 = 1000;
        for state in ["running", "queued"] {
            for page in 0.. {
                let (rows, _) = self
                    .store
                    .jobs(&crate::store::JobQuery {
                        state: Some(state.into()),
                        kind: Some(JobKind::Score.as_str().into()),
                        limit: PAGE,
                        offset: page * PAGE,
                    })
                    .await?;
                let last_page = (rows.len() as i64) < PAGE;
                for row in rows {
                    if Some(row.id.as_str()) == except {
                        continue;
                    }
                    let Ok(spec) = serde_json::from_str::<serde_json::Value>(&row.spec) else {
                        continue;
                    };
                    // A spec that no longer reads (its file gone) holds nothing: it
                    // fails when it starts.
                    let Ok(theirs) =
                        spec::parse_sink(spec.get("sink"), "spec.sink", &self.data_dir)
                    else {
                        continue;
                    };
                    if sink.clashes_with(&theirs) {
                        return Ok(Some(row));
                    }
                }
                if last_page {
                    break;
                }
            }
        }
        Ok(None)
    }

    /// Refuses to start a scoring job whose sink another job running now writes
    /// and started first (by its start time, then its id): two submissions to two
    /// replicas at once both pass the check at submission, and one of the two
    /// must not run. A store that does not answer (within the database timeout)
    /// lets the job run.
    fn check_sink_free_at_start(
        &self,
        job: &LiveJob,
        sink: &spec::SinkSpec,
    ) -> Result<(), JobError> {
        let ours = (job.view().started_ms.unwrap_or(i64::MAX), job.id.clone());
        // The timer made on the runtime: this is the job's own thread.
        let holder = match self.runtime.block_on(async {
            tokio::time::timeout(self.database_timeout, self.sink_holder(sink, Some(&job.id))).await
        }) {
            Ok(Ok(holder)) => holder,
            Ok(Err(e)) => {
                tracing::warn!(job = %job.id, "cannot check the job's sink against the running jobs: {e}");
                None
            }
            Err(_) => {
                tracing::warn!(job = %job.id, "the store did not answer the check of the job's sink against the running jobs");
                None
            }
        };
        match holder {
            Some(row)
                if row.state == "running"
                    && (row.started_ms.unwrap_or(i64::MAX), row.id.clone()) < ours =>
            {
                Err(JobError::Failed(format!(
                    "{:?} is the sink of job {}, which is writing it: two jobs writing one \
                     output at once would lose one's rows; submit this one again once that \
                     job has ended, or write elsewhere",
                    sink.describe(),
                    row.id
                )))
            }
            _ => Ok(()),
        }
    }

    /// A job queued or running here.
    pub fn live(&self, id: &str) -> Option<Arc<LiveJob>> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// A job that ended here whose end the store has refused so far (see
    /// `finish`): its view as it ended.
    pub fn unrecorded_end(&self, id: &str) -> Option<JobView> {
        self.refused_ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map(|end| end.view.clone())
    }

    /// A job, from memory when it is queued or running here or its end is not
    /// recorded yet, else from the store.
    pub async fn get(&self, id: &str) -> Result<Option<JobView>, crate::store::StoreError> {
        if let Some(view) = self.unrecorded_end(id) {
            return Ok(Some(view));
        }
        if let Some(job) = self.live(id) {
            let view = job.view();
            // Queued here, it may have been claimed (here or by another server) or
            // ended elsewhere since: the store knows.
            if view.state == JobState::Queued {
                if let Ok(Some(row)) = self.store.job(id).await {
                    if row.state != "queued" {
                        return Ok(Some(JobView::from_row(row)));
                    }
                }
            }
            return Ok(Some(view));
        }
        Ok(self.store.job(id).await?.map(JobView::from_row))
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Asks a job to stop. Answers its view after the request, or `None` when no
    /// such job exists. The store records the request first: with the store down the
    /// call fails (503) and the job goes on. A job of this server that is publishing
    /// its result (a training job's version, a scoring job's output) is
    /// [`CancelError::TooLate`]: it will be saved.
    pub async fn cancel(&self, id: &str) -> Result<Option<JobView>, CancelError> {
        if let Some(job) = self.live(id) {
            if job.is_publishing() {
                return Err(CancelError::TooLate(job.kind));
            }
            let cancelled_queued = self.store.request_job_cancel(id).await?;
            // It may have begun publishing while the store took the request.
            job.cancel_by_client()?;
            if cancelled_queued {
                // Still queued: cancelled now; the worker will find it taken.
                job.view.send_modify(|v| {
                    v.state = JobState::Cancelled;
                    v.settle_progress();
                    v.finished_ms = Some(now_ms());
                });
                self.live
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
                uploads::remove_job_dir(&self.uploads_dir, id);
            }
            return Ok(Some(job.view()));
        }
        match self.store.job(id).await? {
            None => Ok(None),
            Some(row) if row.state == "queued" || row.state == "running" => {
                self.store.request_job_cancel(id).await?;
                Ok(self.store.job(id).await?.map(JobView::from_row))
            }
            Some(row) => Ok(Some(JobView::from_row(row))),
        }
    }

    /// A job queued here that the store shows cancelled, failed or claimed by
    /// another server: its view (and so its event streams, which end with it)
    /// takes the store's word, it leaves this server's memory (status then reads
    /// the store), and its uploaded files go once it has ended.
    fn left_elsewhere(&self, job: &LiveJob, row: JobRow) {
        let view = JobView::from_row(row);
        let ended = view.state.is_finished();
        job.view.send_replace(view);
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job.id);
        if ended {
            uploads::remove_job_dir(&self.uploads_dir, &job.id);
        }
    }

    /// Runs one queued job on this thread, to its end.
    fn run_one(&self, id: &str) {
        let Some(job) = self.live(id) else { return };
        // A store that does not answer leaves the job queued there: the claim is
        // tried again (a job failed for it would be failed for good, and could
        // overwrite another server's claim), until this server stops.
        let claimed = loop {
            match self.runtime.block_on(self.store.claim_job(id)) {
                Ok(claimed) => break claimed,
                Err(e) => {
                    if self.stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    tracing::warn!(job = id, "cannot claim the job yet: {e}");
                    std::thread::sleep(CLAIM_RETRY);
                }
            }
        };
        match claimed {
            true => {}
            false => {
                // Cancelled while queued, or taken by another server: this
                // server's view takes the store's word before the job leaves.
                match self.runtime.block_on(self.store.job(id)) {
                    Ok(Some(row)) => self.left_elsewhere(&job, row),
                    _ => {
                        self.live
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(id);
                    }
                }
                return;
            }
        }
        *job.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        *job.last_persist.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        job.view.send_modify(|v| {
            v.state = JobState::Running;
            v.started_ms = Some(now_ms());
            v.progress.stage = "starting".into();
        });
        let outcome = match self.state.upgrade() {
            None => Err(JobError::Cancelled),
            Some(state) => {
                let ctx = JobContext {
                    state,
                    runtime: self.runtime.clone(),
                    job: job.clone(),
                    store: self.store.clone(),
                };
                let data_dir = self.data_dir.clone();
                let job_uploads = self.uploads_dir.join(&job.id);
                // A panic in a job fails that job, not the runner.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match spec::parse_job_in(
                    &serde_json::json!({"kind": job.kind.as_str(), "spec": job.spec_json}),
                    spec::Roots {
                        data_dir: &data_dir,
                        uploads: Some(&job_uploads),
                    },
                ) {
                    Err(e) => Err(JobError::Failed(format!(
                        "the spec is no longer valid: {e}"
                    ))),
                    Ok(JobSpec::Score(s)) => self
                        .check_sink_free_at_start(&job, &s.sink)
                        .and_then(|()| score::run(&ctx, &s)),
                    Ok(JobSpec::Train(t)) => train::run(&ctx, &t),
                }))
                .unwrap_or_else(|_| Err(JobError::Failed("the job panicked (a bug)".into())))
            }
        };
        self.finish(&job, outcome);
    }

    /// Records how a job ended, in memory and in the store, and forgets it.
    fn finish(&self, job: &Arc<LiveJob>, outcome: Result<serde_json::Value, JobError>) {
        // Ended (an interrupted job is failed, never rerun): its files are done with,
        // and gone before anyone sees the job finished. Queued jobs keep theirs
        // across a shutdown, for the next start.
        uploads::remove_job_dir(&self.uploads_dir, &job.id);
        job.ending.store(true, Ordering::SeqCst);
        let cancel = job.cancel.load(Ordering::Relaxed);
        if cancel == TAKEN_ELSEWHERE {
            self.taken_elsewhere(job);
            return;
        }
        let (state, result, error) = end_of(outcome, cancel);
        let finished_ms = now_ms();
        let end = |v: &mut JobView| {
            v.state = state;
            v.settle_progress();
            v.result = result.clone();
            v.error = error.clone();
            v.finished_ms = Some(finished_ms);
        };
        // The store first, then the live view: whoever sees the job finished (its
        // record, its events) finds it finished in the listing too, which reads the
        // store.
        let mut view = job.view();
        end(&mut view);
        // The end must be recorded: with the store away (or unable to take it for
        // the moment), this worker tries until it is back (no other job could be
        // claimed meanwhile). The job stays live here until then, so that no
        // replica, this one included, takes it for an orphan and records it
        // interrupted; its view shows the end after a few tries. A statement the
        // store refuses as such is handed to the recovery sweep after as many
        // tries (see `replicas::record_refused_ends`), so that the worker goes
        // on; every try is given up when the server stops (the next start records
        // the job interrupted).
        let (mut shown, mut refused) = (false, 0);
        for attempt in 0u32.. {
            match self
                .runtime
                .block_on(record_end_if_ours(&self.store, &view))
            {
                Ok(true) => break,
                // Another server failed it under this one after its last progress
                // write: the store's end stands.
                Ok(false) => {
                    self.taken_elsewhere(job);
                    return;
                }
                Err(e) => {
                    tracing::warn!(job = %job.id, attempt, "cannot record the job's end yet: {e}");
                    if attempt + 1 == SHOW_END_AFTER {
                        job.view.send_modify(end);
                        shown = true;
                    }
                    refused = match e {
                        crate::store::StoreError::Invalid(_) => refused + 1,
                        _ => 0,
                    };
                    if refused == SHOW_END_AFTER {
                        tracing::error!(
                            job = %job.id,
                            state = state.as_str(),
                            error = error.as_deref().unwrap_or(""),
                            "the store refuses the job's end: tried again at every sweep"
                        );
                        self.refused_ends
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(job.id.clone(), JobEnd { view, tries: 0 });
                        break;
                    }
                    std::thread::sleep(Duration::from_millis((200 << attempt.min(3)).min(1000)));
                    if self.stopping.load(Ordering::Relaxed) {
                        tracing::warn!(job = %job.id, "the server stops before the job's end is recorded: the next start records it interrupted");
                        break;
                    }
                }
            }
        }
        if !shown {
            job.view.send_modify(end);
        }
        crate::metrics::record_job_finished(job.kind.as_str(), state.as_str());
        tracing::info!(job = %job.id, state = state.as_str(), error = error.as_deref().unwrap_or(""), "job finished");
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job.id);
    }

    /// Forgets a job another server failed under this one (this one was paused
    /// past the heartbeat's grace): nothing of this server's is written for it;
    /// its view and metrics take the store's state and error. Until the store
    /// answers (tried until this server stops) the job stays live here.
    fn taken_elsewhere(&self, job: &Arc<LiveJob>) {
        tracing::warn!(job = %job.id, "another replica failed this job while this one was paused: its end there stands, nothing is recorded here");
        for attempt in 0u32.. {
            match self.runtime.block_on(self.store.job(&job.id)) {
                Ok(row) => {
                    if let Some(row) = row {
                        let view = JobView::from_row(row);
                        crate::metrics::record_job_finished(job.kind.as_str(), view.state.as_str());
                        job.view.send_replace(view);
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(job = %job.id, attempt, "cannot read the job's end from the store yet: {e}");
                    std::thread::sleep(Duration::from_millis((200 << attempt.min(3)).min(1000)));
                    if self.stopping.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        }
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job.id);
    }

    /// Cancelled once the runner has stopped ([`Jobs::shutdown`] has returned):
    /// every job that ran here has ended, and whoever follows one should stop.
    pub fn stopped(&self) -> CancellationToken {
        self.stopped.clone()
    }

    /// Stops the runner: running jobs stop at their next batch and are recorded as
    /// interrupted (their output discarded), queued ones stay queued for the next
    /// start. Blocks until the worker threads have ended: call off the async
    /// workers. Then [`Jobs::stopped`] is cancelled.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.stop_sweeper.cancel();
        for job in self.live.lock().unwrap_or_else(|e| e.into_inner()).values() {
            let _ = job.cancel.compare_exchange(
                NOT_CANCELLED,
                CANCELLED_BY_SHUTDOWN,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let refused = self
            .refused_ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect::<Vec<_>>();
        if !refused.is_empty() {
            tracing::warn!(jobs = ?refused, "the store never took these jobs' ends: the next start records them interrupted");
        }
        // Closing the queue ends the idle threads.
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        self.stopped.cancel();
    }
}

/// How a job that ran ends: its state, result and error, from its outcome and its
/// cancel flag. A job asked to stop ends as asked even when it failed meanwhile: a
/// source or sink that was waiting on a database when the cancel came, or whose
/// database failed as it came, reports an error, but the job was cancelled (by a
/// client) or interrupted (by shutdown), and its output is discarded all the same.
fn end_of(
    outcome: Result<serde_json::Value, JobError>,
    cancel: u8,
) -> (JobState, Option<serde_json::Value>, Option<String>) {
    match (outcome, cancel) {
        (Ok(result), _) => (JobState::Succeeded, Some(result), None),
        (Err(_), CANCELLED_BY_SHUTDOWN) => (
            JobState::Failed,
            None,
            Some(format!("{INTERRUPTED} (the server shut down)")),
        ),
        (Err(_), CANCELLED_BY_CLIENT) | (Err(JobError::Cancelled), _) => {
            (JobState::Cancelled, None, None)
        }
        (Err(JobError::Failed(e)), _) => (JobState::Failed, None, Some(e)),
    }
}

/// A job's end the store refused as such, for the recovery sweep to try again.
struct JobEnd {
    /// The job as it ended, shown until the store has it.
    view: JobView,
    /// Tries by the recovery sweep.
    tries: u32,
}

/// Records the end of the job `view` shows (`Store::finish_job`), unless
/// another server failed it meanwhile (then its end there stands).
async fn record_end(store: &Store, view: &JobView) -> Result<(), crate::store::StoreError> {
    record_end_if_ours(store, view).await.map(|_| ())
}

/// Records the end of the job `view` shows if it is still this server's: `false`
/// when another server failed it meanwhile, and nothing was written.
async fn record_end_if_ours(
    store: &Store,
    view: &JobView,
) -> Result<bool, crate::store::StoreError> {
    let row = row_of(view);
    store
        .finish_job(
            &row.id,
            &row.state,
            &row.progress,
            &row.messages,
            row.result.as_deref(),
            row.error.as_deref(),
        )
        .await
}

/// Whether a job's spec reads files uploaded with it: it runs only on the server
/// that has them.
fn has_uploads(spec: &serde_json::Value) -> bool {
    spec["source"].get("upload").is_some()
}

/// After how many failed attempts to record a job's end its live view shows the
/// end anyway (the attempts go on).
const SHOW_END_AFTER: u32 = 5;

/// How long a job worker waits before it tries again to claim a job the store
/// did not let it claim (down, or a lock past the timeout).
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// 32 random hex digits.
pub fn new_job_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = (fastrand::u128(..)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deletes finished jobs older than `retention`, at start and every
/// [`RETENTION_SWEEP`], until `stop`.
async fn sweep(
    store: Arc<Store>,
    retention: Duration,
    stop: CancellationToken,
    uploads_dir: PathBuf,
) {
    loop {
        uploads::remove_leftovers(&uploads_dir, &store, Some(RETENTION_SWEEP)).await;
        let cutoff = now_ms().saturating_sub(retention.as_millis().min(i64::MAX as u128) as i64);
        match store.delete_jobs_finished_before(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "finished jobs past the retention deleted"),
            Err(e) => tracing::warn!("cannot delete old jobs: {e}"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETENTION_SWEEP) => {}
        }
    }
}

/// How many nice steps below the server's own a job thread runs: the scheduler
/// gives a waiting online request the CPU before the job's parsing and formatting,
/// and the job still gets every cycle nothing else wants (issue 13: jobs yield to
/// online traffic). Measured on one CPU (bench/RESULTS.md): the online p99 while a
/// job ran was 3.9-4.2x idle at +10, 1.13-1.73x at +19, with the job alone as fast.
/// `SCHED_IDLE` did better for the p99 (1.03-1.26x) but all but stopped jobs while
/// the CPUs were busy: a finished job's record waited seconds to be written.
pub const JOB_NICE: libc::c_int = 19;

/// Lowers the calling thread's scheduling priority by [`JOB_NICE`] (at most to
/// 19). Linux sets a thread's nice value with `PRIO_PROCESS` and its thread id.
fn lower_priority() {
    // SAFETY: `gettid`, `getpriority` and `setpriority` touch no memory of ours.
    let (tid, now) = unsafe {
        let tid = libc::gettid() as libc::id_t;
        (tid, libc::getpriority(libc::PRIO_PROCESS, tid))
    };
    let nice = (now + JOB_NICE).min(19);
    // SAFETY: as above.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0 {
        tracing::warn!(
            "cannot lower a job thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod end_tests {
    use super::*;

    fn live_job() -> LiveJob {
        let view = JobView {
            job_id: "j".into(),
            kind: "train".into(),
            state: JobState::Running,
            spec: serde_json::json!({}),
            progress: Progress::default(),
            messages: Vec::new(),
            result: None,
            error: None,
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
        };
        LiveJob::new(view, JobKind::Train)
    }

    #[test]
    fn a_cancel_before_publishing_stops_the_job_and_one_after_is_too_late() {
        // Cancelled first: the job does not publish.
        let job = live_job();
        job.cancel_by_client().unwrap();
        assert!(matches!(job.begin_publishing(), Err(JobError::Cancelled)));
        assert!(job.is_cancelled());
        // Publishing first: the cancel is refused, and the job is not cancelled.
        let job = live_job();
        job.begin_publishing().unwrap();
        assert!(matches!(
            job.cancel_by_client(),
            Err(CancelError::TooLate(_))
        ));
        assert!(!job.is_cancelled() && job.is_publishing());
        let (state, _, _) = end_of(
            Ok(serde_json::json!({})),
            job.cancel.load(Ordering::Relaxed),
        );
        assert_eq!(state, JobState::Succeeded);
    }

    /// Was: a scoring job's commit came after its last cancel check with no mark,
    /// so a cancel during it was answered 200 and the job ended `succeeded`, its
    /// output written. Now it commits past the same mark as a training job's
    /// publication, and a cancel then is refused, saying what is saved.
    #[test]
    fn a_cancel_of_a_scoring_job_committing_is_too_late() {
        let job = LiveJob::new(live_job().view(), JobKind::Score);
        job.begin_publishing().unwrap();
        let e = job.cancel_by_client().unwrap_err();
        assert_eq!(
            e.to_string(),
            "too late to cancel: its output is being committed"
        );
        let e = live_job().cancel_by_client().map(|_| ());
        assert!(e.is_ok());
        let train = live_job();
        train.begin_publishing().unwrap();
        let e = train.cancel_by_client().unwrap_err();
        assert_eq!(
            e.to_string(),
            "too late to cancel: the model is being saved"
        );
    }

    #[test]
    fn a_job_asked_to_stop_ends_as_asked_even_when_it_failed_meanwhile() {
        let failed = || Err(JobError::Failed("cannot connect to postgres://h/db".into()));
        // A cancel seen by a source waiting on its database, or a database that
        // failed as the cancel came: cancelled, not failed.
        assert_eq!(
            end_of(failed(), CANCELLED_BY_CLIENT),
            (JobState::Cancelled, None, None)
        );
        let (state, _, error) = end_of(failed(), CANCELLED_BY_SHUTDOWN);
        assert_eq!(state, JobState::Failed);
        assert!(error.unwrap().starts_with(INTERRUPTED));
        // Nobody asked: the failure stands; a finished job stays finished.
        assert_eq!(
            end_of(failed(), NOT_CANCELLED),
            (
                JobState::Failed,
                None,
                Some("cannot connect to postgres://h/db".into())
            )
        );
        assert_eq!(
            end_of(Ok(serde_json::json!({"rows": 1})), CANCELLED_BY_CLIENT).0,
            JobState::Succeeded
        );
        assert_eq!(
            end_of(Err(JobError::Cancelled), NOT_CANCELLED).0,
            JobState::Cancelled
        );
    }
}

#[cfg(test)]
mod priority_tests {
    /// The calling thread's nice value.
    fn thread_nice() -> libc::c_int {
        // SAFETY: as in `lower_priority`.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn a_job_thread_runs_below_the_server_and_only_it_does() {
        let server = thread_nice();
        let job = std::thread::spawn(|| {
            super::lower_priority();
            thread_nice()
        })
        .join()
        .unwrap();
        assert_eq!(job, (server + super::JOB_NICE).min(19));
        assert!(job > server || server == 19);
        assert_eq!(
            thread_nice(),
            server,
            "the calling thread keeps its priority"
        );
    }
}
