//! Reading request bodies: the limits' and timeouts' errors, bodies read as their
//! chunks, JSON bodies, and the answer to a request refused before its body was read.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::HttpError;
use crate::api::ApiError;

/// Turns the body extractor's failure into our error: over the size limit is 413, a
/// body that stopped arriving 408, one past the server's budget of body bytes held
/// at once 503.
pub fn body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, HttpError> {
    body.map_err(|rejection| {
        if crate::connections::is_body_read_timeout(&rejection) {
            HttpError(ApiError::RequestTimeout(rejection_message(&rejection)))
        } else if crate::connections::is_body_budget_exceeded(&rejection) {
            HttpError(ApiError::Unavailable(rejection_message(&rejection)))
        } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError(ApiError::PayloadTooLarge(format!(
                "request body is larger than the limit of {limit} bytes"
            )))
        } else {
            HttpError(ApiError::InvalidArgument(format!(
                "cannot read request body: {rejection}"
            )))
        }
    })
}

/// Reads a whole request body as the chunks it arrived in, without copying them
/// into one buffer, under the same limit and with the same errors as the `Bytes`
/// extractor through [`body`]: 413 over the limit (the router's `DefaultBodyLimit`,
/// or axum's default where the request skipped the router), 408 when it stopped
/// arriving, 503 past the body budget, 400 otherwise.
pub async fn body_chunks(request: Request, limit: usize) -> Result<impl bytes::Buf, HttpError> {
    use axum::RequestExt;
    use http_body_util::BodyExt;
    match request.with_limited_body().into_body().collect().await {
        Ok(collected) => Ok(collected.aggregate()),
        Err(error) => Err(HttpError(body_read_error(&error, limit))),
    }
}

/// Most of a refused request's body read and discarded before its answer
/// ([`answer_unread`]): 16 MiB; an upload's or a job request's refusal drains as
/// much (`upload::drain`).
pub(super) const REFUSED_DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// The answer to a request refused before its body was read (a full queue's 429),
/// made so that an HTTP/1 client reads it: a client that does not wait for `100
/// Continue` sends its whole body first, and an answer before it has would be lost
/// in the connection's reset (a broken pipe, no 429, no `Retry-After`). So the
/// body is read and discarded first, up to [`REFUSED_DRAIN_LIMIT`] bytes (within
/// the connection's body read timeout); past that, or when it cannot be read, the
/// answer says `Connection: close`, so a keep-alive client does not send its next
/// request on a connection about to close. A client that waits for `100 Continue`
/// sent nothing, and HTTP/2 ends only this request's stream: both are answered
/// at once.
pub(crate) async fn answer_unread(request: Request, refusal: ApiError) -> Response {
    answer_drained(request, HttpError(refusal).into_response()).await
}

/// [`answer_unread`] with its answer made already (an access refusal's).
pub(crate) async fn answer_drained(request: Request, answer: Response) -> Response {
    let waits = waits_for_continue(request.headers());
    let http1 = request.version() < axum::http::Version::HTTP_2;
    if waits || !http1 {
        return answer;
    }
    drain_then(request.into_body(), answer).await
}

/// Whether the client waits for `100 Continue` before it sends its body
/// (`Expect: 100-continue`).
pub(crate) fn waits_for_continue(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// `answer`, after what is left of an HTTP/1 request's `body` is read and
/// discarded, up to [`REFUSED_DRAIN_LIMIT`] bytes; past that, or when the rest
/// cannot be read, the answer says `Connection: close` ([`answer_drained`]).
pub(crate) async fn drain_then<B>(mut body: B, mut answer: Response) -> Response
where
    B: http_body::Body + Unpin,
{
    use bytes::Buf;
    use http_body_util::BodyExt;
    let mut drained = 0usize;
    let read_whole = loop {
        match body.frame().await {
            None => break true,
            Some(Ok(frame)) => {
                drained += frame.data_ref().map_or(0, |d| d.remaining());
                if drained > REFUSED_DRAIN_LIMIT {
                    break false;
                }
            }
            Some(Err(_)) => break false,
        }
    };
    if !read_whole {
        answer
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    answer
}

/// A request body that notes when it has been read to its end.
struct ReadToEnd {
    inner: axum::body::Body,
    ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for ReadToEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        // Its end: no more frames, or (a body of known length read whole) the
        // last one, after which a reader that knows where its data ends (the
        // multipart reader, at the closing boundary) need not ask again.
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware for the routes that may answer before reading a large body (an
/// upload or a job request refused on a field before its files, or past its
/// limit): an HTTP/1 refusal given while the body was not read to its end (its
/// refusal's drain stopped at [`REFUSED_DRAIN_LIMIT`], or the body could not be
/// parsed on) says `Connection: close`, as [`answer_drained`]'s does, so that a
/// keep-alive client does not send its next request on a connection the server
/// is about to close. HTTP/2 ends only the request's stream.
pub(crate) async fn close_unless_read_whole(
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if request.version() >= axum::http::Version::HTTP_2 {
        return next.run(request).await;
    }
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let request = request.map(|inner| {
        if http_body::Body::is_end_stream(&inner) {
            ended.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        axum::body::Body::new(ReadToEnd {
            inner,
            ended: ended.clone(),
        })
    });
    let mut answer = next.run(request).await;
    // A success read what it needed (a multipart body up to its closing boundary,
    // maybe short of a chunked body's last, empty chunk): only refusals are marked.
    let refused = answer.status().is_client_error() || answer.status().is_server_error();
    if refused && !ended.load(std::sync::atomic::Ordering::Relaxed) {
        answer
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    answer
}

/// A request body that could not be read, as [`body_chunks`] answers it: 408 when
/// it stopped arriving, 503 when the server held too many body bytes at once to
/// take it (`crate::connections::BodyBudget`), 413 past `limit` (a
/// `http_body_util::Limited`'s), else 400.
pub(crate) fn body_read_error(error: &(dyn std::error::Error + 'static), limit: usize) -> ApiError {
    if crate::connections::is_body_read_timeout(error) {
        ApiError::RequestTimeout(rejection_message(error))
    } else if crate::connections::is_body_budget_exceeded(error) {
        ApiError::Unavailable(rejection_message(error))
    } else if is_length_limit(error) {
        ApiError::PayloadTooLarge(format!(
            "request body is larger than the limit of {limit} bytes"
        ))
    } else {
        ApiError::InvalidArgument(format!("cannot read request body: {error}"))
    }
}

/// Whether `error` or one of its sources is the body limit's.
fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut error = Some(error);
    while let Some(e) = error {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        error = e.source();
    }
    false
}

/// The message of the innermost error of `error` (a body read timeout says how long).
pub fn rejection_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

/// Parses a JSON body with a clear 400 on malformed JSON, or on an object (at any
/// depth) that gives a key twice: serde_json's map keeps the last value without a
/// word, so `{"model": "a", "model": "b"}` would act on `b` where the client may have
/// meant `a` (the predict routes refuse it too).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    let malformed = |e: serde_json::Error| {
        HttpError(ApiError::InvalidArgument(format!(
            "malformed JSON body: {e}"
        )))
    };
    serde_json::from_slice::<UniqueKeys>(bytes).map_err(malformed)?;
    serde_json::from_slice(bytes).map_err(malformed)
}

/// A JSON value read only to check that no object in it gives a key twice (the
/// server's JSON bodies, the CLI's JSON-lines rows): its error says `field "k" is
/// given twice`.
pub struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<UniqueKeys, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "field {key:?} is given twice"
                )));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_at_any_depth_is_refused() {
        for body in [
            r#"{"kind": "score", "kind": "train"}"#,
            r#"{"kind": "score", "spec": {"model": "a", "model": "b"}}"#,
            r#"{"record": [{"k": 1}, {"k": 1, "k": 2}]}"#,
        ] {
            let e = parse_json::<serde_json::Value>(body.as_bytes()).unwrap_err();
            let message = e.0.to_string();
            assert!(message.contains("is given twice"), "{body}: {message}");
        }
        // The same key in different objects is no repeat.
        let value: serde_json::Value =
            parse_json(br#"{"a": {"k": 1}, "b": {"k": [1, "x", null, true, 2.5, -3]}}"#).unwrap();
        assert_eq!(value["b"]["k"][4], 2.5);
        let e = parse_json::<serde_json::Value>(b"{\"a\": ").unwrap_err();
        assert!(e.0.to_string().contains("malformed JSON body"), "{}", e.0);
    }
}
