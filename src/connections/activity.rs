//! What a connection is doing ([`ConnectionActivity`]), kept up to date by its IO
//! ([`WatchedIo`]) and its requests, and read by its watchdog in `serve_one`: which
//! timeout runs out next ([`Expiry`]), and whether the connection limit chose it to
//! make room.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    ConnectionOptions, EVICT_AFTER_IDLE, EVICT_HANDSHAKE_AFTER, EVICT_STALLED_BODY_AFTER,
    MIN_BODY_BYTES_PER_SEC,
};

/// Why the watchdog ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// No request in progress for the idle timeout: closed gracefully.
    Idle,
    /// A client that stalls: closed at once.
    Stalled(&'static str),
}

/// Why an evicted connection was closed.
pub(super) const EVICTED: &str = "closed at the connection limit to make room for a new connection";

/// The connection preface a client that speaks HTTP/2 from the start sends first
/// (RFC 9113 §3.4). Only once all of it has arrived is the connection HTTP/2: a
/// head that begins `PRI` and goes on otherwise, or stops part way, is still a
/// request head that must arrive within the header read timeout.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `preface_read` once the bytes read are not the HTTP/2 preface.
const NOT_PREFACE: usize = usize::MAX;

/// "Not set" for the instants below (stored as milliseconds since the connection
/// was accepted).
const UNSET: u64 = u64::MAX;

/// What a connection is doing, updated by its IO ([`WatchedIo`]) and its requests
/// ([`ConnectionService`](super::ConnectionService)), read by its watchdog. Atomics rather than a lock: the IO
/// updates it on every read and write.
#[derive(Debug)]
pub struct ConnectionActivity {
    accepted: Instant,
    /// Requests whose answer has not been handed over completely.
    active: AtomicUsize,
    /// Of those, requests whose handler waits for body bytes the client has not sent
    /// (`bodies.count`, readable without the lock).
    waiting_bodies: AtomicUsize,
    /// The waiting bodies' progress, for the limit's minimum-rate rule. A lock, not
    /// atomics: the count and the instant change together, once per wait for the
    /// client (not per read), and the limit reads them only when it is reached.
    bodies: Mutex<WaitingBodies>,
    /// When bytes were last read.
    last_read: AtomicU64,
    /// Bytes read in all.
    total_read: AtomicU64,
    /// When the last request ended (or the accept).
    idle_since: AtomicU64,
    /// When the first byte of the next request arrived; the accept for the first
    /// request. `UNSET` while a request is in progress or none has begun.
    request_started: AtomicU64,
    /// Set when a request ends: the next bytes read start the next request.
    awaiting_request: AtomicBool,
    /// When a write last found the client's window full; `UNSET` when writes go through.
    write_blocked_since: AtomicU64,
    /// HTTP/2 (by the whole connection preface or a request's version): requests are
    /// streams, pings keep the connection busy, and the header-read rule does not
    /// apply between requests.
    http2: AtomicBool,
    /// How many of the first bytes read match [`HTTP2_PREFACE`]; [`NOT_PREFACE`] once
    /// one does not. Only the connection's IO task writes it.
    preface_read: AtomicUsize,
    /// A TLS handshake in progress rather than a connection: nothing feeds it, and
    /// the connection limit may close it once it has taken [`EVICT_HANDSHAKE_AFTER`]
    /// (see [`ConnectionActivity::handshake`]).
    handshake: bool,
    /// Set by the connection limit to close this idle connection and make room.
    pub(super) evicted: AtomicBool,
    /// Wakes the watchdog when a deadline moves earlier or appears.
    changed: Notify,
}

/// The bodies a connection's requests wait for, as the connection limit judges them.
#[derive(Debug, Default)]
struct WaitingBodies {
    count: usize,
    /// When the last of them falls behind the rate the limit asks of a body (a grace
    /// of [`EVICT_STALLED_BODY_AFTER`], then [`MIN_BODY_BYTES_PER_SEC`]) if no more
    /// bytes come, in milliseconds after the accept. Each body's instant only moves
    /// later, so the greatest stays right for one body; with several (HTTP/2), one
    /// that stopped waiting leaves its instant until none waits, which errs towards
    /// keeping the connection.
    behind_at: u64,
    /// `total_read` when `behind_at` was set: each byte read since (taken from the
    /// socket, perhaps not yet by the body's handler) moves it later as the body's
    /// own bytes would, at [`MIN_BODY_BYTES_PER_SEC`].
    read_at: u64,
}

impl WaitingBodies {
    /// `behind_at` with the credit of the bytes read since it was set.
    fn behind_at(&self, total_read: u64) -> u64 {
        let credit =
            total_read.saturating_sub(self.read_at).saturating_mul(1000) / MIN_BODY_BYTES_PER_SEC;
        self.behind_at.saturating_add(credit)
    }
}

impl ConnectionActivity {
    pub(super) fn new() -> ConnectionActivity {
        ConnectionActivity {
            accepted: Instant::now(),
            active: AtomicUsize::new(0),
            waiting_bodies: AtomicUsize::new(0),
            bodies: Mutex::new(WaitingBodies::default()),
            last_read: AtomicU64::new(0),
            total_read: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            request_started: AtomicU64::new(0),
            awaiting_request: AtomicBool::new(false),
            write_blocked_since: AtomicU64::new(UNSET),
            http2: AtomicBool::new(false),
            preface_read: AtomicUsize::new(0),
            handshake: false,
            evicted: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// The activity of a TLS handshake in progress, from the TCP accept: the
    /// connection limit (and the TLS listener's cap on handshakes) may close it to
    /// make room once it has taken [`EVICT_HANDSHAKE_AFTER`] without finishing,
    /// whatever its client sends meanwhile, so that clients that connect and send
    /// nothing, or trickle their handshake, cannot hold the server's places for the
    /// whole handshake timeout. The handshake's task waits for
    /// [`ConnectionActivity::evicted`] beside the handshake and drops this when the
    /// handshake ends; the connection then gets an activity of its own.
    pub fn handshake() -> ConnectionActivity {
        ConnectionActivity {
            handshake: true,
            ..ConnectionActivity::new()
        }
    }

    fn now(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64
    }

    /// `at` in milliseconds after the accept.
    fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.accepted).as_millis() as u64
    }

    pub(super) fn request_begins(&self, http2: bool) {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.awaiting_request.store(false, Ordering::Relaxed);
        self.request_started.store(UNSET, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn request_ends(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
        self.awaiting_request.store(true, Ordering::Relaxed);
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed.notify_one();
        }
    }

    pub(super) fn bytes_read(&self, bytes: &[u8]) {
        let now = self.now();
        self.last_read.store(now, Ordering::Relaxed);
        self.total_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.match_preface(bytes);
        if self.awaiting_request.load(Ordering::Relaxed)
            && self.awaiting_request.swap(false, Ordering::Relaxed)
        {
            self.request_started.store(now, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// Follows the first bytes read against [`HTTP2_PREFACE`] (they may come in
    /// several reads), and makes the connection HTTP/2 when all of it has come.
    fn match_preface(&self, bytes: &[u8]) {
        let matched = self.preface_read.load(Ordering::Relaxed);
        let Some(expected) = HTTP2_PREFACE.get(matched..).filter(|e| !e.is_empty()) else {
            return;
        };
        let n = expected.len().min(bytes.len());
        let matched = if bytes[..n] == expected[..n] {
            matched + n
        } else {
            NOT_PREFACE
        };
        self.preface_read.store(matched, Ordering::Relaxed);
        if matched == HTTP2_PREFACE.len() {
            self.http2.store(true, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn write_blocked(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) == UNSET {
            self.write_blocked_since
                .store(self.now(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn write_went_through(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) != UNSET {
            self.write_blocked_since.store(UNSET, Ordering::Relaxed);
        }
    }

    /// Whether every request in progress (if any) waits for its client's body.
    fn only_waits_for_bodies(&self) -> bool {
        self.active.load(Ordering::Acquire) <= self.waiting_bodies.load(Ordering::Acquire)
    }

    fn bodies(&self) -> std::sync::MutexGuard<'_, WaitingBodies> {
        self.bodies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request's handler began waiting for body bytes not yet sent; its body falls
    /// behind the rate the connection limit asks at `behind_at` if none come.
    pub(super) fn body_waits(&self, behind_at: Instant) {
        let behind_at = self.ms_at(behind_at);
        let total_read = self.total_read.load(Ordering::Relaxed);
        let mut bodies = self.bodies();
        let others = if bodies.count > 0 {
            bodies.behind_at(total_read)
        } else {
            0
        };
        bodies.behind_at = others.max(behind_at);
        bodies.read_at = total_read;
        bodies.count += 1;
        self.waiting_bodies.fetch_add(1, Ordering::AcqRel);
    }

    /// ... and stopped waiting (bytes came, the body failed or was dropped).
    pub(super) fn body_resumes(&self) {
        let mut bodies = self.bodies();
        bodies.count = bodies.count.saturating_sub(1);
        if bodies.count == 0 {
            bodies.behind_at = 0;
        }
        self.waiting_bodies.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether every body the connection waits for arrives slower than the limit
    /// asks (see [`WaitingBodies::behind_at`]).
    fn bodies_behind(&self, now: u64) -> bool {
        let total_read = self.total_read.load(Ordering::Relaxed);
        let bodies = self.bodies();
        bodies.count > 0 && now >= bodies.behind_at(total_read)
    }

    /// Idle as [`EVICT_AFTER_IDLE`] and [`EVICT_STALLED_BODY_AFTER`] mean it: no
    /// request in progress and nothing read for the first; only requests waiting for
    /// their bodies and nothing read for the second, or bodies that arrive slower
    /// than [`MIN_BODY_BYTES_PER_SEC`] once that long has been waited for them.
    /// A TLS handshake is idle once it has taken [`EVICT_HANDSHAKE_AFTER`].
    fn idle(&self) -> bool {
        if self.handshake {
            return self.now() >= EVICT_HANDSHAKE_AFTER.as_millis() as u64;
        }
        if !self.only_waits_for_bodies() {
            return false;
        }
        let now = self.now();
        let last_progress = self
            .idle_since
            .load(Ordering::Relaxed)
            .max(self.last_read.load(Ordering::Relaxed));
        let silent = now.saturating_sub(last_progress);
        if self.active.load(Ordering::Acquire) == 0 {
            return silent >= EVICT_AFTER_IDLE.as_millis() as u64;
        }
        silent >= EVICT_STALLED_BODY_AFTER.as_millis() as u64 || self.bodies_behind(now)
    }

    /// Asks the watchdog to close the connection if it is idle (see
    /// [`ConnectionActivity::idle`]); whether it asked.
    pub(super) fn evict_if_idle(&self) -> bool {
        if !self.idle() {
            return false;
        }
        // Asked once: a connection asked before and not closed yet is not counted again.
        if self.evicted.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.changed.notify_one();
        true
    }

    /// The next deadline (milliseconds since the accept) and what happens then.
    pub(super) fn deadline(&self, options: &ConnectionOptions) -> Option<(u64, Expiry)> {
        let ms = |d: Duration| d.as_millis() as u64;
        if self.evicted.load(Ordering::Relaxed) {
            if self.idle() {
                return Some((0, Expiry::Stalled(EVICTED)));
            }
            // Bytes came (read when the task woke, just before this), or a request
            // began, after the limit chose this connection: it stays, and the accept
            // loop looks for another.
            self.evicted.store(false, Ordering::Relaxed);
        }
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked != UNSET {
            return Some((
                blocked.saturating_add(ms(options.send_timeout)),
                Expiry::Stalled("the client did not read its answer within the send timeout"),
            ));
        }
        if self.active.load(Ordering::Acquire) > 0 {
            // Bodies have their own timeout; inference its deadline.
            return None;
        }
        let idle = (
            self.idle_since
                .load(Ordering::Relaxed)
                .saturating_add(ms(options.idle_timeout)),
            Expiry::Idle,
        );
        if self.http2.load(Ordering::Relaxed) {
            return Some(idle);
        }
        let started = self.request_started.load(Ordering::Relaxed);
        if started != UNSET {
            return Some((
                started.saturating_add(ms(options.header_read_timeout)),
                Expiry::Stalled("no complete request head within the header read timeout"),
            ));
        }
        Some(idle)
    }

    /// For the TLS listener's cap on handshakes in progress: asks the task of this
    /// handshake to close it if it has taken [`EVICT_HANDSHAKE_AFTER`]; whether it is
    /// to close (asked now, or before by the connection limit).
    pub fn evict_if_stalled_handshake(&self) -> bool {
        if !self.handshake {
            return false;
        }
        if self.evict_if_idle() {
            crate::metrics::record_connections_evicted(1);
            return true;
        }
        self.evicted.load(Ordering::Relaxed)
    }

    /// Completes when the connection limit (or the TLS listener's cap on
    /// handshakes) asks to close the connection to make room. A connection's
    /// watchdog then checks it is still idle ([`ConnectionActivity::deadline`]); a
    /// handshake's task closes it at once (a handshake only grows older).
    pub async fn evicted(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.evicted.load(Ordering::Relaxed) {
                return;
            }
            changed.await;
        }
    }

    /// Completes when a deadline passes.
    pub(super) async fn expired(&self, options: &ConnectionOptions) -> Expiry {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before reading the state, so a change after the read wakes us.
            changed.as_mut().enable();
            match self.deadline(options) {
                Some((at, expiry)) if at <= self.now() => return expiry,
                Some((at, _)) => {
                    let at = self.accepted + Duration::from_millis(at);
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// A connection's socket (TCP or TLS) that tells its [`ConnectionActivity`] when
/// bytes arrive and when writes wait for the client.
pub struct WatchedIo<I> {
    inner: I,
    activity: Arc<ConnectionActivity>,
}

impl<I> WatchedIo<I> {
    pub(super) fn new(inner: I, activity: Arc<ConnectionActivity>) -> WatchedIo<I> {
        WatchedIo { inner, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WatchedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let read = &buf.filled()[before..];
            if !read.is_empty() {
                self.activity.bytes_read(read);
            }
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> WatchedIo<I> {
    fn watch_write<T>(&self, result: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match &result {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(_) => self.activity.write_went_through(),
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WatchedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_write(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_options;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_applies_each_timeout_in_its_phase() {
        let o = test_options();
        let a = ConnectionActivity::new();
        // A fresh HTTP/1 connection must send its first head within the header timeout.
        assert_eq!(
            a.deadline(&o),
            Some((
                10_000,
                Expiry::Stalled("no complete request head within the header read timeout")
            ))
        );
        let started = Instant::now();
        assert!(matches!(a.expired(&o).await, Expiry::Stalled(_)));
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        // A request in progress has no connection deadline ...
        let a = ConnectionActivity::new();
        a.request_begins(false);
        assert_eq!(a.deadline(&o), None);
        // ... unless its client stops reading the answer.
        a.write_blocked();
        assert!(matches!(a.deadline(&o), Some((30_000, Expiry::Stalled(_)))));
        a.write_went_through();
        tokio::time::advance(Duration::from_secs(5)).await;
        a.request_ends();
        // Idle keep-alive: the idle timeout from the end of the request.
        assert_eq!(a.deadline(&o), Some((65_000, Expiry::Idle)));
        tokio::time::advance(Duration::from_secs(1)).await;
        // The next request's first bytes: the header timeout from them.
        a.bytes_read(b"GET /");
        assert!(matches!(a.deadline(&o), Some((16_000, Expiry::Stalled(_)))));

        // HTTP/2: between streams only the idle timeout counts, pings or not.
        let a = ConnectionActivity::new();
        a.bytes_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(a.deadline(&o), Some((60_000, Expiry::Idle)));
        a.bytes_read(b"ping");
        assert_eq!(a.deadline(&o), Some((60_000, Expiry::Idle)));
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_whole_http2_preface_lifts_the_header_read_timeout() {
        let o = test_options();
        let header_timeout =
            Expiry::Stalled("no complete request head within the header read timeout");
        // Part of the preface, then nothing: still a head that must come in time.
        let a = ConnectionActivity::new();
        a.bytes_read(&HTTP2_PREFACE[..10]);
        assert_eq!(a.deadline(&o), Some((10_000, header_timeout)));
        // The rest of it, in two more reads: HTTP/2, only the idle timeout counts.
        a.bytes_read(&HTTP2_PREFACE[10..20]);
        assert_eq!(a.deadline(&o), Some((10_000, header_timeout)));
        a.bytes_read(&HTTP2_PREFACE[20..]);
        assert_eq!(a.deadline(&o), Some((60_000, Expiry::Idle)));

        // A head that begins like the preface and goes on otherwise is HTTP/1.
        let a = ConnectionActivity::new();
        a.bytes_read(b"PRI /healthz HTTP/1.1\r\nHost: x\r\n");
        assert_eq!(a.deadline(&o), Some((10_000, header_timeout)));
        a.bytes_read(&HTTP2_PREFACE[4..]);
        assert_eq!(a.deadline(&o), Some((10_000, header_timeout)));
        // So is one that strays in a later read.
        let a = ConnectionActivity::new();
        a.bytes_read(b"PRI * HTTP/2.0\r\n");
        a.bytes_read(b"Host: x\r\n\r\nSM\r\n\r\n");
        assert_eq!(a.deadline(&o), Some((10_000, header_timeout)));
        // The preface and the first frames in one read.
        let a = ConnectionActivity::new();
        a.bytes_read(&[HTTP2_PREFACE, &[0, 0, 0, 4, 0, 0, 0, 0, 0][..]].concat());
        assert_eq!(a.deadline(&o), Some((60_000, Expiry::Idle)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_handshake_may_be_closed_once_it_has_taken_too_long() {
        let a = Arc::new(ConnectionActivity::handshake());
        tokio::time::advance(EVICT_HANDSHAKE_AFTER - Duration::from_millis(1)).await;
        assert!(!a.evict_if_idle(), "a handshake on its way");
        assert!(!a.evict_if_stalled_handshake());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(a.evict_if_stalled_handshake());
        // Asked before (by the limit, say): still one to close, counted once.
        assert!(!a.evict_if_idle());
        assert!(a.evict_if_stalled_handshake());
        tokio::time::timeout(Duration::from_millis(1), a.evicted())
            .await
            .expect("the handshake's task is told");
        // A connection is never taken for a handshake.
        let c = ConnectionActivity::new();
        tokio::time::advance(EVICT_HANDSHAKE_AFTER).await;
        assert!(!c.evict_if_stalled_handshake());
    }

    /// A body that has brought enough bytes not to fall behind the minimum rate for
    /// a long time: only silence can make its connection one to close.
    fn on_schedule() -> Instant {
        Instant::now() + 100 * EVICT_STALLED_BODY_AFTER
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_for_a_stalled_body_does_not_keep_its_connection() {
        let o = test_options();
        let a = ConnectionActivity::new();
        a.bytes_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        a.request_begins(true);
        a.body_waits(on_schedule());
        tokio::time::advance(EVICT_STALLED_BODY_AFTER / 2).await;
        a.bytes_read(b"part of the body");
        tokio::time::advance(EVICT_STALLED_BODY_AFTER / 2).await;
        assert!(!a.evict_if_idle(), "body bytes came recently");
        tokio::time::advance(EVICT_AFTER_IDLE).await;
        assert!(
            !a.evict_if_idle(),
            "a stalled body is given longer than an idle connection"
        );
        tokio::time::advance(EVICT_STALLED_BODY_AFTER / 2).await;
        assert!(a.evict_if_idle(), "nothing read for a while");
        assert_eq!(a.deadline(&o), Some((0, Expiry::Stalled(EVICTED))));

        // A second request that has its body (being computed) keeps it.
        let a = ConnectionActivity::new();
        a.request_begins(true);
        a.body_waits(on_schedule());
        a.request_begins(true);
        tokio::time::advance(2 * EVICT_STALLED_BODY_AFTER).await;
        assert!(!a.evict_if_idle());
        // Its end (progress too) leaves only the stalled one.
        a.request_ends();
        assert!(!a.evict_if_idle());
        tokio::time::advance(EVICT_STALLED_BODY_AFTER).await;
        assert!(a.evict_if_idle());
        // The body resumes before the watchdog acts: the connection stays.
        a.body_resumes();
        assert_eq!(a.deadline(&o), None);

        // Bytes read after the choice, when the task wakes and before its watchdog
        // looks: the connection stays.
        let a = ConnectionActivity::new();
        tokio::time::advance(EVICT_AFTER_IDLE).await;
        assert!(a.evict_if_idle());
        a.bytes_read(b"GET / HTTP/1.1\r\n");
        assert_ne!(a.deadline(&o), Some((0, Expiry::Stalled(EVICTED))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_for_a_trickled_body_does_not_keep_its_connection() {
        let o = test_options();
        // A byte every 400 ms: never silent for EVICT_STALLED_BODY_AFTER, but far
        // slower than the minimum rate once that grace is spent.
        let trickle = Duration::from_millis(400);
        let a = ConnectionActivity::new();
        a.request_begins(false);
        // As ReadTimeoutBody registers a body that has brought nothing yet.
        a.body_waits(Instant::now() + EVICT_STALLED_BODY_AFTER);
        for _ in 0..2 {
            tokio::time::advance(trickle).await;
            a.bytes_read(b"x");
            assert!(!a.evict_if_idle(), "within the grace");
        }
        tokio::time::advance(trickle).await;
        a.bytes_read(b"x");
        assert!(
            a.evict_if_idle(),
            "behind the minimum rate, a byte just read"
        );
        assert_eq!(a.deadline(&o), Some((0, Expiry::Stalled(EVICTED))));

        // The same pauses with bodies that bring their bytes: each byte read counts
        // (before the body's handler takes it) as it would in the body's own count.
        let a = ConnectionActivity::new();
        a.request_begins(false);
        a.body_waits(Instant::now() + EVICT_STALLED_BODY_AFTER);
        let chunk = [0u8; MIN_BODY_BYTES_PER_SEC as usize / 2];
        for _ in 0..20 {
            tokio::time::advance(trickle).await;
            a.bytes_read(&chunk);
            assert!(!a.evict_if_idle(), "{} B/s", chunk.len() as f64 / 0.4);
        }

        // HTTP/2: one stream's slow body does not make the connection closable while
        // another stream's body keeps up (the greatest instant counts) ...
        let a = ConnectionActivity::new();
        a.bytes_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        a.request_begins(true);
        a.body_waits(Instant::now() + EVICT_STALLED_BODY_AFTER);
        a.request_begins(true);
        a.body_waits(Instant::now() + 10 * EVICT_STALLED_BODY_AFTER);
        tokio::time::advance(2 * EVICT_STALLED_BODY_AFTER).await;
        a.bytes_read(b"x");
        assert!(!a.evict_if_idle());
        // ... and once neither waits, the next wait starts afresh.
        a.body_resumes();
        a.body_resumes();
        a.body_waits(Instant::now() + EVICT_STALLED_BODY_AFTER);
        a.body_waits(Instant::now() + EVICT_STALLED_BODY_AFTER);
        tokio::time::advance(EVICT_STALLED_BODY_AFTER / 2).await;
        a.bytes_read(b"x");
        assert!(!a.evict_if_idle());
        tokio::time::advance(EVICT_STALLED_BODY_AFTER / 2 + Duration::from_millis(100)).await;
        a.bytes_read(b"x");
        assert!(a.evict_if_idle());
    }
}
