//! The inference thread pool: a fixed set of OS threads that run model code, so
//! the async workers only ever decode, route and encode.
//!
//! A job is a closure queued on a channel. Model queues (`crate::batching`) hand
//! their batches to the pool through [`Executor`]; [`InferencePool::run`] runs one
//! closure and brings its result back on a oneshot, skipping it if the caller has
//! gone away or its deadline has passed.
//!
//! Fairness between models comes from the channel being first-in, first-out and
//! from each model queue having at most its `instances` batches on the pool at
//! once: a model's batch waits behind at most the other models' instances.

use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Work for an inference thread.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Somewhere to run jobs that may block for as long as a model runs.
///
/// Implementers must run each accepted job exactly once, off the async workers
/// (tests may run it inline), and refuse jobs once shut down, dropping them unrun.
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, job: Job) -> Result<(), JobError>;
}

pub struct InferencePool {
    /// `None` once the pool has been shut down; taking it closes the channel and
    /// lets the threads finish the queue and exit.
    sender: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("the deadline passed before the request could run")]
    DeadlineExceeded,
    #[error("the inference pool is shut down")]
    ShutDown,
}

impl InferencePool {
    pub fn new(threads: usize) -> InferencePool {
        let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
        let handles = (0..threads.max(1))
            .map(|i| {
                let receiver: Receiver<Job> = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("inference-{i}"))
                    .spawn(move || {
                        for job in receiver {
                            job();
                        }
                    })
                    .expect("cannot spawn an inference thread")
            })
            .collect();
        InferencePool {
            sender: Mutex::new(Some(sender)),
            threads: Mutex::new(handles),
        }
    }

    /// Runs `f` on an inference thread unless `deadline` passes first.
    pub async fn run<T, F>(&self, deadline: Option<Instant>, f: F) -> Result<T, JobError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                return; // the caller gave up; nobody would read the result
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = tx.send(Err(JobError::DeadlineExceeded));
                return;
            }
            let _ = tx.send(Ok(f()));
        });
        self.execute(job)?;
        let wait = async { rx.await.unwrap_or(Err(JobError::ShutDown)) };
        match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), wait)
                .await
                .unwrap_or(Err(JobError::DeadlineExceeded)),
            None => wait.await,
        }
    }

    /// Queues a job; its result, if any, is the job's own business.
    pub fn execute(&self, job: Job) -> Result<(), JobError> {
        let sender = self.sender.lock();
        let sender = sender.as_ref().ok_or(JobError::ShutDown)?;
        sender.send(job).map_err(|_| JobError::ShutDown)
    }

    /// Stops taking jobs, lets queued ones finish, and joins the threads.
    pub fn shutdown(&self) {
        self.sender.lock().take();
        for handle in self.threads.lock().drain(..) {
            let _ = handle.join();
        }
    }
}

impl Executor for InferencePool {
    fn execute(&self, job: Job) -> Result<(), JobError> {
        InferencePool::execute(self, job)
    }
}

impl Drop for InferencePool {
    fn drop(&mut self) {
        self.sender.lock().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn runs_jobs_off_the_async_workers() {
        let pool = InferencePool::new(2);
        let name = pool
            .run(None, || std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("inference-"));
    }

    #[tokio::test]
    async fn expired_jobs_never_run() {
        let pool = InferencePool::new(1);
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let past = Instant::now() - Duration::from_millis(1);
        let r = pool
            .run(Some(past), move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst)
            })
            .await;
        assert_eq!(r, Err(JobError::DeadlineExceeded));
        pool.shutdown();
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_slow_job_times_out() {
        let pool = InferencePool::new(1);
        let deadline = Instant::now() + Duration::from_millis(20);
        let r = pool
            .run(Some(deadline), || {
                std::thread::sleep(Duration::from_millis(300))
            })
            .await;
        assert_eq!(r, Err(JobError::DeadlineExceeded));
    }

    #[tokio::test]
    async fn shut_down_pool_refuses_jobs() {
        let pool = InferencePool::new(1);
        pool.shutdown();
        assert_eq!(pool.run(None, || 1).await, Err(JobError::ShutDown));
    }
}
