//! What the metadata store keeps, over REST: `GET /v1/models/{m}/history` (the audit
//! trail, paged) and `GET /v1/models/{m}/predictions` (the prediction log, as JSON
//! lines or CSV). Both are management routes: they show who did what, and what
//! clients sent. Reached through the TF Serving path parser (`tfs.rs`), which owns
//! `/v1/models/...`.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, HttpError};
use crate::api::ApiError;
use crate::store::prediction_pages::{LoggedText, PageCursor, PAGE_ROWS};
use crate::store::{LoggedPrediction, PredictionQuery, Store};

fn store(state: &AppState) -> Result<&Store, HttpError> {
    state.store.as_deref().ok_or_else(|| {
        HttpError(ApiError::Unavailable(
            "this server runs without a metadata store".into(),
        ))
    })
}

/// The query's parameters; one given twice is a 400 (which one would count is
/// not for the server to guess: `limit=1&limit=2`).
fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, HttpError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    for (i, (name, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
            return Err(HttpError(ApiError::InvalidArgument(format!(
                "query parameter {name:?} is given twice: give it once"
            ))));
        }
    }
    Ok(pairs)
}

fn integer(name: &str, value: &str) -> Result<i64, HttpError> {
    value.parse::<i64>().map_err(|_| {
        HttpError(ApiError::InvalidArgument(format!(
            "{name} must be an integer, not {value:?}"
        )))
    })
}

fn unknown(name: &str, known: &str) -> HttpError {
    HttpError(ApiError::InvalidArgument(format!(
        "unknown query parameter {name:?} (known: {known})"
    )))
}

/// `GET /v1/models/{m}/history?limit=N&before=ID`: newest first; `next_before`
/// gives the next page.
pub async fn history(
    state: &AppState,
    model: &str,
    query: Option<&str>,
) -> Result<Response, HttpError> {
    // A deleted model keeps its history; a name never served has none, whatever
    // page is asked for (looked up first: a 404 whatever the parameters say).
    if !known_to_server(state, model) {
        let first = store(state)?.history(model, None, 1).await;
        if first.map_err(ApiError::from)?.events.is_empty() {
            return Err(not_found(model));
        }
    }
    let (mut limit, mut before) = (50usize, None);
    for (k, v) in query_pairs(query)? {
        match k.as_str() {
            "limit" => {
                limit = usize::try_from(integer("limit", &v)?)
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| {
                        HttpError(ApiError::InvalidArgument(
                            "limit must be from 1 to 1000".into(),
                        ))
                    })?;
            }
            "before" => before = Some(integer("before", &v)?),
            other => return Err(unknown(other, "limit, before")),
        }
    }
    let store = store(state)?;
    let page = store
        .history(model, before, limit)
        .await
        .map_err(ApiError::from)?;
    Ok(axum::Json(json!({
        "model": model,
        "events": page.events,
        "next_before": page.next_before,
    }))
    .into_response())
}

/// Whether the server knows `model` now (served, on storage, or still finishing
/// requests). A name it does not know, with nothing stored under it either, is a
/// 404 (a misspelt name), not an empty answer: the handlers check the store for
/// it whatever page or time window was asked for.
fn known_to_server(state: &AppState, model: &str) -> bool {
    crate::api::manage::model_summary(state, model).is_ok()
}

/// The 404 for a model neither served nor with anything stored under it.
fn not_found(model: &str) -> HttpError {
    HttpError(ApiError::NotFound(format!("model {model:?} not found")))
}

/// A time as milliseconds since the epoch, or RFC 3339 (`Z` or a `±HH:MM` offset;
/// without one, UTC).
fn time_ms(name: &str, value: &str) -> Result<i64, HttpError> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    rfc3339_ms(value).ok_or_else(|| {
        HttpError(ApiError::InvalidArgument(format!(
            "{name} must be milliseconds since the epoch or an RFC 3339 time \
             (2026-12-02T10:00:00Z, 2026-12-02T11:00:00+01:00), not {value:?}"
        )))
    })
}

/// An RFC 3339 time in milliseconds since the epoch. humantime reads the time in
/// UTC only (it refused `+01:00` and dropped the offset after a fraction of a
/// second): the offset is taken off here and applied after.
fn rfc3339_ms(value: &str) -> Option<i64> {
    // RFC 3339 (§5.6) allows `t` and `z`; humantime reads only `T` and `Z`.
    let value = &value.to_ascii_uppercase();
    let split = value
        .len()
        .checked_sub(6)
        .filter(|&i| value.is_char_boundary(i))
        .map(|i| value.split_at(i));
    let (utc, offset_ms) = match split {
        // `…Z+01:00` says two things: refused.
        Some((time, offset))
            if offset.is_ascii()
                && matches!(offset.as_bytes()[0], b'+' | b'-')
                && !time.ends_with(['Z', 'z']) =>
        {
            let b = offset.as_bytes();
            let digits = |i: usize| -> Option<i64> {
                let (h, l) = (b[i], b[i + 1]);
                (h.is_ascii_digit() && l.is_ascii_digit())
                    .then(|| i64::from(h - b'0') * 10 + i64::from(l - b'0'))
            };
            let (hours, minutes) = (digits(1)?, digits(4)?);
            if b[3] != b':' || hours > 23 || minutes > 59 {
                return None;
            }
            let sign = if b[0] == b'-' { -1 } else { 1 };
            (format!("{time}Z"), sign * (hours * 60 + minutes) * 60_000)
        }
        _ => (value.to_string(), 0),
    };
    let t = humantime::parse_rfc3339_weak(&utc).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    // 11:00+01:00 is 10:00Z.
    Some(ms - offset_ms)
}

/// `GET /v1/models/{m}/predictions?since=&until=&limit=&format=jsonl|csv`: logged
/// predictions in time order, one per line. The model is looked up first: a name
/// the server does not know, with nothing logged under it, is a 404 whatever the
/// parameters say. The answer is streamed from the store a page at a time
/// ([`crate::store::prediction_pages`]): one read holds one page of rows, however
/// many its `limit` lets through (100000 entries of up to 1 MiB).
pub async fn predictions(
    state: &AppState,
    model: &str,
    query: Option<&str>,
) -> Result<Response, HttpError> {
    if !known_to_server(state, model) {
        // A deleted model's rows are still read; a name with none is not known.
        let logged = store(state)?
            .has_predictions(model)
            .await
            .map_err(ApiError::from)?;
        if !logged {
            return Err(not_found(model));
        }
    }
    let mut q = PredictionQuery {
        limit: 1000,
        ..PredictionQuery::default()
    };
    let mut csv = false;
    for (k, v) in query_pairs(query)? {
        match k.as_str() {
            "since" => q.since_ms = Some(time_ms("since", &v)?),
            "until" => q.until_ms = Some(time_ms("until", &v)?),
            "limit" => {
                q.limit = usize::try_from(integer("limit", &v)?)
                    .ok()
                    .filter(|l| (1..=100_000).contains(l))
                    .ok_or_else(|| {
                        HttpError(ApiError::InvalidArgument(
                            "limit must be from 1 to 100000".into(),
                        ))
                    })?;
            }
            "format" => {
                csv = match v.as_str() {
                    "jsonl" => false,
                    "csv" => true,
                    other => {
                        return Err(HttpError(ApiError::InvalidArgument(format!(
                            "format must be jsonl or csv, not {other:?}"
                        ))))
                    }
                }
            }
            other => return Err(unknown(other, "since, until, limit, format")),
        }
    }
    if let (Some(since), Some(until)) = (q.since_ms, q.until_ms) {
        if since > until {
            return Err(HttpError(ApiError::InvalidArgument(
                "since is after until: no time is in that range".into(),
            )));
        }
    }
    let store = state.store.clone().ok_or_else(|| {
        HttpError(ApiError::Unavailable(
            "this server runs without a metadata store".into(),
        ))
    })?;
    // The first page is read before the answer starts, so that a database that
    // cannot answer is a 503 rather than a cut answer.
    let first = store
        .prediction_page(model, &q, None, q.limit.min(PAGE_ROWS))
        .await
        .map_err(ApiError::from)?;
    let pages = PredictionPages {
        store,
        model: model.to_string(),
        left: q.limit,
        query: q,
        csv,
        header: csv,
        page: first.into_iter(),
        cursor: None,
        last_page: false,
    };
    let body = futures::stream::unfold(pages, |mut pages| async move {
        match pages.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), pages)),
            Ok(None) => None,
            Err(e) => {
                // The status line is sent: the client sees the answer cut off.
                tracing::warn!(model = %pages.model, "a prediction log read stopped: {e}");
                pages.last_page = true;
                pages.left = 0;
                Some((Err(std::io::Error::other(e.to_string())), pages))
            }
        }
    });
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// Bytes of lines gathered into one chunk of the streamed answer.
const CHUNK_BYTES: usize = 64 << 10;

/// A prediction log read being streamed: the page in hand, and where the next
/// one starts.
struct PredictionPages {
    store: std::sync::Arc<crate::store::Store>,
    model: String,
    query: PredictionQuery,
    csv: bool,
    /// Whether the CSV header is still to be written.
    header: bool,
    page: std::vec::IntoIter<LoggedText>,
    /// The last row read (`at_ms`, `id`): the next page starts after it.
    cursor: PageCursor,
    /// Rows the `limit` still lets through.
    left: usize,
    /// Whether the store answered an empty page (the window holds no more).
    last_page: bool,
}

impl PredictionPages {
    /// The next lines of the answer (a chunk of about [`CHUNK_BYTES`], or one
    /// row), reading the next page when this one is done; `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, ApiError> {
        let mut out = String::new();
        if std::mem::take(&mut self.header) {
            // The columns are named as the JSON lines' fields.
            out.push_str(CSV_HEADER);
        }
        while out.len() < CHUNK_BYTES && self.left > 0 {
            let Some(row) = self.page.next() else {
                if !out.is_empty() || self.last_page {
                    break;
                }
                let page = self
                    .store
                    .prediction_page(
                        &self.model,
                        &self.query,
                        self.cursor,
                        self.left.min(PAGE_ROWS),
                    )
                    .await?;
                self.last_page = page.is_empty();
                self.page = page.into_iter();
                continue;
            };
            self.cursor = Some((row.at_ms, row.id));
            self.left -= 1;
            write_row(&row.parsed(), self.csv, &mut out);
        }
        Ok((!out.is_empty()).then(|| bytes::Bytes::from(out)))
    }
}

/// One row of the answer, as a JSON line or a CSV line.
fn write_row(r: &LoggedPrediction, csv: bool, out: &mut String) {
    if csv {
        let fields = [
            r.id.to_string(),
            r.at_ms.to_string(),
            r.model.clone(),
            r.version.to_string(),
            r.protocol.clone(),
            r.latency_us.to_string(),
            r.request_id.clone(),
            r.inputs.to_string(),
            r.outputs.to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
    } else {
        out.push_str(&serde_json::to_string(r).unwrap_or_default());
    }
    out.push('\n');
}

/// The first line of the CSV answer: the JSON lines' field names, in their order.
const CSV_HEADER: &str = "id,at_ms,model,version,protocol,latency_us,request_id,inputs,outputs\n";

/// A CSV field, quoted when it holds a comma, quote or line break (RFC 4180).
fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling of one instant is that instant (a `+01:00` without a fraction
    /// was refused, with one its offset dropped; every negative offset refused).
    #[test]
    fn rfc3339_offsets_name_the_same_instant() {
        let want = 1_796_486_466_000; // 2026-12-05T16:01:06Z
        for spelling in [
            "2026-12-05T16:01:06Z",
            "2026-12-05T16:01:06+00:00",
            "2026-12-05T17:01:06+01:00",
            "2026-12-05T17:01:06.000+01:00",
            "2026-12-05T11:01:06-05:00",
            "2026-12-05T11:01:06.000-05:00",
            "2026-12-05T21:31:06+05:30",
            "2026-12-05T16:01:06",
            "1796486466000",
        ] {
            assert_eq!(time_ms("since", spelling).ok(), Some(want), "{spelling}");
        }
        assert_eq!(
            time_ms("since", "2026-12-05T16:01:06.250Z").ok(),
            Some(want + 250)
        );
        for bad in [
            "%C3%A912345",
            "\u{e9}12345",
            "x\u{20ac}12345",
            "2026-12-05T16:01:06Z+01:00",
            "2026-12-05T16:01:06+24:00",
            "2026-12-05T16:01:06+01:60",
            "2026-12-05T16:01:06+0100",
            "2026-02-30T00:00:00Z",
            "yesterday",
            "+01:00",
        ] {
            assert!(time_ms("since", bad).is_err(), "{bad}");
        }
    }

    /// The CSV columns are the JSON lines' fields, in their order (the time was
    /// `time_ms` in CSV, `at_ms` in JSON lines and in the paging advice).
    #[test]
    fn csv_columns_are_named_as_the_json_fields() {
        let row = crate::store::LoggedPrediction {
            id: 1,
            at_ms: 2,
            model: "m".into(),
            version: 3,
            protocol: "v2".into(),
            latency_us: 4,
            request_id: "00".into(),
            inputs: json!({}),
            outputs: json!({}),
        };
        let text = serde_json::to_string(&row).unwrap();
        let fields: Vec<String> = text
            .trim_matches(['{', '}'])
            .split(',')
            .map(|f| f.split(':').next().unwrap().trim_matches('"').to_string())
            .collect();
        assert_eq!(CSV_HEADER.trim_end().split(',').collect::<Vec<_>>(), fields);
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("iris"), "iris");
        assert_eq!(csv_field("[1,2]"), "\"[1,2]\"");
        assert_eq!(csv_field("{\"a\":1}"), "\"{\"\"a\"\":1}\"");
    }

    #[test]
    fn times_are_milliseconds_or_rfc3339() {
        assert_eq!(
            time_ms("since", "1700000000000").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            time_ms("since", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            time_ms("since", "2023-11-14t22:13:20z").unwrap(),
            1_700_000_000_000
        );
        assert!(time_ms("since", "yesterday").is_err());
    }
}
