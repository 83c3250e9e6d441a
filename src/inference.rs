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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
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
    /// What shutdown waits on: a join has no time limit, and a thread stuck in a
    /// model's run (a native library that never returns) kept the process from
    /// exiting after SIGTERM.
    lives: Arc<Lives>,
}

/// How many inference threads have not returned yet, signalled as each does,
/// which ones have, and when each one's current job started (`None`: idle), for
/// the shutdown's log.
struct Lives {
    running: Mutex<usize>,
    exited: Condvar,
    /// Set by a thread's [`ExitGuard`]: the thread is past its last job and only
    /// returning, though its handle may not say it has finished yet.
    done: Vec<AtomicBool>,
    busy_since: Vec<Mutex<Option<Instant>>>,
}

/// Counts its thread (by index) out when the thread ends, by returning or by a
/// job's panic.
struct ExitGuard(Arc<Lives>, usize);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.done[self.1].store(true, Ordering::Release);
        *self.0.running.lock() -= 1;
        self.0.exited.notify_all();
    }
}

/// An inference thread that was still running a job when shutdown stopped waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StillBusy {
    /// The thread's name (`inference-3`).
    pub thread: String,
    /// How long its current job had been running; `None` if it was between jobs.
    pub running_for: Option<Duration>,
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
        let threads = threads.max(1);
        let lives = Arc::new(Lives {
            running: Mutex::new(threads),
            exited: Condvar::new(),
            done: (0..threads).map(|_| AtomicBool::new(false)).collect(),
            busy_since: (0..threads).map(|_| Mutex::new(None)).collect(),
        });
        let handles = (0..threads)
            .map(|i| {
                let receiver: Receiver<Job> = receiver.clone();
                let guard = ExitGuard(lives.clone(), i);
                std::thread::Builder::new()
                    .name(format!("inference-{i}"))
                    .spawn(move || {
                        let lives = &guard.0;
                        for job in receiver {
                            *lives.busy_since[i].lock() = Some(Instant::now());
                            job();
                            *lives.busy_since[i].lock() = None;
                        }
                    })
                    .expect("cannot spawn an inference thread")
            })
            .collect();
        InferencePool {
            sender: Mutex::new(Some(sender)),
            threads: Mutex::new(handles),
            lives,
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
        self.shutdown_until(None);
    }

    /// Stops taking jobs and lets queued ones finish, waiting for the threads until
    /// `deadline` (for ever if `None`). Answers the threads still running then: they
    /// are left to the process's exit, since a thread inside a model's run cannot be
    /// stopped from outside.
    pub fn shutdown_until(&self, deadline: Option<Instant>) -> Vec<StillBusy> {
        self.sender.lock().take();
        {
            let mut running = self.lives.running.lock();
            while *running > 0 {
                match deadline {
                    Some(d) => {
                        if self.lives.exited.wait_until(&mut running, d).timed_out() {
                            break;
                        }
                    }
                    None => self.lives.exited.wait(&mut running),
                }
            }
        }
        let mut still_busy = Vec::new();
        for (i, handle) in self.threads.lock().drain(..).enumerate() {
            // A thread whose guard has counted it out is returning: joined, not
            // reported (its handle may not say finished for a moment yet).
            if handle.is_finished() || self.lives.done[i].load(Ordering::Acquire) {
                let _ = handle.join();
            } else {
                // Dropping the handle detaches the thread.
                still_busy.push(StillBusy {
                    thread: handle.thread().name().unwrap_or("inference").to_string(),
                    running_for: self.lives.busy_since[i].lock().map(|t| t.elapsed()),
                });
            }
        }
        still_busy
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
    async fn shutdown_stops_waiting_for_a_stuck_thread_at_its_deadline() {
        let pool = InferencePool::new(2);
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        pool.execute(Box::new(move || {
            started_tx.send(()).unwrap();
            // Stands for a model's run that never returns.
            let _ = stuck.recv();
        }))
        .unwrap();
        started.recv().unwrap();
        let begun = Instant::now();
        let still_busy = pool.shutdown_until(Some(begun + Duration::from_millis(200)));
        let waited = begun.elapsed();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert_eq!(still_busy.len(), 1, "{still_busy:?}");
        assert!(still_busy[0].thread.starts_with("inference-"));
        assert!(still_busy[0].running_for.is_some());
        assert_eq!(pool.run(None, || 1).await, Err(JobError::ShutDown));
        release.send(()).unwrap();
    }

    #[test]
    fn shutdown_joins_idle_threads_at_once() {
        let pool = InferencePool::new(3);
        let begun = Instant::now();
        let still_busy = pool.shutdown_until(Some(begun + Duration::from_secs(5)));
        assert!(still_busy.is_empty(), "{still_busy:?}");
        assert!(begun.elapsed() < Duration::from_secs(1));
    }

    /// Threads that have left their loop are joined, never reported as stuck: the
    /// last one counted out wakes the shutdown before its handle says finished.
    #[test]
    fn threads_returning_at_the_shutdown_are_not_reported_busy() {
        for round in 0..200 {
            let pool = InferencePool::new(4);
            let still_busy = pool.shutdown_until(Some(Instant::now() + Duration::from_secs(5)));
            assert!(still_busy.is_empty(), "round {round}: {still_busy:?}");
        }
    }

    #[tokio::test]
    async fn shut_down_pool_refuses_jobs() {
        let pool = InferencePool::new(1);
        pool.shutdown();
        assert_eq!(pool.run(None, || 1).await, Err(JobError::ShutDown));
    }
}
