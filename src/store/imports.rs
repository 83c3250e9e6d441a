//! What a worker's own store recorded, moved into the main server's: a deployed
//! model's sampled predictions (`[log]`) and the audit events its worker recorded
//! (its versions' state changes, management calls forwarded to it), so that
//! `/v1/models/{m}/predictions`, `/history` and `/models/status` on the main
//! server cover a deployed model too, and a deployment's log outlives its worker.
//!
//! Oldest first, a bounded number of rows at a time: inserted here, then deleted
//! there. The worker writes on meanwhile (SQLite's WAL and busy timeout let the two
//! processes take turns). Rows whose insert here fails stay there for the next
//! pass; a delete there that fails after the insert here would copy those rows
//! again, which is the one way a row can appear twice.

use super::{Store, StoreError};

/// How many rows of each table one call moves at most.
const MOVE_AT_ONCE: usize = 512;

impl Store {
    /// Moves up to [`MOVE_AT_ONCE`] of `from`'s oldest prediction-log rows and as
    /// many of its events into this store; answers whether more may be left (a
    /// table gave a full batch), for the caller to call again.
    pub async fn take_records_from(&self, from: &Store) -> Result<bool, StoreError> {
        let read = |e: sqlx::Error| from.unavailable("read a worker's records", e);
        let write = |e: sqlx::Error| self.unavailable("copy a worker's records", e);
        let mut events = from.oldest_events(MOVE_AT_ONCE).await?;
        if let Some(last) = events.last().map(|e| e.id) {
            let ids = with_timeout(self, self.insert_events(&events))
                .await
                .map_err(write)?;
            // Remembered under the ids they have here, not the worker's.
            for (e, id) in events.iter_mut().zip(ids) {
                e.id = id;
            }
            self.remember_events(&events);
            with_timeout(from, from.delete_through("events", last))
                .await
                .map_err(read)?;
        }

        let rows = with_timeout(from, from.oldest_predictions(MOVE_AT_ONCE))
            .await
            .map_err(read)?;
        let rows_read = rows.len();
        if let Some(last) = rows.last().map(|(id, _)| *id) {
            let rows: Vec<_> = rows.into_iter().map(|(_, row)| row).collect();
            with_timeout(self, self.insert_predictions(&rows))
                .await
                .map_err(write)?;
            with_timeout(from, from.delete_through("predictions", last))
                .await
                .map_err(read)?;
        }
        if !events.is_empty() || rows_read > 0 {
            self.worked();
        }
        Ok(events.len() == MOVE_AT_ONCE || rows_read == MOVE_AT_ONCE)
    }

    /// Deletes the rows of `table` with ids up to `id`.
    async fn delete_through(&self, table: &'static str, id: i64) -> Result<(), sqlx::Error> {
        let sql = self
            .sql(&format!("DELETE FROM {table} WHERE id <= ?"))
            .into_owned();
        super::pool::on_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
            .bind(id)
            .execute(p)
            .await
            .map(|_| ()))
    }
}

/// `work` within the store's own timeout.
async fn with_timeout<T>(
    store: &Store,
    work: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(store.timeout, work)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}
