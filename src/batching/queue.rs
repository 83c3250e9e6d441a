//! The queue of one model version and the batcher that drains it.
//!
//! There is no batcher task: whoever changes the queue (a request arriving, a
//! batch finishing on an inference thread, the delay timer firing) takes the
//! lock, forms every batch that may start now, releases the lock and hands the
//! batches to the executor. A timer task exists only while a partial batch is
//! waiting for its delay to run out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::tensors::{concat, split, stackable};
use crate::backends::{Backend, BackendError, PredictOptions};
use crate::inference::{Executor, Job};
use crate::metrics::QueueMetrics;
use crate::model_config::BatchingConfig;
use crate::tensor::{NamedTensor, Tensor};

/// How far past the front the batcher looks for requests to merge, in multiples
/// of `max_batch_size`, so forming a batch never walks a long queue.
const SCAN_FACTOR: usize = 4;

/// A prepared request: inputs named and cast as the signature says.
#[derive(Debug)]
pub struct QueuedRequest {
    pub inputs: Vec<NamedTensor>,
    /// Outputs to return, in this order; empty means every output.
    pub outputs: Vec<String>,
    /// When the caller stops waiting; the request never runs after it.
    pub deadline: Option<Instant>,
    /// The request's own options; only requests with equal options share a batch.
    pub options: PredictOptions,
    /// The model's signature to run (TF SavedModels); empty: the default one.
    pub signature: String,
    /// Whether a cheap batch holding this request may run on the thread that closes
    /// it (`inline_max_micros`). Off for batch-scoring jobs: their thread would then
    /// run the model itself, taking the CPU from the async workers for the whole job
    /// and the online requests' tail latency with it.
    pub may_run_inline: bool,
}

/// Why a queued request got no outputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error(
        "model {model:?} version {version} is overloaded: {queued} requests are already \
         waiting (max_queue_length); retry later"
    )]
    QueueFull {
        model: String,
        version: u64,
        queued: usize,
    },
    #[error("the deadline passed before the request could run")]
    DeadlineExceeded,
    #[error("the inference pool is shut down")]
    ShutDown,
    /// The model refused the inputs (`BackendError::InvalidInput`).
    #[error("{0}")]
    InvalidInput(String),
    /// The model failed, or gave outputs that do not fit the batch.
    #[error("{0}")]
    Internal(String),
    /// The runtime could not allocate the memory the batch needs.
    #[error("{0}")]
    OutOfMemory(String),
}

impl From<BackendError> for BatchError {
    fn from(e: BackendError) -> BatchError {
        match e {
            BackendError::InvalidInput(m) => BatchError::InvalidInput(m),
            e @ BackendError::OutOfMemory(_) => BatchError::OutOfMemory(e.to_string()),
            BackendError::DeadlineExceeded(_) => BatchError::DeadlineExceeded,
            e @ (BackendError::Inference(_) | BackendError::Load(_)) => {
                BatchError::Internal(e.to_string())
            }
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<NamedTensor>, BatchError>>;

struct Entry {
    inputs: Vec<NamedTensor>,
    outputs: Vec<String>,
    options: PredictOptions,
    /// Empty: the model's default signature.
    signature: String,
    may_run_inline: bool,
    /// Rows along the batch dimension; `None` when this request cannot be merged
    /// with others (batching off, or inputs that disagree on their first dimension).
    rows: Option<usize>,
    /// Rows for the run-time estimate and the batch-size metric, merged or not: the
    /// inputs' shared first dimension, else 1.
    size: usize,
    deadline: Option<Instant>,
    enqueued: Instant,
    reply: Reply,
    /// How many entries this queue took before this one: the entries stay in that
    /// order, so a caller that stops waiting finds its own by binary search.
    id: u64,
}

impl Entry {
    /// The latest this request waits for others to fill its batch: the queue's
    /// `max_delay` after it came, and never past half the time its deadline left it
    /// then, so that waiting for company never takes the time it needs to run (a
    /// `max_queue_delay_micros` longer than the model's timeout, or a client's
    /// short deadline, timed out every request that came alone).
    fn close_at(&self, max_delay: Duration) -> Instant {
        let by_delay = self.enqueued + max_delay;
        match self.deadline {
            Some(deadline) if deadline > self.enqueued => {
                by_delay.min(self.enqueued + (deadline - self.enqueued) / 2)
            }
            Some(_) => self.enqueued,
            None => by_delay,
        }
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// Whether `other` can share a run with `self`: same outputs and options asked
    /// for, and for every input a same-named one that stacks with it.
    fn merges_with(&self, other: &Entry) -> bool {
        self.outputs == other.outputs
            && self.options == other.options
            && self.signature == other.signature
            && self.inputs.len() == other.inputs.len()
            && self.inputs.iter().all(|(name, t)| {
                other
                    .inputs
                    .iter()
                    .any(|(n, u)| n == name && stackable(t, u))
            })
    }
}

/// The `[batching]` settings, resolved against the model's signature.
#[derive(Debug, Clone)]
struct Limits {
    /// Batching is on and the model has a batch dimension on every input and output.
    batching: bool,
    max_rows: usize,
    max_delay: Duration,
    /// Sorted, deduplicated.
    preferred: Vec<usize>,
    max_queue_length: usize,
    instances: usize,
    /// Batches expected to run faster than this run on the thread that closes them.
    inline_max: Duration,
}

/// The mutable part of a queue, behind one short-held lock.
#[derive(Default)]
struct State {
    entries: VecDeque<Entry>,
    /// Batches handed to the executor and not finished yet (at most `instances`).
    in_flight: usize,
    /// When the armed delay timer fires, if one is armed.
    timer_at: Option<Instant>,
    /// Set when the executor refused a batch (the pool is shut down).
    closed: bool,
    /// A request has yielded to let the runtime poll the other ready connections
    /// before a zero-delay batch closes; until it comes back (or is dropped), a
    /// partial batch waits. See `BatchQueue::submit`.
    flush_pending: bool,
    /// The `id` of the next entry queued.
    next_id: u64,
}

/// Batches that may start now, and when to look again if a partial batch waits.
#[derive(Default)]
struct Work {
    batches: Vec<Vec<Entry>>,
    timer: Option<Instant>,
}

/// Where batches run and where timers are spawned; learned from the first request
/// (the manager that creates queues knows neither).
struct Context {
    executor: Arc<dyn Executor>,
    runtime: tokio::runtime::Handle,
}

/// The queue of one model version. See the module docs of `crate::batching`.
pub struct BatchQueue {
    model: Arc<str>,
    version: u64,
    backend: Arc<dyn Backend>,
    limits: Limits,
    /// The model's named signatures (TF SavedModels) that batch like the default one:
    /// a batch dimension on every input and output. Requests for other signatures
    /// run alone.
    batched_signatures: Vec<String>,
    /// Held only to push, pick or pop entries; never across a model run or an await.
    state: Mutex<State>,
    context: OnceLock<Context>,
    /// Registered once here so that the request path formats no labels.
    metrics: QueueMetrics,
    /// A moving average of this version's run time per row, in nanoseconds;
    /// `u64::MAX` until a first run was timed. Decides which batches run inline.
    nanos_per_row: AtomicU64,
}

impl BatchQueue {
    pub fn new(
        model: Arc<str>,
        version: u64,
        backend: Arc<dyn Backend>,
        config: &BatchingConfig,
    ) -> BatchQueue {
        let signature = backend.signature();
        let batchable = !signature.inputs.is_empty()
            && signature.inputs.iter().all(|s| s.has_batch_dim())
            && signature.outputs.iter().all(|s| s.has_batch_dim());
        let batching = config.enabled && batchable;
        if config.enabled && !batchable {
            tracing::info!(
                model = &*model,
                version,
                "batching is enabled but the model has no batch dimension on every input and output; running request by request"
            );
        }
        let mut preferred = config.preferred_batch_sizes.clone();
        preferred.sort_unstable();
        preferred.dedup();
        let metrics = QueueMetrics::new(&model, version);
        let batched_signatures = backend
            .signatures()
            .iter()
            .filter(|s| {
                !std::ptr::eq(&s.signature, signature)
                    && !s.signature.inputs.is_empty()
                    && s.signature.inputs.iter().all(|i| i.has_batch_dim())
                    && s.signature.outputs.iter().all(|o| o.has_batch_dim())
            })
            .map(|s| s.name.clone())
            .collect();
        BatchQueue {
            batched_signatures,
            limits: Limits {
                batching,
                max_rows: if batching { config.max_batch_size } else { 1 },
                max_delay: config.max_queue_delay(),
                preferred,
                max_queue_length: config.max_queue_length,
                instances: config.instances,
                inline_max: config.inline_max(),
            },
            model,
            version,
            backend,
            state: Mutex::new(State::default()),
            context: OnceLock::new(),
            metrics,
            nanos_per_row: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether requests to this version are merged into batches.
    pub fn is_batching(&self) -> bool {
        self.limits.batching
    }

    /// This version's metrics, registered when it loaded.
    pub fn metrics(&self) -> &QueueMetrics {
        &self.metrics
    }

    /// Requests waiting (not yet handed to an inference thread).
    pub fn len(&self) -> usize {
        self.state.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a request and waits for its outputs, its deadline, or a refusal.
    /// Must be called within a Tokio runtime; the first call fixes the executor
    /// that runs this queue's batches.
    pub async fn submit<E: Executor>(
        self: &Arc<Self>,
        executor: &Arc<E>,
        request: QueuedRequest,
    ) -> Result<Vec<NamedTensor>, BatchError> {
        self.context.get_or_init(|| Context {
            executor: executor.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
        let now = Instant::now();
        // A named signature batches (with requests for the same signature only, see
        // `Entry::merges_with`) when it has a batch dimension everywhere, under the
        // same limits as the default one.
        let batched =
            request.signature.is_empty() || self.batched_signatures.contains(&request.signature);
        let size = batch_rows(&request.inputs);
        let rows = if self.limits.batching && batched {
            size
        } else {
            None
        };
        let deadline = request.deadline;
        let (reply, answer) = oneshot::channel();
        let work = {
            let mut state = self.state.lock();
            if state.closed {
                return Err(BatchError::ShutDown);
            }
            if let Some(refusal) = self.refusal(&mut state, now) {
                return Err(refusal);
            }
            let id = state.next_id;
            state.next_id += 1;
            state.entries.push_back(Entry {
                id,
                inputs: request.inputs,
                outputs: request.outputs,
                options: request.options,
                signature: request.signature,
                may_run_inline: request.may_run_inline,
                rows,
                size: size.unwrap_or(1).max(1),
                deadline,
                enqueued: now,
                reply,
            });
            // With no delay, a batch would close on the first request: on one core
            // the inference thread then preempts the async worker before it has
            // read the other connections' requests, and batches stay at one row.
            // So the first request yields once, letting the runtime poll every
            // ready connection, and the batch closes when it comes back.
            let defer = self.limits.batching
                && self.limits.max_delay.is_zero()
                && !state.flush_pending
                && state.in_flight < self.limits.instances;
            if defer {
                state.flush_pending = true;
            }
            (self.take_work(&mut state, now), defer, id)
        };
        let (work, defer, id) = work;
        // From here on, a caller that stops waiting takes its entry out.
        let mut waiting = Waiting {
            queue: self,
            id,
            answered: false,
        };
        self.start(work);
        if defer {
            // The guard flushes even if this request is dropped while yielding.
            let flush = Flush(self);
            tokio::task::yield_now().await;
            drop(flush);
        }
        let answer = async {
            let answer = answer.await.unwrap_or(Err(BatchError::ShutDown));
            // Any answer (or a dropped reply) means the entry left the queue.
            waiting.answered = true;
            answer
        };
        match deadline {
            // On timeout `waiting` takes the entry out as this returns.
            Some(d) => tokio::time::timeout_at(d, answer)
                .await
                .unwrap_or(Err(BatchError::DeadlineExceeded)),
            None => answer.await,
        }
    }

    /// The refusal a request arriving now would get, if the queue is full; counted
    /// as a rejection. Lets an adapter refuse before it reads a large body: under
    /// overload a refusal must cost much less than an answer.
    pub fn refuse_if_full(&self) -> Option<BatchError> {
        self.refusal(&mut self.state.lock(), Instant::now())
    }

    fn refusal(&self, state: &mut State, now: Instant) -> Option<BatchError> {
        if state.entries.len() < self.limits.max_queue_length {
            return None;
        }
        // Callers that left still hold places; free them before refusing.
        state.entries.retain(|e| !e.abandoned() && !e.expired(now));
        if state.entries.len() < self.limits.max_queue_length {
            return None;
        }
        self.metrics.rejected.increment(1);
        Some(BatchError::QueueFull {
            model: self.model.to_string(),
            version: self.version,
            queued: state.entries.len(),
        })
    }

    /// Forms every batch that may start now. Called with the lock held.
    fn take_work(&self, state: &mut State, now: Instant) -> Work {
        let mut work = Work::default();
        while state.in_flight < self.limits.instances && !state.closed {
            while let Some(front) = state.entries.front() {
                if front.abandoned() {
                    state.entries.pop_front();
                } else if front.expired(now) {
                    if let Some(e) = state.entries.pop_front() {
                        let _ = e.reply.send(Err(BatchError::DeadlineExceeded));
                    }
                } else {
                    break;
                }
            }
            let Some(front) = state.entries.front() else {
                break;
            };
            let pick = self.pick(&state.entries);
            // The batch closes when the first of its requests may wait no longer.
            let close_at = pick
                .indices
                .iter()
                .map(|&i| state.entries[i].close_at(self.limits.max_delay))
                .min()
                .unwrap_or_else(|| front.close_at(self.limits.max_delay));
            if !pick.ready && (now < close_at || state.flush_pending) {
                if now < close_at && state.timer_at.is_none_or(|t| close_at < t) {
                    state.timer_at = Some(close_at);
                    work.timer = Some(close_at);
                }
                break;
            }
            let batch = take_indices(&mut state.entries, &pick.indices);
            state.in_flight += 1;
            work.batches.push(batch);
        }
        self.metrics.queue_length.set(state.entries.len() as f64);
        work
    }

    /// Chooses the requests that would form the next batch, from the front.
    fn pick(&self, entries: &VecDeque<Entry>) -> Pick {
        let front = &entries[0];
        let Some(front_rows) = front.rows else {
            return Pick {
                indices: vec![0],
                ready: true,
            };
        };
        let max = self.limits.max_rows;
        let mut indices = vec![0];
        let mut cumulative = vec![front_rows];
        let mut total = front_rows;
        // A mergeable request that does not fit means the batch cannot grow.
        let mut full = total >= max;
        for (i, e) in entries.iter().enumerate().skip(1).take(max * SCAN_FACTOR) {
            if full {
                break;
            }
            let Some(rows) = e.rows else { continue };
            if e.abandoned() || !front.merges_with(e) {
                continue;
            }
            if total + rows > max {
                full = true;
                continue;
            }
            total += rows;
            indices.push(i);
            cumulative.push(total);
            full = total >= max;
        }
        let preferred = &self.limits.preferred;
        let best_preferred = cumulative
            .iter()
            .rposition(|c| preferred.binary_search(c).is_ok());
        if let Some(k) = best_preferred {
            // Cut at the largest preferred size this batch can fill.
            indices.truncate(k + 1);
        }
        Pick {
            indices,
            ready: full || best_preferred.is_some(),
        }
    }

    /// Hands batches to the executor (or runs the cheap ones here, see
    /// [`BatchQueue::runs_inline`]) and arms the delay timer. Called without the lock.
    fn start(self: &Arc<Self>, mut work: Work) {
        loop {
            if work.batches.is_empty() && work.timer.is_none() {
                return;
            }
            let Some(context) = self.context.get() else {
                return; // unreachable: work only exists after a request set the context
            };
            let mut inline = Vec::new();
            for batch in work.batches {
                if self.runs_inline(&batch) {
                    inline.push(batch);
                    continue;
                }
                let queue = self.clone();
                let job: Job = Box::new(move || {
                    queue.run_batch(batch);
                    let next = queue.finish_batch();
                    queue.start(next);
                });
                // A refused job is dropped with its entries, whose callers see ShutDown.
                if context.executor.execute(job).is_err() {
                    let mut state = self.state.lock();
                    state.in_flight -= 1;
                    state.closed = true;
                    for e in state.entries.drain(..) {
                        let _ = e.reply.send(Err(BatchError::ShutDown));
                    }
                }
            }
            if let Some(at) = work.timer {
                self.arm_timer(context, at);
            }
            if inline.is_empty() {
                return;
            }
            // Cheap batches run here, one after another; what they free may start
            // more work, handled by the next turn of the loop rather than by
            // recursion, however long the queue.
            let mut next = Work::default();
            for batch in inline {
                self.run_batch(batch);
                let more = self.finish_batch();
                next.batches.extend(more.batches);
                next.timer = match (next.timer, more.timer) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            work = next;
        }
    }

    /// Whether `batch` is expected to run faster than `inline_max`, from the moving
    /// average of this version's run time per row: then handing it to an inference
    /// thread and its answer back would cost more than the model, and it runs on
    /// the thread that closed it (an async worker, a timer, or an inference thread
    /// that just finished a batch). Until a first run was timed, nothing runs
    /// inline, and a run that turns out slow moves the next ones back to the pool.
    fn runs_inline(&self, batch: &[Entry]) -> bool {
        if self.limits.inline_max.is_zero() || !batch.iter().all(|e| e.may_run_inline) {
            return false;
        }
        let per_row = self.nanos_per_row.load(Ordering::Relaxed);
        if per_row == u64::MAX {
            return false;
        }
        let rows: usize = batch.iter().map(|e| e.size).sum();
        per_row.saturating_mul(rows as u64) < self.limits.inline_max.as_nanos() as u64
    }

    /// Folds one run's time into the per-row moving average (weight 1/8 for the
    /// newest; the first run sets it).
    fn time_run(&self, elapsed: std::time::Duration, rows: usize) {
        let per_row = (elapsed.as_nanos() / rows.max(1) as u128).min(u64::MAX as u128 - 1) as u64;
        let old = self.nanos_per_row.load(Ordering::Relaxed);
        let new = if old == u64::MAX {
            per_row
        } else {
            old - old / 8 + per_row / 8
        };
        self.nanos_per_row.store(new, Ordering::Relaxed);
    }

    /// Ends a batch: frees its instance and forms what may start next.
    fn finish_batch(&self) -> Work {
        let mut state = self.state.lock();
        state.in_flight -= 1;
        self.take_work(&mut state, Instant::now())
    }

    /// Looks at the queue again at `at`, when a partial batch's delay runs out.
    fn arm_timer(self: &Arc<Self>, context: &Context, at: Instant) {
        let queue = self.clone();
        context.runtime.spawn(async move {
            tokio::time::sleep_until(at).await;
            let work = {
                let mut state = queue.state.lock();
                if state.timer_at == Some(at) {
                    state.timer_at = None;
                }
                queue.take_work(&mut state, Instant::now())
            };
            queue.start(work);
        });
    }

    /// Runs one batch (on an inference thread, or inline when cheap) and answers its
    /// callers. The caller then frees its instance ([`BatchQueue::finish_batch`]).
    /// A panicking model answers its batch with an error instead of taking the
    /// thread, or the instance, with it.
    fn run_batch(&self, batch: Vec<Entry>) {
        let now = Instant::now();
        let live: Vec<Entry> = batch
            .into_iter()
            .filter_map(|e| {
                if e.abandoned() {
                    None
                } else if e.expired(now) {
                    let _ = e.reply.send(Err(BatchError::DeadlineExceeded));
                    None
                } else {
                    Some(e)
                }
            })
            .collect();
        if !live.is_empty() {
            let rows: usize = live.iter().map(|e| e.size).sum();
            for e in &live {
                self.metrics
                    .queue_duration
                    .record(now.duration_since(e.enqueued).as_secs_f64());
            }
            self.metrics.batch_size.record(rows as f64);
            // The latest of the requests' deadlines: past it no caller waits, and a
            // runtime that can cancel a run does (none when one request has none).
            let deadline = live
                .iter()
                .map(|e| e.deadline.map(Instant::into_std))
                .collect::<Option<Vec<_>>>()
                .and_then(|all| all.into_iter().max());
            let started = std::time::Instant::now();
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::backends::with_run_deadline(deadline, || self.run_entries(live))
            }));
            let elapsed = started.elapsed();
            if ran.is_err() {
                // The entries' replies were dropped with the panic: their callers see
                // an error. The run time is learnt again, on the pool.
                tracing::error!(
                    model = &*self.model,
                    version = self.version,
                    "the model panicked while running a batch"
                );
                self.nanos_per_row.store(u64::MAX, Ordering::Relaxed);
            } else {
                self.time_run(elapsed, rows);
            }
            let compute = elapsed.as_secs_f64();
            self.metrics.compute_duration.record(compute);
            self.metrics.inference_duration.record(compute);
        }
    }

    /// One request's run, with its own inputs.
    fn run_alone(
        &self,
        inputs: Vec<NamedTensor>,
        outputs: &[String],
        options: &PredictOptions,
        signature: &str,
    ) -> Result<Vec<NamedTensor>, BatchError> {
        if signature.is_empty() {
            self.backend.predict_with_options(inputs, outputs, options)
        } else if !options.is_empty() {
            // Named signatures are SavedModels', which take no options.
            Err(BackendError::InvalidInput(format!(
                "the parameters k and threshold apply to fastText models; this is a {} model",
                self.backend.format()
            )))
        } else {
            self.backend.predict_signature(signature, inputs, outputs)
        }
        .map_err(BatchError::from)
    }

    fn run_entries(&self, mut live: Vec<Entry>) {
        if live.len() == 1 {
            // Alone: no copy into a batch and out again.
            let e = live.pop().expect("one entry");
            let result = self.run_alone(e.inputs, &e.outputs, &e.options, &e.signature);
            let _ = e.reply.send(result);
            return;
        }
        let rows: Vec<usize> = live.iter().map(|e| e.rows.unwrap_or(1)).collect();
        let outputs_wanted = std::mem::take(&mut live[0].outputs);
        let options = live[0].options;
        let signature = std::mem::take(&mut live[0].signature);
        let names: Vec<String> = live[0].inputs.iter().map(|(n, _)| n.clone()).collect();
        // Each request keeps its inputs while the batch runs (they are copied into
        // it): if the batch fails, they run one by one, so that a request the model
        // fails on (an index out of range, a string ONNX Runtime refuses) fails
        // alone, with its own error, and the others get their answers.
        let (inputs_of, replies): (Vec<Vec<NamedTensor>>, Vec<Reply>) =
            live.into_iter().map(|e| (e.inputs, e.reply)).unzip();
        let inputs: Result<Vec<NamedTensor>, String> = names
            .into_iter()
            .map(|name| {
                // `merges_with` checked that every entry has every name.
                let parts: Vec<&Tensor> = inputs_of
                    .iter()
                    .filter_map(|inputs| inputs.iter().find(|(n, _)| *n == name))
                    .map(|(_, t)| t)
                    .collect();
                concat(&parts).map(|t| (name, t))
            })
            .collect();
        let result = inputs
            .map_err(|e| BatchError::Internal(format!("cannot form a batch: {e}")))
            .and_then(|inputs| self.run_alone(inputs, &outputs_wanted, &options, &signature))
            .and_then(|outputs| self.split_outputs(outputs, &rows));
        match result {
            Ok(per_request) => {
                for (reply, outputs) in replies.into_iter().zip(per_request) {
                    let _ = reply.send(Ok(outputs));
                }
            }
            // Past the deadline no caller waits; out of memory, running them one by
            // one would only add load.
            Err(e @ (BatchError::DeadlineExceeded | BatchError::OutOfMemory(_))) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(_) => {
                for (inputs, reply) in inputs_of.into_iter().zip(replies) {
                    if reply.is_closed() {
                        continue;
                    }
                    let _ =
                        reply.send(self.run_alone(inputs, &outputs_wanted, &options, &signature));
                }
            }
        }
    }

    /// Cuts every output of a batch into the rows of each request.
    fn split_outputs(
        &self,
        outputs: Vec<NamedTensor>,
        rows: &[usize],
    ) -> Result<Vec<Vec<NamedTensor>>, BatchError> {
        let mut per_request: Vec<Vec<NamedTensor>> = rows
            .iter()
            .map(|_| Vec::with_capacity(outputs.len()))
            .collect();
        let total: usize = rows.iter().sum();
        for (name, tensor) in outputs {
            let shape = tensor.shape().to_vec();
            let pieces = split(tensor, rows).ok_or_else(|| {
                BatchError::Internal(format!(
                    "model {:?} version {} gave output {name:?} of shape {shape:?} for a batch of {total} rows",
                    self.model, self.version
                ))
            })?;
            for (outputs, piece) in per_request.iter_mut().zip(pieces) {
                outputs.push((name.clone(), piece));
            }
        }
        Ok(per_request)
    }
}

/// Ends a deferred flush: closes the partial batch the yielding request held open.
struct Flush<'a>(&'a Arc<BatchQueue>);

/// A queued request's caller, while it waits: when it stops waiting without an
/// answer (its deadline passed, or it left: the `submit` future dropped), its
/// entry leaves the queue at once, and `ferroserve_queue_length` with it, rather
/// than when a batch would have reached it (seconds later with a long
/// `max_queue_delay_micros`). An answered caller's entry had left already: the
/// usual path takes no lock here.
struct Waiting<'a> {
    queue: &'a BatchQueue,
    id: u64,
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut state = self.queue.state.lock();
        // Not found: a batch took it (and will skip it: its reply is closed).
        if let Ok(at) = state.entries.binary_search_by_key(&self.id, |e| e.id) {
            state.entries.remove(at);
            self.queue
                .metrics
                .queue_length
                .set(state.entries.len() as f64);
        }
    }
}

impl Drop for Flush<'_> {
    fn drop(&mut self) {
        let queue = self.0;
        let work = {
            let mut state = queue.state.lock();
            state.flush_pending = false;
            queue.take_work(&mut state, Instant::now())
        };
        queue.start(work);
    }
}

struct Pick {
    /// Positions in the queue, ascending.
    indices: Vec<usize>,
    /// The batch is full or has a preferred size: it need not wait for more.
    ready: bool,
}

/// The batch size of a request: the first dimension its inputs agree on.
fn batch_rows(inputs: &[NamedTensor]) -> Option<usize> {
    let first = *inputs.first()?.1.shape().first()?;
    inputs
        .iter()
        .all(|(_, t)| t.shape().first() == Some(&first))
        .then_some(first)
}

/// Removes the entries at ascending `indices`, keeping the others in order.
fn take_indices(entries: &mut VecDeque<Entry>, indices: &[usize]) -> Vec<Entry> {
    if indices.last() == Some(&(indices.len() - 1)) {
        // A prefix of the queue, by far the usual case.
        return entries.drain(..indices.len()).collect();
    }
    let mut taken: Vec<Entry> = indices
        .iter()
        .rev()
        .filter_map(|&i| entries.remove(i))
        .collect();
    taken.reverse();
    taken
}

#[cfg(test)]
mod tests;
