//! Replicas sharing one store: each refreshes its running jobs' heartbeat, marks
//! failed the jobs whose replica is gone and picks up the queued jobs it does not
//! know (see the invariants in [`super`]).
//!
//! Whether a replica is gone is decided from what this process can know for sure:
//! a pid only in its own pid namespace on its own machine ([`ReplicaName`]), a
//! heartbeat's age only against its own machine's clock. Another machine's
//! heartbeats are written by another clock, which may be minutes off: there a
//! heartbeat counts as silent only once this replica has itself seen it stand
//! still (its own monotonic clock), so a skewed clock never costs a live replica
//! its job.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{has_uploads, JobKind, JobState, JobView, Jobs, LiveJob, FILES_GONE, INTERRUPTED};
use crate::store::{now_ms, ClaimedJob, ReplicaName};

/// How often this replica refreshes its running jobs' heartbeat, looks for
/// orphaned jobs and picks up queued ones.
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A running job whose heartbeat has not moved for this long belongs to a replica
/// that is gone (or cut off from the store).
pub(super) const STALE_AFTER: Duration = Duration::from_secs(30);
/// How long this replica must itself see another machine's heartbeat stand still
/// before it believes that heartbeat's old time stamp (three missed heartbeats):
/// a replica just started fails a job left by a dead one that soon, not at once.
pub(super) const CONFIRM_SILENCE: Duration = Duration::from_secs(15);

/// The heartbeats of the running jobs, as this replica saw them: each job's
/// claimer and heartbeat, and since when (this process's clock) they have not
/// changed.
#[derive(Default)]
pub(super) struct Seen {
    jobs: HashMap<String, (String, i64, Instant)>,
}

impl Seen {
    /// Records `running` (the store's running jobs, all of them) as seen at `at`;
    /// answers, per job, how long its heartbeat has stood still. Jobs no longer
    /// running are forgotten.
    fn observe(&mut self, running: &[ClaimedJob], at: Instant) -> Vec<Duration> {
        let mut still = Vec::with_capacity(running.len());
        let mut next = HashMap::with_capacity(running.len());
        for job in running {
            let since = match self.jobs.remove(&job.id) {
                Some((by, beat, since)) if by == job.claimed_by && beat == job.heartbeat_ms => {
                    since
                }
                _ => at,
            };
            still.push(at.saturating_duration_since(since));
            next.insert(
                job.id.clone(),
                (job.claimed_by.clone(), job.heartbeat_ms, since),
            );
        }
        self.jobs = next;
        still
    }
}

impl Jobs {
    /// Marks failed the jobs held by a replica that is gone (see [`is_orphan`]):
    /// running ones as interrupted, queued ones whose uploaded files were there as
    /// never to run. A queued job whose files are here is this server's: taken
    /// over from the process before this one. Answers how many were failed.
    pub(super) async fn recover_orphans(&self) -> Result<u64, crate::store::StoreError> {
        let claimed = self.store.claimed_jobs().await?;
        let still = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(&claimed, Instant::now());
        let me = self.store.claimant();
        let now = now_ms();
        let mut marked = 0;
        for (job, still) in claimed.iter().zip(still) {
            if job.queued && self.uploads_dir.join(&job.id).is_dir() {
                if ReplicaName::parse(&job.claimed_by).as_ref() != Some(me)
                    && self.store.adopt_queued_job(job).await?
                {
                    tracing::info!(job = %job.id, replica = %job.claimed_by, "queued job with its files here taken over");
                }
                continue;
            }
            let live_here = self.live(&job.id).is_some();
            let error = if job.queued { FILES_GONE } else { INTERRUPTED };
            if is_orphan(job, me, live_here, now, still)
                && self.store.fail_orphaned_job(job, error).await?
            {
                tracing::warn!(job = %job.id, replica = %job.claimed_by, "{error}");
                marked += 1;
            }
        }
        Ok(marked)
    }

    /// Queues here the queued jobs this server does not know yet (submitted to a
    /// replica that stopped, or still waiting there): whichever replica claims a
    /// job first runs it.
    /// Jobs queued here that the store no longer has queued and shows ended
    /// (cancelled through another replica, or by a cancel that landed after its
    /// 503) take the store's word at once, not when a job worker comes to them.
    pub(super) async fn pick_up_queued(&self) -> Result<(), crate::store::StoreError> {
        let queued = self.store.queued_job_ids().await?;
        let known: std::collections::HashSet<&str> = queued.iter().map(|id| id.as_str()).collect();
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
        for id in queued {
            if self.live(&id).is_some() {
                continue;
            }
            if let Some(row) = self.store.job(&id).await? {
                // A job with uploaded files runs where they were stored.
                let uploads_elsewhere = serde_json::from_str::<serde_json::Value>(&row.spec)
                    .is_ok_and(|spec| has_uploads(&spec))
                    && !self.uploads_dir.join(&id).is_dir();
                if row.state == "queued" && !uploads_elsewhere {
                    let kind = JobKind::parse(&row.kind).unwrap_or(JobKind::Score);
                    self.enqueue(Arc::new(LiveJob::new(JobView::from_row(row), kind)));
                }
            }
        }
        Ok(())
    }
}

/// Whether a job held by a replica (running, or queued with its files there) has
/// lost that replica, `still` being how long this replica has seen its heartbeat
/// stand still:
/// * claimed under this process's name: when it is not queued or running here;
/// * claimed by a process in this pid namespace on this machine: when that pid no
///   longer exists, or is this process's (a process before this one, such as the
///   same container started again), or its heartbeat is [`STALE_AFTER`] old;
/// * claimed by another pid namespace on this machine (same clock): when its
///   heartbeat is [`STALE_AFTER`] old;
/// * claimed on another machine, or under a name this server cannot read: when its
///   heartbeat has stood still for [`STALE_AFTER`], or for [`CONFIRM_SILENCE`] with
///   a time stamp [`STALE_AFTER`] old by this machine's clock.
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
    let old = now_ms.saturating_sub(job.heartbeat_ms) > STALE_AFTER.as_millis() as i64;
    match theirs {
        Some(theirs) if me.same_pid_namespace(&theirs) => {
            theirs.pid == me.pid || !process_exists(theirs.pid) || old
        }
        Some(theirs) if me.same_machine(&theirs) => old,
        _ => still >= STALE_AFTER || (old && still >= CONFIRM_SILENCE),
    }
}

fn process_exists(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        // Elsewhere only the heartbeat tells.
        true
    }
}

/// Every [`HEARTBEAT_EVERY`] until `stop`: refreshes the heartbeat of the jobs
/// running here, marks orphaned jobs failed, picks up queued jobs.
pub(super) async fn heartbeat(jobs: Weak<Jobs>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
        }
        let Some(jobs) = jobs.upgrade() else { return };
        if let Err(e) = jobs.store.heartbeat_jobs().await {
            tracing::warn!("cannot record the jobs' heartbeat: {e}");
            continue;
        }
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
        assert!(!orphan(&name("m1", 7, 1, "bbbb"), fresh, false, moving));
        assert!(orphan(&name("m1", 7, 1, "bbbb"), old, false, moving));
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
        // its heartbeat is on this clock.
        let beside = name("m1", 8, std::process::id(), "cccc");
        assert!(!orphan(&beside, fresh, false, moving));
        assert!(!orphan(
            &name("m1", 8, u32::MAX - 7, "cccc"),
            fresh,
            false,
            moving
        ));
        assert!(orphan(&beside, old, false, moving));
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
    fn a_heartbeat_stands_still_until_it_or_its_claimer_changes() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let running = |beat: i64, by: &str| {
            vec![ClaimedJob {
                id: "j".into(),
                queued: false,
                claimed_by: by.into(),
                heartbeat_ms: beat,
            }]
        };
        let mut seen = Seen::default();
        assert_eq!(seen.observe(&running(1, "a"), at(0)), [Duration::ZERO]);
        assert_eq!(
            seen.observe(&running(1, "a"), at(5)),
            [Duration::from_secs(5)]
        );
        assert_eq!(
            seen.observe(&running(1, "a"), at(10)),
            [Duration::from_secs(10)]
        );
        // A new heartbeat, or a new claimer with the same time stamp, starts over.
        assert_eq!(seen.observe(&running(2, "a"), at(15)), [Duration::ZERO]);
        assert_eq!(seen.observe(&running(2, "b"), at(20)), [Duration::ZERO]);
        assert_eq!(
            seen.observe(&running(2, "b"), at(25)),
            [Duration::from_secs(5)]
        );
        // A job that stops running is forgotten: seen again, it starts over.
        assert_eq!(seen.observe(&[], at(30)), Vec::<Duration>::new());
        assert!(seen.jobs.is_empty());
        assert_eq!(seen.observe(&running(2, "b"), at(35)), [Duration::ZERO]);
    }
}
