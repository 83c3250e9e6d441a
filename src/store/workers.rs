//! The isolated deployments' registry rows (`workers` table): where each deployed
//! model's worker runs, so that a restarted main server re-spawns it on the same
//! port when that port is free. What the model is deployed with lives in
//! `model_settings`; this table only says where and in what state.

use sqlx::Row;

use super::pool::{on_pool, DbKind};
use super::{now_ms, Store, StoreError};

/// One worker's registry row.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub model: String,
    pub host: String,
    pub port: u16,
    pub pid: Option<u32>,
    pub state: String,
    /// The limits and how each is enforced, as JSON.
    pub resources: String,
    pub started_ms: i64,
}

impl Store {
    /// Records (replaces) `row`.
    pub async fn save_worker(&self, row: &WorkerRow) -> Result<(), StoreError> {
        let sql = match self.kind {
            DbKind::MySql => {
                "INSERT INTO workers (model, host, port, pid, state, resources, replica, \
                 started_ms, heartbeat_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE host = VALUES(host), port = VALUES(port), \
                 pid = VALUES(pid), state = VALUES(state), resources = VALUES(resources), \
                 replica = VALUES(replica), started_ms = VALUES(started_ms), \
                 heartbeat_ms = VALUES(heartbeat_ms)"
            }
            _ => {
                "INSERT INTO workers (model, host, port, pid, state, resources, replica, \
                 started_ms, heartbeat_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (model) DO UPDATE SET host = excluded.host, \
                 port = excluded.port, pid = excluded.pid, state = excluded.state, \
                 resources = excluded.resources, replica = excluded.replica, \
                 started_ms = excluded.started_ms, heartbeat_ms = excluded.heartbeat_ms"
            }
        };
        let sql = self.sql(sql);
        let now = now_ms();
        let replica = self.replica.clone();
        self.must_write("record the worker", async {
            on_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
                .bind(&row.model)
                .bind(&row.host)
                .bind(i64::from(row.port))
                .bind(row.pid.map(i64::from))
                .bind(&row.state)
                .bind(&row.resources)
                .bind(&replica)
                .bind(row.started_ms)
                .bind(now)
                .execute(p)
                .await
                .map(|_| ()))
        })
        .await
    }

    /// Forgets `model`'s worker (stopped or deleted).
    pub async fn forget_worker(&self, model: &str) -> Result<(), StoreError> {
        let sql = self.sql("DELETE FROM workers WHERE model = ?");
        self.must_write("forget the worker", async {
            on_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
                .bind(model)
                .execute(p)
                .await
                .map(|_| ()))
        })
        .await
    }

    /// Every recorded worker.
    pub async fn workers(&self) -> Result<Vec<WorkerRow>, StoreError> {
        let sql = "SELECT model, host, port, pid, state, resources, started_ms FROM workers \
                   ORDER BY model";
        let rows: Result<Vec<WorkerRow>, sqlx::Error> = on_pool!(&self.pool, p => {
            match sqlx::query(sql).fetch_all(p).await {
                Ok(rows) => rows
                    .iter()
                    .map(|r| {
                        let port: i64 = r.try_get("port")?;
                        let pid: Option<i64> = r.try_get("pid")?;
                        Ok(WorkerRow {
                            model: r.try_get("model")?,
                            host: r.try_get("host")?,
                            port: u16::try_from(port).unwrap_or(0),
                            pid: pid.and_then(|p| u32::try_from(p).ok()),
                            state: r.try_get("state")?,
                            resources: r.try_get("resources")?,
                            started_ms: r.try_get("started_ms")?,
                        })
                    })
                    .collect(),
                Err(e) => Err(e),
            }
        });
        rows.map_err(|e| self.unavailable("read the workers", e))
    }
}
