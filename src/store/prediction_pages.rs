//! The prediction log read back in pages of bounded size, for an answer streamed
//! to the client: one read holds one page at a time whatever its `limit` (it held
//! every row, then the whole answer: hundreds of MB for entries of up to 1 MiB).

use sqlx::Row;

use super::pool::{on_pool, DbKind};
use super::{LoggedPrediction, PredictionQuery, Store, StoreError};

/// Most JSON text (inputs and outputs) one page holds; a larger row alone.
pub const PAGE_BYTES: usize = 2 << 20;

/// Most rows one page holds.
pub const PAGE_ROWS: usize = 512;

/// Where a page starts: after the row of this `at_ms` and `id` (the answer's
/// order), or at the first row.
pub type PageCursor = Option<(i64, i64)>;

impl Store {
    /// `model`'s rows in `query`'s window after `after`, in time order (`at_ms`,
    /// then `id`): at most `rows`, and as many as fit in [`PAGE_BYTES`] of text
    /// (one at least). Their sizes are read first, so that no more than that is
    /// ever fetched. Empty when the window holds no more.
    pub async fn prediction_page(
        &self,
        model: &str,
        query: &PredictionQuery,
        after: PageCursor,
        rows: usize,
    ) -> Result<Vec<LoggedText>, StoreError> {
        let rows = rows.clamp(1, PAGE_ROWS);
        let size = match self.kind {
            DbKind::Postgres => "(LENGTH(inputs) + LENGTH(outputs))::bigint",
            _ => "LENGTH(inputs) + LENGTH(outputs)",
        };
        let sizes = self
            .page_query(&format!("{size} AS n"), model, query, after, rows)
            .await?;
        let mut text = 0usize;
        let mut fit = 0;
        for row in &sizes {
            let n: i64 = row.size;
            if fit > 0 && text + n.max(0) as usize > PAGE_BYTES {
                break;
            }
            text += n.max(0) as usize;
            fit += 1;
        }
        if fit == 0 {
            return Ok(Vec::new());
        }
        let full = "model, version, protocol, latency_us, request_id, inputs, outputs";
        let page = self.page_query(full, model, query, after, fit).await?;
        self.worked();
        Ok(page.into_iter().filter_map(|r| r.row).collect())
    }

    /// Runs `SELECT id, at_ms, <columns> … LIMIT rows` over the page's window.
    async fn page_query(
        &self,
        columns: &str,
        model: &str,
        query: &PredictionQuery,
        after: PageCursor,
        rows: usize,
    ) -> Result<Vec<PageRow>, StoreError> {
        let mut sql = format!("SELECT id, at_ms, {columns} FROM predictions WHERE model = ?");
        if query.since_ms.is_some() {
            sql.push_str(" AND at_ms >= ?");
        }
        if query.until_ms.is_some() {
            sql.push_str(" AND at_ms < ?");
        }
        if after.is_some() {
            sql.push_str(" AND (at_ms > ? OR (at_ms = ? AND id > ?))");
        }
        sql.push_str(&format!(" ORDER BY at_ms, id LIMIT {rows}"));
        let sql = self.sql(&sql).into_owned();
        let sized = columns.ends_with(" AS n");
        let got: Result<Vec<PageRow>, sqlx::Error> = on_pool!(&self.pool, p => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(&*sql)).bind(model);
            if let Some(s) = query.since_ms {
                q = q.bind(s);
            }
            if let Some(u) = query.until_ms {
                q = q.bind(u);
            }
            if let Some((at_ms, id)) = after {
                q = q.bind(at_ms).bind(at_ms).bind(id);
            }
            match tokio::time::timeout(self.timeout * 6, q.fetch_all(p)).await {
                Err(_) => Err(sqlx::Error::PoolTimedOut),
                Ok(Err(e)) => Err(e),
                Ok(Ok(rows)) => rows
                    .iter()
                    .map(|r| {
                        let (id, at_ms) = (r.try_get("id")?, r.try_get("at_ms")?);
                        if sized {
                            let size: Option<i64> = r.try_get("n")?;
                            return Ok(PageRow { size: size.unwrap_or(0), row: None });
                        }
                        let inputs: String = r.try_get("inputs")?;
                        let outputs: String = r.try_get("outputs")?;
                        let size = (inputs.len() + outputs.len()) as i64;
                        let row = LoggedText {
                            id,
                            at_ms,
                            model: r.try_get("model")?,
                            version: r.try_get::<i64, _>("version")? as u64,
                            protocol: r.try_get("protocol")?,
                            latency_us: r.try_get("latency_us")?,
                            request_id: r.try_get("request_id")?,
                            inputs,
                            outputs,
                        };
                        Ok(PageRow { size, row: Some(row) })
                    })
                    .collect(),
            }
        });
        got.map_err(|e| self.unavailable("read the prediction log", e))
    }

    /// Whether anything is logged under `model`, at any time.
    pub async fn has_predictions(&self, model: &str) -> Result<bool, StoreError> {
        let page = self
            .page_query("id AS n", model, &PredictionQuery::default(), None, 1)
            .await?;
        self.worked();
        Ok(!page.is_empty())
    }
}

/// A row of a page: its size alone (the first query), or the row.
struct PageRow {
    size: i64,
    row: Option<LoggedText>,
}

/// A logged prediction as stored: its inputs and outputs are JSON text, parsed
/// one row at a time as the answer is written ([`LoggedText::parsed`]), so that a
/// page's tensors are never all parsed at once (a few times their text).
pub struct LoggedText {
    pub id: i64,
    pub at_ms: i64,
    pub model: String,
    pub version: u64,
    pub protocol: String,
    pub latency_us: i64,
    pub request_id: String,
    pub inputs: String,
    pub outputs: String,
}

impl LoggedText {
    /// The row as [`Store::predictions`] answers it (text that is not JSON, never
    /// written by the server, is `null`).
    pub fn parsed(self) -> LoggedPrediction {
        LoggedPrediction {
            id: self.id,
            at_ms: self.at_ms,
            model: self.model,
            version: self.version,
            protocol: self.protocol,
            latency_us: self.latency_us,
            request_id: self.request_id,
            inputs: serde_json::from_str(&self.inputs).unwrap_or_default(),
            outputs: serde_json::from_str(&self.outputs).unwrap_or_default(),
        }
    }
}
