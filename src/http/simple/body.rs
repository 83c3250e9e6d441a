//! Reading the simple API's bodies: JSON (features as rows, a row, named features, or
//! texts), form-encoded (and a GET's query string), and multipart (an image model's
//! files), into one [`SimpleBody`]; and [`model_of_body`], the model a body names, for
//! the forwarding layer.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap};
use serde_json::Value;

use crate::api::bounds::RequestBounds;
use crate::api::simple::Rows;
use crate::api::ApiError;
use crate::http::{body, AppState, HttpError};
use crate::json_tensor::{
    parse_bounded, parse_seed, BoundedObject, BoundedValue, Budget, Rows as JsonRows,
};
use crate::manager::VersionRequest;
use crate::model_config::FeatureValue;

pub(super) fn invalid(msg: impl Into<String>) -> HttpError {
    HttpError(ApiError::InvalidArgument(msg.into()))
}

fn feature(v: &Value) -> Result<FeatureValue, HttpError> {
    match v {
        Value::Number(n) => match n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)) {
            Some(i) => Ok(FeatureValue::integer(i)),
            None => n
                .as_f64()
                .map(FeatureValue::Number)
                .ok_or_else(|| invalid(format!("feature value {n} is not a number"))),
        },
        Value::String(s) => Ok(FeatureValue::Text(s.clone())),
        // Kept a boolean until the input's type is known (`api::simple::column_data`):
        // 1 or 0 to a numeric input, itself to a BOOL one, refused by a text one.
        Value::Bool(b) => Ok(FeatureValue::Bool(*b)),
        // A missing value: taken only by an input the model imputes.
        Value::Null => Ok(FeatureValue::Missing),
        other => Err(invalid(format!(
            "a feature value must be a number, a string, a boolean or null, not {other}"
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

/// A decoded simple-API body or query string; the model may come from the path instead.
pub(super) struct SimpleBody {
    pub(super) model: Option<String>,
    pub(super) version: VersionRequest,
    pub(super) rows: Rows,
    /// One row was given bare, so single values are answered.
    pub(super) single: bool,
    /// A fastText model's `k` and `threshold` (JSON bodies only).
    pub(super) options: crate::backends::PredictOptions,
    /// Named classes per row, for a model with `[postprocess] labels` (JSON and
    /// multipart bodies).
    pub(super) top_k: Option<usize>,
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            starts_with_ignoring_case(v.trim_start(), "application/x-www-form-urlencoded")
        })
}

/// Whether `text` starts with `prefix`, ASCII case ignored (media types), without
/// copying it.
fn starts_with_ignoring_case(text: &str, prefix: &str) -> bool {
    text.as_bytes()
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// A form or query value: a finite number when it reads as one, else text.
fn text_value(v: &str) -> FeatureValue {
    if let Ok(i) = v.trim().parse::<i128>() {
        return FeatureValue::integer(i);
    }
    match v.trim().parse::<f64>() {
        Ok(n) if n.is_finite() => FeatureValue::Number(n),
        _ => FeatureValue::Text(v.to_string()),
    }
}

/// `"texts": ["…", …]` for a text model (fastText): one row per text, answered
/// with lists, as the old fastText service's list of sentences.
fn parse_texts(texts: &Value) -> Result<(Rows, bool), HttpError> {
    let Value::Array(texts) = texts else {
        return Err(invalid("texts must be a list of strings"));
    };
    if texts.is_empty() {
        return Err(invalid("texts is empty"));
    }
    let rows = texts
        .iter()
        .enumerate()
        .map(|(i, t)| match t {
            Value::String(s) => Ok(vec![FeatureValue::Text(s.clone())]),
            _ => Err(invalid(format!("texts[{i}] is not a string"))),
        })
        .collect::<Result<_, _>>()?;
    Ok((Rows::Positional(rows), false))
}

/// The JSON body: `{"model_id"?, "features", "version"?}`, or `"text": "…"` /
/// `"texts": [...]` in place of `features` for a text model. Its rows are counted
/// against `bounds` as they are read (a list of rows past the limit is refused
/// before the rest is built), and an object at any depth that gives a key twice is
/// refused (`{"model_id": "a", "model_id": "b"}`), where a map would keep the last
/// one (and a proxy in front may have judged the first), as form and multipart
/// bodies refuse a field given twice.
fn decode_json(bytes: &[u8], bounds: &RequestBounds) -> Result<SimpleBody, HttpError> {
    let budget = Budget::new(bounds).with_unique_keys();
    let fields = |key: &str| match key {
        "features" => JsonRows::ListedRows("\"features\""),
        "texts" => JsonRows::Elements("\"texts\""),
        _ => JsonRows::None,
    };
    let request = parse_bounded(
        bytes,
        BoundedObject {
            budget: &budget,
            fields,
        },
        &budget,
    )?
    .ok_or_else(|| invalid("the body must be a JSON object"))?;
    if let Some(unknown) = request.keys().find(|k| {
        !matches!(
            k.as_str(),
            "model_id" | "features" | "version" | "text" | "texts" | "k" | "threshold" | "top_k"
        )
    }) {
        return Err(invalid(format!(
            "unknown field {unknown:?}; expected model_id, features (or text, texts), version, k, threshold and top_k"
        )));
    }
    let model = match request.get("model_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err(invalid("model_id must be a non-empty string")),
    };
    let given = ["features", "text", "texts"]
        .into_iter()
        .filter(|k| request.contains_key(*k))
        .count();
    if given > 1 {
        return Err(invalid("give one of features, text and texts"));
    }
    let (rows, single) = if let Some(text) = request.get("text") {
        let Value::String(text) = text else {
            return Err(invalid("text must be a string"));
        };
        let row = vec![FeatureValue::Text(text.clone())];
        (Rows::Positional(vec![row]), true)
    } else if let Some(texts) = request.get("texts") {
        parse_texts(texts)?
    } else {
        let features = request
            .get("features")
            .ok_or_else(|| invalid("features (or text, texts) is required"))?;
        parse_features(features)?
    };
    let version = parse_version(request.get("version"))?;
    let options = crate::http::predict_options(request.get("k"), request.get("threshold"))?;
    let top_k = match request.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => Some(top_k_value(v.as_u64(), &v.to_string())?),
    };
    Ok(SimpleBody {
        model,
        version,
        rows,
        single,
        options,
        top_k,
    })
}

/// A form-encoded body (`requests.post(url, data={...})`) or a query string:
///
/// * `model_id`, `version`: as in the JSON body;
/// * `features` (or `features[]`) repeated, or once with a plain value: one row of
///   values in the model's feature order (`features=5.1&features=3.5&…`, what
///   `data={"features": [5.1, 3.5, …]}` sends);
/// * `features` once with JSON text (`features=[5.1, 3.5, …]`, `features={"age": 41}`,
///   a list of rows or of objects): read as the JSON body's `features`;
/// * any other field: a named feature (`sepal_length=5.1&…`).
///
/// Values that read as finite numbers are numbers, others text. `features` and named
/// fields do not mix. JSON `features` are read under `bounds`, as a JSON body's.
pub(super) fn decode_form(bytes: &[u8], bounds: &RequestBounds) -> Result<SimpleBody, HttpError> {
    let mut model = None;
    let mut version = VersionRequest::Latest;
    let mut features: Vec<String> = Vec::new();
    let mut named = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(bytes) {
        match &*key {
            "model_id" => {
                if model.replace(value.into_owned()).is_some() {
                    return Err(invalid("model_id is given twice"));
                }
            }
            "version" => version = version_from_text(&value),
            "features" | "features[]" => features.push(value.into_owned()),
            _ => {
                if named.insert(key.to_string(), text_value(&value)).is_some() {
                    return Err(invalid(format!("feature {key:?} is given twice")));
                }
            }
        }
    }
    if model.as_deref() == Some("") {
        return Err(invalid("model_id must not be empty"));
    }
    let (rows, single) = match (features.as_slice(), named.is_empty()) {
        ([], true) => {
            return Err(invalid(
                "no features given: send features=… (repeated, one per value) or one field per named feature",
            ))
        }
        ([], false) => (Rows::Named(vec![named]), true),
        (_, false) => {
            return Err(invalid(format!(
                "give the features either as `features` or as named fields, not both (named: {:?})",
                named.keys().collect::<Vec<_>>()
            )))
        }
        ([one], true) if one.trim_start().starts_with(['[', '{']) => {
            let budget = Budget::new(bounds);
            let seed = BoundedValue {
                rows: JsonRows::ListedRows("\"features\""),
                ..BoundedValue::new(&budget)
            };
            let value = parse_seed(one.as_bytes(), seed).map_err(|e| match budget.refusal() {
                Some(refusal) => HttpError(refusal),
                None => invalid(format!("the features field is not valid JSON: {e}")),
            })?;
            parse_features(&value)?
        }
        (values, true) => (
            Rows::Positional(vec![values.iter().map(|v| text_value(v)).collect()]),
            true,
        ),
    };
    Ok(SimpleBody {
        model,
        version,
        rows,
        single,
        options: Default::default(),
        top_k: None,
    })
}

/// A `/predict` body, its rows bounded by `bounds` while it is read.
pub(super) async fn decode_body(
    state: &AppState,
    headers: &HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
    bounds: &RequestBounds,
) -> Result<SimpleBody, HttpError> {
    let bytes = body(bytes, state.settings.max_request_bytes)?;
    match body_kind(headers, &bytes) {
        BodyKind::Form => decode_form(&bytes, bounds),
        BodyKind::Multipart(content_type) => decode_multipart(content_type, bytes).await,
        BodyKind::Json => decode_json(&bytes, bounds),
    }
}

/// How a `/predict` body is read.
enum BodyKind<'a> {
    Form,
    /// With its `Content-Type` (the boundary).
    Multipart(&'a str),
    Json,
}

/// How a `/predict` body with these headers is read: the one rule of
/// [`decode_body`] and [`model_of_body`].
fn body_kind<'a>(headers: &'a HeaderMap, bytes: &[u8]) -> BodyKind<'a> {
    // `curl -d '{"model_id": …}'` labels its JSON a form: a "form" that begins as a
    // JSON object or list does (no form field is named `{…`), so it is read as JSON.
    let looks_like_json = || {
        bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| matches!(b, b'{' | b'['))
    };
    if is_form(headers) && !looks_like_json() {
        BodyKind::Form
    } else if let Some(content_type) = multipart_type(headers) {
        BodyKind::Multipart(content_type)
    } else {
        BodyKind::Json
    }
}

/// The `model_id` a `POST /predict` body names, read as [`decode_body`] reads it
/// (form, multipart or JSON, by the same rule), or `None` when it names none or
/// cannot be read: the forwarding layer's lookup (`crate::workers::forward`), so
/// that a body the simple API answers for a model reaches that model's worker.
pub(crate) async fn model_of_body(headers: &HeaderMap, bytes: &Bytes) -> Option<String> {
    let model = match body_kind(headers, bytes) {
        BodyKind::Form => form_urlencoded::parse(bytes)
            .find(|(k, _)| k == "model_id")
            .map(|(_, v)| v.into_owned()),
        BodyKind::Multipart(content_type) => multipart_model(content_type, bytes.clone()).await,
        BodyKind::Json => {
            #[derive(serde::Deserialize)]
            struct Named {
                model_id: Option<String>,
            }
            serde_json::from_slice::<Named>(bytes).ok()?.model_id
        }
    };
    model.filter(|m| !m.is_empty())
}

/// The `model_id` text field of a multipart body, as [`decode_multipart`] reads it.
async fn multipart_model(content_type: &str, bytes: Bytes) -> Option<String> {
    use axum::extract::FromRequest;
    let request = axum::http::Request::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(bytes))
        .ok()?;
    let mut multipart = axum::extract::Multipart::from_request(request, &())
        .await
        .ok()?;
    while let Some(field) = multipart.next_field().await.ok()? {
        if field.name() == Some("model_id") && field.file_name().is_none() {
            let data = field.bytes().await.ok()?;
            return text_field("model_id", &data).ok();
        }
    }
    None
}

fn multipart_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| starts_with_ignoring_case(v.trim_start(), "multipart/form-data"))
}

/// A multipart body for an image model: `model_id`, `version` (text fields) and
/// file parts, each one row. The body is already whole and bounded by
/// `max_request_bytes`.
async fn decode_multipart(content_type: &str, bytes: Bytes) -> Result<SimpleBody, HttpError> {
    use axum::extract::FromRequest;
    let request = axum::http::Request::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from(bytes))
        .map_err(|e| invalid(format!("malformed multipart body: {e}")))?;
    let mut multipart = axum::extract::Multipart::from_request(request, &())
        .await
        .map_err(|e| invalid(format!("malformed multipart body: {e}")))?;
    let (mut model, mut version, mut files) = (None, VersionRequest::Latest, Vec::new());
    let mut top_k = None;
    let mut seen: Vec<String> = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| invalid(format!("malformed multipart body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let is_file = field.file_name().is_some();
        let data = field
            .bytes()
            .await
            .map_err(|e| invalid(format!("malformed multipart body: {e}")))?;
        // A field given twice is refused (the last one answered), empty or not;
        // file parts are the images, any number of them.
        if !is_file {
            if seen.contains(&name) {
                return Err(invalid(format!("field {name:?} is given twice")));
            }
            seen.push(name.clone());
        }
        match (name.as_str(), is_file) {
            (_, true) => files.push(data.to_vec()),
            ("model_id", false) => model = Some(text_field(&name, &data)?),
            ("version", false) => version = version_from_text(&text_field(&name, &data)?),
            ("top_k", false) => {
                let text = text_field(&name, &data)?;
                top_k = Some(top_k_value(text.parse().ok(), &format!("{text:?}"))?);
            }
            (other, false) => {
                return Err(invalid(format!(
                "unknown multipart field {other:?}: send model_id, version, top_k and image files"
            )))
            }
        }
    }
    if files.is_empty() {
        return Err(invalid(
            "a multipart request needs at least one file part (an image)",
        ));
    }
    Ok(SimpleBody {
        model,
        version,
        single: files.len() == 1,
        rows: Rows::Files(files),
        options: Default::default(),
        top_k,
    })
}

/// A request's `top_k`: a whole number, 1 or more.
fn top_k_value(value: Option<u64>, given: &str) -> Result<usize, HttpError> {
    value
        .filter(|&k| k >= 1)
        .and_then(|k| usize::try_from(k).ok())
        .ok_or_else(|| {
            invalid(format!(
                "top_k must be a whole number, 1 or more, not {given}"
            ))
        })
}

fn text_field(name: &str, data: &[u8]) -> Result<String, HttpError> {
    String::from_utf8(data.to_vec())
        .map(|s| s.trim().to_string())
        .map_err(|_| invalid(format!("multipart field {name:?} is not UTF-8 text")))
}

/// The model named by the path, unless the body names another.
pub(super) fn model_from_path(
    path_model: String,
    body_model: Option<String>,
) -> Result<String, HttpError> {
    match body_model {
        Some(m) if m != path_model => Err(invalid(format!(
            "model_id {m:?} in the body does not match model {path_model:?} in the path"
        ))),
        _ => Ok(path_model),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The forwarding layer finds a deployed model in a `/predict` body as the simple
    /// API reads it: a JSON body labelled a form (what `curl -d '{…}'` sends) is
    /// JSON, and an image model's multipart body names it in a text field.
    #[tokio::test]
    async fn models_named_by_bodies() {
        let headers = |content_type: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(c) = content_type {
                h.insert(header::CONTENT_TYPE, c.parse().unwrap());
            }
            h
        };
        let json = Bytes::from_static(br#"{"model_id": "iris", "features": [1, 2]}"#);
        for content_type in [
            Some("application/json"),
            None,
            Some("application/x-www-form-urlencoded"),
            Some("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
        ] {
            assert_eq!(
                model_of_body(&headers(content_type), &json)
                    .await
                    .as_deref(),
                Some("iris"),
                "{content_type:?}"
            );
        }
        let form = Bytes::from_static(b"model_id=iris&x=1");
        let form_type = headers(Some("application/x-www-form-urlencoded"));
        assert_eq!(
            model_of_body(&form_type, &form).await.as_deref(),
            Some("iris")
        );
        let multipart = Bytes::from_static(
            b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n\
              png\r\n--b\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\n\
              digits \r\n--b--\r\n",
        );
        let multipart_type = headers(Some("multipart/form-data; boundary=b"));
        assert_eq!(
            model_of_body(&multipart_type, &multipart).await.as_deref(),
            Some("digits")
        );
        for (content_type, body) in [
            (None, &b"{}"[..]),
            (None, b"not json"),
            (Some("application/x-www-form-urlencoded"), b"model_id="),
            (Some("multipart/form-data; boundary=b"), b"--b--\r\n"),
        ] {
            let body = Bytes::copy_from_slice(body);
            assert_eq!(model_of_body(&headers(content_type), &body).await, None);
        }
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
            json!([true, [1]]),
        ] {
            assert!(parse_features(&bad).is_err(), "{bad}");
        }
        // null is a missing value: read here, taken or refused by the model's input.
        let (rows, _) = parse_features(&json!([1, null])).unwrap();
        assert!(matches!(rows, Rows::Positional(r) if r[0][1] == FeatureValue::Missing));
        // A boolean stays one until the input's type is known (it was 1 or 0 here, so
        // a text input got "1" and a BOOL input refused it).
        let (rows, _) = parse_features(&json!({"job": true, "flag": false})).unwrap();
        assert!(matches!(&rows, Rows::Named(r) if r[0]["job"] == FeatureValue::Bool(true)));
        assert!(matches!(&rows, Rows::Named(r) if r[0]["flag"] == FeatureValue::Bool(false)));
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
