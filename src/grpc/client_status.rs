//! The status codes and messages clients get for their own faults, as gRPC's own
//! implementations give them (tonic's differ), and status messages cut to a size
//! clients take.

use std::future::Future;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use tonic::Code;

/// Rewrites the codes tonic gives for a client's faults into the ones gRPC's own
/// implementations (and so TF Serving and Triton clients) expect:
/// * OUT_OF_RANGE for a message over the size limit → RESOURCE_EXHAUSTED
///   (ferroserve never answers OUT_OF_RANGE otherwise);
/// * INTERNAL for a request that does not decode as protobuf → INVALID_ARGUMENT,
///   told from a genuine internal error by the message tonic's prost codec gives
///   (prost's `DecodeError`, which no ferroserve error message starts with).
///
/// A decode failure arrives as a trailers-only response (status in the headers); an
/// encode failure in the trailers after the body, so both are rewritten.
#[derive(Debug, Clone, Copy)]
pub struct ClientStatusLayer;

impl<S> tower::Layer<S> for ClientStatusLayer {
    type Service = ClientStatus<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientStatus { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ClientStatus<S> {
    inner: S,
}

/// How the errors tonic's codec puts in an INTERNAL status for a request the
/// client sent wrong begin: prost's `DecodeError`, and a request body that is no
/// gRPC message (none at all, cut short, or an unknown compression flag). A
/// message flagged compressed without `grpc-encoding` stays INTERNAL, as the gRPC
/// compression spec requires.
const CLIENT_ERROR_PREFIXES: [&str; 5] = [
    "failed to decode Protobuf message",
    "Missing request message",
    "Unexpected EOF decoding stream",
    "protocol error: received message with invalid compression flag",
    "invalid compression flag",
];

/// The longest `grpc-message` sent, in bytes: clients refuse headers past 8 KiB,
/// and a message echoing a client's megabyte-long name would hide its status.
const MAX_MESSAGE_BYTES: usize = 1024;

fn fix_status(headers: &mut http::HeaderMap) {
    shorten_message(headers);
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32);
    let fixed = match code {
        Some(Code::OutOfRange) => Code::ResourceExhausted,
        Some(Code::Internal) if is_client_error(headers) => Code::InvalidArgument,
        _ => return,
    };
    headers.insert("grpc-status", http::HeaderValue::from(fixed as i32));
}

/// Cuts `grpc-message` (percent-encoded: ASCII) to [`MAX_MESSAGE_BYTES`], never
/// inside an escape, saying that it was cut.
fn shorten_message(headers: &mut http::HeaderMap) {
    let Some(message) = headers.get("grpc-message") else {
        return;
    };
    let bytes = message.as_bytes();
    if bytes.len() <= MAX_MESSAGE_BYTES {
        return;
    }
    let mut end = MAX_MESSAGE_BYTES;
    // An escape is `%XY`: never keep a `%` without its two digits.
    if let Some(percent) = bytes[end.saturating_sub(2)..end]
        .iter()
        .position(|&b| b == b'%')
    {
        end = end - 2 + percent;
    }
    // Nor part of a character: each byte of one past ASCII is an escape, and the
    // client decodes the message as UTF-8 (tonic answers UNKNOWN when it cannot).
    let continues = |at: &[u8]| {
        at.len() >= 3
            && at[0] == b'%'
            && std::str::from_utf8(&at[1..3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .is_some_and(|b| b & 0xC0 == 0x80)
    };
    while continues(&bytes[end..]) && end >= 3 && bytes[end - 3] == b'%' {
        end -= 3;
    }
    let mut shortened = bytes[..end].to_vec();
    shortened
        .extend_from_slice(format!("%20(cut:%20{}%20bytes%20in%20all)", bytes.len()).as_bytes());
    if let Ok(value) = http::HeaderValue::from_bytes(&shortened) {
        headers.insert("grpc-message", value);
    }
}

/// Whether `grpc-message` (percent-encoded by tonic: a space is `%20`) is one of
/// the codec's errors about what the client sent.
fn is_client_error(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| {
            let m = m.replace("%20", " ");
            CLIENT_ERROR_PREFIXES.iter().any(|p| m.starts_with(p))
        })
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for ClientStatus<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = http::Response<axum::body::Body>;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let (mut parts, body) = response.into_parts();
            fix_status(&mut parts.headers);
            let body = body.map_frame(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    fix_status(&mut trailers);
                    http_body::Frame::trailers(trailers)
                }
                Err(frame) => frame,
            });
            Ok(http::Response::from_parts(
                parts,
                axum::body::Body::new(body),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_faults_get_the_codes_grpc_uses() {
        let fixed = |code: Code, message: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-status", http::HeaderValue::from(code as i32));
            headers.insert("grpc-message", message.parse().unwrap());
            fix_status(&mut headers);
            Code::from_i32(headers["grpc-status"].to_str().unwrap().parse().unwrap())
        };
        assert_eq!(
            fixed(
                Code::Internal,
                "failed%20to%20decode%20Protobuf%20message:%20invalid%20varint"
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            fixed(Code::Internal, "the%20model%20gave%20no%20output"),
            Code::Internal
        );
        assert_eq!(
            fixed(Code::OutOfRange, "too%20big"),
            Code::ResourceExhausted
        );
        assert_eq!(
            fixed(Code::NotFound, "failed%20to%20decode%20Protobuf%20message"),
            Code::NotFound
        );
        // A request body that is no gRPC message is the client's error too.
        for message in [
            "Missing%20request%20message.",
            "Unexpected%20EOF%20decoding%20stream.",
            "invalid%20compression%20flag:%202",
        ] {
            assert_eq!(fixed(Code::Internal, message), Code::InvalidArgument);
        }
    }

    #[test]
    fn long_messages_are_cut_outside_escapes() {
        for name_len in [2000, 2001, 2002, 2003] {
            let message = format!("model%20{}%2Fx%20not%20found", "n".repeat(name_len));
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-message", message.parse().unwrap());
            fix_status(&mut headers);
            let cut = headers["grpc-message"].to_str().unwrap();
            assert!(cut.len() < MAX_MESSAGE_BYTES + 64, "{}", cut.len());
            assert!(cut.starts_with("model%20nnn"), "{cut}");
            assert!(
                cut.ends_with(&format!("(cut:%20{}%20bytes%20in%20all)", message.len())),
                "{cut}"
            );
        }
        // An escape across the limit is dropped whole.
        for at in [MAX_MESSAGE_BYTES - 2, MAX_MESSAGE_BYTES - 1] {
            let message = format!("{}%2F{}", "a".repeat(at), "b".repeat(100));
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-message", message.parse().unwrap());
            shorten_message(&mut headers);
            let cut = headers["grpc-message"].to_str().unwrap();
            let kept = cut.split("%20(cut").next().unwrap();
            assert_eq!(kept, "a".repeat(at), "{at}");
        }
        // Nor inside a character: the rest must decode as UTF-8 (a tonic client
        // answers UNKNOWN otherwise).
        for pad in 0..6 {
            let text = format!("{}{}", "a".repeat(pad), "ж".repeat(600));
            let encoded: String = text
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let mut headers = http::HeaderMap::new();
            headers.insert(
                "grpc-status",
                http::HeaderValue::from(Code::NotFound as i32),
            );
            headers.insert("grpc-message", encoded.parse().unwrap());
            shorten_message(&mut headers);
            let decoded = tonic::Status::from_header_map(&headers).unwrap();
            assert_eq!(decoded.code(), Code::NotFound, "pad {pad}: {decoded:?}");
            assert!(decoded.message().contains("(cut:"), "{decoded:?}");
        }
        let mut short = http::HeaderMap::new();
        short.insert("grpc-message", "fine".parse().unwrap());
        shorten_message(&mut short);
        assert_eq!(short["grpc-message"], "fine");
    }
}
