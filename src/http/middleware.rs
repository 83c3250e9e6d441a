//! The router's layers that look at a request before its route does: the head's
//! checks (RFC 9112's `Host` and transfer codings), the body's headers (a declared
//! size over the route's limit, a `Content-Encoding`), and the JSON form of every
//! error answer.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::outcomes::refused;
use super::{job_uploads, upload, AppState, HttpError};
use crate::api::ApiError;

/// Whether the route at `path` takes `multipart/form-data` bodies (files): a model
/// upload, a job with its files. Every other management route reads JSON, and a
/// multipart body there is refused (`auth::cross_site_refusal`).
pub(super) fn takes_multipart(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/upload_model" | "/v1/jobs" | "/predictall" | "/train"
    )
}

/// Whether a request's body is `multipart/form-data` (an upload's files, a job's
/// spec with its files) by its content type.
pub(crate) fn is_multipart(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..19)
                .is_some_and(|t| t.eq_ignore_ascii_case("multipart/form-data"))
        })
}

/// The most bytes a request body to `path` with `headers` may hold (the limit its
/// route or handler holds it to).
pub(super) fn body_limit(
    settings: &crate::settings::Settings,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> u64 {
    match path.trim_end_matches('/') {
        "/upload_model" => upload::body_limit(settings.max_upload_bytes),
        // Multipart with files, else JSON read up to --max-request-bytes.
        "/v1/jobs" | "/predictall" | "/train" if is_multipart(headers) => {
            job_uploads::multipart_limit(settings)
        }
        _ => settings.max_request_bytes as u64,
    }
}

/// The 413 of a body declared larger than [`body_limit`] (`limit`). An upload's
/// names the upload limit the user set, as its late refusal does, not that limit
/// with the room for the multipart framing; every other names the setting.
fn too_large(
    settings: &crate::settings::Settings,
    path: &str,
    headers: &axum::http::HeaderMap,
    declared: u64,
    limit: u64,
) -> ApiError {
    match path.trim_end_matches('/') {
        "/upload_model" => upload::too_large(settings.max_upload_bytes, Some(declared)),
        // The limit is the sum of two the user set, and named as such (it read as
        // a number no setting held).
        "/v1/jobs" | "/predictall" | "/train" if is_multipart(headers) => {
            ApiError::PayloadTooLarge(format!(
                "request body of {declared} bytes is larger than a job request may be: \
             --max-upload-bytes ({}) for its files and --max-request-bytes ({}) for its \
             spec, with room for the multipart framing",
                settings.max_upload_bytes, settings.max_request_bytes
            ))
        }
        _ => ApiError::PayloadTooLarge(format!(
            "request body of {declared} bytes is larger than the limit of {limit} bytes \
             (--max-request-bytes)"
        )),
    }
}

/// Checks a request's head before anything else reads it (the access layer
/// included), answering what RFC 9112 requires:
/// * more than one `Host` header is a 400: which one names the server (and so
///   whether the request is a local one) would be a guess;
/// * a `Transfer-Encoding` with a coding other than `chunked` (`gzip, chunked`)
///   is a 501: hyper decodes the chunks and would leave the coding unread, so the
///   body would be read as something it is not.
pub(super) async fn head_checks(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let refusal = if headers.get_all(header::HOST).iter().nth(1).is_some() {
        Some((
            StatusCode::BAD_REQUEST,
            ApiError::InvalidArgument(String::new()).kind(),
            "the request has more than one Host header".to_string(),
        ))
    } else {
        unknown_transfer_coding(headers).map(|coding| {
            (
                StatusCode::NOT_IMPLEMENTED,
                NOT_IMPLEMENTED_OUTCOME,
                format!(
                    "transfer coding {coding:?} is not supported: send the body as it is, \
                     or chunked"
                ),
            )
        })
    };
    match refusal {
        Some((status, outcome, message)) => {
            refused(&state, &request, outcome, Instant::now());
            (status, Json(json!({ "error": message }))).into_response()
        }
        None => next.run(request).await,
    }
}

/// The first transfer coding of the request's `Transfer-Encoding` header lines
/// that is not `chunked`, the only one the server decodes.
fn unknown_transfer_coding(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|coding| {
            coding
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii()
        })
        .find(|coding| !coding.eq_ignore_ascii_case(b"chunked"))
        .map(|coding| String::from_utf8_lossy(coding).into_owned())
}

/// The outcome in `ferroserve_requests_total` of a request refused for its
/// `Content-Encoding` (415), which no [`ApiError`] stands for.
pub const UNSUPPORTED_MEDIA_TYPE_OUTCOME: &str = "unsupported_media_type";

/// The outcome of a request refused for its transfer coding (501).
pub const NOT_IMPLEMENTED_OUTCOME: &str = "not_implemented";

/// Checks a request's body headers before the body is read:
/// * a body declared larger than its route takes, from a client that waits to be
///   told to send it (`Expect: 100-continue`, as curl does for large bodies), is a
///   413 before any of it is sent (other clients' bodies are read up to the limit
///   first: an answer before they have sent it could be lost in a reset);
/// * a body sent with a `Content-Encoding` (gzip, say) is a 415: the server does
///   not decompress bodies, and reading compressed bytes as JSON or tensors would
///   give a misleading error, or a wrong answer for binary tensors. Every
///   `Content-Encoding` line counts, and a body is any that HTTP/1 declares (a
///   length or chunks) or that an HTTP/2 stream has not ended before (with or
///   without a `content-length`).
///
/// An inference request refused here is counted in metrics as
/// [`count_inference`] counts the others.
pub(super) async fn body_headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let headers = request.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let waits = super::waits_for_continue(headers);
    if let (true, Some(declared)) = (waits, declared) {
        let (path, headers) = (request.uri().path(), request.headers());
        let limit = body_limit(&state.settings, path, headers);
        if declared > limit {
            let e = too_large(&state.settings, path, headers, declared, limit);
            refused(&state, &request, e.kind(), started);
            return HttpError(e).into_response();
        }
    }
    let has_body = match declared {
        Some(n) => n > 0,
        None => !http_body::Body::is_end_stream(request.body()),
    };
    let encoded = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|e| !e.trim_ascii().eq_ignore_ascii_case(b"identity"));
    if has_body && encoded {
        let shown = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        refused(&state, &request, UNSUPPORTED_MEDIA_TYPE_OUTCOME, started);
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(json!({ "error": format!(
                "request bodies are not decompressed: send it without Content-Encoding \
                 (not {shown:?})"
            ) })),
        )
            .into_response();
    }
    next.run(request).await
}

/// The most of a non-JSON error body that is read to quote it in the JSON error.
const QUOTED_ERROR_BODY_LIMIT: usize = 4096;

/// Makes every error response `{"error": "..."}`: axum answers an unknown path (404),
/// a known path with the wrong method (405, `Allow` header kept) and a malformed path
/// or query string (extractor rejections, 400) with an empty or plain-text body. Errors
/// that are JSON already (every [`HttpError`]) pass untouched, and so do the web
/// console's HTML error pages (`crate::console`), which are for people.
pub(super) async fn json_errors(request: Request, next: Next) -> Response {
    // Kept for the message of an error; cloning the URI shares its bytes, so the
    // usual answer pays no allocation for it.
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let is_json = content_type.is_some_and(|v| v.starts_with("application/json"));
    let is_html = content_type.is_some_and(|v| v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json || is_html {
        return response;
    }
    let path = uri.path();
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, QUOTED_ERROR_BODY_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        StatusCode::NOT_FOUND if text.is_empty() => format!("no such endpoint: {method} {path}"),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(|v| format!(" (allowed: {v})"))
                .unwrap_or_default();
            format!("method {method} is not allowed on {path}{allowed}")
        }
        _ if !text.is_empty() => text,
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    let body = if method == Method::HEAD {
        Vec::new()
    } else {
        serde_json::to_vec(&json!({ "error": message })).unwrap_or_default()
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_codings_other_than_chunked_are_found_on_every_line() {
        let coding = |lines: &[&str]| {
            let mut headers = axum::http::HeaderMap::new();
            for line in lines {
                headers.append(header::TRANSFER_ENCODING, line.parse().unwrap());
            }
            unknown_transfer_coding(&headers)
        };
        assert_eq!(coding(&[]), None);
        assert_eq!(coding(&["chunked"]), None);
        assert_eq!(coding(&["Chunked"]), None);
        assert_eq!(coding(&["gzip, chunked"]), Some("gzip".into()));
        assert_eq!(
            coding(&["chunked", "x-custom;q=1"]),
            Some("x-custom".into())
        );
    }
}
