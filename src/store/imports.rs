//! What a worker's own store recorded, moved into the main server's: a deployed
//! model's sampled predictions (`[log]`) and the audit events its worker recorded
//! (its versions' state changes, management calls forwarded to it), so that
//! `/v1/models/{m}/predictions`, `/history` and `/models/status` on the main
//! server cover a deployed model too, and a deployment's log outlives its worker.
//!
//! Oldest first, a bounded number of rows at a time: inserted here, then deleted
//! there. The worker writes on meanwhile (SQLite's WAL and busy timeout let the two
//! processes take turns). Rows are written as the prediction log's writer writes
//! its own ([`write_in_halves`](super::predictions::write_in_halves)): an outage here (the database unreachable, or
//! answering that it cannot take the write now) keeps the rows not written there
//! for the next pass; a row this database refuses as such (too large for it, a
//! value or constraint it rejects) is dropped, there too, so that it never holds
//! the rows after it (a log row counted in
//! `ferroserve_prediction_log_refused_total{model}`, an event told in a warning).
//! A delete there that fails after the insert here would copy those rows again,
//! which is the one way a row can appear twice.

use super::predictions::WriteError;
use super::{Store, StoreError};

/// How many rows of each table one call moves at most.
const MOVE_AT_ONCE: usize = 512;

impl Store {
    /// Moves up to [`MOVE_AT_ONCE`] of `from`'s oldest prediction-log rows and as
    /// many of its events into this store, dropping those this store refuses as
    /// such; answers whether more may be left (a table gave a full batch), for the
    /// caller to call again. An outage here answers an error, with the rows not
    /// written still there.
    pub async fn take_records_from(&self, from: &Store) -> Result<bool, StoreError> {
        let read = |e: sqlx::Error| from.unavailable("read a worker's records", e);
        let write = |e: WriteError| e.into_store_error(self, "copy a worker's records");
        let events = from.oldest_events(MOVE_AT_ONCE).await?;
        let events_read = events.len();
        // The ids they have here, not the worker's; 0 for one refused.
        let (done, ids, written) = self
            .insert_events_in_halves(&events, "an event a worker recorded")
            .await;
        if let Some(last) = events[..done].last().map(|e| e.id) {
            let kept: Vec<_> = events[..done]
                .iter()
                .zip(ids)
                .filter(|(_, id)| *id != 0)
                .map(|(e, id)| super::Event { id, ..e.clone() })
                .collect();
            self.remember_events(&kept);
            with_timeout(from, from.delete_through("events", last))
                .await
                .map_err(read)?;
        }
        written.map_err(write)?;

        let rows = with_timeout(from, from.oldest_predictions(MOVE_AT_ONCE))
            .await
            .map_err(read)?;
        let rows_read = rows.len();
        let (from_ids, rows): (Vec<i64>, Vec<_>) = rows.into_iter().unzip();
        let (done, written) = self.write_log_rows(&rows).await;
        if let Some(&last) = from_ids[..done].last() {
            with_timeout(from, from.delete_through("predictions", last))
                .await
                .map_err(read)?;
        }
        written.map_err(write)?;
        if events_read > 0 || rows_read > 0 {
            self.worked();
        }
        Ok(events_read == MOVE_AT_ONCE || rows_read == MOVE_AT_ONCE)
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

/// `work` on this store within its own timeout, failing as a write does.
pub(super) async fn within<T>(
    store: &Store,
    work: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, WriteError> {
    match tokio::time::timeout(store.timeout, work).await {
        Ok(done) => done.map_err(WriteError::Sql),
        Err(_) => Err(WriteError::TimedOut(store.timeout)),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::pool::on_pool;
    use super::super::PredictionQuery;
    use super::*;

    async fn open(dir: &std::path::Path, name: &str) -> Store {
        let url = format!("sqlite://{}/{name}.db", dir.display());
        Store::open(&url, Duration::from_secs(2), true)
            .await
            .unwrap()
    }

    async fn execute(store: &Store, sql: &str) {
        on_pool!(&store.pool, p => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(p).await.map(|_| ()))
            .unwrap();
    }

    async fn count(store: &Store, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        on_pool!(&store.pool, p => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(&*sql)).fetch_one(p).await)
            .unwrap()
    }

    /// A worker's store holding `n` log rows and `n` events, every fourth from the
    /// second one "bad" (what the main store's triggers refuse).
    async fn worker_store(dir: &std::path::Path, n: usize) -> Store {
        let from = open(dir, "worker").await;
        for i in 0..n {
            let word = if i % 4 == 1 { "bad" } else { "ok" };
            execute(
                &from,
                &format!(
                    "INSERT INTO predictions (at_ms, model, version, protocol, latency_us, \
                     request_id, inputs, outputs) VALUES ({i}, 'm', 1, 'v2', 1, '00', \
                     '{{\"{word}\":{i}}}', '{{}}')"
                ),
            )
            .await;
            execute(
                &from,
                &format!(
                    "INSERT INTO events (at_ms, model, version, kind, detail, replica) \
                     VALUES ({i}, 'm', 1, 'state', '{{\"{word}\":{i}}}', 'w')"
                ),
            )
            .await;
        }
        from
    }

    /// Rows the main store refuses as such (a trigger's refusal, standing for
    /// MariaDB's `max_allowed_packet` or a value it rejects) are dropped from the
    /// worker's store, not moved, and the rows after them move: the move was
    /// stopped at them at every pass, for good. Log rows and events alike.
    #[tokio::test]
    async fn refused_rows_are_dropped_and_later_rows_move() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "main").await;
        for table in ["predictions", "events"] {
            let column = if table == "events" {
                "detail"
            } else {
                "inputs"
            };
            execute(
                &store,
                &format!(
                    "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} \
                     WHEN NEW.{column} LIKE '%bad%' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                ),
            )
            .await;
        }
        // Over one call's worth, so that a refused row sits in each batch.
        let n = MOVE_AT_ONCE + 9;
        let from = worker_store(dir.path(), n).await;
        let mut calls = 0;
        while store.take_records_from(&from).await.unwrap() {
            calls += 1;
            assert!(calls < 10, "the move does not end");
        }
        assert_eq!(count(&from, "predictions").await, 0);
        assert_eq!(count(&from, "events").await, 0);

        let want: Vec<String> = (0..n)
            .filter(|i| i % 4 != 1)
            .map(|i| format!("{{\"ok\":{i}}}"))
            .collect();
        let q = PredictionQuery {
            limit: 10_000,
            ..PredictionQuery::default()
        };
        let logged: Vec<String> = store
            .prediction_page("m", &q, None, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.parsed().inputs.to_string())
            .collect();
        assert_eq!(logged, want);
        let mut events: Vec<String> = store
            .history("m", None, 1000)
            .await
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.detail.to_string())
            .collect();
        // Newest first.
        events.reverse();
        assert_eq!(events, want);
        // Those moved are remembered under the ids they have here.
        let recent = store.recent_events("m");
        assert!(!recent.is_empty());
        assert!(recent
            .iter()
            .all(|e| e.id > 0 && !e.detail.to_string().contains("bad")));
        store.close().await;
        from.close().await;
    }

    /// An outage of the main store (its pool closed: no connection, no answer) is
    /// not a refusal: every row stays in the worker's store for a later pass.
    #[tokio::test]
    async fn an_outage_keeps_every_row_in_the_worker_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "main").await;
        let from = worker_store(dir.path(), 9).await;
        store.close().await;
        assert!(store.take_records_from(&from).await.is_err());
        assert_eq!(count(&from, "predictions").await, 9);
        assert_eq!(count(&from, "events").await, 9);
        from.close().await;
    }
}
