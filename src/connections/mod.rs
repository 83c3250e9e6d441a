//! Accepting and serving connections for both listeners (REST and gRPC), so that no
//! client can starve the server (issue 9).
//!
//! * [`ConnectionLimit`]: one semaphore shared by both listeners; a connection holds a
//!   permit for as long as it is open. At the limit an accept loop closes the oldest
//!   idle connections to make room, as nginx reuses its keep-alive connections: idle
//!   is nothing read for [`EVICT_AFTER_IDLE`] and no request in progress, or only
//!   requests waiting for bodies their clients stopped sending (nothing read for
//!   [`EVICT_STALLED_BODY_AFTER`]) or send too slowly (slower than
//!   [`MIN_BODY_BYTES_PER_SEC`] once that long has been waited for them), and TLS
//!   handshakes not finished within [`EVICT_HANDSHAKE_AFTER`]. With none
//!   idle it stops accepting, so new connections wait in the kernel's listen
//!   backlog. Either way the file descriptors kept in reserve stay free for the
//!   repository, model files and the watcher. Stopping alone is not enough under a
//!   flood: the backlog fills with the attacker's connections, the kernel drops
//!   further SYNs, and a legitimate client retries only 1, 3 and 7 s after its first
//!   attempt.
//! * [`serve`]: the accept loop. Each connection is served by hyper's auto builder
//!   (HTTP/1 and HTTP/2, or HTTP/2 only for gRPC) in a task owned by a `JoinSet`, so
//!   dropping [`serve`]'s future (a shutdown deadline) ends every connection, and
//!   awaiting it to the end is the drain.
//! * A watchdog per connection ([`ConnectionActivity`]) closes a connection that sends
//!   no complete request head (nor the whole HTTP/2 preface) within the header-read
//!   timeout, that has no request in
//!   progress for the idle timeout, or whose client takes nothing of the answer for
//!   the send timeout. hyper's own `header_read_timeout` is off: it also closes an idle
//!   keep-alive connection once the header timeout passes, which would make the idle
//!   timeout meaningless, and it does not cover the bytes before hyper knows the
//!   protocol.
//! * [`ReadTimeoutBody`] fails a request whose body stops arriving for the body read
//!   timeout, or arrives slower than [`MIN_BODY_BYTES_PER_SEC`] past it: the REST
//!   adapters answer 408 with a JSON body; a gRPC call ends with DEADLINE_EXCEEDED.
//! * the same body charges the bytes it brings to the server-wide budget of body
//!   bytes held at once ([`BodyBudget`], `max_inflight_body_bytes`) until its
//!   request is over; one that does not fit fails: REST answers 503, gRPC
//!   RESOURCE_EXHAUSTED.
//!
//! Invariants:
//! * at most `max_connections` connections are open across both listeners (TLS
//!   handshakes in progress included); past it nothing more is accepted until one
//!   closes or an idle one (or a stalled handshake) is closed to make room; a
//!   request whose body has arrived (being computed or answered) and the watcher are
//!   never touched;
//! * every request reaches the routers with `ConnectInfo<SocketAddr>` (the peer);
//! * a connection with no request in progress never outlives its idle or header
//!   timeout, and one whose client does not read never outlives the send timeout;
//! * a request body is never waited for longer in all than the body read timeout
//!   plus a second per [`MIN_BODY_BYTES_PER_SEC`] bytes it brought.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::settings::Settings;
use crate::tls::ServerListener;

mod activity;
mod body;
mod budget;
mod limit;

pub use activity::{ConnectionActivity, WatchedIo};
use activity::{Expiry, EVICTED};
pub use body::{is_body_read_timeout, BodyReadTimeout, ReadTimeoutBody, MIN_BODY_BYTES_PER_SEC};
use budget::RequestChargeRelease;
pub use budget::{
    is_body_budget_exceeded, BodyBudget, BodyBudgetExceeded, RequestCharge, UNCHARGED_BODY_BYTES,
};
pub use limit::{
    default_max_connections, raise_fd_limit, ConnectionLimit, ConnectionPermit, EVICT_AFTER_IDLE,
    EVICT_HANDSHAKE_AFTER, EVICT_STALLED_BODY_AFTER, FD_RESERVE_MIN,
};

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
    /// Longest a request body may stop arriving, and its grace before the minimum
    /// rate counts ([`ReadTimeoutBody`]); `None` leaves bodies unwatched (and
    /// uncharged to the body budget).
    pub body_read_timeout: Option<Duration>,
    /// gRPC: a body that fails those rules ends its call with DEADLINE_EXCEEDED
    /// (a `tonic::Status`) rather than with the error the REST adapters answer 408.
    pub grpc: bool,
    /// The budget of body bytes held at once that watched bodies are charged to
    /// (the process-wide one: both listeners share it).
    pub body_budget: BodyBudget,
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
            grpc: false,
            body_budget: BodyBudget::process_wide(settings.max_inflight_body_bytes),
            send_timeout: settings.send_timeout,
            max_header_bytes: settings.max_header_bytes,
            http2: Http2Options {
                max_concurrent_streams: settings.rest_max_concurrent_streams,
                ..Http2Options::from(settings)
            },
        }
    }

    /// The gRPC listener's: HTTP/2 only. Every ferroserve RPC takes one request
    /// message, so a call whose message stops arriving for the body read timeout, or
    /// trickles in, fails too (otherwise a stream left open would keep its
    /// connection busy).
    pub fn grpc(settings: &Settings) -> ConnectionOptions {
        ConnectionOptions {
            name: "gRPC",
            http2_only: true,
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.grpc_idle_timeout,
            body_read_timeout: Some(settings.body_read_timeout),
            grpc: true,
            body_budget: BodyBudget::process_wide(settings.max_inflight_body_bytes),
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
                    grpc: options.grpc,
                    body_budget: options.body_budget,
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

/// The service hyper calls for each request of one connection: gives the request
/// its peer address and a body read timeout, and counts it as in progress until its
/// answer has been handed over.
#[derive(Clone)]
pub struct ConnectionService {
    router: axum::Router,
    /// The REST predict routes' way around the router (`crate::http::fast`);
    /// `None` on gRPC.
    fast_path: Option<crate::http::AppState>,
    peer: SocketAddr,
    activity: Arc<ConnectionActivity>,
    body_read_timeout: Option<Duration>,
    /// Body failures as gRPC statuses (see [`ConnectionOptions::grpc`]).
    grpc: bool,
    body_budget: BodyBudget,
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
        // The request's charge against the body budget, given back when its future
        // ends (answered or dropped): its handler holds the bytes until then. A
        // multipart upload is not charged: it goes to disk as it arrives.
        let mut release = RequestChargeRelease(None);
        let body = match self.body_read_timeout {
            Some(timeout) => {
                // A small body is never charged, so it pays no route check either.
                let charge = self
                    .body_budget
                    .request(http_body::Body::size_hint(&body).upper())
                    .filter(|_| self.grpc || !crate::http::fast::body_streams_to_disk(&parts));
                release.0.clone_from(&charge);
                Body::new(ReadTimeoutBody::new(
                    body,
                    timeout,
                    self.grpc,
                    self.activity.clone(),
                    charge,
                ))
            }
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
                    let response = crate::http::fast::serve(state, route, request, peer).await;
                    drop(release);
                    Ok(guard_body(response))
                });
            }
        }
        let request = http::Request::from_parts(parts, body);
        let router = self.router.clone();
        Box::pin(async move {
            let response = tower::ServiceExt::oneshot(router, request).await?;
            drop(release);
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

/// Options for the unit tests of this module and its children.
#[cfg(test)]
fn test_options() -> ConnectionOptions {
    ConnectionOptions {
        name: "test",
        http2_only: false,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        body_read_timeout: None,
        grpc: false,
        body_budget: BodyBudget::process_wide(u64::MAX),
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
