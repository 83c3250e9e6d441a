//! Request bodies with a read timeout and a minimum rate, which tell their connection
//! while they wait for the client (see the parent module).
//!
//! Two rules, both counted only over the time the request's handler waits for bytes
//! the client has not sent (a handler that is busy, or a server that is slow to read,
//! never counts against the client):
//! * **silence**: one wait longer than the body read timeout fails the body
//!   ([`BodyReadTimeout::Stopped`]);
//! * **minimum rate**: all the waits together may last the body read timeout plus
//!   one second per [`MIN_BODY_BYTES_PER_SEC`] bytes received, no more
//!   ([`BodyReadTimeout::TooSlow`]). A client that sends a byte now and then, each
//!   well within the read timeout, would otherwise hold its request (and its
//!   connection) open for as long as it likes. Apache's `mod_reqtimeout` has the same
//!   rule (`body=20,MinRate=500`).
//!
//! At the connection limit a tighter form of the rate rule (a grace of
//! [`EVICT_STALLED_BODY_AFTER`] instead of the read timeout) makes a connection whose
//! every request waits for such a slow body one the limit may close to make room;
//! the body tells its connection when that happens ([`ConnectionActivity::body_waits`]).
//!
//! The body is also where a request's bytes are charged to the server-wide budget
//! of body bytes held ([`super::budget`]): a frame that does not fit fails the body
//! with [`BodyBudgetExceeded`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::budget::{BodyBudgetExceeded, RequestCharge, UNCHARGED_BODY_BYTES};
use super::{ConnectionActivity, EVICT_STALLED_BODY_AFTER};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The least average rate, in bytes per second of waiting, a request body must keep
/// up once its grace (the body read timeout; [`EVICT_STALLED_BODY_AFTER`] at the
/// connection limit) is spent. Apache's `mod_reqtimeout` default (`MinRate=500`):
/// 4 kbit/s, a tenth of the slowest mobile data links still in use (GPRS, 40 kbit/s),
/// so a real upload of any size is never cut, while a client that trickles a byte a
/// second is. Only the average counts: a TCP retransmission's pause of a second
/// costs a body nothing once it has sent 500 bytes (or within its grace), and a 1 GiB
/// upload over a 1 Mbit/s link, 2.4 hours long, has 25 days of allowance.
pub const MIN_BODY_BYTES_PER_SEC: u64 = 500;

/// How long waits of `received` bytes may last in all: `grace`, plus a second per
/// [`MIN_BODY_BYTES_PER_SEC`] bytes.
fn body_allowance(grace: Duration, received: u64) -> Duration {
    grace.saturating_add(Duration::from_millis(
        received.saturating_mul(1000) / MIN_BODY_BYTES_PER_SEC,
    ))
}

/// Why a request body failed for its client's slowness; the REST adapters answer it
/// with 408 ([`is_body_read_timeout`]), a gRPC call ends with DEADLINE_EXCEEDED.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyReadTimeout {
    /// Nothing arrived for the body read timeout.
    #[error("the request body stopped arriving for {0:?}")]
    Stopped(Duration),
    /// Bytes kept arriving, but slower than [`MIN_BODY_BYTES_PER_SEC`] on average.
    #[error(
        "the request body arrived too slowly: {received} bytes in {:.1}s of waiting, \
         less than the minimum of {MIN_BODY_BYTES_PER_SEC} bytes/s after the first {timeout:?}",
        .waited.as_secs_f64()
    )]
    TooSlow {
        received: u64,
        waited: Duration,
        /// The body read timeout: the grace before the rate counts.
        timeout: Duration,
    },
}

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

/// A request body that fails with [`BodyReadTimeout`] when its client stops sending
/// for `timeout`, or sends slower than [`MIN_BODY_BYTES_PER_SEC`] past it (see the
/// module comment), and tells its connection's activity while it waits for the
/// client.
pub struct ReadTimeoutBody<B = Incoming> {
    inner: B,
    timeout: Duration,
    /// A gRPC call's message: the error is a `tonic::Status` (DEADLINE_EXCEEDED, as
    /// `ApiError::RequestTimeout` is) with the [`BodyReadTimeout`] as its source;
    /// tonic would call any other error UNKNOWN.
    grpc: bool,
    /// Body bytes received so far.
    received: u64,
    /// How long the earlier waits for the client lasted, together.
    waited: Duration,
    /// The wait in progress, while a read waits for the client.
    wait: Option<Wait>,
    /// Once failed, every read that would wait fails at once.
    failed: Option<BodyReadTimeout>,
    activity: Arc<ConnectionActivity>,
    /// The request's charge against the body budget; `None` for a body declared
    /// small enough never to be charged.
    charge: Option<Arc<RequestCharge>>,
    /// Bytes of `received` charged so far: none until the body passes
    /// [`UNCHARGED_BODY_BYTES`], then all of them.
    charged: u64,
    /// Once refused by the budget, every read fails at once.
    over_budget: Option<BodyBudgetExceeded>,
}

/// A read waiting for the client.
struct Wait {
    since: Instant,
    /// The earlier of the two rules' deadlines.
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<B> ReadTimeoutBody<B> {
    pub fn new(
        inner: B,
        timeout: Duration,
        grpc: bool,
        activity: Arc<ConnectionActivity>,
        charge: Option<Arc<RequestCharge>>,
    ) -> ReadTimeoutBody<B> {
        ReadTimeoutBody {
            inner,
            timeout,
            grpc,
            received: 0,
            waited: Duration::ZERO,
            wait: None,
            failed: None,
            activity,
            charge,
            charged: 0,
            over_budget: None,
        }
    }

    /// Counts `n` more bytes received, and charges them to the budget once the
    /// body is past [`UNCHARGED_BODY_BYTES`].
    fn receive(&mut self, n: u64) -> Result<(), BodyBudgetExceeded> {
        self.received = self.received.saturating_add(n);
        let Some(charge) = &self.charge else {
            return Ok(());
        };
        if self.received <= UNCHARGED_BODY_BYTES {
            return Ok(());
        }
        let due = self.received - self.charged;
        charge.charge(due)?;
        self.charged = self.received;
        Ok(())
    }

    /// Starts a wait for the client at `now`.
    fn begin_wait(&mut self, now: Instant) -> &mut Wait {
        // What this wait may last before the rate rule fails it (`waited` never
        // exceeds the allowance: see `end_wait`), and before the limit may close the
        // connection for it.
        let rate_left = body_allowance(self.timeout, self.received).saturating_sub(self.waited);
        let pressure_left =
            body_allowance(EVICT_STALLED_BODY_AFTER, self.received).saturating_sub(self.waited);
        self.activity.body_waits(now + pressure_left);
        let deadline = now + self.timeout.min(rate_left);
        self.wait.insert(Wait {
            since: now,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        })
    }

    /// Ends the wait in progress, if any: the read no longer waits for the client.
    fn end_wait(&mut self, now: Instant) {
        if let Some(wait) = self.wait.take() {
            // At most the allowance: a wait that outlasted it yet ended with bytes
            // was one whose task ran late (the timer had not been seen); the client
            // is not blamed for the server's delay.
            self.waited = (self.waited + now.saturating_duration_since(wait.since))
                .min(body_allowance(self.timeout, self.received));
            self.activity.body_resumes();
        }
    }

    /// Which rule failed the wait that began at `since`, at `now`.
    fn failure(&self, since: Instant, now: Instant) -> BodyReadTimeout {
        let this_wait = now.saturating_duration_since(since);
        if this_wait >= self.timeout {
            BodyReadTimeout::Stopped(self.timeout)
        } else {
            BodyReadTimeout::TooSlow {
                received: self.received,
                waited: self.waited + this_wait,
                timeout: self.timeout,
            }
        }
    }

    fn error(&self, failure: BodyReadTimeout) -> BoxError {
        if self.grpc {
            let mut status = tonic::Status::deadline_exceeded(failure.to_string());
            status.set_source(Arc::new(failure));
            Box::new(status)
        } else {
            Box::new(failure)
        }
    }

    /// A gRPC call's refusal is a `tonic::Status` (RESOURCE_EXHAUSTED) with the
    /// [`BodyBudgetExceeded`] as its source, since tonic calls any other body error
    /// UNKNOWN.
    fn budget_error(&self, refusal: BodyBudgetExceeded) -> BoxError {
        if self.grpc {
            let mut status = tonic::Status::resource_exhausted(refusal.to_string());
            status.set_source(Arc::new(refusal));
            Box::new(status)
        } else {
            Box::new(refusal)
        }
    }
}

impl<B> Drop for ReadTimeoutBody<B> {
    fn drop(&mut self) {
        if self.wait.take().is_some() {
            self.activity.body_resumes();
        }
    }
}

impl<B> http_body::Body for ReadTimeoutBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(refusal) = &this.over_budget {
            return Poll::Ready(Some(Err(this.budget_error(refusal.clone()))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.end_wait(Instant::now());
                if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
                    if let Err(refusal) = this.receive(data.len() as u64) {
                        // The frame is dropped here: its bytes were never held.
                        this.over_budget = Some(refusal.clone());
                        return Poll::Ready(Some(Err(this.budget_error(refusal))));
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if let Some(failure) = &this.failed {
                    return Poll::Ready(Some(Err(this.error(failure.clone()))));
                }
                let now = Instant::now();
                let wait = match &mut this.wait {
                    Some(wait) => wait,
                    None => this.begin_wait(now),
                };
                match wait.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let since = wait.since;
                        let failure = this.failure(since, now);
                        this.end_wait(now);
                        this.failed = Some(failure.clone());
                        Poll::Ready(Some(Err(this.error(failure))))
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
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    use super::*;

    /// A body whose chunks a test sends.
    struct ChannelBody(mpsc::Receiver<Bytes>);

    impl http_body::Body for ChannelBody {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// A watched body whose client sends `chunks`, each after its pause; then the
    /// body ends. What reading it to the end gave, and when (after the start).
    async fn read_body(
        chunks: Vec<(Duration, Bytes)>,
        grpc: bool,
    ) -> (Result<u64, BoxError>, Duration, Arc<ConnectionActivity>) {
        let (tx, rx) = mpsc::channel(1);
        let client = tokio::spawn(async move {
            for (pause, chunk) in chunks {
                tokio::time::sleep(pause).await;
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        let activity = Arc::new(ConnectionActivity::new());
        activity.request_begins(false);
        let mut body = ReadTimeoutBody::new(ChannelBody(rx), TIMEOUT, grpc, activity.clone(), None);
        let started = Instant::now();
        let mut received = 0;
        let result = loop {
            match body.frame().await {
                None => break Ok(received),
                Some(Ok(frame)) => received += frame.into_data().map_or(0, |d| d.len() as u64),
                Some(Err(e)) => break Err(e),
            }
        };
        client.abort();
        (result, started.elapsed(), activity)
    }

    fn trickle(n: usize, every: Duration) -> Vec<(Duration, Bytes)> {
        vec![(every, Bytes::from_static(b"x")); n]
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_fails_once_it_falls_behind_the_minimum_rate() {
        // A byte every 400 ms for 100 s: never silent for the read timeout.
        let (result, took, _) = read_body(trickle(250, Duration::from_millis(400)), false).await;
        let error = result.expect_err("a trickled body was read to its end");
        assert!(is_body_read_timeout(&*error), "{error}");
        assert!(
            matches!(
                error.downcast_ref::<BodyReadTimeout>(),
                Some(BodyReadTimeout::TooSlow { .. })
            ),
            "{error}"
        );
        assert!(error.to_string().contains("too slowly"), "{error}");
        // The read timeout, plus 2 ms for each of the 75 bytes then received.
        assert!(
            took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(1),
            "{took:?}"
        );

        // gRPC: DEADLINE_EXCEEDED, still told as a body read timeout.
        let (result, _, _) = read_body(trickle(250, Duration::from_millis(400)), true).await;
        let error = result.expect_err("a trickled message was read to its end");
        let status = error.downcast_ref::<tonic::Status>().expect("a status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert!(status.message().contains("too slowly"), "{status:?}");
        assert!(is_body_read_timeout(&*error));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_fails_after_the_read_timeout() {
        let chunks = vec![(Duration::ZERO, Bytes::from_static(b"{\"instances\":"))];
        let mut chunks = chunks;
        // Then nothing for longer than the timeout.
        chunks.push((2 * TIMEOUT, Bytes::from_static(b"[]}")));
        for grpc in [false, true] {
            let (result, took, _) = read_body(chunks.clone(), grpc).await;
            let error = result.expect_err("a stalled body was read to its end");
            assert!(
                error.to_string().contains("stopped arriving for 30s"),
                "{error}"
            );
            assert!(is_body_read_timeout(&*error));
            assert_eq!(took, TIMEOUT);
            if grpc {
                let status = error.downcast_ref::<tonic::Status>().expect("a status");
                assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_but_real_uploads_are_read_to_their_end() {
        // Ten pieces 50 ms apart.
        let (result, _, _) = read_body(trickle(10, Duration::from_millis(50)), false).await;
        assert_eq!(result.unwrap(), 10);

        // 1 GiB over a 1 Mbit/s link (64 KiB every 0.5 s), with a TCP
        // retransmission's pause of a second every 100 pieces and one pause of
        // nearly the read timeout.
        let piece = Bytes::from(vec![0u8; 64 * 1024]);
        let mut chunks: Vec<_> = (0..16 * 1024)
            .map(|i| {
                let pause = if i % 100 == 99 { 1500 } else { 500 };
                (Duration::from_millis(pause), piece.clone())
            })
            .collect();
        chunks[8000].0 = TIMEOUT - Duration::from_secs(1);
        let (result, took, _) = read_body(chunks, false).await;
        assert_eq!(result.unwrap(), 1 << 30);
        assert!(took > Duration::from_secs(2 * 3600), "{took:?}");

        // Nothing for most of the read timeout, then a small body at once.
        let chunks = vec![(TIMEOUT - Duration::from_secs(1), Bytes::from_static(b"{}"))];
        let (result, _, _) = read_body(chunks, false).await;
        assert_eq!(result.unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_tells_the_connection_limit_it_is_behind() {
        let (tx, rx) = mpsc::channel(1);
        let activity = Arc::new(ConnectionActivity::new());
        activity.request_begins(false);
        let mut body =
            ReadTimeoutBody::new(ChannelBody(rx), TIMEOUT, false, activity.clone(), None);
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
        // A byte every 400 ms; the connection reads it before the body takes it.
        for i in 0..5 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            activity.bytes_read(b"x");
            tx.send(Bytes::from_static(b"x")).await.unwrap();
            tokio::task::yield_now().await;
            let behind = i >= 2;
            assert_eq!(
                activity.evict_if_idle(),
                behind,
                "after {} ms",
                400 * (i + 1)
            );
            if behind {
                break;
            }
        }
        reader.abort();
    }

    /// A body refused by the budget mid-way fails with the budget's error (REST) or
    /// RESOURCE_EXHAUSTED (gRPC), keeps failing, and its request's charge is given
    /// back when the request ends.
    #[tokio::test]
    async fn a_body_past_the_budget_fails_and_its_charge_is_given_back() {
        use super::super::budget::{is_body_budget_exceeded, BodyBudget, RequestChargeRelease};
        let budget = BodyBudget::isolated(100_000);
        for grpc in [false, true] {
            let (tx, rx) = mpsc::channel(4);
            let activity = Arc::new(ConnectionActivity::new());
            activity.request_begins(false);
            let charge = budget.request(None);
            let release = RequestChargeRelease(charge.clone());
            let mut body =
                ReadTimeoutBody::new(ChannelBody(rx), TIMEOUT, grpc, activity.clone(), charge);
            let piece = Bytes::from(vec![0u8; 40_000]);
            for _ in 0..3 {
                tx.send(piece.clone()).await.unwrap();
            }
            // 40 kB: under the uncharged bytes; 80 kB: all charged.
            for _ in 0..2 {
                body.frame().await.unwrap().unwrap();
            }
            assert_eq!(budget.held(), 80_000);
            let error = body.frame().await.unwrap().unwrap_err();
            assert!(is_body_budget_exceeded(&*error), "{error}");
            assert!(
                error
                    .to_string()
                    .contains("80000 bytes held, limit 100000 set by --max-inflight-body-bytes"),
                "{error}"
            );
            if grpc {
                let status = error.downcast_ref::<tonic::Status>().expect("a status");
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            }
            assert!(body.frame().await.unwrap().is_err(), "refused once, always");
            drop(body);
            assert_eq!(budget.held(), 80_000, "held until the request ends");
            drop(release);
            assert_eq!(budget.held(), 0);
        }
    }
}
