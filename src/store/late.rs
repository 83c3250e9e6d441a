//! Writes that may land after their call answered 503 ([`Store::write_undone_if_late`]).
//!
//! A write bounded by the database timeout and dropped when it fires may still have
//! reached the database, which can apply it later (a lock held by another client, a
//! paused server): the store would then say what the server never did. Here the
//! write runs on a task of its own; past the timeout the call answers 503 and the
//! write is left to end, and if it lands, its undo is written.

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
    /// store says what the answered error said. `settled` runs once that is over,
    /// whichever way it went (not at all if the server stops first). A call dropped
    /// while it waits (its caller gone) leaves its write to end the same way.
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
        };
        let task = pending.write.as_mut().expect("just spawned");
        let ended = match tokio::time::timeout(self.timeout, task).await {
            Ok(ended) => ended,
            // Dropping `pending` hands the write to `settle`.
            Err(_) => return Err(self.timed_out(doing)),
        };
        if let Some(settled) = pending.answered() {
            settled();
        }
        match ended {
            Ok(Ok(())) => {
                self.worked();
                Ok(())
            }
            // The write itself failed: nothing was written.
            Ok(Err(e)) => Err(self.unavailable(doing, e)),
            Err(e) => Err(StoreError::Unavailable(format!(
                "the metadata store could not {doing}: {e}"
            ))),
        }
    }
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
}

impl<F, U, S> Pending<F, U, S>
where
    F: Fn() -> U + Send + 'static,
    U: Future<Output = Result<(), sqlx::Error>> + Send + 'static,
    S: FnOnce() + Send + 'static,
{
    /// The write ended while the call waited: nothing is left to settle but
    /// `settled` itself, which the call runs.
    fn answered(&mut self) -> Option<S> {
        self.write = None;
        self.undo = None;
        self.settled.take()
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
        runtime.spawn(settle(
            write,
            std::mem::take(&mut self.url),
            self.doing,
            undo,
            settled,
        ));
    }
}

/// The end of a write that outlived its call ([`Store::write_undone_if_late`]):
/// waits for it (at most [`SETTLE_LIMIT`]), undoes it if it landed or never ended,
/// then runs `settled`.
async fn settle<U>(
    task: tokio::task::JoinHandle<Result<(), sqlx::Error>>,
    url: String,
    doing: &'static str,
    undo: impl Fn() -> U,
    settled: impl FnOnce(),
) where
    U: Future<Output = Result<(), sqlx::Error>>,
{
    let undo_it = match tokio::time::timeout(SETTLE_LIMIT, task).await {
        Ok(Ok(Ok(()))) => {
            tracing::warn!(
                "a write to {url} answered as failed (to {doing}) landed late; undoing it"
            );
            true
        }
        Ok(_) => false,
        Err(_) => {
            // A connection to a host that died after taking the write may never
            // answer: undo in case it landed, and let the model go.
            tracing::warn!(
                "a write to {url} (to {doing}) has not ended after {SETTLE_LIMIT:?}; \
                 undoing it in case it landed"
            );
            true
        }
    };
    if undo_it {
        while let Err(e) = undo().await {
            tracing::warn!(
                "cannot undo a late write to {url} yet: {}",
                pool::describe_error(&e)
            );
            tokio::time::sleep(UNDO_RETRY).await;
        }
    }
    settled();
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::{settle, SETTLE_LIMIT, UNDO_RETRY};

    /// Runs [`settle`] on a write that ends as `write` does; answers how many undo
    /// attempts were made and whether `settled` ran, at `after`.
    async fn settle_with(
        write: impl std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'static,
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
            move || {
                let n = a.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < refusals {
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
        let dir = tempfile::tempdir().unwrap();
        let store = quick_store(dir.path()).await;
        let attempts = Arc::new(AtomicUsize::new(0));
        let settled = Arc::new(AtomicUsize::new(0));
        let (a, s) = (attempts.clone(), settled.clone());
        let call = store.write_undone_if_late(
            "test",
            async move {
                tokio::time::sleep(Duration::from_millis(write_ms)).await;
                Ok(())
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
}
