//! The gRPC access layer, the twin of `http::auth`: every call passes [`require`]
//! before its service. It classifies the method (`auth::grpc_access`), checks the
//! `authorization` metadata (`Bearer <token>`) and the peer, and answers
//! UNAUTHENTICATED or PERMISSION_DENIED as a trailers-only response. Management
//! calls are logged with the token's name once answered.

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
