use super::*;
use crate::backends::{ModelTraits, Signature};
use crate::inference::{InferencePool, JobError};
use crate::tensor::{DataType, TensorData, TensorSpec};

/// Runs a job on the calling thread, so that with paused time nothing happens
/// behind the test's back.
struct Inline;

impl Executor for Inline {
    fn execute(&self, job: Job) -> Result<(), JobError> {
        job();
        Ok(())
    }
}

/// `y = 2 * x` for `x: FP32 [-1, 2]`; remembers every batch it ran.
struct Doubler {
    signature: Signature,
    traits: ModelTraits,
    /// The `x` values of each run, in order.
    runs: Mutex<Vec<Vec<f32>>>,
    /// When set, each run first waits for a message (a blocked model).
    gate: Option<Mutex<std::sync::mpsc::Receiver<()>>>,
    /// How long each run takes at least (a slow model).
    delay: Duration,
    /// The name of the thread each run ran on, in order.
    threads: Mutex<Vec<String>>,
}

impl Doubler {
    fn new(batch_dim: bool) -> Doubler {
        let first = if batch_dim { -1 } else { 1 };
        let spec = |name: &str| TensorSpec {
            name: name.into(),
            dtype: DataType::F32,
            shape: vec![first, 2],
        };
        Doubler {
            signature: Signature {
                inputs: vec![spec("x")],
                outputs: vec![spec("y")],
            },
            traits: ModelTraits::default(),
            runs: Mutex::new(Vec::new()),
            gate: None,
            delay: Duration::ZERO,
            threads: Mutex::new(Vec::new()),
        }
    }

    fn gated() -> (Doubler, std::sync::mpsc::Sender<()>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut d = Doubler::new(true);
        d.gate = Some(Mutex::new(rx));
        (d, tx)
    }

    fn runs(&self) -> Vec<Vec<f32>> {
        self.runs.lock().clone()
    }
}

impl Backend for Doubler {
    fn format(&self) -> &'static str {
        "fake"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn traits(&self) -> &ModelTraits {
        &self.traits
    }
    fn predict(
        &self,
        inputs: Vec<NamedTensor>,
        _outputs: &[String],
    ) -> Result<Vec<NamedTensor>, BackendError> {
        if let Some(gate) = &self.gate {
            let _ = gate.lock().recv();
        }
        std::thread::sleep(self.delay);
        let thread = std::thread::current();
        self.threads
            .lock()
            .push(thread.name().unwrap_or("unnamed").to_string());
        let (shape, data) = inputs.into_iter().next().unwrap().1.into_parts();
        let TensorData::F32(x) = data else {
            return Err(BackendError::InvalidInput("not f32".into()));
        };
        self.runs.lock().push(x.clone());
        // A value the model fails on, as ONNX Runtime fails on an index out of
        // range: only at run time.
        if let Some(v) = x.iter().find(|v| **v < 0.0) {
            return Err(BackendError::InvalidInput(format!("x = {v} is negative")));
        }
        let y = x.iter().map(|v| v * 2.0).collect();
        Ok(vec![(
            "y".into(),
            Tensor::new(shape, TensorData::F32(y)).unwrap(),
        )])
    }
}

fn config(enabled: bool, max_batch_size: usize, delay_micros: u64) -> BatchingConfig {
    BatchingConfig {
        enabled,
        max_batch_size,
        max_queue_delay_micros: delay_micros,
        ..BatchingConfig::default()
    }
}

fn queue(backend: &Arc<Doubler>, config: &BatchingConfig) -> Arc<BatchQueue> {
    Arc::new(BatchQueue::new(
        "m".into(),
        1,
        backend.clone() as Arc<dyn Backend>,
        config,
    ))
}

/// A request of `rows` rows, every value equal to `v`.
fn request(rows: usize, v: f32, deadline: Option<Instant>) -> QueuedRequest {
    let x = Tensor::new(vec![rows, 2], TensorData::F32(vec![v; rows * 2])).unwrap();
    QueuedRequest {
        inputs: vec![("x".into(), x)],
        outputs: Vec::new(),
        deadline,
        options: PredictOptions::default(),
        signature: String::new(),
        may_run_inline: true,
    }
}

type Answer = tokio::task::JoinHandle<Result<Vec<NamedTensor>, BatchError>>;

fn spawn_submit<E: Executor>(q: &Arc<BatchQueue>, e: &Arc<E>, r: QueuedRequest) -> Answer {
    let (q, e) = (q.clone(), e.clone());
    tokio::spawn(async move { q.submit(&e, r).await })
}

/// Lets spawned tasks run until they are all waiting (current-thread runtime).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn y_values(answer: Result<Vec<NamedTensor>, BatchError>) -> Vec<f32> {
    let outputs = answer.unwrap();
    assert_eq!(outputs[0].0, "y");
    match outputs[0].1.data() {
        TensorData::F32(v) => v.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_batch_closes_when_full_and_answers_each_caller() {
    let model = Arc::new(Doubler::new(true));
    let q = queue(&model, &config(true, 4, 10_000_000));
    let exec = Arc::new(Inline);
    let answers: Vec<Answer> = [(1, 1.0), (1, 2.0), (1, 3.0)]
        .into_iter()
        .map(|(rows, v)| spawn_submit(&q, &exec, request(rows, v, None)))
        .collect();
    settle().await;
    assert!(model.runs().is_empty(), "3 of 4 rows: waits for the delay");
    assert_eq!(q.len(), 3);
    let last = spawn_submit(&q, &exec, request(1, 4.0, None));
    settle().await;
    assert_eq!(model.runs().len(), 1, "4 rows: closes at once");
    assert_eq!(model.runs()[0].len(), 8);
    let expected = [vec![2.0; 2], vec![4.0; 2], vec![6.0; 2], vec![8.0; 2]];
    for (answer, want) in answers.into_iter().chain([last]).zip(expected) {
        assert_eq!(y_values(answer.await.unwrap()), want);
    }
    assert!(q.is_empty());
}

/// A request the model fails on fails alone, with its own error: the batch it
/// was in runs again one request at a time (every request of it got the
/// failure, naming another client's input).
#[tokio::test(start_paused = true)]
async fn a_request_the_model_fails_on_does_not_fail_its_batch() {
    let model = Arc::new(Doubler::new(true));
    let q = queue(&model, &config(true, 3, 10_000_000));
    let exec = Arc::new(Inline);
    let answers: Vec<Answer> = [1.0, -1.0, 3.0]
        .into_iter()
        .map(|v| spawn_submit(&q, &exec, request(1, v, None)))
        .collect();
    settle().await;
    assert_eq!(
        model.runs(),
        vec![
            vec![1.0, 1.0, -1.0, -1.0, 3.0, 3.0],
            vec![1.0, 1.0],
            vec![-1.0, -1.0],
            vec![3.0, 3.0]
        ]
    );
    let mut answers = answers.into_iter();
    assert_eq!(
        y_values(answers.next().unwrap().await.unwrap()),
        vec![2.0; 2]
    );
    match answers.next().unwrap().await.unwrap() {
        Err(BatchError::InvalidInput(m)) => assert_eq!(m, "x = -1 is negative"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        y_values(answers.next().unwrap().await.unwrap()),
        vec![6.0; 2]
    );
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_closes_on_the_delay() {
    let model = Arc::new(Doubler::new(true));
    let q = queue(&model, &config(true, 32, 1_000));
    let exec = Arc::new(Inline);
    let a = spawn_submit(&q, &exec, request(1, 1.0, None));
    settle().await;
    tokio::time::advance(Duration::from_micros(600)).await;
    let b = spawn_submit(&q, &exec, request(1, 2.0, None));
    settle().await;
    assert!(
        model.runs().is_empty(),
        "the oldest has waited 600 of 1000 µs"
    );
    tokio::time::advance(Duration::from_micros(400)).await;
    settle().await;
    assert_eq!(
        model.runs(),
        vec![vec![1.0, 1.0, 2.0, 2.0]],
        "one batch of two"
    );
    assert_eq!(y_values(a.await.unwrap()), vec![2.0; 2]);
    assert_eq!(y_values(b.await.unwrap()), vec![4.0; 2]);
}

/// A request does not wait for company past half the time its deadline gives
/// it: with a delay longer than the deadline it still runs, and answers.
#[tokio::test(start_paused = true)]
async fn a_batch_closes_before_its_requests_deadline() {
    let model = Arc::new(Doubler::new(true));
    let q = queue(&model, &config(true, 32, 2_000_000));
    let exec = Arc::new(Inline);
    let deadline = Instant::now() + Duration::from_millis(100);
    let a = spawn_submit(&q, &exec, request(1, 1.0, Some(deadline)));
    settle().await;
    tokio::time::advance(Duration::from_millis(49)).await;
    settle().await;
    assert!(model.runs().is_empty(), "waits for company at first");
    // A later request with a shorter deadline closes the batch sooner.
    let b = spawn_submit(
        &q,
        &exec,
        request(1, 2.0, Some(Instant::now() + Duration::from_millis(2))),
    );
    settle().await;
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(model.runs(), vec![vec![1.0, 1.0, 2.0, 2.0]]);
    assert_eq!(y_values(a.await.unwrap()), vec![2.0; 2]);
    assert_eq!(y_values(b.await.unwrap()), vec![4.0; 2]);

    // Alone, it runs at half its time.
    let c = spawn_submit(
        &q,
        &exec,
        request(1, 3.0, Some(Instant::now() + Duration::from_millis(100))),
    );
    settle().await;
    tokio::time::advance(Duration::from_millis(50)).await;
    settle().await;
    assert_eq!(y_values(c.await.unwrap()), vec![6.0; 2]);
}

#[tokio::test(start_paused = true)]
async fn with_no_delay_requests_that_arrive_together_share_a_batch() {
    let model = Arc::new(Doubler::new(true));
    let q = queue(&model, &config(true, 32, 0));
    let exec = Arc::new(Inline);
    let answers: Vec<Answer> = (1..=3)
        .map(|v| spawn_submit(&q, &exec, request(1, v as f32, None)))
        .collect();
    settle().await;
    assert_eq!(model.runs(), vec![vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]]);
    for (answer, v) in answers.into_iter().zip(1..) {
        assert_eq!(y_values(answer.await.unwrap()), vec![2.0 * v as f32; 2]);
    }
    // A lone request is not held back: it runs once its yield comes back.
    let alone = spawn_submit(&q, &exec, request(1, 5.0, None));
    settle().await;
    assert_eq!(y_values(alone.await.unwrap()), vec![10.0; 2]);
}

#[tokio::test(start_paused = true)]
async fn preferred_sizes_close_early_and_cut_the_batch() {
    let model = Arc::new(Doubler::new(true));
    let mut c = config(true, 8, 10_000_000);
    c.preferred_batch_sizes = vec![2];
    let q = queue(&model, &c);
    let exec = Arc::new(Inline);
    let a = spawn_submit(&q, &exec, request(1, 1.0, None));
    settle().await;
    assert!(model.runs().is_empty());
    let b = spawn_submit(&q, &exec, request(1, 2.0, None));
    settle().await;
    assert_eq!(model.runs(), vec![vec![1.0, 1.0, 2.0, 2.0]]);
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn expired_and_cancelled_requests_never_run() {
    let model = Arc::new(Doubler::new(true));
    let q = queue(&model, &config(true, 32, 1_000));
    let exec = Arc::new(Inline);
    let soon = Instant::now() + Duration::from_micros(500);
    let expiring = spawn_submit(&q, &exec, request(1, 1.0, Some(soon)));
    let cancelled = spawn_submit(&q, &exec, request(1, 2.0, None));
    let kept = spawn_submit(&q, &exec, request(1, 3.0, None));
    settle().await;
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    tokio::time::advance(Duration::from_micros(1_000)).await;
    settle().await;
    assert_eq!(
        expiring.await.unwrap().unwrap_err(),
        BatchError::DeadlineExceeded
    );
    assert_eq!(y_values(kept.await.unwrap()), vec![6.0; 2]);
    assert_eq!(
        model.runs(),
        vec![vec![3.0, 3.0]],
        "only the live request ran"
    );
}

/// A caller that stops waiting (its deadline passed, or it left) takes its
/// request out of the queue at once, not when the batch's delay runs out: the
/// queue's length (`ferroserve_queue_length`) and its room count only callers
/// that wait.
#[tokio::test(start_paused = true)]
async fn requests_whose_callers_stopped_waiting_leave_the_queue_at_once() {
    let model = Arc::new(Doubler::new(true));
    let mut c = config(true, 32, 3_000_000);
    c.max_queue_length = 2;
    let q = queue(&model, &c);
    let exec = Arc::new(Inline);
    let soon = Instant::now() + Duration::from_millis(100);
    let expiring = spawn_submit(&q, &exec, request(1, 1.0, Some(soon)));
    let cancelled = spawn_submit(&q, &exec, request(1, 2.0, None));
    settle().await;
    assert_eq!(q.len(), 2);
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    assert_eq!(q.len(), 1, "the caller that left still holds a place");
    tokio::time::advance(Duration::from_millis(150)).await;
    assert_eq!(
        expiring.await.unwrap().unwrap_err(),
        BatchError::DeadlineExceeded
    );
    assert_eq!(
        q.len(),
        0,
        "the caller whose deadline passed still holds a place"
    );
    // Two places again; the batch closes on its delay and runs only them.
    let a = spawn_submit(&q, &exec, request(1, 3.0, None));
    let b = spawn_submit(&q, &exec, request(1, 4.0, None));
    settle().await;
    assert_eq!(q.len(), 2);
    tokio::time::advance(Duration::from_secs(3)).await;
    settle().await;
    assert_eq!(y_values(a.await.unwrap()), vec![6.0; 2]);
    assert_eq!(y_values(b.await.unwrap()), vec![8.0; 2]);
    assert_eq!(model.runs(), vec![vec![3.0, 3.0, 4.0, 4.0]]);
}

#[tokio::test(start_paused = true)]
async fn unmergeable_requests_run_separately() {
    let model = Arc::new(Doubler::new(true));
    let q = queue(&model, &config(true, 32, 1_000));
    let exec = Arc::new(Inline);
    let a = spawn_submit(&q, &exec, request(1, 1.0, None));
    let mut other = request(1, 2.0, None);
    other.outputs = vec!["y".into()];
    let b = spawn_submit(&q, &exec, other);
    let c = spawn_submit(&q, &exec, request(2, 3.0, None));
    settle().await;
    tokio::time::advance(Duration::from_micros(1_000)).await;
    settle().await;
    // a and c merge; b asks for other outputs and waits for a batch of its own.
    assert_eq!(model.runs()[0], vec![1.0, 1.0, 3.0, 3.0, 3.0, 3.0]);
    assert_eq!(model.runs()[1], vec![2.0, 2.0]);
    assert_eq!(y_values(a.await.unwrap()), vec![2.0; 2]);
    assert_eq!(y_values(b.await.unwrap()), vec![4.0; 2]);
    assert_eq!(y_values(c.await.unwrap()), vec![6.0; 4]);
}

#[tokio::test(start_paused = true)]
async fn without_batching_requests_run_one_by_one() {
    for (enabled, batch_dim) in [(false, true), (true, false)] {
        let model = Arc::new(Doubler::new(batch_dim));
        let q = queue(&model, &config(enabled, 32, 1_000));
        assert!(!q.is_batching());
        let exec = Arc::new(Inline);
        let a = spawn_submit(&q, &exec, request(1, 1.0, None));
        let b = spawn_submit(&q, &exec, request(1, 2.0, None));
        settle().await;
        assert_eq!(model.runs(), vec![vec![1.0; 2], vec![2.0; 2]], "no waiting");
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once() {
    let (model, gate) = Doubler::gated();
    let model = Arc::new(model);
    let mut c = config(false, 1, 0);
    c.max_queue_length = 2;
    let q = queue(&model, &c);
    let pool = Arc::new(InferencePool::new(1));
    // One runs (blocked in the model), two wait, the fourth is refused.
    let running = spawn_submit(&q, &pool, request(1, 1.0, None));
    wait_until(|| model_is_running(&q)).await;
    let waiting: Vec<Answer> = (0..2)
        .map(|i| spawn_submit(&q, &pool, request(1, i as f32, None)))
        .collect();
    wait_until(|| q.len() == 2).await;
    let refused = q.submit(&pool, request(1, 9.0, None)).await;
    assert!(matches!(
        refused,
        Err(BatchError::QueueFull { queued: 2, .. })
    ));
    assert!(
        !running.is_finished(),
        "refused while the others still wait"
    );
    for _ in 0..3 {
        gate.send(()).unwrap();
    }
    running.await.unwrap().unwrap();
    wait_until(|| q.refuse_if_full().is_none()).await;
    for w in waiting {
        w.await.unwrap().unwrap();
    }
}

fn model_is_running(q: &BatchQueue) -> bool {
    let state = q.state.lock();
    state.in_flight == 1 && state.entries.is_empty()
}

/// Polls a condition set by other threads; a hang guard, not a speed check.
/// After the first answer: its run's time folded in and its batch ended. The
/// answer is sent before both; a request submitted before the batch ended
/// queued behind it and ran on the inference thread that ended it (the
/// inline tests failed so under a busy `.ci/run`).
async fn settled(q: &BatchQueue) {
    wait_until(|| {
        q.nanos_per_row.load(Ordering::Relaxed) != u64::MAX && q.state.lock().in_flight == 0
    })
    .await;
}

async fn wait_until(mut ok: impl FnMut() -> bool) {
    let limit = std::time::Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(std::time::Instant::now() < limit, "condition never held");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_model_does_not_starve_a_fast_one() {
    // One inference thread; the slow model is blocked in its first batch with
    // more requests queued behind it. The fast model's request must run as
    // soon as that one batch ends, before the slow model's next batch.
    let pool = Arc::new(InferencePool::new(1));
    let (slow_model, gate) = Doubler::gated();
    let slow_model = Arc::new(slow_model);
    let slow = queue(&slow_model, &config(false, 1, 0));
    let fast_model = Arc::new(Doubler::new(true));
    let fast = queue(&fast_model, &config(false, 1, 0));
    let first = spawn_submit(&slow, &pool, request(1, 1.0, None));
    wait_until(|| model_is_running(&slow)).await;
    let backlog: Vec<Answer> = (0..5)
        .map(|i| spawn_submit(&slow, &pool, request(1, 10.0 + i as f32, None)))
        .collect();
    wait_until(|| slow.len() == 5).await;
    let quick = spawn_submit(&fast, &pool, request(1, 7.0, None));
    wait_until(|| fast.state.lock().in_flight == 1).await;
    gate.send(()).unwrap(); // let exactly one slow batch finish
    assert_eq!(y_values(quick.await.unwrap()), vec![14.0; 2]);
    first.await.unwrap().unwrap();
    assert_eq!(slow_model.runs().len(), 1, "the fast request ran first");
    for _ in 0..5 {
        gate.send(()).unwrap();
    }
    for b in backlog {
        b.await.unwrap().unwrap();
    }
}

/// The threads a model's runs took, after `n` requests one after another. After
/// the first run, whose time is learnt, the estimate is set to `per_row` ns
/// before every request (a preempted run on a busy machine, folded into the
/// average, must not decide the test).
async fn threads_after(
    model: Doubler,
    config: &BatchingConfig,
    n: usize,
    per_row: Option<u64>,
) -> Vec<String> {
    let pool = Arc::new(InferencePool::new(1));
    let model = Arc::new(model);
    let q = queue(&model, config);
    for i in 0..n {
        match per_row {
            Some(per_row) if i > 0 => q.nanos_per_row.store(per_row, Ordering::Relaxed),
            _ => {}
        }
        let answer = q.submit(&pool, request(1, i as f32, None)).await;
        assert_eq!(y_values(answer), vec![2.0 * i as f32; 2]);
        if i == 0 {
            settled(&q).await;
        }
    }
    let threads = model.threads.lock().clone();
    threads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_cheap_model_runs_on_the_calling_thread_once_timed() {
    // The first run is timed on an inference thread; a model far below 50 µs a
    // row then runs where the request is, with the same answers.
    let threads = threads_after(Doubler::new(true), &config(false, 1, 0), 4, Some(1_000)).await;
    assert!(threads[0].starts_with("inference-"), "{threads:?}");
    assert!(
        threads[1..].iter().all(|t| !t.starts_with("inference-")),
        "{threads:?}"
    );
    // Batching on: the batches a zero-delay flush closes run inline too.
    let threads = threads_after(Doubler::new(true), &config(true, 8, 0), 4, Some(1_000)).await;
    assert!(
        threads[1..].iter().all(|t| !t.starts_with("inference-")),
        "{threads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn slow_models_and_inline_max_0_always_use_the_inference_threads() {
    let mut slow = Doubler::new(true);
    slow.delay = Duration::from_micros(300);
    let threads = threads_after(slow, &config(false, 1, 0), 4, None).await;
    assert!(
        threads.iter().all(|t| t.starts_with("inference-")),
        "{threads:?}"
    );
    let never = BatchingConfig {
        inline_max_micros: 0,
        ..config(false, 1, 0)
    };
    let threads = threads_after(Doubler::new(true), &never, 4, Some(1_000)).await;
    assert!(
        threads.iter().all(|t| t.starts_with("inference-")),
        "{threads:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_large_request_to_a_cheap_model_goes_to_the_pool() {
    // The estimate is per row: 10,000 rows of a model timed at a few hundred
    // nanoseconds a row would hold an async worker too long.
    let pool = Arc::new(InferencePool::new(1));
    let model = Arc::new(Doubler::new(true));
    let q = queue(&model, &config(false, 1, 0));
    q.submit(&pool, request(1, 1.0, None)).await.unwrap();
    settled(&q).await;
    q.nanos_per_row.store(100, Ordering::Relaxed);
    q.submit(&pool, request(1, 1.0, None)).await.unwrap();
    q.submit(&pool, request(10_000, 1.0, None)).await.unwrap();
    let threads = model.threads.lock().clone();
    assert!(!threads[1].starts_with("inference-"), "{threads:?}");
    assert!(threads[2].starts_with("inference-"), "{threads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn requests_that_may_not_run_inline_always_use_the_inference_threads() {
    let pool = Arc::new(InferencePool::new(1));
    let model = Arc::new(Doubler::new(true));
    let q = queue(&model, &config(false, 1, 0));
    q.submit(&pool, request(1, 1.0, None)).await.unwrap();
    settled(&q).await;
    q.nanos_per_row.store(100, Ordering::Relaxed);
    for _ in 0..3 {
        let mut r = request(1, 1.0, None);
        r.may_run_inline = false;
        q.submit(&pool, r).await.unwrap();
    }
    let threads = model.threads.lock().clone();
    assert!(
        threads.iter().all(|t| t.starts_with("inference-")),
        "{threads:?}"
    );
}
