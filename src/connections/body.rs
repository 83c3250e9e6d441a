//! Request bodies with a read timeout, which tell their connection while they wait
//! for the client (see the parent module).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;

use super::ConnectionActivity;

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
    activity: Arc<ConnectionActivity>,
}

impl ReadTimeoutBody {
    pub fn new(
        inner: Incoming,
        timeout: Duration,
        activity: Arc<ConnectionActivity>,
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
            self.activity.body_resumes();
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
                    this.activity.body_waits();
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
