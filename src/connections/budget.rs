//! The server-wide budget of request-body bytes held at once.
//!
//! Each body has its own limit (`max_request_bytes`, `grpc_max_receive_bytes`), but
//! nothing else would bound their sum: one HTTP/2 connection may have hundreds of
//! streams open, each receiving a body up to its limit for as long as the body read
//! timeout allows, and so may every connection. So every body the listeners
//! receive is charged, as its bytes arrive, to one process-wide counter
//! ([`BodyBudget`]), and a frame that would take the counter past
//! `max_inflight_body_bytes` fails its body with [`BodyBudgetExceeded`] (REST: 503,
//! gRPC: RESOURCE_EXHAUSTED). The charge is the request's ([`RequestCharge`]), and
//! is given back when the request is over (its answer made, or its future dropped),
//! not when its body is dropped: a handler holds the bytes it read until it ends.
//!
//! Small bodies cost nothing: a body declared at most [`UNCHARGED_BODY_BYTES`] long
//! is not watched at all, and any other is charged only once it has brought more
//! than that (then for all its bytes), so the one-row predict pays no atomic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bodies up to this many bytes are never charged: what they hold is small next to
/// the connection's own buffers, and skipping them keeps the counter off the hot
/// path. At most this much per request escapes the budget.
pub const UNCHARGED_BODY_BYTES: u64 = 64 * 1024;

/// The body bytes held by requests being received, in the whole process: the REST
/// and gRPC listeners share it, as they share the memory.
static HELD: AtomicU64 = AtomicU64::new(0);

/// A budget of body bytes held at once: a counter and its limit.
#[derive(Debug, Clone, Copy)]
pub struct BodyBudget {
    held: &'static AtomicU64,
    limit: u64,
}

/// Why a request body failed: taking its next bytes would have put the bytes held
/// by all request bodies past the budget. The REST adapters answer 503
/// ([`is_body_budget_exceeded`]); a gRPC call ends with RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the server is receiving too many large request bodies at once ({held} bytes held, \
     limit {limit} set by --max-inflight-body-bytes); try again"
)]
pub struct BodyBudgetExceeded {
    /// Bytes held by all bodies when this one was refused (its own included).
    pub held: u64,
    pub limit: u64,
}

/// Whether `error` or one of its sources is a [`BodyBudgetExceeded`].
pub fn is_body_budget_exceeded(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut error = Some(error);
    while let Some(e) = error {
        if e.is::<BodyBudgetExceeded>() {
            return true;
        }
        error = e.source();
    }
    false
}

impl BodyBudget {
    /// The process-wide budget, of `limit` bytes.
    pub fn process_wide(limit: u64) -> BodyBudget {
        BodyBudget { held: &HELD, limit }
    }

    /// A budget of its own, for tests that must not share the process's counter.
    #[cfg(test)]
    pub(crate) fn isolated(limit: u64) -> BodyBudget {
        BodyBudget {
            held: Box::leak(Box::new(AtomicU64::new(0))),
            limit,
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes from the budget, or refuses them when they do not fit.
    fn take(&self, n: u64) -> Result<(), BodyBudgetExceeded> {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(n).filter(|&after| after <= self.limit)
            })
            .map(drop)
            .map_err(|held| BodyBudgetExceeded {
                held,
                limit: self.limit,
            })
    }

    fn give_back(&self, n: u64) {
        if n > 0 {
            self.held.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// The charge of a request whose body's size is `declared` at most (its
    /// `Content-Length`, which hyper holds the body to); `None` when that is small
    /// enough never to be charged.
    pub fn request(&self, declared: Option<u64>) -> Option<Arc<RequestCharge>> {
        if declared.is_some_and(|n| n <= UNCHARGED_BODY_BYTES) {
            return None;
        }
        Some(Arc::new(RequestCharge {
            budget: *self,
            charged: AtomicU64::new(0),
        }))
    }
}

/// Set in [`RequestCharge::charged`] once the request is over: bytes its body
/// brings later are not charged (the request's handler is gone).
const CLOSED: u64 = 1 << 63;

/// One request's charge: its body adds to it as bytes arrive ([`Self::charge`]),
/// its service future gives it all back when the request is over
/// ([`RequestChargeRelease`]). Shared because the body may outlive the future (a
/// task it spawned) or the future the body (a handler that read it all).
#[derive(Debug)]
pub struct RequestCharge {
    budget: BodyBudget,
    /// Bytes this request took from the budget, with [`CLOSED`] once it is over.
    /// The budget is always taken before this counts the bytes, and given back
    /// after: the budget's count is never less than the sum of its charges.
    charged: AtomicU64,
}

impl RequestCharge {
    /// Charges `n` more bytes of the body, or refuses them.
    pub fn charge(&self, n: u64) -> Result<(), BodyBudgetExceeded> {
        self.budget.take(n)?;
        let counted = self
            .charged
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c & CLOSED == 0).then_some(c + n)
            });
        if counted.is_err() {
            // The request ended meanwhile: nothing will give these back.
            self.budget.give_back(n);
        }
        Ok(())
    }

    /// Gives back everything charged, and charges nothing more.
    fn release(&self) {
        let charged = self.charged.swap(CLOSED, Ordering::Relaxed);
        self.budget.give_back(charged & !CLOSED);
    }
}

/// Gives a request's charge back when dropped: held by the request's service
/// future, so the charge lasts until the answer is made or the request abandoned.
pub struct RequestChargeRelease(pub Option<Arc<RequestCharge>>);

impl Drop for RequestChargeRelease {
    fn drop(&mut self) {
        if let Some(charge) = &self.0 {
            charge.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_refused_past_the_limit_and_given_back_at_the_end() {
        let budget = BodyBudget::isolated(1000);
        assert!(budget.request(Some(UNCHARGED_BODY_BYTES)).is_none());
        let a = budget.request(None).unwrap();
        let b = budget.request(Some(UNCHARGED_BODY_BYTES + 1)).unwrap();
        a.charge(600).unwrap();
        let refused = b.charge(500).unwrap_err();
        assert_eq!((refused.held, refused.limit), (600, 1000));
        assert!(refused.to_string().contains("600 bytes held, limit 1000"));
        b.charge(400).unwrap();
        assert_eq!(budget.held(), 1000);
        drop(RequestChargeRelease(Some(a.clone())));
        assert_eq!(budget.held(), 400);
        // Bytes that arrive after the request ended are not kept.
        a.charge(100).unwrap();
        assert_eq!(budget.held(), 400);
        drop(RequestChargeRelease(Some(b)));
        assert_eq!(budget.held(), 0);
    }
}
