//! The gRPC access layer, the twin of `http::auth`: every call passes [`require`]
//! before its service. It classifies the method (`auth::grpc_access`), checks the
//! `authorization` metadata (`Bearer <token>`) and the peer, and answers
//! UNAUTHENTICATED or PERMISSION_DENIED as a trailers-only response. Management
//! calls also pass [`cross_site_refusal`], as REST's management requests do: a
//! browser reaches this port over TLS (HTTP/2 by ALPN), and a page on any site
//! may send it a no-cors `fetch`, token or not. They are logged with the token's
//! name once answered.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tonic::Status;

use crate::api::ServerState;
use crate::auth::{display_peer, grpc_access, worker_refusal, Access};

pub async fn require(
    State(state): State<std::sync::Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    let access = grpc_access(request.uri().path());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    // A worker takes no management at all (`Settings::management_server`).
    if let Some(message) = worker_refusal(state.settings.management_server.as_deref(), access) {
        crate::metrics::record_auth_failure("grpc", "worker");
        tracing::warn!(client = %display_peer(peer), method = %request.uri().path(), "{message}");
        return Status::permission_denied(message).into_http();
    }
    let authorization = request.headers().get(http::header::AUTHORIZATION);
    let token = match state.auth.authorize(
        "grpc",
        access,
        authorization.map(|v| v.as_bytes()),
        peer,
        request.uri().path(),
    ) {
        Ok(token) => token,
        Err(denied) => {
            let status = if denied.is_unauthenticated() {
                Status::unauthenticated(denied.to_string())
            } else {
                Status::permission_denied(denied.to_string())
            };
            return status.into_http();
        }
    };
    if access != Access::Management {
        return next.run(request).await;
    }
    if let Some(message) = cross_site_refusal(request.headers(), request.uri()) {
        crate::metrics::record_auth_failure("grpc", "cross_site");
        tracing::warn!(client = %display_peer(peer), method = %request.uri().path(), "{message}");
        return Status::permission_denied(message).into_http();
    }
    let method = request.uri().path().to_string();
    let mut request = request;
    request.extensions_mut().insert(crate::api::Caller {
        client: peer.map(|p| p.to_string()),
        actor: token.clone(),
    });
    let response = next.run(request).await;
    tracing::info!(
        client = %display_peer(peer),
        token = token.as_deref().unwrap_or("-"),
        %method,
        // The gRPC status of a unary call is in the trailers, after this line;
        // a refusal before the handler ran is in the headers.
        grpc_status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("in trailers"),
        "management call"
    );
    response
}

/// Why a management call may come from a browser page on another site, if it may:
/// its headers name such a page (`crate::http::browser_refusal`: `Origin`,
/// `Referer`, `Sec-Fetch-Site`, as for REST), or its content type is not gRPC's.
/// Every gRPC client sends `application/grpc` (or `application/grpc+proto`, and
/// so on); a page's no-cors `fetch` can only send a body of no type or of a type
/// a form could send, and one of `application/grpc` needs a CORS preflight this
/// server never grants. Calls that are not management need no such check: without
/// tokens any client may make them, and with tokens a page cannot send one.
fn cross_site_refusal(headers: &http::HeaderMap, uri: &http::Uri) -> Option<String> {
    if let Some(message) = crate::http::browser_refusal(headers, uri) {
        return Some(message);
    }
    let content_type = headers.get(http::header::CONTENT_TYPE);
    let essence = content_type
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let grpc = essence == "application/grpc" || essence.starts_with("application/grpc+");
    (!grpc).then(|| {
        let sent = match content_type {
            Some(_) => format!("{essence:?}"),
            None => "none".to_string(),
        };
        format!(
            "cross-site management request refused: a gRPC management call's content-type \
             is application/grpc or application/grpc+proto, not {sent}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn browser_management_calls_are_refused() {
        let uri: http::Uri =
            "https://localhost:8500/inference.GRPCInferenceService/RepositoryModelUnload"
                .parse()
                .unwrap();
        for ok in [
            vec![("content-type", "application/grpc")],
            vec![("content-type", "application/grpc+proto")],
            vec![("content-type", "Application/GRPC; charset=x")],
            vec![
                ("content-type", "application/grpc"),
                ("origin", "https://localhost:8500"),
                ("sec-fetch-site", "same-origin"),
                ("referer", "https://localhost:8500/page?q=1"),
            ],
        ] {
            assert_eq!(cross_site_refusal(&headers(&ok), &uri), None, "{ok:?}");
        }
        for (bad, why) in [
            (vec![], "not none"),
            (vec![("content-type", "text/plain")], "not \"text/plain\""),
            (vec![("content-type", "application/grpc-web")], "grpc-web"),
            (vec![("content-type", "application/grpcx")], "grpcx"),
            (
                vec![
                    ("content-type", "application/grpc"),
                    ("origin", "https://evil.example"),
                ],
                "Origin \"https://evil.example\" is not this server",
            ),
            (
                vec![
                    ("content-type", "application/grpc"),
                    ("sec-fetch-site", "cross-site"),
                ],
                "Sec-Fetch-Site is cross-site",
            ),
            (
                vec![
                    ("content-type", "application/grpc"),
                    ("referer", "https://evil.example/page?secret=1"),
                ],
                "Referer \"https://evil.example\"",
            ),
        ] {
            let refused = cross_site_refusal(&headers(&bad), &uri).expect(why);
            assert!(
                refused.starts_with("cross-site management request refused"),
                "{refused}"
            );
            assert!(refused.contains(why), "{refused}");
            assert!(!refused.contains("secret"), "{refused}");
        }
    }
}
