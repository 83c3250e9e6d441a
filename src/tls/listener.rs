//! The listening sockets of both servers, plain TCP or TLS.
//!
//! With TLS a background task accepts TCP connections and runs each handshake in its
//! own task under a deadline, so a client that stalls its handshake never holds up
//! another client's; finished connections reach the accept loop
//! (`crate::connections::serve`) through a bounded channel. With a connection limit a
//! permit is taken before each TCP accept, so handshakes count as connections.
//!
//! A handshake that has not finished within
//! [`EVICT_HANDSHAKE_AFTER`](crate::connections::EVICT_HANDSHAKE_AFTER) may be closed
//! to make room, like an idle connection: by the connection limit (each handshake's
//! [`ConnectionActivity`] is watched by it) and by the cap of [`MAX_HANDSHAKES`]
//! (the oldest first), so clients that connect and send nothing lock no one out.
//!
//! Invariants:
//! * no handshake runs on the accept loop, and none outlives [`HANDSHAKE_TIMEOUT`];
//! * at most [`MAX_HANDSHAKES`] handshakes are in progress per listener, not counting
//!   those asked to close to make room (they end when their task next runs); at the
//!   cap the listener stops accepting only while none has taken
//!   [`EVICT_HANDSHAKE_AFTER`](crate::connections::EVICT_HANDSHAKE_AFTER).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use super::{Protocol, Tls, HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};
use crate::connections::{ConnectionActivity, ConnectionLimit, ConnectionPermit};

/// How often a listener at [`MAX_HANDSHAKES`] looks again for a handshake to close
/// when none had taken long enough (and none ended meanwhile).
const HANDSHAKE_CAP_RETRY: Duration = Duration::from_millis(50);

/// Connections whose handshake finished but that the accept loop has not taken yet.
const READY_CONNECTIONS: usize = 64;

/// A connection of either kind of listener.
pub type ServerStream = Either<TcpStream, TlsStream<TcpStream>>;

/// A listening socket, plain or TLS. Accepted connections have TCP_NODELAY set:
/// small unary messages must not wait for Nagle's algorithm.
pub enum ServerListener {
    Plain(TcpListener, Option<Arc<ConnectionLimit>>),
    Tls(TlsListener),
}

impl ServerListener {
    /// Plain TCP when `tls` is `None`, with no connection limit. Must be called inside
    /// a tokio runtime (the TLS listener spawns its accept task here).
    pub fn new(tcp: TcpListener, tls: Option<(Arc<Tls>, Protocol)>) -> ServerListener {
        ServerListener::limited(tcp, tls, None)
    }

    /// Like [`ServerListener::new`], taking a permit of `limit` before each accept
    /// (before each TLS handshake, with TLS), so that connections at the limit wait
    /// in the listen backlog.
    pub fn limited(
        tcp: TcpListener,
        tls: Option<(Arc<Tls>, Protocol)>,
        limit: Option<Arc<ConnectionLimit>>,
    ) -> ServerListener {
        match tls {
            None => ServerListener::Plain(tcp, limit),
            Some((tls, protocol)) => {
                ServerListener::Tls(TlsListener::new(tcp, tls, protocol, limit))
            }
        }
    }

    /// The next connection and the permit it holds for as long as it is open (`None`
    /// without a limit).
    pub async fn accept_limited(&mut self) -> (ServerStream, SocketAddr, Option<ConnectionPermit>) {
        match self {
            ServerListener::Plain(tcp, limit) => {
                let (stream, peer, permit) = accept(tcp, limit.as_ref()).await;
                set_nodelay(&stream);
                (Either::Left(stream), peer, permit)
            }
            ServerListener::Tls(tls) => {
                let (stream, peer, permit) = tls.accept().await;
                (Either::Right(stream), peer, permit)
            }
        }
    }
}

fn set_nodelay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
}

impl axum::serve::Listener for ServerListener {
    type Io = ServerStream;
    type Addr = SocketAddr;

    /// For `axum::serve` (tests): a permit, if any, is released at once.
    async fn accept(&mut self) -> (ServerStream, SocketAddr) {
        let (stream, peer, _permit) = self.accept_limited().await;
        (stream, peer)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            ServerListener::Plain(tcp, _) => tcp.local_addr(),
            ServerListener::Tls(tls) => Ok(tls.local_addr),
        }
    }
}

/// TLS connections whose handshake has finished, fed by a task that owns the socket.
/// Dropping the listener (at shutdown) ends that task and every handshake in progress.
pub struct TlsListener {
    ready: mpsc::Receiver<ReadyConnection>,
    local_addr: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

/// A connection whose handshake finished, with its permit of the connection limit.
type ReadyConnection = (TlsStream<TcpStream>, SocketAddr, Option<ConnectionPermit>);

impl TlsListener {
    fn new(
        tcp: TcpListener,
        tls: Arc<Tls>,
        protocol: Protocol,
        limit: Option<Arc<ConnectionLimit>>,
    ) -> TlsListener {
        let local_addr = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(READY_CONNECTIONS);
        let accept_task = tokio::spawn(accept_loop(tcp, tls, protocol, limit, tx));
        TlsListener {
            ready,
            local_addr,
            accept_task,
        }
    }

    async fn accept(&mut self) -> ReadyConnection {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended, which it does only when the listener is dropped
            // or it panicked; accept nothing more rather than spin.
            None => std::future::pending().await,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// The next TCP connection, after a permit of `limit` when there is one.
async fn accept(
    tcp: &mut TcpListener,
    limit: Option<&Arc<ConnectionLimit>>,
) -> (TcpStream, SocketAddr, Option<ConnectionPermit>) {
    let permit = match limit {
        Some(limit) => Some(limit.acquire().await),
        None => None,
    };
    // axum's accept logs and retries errors (backing off on EMFILE).
    let (stream, peer) = axum::serve::Listener::accept(tcp).await;
    (stream, peer, permit)
}

/// The handshakes in progress on one listener, oldest first, for the cap of
/// [`MAX_HANDSHAKES`] to close the oldest stalled one. Weak references: each
/// handshake's task owns its activity, so an entry whose handshake ended is dead.
#[derive(Default)]
struct HandshakesInProgress {
    oldest_first: VecDeque<Weak<ConnectionActivity>>,
}

impl HandshakesInProgress {
    fn push(&mut self, activity: &Arc<ConnectionActivity>, in_progress: usize) {
        self.drop_ended();
        // Handshakes end in about the order they begin (each within the handshake
        // timeout), so dropping dead entries at the front keeps the list short; a
        // purge bounds it when one old handshake holds the front.
        if self.oldest_first.len() >= 2 * in_progress + 64 {
            self.oldest_first.retain(|w| w.strong_count() > 0);
        }
        self.oldest_first.push_back(Arc::downgrade(activity));
    }

    fn drop_ended(&mut self) {
        while self
            .oldest_first
            .front()
            .is_some_and(|w| w.strong_count() == 0)
        {
            self.oldest_first.pop_front();
        }
    }

    /// At the cap: asks the oldest handshake to close if it has taken
    /// `EVICT_HANDSHAKE_AFTER` (or was asked already, by the connection limit);
    /// whether there is room for one more connection.
    fn make_room(&mut self) -> bool {
        self.drop_ended();
        let Some(oldest) = self.oldest_first.front().and_then(Weak::upgrade) else {
            // None left in progress: the count that reached the cap is out of date.
            return true;
        };
        if !oldest.evict_if_stalled_handshake() {
            return false;
        }
        tracing::debug!(
            max_handshakes = MAX_HANDSHAKES,
            "TLS handshakes at their cap; the oldest, stalled, is closed to make room"
        );
        self.oldest_first.pop_front();
        true
    }
}

/// Accepts TCP connections and spawns one handshake task each (at most
/// [`MAX_HANDSHAKES`] at once, see [`HandshakesInProgress::make_room`]), until the
/// listener is dropped. The `JoinSet` owns the handshake tasks, so they end with
/// this task.
async fn accept_loop(
    mut tcp: TcpListener,
    tls: Arc<Tls>,
    protocol: Protocol,
    limit: Option<Arc<ConnectionLimit>>,
    ready: mpsc::Sender<ReadyConnection>,
) {
    let mut handshakes = JoinSet::new();
    let mut in_progress = HandshakesInProgress::default();
    loop {
        // Asks at most one handshake to close per turn: the next turn comes when a
        // connection is accepted or a handshake ends.
        let room = handshakes.len() < MAX_HANDSHAKES || in_progress.make_room();
        tokio::select! {
            _ = ready.closed() => return,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            () = tokio::time::sleep(HANDSHAKE_CAP_RETRY), if !room => {}
            // The permit is taken before the accept, so that at the limit connections
            // wait in the backlog rather than in handshakes; cancel-safe like the accept.
            (stream, peer, permit) = accept(&mut tcp, limit.as_ref()), if room => {
                set_nodelay(&stream);
                let acceptor = tls.acceptor(protocol);
                let ready = ready.clone();
                // The handshake's place may be taken for a new connection once it has
                // taken too long: by the connection limit, which watches it like a
                // connection, or by the cap above.
                let activity = Arc::new(ConnectionActivity::handshake());
                if let Some(permit) = &permit {
                    permit.watch(&activity);
                }
                in_progress.push(&activity, handshakes.len());
                handshakes.spawn(async move {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let outcome = tokio::select! {
                        // A handshake that finished is kept, even if chosen to close.
                        biased;
                        outcome = handshake => Some(outcome),
                        () = activity.evicted() => None,
                    };
                    // Before waiting for the accept loop: a finished handshake is no
                    // longer one the limit may close (the connection's own activity
                    // replaces it there).
                    drop(activity);
                    match outcome {
                        Some(Ok(Ok(stream))) => {
                            let _ = ready.send((stream, peer, permit)).await;
                        }
                        // Scanners and plain-HTTP clients fail here all the time: debug.
                        Some(Ok(Err(e))) => tracing::debug!(%peer, ?protocol, "TLS handshake failed: {e}"),
                        Some(Err(_)) => tracing::debug!(%peer, ?protocol, "TLS handshake timed out"),
                        None => tracing::debug!(
                            %peer,
                            ?protocol,
                            "unfinished TLS handshake closed to make room for a new connection"
                        ),
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `activity`'s task has been asked to close it.
    async fn asked_to_close(activity: &ConnectionActivity) -> bool {
        tokio::time::timeout(Duration::from_millis(1), activity.evicted())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_oldest_stalled_handshake_makes_room() {
        use crate::connections::EVICT_HANDSHAKE_AFTER;
        let mut in_progress = HandshakesInProgress::default();
        let oldest = Arc::new(ConnectionActivity::handshake());
        in_progress.push(&oldest, 0);
        tokio::time::advance(Duration::from_millis(100)).await;
        let newer = Arc::new(ConnectionActivity::handshake());
        in_progress.push(&newer, 1);
        assert!(!in_progress.make_room(), "none has taken long enough");
        assert!(!asked_to_close(&oldest).await);

        tokio::time::advance(EVICT_HANDSHAKE_AFTER - Duration::from_millis(100)).await;
        assert!(in_progress.make_room(), "the oldest has");
        assert!(asked_to_close(&oldest).await);
        assert!(!asked_to_close(&newer).await, "one at a time");
        drop(oldest);

        // The next is not old enough yet; then it is.
        assert!(!in_progress.make_room());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(in_progress.make_room());
        assert!(asked_to_close(&newer).await);
        drop(newer);
        assert!(in_progress.make_room(), "none left in progress");

        // Ended handshakes leave the list.
        for _ in 0..10_000 {
            in_progress.push(&Arc::new(ConnectionActivity::handshake()), 0);
        }
        let kept = Arc::new(ConnectionActivity::handshake());
        in_progress.push(&kept, 1);
        for _ in 0..10_000 {
            in_progress.push(&Arc::new(ConnectionActivity::handshake()), 1);
        }
        let entries = in_progress.oldest_first.len();
        assert!(
            entries <= 70,
            "{entries} entries for one handshake in progress"
        );
    }
}
