//! Per-version request queues and the dynamic batcher.
//!
//! Every loaded model version owns one [`BatchQueue`]: a bounded `VecDeque` of
//! waiting requests, each with a `oneshot` reply. A batch closes when it is full
//! (`max_batch_size` rows, or one of the preferred sizes), or when its oldest
//! request has waited `max_queue_delay`, and only when one of the version's
//! `instances` is free; it then runs once on the inference pool and its outputs
//! are cut back into one answer per request. Versions without batching (or whose
//! model has no batch dimension) go through the same queue one request at a time,
//! so the queue bound (overload control) and fairness apply to every model.
//!
//! Invariants:
//! * a request that finds the queue full is refused at once
//!   ([`BatchError::QueueFull`]); nothing piles up beyond `max_queue_length`;
//! * a request whose caller went away or whose deadline passed never runs: it is
//!   dropped when its batch forms and again just before the batch runs;
//! * requests are merged only when their inputs have the same names, dtypes and
//!   non-batch dimensions and they ask for the same outputs; others wait for a
//!   batch of their own, in arrival order;
//! * a version has at most `instances` batches on the pool at once, so a model
//!   waits behind at most the other models' instances: a slow model cannot
//!   starve a fast one (the pool's channel is first-in, first-out);
//! * the queue is not closed when its version is unpublished: requests already
//!   queued hold the version's handle and finish on it (unloading drains).
//!
//! The queue knows nothing of HTTP, gRPC or the manager; `api::predict` submits
//! to it and the manager creates it when a version loads.

mod queue;
mod tensors;

pub use queue::{BatchError, BatchQueue, QueuedRequest};
pub use tensors::{concat, split, stackable};
