//! Writes that may land after their call answered 503 ([`Store::write_undone_if_late`]).
//!
//! A write bounded by the database timeout and dropped when it fires may still have
//! reached the database, which can apply it later (a lock held by another client, a
//! paused server): the store would then say what the server never did. Here the
//! write runs on a task of its own; past the timeout the call answers 503 and the
//! write is left to end, and if it lands, its undo is written. So is the undo of a
//! write whose connection failed after sending it (it may have been committed).
//!
//! Limits: the undo of a write that has not ended after [`SETTLE_LIMIT`] is written
//! while that write may still be delivered (after a server paused for minutes, say),
//! and an undo attempt cut off by the timeout may land after a later one; no
//! generation counter fences these. A server that stops waits at most
//! [`Store::settle_pending`]'s bound for what is unsettled.

use std::future::Future;
use std::time::Duration;

use super::{pool, Store, StoreError};

/// How long the undoing of a late write waits between attempts while the database
/// refuses it ([`Store::write_undone_if_late`]).
const UNDO_RETRY: Duration = Duration::from_secs(1);
/// How long a write that outlived the database timeout is waited for before it is
/// undone in case it landed ([`Store::write_undone_if_late`]).
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

impl Store {
    /// Runs a write management depends on like [`Store::must_write`], but on a task
    /// of its own: one that outlives the timeout is not dropped, since the database
    /// may have received it and apply it still (a lock held by another client, a
    /// paused server). The call answers the timeout's error at once; the write is
    /// left to end, and if it lands after all (or has not ended after
    /// [`SETTLE_LIMIT`]: a connection to a host that died may never answer), `undo`
    /// is written (retried every second until the database takes it), so that the
    /// store says what the answered error said; so is the undo of a write whose
    /// connection failed after sending it ([`may_have_landed`]). `settled` runs once
    /// that is over, whichever way it went (a stopping server waits for it a while:
    /// [`Store::settle_pending`]). A call dropped while it waits (its caller gone)
    /// leaves its write to end the same way.
    pub(super) async fn write_undone_if_late<U, F, S>(
        &self,
        doing: &'static str,
        write: impl Future<Output = Result<(), sqlx::Error>> + Send + 'static,
        undo: F,
        settled: S,
    ) -> Result<(), StoreError>
    where
        U: Future<Output = Result<(), sqlx::Error>> + Send + 'static,
        F: Fn() -> U + Send + 'static,
        S: FnOnce() + Send + 'static,
    {
        let mut pending = Pending {
            write: Some(tokio::spawn(write)),
            undo: Some(undo),
            settled: Some(settled),
            url: self.url.clone(),
            doing,
            timeout: self.timeout,
            tracker: self.settling.clone(),
        };
        let task = pending.write.as_mut().expect("just spawned");
        let ended = match tokio::time::timeout(self.timeout, task).await {
            Ok(ended) => ended,
            // Dropping `pending` hands the write to `settle`.
            Err(_) => return Err(self.timed_out(doing)),
        };
        // The write ended while the call waited: the call settles it, after an
        // undo when its connection failed once it may have been sent (it may have
        // been committed, so it is undone as a late one would be).
        let undo_it = matches!(&ended, Ok(Err(e)) if may_have_landed(e));
        if let Some((undo, settled)) = pending.answered() {
            if undo_it {
                self.settling.spawn(undo_until_taken(
                    self.url.clone(),
                    "undo a write that may have landed",
                    self.timeout,
                    undo,
                    settled,
                ));
            } else {
                settled();
            }
        }
        match ended {
            Ok(Ok(())) => {
                self.worked();
                Ok(())
            }
            Ok(Err(e)) => Err(self.unavailable(doing, e)),
            Err(e) => Err(StoreError::Unavailable(format!(
                "the metadata store could not {doing}: {e}"
            ))),
        }
    }

    /// Writes `write` until the database takes it, on a task of its own (each
    /// attempt bounded by the database timeout, retried every second), then runs
    /// `settled`: for a correction that must land, such as the settings in force
    /// written back after a refused change ([`Store::write_back_model_settings`]).
    pub(super) fn write_until_taken<U, F>(
        &self,
        what: &'static str,
        write: F,
        settled: impl FnOnce() + Send + 'static,
    ) where
        U: Future<Output = Result<(), sqlx::Error>> + Send + 'static,
        F: Fn() -> U + Send + 'static,
    {
        self.settling.spawn(undo_until_taken(
            self.url.clone(),
            what,
            self.timeout,
            write,
            settled,
        ));
    }

    /// Waits, at most `within`, for the writes still settling (late writes and
    /// their undoes) to end: a server that stops lets them finish so that what a
    /// refused call answered stays true after the restart. Answers whether they all
    /// ended; a warning names how many did not.
    pub async fn settle_pending(&self, within: Duration) -> bool {
        self.settling.close();
        if tokio::time::timeout(within, self.settling.wait())
            .await
            .is_ok()
        {
            return true;
        }
        tracing::warn!(
            "{} write(s) to {} answered as failed had not settled after {within:?} at \
             shutdown: if they land, the store may say what their calls were refused",
            self.settling.len(),
            self.url
        );
        false
    }
}

/// Whether a write that failed with `e` may still have been committed: its
/// connection failed (or its driver's worker died) once the statement may have been
/// sent, so the reply was lost, not the write. A refusal by the database, a pool
/// with no connection to give, or a statement that could not be prepared wrote
/// nothing.
fn may_have_landed(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed
    )
}

/// A write [`Store::write_undone_if_late`] waits for: unless the call saw it end
/// ([`Pending::answered`]), dropping it hands the write to [`settle`], whether the
/// call timed out or was itself dropped.
struct Pending<F, U, S>
where
    F: Fn() -> U + Send + 'static,
    U: Future<Output = Result<(), sqlx::Error>> + Send + 'static,
    S: FnOnce() + Send + 'static,
{
    write: Option<tokio::task::JoinHandle<Result<(), sqlx::Error>>>,
    undo: Option<F>,
    settled: Option<S>,
    url: String,
    doing: &'static str,
    /// Bounds each undo attempt.
    timeout: Duration,
    tracker: tokio_util::task::TaskTracker,
}

impl<F, U, S> Pending<F, U, S>
where
    F: Fn() -> U + Send + 'static,
    U: Future<Output = Result<(), sqlx::Error>> + Send + 'static,
    S: FnOnce() + Send + 'static,
{
    /// The write ended while the call waited: the call settles it (runs `settled`,
    /// after the undo when the write may have landed).
    fn answered(&mut self) -> Option<(F, S)> {
        self.write = None;
        self.undo.take().zip(self.settled.take())
    }
}

impl<F, U, S> Drop for Pending<F, U, S>
where
    F: Fn() -> U + Send + 'static,
    U: Future<Output = Result<(), sqlx::Error>> + Send + 'static,
    S: FnOnce() + Send + 'static,
{
    fn drop(&mut self) {
        // Nothing to do without a runtime (the server is stopping).
        let (Some(write), Some(undo), Some(settled), Ok(runtime)) = (
            self.write.take(),
            self.undo.take(),
            self.settled.take(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return;
        };
        self.tracker.spawn_on(
            settle(
                write,
                std::mem::take(&mut self.url),
                self.doing,
                self.timeout,
                undo,
                settled,
            ),
            &runtime,
        );
    }
}

/// The end of a write that outlived its call ([`Store::write_undone_if_late`]):
/// waits for it (at most [`SETTLE_LIMIT`]), undoes it if it landed, may have (its
/// connection failed) or never ended, then runs `settled`.
async fn settle<U>(
    mut task: tokio::task::JoinHandle<Result<(), sqlx::Error>>,
    url: String,
    doing: &'static str,
    timeout: Duration,
    undo: impl Fn() -> U,
    settled: impl FnOnce(),
) where
    U: Future<Output = Result<(), sqlx::Error>>,
{
    let undo_it = match tokio::time::timeout(SETTLE_LIMIT, &mut task).await {
        Ok(Ok(Ok(()))) => {
            tracing::warn!(
                "a write to {url} answered as failed (to {doing}) landed late; undoing it"
            );
            true
        }
        Ok(Ok(Err(e))) if may_have_landed(&e) => {
            tracing::warn!(
                "a write to {url} answered as failed (to {doing}) lost its connection \
                 late ({}); undoing it in case it landed",
                pool::describe_error(&e)
            );
            true
        }
        Ok(_) => false,
        Err(_) => {
            // A connection to a host that died after taking the write may never
            // answer: undo in case it landed, and let the model go. The write is
            // ended here, so that it holds no pooled connection for good (which
            // would keep the pool from closing).
            task.abort();
            tracing::warn!(
                "a write to {url} (to {doing}) has not ended after {SETTLE_LIMIT:?}; \
                 undoing it in case it landed"
            );
            true
        }
    };
    if undo_it {
        undo_until_taken(url, "undo a late write", timeout, undo, settled).await;
    } else {
        settled();
    }
}

/// Writes `undo` until the database takes it (each attempt bounded by `timeout`:
/// a connection that hangs is given up and another attempt made), then runs
/// `settled`. `what` names it in the warnings.
async fn undo_until_taken<U>(
    url: String,
    what: &'static str,
    timeout: Duration,
    undo: impl Fn() -> U,
    settled: impl FnOnce(),
) where
    U: Future<Output = Result<(), sqlx::Error>>,
{
    loop {
        let why = match tokio::time::timeout(timeout, undo()).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => pool::describe_error(&e),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        tracing::warn!("cannot {what} on {url} yet: {why}");
        tokio::time::sleep(UNDO_RETRY).await;
    }
    settled();
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::{settle, SETTLE_LIMIT, UNDO_RETRY};

    /// The database timeout in the [`settle`] tests.
    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A connection that failed once the statement may have been sent.
    fn lost_connection() -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }

    /// Runs [`settle`] on a write that ends as `write` does; answers how many undo
    /// attempts were made and whether `settled` ran, at `after`.
    async fn settle_with(
        write: impl std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'static,
        refusals: usize,
        after: Duration,
    ) -> (usize, bool) {
        settle_hanging(write, 0, refusals, after).await
    }

    /// [`settle_with`] whose first `hangs` undo attempts never answer.
    async fn settle_hanging(
        write: impl std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'static,
        hangs: usize,
        refusals: usize,
        after: Duration,
    ) -> (usize, bool) {
        let attempts = Arc::new(AtomicUsize::new(0));
        let settled = Arc::new(AtomicUsize::new(0));
        let (a, s) = (attempts.clone(), settled.clone());
        tokio::spawn(settle(
            tokio::spawn(write),
            "sqlite://x".into(),
            "test",
            TIMEOUT,
            move || {
                let n = a.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < hangs {
                        std::future::pending().await
                    } else if n < hangs + refusals {
                        Err(sqlx::Error::PoolTimedOut)
                    } else {
                        Ok(())
                    }
                }
            },
            move || {
                s.fetch_add(1, Ordering::SeqCst);
            },
        ));
        tokio::time::sleep(after).await;
        (
            attempts.load(Ordering::SeqCst),
            settled.load(Ordering::SeqCst) == 1,
        )
    }

    /// A store on a fresh SQLite file, with a one-second database timeout.
    async fn quick_store(dir: &std::path::Path) -> super::Store {
        let url = format!("sqlite://{}", dir.join("t.db").display());
        super::Store::open(&url, Duration::from_secs(1), true)
            .await
            .unwrap()
    }

    /// Runs `write_undone_if_late` with a write that ends Ok after `write_ms`, the
    /// call itself cut off after `call_ms`; answers the call's outcome (`None`: cut
    /// off), the undo attempts and whether `settled` ran (waited for up to 10 s).
    async fn undone(write_ms: u64, call_ms: u64) -> (Option<bool>, usize, bool) {
        undone_ending(write_ms, call_ms, || Ok(())).await
    }

    /// [`undone`] with a write that ends as `end` says.
    async fn undone_ending(
        write_ms: u64,
        call_ms: u64,
        end: fn() -> Result<(), sqlx::Error>,
    ) -> (Option<bool>, usize, bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = quick_store(dir.path()).await;
        let attempts = Arc::new(AtomicUsize::new(0));
        let settled = Arc::new(AtomicUsize::new(0));
        let (a, s) = (attempts.clone(), settled.clone());
        let call = store.write_undone_if_late(
            "test",
            async move {
                tokio::time::sleep(Duration::from_millis(write_ms)).await;
                end()
            },
            move || {
                a.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            },
            move || {
                s.fetch_add(1, Ordering::SeqCst);
            },
        );
        let outcome = tokio::time::timeout(Duration::from_millis(call_ms), call)
            .await
            .ok()
            .map(|r| r.is_ok());
        if outcome == Some(true) {
            assert_eq!(
                settled.load(Ordering::SeqCst),
                1,
                "settled before the answer"
            );
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while settled.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (
            outcome,
            attempts.load(Ordering::SeqCst),
            settled.load(Ordering::SeqCst) == 1,
        )
    }

    #[tokio::test]
    async fn a_write_in_time_is_answered_and_not_undone() {
        assert_eq!(undone(10, 3000).await, (Some(true), 0, true));
    }

    #[tokio::test]
    async fn a_write_past_the_timeout_is_refused_and_undone_when_it_lands() {
        assert_eq!(undone(1500, 3000).await, (Some(false), 1, true));
    }

    #[tokio::test]
    async fn a_call_dropped_while_it_waits_leaves_its_write_settled() {
        assert_eq!(undone(1500, 50).await, (None, 1, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_write_that_lands_is_undone_until_the_undo_is_taken() {
        let write = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        };
        assert_eq!(
            settle_with(write, 2, Duration::from_secs(29)).await,
            (0, false)
        );
        let write = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        };
        let after = Duration::from_secs(31) + UNDO_RETRY * 2;
        assert_eq!(settle_with(write, 2, after).await, (3, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_write_that_fails_needs_no_undo() {
        let write = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Err(sqlx::Error::PoolClosed)
        };
        assert_eq!(
            settle_with(write, 0, Duration::from_secs(31)).await,
            (0, true)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_never_ends_is_undone_after_the_limit() {
        let never = std::future::pending::<Result<(), sqlx::Error>>;
        let just_before = SETTLE_LIMIT - Duration::from_secs(1);
        assert_eq!(settle_with(never(), 0, just_before).await, (0, false));
        let after = SETTLE_LIMIT + Duration::from_secs(1);
        assert_eq!(settle_with(never(), 0, after).await, (1, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_never_ends_is_ended_at_the_limit() {
        // Held by the write while it runs (as its pooled connection would be).
        let held = Arc::new(());
        let in_write = held.clone();
        let write = async move {
            let _connection = in_write;
            std::future::pending::<Result<(), sqlx::Error>>().await
        };
        let after = SETTLE_LIMIT + Duration::from_secs(1);
        assert_eq!(settle_with(write, 0, after).await, (1, true));
        assert_eq!(Arc::strong_count(&held), 1, "the write still runs");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_write_that_loses_its_connection_is_undone() {
        let write = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Err(lost_connection())
        };
        assert_eq!(
            settle_with(write, 0, Duration::from_secs(31)).await,
            (1, true)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_undo_that_hangs_is_given_up_and_tried_again() {
        let lands = || async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        };
        // The first attempt starts at 30 s and is given up at 30 s + TIMEOUT.
        let during = Duration::from_secs(30) + TIMEOUT - Duration::from_millis(500);
        assert_eq!(settle_hanging(lands(), 1, 0, during).await, (1, false));
        let after = Duration::from_secs(30) + TIMEOUT + UNDO_RETRY + Duration::from_millis(500);
        assert_eq!(settle_hanging(lands(), 1, 0, after).await, (2, true));
    }

    #[tokio::test]
    async fn a_write_whose_connection_fails_in_time_is_undone() {
        assert_eq!(
            undone_ending(10, 3000, || Err(lost_connection())).await,
            (Some(false), 1, true)
        );
    }

    #[tokio::test]
    async fn a_write_the_database_refuses_in_time_needs_no_undo() {
        assert_eq!(
            undone_ending(10, 3000, || Err(sqlx::Error::PoolTimedOut)).await,
            (Some(false), 0, true)
        );
    }

    /// Makes a write on `store` that outlives its call (the write ends Ok after
    /// `write_ms`); answers the count of its undo attempts.
    async fn late_write(store: &super::Store, write_ms: u64) -> Arc<AtomicUsize> {
        let attempts = Arc::new(AtomicUsize::new(0));
        let a = attempts.clone();
        let answered = store
            .write_undone_if_late(
                "test",
                async move {
                    tokio::time::sleep(Duration::from_millis(write_ms)).await;
                    Ok(())
                },
                move || {
                    a.fetch_add(1, Ordering::SeqCst);
                    async { Ok(()) }
                },
                || {},
            )
            .await;
        assert!(answered.is_err(), "the write outlived the timeout");
        attempts
    }

    #[tokio::test]
    async fn a_stopping_server_waits_for_a_late_write_to_be_undone() {
        let dir = tempfile::tempdir().unwrap();
        let store = quick_store(dir.path()).await;
        // The call answers after the one-second timeout; the write lands at 1.5 s.
        let attempts = late_write(&store, 1500).await;
        assert_eq!(attempts.load(Ordering::SeqCst), 0);
        assert!(store.settle_pending(Duration::from_secs(10)).await);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stopping_server_waits_for_late_writes_only_so_long() {
        let dir = tempfile::tempdir().unwrap();
        let store = quick_store(dir.path()).await;
        let attempts = late_write(&store, 60_000).await;
        let started = std::time::Instant::now();
        assert!(!store.settle_pending(Duration::from_millis(300)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(attempts.load(Ordering::SeqCst), 0);
    }
}
