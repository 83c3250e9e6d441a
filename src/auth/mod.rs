//! Who may do what: bearer tokens with scopes, the loopback-only default for
//! management, and the allowed roots of model base paths.
//!
//! This module decides; it knows nothing of HTTP or gRPC. The REST and gRPC
//! adapters each have a thin layer (`http::auth`, `grpc::auth`) that classifies the
//! request ([`Access`]), calls [`Auth::check`] with the `Authorization` header and
//! the peer address, and turns a [`Denied`] into 401/403 or
//! UNAUTHENTICATED/PERMISSION_DENIED.
//!
//! Tokens live in a TOML file (`--auth-tokens`), stored as the hex SHA-256 of the
//! token, never the token itself:
//!
//! ```toml
//! [[token]]
//! name = "ci"
//! sha256 = "…64 hex digits…"
//! scopes = ["inference", "management"]
//! ```
//!
//! Invariants:
//! * a presented token is hashed and compared with every entry in constant time
//!   (no early exit on the first byte or the first entry);
//! * tokens are never logged; the token's *name* is what logs and audit lines carry;
//! * the file is re-read when its contents change ([`Auth::reload_if_changed`]); a
//!   file that no longer parses is logged and the tokens in force stay;
//! * a deployed model's worker serves with its main server's tokens: it reads the
//!   same file, and when that file does not parse at the worker's start (a bad edit
//!   the main server kept its tokens through), it serves with the tokens in force
//!   in the main server, handed over by its supervisor as hashes
//!   ([`encode_entries`]), until the file is valid again; never without tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;
use subtle::ConstantTimeEq;

mod routes;
mod tokens;

pub use routes::{grpc_access, rest_access};
use tokens::read_tokens_file;
pub use tokens::{
    check_token_name, decode_entries, encode_entries, new_token, parse_tokens, to_hex,
    token_sha256, TokenEntry, TokensError,
};

/// The name a worker's logs and audit trail give its supervisor's token.
pub const SUPERVISOR_TOKEN_NAME: &str = "ferroserve-supervisor";

/// What a request needs, decided from its route alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health checks: always open, so load balancers and orchestrators need no token.
    Open,
    /// Predictions and reading model metadata or status: scope `inference` when
    /// tokens are configured.
    Inference,
    /// Anything that changes what is served: scope `management` when tokens are
    /// configured, else only from loopback clients.
    Management,
    /// `/metrics`: open unless `metrics_require_token`, then scope `metrics`.
    Metrics,
}

/// A permission a token may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Inference,
    Management,
    Metrics,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Inference, Scope::Management, Scope::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Inference => "inference",
            Scope::Management => "management",
            Scope::Metrics => "metrics",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

/// Why a request was refused. The messages are for the client: they never carry
/// the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No bearer token (401, UNAUTHENTICATED).
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    MissingToken,
    /// A token no entry of the tokens file accepts (401, UNAUTHENTICATED).
    #[error("invalid or revoked token")]
    InvalidToken,
    /// A known token without the scope the request needs (403, PERMISSION_DENIED).
    #[error("token {token:?} lacks the {scope:?} scope this request needs")]
    MissingScope { token: String, scope: &'static str },
    /// Management from another host while no tokens are configured (403,
    /// PERMISSION_DENIED).
    #[error(
        "management is allowed only from the server's own host when no tokens are \
         configured (start the server with --auth-tokens, or --allow-unauthenticated-management)"
    )]
    RemoteManagement,
}

impl Denied {
    /// 401 / UNAUTHENTICATED (else 403 / PERMISSION_DENIED).
    pub fn is_unauthenticated(&self) -> bool {
        match self {
            Denied::MissingToken | Denied::InvalidToken => true,
            Denied::MissingScope { .. } | Denied::RemoteManagement => false,
        }
    }

    /// A short label for the failure counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::MissingToken => "missing_token",
            Denied::InvalidToken => "invalid_token",
            Denied::MissingScope { .. } => "missing_scope",
            Denied::RemoteManagement => "remote_management",
        }
    }
}

/// The tokens file in force and what was last read from disk.
struct TokenFile {
    path: PathBuf,
    entries: ArcSwap<Vec<TokenEntry>>,
    /// The file's last contents, to re-parse only when they change (none: it has
    /// not been read yet, in a worker that started while it could not be).
    last_text: parking_lot::Mutex<Option<String>>,
    /// The last error reading it, logged once, not at every poll.
    last_read_error: parking_lot::Mutex<Option<String>>,
}

/// How requests are authorised, from `Settings`. Shared by every adapter.
pub struct Auth {
    tokens: Option<TokenFile>,
    /// Without tokens, management from non-loopback clients is allowed only when
    /// the operator says so explicitly.
    allow_unauthenticated_management: bool,
    /// `/metrics` needs a token with scope `metrics` (tokens required).
    metrics_require_token: bool,
    /// In a deployed model's worker: the SHA-256 of its supervisor's token (the main
    /// server's, generated at its start and handed over in the worker's
    /// environment), accepted with every scope besides the tokens file, so the main
    /// server can read the status of the workers it runs (`crate::workers`).
    supervisor_token: Option<[u8; 32]>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens_file", &self.tokens.as_ref().map(|t| &t.path))
            .field(
                "allow_unauthenticated_management",
                &self.allow_unauthenticated_management,
            )
            .field("metrics_require_token", &self.metrics_require_token)
            .field("supervisor_token", &self.supervisor_token.is_some())
            .finish()
    }
}

impl Auth {
    /// No tokens: inference open, management from loopback only (unless allowed).
    pub fn without_tokens(allow_unauthenticated_management: bool) -> Auth {
        Auth {
            tokens: None,
            allow_unauthenticated_management,
            metrics_require_token: false,
            supervisor_token: None,
        }
    }

    /// Reads the tokens file (an error stops start-up).
    pub fn with_token_file(path: &Path, metrics_require_token: bool) -> Result<Auth, TokensError> {
        let text = read_tokens_file(path)?;
        let entries = parse_tokens(&text).map_err(|reason| TokensError::Invalid {
            path: path.display().to_string(),
            reason,
        })?;
        Ok(Auth {
            tokens: Some(TokenFile {
                path: path.to_path_buf(),
                entries: ArcSwap::from_pointee(entries),
                last_text: parking_lot::Mutex::new(Some(text)),
                last_read_error: parking_lot::Mutex::new(None),
            }),
            allow_unauthenticated_management: false,
            metrics_require_token,
            supervisor_token: None,
        })
    }

    /// A worker's tokens file: read as [`Auth::with_token_file`] reads it, but one
    /// that cannot be read or does not parse does not stop the worker (its
    /// supervisor would restart it into crash-loop over a bad edit the main server
    /// kept its tokens through): it serves with `in_force`, the tokens in force in
    /// its main server (none handed over: no token, which refuses every protected
    /// request), and takes the file's once it is valid again
    /// ([`Auth::reload_if_changed`]). Logged.
    pub fn with_worker_token_file(
        path: &Path,
        metrics_require_token: bool,
        in_force: Option<Vec<TokenEntry>>,
    ) -> Auth {
        let parsed = read_tokens_file(path).map(|text| {
            let entries = parse_tokens(&text).map_err(|reason| TokensError::Invalid {
                path: path.display().to_string(),
                reason,
            });
            (text, entries)
        });
        let (entries, last_text, last_read_error) = match parsed {
            Ok((text, Ok(entries))) => (entries, Some(text), None),
            Ok((text, Err(e))) => (worker_fallback(&e, in_force), Some(text), None),
            Err(e) => {
                let told = e.to_string();
                (worker_fallback(&e, in_force), None, Some(told))
            }
        };
        Auth {
            tokens: Some(TokenFile {
                path: path.to_path_buf(),
                entries: ArcSwap::from_pointee(entries),
                last_text: parking_lot::Mutex::new(last_text),
                last_read_error: parking_lot::Mutex::new(last_read_error),
            }),
            allow_unauthenticated_management: false,
            metrics_require_token,
            supervisor_token: None,
        }
    }

    /// The access rules `Settings` ask for; reads the tokens file when one is given.
    pub fn from_settings(settings: &crate::settings::Settings) -> Result<Auth, TokensError> {
        let auth = match &settings.auth_tokens {
            Some(path) if settings.management_server.is_some() => Auth::with_worker_token_file(
                path,
                settings.metrics_require_token,
                settings.worker_tokens_in_force.clone(),
            ),
            Some(path) => Auth::with_token_file(path, settings.metrics_require_token)?,
            None => Auth::without_tokens(settings.allow_unauthenticated_management),
        };
        Ok(auth.with_supervisor_token(settings.supervisor_token_sha256))
    }

    /// Also accepts the token whose SHA-256 is `sha256`, with every scope, under the
    /// name [`SUPERVISOR_TOKEN_NAME`] (a worker: its supervisor's token).
    pub fn with_supervisor_token(mut self, sha256: Option<[u8; 32]>) -> Auth {
        self.supervisor_token = sha256;
        self
    }

    pub fn tokens_configured(&self) -> bool {
        self.tokens.is_some()
    }

    /// The tokens in force (none when no tokens file is configured), which a main
    /// server hands to each worker it starts ([`Auth::with_worker_token_file`]).
    pub fn tokens_in_force(&self) -> Option<Arc<Vec<TokenEntry>>> {
        self.tokens.as_ref().map(|file| file.entries.load_full())
    }

    /// Re-reads the tokens file and swaps in its entries if its contents changed.
    /// Answers whether they changed. A file that cannot be read or parsed keeps the
    /// tokens in force (logged).
    pub fn reload_if_changed(&self) -> bool {
        let Some(file) = &self.tokens else {
            return false;
        };
        let text = match read_tokens_file(&file.path) {
            Ok(text) => {
                if file.last_read_error.lock().take().is_some() {
                    tracing::info!(path = %file.path.display(), "the tokens file reads again");
                }
                text
            }
            Err(e) => {
                let e = e.to_string();
                let mut last = file.last_read_error.lock();
                if last.as_deref() != Some(e.as_str()) {
                    tracing::error!("{e}; the tokens in force stay");
                    *last = Some(e);
                }
                return false;
            }
        };
        let mut last = file.last_text.lock();
        if last.as_deref() == Some(text.as_str()) {
            return false;
        }
        match parse_tokens(&text) {
            Ok(entries) => {
                tracing::info!(tokens = entries.len(), "tokens file changed; reloaded");
                file.entries.store(Arc::new(entries));
                *last = Some(text);
                true
            }
            Err(reason) => {
                tracing::error!(
                    "tokens file {} is not valid: {reason}; the tokens in force stay",
                    file.path.display()
                );
                // Remember the bad text so the error is logged once, not every poll.
                *last = Some(text);
                false
            }
        }
    }

    /// Whether management is open to this request only because its client is on
    /// the server's own host (no tokens, no --allow-unauthenticated-management):
    /// a browser page made to reach the server through a rebound DNS name must
    /// then be told apart (`crate::http::auth::rebinding_refusal`).
    pub fn management_by_loopback(&self) -> bool {
        self.tokens.is_none() && !self.allow_unauthenticated_management
    }

    /// Decides whether a request may proceed. `authorization` is the raw
    /// `Authorization` header (or gRPC `authorization` metadata); `peer` is the
    /// client's address when known. Answers the token's name when one was used.
    pub fn check(
        &self,
        access: Access,
        authorization: Option<&[u8]>,
        peer: Option<SocketAddr>,
    ) -> Result<Option<String>, Denied> {
        let needed = match access {
            Access::Open => return Ok(None),
            Access::Inference => Scope::Inference,
            Access::Management => Scope::Management,
            Access::Metrics if !self.metrics_require_token => return Ok(None),
            Access::Metrics => Scope::Metrics,
        };
        let Some(file) = &self.tokens else {
            return match access {
                Access::Management
                    if !self.allow_unauthenticated_management && !is_loopback(peer) =>
                {
                    Err(Denied::RemoteManagement)
                }
                _ => Ok(None),
            };
        };
        let token = bearer_token(authorization).ok_or(Denied::MissingToken)?;
        let presented = token_sha256(token);
        let entries = file.entries.load();
        // Compare with every entry, without stopping at a match, so timing says
        // nothing about which entry (or how much of a hash) matched.
        let mut found: Option<&TokenEntry> = None;
        for entry in entries.iter() {
            if bool::from(entry.sha256.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        // The supervisor's token, compared the same way, opens every scope.
        let supervisor = self
            .supervisor_token
            .is_some_and(|s| bool::from(s.ct_eq(&presented)));
        if supervisor {
            return Ok(Some(SUPERVISOR_TOKEN_NAME.to_string()));
        }
        let entry = found.ok_or(Denied::InvalidToken)?;
        if entry.scopes.contains(&needed) {
            Ok(Some(entry.name.clone()))
        } else {
            Err(Denied::MissingScope {
                token: entry.name.clone(),
                scope: needed.as_str(),
            })
        }
    }
}

impl Auth {
    /// [`Auth::check`] for one request of an adapter (`protocol` is `rest` or
    /// `grpc`, `target` the path or method): a refusal is counted and logged here,
    /// so each adapter only renders it.
    pub fn authorize(
        &self,
        protocol: &'static str,
        access: Access,
        authorization: Option<&[u8]>,
        peer: Option<SocketAddr>,
        target: &str,
    ) -> Result<Option<String>, Denied> {
        self.check(access, authorization, peer)
            .inspect_err(|denied| {
                crate::metrics::record_auth_failure(protocol, denied.reason());
                tracing::warn!(
                    protocol,
                    client = %display_peer(peer),
                    target,
                    reason = denied.reason(),
                    "request refused"
                );
            })
    }
}

/// Why a request that needs `access` is refused on a worker's port, whatever its
/// token (`management_server`: the worker's `Settings::management_server`, `None`
/// on a server that is no worker): a deployment's worker serves its model's
/// predictions, metadata, health and metrics, and never management, which goes
/// through the main server that deployed it. The supervisor needs no management
/// route of its workers: it reads their health and `/models/status`.
pub fn worker_refusal(management_server: Option<&str>, access: Access) -> Option<String> {
    let main = management_server.filter(|_| access == Access::Management)?;
    let at = if main.is_empty() {
        "that deployed this model".to_string()
    } else {
        format!("at {main}")
    };
    Some(format!(
        "this is a deployed model's worker, which takes no management requests: \
         management goes through the main server {at}"
    ))
}

/// The tokens a worker serves with while its tokens file is not valid (`e`, logged):
/// its main server's in force, or none at all.
fn worker_fallback(e: &TokensError, in_force: Option<Vec<TokenEntry>>) -> Vec<TokenEntry> {
    match in_force {
        Some(entries) => {
            tracing::error!(
                "{e}; this worker serves with the {} token(s) in force in its main server \
                 until the file is valid again",
                entries.len()
            );
            entries
        }
        None => {
            tracing::error!(
                "{e}; its main server handed over no tokens in force, so this worker \
                 refuses every request that needs a token until the file is valid again"
            );
            Vec::new()
        }
    }
}

/// A peer address for logs.
pub fn display_peer(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".to_string(), |p| p.to_string())
}

/// The token of `Bearer <token>` (scheme case-insensitive), if the header is one.
fn bearer_token(header: Option<&[u8]>) -> Option<&str> {
    let value = std::str::from_utf8(header?).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether the client is on the server's own host.
pub fn is_loopback(peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|p| match p.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        ip => ip.is_loopback(),
    })
}

#[cfg(test)]
mod tests {
    use super::tokens::tests::entry;
    use super::*;

    fn auth_with(text: &str) -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, text).unwrap();
        let auth = Auth::with_token_file(&path, true).unwrap();
        (dir, auth)
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_workers_supervisor_token_opens_every_scope() {
        let (_dir, auth) = auth_with(&entry("reader", "secret-r", "\"inference\""));
        let auth = auth.with_supervisor_token(Some(token_sha256("secret-sup")));
        let local = peer("127.0.0.1:1");
        for access in [Access::Inference, Access::Management, Access::Metrics] {
            assert_eq!(
                auth.check(access, Some(b"Bearer secret-sup"), local),
                Ok(Some(SUPERVISOR_TOKEN_NAME.into())),
                "{access:?}"
            );
        }
        // The file's tokens keep their scopes; anything else is refused.
        assert_eq!(
            auth.check(Access::Inference, Some(b"Bearer secret-r"), local),
            Ok(Some("reader".into()))
        );
        assert!(matches!(
            auth.check(Access::Management, Some(b"Bearer secret-r"), local),
            Err(Denied::MissingScope { .. })
        ));
        assert!(matches!(
            auth.check(Access::Inference, Some(b"Bearer secret-su"), local),
            Err(Denied::InvalidToken)
        ));
        // A server with no supervisor (the main server) knows no such token.
        let (_dir, plain) = auth_with(&entry("reader", "secret-r", "\"inference\""));
        assert!(matches!(
            plain.check(Access::Inference, Some(b"Bearer secret-sup"), local),
            Err(Denied::InvalidToken)
        ));
    }

    #[test]
    fn scopes_decide_with_tokens() {
        let text = entry("ci", "secret-ci", "\"inference\", \"management\"")
            + &entry("reader", "secret-r", "\"inference\"")
            + &entry("prom", "secret-p", "\"metrics\"");
        let (_dir, auth) = auth_with(&text);
        let h = |t: &str| format!("Bearer {t}");
        let local = peer("127.0.0.1:1");
        let ok = |a, t: &str| auth.check(a, Some(h(t).as_bytes()), local);
        assert_eq!(ok(Access::Management, "secret-ci"), Ok(Some("ci".into())));
        assert_eq!(ok(Access::Inference, "secret-r"), Ok(Some("reader".into())));
        assert!(matches!(
            ok(Access::Management, "secret-r"),
            Err(Denied::MissingScope { .. })
        ));
        assert!(matches!(
            ok(Access::Inference, "wrong"),
            Err(Denied::InvalidToken)
        ));
        assert!(matches!(
            auth.check(Access::Inference, None, local),
            Err(Denied::MissingToken)
        ));
        assert!(matches!(
            auth.check(Access::Inference, Some(b"Basic abc"), local),
            Err(Denied::MissingToken)
        ));
        assert_eq!(
            auth.check(Access::Inference, Some(b"bearer  secret-r "), local),
            Ok(Some("reader".into())),
            "scheme is case-insensitive"
        );
        assert_eq!(auth.check(Access::Open, None, None), Ok(None));
        assert_eq!(ok(Access::Metrics, "secret-p"), Ok(Some("prom".into())));
        assert!(ok(Access::Metrics, "secret-r").is_err());
        // With tokens, a loopback client gets no exemption.
        assert!(auth.check(Access::Management, None, local).is_err());
    }

    #[test]
    fn without_tokens_management_is_loopback_only() {
        let auth = Auth::without_tokens(false);
        assert_eq!(
            auth.check(Access::Management, None, peer("127.0.0.1:5")),
            Ok(None)
        );
        assert_eq!(
            auth.check(Access::Management, None, peer("[::1]:5")),
            Ok(None)
        );
        let remote = auth.check(Access::Management, None, peer("10.0.0.7:5"));
        assert_eq!(remote, Err(Denied::RemoteManagement));
        assert!(auth.check(Access::Management, None, None).is_err());
        assert_eq!(
            auth.check(Access::Inference, None, peer("10.0.0.7:5")),
            Ok(None)
        );
        assert_eq!(
            auth.check(Access::Metrics, None, peer("10.0.0.7:5")),
            Ok(None)
        );
        let open = Auth::without_tokens(true);
        assert_eq!(
            open.check(Access::Management, None, peer("10.0.0.7:5")),
            Ok(None)
        );
    }

    #[test]
    fn edited_file_is_reloaded_and_bad_edits_keep_tokens() {
        let (dir, auth) = auth_with(&entry("a", "one", "\"inference\""));
        let path = dir.path().join("tokens.toml");
        let check = |t: &str| {
            auth.check(
                Access::Inference,
                Some(format!("Bearer {t}").as_bytes()),
                None,
            )
        };
        assert!(check("one").is_ok());
        assert!(!auth.reload_if_changed(), "unchanged file");
        std::fs::write(&path, entry("b", "two", "\"inference\"")).unwrap();
        assert!(auth.reload_if_changed());
        assert!(check("one").is_err(), "revoked");
        assert!(check("two").is_ok());
        std::fs::write(&path, "not toml [[[").unwrap();
        assert!(!auth.reload_if_changed());
        assert!(
            check("two").is_ok(),
            "a broken file keeps the tokens in force"
        );
    }

    /// A worker whose tokens file does not parse (or cannot be read) at its start
    /// serves with the tokens handed over from its main server, never with none,
    /// and takes the file's once it is valid again.
    #[test]
    fn a_worker_starts_with_the_tokens_in_force_while_its_file_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let in_force = parse_tokens(&entry("old", "old-t", "\"inference\"")).unwrap();
        let check = |auth: &Auth, t: &str| {
            auth.check(
                Access::Inference,
                Some(format!("Bearer {t}").as_bytes()),
                None,
            )
        };
        std::fs::write(&path, "not toml [[[").unwrap();
        assert!(
            Auth::with_token_file(&path, false).is_err(),
            "the main server stops"
        );
        let auth = Auth::with_worker_token_file(&path, false, Some(in_force.clone()));
        assert_eq!(check(&auth, "old-t"), Ok(Some("old".into())));
        assert_eq!(check(&auth, "wrong"), Err(Denied::InvalidToken));
        assert_eq!(
            auth.check(Access::Inference, None, peer("127.0.0.1:1")),
            Err(Denied::MissingToken),
            "never open"
        );
        assert!(!auth.reload_if_changed(), "the same bad file");
        assert!(check(&auth, "old-t").is_ok());
        std::fs::write(&path, entry("new", "new-t", "\"inference\"")).unwrap();
        assert!(auth.reload_if_changed());
        assert_eq!(check(&auth, "new-t"), Ok(Some("new".into())));
        assert_eq!(check(&auth, "old-t"), Err(Denied::InvalidToken));

        // Nothing handed over: no token passes but the supervisor's.
        std::fs::write(&path, "not toml [[[").unwrap();
        let auth = Auth::with_worker_token_file(&path, false, None)
            .with_supervisor_token(Some(token_sha256("sup")));
        assert_eq!(check(&auth, "old-t"), Err(Denied::InvalidToken));
        assert_eq!(check(&auth, "sup"), Ok(Some(SUPERVISOR_TOKEN_NAME.into())));

        // A file that cannot be read at start, then appears (even empty: no token).
        let missing = dir.path().join("later.toml");
        let auth = Auth::with_worker_token_file(&missing, false, Some(in_force));
        assert!(check(&auth, "old-t").is_ok());
        std::fs::write(&missing, "").unwrap();
        assert!(auth.reload_if_changed());
        assert_eq!(check(&auth, "old-t"), Err(Denied::InvalidToken));
    }

    #[test]
    fn new_token_round_trips() {
        let (token, entry) = new_token("ci bot", &[Scope::Management, Scope::Inference]).unwrap();
        assert!(token.starts_with("fst_") && token.len() == 47, "{token}");
        let (_dir, auth) = auth_with(&entry);
        assert!(
            entry.contains("scopes = [\"inference\", \"management\"]"),
            "{entry}"
        );
        assert_eq!(
            auth.check(
                Access::Management,
                Some(format!("Bearer {token}").as_bytes()),
                None
            ),
            Ok(Some("ci bot".into()))
        );
        let (other, _) = new_token("x", &[Scope::Inference]).unwrap();
        assert_ne!(token, other);
        assert!(new_token("x", &[]).is_err());
    }
}
