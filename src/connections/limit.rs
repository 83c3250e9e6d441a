//! The connection limit shared by both listeners: a semaphore of permits, and the
//! eviction of idle connections when it is reached (see the parent module).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ConnectionActivity;

/// File descriptors kept back from connections at the least: the repository scans,
/// model files being loaded, the watcher, logs, the listeners and (later) a database.
pub const FD_RESERVE_MIN: u64 = 256;

/// Raises the soft limit on open files to the hard limit and returns the soft limit
/// in force afterwards (the old one if it cannot be raised).
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot raise the open-files limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// The default `max_connections` for a process allowed `fd_limit` open files: the
/// limit less a reserve of a tenth of it, at least [`FD_RESERVE_MIN`]; half the
/// limit when it is too small for that reserve.
pub fn default_max_connections(fd_limit: u64) -> usize {
    let reserve = (fd_limit / 10).max(FD_RESERVE_MIN);
    let connections = if fd_limit >= 2 * reserve {
        fd_limit - reserve
    } else {
        fd_limit / 2
    };
    usize::try_from(connections.max(1)).unwrap_or(usize::MAX >> 4)
}

/// The most connections open at once across both listeners.
#[derive(Debug)]
pub struct ConnectionLimit {
    /// One permit per open connection, moved into the connection's task and dropped
    /// when it closes; an accept loop takes a permit before it accepts.
    permits: Arc<Semaphore>,
    max: usize,
    /// The open connections, oldest first, where an accept loop at the limit looks
    /// for idle ones to close; each one looked at goes to the back (busy, or asked to
    /// close: one whose request began before it closed stays open and must stay
    /// watched), so the order is close to least recently idle. Entries of closed
    /// connections are dropped when met, and all at once when they outnumber the open
    /// ones.
    watched: Mutex<VecDeque<Weak<ConnectionActivity>>>,
    /// Idle connections closed to make room since the last log line.
    evicted: AtomicU64,
    /// The limit is logged when it is first reached, then at most once per
    /// [`LIMIT_LOG_EVERY`] while connections keep waiting, with how many waited
    /// since: a flood that holds the server at its limit must not flood the log too.
    /// When it was last logged, in milliseconds after `created` (0: never).
    logged_at_ms: AtomicU64,
    /// Accept loops waiting for room now, each for the next connection it accepts
    /// (a gauge: a wait given up, its accept cancelled, is no longer counted).
    waiting: AtomicU64,
    /// Connections let in after waiting for room since the last log line. With
    /// `waiting`, how many connections waited since the last line: let in since,
    /// or still waiting (a wait that spans two lines counts in both).
    let_in_after_waiting: AtomicU64,
    created: std::time::Instant,
}

/// The least time between two log lines about the connection limit.
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a connection with no request in progress must have read nothing before
/// it may be closed to make room at the limit: a keep-alive client between two
/// requests, or a new client whose request is on its way, is not cut off.
pub const EVICT_AFTER_IDLE: Duration = Duration::from_millis(250);

/// How long a TLS handshake may take before it may be closed to make room at the
/// limit (or at the TLS listener's cap on handshakes in progress,
/// [`crate::tls::MAX_HANDSHAKES`]), whatever its client sends meanwhile. A TLS 1.3
/// handshake takes one round trip after the ClientHello, TLS 1.2 two, and the
/// ClientHello comes with the connection: a handshake not done by then is a client
/// that stalls (connects and sends nothing, or trickles its bytes), which would
/// otherwise hold its place for the whole [`crate::tls::HANDSHAKE_TIMEOUT`].
pub const EVICT_HANDSHAKE_AFTER: Duration = Duration::from_millis(500);

/// How long a connection whose every request in progress waits for its client's
/// body must have read nothing before it may be closed to make room at the limit: a
/// pressure-time body read timeout, long enough that an upload pausing on a lossy
/// link (a TCP retransmission) is not cut off, short enough that calls left
/// unfinished by a flood do not hold the server for the whole body read timeout.
/// It is also the pressure-time grace of the minimum body rate: such a connection
/// may be closed too once its bodies have been waited for longer than this plus a
/// second per [`MIN_BODY_BYTES_PER_SEC`](super::MIN_BODY_BYTES_PER_SEC) bytes they
/// brought, however often a byte comes (a client that trickles its body, a byte
/// every few hundred milliseconds, would otherwise never look stalled).
pub const EVICT_STALLED_BODY_AFTER: Duration = Duration::from_secs(1);

/// How many idle connections an accept loop at the limit closes at a time. The room
/// they leave is taken by the next accepts without waiting; one at a time, each
/// accept would wait for the evicted connection's task to run, and under a flood the
/// listen backlog would fill while it waits.
const EVICTION_BATCH: usize = 32;

/// How many watched connections an accept loop at the limit looks at for idle ones
/// each time, so that a server full of busy connections costs little to look over.
const EVICTION_SCAN: usize = 8 * EVICTION_BATCH;

/// How long an accept loop at the limit waits for a permit before it evicts again.
const EVICTION_RETRY: Duration = Duration::from_millis(100);

/// Counts an accept loop as waiting for room while it lives: dropped when the wait
/// ends, or when the accept is cancelled (a `select!` branch that lost).
struct Waiting<'a>(&'a AtomicU64);

impl Waiting<'_> {
    fn new(waiting: &AtomicU64) -> Waiting<'_> {
        waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's place within the [`ConnectionLimit`], held for as long as it is open.
#[derive(Debug)]
pub struct ConnectionPermit {
    _permit: OwnedSemaphorePermit,
    limit: Arc<ConnectionLimit>,
}

impl ConnectionPermit {
    /// Makes the connection `activity` describes one the limit may close when idle.
    pub fn watch(&self, activity: &Arc<ConnectionActivity>) {
        self.limit.watch(activity);
    }
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Arc<ConnectionLimit> {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(ConnectionLimit {
            permits: Arc::new(Semaphore::new(max)),
            max,
            logged_at_ms: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            let_in_after_waiting: AtomicU64::new(0),
            created: std::time::Instant::now(),
            watched: Mutex::new(VecDeque::new()),
            evicted: AtomicU64::new(0),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Waits for room for one more connection; at the limit, makes room by closing
    /// idle connections (up to [`EVICTION_BATCH`]) when there are any. Cancel-safe.
    pub async fn acquire(self: &Arc<Self>) -> ConnectionPermit {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => self.acquire_at_limit().await,
        };
        ConnectionPermit {
            _permit: permit,
            limit: self.clone(),
        }
    }

    async fn acquire_at_limit(&self) -> OwnedSemaphorePermit {
        let _waiting = Waiting::new(&self.waiting);
        loop {
            self.evict_idle(EVICTION_BATCH);
            if self.should_log() {
                tracing::warn!(
                    max_connections = self.max,
                    waited = self.waited_since_last_line(),
                    closed_idle = self.evicted.swap(0, Ordering::Relaxed),
                    "connection limit reached; idle connections and stalled TLS handshakes \
                     are closed to make room, and while none is idle new connections wait \
                     in the listen backlog"
                );
            }
            // An evicted connection's task closes it and gives its permit back when it
            // next runs. When none was idle (or the one evicted began a request after
            // all), look again a little later, unless a connection closes first.
            let permit = self.permits.clone().acquire_owned();
            if let Ok(permit) = tokio::time::timeout(EVICTION_RETRY, permit).await {
                self.let_in_after_waiting.fetch_add(1, Ordering::Relaxed);
                return permit.expect("the connection semaphore is never closed");
            }
        }
    }

    /// For a log line: how many connections waited for room since the last line,
    /// let in since or waiting still (the line's own accept loop among them).
    fn waited_since_last_line(&self) -> u64 {
        self.let_in_after_waiting.swap(0, Ordering::Relaxed) + self.waiting.load(Ordering::Relaxed)
    }

    /// Watches `activity`'s connection for [`ConnectionLimit::evict_idle`].
    fn watch(&self, activity: &Arc<ConnectionActivity>) {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        // Amortized O(1): after a purge at most the open connections remain, and the
        // next comes after as many pushes again.
        if watched.len() >= 2 * self.open() + 64 {
            watched.retain(|w| w.strong_count() > 0);
        }
        watched.push_back(Arc::downgrade(activity));
    }

    /// Closes the oldest `n` idle connections among the first [`EVICTION_SCAN`]
    /// watched; how many it closed.
    fn evict_idle(&self, n: usize) -> usize {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let mut evicted = 0;
        for _ in 0..EVICTION_SCAN.min(watched.len()) {
            let Some(weak) = watched.pop_front() else {
                break;
            };
            let Some(activity) = weak.upgrade() else {
                continue;
            };
            watched.push_back(weak);
            if activity.evict_if_idle() {
                evicted += 1;
                if evicted == n {
                    break;
                }
            }
        }
        if evicted > 0 {
            self.evicted.fetch_add(evicted as u64, Ordering::Relaxed);
            crate::metrics::record_connections_evicted(evicted as u64);
        }
        evicted
    }

    /// Whether the limit is to be logged now: the first time, then once per
    /// [`LIMIT_LOG_EVERY`]; one caller wins when several reach it at once.
    fn should_log(&self) -> bool {
        // +1: 0 means never logged.
        let now = self.created.elapsed().as_millis() as u64 + 1;
        let last = self.logged_at_ms.load(Ordering::Relaxed);
        (last == 0 || now - last >= LIMIT_LOG_EVERY.as_millis() as u64)
            && self
                .logged_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_options, Expiry, EVICTED};
    use super::*;

    #[test]
    fn the_default_limit_keeps_a_reserve() {
        assert_eq!(default_max_connections(1024), 768);
        assert_eq!(default_max_connections(20_000), 18_000);
        assert_eq!(default_max_connections(1 << 20), (1 << 20) - (1 << 20) / 10);
        assert_eq!(
            default_max_connections(300),
            150,
            "too small for the reserve"
        );
        assert_eq!(default_max_connections(1), 1);
    }

    #[tokio::test]
    async fn the_limit_waits_for_a_permit() {
        let limit = ConnectionLimit::new(2);
        let a = limit.acquire().await;
        let _b = limit.acquire().await;
        assert_eq!(limit.open(), 2);
        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(limit.open(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_oldest_idle_connection_makes_room() {
        let o = test_options();
        let limit = ConnectionLimit::new(3);
        let connection = || async {
            let permit = limit.acquire().await;
            let activity = Arc::new(ConnectionActivity::new());
            permit.watch(&activity);
            (permit, activity)
        };
        // The oldest is busy, the second idle, the third idle but too recently.
        let (_busy, busy) = connection().await;
        busy.request_begins(false);
        let (idle_permit, idle) = connection().await;
        tokio::time::advance(EVICT_AFTER_IDLE).await;
        let (_fresh, fresh) = connection().await;
        assert_eq!(limit.open(), 3);

        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room until the idle one closes");
        assert_eq!(idle.deadline(&o), Some((0, Expiry::Stalled(EVICTED))));
        assert!(matches!(idle.expired(&o).await, Expiry::Stalled(EVICTED)));
        assert_ne!(busy.deadline(&o), Some((0, Expiry::Stalled(EVICTED))));
        assert_ne!(fresh.deadline(&o), Some((0, Expiry::Stalled(EVICTED))));
        // The idle connection's task ends and gives its permit back.
        drop(idle_permit);
        let _new = waiting.await.unwrap();
        assert_eq!(limit.open(), 3);

        // Nothing idle: the busy and the fresh (now busy too) are kept, and a new
        // connection waits until one closes.
        fresh.request_begins(false);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limit.evict_idle(1), 0);
        // A connection chosen just before its next request began is kept.
        fresh.request_ends();
        tokio::time::advance(EVICT_AFTER_IDLE).await;
        assert_eq!(limit.evict_idle(1), 1);
        fresh.request_begins(false);
        assert_eq!(fresh.deadline(&o), None);
        assert!(!fresh.evicted.load(Ordering::Relaxed));
        // ... and stays watched: idle again, it can be closed again.
        fresh.request_ends();
        tokio::time::advance(EVICT_AFTER_IDLE).await;
        assert_eq!(limit.evict_idle(1), 1);
        assert_eq!(fresh.deadline(&o), Some((0, Expiry::Stalled(EVICTED))));
        // One asked to close (but not closed yet) is not counted twice.
        assert_eq!(limit.evict_idle(8), 0);
    }

    #[tokio::test]
    async fn the_log_counts_the_connections_that_waited() {
        /// An accept loop's acquire, once it waits at the limit.
        async fn waiting_acquire(
            limit: &Arc<ConnectionLimit>,
        ) -> tokio::task::JoinHandle<ConnectionPermit> {
            let task = tokio::spawn({
                let limit = limit.clone();
                async move { limit.acquire().await }
            });
            while limit.waiting.load(Ordering::Relaxed) == 0 {
                tokio::task::yield_now().await;
            }
            task
        }
        let limit = ConnectionLimit::new(1);
        let waiting_one = || waiting_acquire(&limit);
        let mut open = limit.acquire().await;
        assert_eq!(limit.waited_since_last_line(), 0, "none waited yet");
        let waiting = waiting_one().await;
        assert_eq!(limit.waited_since_last_line(), 1, "one waits");
        assert_eq!(
            limit.waited_since_last_line(),
            1,
            "the same one, still waiting at the next line"
        );
        drop(open);
        open = waiting.await.unwrap();
        assert_eq!(
            limit.waited_since_last_line(),
            1,
            "let in since the last line"
        );
        assert_eq!(limit.waited_since_last_line(), 0);

        // A wait given up (its accept cancelled when another branch of the accept
        // loop's select! won) is not a connection: only the wait that follows counts.
        let cancelled = waiting_one().await;
        cancelled.abort();
        assert!(cancelled.await.unwrap_err().is_cancelled());
        assert_eq!(limit.waited_since_last_line(), 0);

        // Three connections, each let in after waiting, and a fourth waiting.
        for _ in 0..3 {
            let waiting = waiting_one().await;
            drop(open);
            open = waiting.await.unwrap();
        }
        let _fourth = waiting_one().await;
        assert_eq!(limit.waited_since_last_line(), 4);
        drop(open);
    }

    #[test]
    fn closed_connections_leave_the_watch_list() {
        let limit = ConnectionLimit::new(1000);
        for _ in 0..10_000 {
            limit.watch(&Arc::new(ConnectionActivity::new()));
        }
        let watched = limit.watched.lock().unwrap().len();
        assert!(watched <= 64, "{watched} entries for no open connection");
    }

    #[test]
    fn the_limit_is_logged_once_per_period() {
        let mut limit = Arc::into_inner(ConnectionLimit::new(1)).unwrap();
        assert!(limit.should_log(), "the first time");
        assert!(!limit.should_log(), "not again at once");
        // As if the limit were created, and last logged, two periods ago.
        limit.created = std::time::Instant::now()
            .checked_sub(2 * LIMIT_LOG_EVERY)
            .unwrap();
        limit.logged_at_ms.store(1, Ordering::Relaxed);
        assert!(limit.should_log(), "a period later");
        assert!(!limit.should_log());
    }
}
