//! Accepting and serving connections for both listeners (REST and gRPC), so that no
//! client can starve the server (issue 9).
//!
//! * [`ConnectionLimit`]: one semaphore shared by both listeners; a connection holds a
//!   permit for as long as it is open. At the limit an accept loop closes the oldest
//!   idle connections to make room, as nginx reuses its keep-alive connections: idle
//!   is nothing read for [`EVICT_AFTER_IDLE`] and no request in progress, or only
//!   requests waiting for a body their client stopped sending. With none idle it
//!   stops accepting, so new connections wait in the kernel's listen backlog. Either
//!   way the file descriptors kept in reserve stay free for the repository, model
//!   files and the watcher. Stopping alone is not enough under a flood: the backlog
//!   fills with the attacker's connections, the kernel drops further SYNs, and a
//!   legitimate client's retransmissions back off for 1, 2, 4, 8 s.
//! * [`serve`]: the accept loop. Each connection is served by hyper's auto builder
//!   (HTTP/1 and HTTP/2, or HTTP/2 only for gRPC) in a task owned by a `JoinSet`, so
//!   dropping [`serve`]'s future (a shutdown deadline) ends every connection, and
//!   awaiting it to the end is the drain.
//! * A watchdog per connection ([`ConnectionActivity`]) closes a connection that sends
//!   no complete request head within the header-read timeout, that has no request in
//!   progress for the idle timeout, or whose client takes nothing of the answer for
//!   the send timeout. hyper's own `header_read_timeout` is off: it also closes an idle
//!   keep-alive connection once the header timeout passes, which would make the idle
//!   timeout meaningless, and it does not cover the bytes before hyper knows the
//!   protocol.
//! * [`ReadTimeoutBody`] fails a request whose body stops arriving for the body read
//!   timeout: the REST adapters answer 408 with a JSON body; a gRPC call ends with an
//!   error status.
//!
//! Invariants:
//! * at most `max_connections` connections are open across both listeners (TLS
//!   handshakes in progress included); past it nothing more is accepted until one
//!   closes or is closed for idleness; requests already accepted and the watcher are
//!   never touched;
//! * every request reaches the routers with `ConnectInfo<SocketAddr>` (the peer);
//! * a connection with no request in progress never outlives its idle or header
//!   timeout, and one whose client does not read never outlives the send timeout.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::settings::Settings;
use crate::tls::ServerListener;

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
    /// for an idle one to close; one found busy goes to the back, so the order is
    /// close to least recently idle. Entries of closed connections are dropped when
    /// met, and all at once when they outnumber the open ones.
    watched: Mutex<VecDeque<Weak<ConnectionActivity>>>,
    /// Idle connections closed to make room since the last log line.
    evicted: AtomicU64,
    /// The limit is logged when it is first reached, then at most once per
    /// [`LIMIT_LOG_EVERY`] while connections keep waiting, with how many waited
    /// since: a flood that holds the server at its limit must not flood the log too.
    /// When it was last logged, in milliseconds after `created` (0: never).
    logged_at_ms: AtomicU64,
    /// Connections that waited for a permit since the last log line.
    waited: AtomicU64,
    created: std::time::Instant,
}

/// The least time between two log lines about the connection limit.
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a connection must have read nothing, and have had no request in progress
/// but for those waiting on their client's body, before it may be closed to make
/// room at the limit: a keep-alive client between two requests, or a new client
/// whose request is on its way, is not cut off, nor an upload that keeps coming.
pub const EVICT_AFTER_IDLE: Duration = Duration::from_millis(250);

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
            waited: AtomicU64::new(0),
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
    /// an idle connection when there is one. Cancel-safe.
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
        self.waited.fetch_add(1, Ordering::Relaxed);
        loop {
            self.evict_idle(EVICTION_BATCH);
            if self.should_log() {
                tracing::warn!(
                    max_connections = self.max,
                    waited = self.waited.swap(0, Ordering::Relaxed),
                    closed_idle = self.evicted.swap(0, Ordering::Relaxed),
                    "connection limit reached; idle connections are closed to make room, \
                     and while none is idle new connections wait in the listen backlog"
                );
            }
            // An evicted connection's task closes it and gives its permit back when it
            // next runs. When none was idle (or the one evicted began a request after
            // all), look again a little later, unless a connection closes first.
            let permit = self.permits.clone().acquire_owned();
            if let Ok(permit) = tokio::time::timeout(EVICTION_RETRY, permit).await {
                return permit.expect("the connection semaphore is never closed");
            }
        }
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
            if activity.evict_if_idle() {
                evicted += 1;
                if evicted == n {
                    break;
                }
            } else {
                watched.push_back(weak);
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

/// HTTP/2 settings of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Http2Options {
    pub max_concurrent_streams: u32,
    /// Interval of keep-alive pings; `None` sends none.
    pub keep_alive_interval: Option<Duration>,
    /// How long a ping may wait for its acknowledgement before the connection closes.
    pub keep_alive_timeout: Duration,
    pub max_pending_accept_reset_streams: usize,
}

/// How one listener serves its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionOptions {
    /// For the logs: "REST" or "gRPC".
    pub name: &'static str,
    /// HTTP/2 only (gRPC), or HTTP/1.1 and HTTP/2 by the client's choice (REST).
    pub http2_only: bool,
    /// Longest a request head may take to arrive, from the first byte of it, or from
    /// the accept for a connection's first request (HTTP/1 and before the protocol
    /// is known).
    pub header_read_timeout: Duration,
    /// Longest a connection may stay without a request in progress.
    pub idle_timeout: Duration,
    /// Longest a request body may stop arriving; `None` leaves bodies unwatched.
    pub body_read_timeout: Option<Duration>,
    /// Longest a write may wait for the client to take bytes.
    pub send_timeout: Duration,
    /// Largest request head (HTTP/1: start line and headers; HTTP/2: header list).
    pub max_header_bytes: usize,
    pub http2: Http2Options,
}

impl ConnectionOptions {
    /// The REST listener's: HTTP/1.1 and HTTP/2, bodies watched.
    pub fn rest(settings: &Settings) -> ConnectionOptions {
        ConnectionOptions {
            name: "REST",
            http2_only: false,
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.keep_alive_timeout,
            body_read_timeout: Some(settings.body_read_timeout),
            send_timeout: settings.send_timeout,
            max_header_bytes: settings.max_header_bytes,
            http2: Http2Options {
                max_concurrent_streams: settings.rest_max_concurrent_streams,
                ..Http2Options::from(settings)
            },
        }
    }

    /// The gRPC listener's: HTTP/2 only. Every ferroserve RPC takes one request
    /// message, so a call whose message stops arriving for the body read timeout
    /// fails too (otherwise a stream left open would keep its connection busy).
    pub fn grpc(settings: &Settings) -> ConnectionOptions {
        ConnectionOptions {
            name: "gRPC",
            http2_only: true,
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.grpc_idle_timeout,
            body_read_timeout: Some(settings.body_read_timeout),
            send_timeout: settings.grpc_send_timeout,
            max_header_bytes: settings.max_header_bytes,
            http2: Http2Options {
                max_concurrent_streams: settings.grpc_max_concurrent_streams,
                ..Http2Options::from(settings)
            },
        }
    }
}

impl From<&Settings> for Http2Options {
    fn from(settings: &Settings) -> Http2Options {
        Http2Options {
            max_concurrent_streams: settings.rest_max_concurrent_streams,
            keep_alive_interval: settings.http2_keep_alive_interval,
            keep_alive_timeout: settings.http2_keep_alive_timeout,
            max_pending_accept_reset_streams: settings.http2_max_pending_accept_reset_streams,
        }
    }
}

/// The executor HTTP/2 streams run on: it resets a stream whose client leaves its
/// answer unread past the send timeout (see [`crate::grpc::SendTimeoutExecutor`]).
pub type Executor = crate::grpc::SendTimeoutExecutor;

/// hyper's builder for `options`.
pub fn builder(options: &ConnectionOptions) -> auto::Builder<Executor> {
    let mut builder = auto::Builder::new(Executor::new(options.send_timeout));
    builder
        .http1()
        .timer(TokioTimer::new())
        // Off: see the module comment; the watchdog does it.
        .header_read_timeout(None)
        .max_buf_size(options.max_header_bytes.max(MIN_HEADER_BYTES));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.http2.max_concurrent_streams)
        .keep_alive_interval(options.http2.keep_alive_interval)
        .keep_alive_timeout(options.http2.keep_alive_timeout)
        .max_pending_accept_reset_streams(options.http2.max_pending_accept_reset_streams)
        .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX));
    if options.http2_only {
        builder = builder.http2_only();
    }
    builder
}

/// The smallest `max_header_bytes` hyper accepts (its read buffer's minimum).
pub const MIN_HEADER_BYTES: usize = 8192;

/// Serves `router` on `listener` until `shutdown` completes, then lets the requests
/// in progress finish (HTTP/2 connections get a GOAWAY, idle HTTP/1 connections
/// close) and returns when every connection has closed. Dropping the returned future
/// closes every connection at once, so a deadline can bound the drain.
pub async fn serve(
    mut listener: ServerListener,
    router: axum::Router,
    fast_path: Option<crate::http::AppState>,
    options: ConnectionOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let builder = Arc::new(builder(&options));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            // Cancel-safe: a permit taken for a connection not yet accepted is
            // given back when this branch loses.
            (io, peer, permit) = listener.accept_limited() => {
                let activity = Arc::new(ConnectionActivity::new());
                if let Some(permit) = &permit {
                    permit.watch(&activity);
                }
                let service = ConnectionService {
                    router: router.clone(),
                    fast_path: fast_path.clone(),
                    peer,
                    activity,
                    body_read_timeout: options.body_read_timeout,
                };
                let builder = builder.clone();
                let stop = stop.clone();
                connections.spawn(async move {
                    serve_one(&builder, io, service, options, stop).await;
                    drop(permit);
                });
            }
        }
    }
    // Nothing more is accepted; what waits in the backlog is refused when the
    // socket closes.
    drop(listener);
    stop.cancel();
    while connections.join_next().await.is_some() {}
}

/// Why the watchdog ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// No request in progress for the idle timeout: closed gracefully.
    Idle,
    /// A client that stalls: closed at once.
    Stalled(&'static str),
}

/// How long a connection closed for idleness may take to say goodbye before it is
/// dropped: HTTP/2's graceful close waits for the client to answer a PING, which an
/// idle attacker never does. At most the header read timeout.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

async fn serve_one(
    builder: &auto::Builder<Executor>,
    io: crate::tls::ServerStream,
    service: ConnectionService,
    options: ConnectionOptions,
    stop: tokio_util::sync::CancellationToken,
) {
    let activity = service.activity.clone();
    let peer = service.peer;
    let connection =
        builder.serve_connection(TokioIo::new(WatchedIo::new(io, activity.clone())), service);
    tokio::pin!(connection);
    let mut closing = false;
    let mut hard_deadline: Option<Instant> = None;
    loop {
        let watchdog = async {
            match hard_deadline {
                Some(deadline) => tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {
                        Expiry::Stalled("did not close after its idle timeout")
                    }
                    () = activity.evicted() => Expiry::Stalled(EVICTED),
                },
                None => activity.expired(&options).await,
            }
        };
        tokio::select! {
            // The connection first: when this task is polled late (a busy server), the
            // bytes that arrived in time are read before the watchdog judges the
            // connection by them, so a client is never cut off for the server's delay.
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "{} connection ended: {e}", options.name);
                }
                return;
            }
            () = stop.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            expiry = watchdog => match expiry {
                Expiry::Idle if !closing => {
                    tracing::trace!(%peer, "{} connection idle; closing", options.name);
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                    hard_deadline = Some(
                        Instant::now() + IDLE_CLOSE_GRACE.min(options.header_read_timeout),
                    );
                }
                Expiry::Idle => return,
                Expiry::Stalled(why) => {
                    tracing::debug!(%peer, "{} connection closed: {why}", options.name);
                    return;
                }
            }
        }
    }
}

/// Why an evicted connection was closed.
const EVICTED: &str = "closed at the connection limit to make room for a new connection";

/// "Not set" for the instants below (stored as milliseconds since the connection
/// was accepted).
const UNSET: u64 = u64::MAX;

/// What a connection is doing, updated by its IO ([`WatchedIo`]) and its requests
/// ([`ConnectionService`]), read by its watchdog. Atomics rather than a lock: the IO
/// updates it on every read and write.
#[derive(Debug)]
pub struct ConnectionActivity {
    accepted: Instant,
    /// Requests whose answer has not been handed over completely.
    active: AtomicUsize,
    /// Of those, requests whose handler waits for body bytes the client has not sent.
    waiting_bodies: AtomicUsize,
    /// When bytes were last read.
    last_read: AtomicU64,
    /// When the last request ended (or the accept).
    idle_since: AtomicU64,
    /// When the first byte of the next request arrived; the accept for the first
    /// request. `UNSET` while a request is in progress or none has begun.
    request_started: AtomicU64,
    /// Set when a request ends: the next bytes read start the next request.
    awaiting_request: AtomicBool,
    /// When a write last found the client's window full; `UNSET` when writes go through.
    write_blocked_since: AtomicU64,
    /// HTTP/2 (by the connection preface or a request's version): requests are
    /// streams, pings keep the connection busy, and the header-read rule does not
    /// apply between requests.
    http2: AtomicBool,
    first_read: AtomicBool,
    /// Set by the connection limit to close this idle connection and make room.
    evicted: AtomicBool,
    /// Wakes the watchdog when a deadline moves earlier or appears.
    changed: Notify,
}

impl ConnectionActivity {
    fn new() -> ConnectionActivity {
        ConnectionActivity {
            accepted: Instant::now(),
            active: AtomicUsize::new(0),
            waiting_bodies: AtomicUsize::new(0),
            last_read: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            request_started: AtomicU64::new(0),
            awaiting_request: AtomicBool::new(false),
            write_blocked_since: AtomicU64::new(UNSET),
            http2: AtomicBool::new(false),
            first_read: AtomicBool::new(true),
            evicted: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64
    }

    fn request_begins(&self, http2: bool) {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.awaiting_request.store(false, Ordering::Relaxed);
        self.request_started.store(UNSET, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    fn request_ends(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
        self.awaiting_request.store(true, Ordering::Relaxed);
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed.notify_one();
        }
    }

    fn bytes_read(&self, bytes: &[u8]) {
        self.last_read.store(self.now(), Ordering::Relaxed);
        if self.first_read.swap(false, Ordering::Relaxed) && bytes.starts_with(b"PRI") {
            self.http2.store(true, Ordering::Relaxed);
            self.changed.notify_one();
        }
        if self.awaiting_request.load(Ordering::Relaxed)
            && self.awaiting_request.swap(false, Ordering::Relaxed)
        {
            self.request_started.store(self.now(), Ordering::Relaxed);
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

    /// A request's handler began waiting for body bytes not yet sent.
    fn body_waits(&self) {
        self.waiting_bodies.fetch_add(1, Ordering::AcqRel);
    }

    /// ... and stopped waiting (bytes came, the body failed or was dropped).
    fn body_resumes(&self) {
        self.waiting_bodies.fetch_sub(1, Ordering::AcqRel);
    }

    /// Asks the watchdog to close the connection if it is idle (see
    /// [`EVICT_AFTER_IDLE`]); whether it asked.
    fn evict_if_idle(&self) -> bool {
        if !self.only_waits_for_bodies() {
            return false;
        }
        let last_progress = self
            .idle_since
            .load(Ordering::Relaxed)
            .max(self.last_read.load(Ordering::Relaxed));
        if self.now().saturating_sub(last_progress) < EVICT_AFTER_IDLE.as_millis() as u64 {
            return false;
        }
        self.evicted.store(true, Ordering::Relaxed);
        self.changed.notify_one();
        true
    }

    /// The next deadline (milliseconds since the accept) and what happens then.
    fn deadline(&self, options: &ConnectionOptions) -> Option<(u64, Expiry)> {
        let ms = |d: Duration| d.as_millis() as u64;
        if self.evicted.load(Ordering::Relaxed) {
            if self.only_waits_for_bodies() {
                return Some((0, Expiry::Stalled(EVICTED)));
            }
            // A request began (or its body came) after the limit chose this
            // connection: it stays, and the accept loop looks for another.
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

    /// Completes when the connection limit evicts the connection.
    async fn evicted(&self) {
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
    async fn expired(&self, options: &ConnectionOptions) -> Expiry {
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
    fn new(inner: I, activity: Arc<ConnectionActivity>) -> WatchedIo<I> {
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

/// The service hyper calls for each request of one connection: gives the request
/// its peer address and (REST) a body read timeout, and counts it as in progress
/// until its answer has been handed over.
#[derive(Clone)]
pub struct ConnectionService {
    router: axum::Router,
    /// The REST predict routes' way around the router (`crate::http::fast`);
    /// `None` on gRPC.
    fast_path: Option<crate::http::AppState>,
    peer: SocketAddr,
    activity: Arc<ConnectionActivity>,
    body_read_timeout: Option<Duration>,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let guard = RequestInProgress::new(
            self.activity.clone(),
            request.version() == http::Version::HTTP_2,
        );
        let (mut parts, body) = request.into_parts();
        // The access layer needs the peer (loopback-only management).
        parts
            .extensions
            .insert(axum::extract::ConnectInfo(self.peer));
        let body = match self.body_read_timeout {
            Some(timeout) => Body::new(ReadTimeoutBody::new(
                body,
                timeout,
                Some(self.activity.clone()),
            )),
            None => Body::new(body),
        };
        let guard_body = |response: http::Response<Body>| {
            response.map(|body| {
                Body::new(GuardedBody {
                    inner: body,
                    _guard: guard,
                })
            })
        };
        if let Some(state) = &self.fast_path {
            if let Some(route) = crate::http::fast::takes(state, &parts) {
                let request = http::Request::from_parts(parts, body);
                let state = state.clone();
                let peer = self.peer;
                return Box::pin(async move {
                    Ok(guard_body(
                        crate::http::fast::serve(state, route, request, peer).await,
                    ))
                });
            }
        }
        let request = http::Request::from_parts(parts, body);
        let router = self.router.clone();
        Box::pin(async move {
            let response = tower::ServiceExt::oneshot(router, request).await?;
            Ok(guard_body(response))
        })
    }
}

/// Counts a request as in progress while it lives (in the request's future, then in
/// its answer's body until hyper has taken all of it).
struct RequestInProgress(Arc<ConnectionActivity>);

impl RequestInProgress {
    fn new(activity: Arc<ConnectionActivity>, http2: bool) -> RequestInProgress {
        activity.request_begins(http2);
        RequestInProgress(activity)
    }
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.0.request_ends();
    }
}

/// An answer's body that keeps its request counted as in progress.
struct GuardedBody {
    inner: Body,
    _guard: RequestInProgress,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error a request body gives when it stopped arriving for its read timeout;
/// the REST adapters answer it with 408 ([`is_body_read_timeout`]).
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving for {0:?}")]
pub struct BodyReadTimeout(pub Duration);

/// Whether `error` or one of its sources is a [`BodyReadTimeout`].
pub fn is_body_read_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut error = Some(error);
    while let Some(e) = error {
        if e.is::<BodyReadTimeout>() {
            return true;
        }
        error = e.source();
    }
    false
}

/// A request body that fails with [`BodyReadTimeout`] when no data comes for
/// `timeout` while it is being read, and tells its connection's activity while it
/// waits for the client.
pub struct ReadTimeoutBody {
    inner: Incoming,
    timeout: Duration,
    /// Armed while a read waits for the client.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Once the timeout passed, every read that would wait fails at once.
    timed_out: bool,
    activity: Option<Arc<ConnectionActivity>>,
}

impl ReadTimeoutBody {
    pub fn new(
        inner: Incoming,
        timeout: Duration,
        activity: Option<Arc<ConnectionActivity>>,
    ) -> ReadTimeoutBody {
        ReadTimeoutBody {
            inner,
            timeout,
            stalled: None,
            timed_out: false,
            activity,
        }
    }

    /// Disarms the timer, when armed: the read no longer waits for the client.
    fn resume(&mut self) {
        if self.stalled.take().is_some() {
            if let Some(activity) = &self.activity {
                activity.body_resumes();
            }
        }
    }
}

impl Drop for ReadTimeoutBody {
    fn drop(&mut self) {
        self.resume();
    }
}

impl http_body::Body for ReadTimeoutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.resume();
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending if self.timed_out => {
                Poll::Ready(Some(Err(Box::new(BodyReadTimeout(self.timeout)))))
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let this = &mut *self;
                let stalled = this.stalled.get_or_insert_with(|| {
                    if let Some(activity) = &this.activity {
                        activity.body_waits();
                    }
                    Box::pin(tokio::time::sleep(timeout))
                });
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.resume();
                        this.timed_out = true;
                        Poll::Ready(Some(Err(Box::new(BodyReadTimeout(timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
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

    fn options() -> ConnectionOptions {
        ConnectionOptions {
            name: "test",
            http2_only: false,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: None,
            send_timeout: Duration::from_secs(30),
            max_header_bytes: 65536,
            http2: Http2Options {
                max_concurrent_streams: 10,
                keep_alive_interval: None,
                keep_alive_timeout: Duration::from_secs(20),
                max_pending_accept_reset_streams: 20,
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_applies_each_timeout_in_its_phase() {
        let o = options();
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
        let o = options();
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
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_for_a_stalled_body_does_not_keep_its_connection() {
        let o = options();
        let a = ConnectionActivity::new();
        a.bytes_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        a.request_begins(true);
        a.body_waits();
        tokio::time::advance(EVICT_AFTER_IDLE / 2).await;
        a.bytes_read(b"part of the body");
        tokio::time::advance(EVICT_AFTER_IDLE / 2).await;
        assert!(!a.evict_if_idle(), "body bytes came recently");
        tokio::time::advance(EVICT_AFTER_IDLE / 2).await;
        assert!(a.evict_if_idle(), "nothing read for a while");
        assert_eq!(a.deadline(&o), Some((0, Expiry::Stalled(EVICTED))));

        // A second request that has its body (being computed) keeps it.
        let a = ConnectionActivity::new();
        a.request_begins(true);
        a.body_waits();
        a.request_begins(true);
        tokio::time::advance(2 * EVICT_AFTER_IDLE).await;
        assert!(!a.evict_if_idle());
        // Its end (progress too) leaves only the stalled one.
        a.request_ends();
        assert!(!a.evict_if_idle());
        tokio::time::advance(EVICT_AFTER_IDLE).await;
        assert!(a.evict_if_idle());
        // The body resumes before the watchdog acts: the connection stays.
        a.body_resumes();
        assert_eq!(a.deadline(&o), None);
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
