//! The simple JSON prediction API of the services ferroserve replaces:
//!
//! * `POST /predict {"model_id": "iris_lr", "features": [5.1, 3.5, 1.4, 0.2]}`; features
//!   may also be a list of rows, an object of named features, or a list of those, and
//!   `"version"` a number or a label;
//! * `GET /predict/iris_lr?sepal_length=5.1&sepal_width=3.5&…` (named features).
//!
//! Answer: `{"model_id", "version", "prediction", "probabilities"?, "classes"?,
//! "latency", "timestamp"}`; one row in gives single values out, a list of rows gives
//! lists.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{body, parse_json, AppState, HttpError};
use crate::api::simple::{simple_predict, Rows, SimpleRequest, SimpleResponse};
use crate::api::ApiError;
use crate::json_tensor::{nested, row};
use crate::manager::VersionRequest;
use crate::model_config::FeatureValue;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/predict", post(predict_post))
        .route("/predict/{model_id}", get(predict_get))
}

fn invalid(msg: impl Into<String>) -> HttpError {
    HttpError(ApiError::InvalidArgument(msg.into()))
}

fn feature(v: &Value) -> Result<FeatureValue, HttpError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .map(FeatureValue::Number)
            .ok_or_else(|| invalid(format!("feature value {n} is not a number"))),
        Value::String(s) => Ok(FeatureValue::Text(s.clone())),
        Value::Bool(b) => Ok(FeatureValue::Number(f64::from(u8::from(*b)))),
        other => Err(invalid(format!(
            "a feature value must be a number or a string, not {other}"
        ))),
    }
}

fn named_row(
    o: &serde_json::Map<String, Value>,
) -> Result<BTreeMap<String, FeatureValue>, HttpError> {
    o.iter()
        .map(|(k, v)| Ok((k.clone(), feature(v)?)))
        .collect()
}

/// Reads `features` into rows; the flag says whether one row was given bare.
fn parse_features(features: &Value) -> Result<(Rows, bool), HttpError> {
    let shape_error = || {
        invalid(
            "features must be a list of values, a list of rows, an object of named features, \
             or a list of such objects",
        )
    };
    match features {
        Value::Object(o) => Ok((Rows::Named(vec![named_row(o)?]), true)),
        Value::Array(items) => match items.first() {
            None => Err(invalid("features is empty")),
            Some(Value::Array(_)) => {
                let rows = items
                    .iter()
                    .map(|r| match r {
                        Value::Array(values) => values.iter().map(feature).collect(),
                        _ => Err(shape_error()),
                    })
                    .collect::<Result<_, _>>()?;
                Ok((Rows::Positional(rows), false))
            }
            Some(Value::Object(_)) => {
                let rows = items
                    .iter()
                    .map(|r| match r {
                        Value::Object(o) => named_row(o),
                        _ => Err(shape_error()),
                    })
                    .collect::<Result<_, _>>()?;
                Ok((Rows::Named(rows), false))
            }
            Some(_) => {
                let row = items.iter().map(feature).collect::<Result<_, _>>()?;
                Ok((Rows::Positional(vec![row]), true))
            }
        },
        _ => Err(shape_error()),
    }
}

fn parse_version(v: Option<&Value>) -> Result<VersionRequest, HttpError> {
    match v {
        None | Some(Value::Null) => Ok(VersionRequest::Latest),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|v| *v > 0)
            .map(VersionRequest::Specific)
            .ok_or_else(|| invalid(format!("version {n} is not a positive integer"))),
        Some(Value::String(s)) => Ok(version_from_text(s)),
        Some(other) => Err(invalid(format!(
            "version must be a number or a label, not {other}"
        ))),
    }
}

/// `"3"` is version 3; any other text is a label.
fn version_from_text(s: &str) -> VersionRequest {
    match crate::repository::parse_version(s) {
        Some(v) => VersionRequest::Specific(v),
        None => VersionRequest::Label(s.to_string()),
    }
}

/// `POST /predict`
async fn predict_post(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let bytes = body(bytes, state.settings.max_request_bytes)?;
    let request: Value = parse_json(&bytes)?;
    let Value::Object(request) = request else {
        return Err(invalid("the body must be a JSON object"));
    };
    if let Some(unknown) = request
        .keys()
        .find(|k| !matches!(k.as_str(), "model_id" | "features" | "version"))
    {
        return Err(invalid(format!(
            "unknown field {unknown:?}; expected model_id, features and version"
        )));
    }
    let model = match request.get("model_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(invalid("model_id (a string) is required")),
    };
    let features = request
        .get("features")
        .ok_or_else(|| invalid("features is required"))?;
    let (rows, single) = parse_features(features)?;
    let version = parse_version(request.get("version"))?;
    let response = simple_predict(
        &state,
        SimpleRequest {
            model,
            version,
            rows,
        },
    )
    .await?;
    Ok(Json(encode(&response, single)))
}

/// `GET /predict/{model_id}?name=value&…`; `version` may name a version or a label.
async fn predict_get(
    State(state): State<AppState>,
    Path(model): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, HttpError> {
    let mut query = query;
    let version = match query.remove("version") {
        Some(v) => version_from_text(&v),
        None => VersionRequest::Latest,
    };
    let row: BTreeMap<String, FeatureValue> = query
        .into_iter()
        .map(|(k, v)| {
            let value = match v.trim().parse::<f64>() {
                Ok(n) if n.is_finite() => FeatureValue::Number(n),
                _ => FeatureValue::Text(v),
            };
            (k, value)
        })
        .collect();
    let response = simple_predict(
        &state,
        SimpleRequest {
            model,
            version,
            rows: Rows::Named(vec![row]),
        },
    )
    .await?;
    Ok(Json(encode(&response, true)))
}

fn encode(r: &SimpleResponse, single: bool) -> Value {
    let pick = |t: &crate::tensor::Tensor| if single { row(t, 0) } else { nested(t) };
    let mut out = json!({
        "model_id": &*r.handle.model,
        "version": r.handle.version,
        "prediction": pick(&r.prediction),
        "latency": r.latency.as_secs_f64(),
        "timestamp": utc_timestamp(SystemTime::now()),
    });
    if let Some(p) = &r.probabilities {
        out["probabilities"] = pick(p);
        if let Some(labels) = &r.class_labels {
            out["classes"] = json!(labels);
        }
    }
    out
}

/// RFC 3339 UTC time with milliseconds, e.g. `2024-05-01T12:00:00.123Z`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
        assert_eq!(utc_timestamp(t), "2024-05-01T12:00:00.123Z");
        assert_eq!(
            utc_timestamp(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn features_in_every_form() {
        let (rows, single) = parse_features(&json!([1, 2.5, "x"])).unwrap();
        assert!(single);
        assert!(matches!(rows, Rows::Positional(r) if r.len() == 1 && r[0].len() == 3));
        let (rows, single) = parse_features(&json!([[1, 2], [3, 4]])).unwrap();
        assert!(!single);
        assert!(matches!(rows, Rows::Positional(r) if r.len() == 2));
        let (rows, _) = parse_features(&json!({"a": 1})).unwrap();
        assert!(matches!(rows, Rows::Named(r) if r[0]["a"] == FeatureValue::Number(1.0)));
        for bad in [
            json!([]),
            json!(3),
            json!([[1], 2]),
            json!([{"a": 1}, 2]),
            json!([null]),
        ] {
            assert!(parse_features(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_version(Some(&json!("stable"))).unwrap(),
            VersionRequest::Label("stable".into())
        );
        assert_eq!(
            parse_version(Some(&json!("2"))).unwrap(),
            VersionRequest::Specific(2)
        );
        assert!(parse_version(Some(&json!(0))).is_err());
    }
}
