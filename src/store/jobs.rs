//! The `jobs` table: one row per training or scoring job (`crate::jobs`).
//!
//! The job runner keeps a running job's progress in memory and writes it here at a
//! bounded rate and at every state change; these queries are all it needs. The
//! documents (`spec`, `progress`, `messages`, `result`) are JSON text the runner
//! writes and reads: the store does not look inside them.

use sqlx::Row;

use super::pool::on_pool;
use super::{now_ms, ReplicaName, Store, StoreError};

/// One job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: String,
    /// `score` or `train`.
    pub kind: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// JSON documents (see the module comment).
    pub spec: String,
    pub progress: String,
    pub messages: String,
    pub result: Option<String>,
    pub error: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub cancel_requested: bool,
}

/// What a cancel does, as its errors name it: a cancel the database did not
/// answer in time (503) may still land afterwards, and then it takes effect.
const CANCELLING: &str =
    "cancel the job (had the request reached it, the cancel may still take effect)";

/// A job some server holds, as the recovery sweep sees it: running there, or
/// queued with its uploaded files there (only that server can run it).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    pub id: String,
    /// Queued (held for its files), not running.
    pub queued: bool,
    /// The [`ReplicaName`] that claimed it (or, written by
    /// older servers, `host:pid`).
    pub claimed_by: String,
    pub heartbeat_ms: i64,
}

/// Which jobs a listing shows, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub state: Option<String>,
    pub kind: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

const COLUMNS: &str = "id, kind, state, spec, progress, messages, result, error, created_ms, \
                       started_ms, finished_ms, cancel_requested";

fn job_row<R: Row>(r: &R) -> Result<JobRow, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(JobRow {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        state: r.try_get(2)?,
        spec: r.try_get(3)?,
        progress: r.try_get(4)?,
        messages: r.try_get(5)?,
        result: r.try_get(6)?,
        error: r.try_get(7)?,
        created_ms: r.try_get(8)?,
        started_ms: r.try_get(9)?,
        finished_ms: r.try_get(10)?,
        cancel_requested: r.try_get::<i64, _>(11)? != 0,
    })
}

/// What the store answers to a running job's progress write
/// ([`Store::save_job_progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressAnswer {
    /// Another server asked the job to stop.
    pub cancel_requested: bool,
    /// The job is still running under this server's name: `false` once another
    /// server has failed it (or the row is gone), and then this server must stop
    /// it and write nothing more for it.
    pub still_ours: bool,
}

impl Store {
    /// Records a new job (state `queued`). One recorded after this call answered
    /// its timeout's error (the job was never queued here) is marked failed, so that
    /// no server runs it ([`Store::write_undone_if_late`]); should a server have
    /// claimed it in between, it is asked to cancel.
    ///
    /// A job `held` here (its uploaded files are on this server, so only this
    /// server can run it) is recorded under this server's name, and its heartbeat
    /// refreshed while it waits: replicas fail it once this server is gone.
    pub async fn insert_job(&self, job: &JobRow, held: bool) -> Result<(), StoreError> {
        let sql = self
            .sql(
                "INSERT INTO jobs (id, kind, state, spec, progress, messages, result, error, \
                 created_ms, started_ms, finished_ms, claimed_by, heartbeat_ms, cancel_requested) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            )
            .into_owned();
        let holder = held.then(|| (self.claimant.to_string(), now_ms()));
        let (pool, job_owned) = (self.pool.clone(), job.clone());
        let write = async move {
            on_pool!(&pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
                .bind(&job_owned.id)
                .bind(&job_owned.kind)
                .bind(&job_owned.state)
                .bind(&job_owned.spec)
                .bind(&job_owned.progress)
                .bind(&job_owned.messages)
                .bind(&job_owned.result)
                .bind(&job_owned.error)
                .bind(job_owned.created_ms)
                .bind(job_owned.started_ms)
                .bind(job_owned.finished_ms)
                .bind(holder.as_ref().map(|(name, _)| name))
                .bind(holder.as_ref().map(|(_, at)| *at))
                .execute(p)
                .await
                .map(|_| ()))
        };
        let disown = self.disowning(&job.id);
        let undo = move || disown.clone().run();
        self.write_undone_if_late("record the job", write, undo, || {})
            .await
    }

    /// What undoes a job recorded after its submission was answered with an error
    /// ([`Store::insert_job`]).
    fn disowning(&self, id: &str) -> Disown {
        Disown {
            pool: self.pool.clone(),
            fail_queued: self
                .sql(
                    "UPDATE jobs SET state = 'failed', error = ?, finished_ms = ? \
                     WHERE id = ? AND state = 'queued'",
                )
                .into_owned(),
            cancel_running: self
                .sql("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'")
                .into_owned(),
            id: id.to_string(),
            timeout: self.timeout,
        }
    }

    /// Takes a queued job for this server: `true` when it was queued and is now
    /// `running` here, `false` when another server took it or it was cancelled.
    /// A row already `running` under this server's name counts as taken here: an
    /// earlier claim of this server's that outlived its timeout and landed late
    /// (the caller, the job worker about to run it, tries again after an error).
    pub async fn claim_job(&self, id: &str) -> Result<bool, StoreError> {
        let sql = self.sql(
            "UPDATE jobs SET state = 'running', started_ms = ?, claimed_by = ?, heartbeat_ms = ? \
             WHERE id = ? AND (state = 'queued' OR (state = 'running' AND claimed_by = ?))",
        );
        let now = now_ms();
        let replica = self.claimant.to_string();
        self.must_write("claim the job", async {
            on_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
                .bind(now)
                .bind(&replica)
                .bind(now)
                .bind(id)
                .bind(&replica)
                .execute(p)
                .await
                .map(|r| r.rows_affected() == 1))
        })
        .await
    }

    /// Writes a running job's progress and messages, if the job is still running
    /// under this server's name; answers whether a cancel was asked for it in the
    /// database (by another server) and whether it is still this server's. A job
    /// another server failed meanwhile (this one was paused past the heartbeat's
    /// grace, see `jobs::replicas`) is no longer: its row is left as it is.
    pub async fn save_job_progress(
        &self,
        id: &str,
        progress: &str,
        messages: &str,
    ) -> Result<ProgressAnswer, StoreError> {
        let update = self.sql(
            "UPDATE jobs SET progress = ?, messages = ?, heartbeat_ms = ? \
             WHERE id = ? AND state = 'running' AND claimed_by = ?",
        );
        // Read back rather than trust the count of rows the update changed: MySQL
        // counts only the rows it changed, not those it matched.
        let select = self.sql("SELECT cancel_requested, state, claimed_by FROM jobs WHERE id = ?");
        let now = now_ms();
        let replica = self.claimant.to_string();
        self.must_write("record the job's progress", async {
            on_pool!(&self.pool, p => {
                match sqlx::query(sqlx::AssertSqlSafe(&*update))
                    .bind(progress)
                    .bind(messages)
                    .bind(now)
                    .bind(id)
                    .bind(&replica)
                    .execute(p)
                    .await
                {
                    Ok(_) => match sqlx::query(sqlx::AssertSqlSafe(&*select))
                        .bind(id)
                        .fetch_optional(p)
                        .await
                    {
                        Ok(Some(row)) => (|| {
                            let cancel: i64 = row.try_get(0)?;
                            let state: String = row.try_get(1)?;
                            let by: Option<String> = row.try_get(2)?;
                            Ok(ProgressAnswer {
                                cancel_requested: cancel != 0,
                                still_ours: state == "running"
                                    && by.as_deref() == Some(replica.as_str()),
                            })
                        })(),
                        Ok(None) => Ok(ProgressAnswer {
                            cancel_requested: false,
                            still_ours: false,
                        }),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            })
        })
        .await
    }

    /// Records how a job ended (`succeeded`, `failed` or `cancelled`), if it is
    /// still running under this server's name: answers `false`, writing nothing,
    /// when another server failed it meanwhile (its state and error stand). A
    /// statement the database refuses as such (not for the moment: see
    /// `store::pool::is_transient`) is a
    /// [`StoreError::Invalid`]: trying again will not help.
    pub async fn finish_job(
        &self,
        id: &str,
        state: &str,
        progress: &str,
        messages: &str,
        result: Option<&str>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sql = self.sql(
            "UPDATE jobs SET state = ?, progress = ?, messages = ?, result = ?, error = ?, \
             finished_ms = ?, heartbeat_ms = ? \
             WHERE id = ? AND state = 'running' AND claimed_by = ?",
        );
        let now = now_ms();
        let replica = self.claimant.to_string();
        let write = async {
            on_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
                .bind(state)
                .bind(progress)
                .bind(messages)
                .bind(result)
                .bind(error)
                .bind(now)
                .bind(now)
                .bind(id)
                .bind(&replica)
                .execute(p)
                .await
                .map(|r| r.rows_affected() == 1))
        };
        let doing = "record the job's end";
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(ours)) => {
                self.worked();
                Ok(ours)
            }
            Ok(Err(e)) if !super::pool::is_transient(&e) => {
                crate::metrics::record_store_error();
                Err(StoreError::Invalid(format!(
                    "the metadata store ({} at {}) refused to {doing}: {}",
                    self.kind(),
                    self.url,
                    super::pool::describe_error(&e)
                )))
            }
            Ok(Err(e)) => Err(self.unavailable(doing, e)),
            Err(_) => Err(self.timed_out(doing)),
        }
    }

    /// Asks for a job to stop: a queued one is cancelled at once (answers `true`);
    /// a running one is flagged for the server running it.
    pub async fn request_job_cancel(&self, id: &str) -> Result<bool, StoreError> {
        let cancel_queued = self.sql(
            "UPDATE jobs SET state = 'cancelled', finished_ms = ?, cancel_requested = 1 \
             WHERE id = ? AND state = 'queued'",
        );
        let flag =
            self.sql("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'");
        let now = now_ms();
        self.must_write(CANCELLING, async {
            on_pool!(&self.pool, p => {
                match sqlx::query(sqlx::AssertSqlSafe(&*cancel_queued))
                    .bind(now)
                    .bind(id)
                    .execute(p)
                    .await
                {
                    Ok(r) if r.rows_affected() == 1 => Ok(true),
                    Ok(_) => sqlx::query(sqlx::AssertSqlSafe(&*flag))
                        .bind(id)
                        .execute(p)
                        .await
                        .map(|_| false),
                    Err(e) => Err(e),
                }
            })
        })
        .await
    }

    /// One job, or `None`.
    pub async fn job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        let sql = self
            .sql(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?"))
            .into_owned();
        let row = on_pool!(&self.pool, p => {
            match sqlx::query(sqlx::AssertSqlSafe(&*sql)).bind(id).fetch_optional(p).await {
                Ok(Some(r)) => job_row(&r).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            }
        });
        row.map_err(|e| self.unavailable("read the job", e))
    }

    /// Jobs matching `query`, newest first, and how many match in all.
    pub async fn jobs(&self, query: &JobQuery) -> Result<(Vec<JobRow>, i64), StoreError> {
        let mut filter = String::from(" WHERE 1 = 1");
        let mut binds: Vec<&str> = Vec::new();
        if let Some(state) = &query.state {
            filter.push_str(" AND state = ?");
            binds.push(state);
        }
        if let Some(kind) = &query.kind {
            filter.push_str(" AND kind = ?");
            binds.push(kind);
        }
        let list = self
            .sql(&format!(
                "SELECT {COLUMNS} FROM jobs{filter} ORDER BY created_ms DESC, id DESC LIMIT ? OFFSET ?"
            ))
            .into_owned();
        let count = self
            .sql(&format!("SELECT COUNT(*) FROM jobs{filter}"))
            .into_owned();
        let result: Result<(Vec<JobRow>, i64), sqlx::Error> = on_pool!(&self.pool, p => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(&*list));
            for b in &binds {
                q = q.bind(*b);
            }
            match q.bind(query.limit).bind(query.offset).fetch_all(p).await {
                Ok(rows) => match rows.iter().map(job_row).collect::<Result<Vec<_>, _>>() {
                    Ok(jobs) => {
                        let mut q = sqlx::query(sqlx::AssertSqlSafe(&*count));
                        for b in &binds {
                            q = q.bind(*b);
                        }
                        match q.fetch_one(p).await {
                            Ok(r) => r.try_get::<i64, _>(0).map(|n| (jobs, n)),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        });
        result.map_err(|e| self.unavailable("list the jobs", e))
    }

    /// The queued jobs' ids, oldest first (start-up runs them), each with whether a
    /// server holds it ([`Store::insert_job`]: its uploaded files are there).
    pub async fn queued_job_ids(&self) -> Result<Vec<(String, bool)>, StoreError> {
        let sql = "SELECT id, claimed_by FROM jobs WHERE state = 'queued' ORDER BY created_ms, id";
        let ids: Result<Vec<(String, bool)>, sqlx::Error> = on_pool!(&self.pool, p => {
            match sqlx::query(sql).fetch_all(p).await {
                Ok(rows) => rows
                    .iter()
                    .map(|r| {
                        Ok((
                            r.try_get::<String, _>(0)?,
                            r.try_get::<Option<String>, _>(1)?.is_some(),
                        ))
                    })
                    .collect(),
                Err(e) => Err(e),
            }
        });
        ids.map_err(|e| self.unavailable("read the queued jobs", e))
    }

    /// The jobs some server holds ([`ClaimedJob`]): running, or queued with their
    /// uploaded files on one server. The recovery sweep decides which are orphans.
    pub async fn claimed_jobs(&self) -> Result<Vec<ClaimedJob>, StoreError> {
        let sql = "SELECT id, state, claimed_by, heartbeat_ms FROM jobs \
                   WHERE state = 'running' OR (state = 'queued' AND claimed_by IS NOT NULL)";
        let rows: Result<Vec<ClaimedJob>, sqlx::Error> = on_pool!(&self.pool, p => {
            match sqlx::query(sql).fetch_all(p).await {
                Ok(rows) => rows
                    .iter()
                    .map(|r| {
                        Ok(ClaimedJob {
                            id: r.try_get(0)?,
                            queued: r.try_get::<String, _>(1)? == "queued",
                            claimed_by: r.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                            heartbeat_ms: r.try_get::<Option<i64>, _>(3)?.unwrap_or(0),
                        })
                    })
                    .collect(),
                Err(e) => Err(e),
            }
        });
        rows.map_err(|e| self.unavailable("read the claimed jobs", e))
    }

    /// Marks one orphaned job failed with `error`, only if it is still as `seen`
    /// (same state, same claimer, no heartbeat since): a replica that is alive
    /// after all keeps its job. Answers whether it was marked.
    pub async fn fail_orphaned_job(
        &self,
        seen: &ClaimedJob,
        error: &str,
    ) -> Result<bool, StoreError> {
        self.set_if_still_as_seen(
            "mark an interrupted job",
            "state = 'failed', error = ?, finished_ms = ?",
            error,
            seen,
        )
        .await
    }

    /// Takes over a queued job held (for its uploaded files) by a server that is
    /// gone and had the same files (the process before this one, on the same
    /// state directory). Only if it is still as `seen`. Answers whether it was
    /// taken.
    pub async fn adopt_queued_job(&self, seen: &ClaimedJob) -> Result<bool, StoreError> {
        self.set_if_still_as_seen(
            "take over a queued job",
            "claimed_by = ?, heartbeat_ms = ?",
            &self.claimant.to_string(),
            seen,
        )
        .await
    }

    /// Sets `set` (a text, then the time now) on a held job that is still as
    /// `seen`: same state, claimer and heartbeat. Answers whether it was set.
    async fn set_if_still_as_seen(
        &self,
        doing: &str,
        set: &str,
        text: &str,
        seen: &ClaimedJob,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE jobs SET {set} \
             WHERE id = ? AND state = ? AND claimed_by = ? AND heartbeat_ms = ?"
        );
        let sql = self.sql(&sql);
        let now = now_ms();
        self.must_write(doing, async {
            on_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
                .bind(text)
                .bind(now)
                .bind(&seen.id)
                .bind(if seen.queued { "queued" } else { "running" })
                .bind(&seen.claimed_by)
                .bind(seen.heartbeat_ms)
                .execute(p)
                .await
                .map(|r| r.rows_affected() == 1))
        })
        .await
    }

    /// Refreshes the heartbeat of every job this replica holds (running, or queued
    /// with its files here), so other replicas see it alive between progress writes.
    pub async fn heartbeat_jobs(&self) -> Result<(), StoreError> {
        let sql = self.sql(
            "UPDATE jobs SET heartbeat_ms = ? \
             WHERE claimed_by = ? AND state IN ('queued', 'running')",
        );
        let now = now_ms();
        let replica = self.claimant.to_string();
        self.must_write("record the jobs' heartbeat", async {
            on_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
                .bind(now)
                .bind(&replica)
                .execute(p)
                .await
                .map(|_| ()))
        })
        .await
    }

    /// This process's name as the jobs it claims record it.
    pub fn claimant(&self) -> &ReplicaName {
        &self.claimant
    }

    /// Deletes jobs that finished before `cutoff_ms`. Answers how many.
    pub async fn delete_jobs_finished_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let sql = self.sql(
            "DELETE FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') \
             AND finished_ms < ?",
        );
        self.must_write("delete old jobs", async {
            on_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
                .bind(cutoff_ms)
                .execute(p)
                .await
                .map(|r| r.rows_affected()))
        })
        .await
    }
}

/// The undo of a job recorded late ([`Store::insert_job`]): owns what it needs, so
/// that it can run on a task of its own, as often as it takes.
#[derive(Clone)]
struct Disown {
    pool: super::pool::Pool,
    fail_queued: String,
    cancel_running: String,
    id: String,
    timeout: std::time::Duration,
}

impl Disown {
    /// Marks the job failed ("never run") if it is still queued, or asks it to
    /// cancel if a server claimed it in between; a job that ended is left alone.
    async fn run(self) -> Result<(), sqlx::Error> {
        let error = format!(
            "never run: the metadata store recorded the job after more than {:?}, when \
             its submission had already been answered with an error",
            self.timeout
        );
        on_pool!(&self.pool, p => {
            match sqlx::query(sqlx::AssertSqlSafe(&*self.fail_queued))
                .bind(&error)
                .bind(now_ms())
                .bind(&self.id)
                .execute(p)
                .await
            {
                Ok(r) if r.rows_affected() == 1 => Ok(()),
                Ok(_) => sqlx::query(sqlx::AssertSqlSafe(&*self.cancel_running))
                    .bind(&self.id)
                    .execute(p)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{JobRow, Store};

    fn job(id: &str) -> JobRow {
        JobRow {
            id: id.into(),
            kind: "score".into(),
            state: "queued".into(),
            spec: "{}".into(),
            progress: "{}".into(),
            messages: "[]".into(),
            result: None,
            error: None,
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
            cancel_requested: false,
        }
    }

    #[tokio::test]
    async fn a_job_recorded_late_is_failed_if_queued_and_cancelled_if_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url, Duration::from_secs(5), true)
            .await
            .unwrap();
        store.insert_job(&job("queued"), false).await.unwrap();
        store.disowning("queued").run().await.unwrap();
        let row = store.job("queued").await.unwrap().unwrap();
        assert_eq!(row.state, "failed");
        assert!(row.error.unwrap().starts_with("never run"));
        assert!(
            !store.claim_job("queued").await.unwrap(),
            "no server runs it"
        );

        // Claimed by a server between the late insert and its undo.
        store.insert_job(&job("claimed"), false).await.unwrap();
        assert!(store.claim_job("claimed").await.unwrap());
        store.disowning("claimed").run().await.unwrap();
        let row = store.job("claimed").await.unwrap().unwrap();
        assert_eq!(row.state, "running");
        assert!(
            row.cancel_requested,
            "the server running it is asked to cancel"
        );
    }
}
