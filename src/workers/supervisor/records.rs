//! What a deployment leaves in the stores: the main store's `workers` row of each
//! deployed slot (what a restart starts the model's worker from), and each worker's
//! own store (its sampled predictions and events), moved into the main store every
//! few seconds and when the worker stops, its state directory removed once moved;
//! at start, the state directories no deployment claims are moved and removed.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Slot, Supervisor};
use crate::store::{Store, WorkerRow};

/// How often a worker's sampled predictions and events move into the main store.
const HARVEST_EVERY: Duration = Duration::from_secs(2);
/// How long a worker's store may keep the mover waiting (it is busy writing).
const HARVEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Supervisor {
    /// A worker's own state directory (its store, its repository).
    fn state_dir_of(&self, slot: &Slot) -> PathBuf {
        self.config.state_dir.join(format!(
            "{}-{}",
            slot.model,
            slot.port.load(Ordering::Relaxed)
        ))
    }

    /// Removes a finished worker's state directory, once what its store recorded
    /// is the main server's: its deployment is over or replaced (a restart of the
    /// main server keeps it, to start the worker again where it was). Records that
    /// cannot be moved now (the main store down) are kept, the directory with them.
    pub(super) async fn retire_state_dir(&self, slot: &Slot) {
        if !self.harvest(slot).await {
            tracing::warn!(
                model = %slot.model,
                dir = %self.state_dir_of(slot).display(),
                "the stopped worker's prediction log and events could not be moved into \
                 the metadata store; its state directory is kept"
            );
            return;
        }
        let dir = self.state_dir_of(slot);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::debug!(dir = %dir.display(), "worker state not removed: {e}");
        }
    }

    /// Moves what `slot`'s worker recorded in its own store (sampled predictions,
    /// its events) into the main server's store (`Store::take_records_from`).
    /// Answers false when records are left there.
    pub(super) async fn harvest(&self, slot: &Slot) -> bool {
        self.harvest_dir(&self.state_dir_of(slot)).await
    }

    /// Moves what the worker store in `dir` holds into the main server's store;
    /// false when records are left there (the main store down, or the worker's
    /// unreadable). A directory without a store holds nothing to move.
    async fn harvest_dir(&self, dir: &std::path::Path) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        let db = dir.join(crate::workers::worker::STORE_FILE);
        let _one = self.harvesting.lock().await;
        if !db.exists() {
            return true;
        }
        let url = format!("sqlite://{}", db.display());
        let from = match Store::open_for_status(&url, HARVEST_TIMEOUT).await {
            Ok(from) => from,
            Err(e) => {
                tracing::debug!(dir = %dir.display(), "cannot read the worker's store: {e}");
                return false;
            }
        };
        let done = loop {
            match store.take_records_from(&from).await {
                Ok(true) => continue,
                Ok(false) => break true,
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), "worker records not moved yet: {e}");
                    break false;
                }
            }
        };
        from.close().await;
        done
    }

    /// At start, once the recorded deployments are restored: moves the records of
    /// every worker state directory that no deployment claims (left by a main
    /// server killed while a deployment stopped, was replaced or deleted, or
    /// restored on another port) into the main store, then removes the directory.
    /// One whose records cannot be moved is kept, and logged, for the next start.
    pub async fn retire_unclaimed_state_dirs(&self) {
        if self.store.is_none() {
            // Nowhere to move their records to: they stay.
            return;
        }
        let _changing = self.changing.lock().await;
        let claimed: Vec<PathBuf> = self
            .slots
            .load()
            .values()
            .map(|s| self.state_dir_of(s))
            .collect();
        let entries = match std::fs::read_dir(&self.config.state_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(
                    dir = %self.config.state_dir.display(),
                    "cannot list the workers' state directories: {e}"
                );
                return;
            }
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || claimed.contains(&dir) {
                continue;
            }
            if !self.harvest_dir(&dir).await {
                tracing::warn!(
                    dir = %dir.display(),
                    "a former worker's prediction log and events could not be moved into \
                     the metadata store; its state directory is kept for the next start"
                );
                continue;
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "former worker's state moved and removed")
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "former worker's state not removed: {e}")
                }
            }
        }
    }

    /// Every [`HARVEST_EVERY`], moves each worker's records into the main store,
    /// until the supervisor is dropped.
    pub fn start_harvesting(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HARVEST_EVERY).await;
                let Some(this) = this.upgrade() else {
                    return;
                };
                let slots: Vec<Arc<Slot>> = this.slots.load().values().cloned().collect();
                for slot in slots {
                    this.harvest(&slot).await;
                }
            }
        })
    }

    /// Records the slot's row in the store (never on the request path, and a store
    /// that is down loses only the row), if the slot is the deployment's: a slot
    /// outside the map (a deploy that was refused, or not switched to yet; an old
    /// worker draining or stopping) leaves the row as it is. The row is what a
    /// restart starts the model's worker from (its port), and a refused deploy
    /// changes nothing.
    pub(super) async fn record(&self, slot: &Slot) {
        let Some(store) = &self.store else { return };
        // A slot joins the map before its deploy records it, and leaves it before
        // its row is forgotten: under the lock, the check and the write are one.
        let _one = self.recording.lock().await;
        let deployed = self
            .slots
            .load()
            .get(&slot.model)
            .is_some_and(|s| std::ptr::eq(&**s, slot));
        if !deployed {
            return;
        }
        let s = self.status_of(slot);
        let row = WorkerRow {
            model: s.model.clone(),
            host: s.host.to_string(),
            port: s.port,
            pid: s.pid,
            state: s.state.as_str().to_string(),
            resources: crate::workers::status_json(&s).to_string(),
            started_ms: s
                .started_at
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64),
        };
        if let Err(e) = store.save_worker(&row).await {
            tracing::warn!(model = %s.model, "cannot record the worker: {e}");
        }
    }
}
