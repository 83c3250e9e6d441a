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
//!   file that no longer parses is logged and the tokens in force stay.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

/// One entry of the tokens file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: BTreeSet<Scope>,
}

/// The tokens file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("tokens file {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
}

/// Parses the TOML tokens file. Every entry needs a unique name, a 64-digit hex
/// SHA-256 and at least one known scope; an empty file configures no token, which
/// refuses every protected request (the operator asked for tokens).
pub fn parse_tokens(text: &str) -> Result<Vec<TokenEntry>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        token: Vec<Entry>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        name: String,
        sha256: String,
        scopes: Vec<String>,
    }
    let file: File = toml::from_str(text).map_err(|e| toml_error_without_text(&e, text))?;
    let mut names = BTreeSet::new();
    let mut hashes = BTreeSet::new();
    let mut out = Vec::with_capacity(file.token.len());
    for e in file.token {
        if e.name.is_empty()
            || e.name.len() > 64
            || !e.name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        {
            return Err(format!(
                "token name {:?} is not valid: 1 to 64 printable ASCII characters",
                e.name
            ));
        }
        if !names.insert(e.name.clone()) {
            return Err(format!("token name {:?} is used twice", e.name));
        }
        let sha256 = parse_hex32(&e.sha256).ok_or_else(|| {
            format!(
                "token {:?}: sha256 must be 64 hex digits (the SHA-256 of the token)",
                e.name
            )
        })?;
        if !hashes.insert(sha256) {
            return Err(format!(
                "token {:?}: the same token hash appears twice",
                e.name
            ));
        }
        if e.scopes.is_empty() {
            return Err(format!("token {:?} has no scopes", e.name));
        }
        let mut scopes = BTreeSet::new();
        for s in &e.scopes {
            let scope = Scope::parse(s).ok_or_else(|| {
                format!(
                    "token {:?}: unknown scope {s:?} (known: inference, management, metrics)",
                    e.name
                )
            })?;
            scopes.insert(scope);
        }
        out.push(TokenEntry {
            name: e.name,
            sha256,
            scopes,
        });
    }
    Ok(out)
}

/// Where a tokens file stops being TOML of the tokens file's shape, and what is
/// wrong there (`line 3, column 1: unknown key, expected one of ...`), without its
/// text: toml's own message quotes the offending line, and its words quote what it
/// found there (``unknown field `fst_…` ``, `invalid type: string "fst_…"`). That
/// is a token whenever one is pasted where its hash belongs (`token = "fst_…"`,
/// `sha256 = fst_…`), and tokens are never logged.
fn toml_error_without_text(e: &toml::de::Error, text: &str) -> String {
    let at = e.span().map(|span| {
        // The end of a file that ends its last line is told as that line's end.
        let mut start = span.start.min(text.len());
        if start == text.len() && text.ends_with('\n') {
            start -= 1;
        }
        let before = text.get(..start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        format!("line {line}, column {column}: ")
    });
    let what: Vec<String> = e.message().lines().map(words_without_text).collect();
    format!("{}{}", at.unwrap_or_default(), what.join("; "))
}

/// One line of toml's message, with whatever it quotes from the file left out.
/// serde's words name the value or key found before `, expected …` (which names
/// only what the tokens file takes): they become the kind of what was found.
/// toml's own words (``duplicate key `sha256` in table `token` ``, ``expected `"`,
/// `'` ``) keep what they quote only when it is one of the file's keys or a single
/// character; past anything else (a quoted key may hold a backtick itself, so
/// nothing after it can be told apart from the file's text) the line is cut.
fn words_without_text(line: &str) -> String {
    let expected = line.rsplit_once(", expected ").map(|(_, e)| e);
    if line.starts_with("unknown field ") {
        return match expected {
            Some(e) => format!("unknown key, expected {e}"),
            None => "unknown key".into(),
        };
    }
    for what in ["invalid type", "invalid value"] {
        if let Some(found) = line.strip_prefix(what).and_then(|r| r.strip_prefix(": ")) {
            // `string "…"`, ``integer `3` ``, `sequence`: its kind, not its value.
            let kind = match found.split([' ', ',']).next().unwrap_or("") {
                "floating" => "floating point",
                k => k,
            };
            return match expected {
                Some(e) => format!("{what}: {kind}, expected {e}"),
                None => format!("{what}: {kind}"),
            };
        }
    }
    let mut out = String::new();
    for (i, part) in line.split('`').enumerate() {
        let fits = match i {
            // A double-quoted value (serde's words for a string) is the file's.
            0 => !part.contains('"'),
            i if i % 2 == 1 => {
                part.chars().count() <= 1 || matches!(part, "token" | "name" | "sha256" | "scopes")
            }
            _ => matches!(part, "" | ", " | " in table " | " in document root"),
        };
        if !fits {
            out.push('…');
            break;
        }
        if i > 0 {
            out.push('`');
        }
        out.push_str(part);
    }
    out
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    // from_str_radix would take a sign ("+a").
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lowercase hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a token, as the tokens file stores it.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh random token (`fst_` + 43 characters of URL-safe base64 = 256 bits)
/// and the tokens-file entry that accepts it.
pub fn new_token(name: &str, scopes: &[Scope]) -> Result<(String, String), String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
    let token = format!(
        "fst_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let scopes: BTreeSet<Scope> = scopes.iter().copied().collect();
    if scopes.is_empty() {
        return Err("give at least one scope".into());
    }
    let list: Vec<String> = scopes.iter().map(|s| format!("{:?}", s.as_str())).collect();
    let entry = format!(
        "[[token]]\nname = {}\nsha256 = \"{}\"\nscopes = [{}]\n",
        toml::Value::String(name.to_string()),
        to_hex(&token_sha256(&token)),
        list.join(", ")
    );
    // The entry must be one the server accepts.
    parse_tokens(&entry)?;
    Ok((token, entry))
}

/// The tokens file in force and what was last read from disk.
struct TokenFile {
    path: PathBuf,
    entries: ArcSwap<Vec<TokenEntry>>,
    /// The file's last contents, to re-parse only when they change.
    last_text: parking_lot::Mutex<String>,
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
                last_text: parking_lot::Mutex::new(text),
                last_read_error: parking_lot::Mutex::new(None),
            }),
            allow_unauthenticated_management: false,
            metrics_require_token,
            supervisor_token: None,
        })
    }

    /// The access rules `Settings` ask for; reads the tokens file when one is given.
    pub fn from_settings(settings: &crate::settings::Settings) -> Result<Auth, TokensError> {
        let auth = match &settings.auth_tokens {
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
        if *last == text {
            return false;
        }
        match parse_tokens(&text) {
            Ok(entries) => {
                tracing::info!(tokens = entries.len(), "tokens file changed; reloaded");
                file.entries.store(Arc::new(entries));
                *last = text;
                true
            }
            Err(reason) => {
                tracing::error!(
                    "tokens file {} is not valid: {reason}; the tokens in force stay",
                    file.path.display()
                );
                // Remember the bad text so the error is logged once, not every poll.
                *last = text;
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

/// A peer address for logs.
pub fn display_peer(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".to_string(), |p| p.to_string())
}

fn read_tokens_file(path: &Path) -> Result<String, TokensError> {
    std::fs::read_to_string(path).map_err(|e| TokensError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
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

/// What a REST route needs. Unknown routes need `inference`, so a server with
/// tokens does not tell an anonymous client which routes exist.
pub fn rest_access(path: &str) -> Access {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] | ["v2", "health", "live" | "ready"] => Access::Open,
        ["v2", "models", _, "ready"] | ["v2", "models", _, "versions", _, "ready"] => Access::Open,
        ["metrics"] => Access::Metrics,
        // The web console's shells and static files hold no data (`crate::console`);
        // its fragments and chart data are read like the status and metrics routes.
        [""] | ["console"] | ["console", "models" | "jobs", _] | ["console", "jobs"] => {
            Access::Open
        }
        ["console", "assets", _] => Access::Open,
        // The API's description and its docs page describe routes, not data, and a
        // browser cannot send a token to load them; calls made from the docs page
        // (Swagger UI's "Authorize") carry the token like any other.
        ["openapi.json"] | ["swagger.yaml"] | ["docs", ..] => Access::Open,
        ["console", "fragments", "jobs", ..] => Access::Management,
        ["console", "api", "models", _, "metrics"] => Access::Metrics,
        ["upload_model"] | ["reload_model"] | ["deploy"] => Access::Management,
        ["stop_deployment", ..] | ["delete_model", ..] => Access::Management,
        ["v2", "repository", "models", _, "load" | "unload"] => Access::Management,
        // Who did what, and what clients sent (the metadata store): however the
        // path is spelled, as the route decodes it (`%68istory`, `m%2Fhistory`).
        ["v1", "models", rest @ ..] if names_store_view(rest) => Access::Management,
        // Jobs read and write the server's data directory and databases.
        ["v1", "jobs", ..] | ["predictall"] | ["train"] | ["training", "status", ..] => {
            Access::Management
        }
        _ => Access::Inference,
    }
}

/// Whether the part of a `/v1/models/` path after it names a model's history or
/// prediction log once percent-decoded, as `http::tfs` reads it (its last part).
fn names_store_view(rest: &[&str]) -> bool {
    let decoded = percent_encoding::percent_decode_str(&rest.join("/"))
        .decode_utf8_lossy()
        .into_owned();
    decoded
        .rsplit('/')
        .next()
        .is_some_and(|last| matches!(last, "history" | "predictions"))
}

/// What a gRPC method (`/package.Service/Method`) needs.
pub fn grpc_access(path: &str) -> Access {
    match path {
        "/tensorflow.serving.ModelService/HandleReloadConfigRequest"
        | "/inference.GRPCInferenceService/RepositoryModelLoad"
        | "/inference.GRPCInferenceService/RepositoryModelUnload" => Access::Management,
        "/inference.GRPCInferenceService/ServerLive"
        | "/inference.GRPCInferenceService/ServerReady"
        | "/inference.GRPCInferenceService/ModelReady" => Access::Open,
        p if p.starts_with("/grpc.health.v1.Health/") => Access::Open,
        _ => Access::Inference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, token: &str, scopes: &str) -> String {
        format!(
            "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{scopes}]\n",
            to_hex(&token_sha256(token))
        )
    }

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
    fn tokens_file_is_validated() {
        let good = entry("a", "t", "\"inference\"");
        assert_eq!(parse_tokens(&good).unwrap().len(), 1);
        assert!(parse_tokens("").unwrap().is_empty());
        for (bad, says) in [
            (good.clone() + &good, "used twice"),
            (entry("a", "t", "\"admin\""), "unknown scope"),
            (entry("a", "t", ""), "no scopes"),
            (
                "[[token]]\nname = \"a\"\nsha256 = \"abc\"\nscopes = [\"inference\"]\n".into(),
                "64 hex",
            ),
            (
                "[[token]]\nname = \"a\"\nsha256 = \"x\"\nscopes = []\ncolour = 1\n".into(),
                "line 5, column 1: unknown key, expected one of `name`, `sha256`, `scopes`",
            ),
            (entry("", "t", "\"inference\""), "not valid"),
            (
                entry("a", "t", "\"inference\"") + &entry("b", "t", "\"inference\""),
                "hash appears twice",
            ),
        ] {
            let e = parse_tokens(&bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_file_that_does_not_parse_is_told_without_its_text() {
        // With a backtick, as toml's messages quote what they found.
        const SECRET: &str = "fst_pasted`Secret42";
        let head = "[[token]]\nname = \"ci\"\n";
        // (the file's text after its head, what is said of it)
        for (rest, says) in [
            (
                format!("token = \"{SECRET}\"\n"),
                "line 3, column 1: unknown key",
            ),
            (
                format!("sha256 = {SECRET}\n"),
                "line 3, column 10: invalid string",
            ),
            (
                format!("sha256 = '{SECRET}\n"),
                "line 3, column 30: invalid literal string",
            ),
            (
                format!("sha256 = \"\"\"{SECRET}\n"),
                "line 3, column 32: invalid multiline basic string",
            ),
            (
                format!("sha256 = \"0\"\nscopes = \"{SECRET}\"\n"),
                "line 4, column 10: invalid type: string, expected a sequence",
            ),
            (
                format!("sha256 = \"0\"\nscopes = [1.5, \"{SECRET}\"]\n"),
                "line 4, column 11: invalid type: floating point, expected a string",
            ),
            (
                format!("sha256 = [\"{SECRET}\"]\n"),
                "line 3, column 10: invalid type: sequence, expected a string",
            ),
            (format!("'{SECRET}' = 1\n"), "line 3, column 1: unknown key"),
            (
                format!("sha256 = \"0\"\n\"{SECRET}\" = 1\n\"{SECRET}\" = 2\n"),
                "line 5, column 1: duplicate key …",
            ),
            (
                "sha256 = \"0\"\nsha256 = \"1\"\n".into(),
                "line 4, column 1: duplicate key `sha256` in table `token`",
            ),
            (
                format!("[{SECRET}]\n"),
                "line 3, column 12: invalid table header; expected `.`, `]`",
            ),
            (
                "sha256 = \"0\"\nscopes = []\n[fst_pastedSecret42]\n".into(),
                "line 5, column 2: unknown key, expected `token`",
            ),
        ] {
            let text = format!("{head}{rest}");
            let told = parse_tokens(&text).err().unwrap_or_default();
            assert!(told.contains(says), "{text}\n{told}");
            for part in ["pasted", "Secret"] {
                assert!(!told.contains(part), "{text}\n{told}");
            }
        }
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

    #[test]
    fn routes_are_classified() {
        for (path, access) in [
            ("/healthz", Access::Open),
            ("/v2/health/live", Access::Open),
            ("/v2/models/iris/ready", Access::Open),
            ("/v2/models/iris/versions/2/ready", Access::Open),
            ("/metrics", Access::Metrics),
            ("/upload_model", Access::Management),
            ("/reload_model", Access::Management),
            ("/deploy", Access::Management),
            ("/stop_deployment/iris", Access::Management),
            ("/delete_model/iris", Access::Management),
            ("/v2/repository/models/iris/load", Access::Management),
            ("/v2/repository/models/iris/unload", Access::Management),
            ("/v2/repository/index", Access::Inference),
            ("/models/status", Access::Inference),
            ("/v1/models/iris:predict", Access::Inference),
            ("/v2/models/iris/infer", Access::Inference),
            ("/predict", Access::Inference),
            ("/no/such/route", Access::Inference),
        ] {
            assert_eq!(rest_access(path), access, "{path}");
        }
        for (path, access) in [
            (
                "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
                Access::Management,
            ),
            (
                "/tensorflow.serving.ModelService/GetModelStatus",
                Access::Inference,
            ),
            (
                "/tensorflow.serving.PredictionService/Predict",
                Access::Inference,
            ),
            (
                "/inference.GRPCInferenceService/ModelInfer",
                Access::Inference,
            ),
            (
                "/inference.GRPCInferenceService/RepositoryModelLoad",
                Access::Management,
            ),
            ("/inference.GRPCInferenceService/ServerLive", Access::Open),
            ("/grpc.health.v1.Health/Check", Access::Open),
        ] {
            assert_eq!(grpc_access(path), access, "{path}");
        }
    }

    #[test]
    fn a_sha256_is_64_hex_digits_and_nothing_else() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_hex32(&hex), Some([0xab; 32]));
        assert_eq!(parse_hex32(&"+a".repeat(32)), None, "a sign is no digit");
        assert_eq!(parse_hex32(&"ab".repeat(31)), None);
        assert_eq!(parse_hex32(&"zz".repeat(32)), None);
    }
}
