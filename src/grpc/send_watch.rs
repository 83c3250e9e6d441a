//! The send timeout of gRPC (and REST over HTTP/2) responses: a response whose
//! client has not taken more of it for `grpc_send_timeout` is reset and freed, so a
//! client that never reads holds nothing for long.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

tokio::task_local! {
    /// The send watch of the HTTP/2 stream whose task is running, set by
    /// [`SendTimeoutExecutor`] and read by [`watch_send`].
    static SEND_WATCH: Arc<SendWatch>;
}

/// When a stream's response last handed a piece to hyper that hyper has not yet
/// asked to follow with more: hyper asks only once the client's flow-control window
/// has room, so a client that never reads leaves this set.
#[derive(Debug, Default)]
struct SendWatch {
    waiting_since: parking_lot::Mutex<Option<tokio::time::Instant>>,
}

impl SendWatch {
    /// Completes once a piece has waited for the client longer than `timeout`.
    async fn stalled(&self, timeout: Duration) {
        loop {
            let since = *self.waiting_since.lock();
            match since {
                Some(t) if t.elapsed() >= timeout => return,
                Some(t) => tokio::time::sleep_until(t + timeout).await,
                None => tokio::time::sleep(timeout / 2).await,
            }
        }
    }
}

/// Runs each HTTP/2 stream (hyper hands every stream's task to the executor) with a
/// [`SendWatch`], and drops the stream when its response has waited for the client
/// longer than `send_timeout`: dropping it resets the stream, which frees what h2
/// and the response still held of it.
#[derive(Debug, Clone, Copy)]
pub struct SendTimeoutExecutor {
    send_timeout: Duration,
}

impl SendTimeoutExecutor {
    pub fn new(send_timeout: Duration) -> SendTimeoutExecutor {
        SendTimeoutExecutor { send_timeout }
    }
}

impl<F> hyper::rt::Executor<F> for SendTimeoutExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let watch = Arc::new(SendWatch::default());
        let timeout = self.send_timeout;
        tokio::spawn(SEND_WATCH.scope(watch.clone(), async move {
            tokio::select! {
                () = stream => {}
                () = watch.stalled(timeout) => {
                    tracing::debug!(
                        "gRPC response not read by its client within {timeout:?}; stream reset"
                    );
                }
            }
        }));
    }
}

/// Gives every response body the watch of its stream (outside
/// [`SendTimeoutExecutor`], e.g. in tests through `routes` or on HTTP/1, bodies go
/// unwatched). The REST router has it too, for REST over HTTP/2.
pub(crate) async fn watch_send(response: axum::response::Response) -> axum::response::Response {
    match SEND_WATCH.try_with(Arc::clone) {
        Ok(watch) => response.map(|body| axum::body::Body::new(WatchedBody::new(body, watch))),
        Err(_) => response,
    }
}

/// The most bytes of a response handed to hyper at once. hyper passes a piece to
/// h2 as soon as the stream has any send capacity, and h2 keeps what the client's
/// window does not take; small pieces keep that to about one window per stream and
/// make a stalled client visible to the [`SendWatch`].
const SEND_PIECE: usize = 16 * 1024;

/// A response body that hands its data to hyper in [`SEND_PIECE`]s and records in
/// its [`SendWatch`] when a piece waits for the client.
struct WatchedBody {
    inner: axum::body::Body,
    rest: bytes::Bytes,
    watch: Arc<SendWatch>,
}

impl WatchedBody {
    fn new(inner: axum::body::Body, watch: Arc<SendWatch>) -> Self {
        WatchedBody {
            inner,
            rest: bytes::Bytes::new(),
            watch,
        }
    }

    fn piece(&mut self) -> http_body::Frame<bytes::Bytes> {
        let n = self.rest.len().min(SEND_PIECE);
        *self.watch.waiting_since.lock() = Some(tokio::time::Instant::now());
        http_body::Frame::data(self.rest.split_to(n))
    }
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        // hyper asks for more: the previous piece went to h2.
        *self.watch.waiting_since.lock() = None;
        if !self.rest.is_empty() {
            return Poll::Ready(Some(Ok(self.piece())));
        }
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    self.rest = data;
                    Poll::Ready(Some(Ok(self.piece())))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = http_body::SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint.set_lower(inner.lower().saturating_add(rest));
        hint
    }
}
