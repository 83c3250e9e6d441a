//! `model_settings`: what management decided per model (stopped, deployment),
//! restored at start.
//!
//! A write here is made before the change it records, bounded by the database
//! timeout: a call whose write fails answers 503 and changes nothing. A write that
//! outlives the timeout is not dropped, though: the database may have received it
//! and apply it later (a lock held elsewhere, a server paused), which would leave a
//! row saying what the server never did, in force after the next restart. So a
//! write runs on a task of its own, and one that did not answer in time leaves its
//! model *unsettled*: the task waits for the write's end (at most two minutes: a
//! connection to a host that died may never answer) and, when it landed after
//! all, writes back what the caller gave as in force when refused (retrying until
//! the database takes it). Until then every other settings write for that model is
//! refused (503), so nothing newer can be overwritten by the late one or by its
//! correction.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::pool::{on_pool, DbKind, Pool};
use super::{now_ms, Store, StoreError};
use crate::sources::Deployment;

/// What management decided for one model, restored at start.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelSettings {
    pub model: String,
    pub stopped: bool,
    pub deployment: Option<Deployment>,
}

/// Models whose last settings write did not answer in time and is not settled yet.
pub(super) type Unsettled = Arc<Mutex<HashSet<String>>>;

impl Store {
    /// Records whether `model` is stopped and how it is deployed (`None`: not
    /// deployed), replacing what was recorded. `if_refused` is what is in force
    /// should this call fail: what the row must say again if the write lands after
    /// this call has answered an error (see the module's documentation).
    pub async fn save_model_settings(
        &self,
        row: &ModelSettings,
        if_refused: &ModelSettings,
    ) -> Result<(), StoreError> {
        let write = write_row(self.pool.clone(), self.kind, row.clone());
        self.settled_write(&row.model, write, if_refused).await
    }

    /// Marks `model` as no longer stopped, keeping its deployment (a reload);
    /// `if_refused` as for [`Store::save_model_settings`].
    pub async fn unstop_model(
        &self,
        model: &str,
        if_refused: &ModelSettings,
    ) -> Result<(), StoreError> {
        let sql = self
            .sql("UPDATE model_settings SET stopped = 0, updated_ms = ? WHERE model = ?")
            .into_owned();
        let (pool, model_owned, now) = (self.pool.clone(), model.to_string(), now_ms());
        let write = async move {
            on_pool!(&pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
                .bind(now)
                .bind(&model_owned)
                .execute(p)
                .await
                .map(|_| ()))
        };
        self.settled_write(model, write, if_refused).await
    }

    /// Forgets what was decided for `model` (before a delete); `if_refused` as for
    /// [`Store::save_model_settings`].
    pub async fn forget_model(
        &self,
        model: &str,
        if_refused: &ModelSettings,
    ) -> Result<(), StoreError> {
        let sql = self
            .sql("DELETE FROM model_settings WHERE model = ?")
            .into_owned();
        let (pool, name) = (self.pool.clone(), model.to_string());
        let write = async move {
            on_pool!(&pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
                .bind(&name)
                .execute(p)
                .await
                .map(|_| ()))
        };
        self.settled_write(model, write, if_refused).await
    }

    /// Writes back `row`, the settings in force, after a change recorded first and
    /// then refused (or a deployment put back after its row was rewritten): a
    /// write that must land, or the store says what the server does not do, which
    /// a restart would make so. It is tried until the database takes it, on a task
    /// of its own (each attempt bounded by the timeout, one a second), with the
    /// model unsettled meanwhile. Answers an error when it has not landed within
    /// the timeout (it is still being tried).
    pub async fn write_back_model_settings(&self, row: &ModelSettings) -> Result<(), StoreError> {
        let settled = self.unsettle(&row.model)?;
        let (pool, kind, row) = (self.pool.clone(), self.kind, row.clone());
        let (landed, written) = tokio::sync::oneshot::channel();
        self.write_until_taken(
            "write back the model's settings in force",
            move || write_row(pool.clone(), kind, row.clone()),
            move || {
                settled();
                let _ = landed.send(());
            },
        );
        match tokio::time::timeout(self.timeout, written).await {
            Ok(Ok(())) => {
                self.worked();
                Ok(())
            }
            _ => Err(self.timed_out("write back the model's settings in force (tried again every second until it lands)")),
        }
    }

    fn not_settled(&self, model: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "the metadata store ({} at {}) has not settled an earlier write for model \
                 '{model}' (it did not answer within {:?}); its settings cannot change \
                 until it has",
            self.kind(),
            self.url,
            self.timeout
        ))
    }

    /// Runs one settings write for `model` ([`Store::write_undone_if_late`]): past
    /// the timeout the model stays unsettled until the write has ended and, if it
    /// landed, `if_refused` has been written back.
    async fn settled_write(
        &self,
        model: &str,
        write: impl Future<Output = Result<(), sqlx::Error>> + Send + 'static,
        if_refused: &ModelSettings,
    ) -> Result<(), StoreError> {
        let settled = self.unsettle(model)?;
        let (pool, kind) = (self.pool.clone(), self.kind);
        let correction = ModelSettings {
            model: model.to_string(),
            ..if_refused.clone()
        };
        self.write_undone_if_late(
            "record the model's settings",
            write,
            move || write_row(pool.clone(), kind, correction.clone()),
            settled,
        )
        .await
    }

    /// Marks `model` unsettled while a settings write of its is in flight (settings
    /// writes for one model come one at a time, under the model's lock); answers
    /// what settles it again, or 503 when an earlier write has not settled.
    fn unsettle(&self, model: &str) -> Result<impl FnOnce() + Send + 'static, StoreError> {
        if !self
            .unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(model.to_string())
        {
            return Err(self.not_settled(model));
        }
        let (unsettled, name) = (self.unsettled.clone(), model.to_string());
        Ok(move || {
            unsettled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
        })
    }

    /// Every model's recorded settings (start-up restores them).
    pub async fn model_settings(&self) -> Result<Vec<ModelSettings>, StoreError> {
        let sql = "SELECT model, stopped, deployment FROM model_settings ORDER BY model";
        let rows: Result<Vec<(String, i64, Option<String>)>, sqlx::Error> = on_pool!(&self.pool, p => {
            match sqlx::query(sql).fetch_all(p).await {
                Ok(rows) => rows
                    .iter()
                    .map(|r| Ok((r.try_get("model")?, r.try_get("stopped")?, r.try_get("deployment")?)))
                    .collect(),
                Err(e) => Err(e),
            }
        });
        let rows = rows.map_err(|e| self.unavailable("read the model settings", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (model, stopped, deployment) in rows {
            let deployment = match deployment {
                None => None,
                Some(text) => match serde_json::from_str::<DeploymentRecord>(&text) {
                    Ok(d) => Some(Deployment::from(d)),
                    Err(e) => {
                        tracing::warn!(model, "a stored deployment cannot be read ({e}); ignored");
                        None
                    }
                },
            };
            out.push(ModelSettings {
                model,
                stopped: stopped != 0,
                deployment,
            });
        }
        Ok(out)
    }
}

/// Writes `row` whole (an upsert), owning what it needs so that it can run on a
/// task of its own.
fn write_row(
    pool: Pool,
    kind: DbKind,
    row: ModelSettings,
) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'static {
    let deployment = row
        .deployment
        .as_ref()
        .map(|d| serde_json::to_string(&DeploymentRecord::from(d)).unwrap_or_default());
    let sql = match kind {
        DbKind::MySql => {
            "INSERT INTO model_settings (model, stopped, deployment, updated_ms) \
             VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE stopped = VALUES(stopped), \
             deployment = VALUES(deployment), updated_ms = VALUES(updated_ms)"
        }
        _ => {
            "INSERT INTO model_settings (model, stopped, deployment, updated_ms) \
             VALUES (?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET \
             stopped = excluded.stopped, deployment = excluded.deployment, \
             updated_ms = excluded.updated_ms"
        }
    };
    let sql = super::pool::placeholders(kind, sql).into_owned();
    let stopped = i64::from(row.stopped);
    let now = now_ms();
    async move {
        on_pool!(&pool, p => sqlx::query(sqlx::AssertSqlSafe(&*sql))
            .bind(&row.model)
            .bind(stopped)
            .bind(&deployment)
            .bind(now)
            .execute(p)
            .await
            .map(|_| ()))
    }
}

/// A deployment as stored (JSON in `model_settings.deployment`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DeploymentRecord {
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    cpu_limit: Option<String>,
    #[serde(default)]
    memory_limit: Option<String>,
    #[serde(default)]
    timeout_secs: Option<f64>,
}

impl From<&Deployment> for DeploymentRecord {
    fn from(d: &Deployment) -> DeploymentRecord {
        DeploymentRecord {
            environment: d.environment.clone(),
            cpu_limit: d.cpu_limit.clone(),
            memory_limit: d.memory_limit.clone(),
            timeout_secs: d.timeout_secs,
        }
    }
}

impl From<DeploymentRecord> for Deployment {
    fn from(d: DeploymentRecord) -> Deployment {
        Deployment {
            environment: d.environment,
            cpu_limit: d.cpu_limit,
            memory_limit: d.memory_limit,
            timeout_secs: d.timeout_secs,
        }
    }
}
