//! Replicas sharing one store: each refreshes its jobs' heartbeat, marks failed
//! the jobs whose replica is gone and picks up the queued jobs it does not know
//! (see the invariants in [`super`]).
//!
//! Whether a replica is gone is decided from what this process can know for sure.
//! A pid means something only in this process's own pid namespace on its own
//! machine ([`ReplicaName`]). A heartbeat's time stamp alone proves nothing: it
//! may come from another clock, minutes off, or have stood still only because
//! nobody could write (the store down, or read-only). So a heartbeat counts as
//! silent only once this replica has itself seen it stand still (its own
//! monotonic clock), in touch with the store all along: any failed read or
//! heartbeat of its own starts its watch over ([`Seen::forget`]).
//!
//! The heartbeat runs on a task of its own, so that a slow sweep never delays it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::io;
use super::spec::{self, SinkSpec};
use super::{
    has_uploads, record_end, JobKind, JobState, JobView, Jobs, LiveJob, FILES_GONE, INTERRUPTED,
};
use crate::store::{now_ms, ClaimedJob, ReplicaName, StoreError};

/// How often this replica refreshes its jobs' heartbeat, and how often it looks
/// for orphaned jobs and picks up queued ones.
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A job whose heartbeat this replica has seen stand still this long belongs to a
/// replica that is gone (or cut off from the store).
pub(super) const STALE_AFTER: Duration = Duration::from_secs(30);
/// How long this replica must itself see a heartbeat stand still before it
/// believes that heartbeat's time stamp when it is [`STALE_AFTER`] old (three
/// missed heartbeats): a replica just started fails a job left by a dead one that
/// soon, not at once.
pub(super) const CONFIRM_SILENCE: Duration = Duration::from_secs(15);

/// The heartbeats of the jobs replicas hold, as this replica saw them.
#[derive(Default)]
pub(super) struct Seen {
    jobs: HashMap<String, Watched>,
}

/// One job's heartbeat as seen: its claimer and time stamp, and how long they have
/// stood still.
struct Watched {
    by: String,
    beat: i64,
    /// Since when it has stood still in this stretch of unbroken contact with the
    /// store; `None` after a failure, until the next look.
    since: Option<Instant>,
    /// How long it stood still in earlier stretches (the gaps between them, when
    /// nobody may have been able to write, not counted).
    banked: Duration,
    /// When it was last seen.
    last: Instant,
}

/// How long a job's heartbeat has stood still, as this replica saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Still {
    /// Since this replica last failed to reach the store (or since it changed).
    pub recent: Duration,
    /// In every stretch of contact since it last changed, the gaps not counted.
    pub total: Duration,
}

impl Seen {
    /// Records `held` (the store's held jobs, all of them) as seen at `at`;
    /// answers, per job, how long its heartbeat has stood still. Jobs no longer
    /// held are forgotten.
    fn observe(&mut self, held: &[ClaimedJob], at: Instant) -> Vec<Still> {
        let mut still = Vec::with_capacity(held.len());
        let mut next = HashMap::with_capacity(held.len());
        for job in held {
            let (since, banked) = match self.jobs.remove(&job.id) {
                Some(w) if w.by == job.claimed_by && w.beat == job.heartbeat_ms => {
                    (w.since.unwrap_or(at), w.banked)
                }
                _ => (at, Duration::ZERO),
            };
            let recent = at.saturating_duration_since(since);
            still.push(Still {
                recent,
                total: banked + recent,
            });
            next.insert(
                job.id.clone(),
                Watched {
                    by: job.claimed_by.clone(),
                    beat: job.heartbeat_ms,
                    since: Some(since),
                    banked,
                    last: at,
                },
            );
        }
        self.jobs = next;
        still
    }

    /// Ends the stretch of contact: what is seen after a failure to reach the
    /// store counts again from the next look (nobody may have been able to write
    /// meanwhile), what was seen before it is kept in the total.
    pub(super) fn forget(&mut self) {
        for w in self.jobs.values_mut() {
            if let Some(since) = w.since.take() {
                w.banked += w.last.saturating_duration_since(since);
            }
        }
    }
}

impl Jobs {
    fn forget_heartbeats(&self) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).forget();
    }

    /// Marks failed the jobs held by a replica that is gone: running ones (see
    /// [`is_orphan`]) as interrupted, queued ones whose uploaded files were there
    /// (see [`holder_is_gone`]) as never to run. A queued job whose files are here
    /// and whose holder is gone by [`is_orphan`]'s rules (the process before this
    /// one, say) is taken over. Looks at every held job: a write the store refuses
    /// for one is logged and the others are still looked at. Decides nothing while
    /// this replica's own heartbeat has not landed for [`CONFIRM_SILENCE`] (writes
    /// that hang rather than fail: nobody may be able to write). Tries again first
    /// the ends the store refused ([`Jobs::record_refused_ends`]). Answers how many
    /// were failed.
    pub(super) async fn recover_orphans(&self) -> Result<u64, crate::store::StoreError> {
        if self.beat_landed_at().elapsed() > CONFIRM_SILENCE {
            self.forget_heartbeats();
            return Ok(0);
        }
        self.record_refused_ends().await;
        let claimed = match self.store.claimed_jobs().await {
            Ok(claimed) => claimed,
            Err(e) => {
                self.forget_heartbeats();
                return Err(e);
            }
        };
        let still = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(&claimed, Instant::now());
        let me = self.store.claimant();
        let now = now_ms();
        let mut marked = 0;
        let refused_here = |id: &str| {
            self.refused_ends
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(id)
        };
        for (job, still) in claimed.iter().zip(still) {
            let live_here = self.live(&job.id).is_some() || refused_here(&job.id);
            if job.queued && self.uploads_dir.join(&job.id).is_dir() {
                // Held under this process's name it is queued here: no orphan.
                if is_orphan(job, me, live_here, now, still.recent) {
                    match self.store.adopt_queued_job(job).await {
                        Ok(true) => {
                            tracing::info!(job = %job.id, replica = %job.claimed_by, "queued job with its files here taken over")
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(job = %job.id, "cannot take the job over: {e}"),
                    }
                }
                continue;
            }
            let (gone, error) = if job.queued {
                (
                    holder_is_gone(job, me, live_here, still.total, self.upload_grace),
                    FILES_GONE,
                )
            } else {
                (
                    is_orphan(job, me, live_here, now, still.recent),
                    INTERRUPTED,
                )
            };
            if gone {
                match self.store.fail_orphaned_job(job, error).await {
                    Ok(true) => {
                        tracing::warn!(job = %job.id, replica = %job.claimed_by, "{error}");
                        marked += 1;
                        if !job.queued {
                            self.discard_output(&job.id).await;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(job = %job.id, "cannot mark the job failed: {e}"),
                }
            }
        }
        Ok(marked)
    }

    /// Removes what an interrupted job left of its output: a file sink's temporary
    /// file, which its process could not remove (a SQL sink's transaction ended
    /// with its connection). The job is failed in the store first, so nothing
    /// writes the file any more.
    async fn discard_output(&self, id: &str) {
        let Ok(Some(row)) = self.store.job(id).await else {
            return;
        };
        let spec = JobView::from_row(row).spec;
        let Ok(SinkSpec::File(file)) =
            spec::parse_sink(spec.get("sink"), "spec.sink", &self.data_dir)
        else {
            return;
        };
        let Some(temp) = io::temp_path(&file.path, id) else {
            return;
        };
        match std::fs::remove_file(&temp) {
            Ok(()) => {
                tracing::info!(job = %id, file = %temp.display(), "the interrupted job's unfinished output is removed")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(job = %id, file = %temp.display(), "cannot remove the interrupted job's unfinished output: {e}")
            }
        }
    }

    /// Records the ends the store refused as such when their jobs finished (see
    /// `Jobs::finish`): whole, and when the store refuses that again, without
    /// the result (what a store refuses for its size or content), the error
    /// saying so. One still refused stays for the next sweep.
    async fn record_refused_ends(&self) {
        // A snapshot: the ends stay in the map while written, so that their jobs
        // show their end meanwhile.
        let ends: Vec<JobView> = self
            .refused_ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|end| end.view.clone())
            .collect();
        let refused =
            |written: &Result<(), StoreError>| matches!(written, Err(StoreError::Invalid(_)));
        let note = "the metadata store refused to record it (the server's log says why)";
        for view in ends {
            let mut written = record_end(&self.store, &view).await;
            // Then without what a store refuses for its size or content: the
            // result, and last the messages and all but the start of the error.
            if refused(&written) && view.result.is_some() {
                let error = view
                    .error
                    .as_deref()
                    .map(|e| format!("{e}; "))
                    .unwrap_or_default();
                let without = JobView {
                    result: None,
                    error: Some(format!("{error}its result was not recorded: {note}")),
                    ..view.clone()
                };
                written = record_end(&self.store, &without).await;
            }
            if refused(&written) {
                let full = view.error.as_deref().unwrap_or("");
                let mut error: String = full.chars().take(200).collect();
                if error.len() < full.len() {
                    error.push('…');
                }
                if !error.is_empty() {
                    error.push_str("; ");
                }
                let bare = JobView {
                    result: None,
                    messages: Vec::new(),
                    error: Some(format!(
                        "{error}its result and messages were not recorded: {note}"
                    )),
                    ..view.clone()
                };
                written = record_end(&self.store, &bare).await;
            }
            let id = &view.job_id;
            let mut ends = self.refused_ends.lock().unwrap_or_else(|e| e.into_inner());
            match written {
                Ok(()) => {
                    ends.remove(id);
                    tracing::info!(job = %id, state = view.state.as_str(), "the job's end is recorded at last");
                }
                Err(e) => {
                    if let Some(kept) = ends.get_mut(id) {
                        kept.tries += 1;
                        if kept.tries.is_power_of_two() {
                            tracing::warn!(job = %id, tries = kept.tries, "the store still refuses the job's end: {e}");
                        }
                    }
                }
            }
        }
    }

    /// When this replica's own heartbeat last landed (or the runner started).
    fn beat_landed_at(&self) -> Instant {
        *self.beat_landed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues here the queued jobs this server does not know yet (submitted to a
    /// replica that stopped, or still waiting there): whichever replica claims a
    /// job first runs it.
    /// Jobs queued here that the store no longer has queued and shows ended
    /// (cancelled through another replica, or by a cancel that landed after its
    /// 503) take the store's word at once, not when a job worker comes to them.
    pub(super) async fn pick_up_queued(&self) -> Result<(), crate::store::StoreError> {
        let queued = self.store.queued_job_ids().await?;
        let known: std::collections::HashSet<&str> =
            queued.iter().map(|(id, _)| id.as_str()).collect();
        let waiting_here: Vec<Arc<LiveJob>> = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|job| {
                job.view.borrow().state == JobState::Queued && !known.contains(job.id.as_str())
            })
            .cloned()
            .collect();
        for job in waiting_here {
            // Claimed (here or elsewhere) is left to the job worker.
            if let Some(row) = self.store.job(&job.id).await? {
                if matches!(row.state.as_str(), "cancelled" | "failed" | "succeeded") {
                    self.left_elsewhere(&job, row);
                }
            }
        }
        for (id, held) in queued {
            // A job with uploaded files runs where they were stored: one held by
            // another server is not even read.
            let files_here = || self.uploads_dir.join(&id).is_dir();
            if self.live(&id).is_some() || (held && !files_here()) {
                continue;
            }
            if let Some(row) = self.store.job(&id).await? {
                // Recorded by a server before holders were: the spec tells.
                let uploads_elsewhere = serde_json::from_str::<serde_json::Value>(&row.spec)
                    .is_ok_and(|spec| has_uploads(&spec))
                    && !files_here();
                if row.state == "queued" && !uploads_elsewhere {
                    let kind = JobKind::parse(&row.kind).unwrap_or(JobKind::Score);
                    self.enqueue(Arc::new(LiveJob::new(JobView::from_row(row), kind)));
                }
            }
        }
        Ok(())
    }
}

/// Whether a running job has lost its replica, `still` being how long this
/// replica has seen its heartbeat stand still:
/// * claimed under this process's name: when it is not running here;
/// * claimed by a process in this pid namespace on this machine: when that pid no
///   longer exists, or is this process's (a process before this one, such as the
///   same container started again);
/// * otherwise (another pid namespace or machine, or a name this server cannot
///   read): when its heartbeat has stood still for [`STALE_AFTER`], or for
///   [`CONFIRM_SILENCE`] with a time stamp [`STALE_AFTER`] old by this clock.
fn is_orphan(
    job: &ClaimedJob,
    me: &ReplicaName,
    live_here: bool,
    now_ms: i64,
    still: Duration,
) -> bool {
    let theirs = ReplicaName::parse(&job.claimed_by);
    if theirs.as_ref() == Some(me) {
        return !live_here;
    }
    if theirs.is_some_and(|theirs| {
        me.same_pid_namespace(&theirs) && (theirs.pid == me.pid || !process_exists(theirs.pid))
    }) {
        return true;
    }
    let old = now_ms.saturating_sub(job.heartbeat_ms) > STALE_AFTER.as_millis() as i64;
    still >= STALE_AFTER || (old && still >= CONFIRM_SILENCE)
}

/// Whether a queued job held for its uploaded files, which are not here, has lost
/// the server that holds them: claimed under this process's name but not queued
/// here, or its heartbeat seen standing still for `grace` (`still`: in all, across
/// this replica's failures to reach the store, which only pause the count: a
/// grace of minutes might otherwise never pass). Neither a missing pid
/// nor an old time stamp is enough: the server may be starting again on its state
/// directory, and only it can run the job.
fn holder_is_gone(
    job: &ClaimedJob,
    me: &ReplicaName,
    live_here: bool,
    still: Duration,
    grace: Duration,
) -> bool {
    if ReplicaName::parse(&job.claimed_by).as_ref() == Some(me) {
        return !live_here;
    }
    still >= grace
}

/// Whether process `pid` of this pid namespace is alive. A zombie (state `Z`:
/// ended, not yet reaped by its parent) or a dead one (`X`) keeps its
/// `/proc/<pid>` for a while, but runs no job: a server killed and restarted
/// at once would otherwise show its dead jobs running until its parent reaps it.
fn process_exists(pid: u32) -> bool {
    if !cfg!(target_os = "linux") {
        // Elsewhere only the heartbeat tells.
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(process_state(&stat), Some('Z' | 'X' | 'x')),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // Unreadable for another reason: it is there.
        Err(_) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
    }
}

/// The state letter of a `/proc/<pid>/stat` line: the field after the command
/// name, which is in parentheses and may itself hold spaces and parentheses.
fn process_state(stat: &str) -> Option<char> {
    let (_, after) = stat.rsplit_once(')')?;
    after.trim_start().chars().next()
}

/// Every [`HEARTBEAT_EVERY`] until `stop`: refreshes the heartbeat of the jobs
/// held here. A heartbeat the store refuses starts this replica's watch of the
/// others' over (nobody may be able to write).
pub(super) async fn beat(jobs: Weak<Jobs>, stop: CancellationToken) {
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(jobs) = jobs.upgrade() else { return };
        match jobs.store.heartbeat_jobs().await {
            Ok(()) => {
                *jobs.beat_landed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            }
            Err(e) => {
                tracing::warn!("cannot record the jobs' heartbeat: {e}");
                jobs.forget_heartbeats();
            }
        }
    }
}

/// Every [`HEARTBEAT_EVERY`] until `stop`: marks orphaned jobs failed, picks up
/// queued jobs.
pub(super) async fn watch(jobs: Weak<Jobs>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
        }
        let Some(jobs) = jobs.upgrade() else { return };
        if let Err(e) = jobs.recover_orphans().await {
            tracing::warn!("cannot look for interrupted jobs: {e}");
        }
        if !jobs.stopping.load(Ordering::Relaxed) {
            if let Err(e) = jobs.pick_up_queued().await {
                tracing::warn!("cannot look for queued jobs: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that has ended but that its parent has not reaped yet (a zombie)
    /// kept its `/proc/<pid>`, and was taken for alive.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_zombie_process_is_not_alive() {
        assert!(process_exists(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not waited for: once it ends it is a zombie until `wait` reaps it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if process_state(&stat) == Some('Z') {
                break;
            }
            assert!(Instant::now() < deadline, "{stat}");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!process_exists(pid), "a zombie is not alive");
        child.wait().unwrap();
        assert!(!process_exists(pid), "a reaped process is gone");
        // The command name may hold spaces and parentheses.
        assert_eq!(process_state("42 (a) b (c) S 1 42 42"), Some('S'));
        assert_eq!(process_state("42 (x) Z 1"), Some('Z'));
        assert_eq!(process_state("garbage"), None);
    }

    fn job(claimed_by: &ReplicaName, heartbeat_ms: i64) -> ClaimedJob {
        ClaimedJob {
            id: "j".into(),
            queued: false,
            claimed_by: claimed_by.to_string(),
            heartbeat_ms,
        }
    }

    fn name(machine: &str, pid_ns: u64, pid: u32, token: &str) -> ReplicaName {
        ReplicaName {
            host: "host-a".into(),
            pid,
            machine: Some(machine.into()),
            pid_ns: Some(pid_ns),
            token: token.into(),
        }
    }

    #[test]
    fn only_jobs_whose_replica_is_gone_are_orphans() {
        let now = 1_000_000_000;
        let fresh = now - 1000;
        let old = now - STALE_AFTER.as_millis() as i64 - 1;
        let moving = Duration::ZERO;
        let me = name("m1", 7, std::process::id(), "aaaa");
        let orphan = |by: &ReplicaName, beat: i64, live_here: bool, still: Duration| {
            is_orphan(&job(by, beat), &me, live_here, now, still)
        };
        // Ours: an orphan only when not running here.
        assert!(!orphan(&me, fresh, true, moving));
        assert!(orphan(&me, fresh, false, moving));
        // This pid namespace: a live process keeps its job while it beats; a dead
        // one, or one before this process with this pid, loses it at once.
        let sibling = name("m1", 7, 1, "bbbb");
        assert!(!orphan(&sibling, fresh, false, moving));
        assert!(!orphan(&sibling, old, false, moving));
        assert!(orphan(&sibling, old, false, CONFIRM_SILENCE));
        assert!(orphan(
            &name("m1", 7, u32::MAX - 7, "bbbb"),
            fresh,
            false,
            moving
        ));
        assert!(orphan(
            &name("m1", 7, std::process::id(), "bbbb"),
            fresh,
            false,
            moving
        ));
        // Another pid namespace on this machine (a container beside this one, with
        // the same host name and maybe the same pid): its pids mean nothing here,
        // and its heartbeat counts only once seen standing still.
        let beside = name("m1", 8, std::process::id(), "cccc");
        assert!(!orphan(&beside, fresh, false, moving));
        assert!(!orphan(
            &name("m1", 8, u32::MAX - 7, "cccc"),
            fresh,
            false,
            moving
        ));
        assert!(!orphan(&beside, old, false, moving));
        assert!(orphan(&beside, old, false, CONFIRM_SILENCE));
        // Another machine: its time stamps are on another clock. An old one is
        // believed only once seen standing still; a fresh-looking one that stands
        // still (a clock ahead) is an orphan after STALE_AFTER.
        let away = name("m2", 7, 1, "dddd");
        assert!(!orphan(&away, old, false, moving));
        assert!(!orphan(
            &away,
            old,
            false,
            CONFIRM_SILENCE - Duration::from_millis(1)
        ));
        assert!(orphan(&away, old, false, CONFIRM_SILENCE));
        assert!(!orphan(&away, fresh, false, CONFIRM_SILENCE));
        assert!(!orphan(
            &away,
            now + 600_000,
            false,
            STALE_AFTER - Duration::from_millis(1)
        ));
        assert!(orphan(&away, now + 600_000, false, STALE_AFTER));
        // Names older servers wrote (`host:pid`), or none: as another machine.
        let plain = |by: &str, beat: i64, still: Duration| {
            let job = ClaimedJob {
                id: "j".into(),
                queued: false,
                claimed_by: by.into(),
                heartbeat_ms: beat,
            };
            is_orphan(&job, &me, false, now, still)
        };
        assert!(!plain("host-a:1", old, moving));
        assert!(plain("host-a:1", old, CONFIRM_SILENCE));
        assert!(!plain("", 0, moving));
        assert!(plain("", 0, STALE_AFTER));
    }

    #[test]
    fn a_held_job_without_its_files_waits_for_its_holder_the_grace() {
        let me = name("m1", 7, std::process::id(), "aaaa");
        let grace = Duration::from_secs(600);
        let held = |by: &ReplicaName| ClaimedJob {
            id: "j".into(),
            queued: true,
            claimed_by: by.to_string(),
            heartbeat_ms: 0,
        };
        let gone = |by: &ReplicaName, live_here: bool, still: Duration| {
            holder_is_gone(&held(by), &me, live_here, still, grace)
        };
        // Ours: gone only when it is not queued here (its files went).
        assert!(!gone(&me, true, grace));
        assert!(gone(&me, false, Duration::ZERO));
        // A dead pid here, or an old time stamp, is not enough: the server may be
        // starting again. Only a heartbeat seen standing still for the grace is.
        let dead_here = name("m1", 7, u32::MAX - 7, "bbbb");
        assert!(!gone(&dead_here, false, grace - Duration::from_millis(1)));
        assert!(gone(&dead_here, false, grace));
        assert!(!gone(&name("m2", 7, 1, "cccc"), false, STALE_AFTER));
    }

    #[test]
    fn a_heartbeat_stands_still_until_it_or_its_claimer_changes() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let secs = Duration::from_secs;
        let still = |recent: u64, total: u64| Still {
            recent: secs(recent),
            total: secs(total),
        };
        let held = |beat: i64, by: &str| {
            vec![ClaimedJob {
                id: "j".into(),
                queued: false,
                claimed_by: by.into(),
                heartbeat_ms: beat,
            }]
        };
        let mut seen = Seen::default();
        assert_eq!(seen.observe(&held(1, "a"), at(0)), [still(0, 0)]);
        assert_eq!(seen.observe(&held(1, "a"), at(5)), [still(5, 5)]);
        assert_eq!(seen.observe(&held(1, "a"), at(10)), [still(10, 10)]);
        // A failure to reach the store: the recent count starts again at the next
        // look; the total keeps what was seen before it, not the gap.
        seen.forget();
        assert_eq!(seen.observe(&held(1, "a"), at(40)), [still(0, 10)]);
        assert_eq!(seen.observe(&held(1, "a"), at(45)), [still(5, 15)]);
        seen.forget();
        seen.forget();
        assert_eq!(seen.observe(&held(1, "a"), at(60)), [still(0, 15)]);
        // A new heartbeat, or a new claimer with the same time stamp, starts over.
        assert_eq!(seen.observe(&held(2, "a"), at(65)), [still(0, 0)]);
        assert_eq!(seen.observe(&held(2, "b"), at(70)), [still(0, 0)]);
        assert_eq!(seen.observe(&held(2, "b"), at(75)), [still(5, 5)]);
        // A job no longer held is forgotten: seen again, it starts over.
        assert_eq!(seen.observe(&[], at(80)), Vec::<Still>::new());
        assert!(seen.jobs.is_empty());
        assert_eq!(seen.observe(&held(2, "b"), at(85)), [still(0, 0)]);
    }
}
