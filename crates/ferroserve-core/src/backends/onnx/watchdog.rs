//! Ending ONNX runs at their deadlines (see [`Watchdog`]).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ort::session::RunOptions;
use parking_lot::{Condvar, Mutex};

/// Ends ONNX runs at their deadlines: a map of the runs under way that have one, and
/// one thread, started with the first such run and living as long as the process (as
/// the ONNX Runtime environment does), that sleeps until the earliest deadline and
/// sets that run's terminate flag.
///
/// The request path pays two uncontended locks a run: the thread is woken only when
/// a run is due before the time it already sleeps until (at most about once per
/// deadline's length under steady traffic), never spawned per run.
pub(super) struct Watchdog {
    state: Mutex<WatchState>,
    /// Wakes the thread when a run is due before [`WatchState::wakes_at`].
    wake: Condvar,
}

struct WatchState {
    /// The runs being watched, by deadline (and a number that tells apart runs with
    /// the same one), with the options each runs under.
    runs: BTreeMap<(Instant, u64), Arc<RunOptions>>,
    next_id: u64,
    /// When the thread wakes next; `None`: only when woken. A run due earlier must
    /// wake it.
    wakes_at: Option<Instant>,
}

static WATCHDOG: Watchdog = Watchdog {
    state: Mutex::new(WatchState {
        runs: BTreeMap::new(),
        next_id: 0,
        wakes_at: None,
    }),
    wake: Condvar::new(),
};

/// Whether the watchdog's thread started (started by the first call).
static WATCHDOG_THREAD: OnceLock<bool> = OnceLock::new();

impl Watchdog {
    /// The watchdog, its thread started; `None` when the thread cannot be started
    /// (logged once): runs then go to their end as they did before deadlines.
    pub(super) fn get() -> Option<&'static Watchdog> {
        let started = *WATCHDOG_THREAD.get_or_init(|| {
            match std::thread::Builder::new()
                .name("onnx-deadlines".into())
                .spawn(|| WATCHDOG.watch())
            {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "cannot start the thread that ends ONNX runs at their deadlines; \
                         ONNX runs will run past them"
                    );
                    false
                }
            }
        });
        started.then_some(&WATCHDOG)
    }

    /// Watches a run that goes under `options` until `deadline`.
    pub(super) fn arm(&'static self, deadline: Instant, options: &Arc<RunOptions>) -> Armed {
        let mut state = self.state.lock();
        let key = (deadline, state.next_id);
        state.next_id = state.next_id.wrapping_add(1);
        state.runs.insert(key, Arc::clone(options));
        if state.wakes_at.is_none_or(|at| deadline < at) {
            state.wakes_at = Some(deadline);
            drop(state);
            self.wake.notify_one();
        }
        Armed {
            watchdog: self,
            key,
            options: Arc::clone(options),
            disarmed: false,
        }
    }

    /// The thread's loop: terminates the runs whose deadline has passed, then sleeps
    /// until the next deadline or until a run due earlier wakes it.
    fn watch(&self) {
        let mut state = self.state.lock();
        loop {
            let now = Instant::now();
            while let Some(entry) = state.runs.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                if let Err(e) = entry.remove().terminate() {
                    tracing::warn!(error = %e, "cannot end an ONNX run at its deadline");
                }
            }
            state.wakes_at = state.runs.first_key_value().map(|((at, _), _)| *at);
            match state.wakes_at {
                Some(at) => {
                    self.wake.wait_until(&mut state, at);
                }
                None => self.wake.wait(&mut state),
            }
        }
    }
}

/// A run under watch; taking it off ([`Armed::disarm`], or dropping it if the run
/// panicked) clears the terminate flag if the watchdog set it, so that the session's
/// next run is not ended at once.
pub(super) struct Armed {
    watchdog: &'static Watchdog,
    key: (Instant, u64),
    options: Arc<RunOptions>,
    disarmed: bool,
}

impl Armed {
    /// Takes the run off the watch: whether the watchdog terminated it first.
    pub(super) fn disarm(mut self) -> bool {
        self.disarmed = true;
        self.take_off()
    }

    fn take_off(&self) -> bool {
        // The watchdog removes a run and sets its flag under this lock: a run still
        // in the map was never terminated, and now cannot be.
        let terminated = self.watchdog.state.lock().runs.remove(&self.key).is_none();
        if terminated {
            if let Err(e) = self.options.unterminate() {
                tracing::error!(
                    error = %e,
                    "cannot clear an ONNX session's terminate flag; its next runs will fail"
                );
            }
        }
        terminated
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if !self.disarmed {
            self.take_off();
        }
    }
}
