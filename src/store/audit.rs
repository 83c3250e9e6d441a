//! The audit trail: every upload, version state change and management call, as rows
//! of `events`. Recording never waits: events go through a bounded buffer to a
//! writer task that inserts them in batches and, while the database is down, keeps
//! its batch and retries, so nothing recorded is lost unless the buffer overflows
//! (dropped, counted, logged) or the database refuses the event itself (a value too
//! long for its column: dropped, logged, and the events after it written).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::imports::within;
use super::pool::on_pool;
use super::predictions::{write_in_halves, WriteError};
use super::{now_ms, Store, StoreError, RECENT_EVENTS};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Upload,
    /// A version's state changed (`detail`: from, to, error).
    State,
    Reload,
    Stop,
    Deploy,
    Delete,
    /// The model config list was replaced (gRPC `HandleReloadConfigRequest`).
    ReloadConfig,
    /// A training or scoring job was submitted for the model (`detail`: job id, kind).
    JobSubmit,
    /// A job's cancel was asked (`detail`: job id, kind).
    JobCancel,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Upload => "upload",
            EventKind::State => "state",
            EventKind::Reload => "reload",
            EventKind::Stop => "stop",
            EventKind::Deploy => "deploy",
            EventKind::Delete => "delete",
            EventKind::ReloadConfig => "reload_config",
            EventKind::JobSubmit => "job_submit",
            EventKind::JobCancel => "job_cancel",
        }
    }
}

/// One row of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// The row's id (0 until written); history pages by it.
    pub id: i64,
    pub at_ms: i64,
    pub model: String,
    pub version: Option<u64>,
    pub kind: String,
    /// What the kind records (an upload's bytes, sha256 and file name; a state
    /// change's from, to and error; a deployment's settings).
    pub detail: Value,
    /// The client's address, when a client asked.
    pub client: Option<String>,
    /// The name of the token it used.
    pub actor: Option<String>,
    /// Which server process recorded it.
    pub replica: String,
}

/// One page of a model's history, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPage {
    pub events: Vec<Event>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next_before: Option<i64>,
}

/// Most events written in one transaction.
const BATCH: usize = 256;

impl Store {
    /// Records an event: buffered, written by the background writer. Never waits.
    pub fn record(
        &self,
        kind: EventKind,
        model: &str,
        version: Option<u64>,
        detail: Value,
        client: Option<String>,
        actor: Option<String>,
    ) {
        self.record_event(self.new_event(kind, model, version, detail, client, actor));
    }

    /// An event of this replica, now, not written yet (`id` 0).
    pub(super) fn new_event(
        &self,
        kind: EventKind,
        model: &str,
        version: Option<u64>,
        detail: Value,
        client: Option<String>,
        actor: Option<String>,
    ) -> Event {
        Event {
            id: 0,
            at_ms: now_ms(),
            model: model.to_string(),
            version,
            kind: kind.as_str().to_string(),
            detail,
            client,
            actor,
            replica: self.replica.clone(),
        }
    }

    /// Puts `event` in the recent-events memory and the background writer's buffer
    /// ([`Store::record`]); a full buffer drops it, counted and logged.
    pub(super) fn record_event(&self, event: Event) {
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            let list = recent.entry(event.model.clone()).or_default();
            list.push_front(event.clone());
            list.truncate(RECENT_EVENTS);
        }
        let (model, kind) = (event.model.clone(), event.kind.clone());
        if self.events.try_send(event).is_err() {
            crate::metrics::record_store_dropped("events");
            tracing::warn!(
                model,
                kind,
                "the audit buffer is full (the metadata store is down or slow); event dropped"
            );
        }
    }

    /// Adds events another process recorded (a worker's) to the recent-events
    /// memory, where they fall by time.
    pub(super) fn remember_events(&self, events: &[Event]) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            let list = recent.entry(event.model.clone()).or_default();
            let at = list
                .iter()
                .position(|e| e.at_ms <= event.at_ms)
                .unwrap_or(list.len());
            list.insert(at, event.clone());
            list.truncate(RECENT_EVENTS);
        }
    }

    /// The latest events of `model` known to this process, newest first (status).
    pub fn recent_events(&self, model: &str) -> Vec<Event> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .get(model)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Fills the recent-events memory from the database at start.
    pub(super) async fn load_recent_events(&self) -> Result<(), StoreError> {
        let page = self.query_events(None, None, 2000).await?;
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        for event in page {
            let list = recent.entry(event.model.clone()).or_default();
            if list.len() < RECENT_EVENTS {
                list.push_back(event);
            }
        }
        Ok(())
    }

    /// A page of `model`'s history, newest first: at most `limit` events with ids
    /// below `before` (all when `None`).
    pub async fn history(
        &self,
        model: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<HistoryPage, StoreError> {
        let limit = limit.clamp(1, 1000);
        let events = self.query_events(Some(model), before, limit + 1).await?;
        let more = events.len() > limit;
        let mut events = events;
        events.truncate(limit);
        let next_before = if more {
            events.last().map(|e| e.id)
        } else {
            None
        };
        Ok(HistoryPage {
            events,
            next_before,
        })
    }

    async fn query_events(
        &self,
        model: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.query_events_in(model, before, limit, "DESC").await
    }

    /// The `limit` oldest events, oldest first (a worker's, moved into the main
    /// server's store: `imports`).
    pub(super) async fn oldest_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.query_events_in(None, None, limit, "ASC").await
    }

    async fn query_events_in(
        &self,
        model: Option<&str>,
        before: Option<i64>,
        limit: usize,
        order: &'static str,
    ) -> Result<Vec<Event>, StoreError> {
        let mut sql = String::from(
            "SELECT id, at_ms, model, version, kind, detail, client, actor, replica FROM events",
        );
        let mut clauses = Vec::new();
        if model.is_some() {
            clauses.push("model = ?");
        }
        if before.is_some() {
            clauses.push("id < ?");
        }
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY id {order} LIMIT {limit}"));
        let sql = self.sql(&sql).into_owned();
        let rows: Result<Vec<Event>, sqlx::Error> = on_pool!(&self.pool, p => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(&*sql));
            if let Some(m) = model {
                q = q.bind(m);
            }
            if let Some(b) = before {
                q = q.bind(b);
            }
            match tokio::time::timeout(self.timeout, q.fetch_all(p)).await {
                Err(_) => Err(sqlx::Error::PoolTimedOut),
                Ok(Err(e)) => Err(e),
                Ok(Ok(rows)) => rows
                    .iter()
                    .map(|r| {
                        let detail: String = r.try_get("detail")?;
                        Ok(Event {
                            id: r.try_get("id")?,
                            at_ms: r.try_get("at_ms")?,
                            model: r.try_get("model")?,
                            version: r
                                .try_get::<Option<i64>, _>("version")?
                                .map(|v| v as u64),
                            kind: r.try_get("kind")?,
                            detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
                            client: r.try_get("client")?,
                            actor: r.try_get("actor")?,
                            replica: r.try_get("replica")?,
                        })
                    })
                    .collect(),
            }
        });
        let rows = rows.map_err(|e| self.unavailable("read the history", e))?;
        self.worked();
        Ok(rows)
    }

    /// Inserts `events` in one transaction; answers the id each was given.
    pub(super) async fn insert_events(&self, events: &[Event]) -> Result<Vec<i64>, sqlx::Error> {
        use super::pool::Pool;
        let sql = self.sql(
            "INSERT INTO events (at_ms, model, version, kind, detail, client, actor, replica) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        );
        macro_rules! bound {
            ($query:expr, $e:expr) => {
                $query
                    .bind($e.at_ms)
                    .bind(&$e.model)
                    .bind($e.version.map(|v| v as i64))
                    .bind(&$e.kind)
                    .bind($e.detail.to_string())
                    .bind(&$e.client)
                    .bind(&$e.actor)
                    .bind(&$e.replica)
            };
        }
        let mut ids = Vec::with_capacity(events.len());
        // Each database says the new id its own way.
        macro_rules! executed {
            ($pool:expr, $id:expr) => {{
                let mut tx = $pool.begin().await?;
                for e in events {
                    let done = bound!(sqlx::query(sqlx::AssertSqlSafe(&*sql)), e)
                        .execute(&mut *tx)
                        .await?;
                    ids.push($id(done));
                }
                tx.commit().await?;
            }};
        }
        match &self.pool {
            Pool::Sqlite(p) => {
                executed!(p, |d: sqlx::sqlite::SqliteQueryResult| d
                    .last_insert_rowid())
            }
            Pool::MySql(p) => {
                executed!(p, |d: sqlx::mysql::MySqlQueryResult| d.last_insert_id()
                    as i64)
            }
            Pool::Postgres(p) => {
                let returning = format!("{sql} RETURNING id");
                let mut tx = p.begin().await?;
                for e in events {
                    let id: i64 = bound!(sqlx::query_scalar(sqlx::AssertSqlSafe(&*returning)), e)
                        .fetch_one(&mut *tx)
                        .await?;
                    ids.push(id);
                }
                tx.commit().await?;
            }
        }
        Ok(ids)
    }

    /// Gives the events this process recorded (held in the recent-events memory
    /// with id 0 until written) the ids the database gave them, so that
    /// `/models/status` names them as `/history` does.
    pub(super) fn written(&self, events: &[Event], ids: &[i64]) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        for (event, &id) in events.iter().zip(ids) {
            if let Some(kept) = recent.get_mut(&event.model).and_then(|list| {
                list.iter_mut().rev().find(|k| {
                    k.id == 0
                        && k.at_ms == event.at_ms
                        && k.kind == event.kind
                        && k.version == event.version
                        && k.detail == event.detail
                })
            }) {
                kept.id = id;
            }
        }
    }
}

impl Store {
    /// Inserts `events` in order ([`write_in_halves`]), each range in its own
    /// transaction: answers how many, from the first, are done (written, or refused
    /// by the database as such and dropped with a warning that names `whose` events
    /// they were), the ids they got (0 for one refused) and the outage that cut
    /// the writing short, if one did.
    pub(super) async fn insert_events_in_halves(
        &self,
        events: &[Event],
        whose: &str,
    ) -> (usize, Vec<i64>, Result<(), WriteError>) {
        // Locked only once a range is written, never across an await.
        let ids = std::sync::Mutex::new(vec![0; events.len()]);
        let (done, written) = write_in_halves(
            self,
            events,
            |range| {
                let ids = &ids;
                async move {
                    let got = within(self, self.insert_events(&events[range.clone()])).await?;
                    ids.lock().unwrap_or_else(|e| e.into_inner())[range].copy_from_slice(&got);
                    Ok(())
                }
            },
            |event, error| {
                tracing::warn!(
                    model = %event.model,
                    kind = %event.kind,
                    "the metadata store refused {whose} ({error}); it was dropped, and later \
                     events are written"
                );
            },
        )
        .await;
        (
            done,
            ids.into_inner().unwrap_or_else(|e| e.into_inner()),
            written,
        )
    }
}

/// Writes `batch` and empties it, or answers the outage that stopped it, leaving
/// in it the events not written. An event the database refuses as such (a value
/// too long for its column, say: not an outage) is dropped, so that it never
/// holds the events after it.
async fn write_batch(store: &Store, batch: &mut Vec<Event>) -> Result<(), WriteError> {
    let (done, ids, written) = store.insert_events_in_halves(batch, "an audit event").await;
    let (kept, kept_ids): (Vec<Event>, Vec<i64>) = batch
        .drain(..done)
        .zip(ids)
        .filter(|(_, id)| *id != 0)
        .unzip();
    store.written(&kept, &kept_ids);
    written
}

/// The audit writer: takes what the buffer holds (up to [`BATCH`] at a time) and
/// writes it; while the database is down it keeps what is not written and retries
/// with a growing pause. On `stop` it writes what is left, for at most `drain`.
pub(super) async fn write_events(
    store: Arc<Store>,
    mut rx: tokio::sync::mpsc::Receiver<Event>,
    stop: CancellationToken,
    drain: Duration,
) {
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
    let mut pause = Duration::from_millis(100);
    loop {
        if batch.is_empty() {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        match write_batch(&store, &mut batch).await {
            Ok(()) => {
                store.worked();
                pause = Duration::from_millis(100);
            }
            Err(why) => {
                if store.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        url = %store.url,
                        "the metadata store is unreachable ({why}); {} audit events wait",
                        batch.len()
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => break,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
    // Stopping: what is buffered, within the drain time.
    let _ = tokio::time::timeout(drain, async {
        rx.close();
        while let Some(e) = rx.recv().await {
            batch.push(e);
        }
        if let Err(e) = write_batch(&store, &mut batch).await {
            tracing::warn!("{} audit events not written at shutdown: {e}", batch.len());
        }
    })
    .await;
}
