//! Replicas sharing one store: each refreshes its running jobs' heartbeat, marks
//! failed the jobs whose replica is gone and picks up the queued jobs it does not
//! know (see the invariants in [`super`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{JobKind, JobState, JobView, Jobs, LiveJob, INTERRUPTED};
use crate::store::now_ms;

/// How often this replica refreshes its running jobs' heartbeat, looks for
/// orphaned jobs and picks up queued ones.
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A running job whose heartbeat is older than this belongs to a replica that is
/// gone (or cut off from the store), whatever host it ran on.
pub(super) const STALE_AFTER: Duration = Duration::from_secs(30);

impl Jobs {
    /// Marks failed the jobs recorded as running whose replica is gone (see
    /// [`is_orphan`]). Answers how many.
    pub(super) async fn recover_orphans(&self) -> Result<u64, crate::store::StoreError> {
        let now = now_ms();
        let mut marked = 0;
        for job in self.store.running_jobs().await? {
            let live_here = self.live(&job.id).is_some();
            if is_orphan(&job, self.store.replica(), live_here, now)
                && self.store.fail_orphaned_job(&job, INTERRUPTED).await?
            {
                tracing::warn!(job = %job.id, replica = %job.claimed_by, "job interrupted: its server is gone");
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
                    .is_ok_and(|spec| spec["source"].get("upload").is_some())
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

/// Whether a job recorded as running has lost its replica: it was claimed by this
/// replica's name but is not running here (this process restarted with the same
/// pid, as in a container), by another process on this host that no longer
/// exists, or its heartbeat is older than [`STALE_AFTER`] (any host).
fn is_orphan(job: &crate::store::RunningJob, me: &str, live_here: bool, now_ms: i64) -> bool {
    if job.claimed_by == me {
        return !live_here;
    }
    let stale = now_ms.saturating_sub(job.heartbeat_ms) > STALE_AFTER.as_millis() as i64;
    if stale {
        return true;
    }
    let host_of = |r: &str| r.rsplit_once(':').map(|(h, _)| h.to_string());
    match (host_of(&job.claimed_by), host_of(me)) {
        (Some(theirs), Some(mine)) if theirs == mine => job
            .claimed_by
            .rsplit_once(':')
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
            .is_some_and(|pid| !process_exists(pid)),
        _ => false,
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
    use crate::store::RunningJob;

    fn job(claimed_by: &str, heartbeat_ms: i64) -> RunningJob {
        RunningJob {
            id: "j".into(),
            claimed_by: claimed_by.into(),
            heartbeat_ms,
        }
    }

    #[test]
    fn only_jobs_whose_replica_is_gone_are_orphans() {
        let now = 1_000_000_000;
        let fresh = now - 1000;
        let stale = now - STALE_AFTER.as_millis() as i64 - 1;
        let me = format!("host-a:{}", std::process::id());
        // Ours: an orphan only when not running here (a restart with the same pid).
        assert!(!is_orphan(&job(&me, fresh), &me, true, now));
        assert!(is_orphan(&job(&me, fresh), &me, false, now));
        // Another live process on this host keeps its job; a dead one loses it.
        assert!(!is_orphan(&job("host-a:1", fresh), &me, false, now));
        assert!(is_orphan(
            &job(&format!("host-a:{}", u32::MAX - 7), fresh),
            &me,
            false,
            now
        ));
        // Another host: only the heartbeat tells.
        assert!(!is_orphan(&job("host-b:1", fresh), &me, false, now));
        assert!(is_orphan(&job("host-b:1", stale), &me, false, now));
        assert!(is_orphan(&job("", 0), &me, false, now));
    }
}
