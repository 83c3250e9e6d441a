//! The REST access layer: every request passes [`require`] before its route.
//!
//! It classifies the route (`auth::rest_access`), asks `Auth::check` with the
//! `Authorization` header and the peer address, and answers 401 (with
//! `WWW-Authenticate: Bearer`) or 403 on refusal. Management requests also pass
//! [`cross_site_refusal`] (a browser on another site must not be able to make them,
//! token or not) and, when only their loopback client lets them in,
//! [`rebinding_refusal`]; they are logged with the token's name once answered.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::auth::{display_peer, rest_access, worker_refusal, Access, Denied};

pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (access, token, peer) = match admit(&state, &request) {
        Ok(admitted) => admitted,
        // A client that sends its body without waiting reads the refusal, not a
        // broken pipe (an upload with a wrong token).
        Err(refusal) => return super::answer_drained(request, refusal).await,
    };
    if access != Access::Management {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    // Who asked, for the audit trail of the operation.
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
        %path,
        status = response.status().as_u16(),
        "management request"
    );
    response
}

/// What a request may reach and who sent it (its access, its token's name, its
/// peer), or its refusal (a rare path: not boxed).
#[allow(clippy::result_large_err)]
fn admit(
    state: &AppState,
    request: &Request,
) -> Result<(Access, Option<String>, Option<SocketAddr>), Response> {
    let path = request.uri().path();
    // The metrics' second path (TF Serving's monitoring config) is as open as /metrics.
    let access = if state.settings.metrics_path.as_deref() == Some(path) {
        Access::Metrics
    } else {
        rest_access(path)
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    // A worker takes no management at all (`Settings::management_server`).
    if let Some(message) = worker_refusal(state.settings.management_server.as_deref(), access) {
        crate::metrics::record_auth_failure("rest", "worker");
        tracing::warn!(client = %display_peer(peer), path = %request.uri().path(), "{message}");
        return Err((StatusCode::FORBIDDEN, Json(json!({ "error": message }))).into_response());
    }
    let authorization = request.headers().get(header::AUTHORIZATION);
    let token = state
        .auth
        .authorize(
            "rest",
            access,
            authorization.map(HeaderValue::as_bytes),
            peer,
            request.uri().path(),
        )
        .map_err(|denied| denied_response(&denied))?;
    if access != Access::Management {
        return Ok((access, token, peer));
    }
    let host = request_host(request.headers(), request.uri());
    let bodies = ManagementBodies::of_route(request.uri().path());
    if let Some((status, message)) = cross_site_refusal(request.headers(), host.as_deref(), bodies)
    {
        crate::metrics::record_auth_failure("rest", "cross_site");
        tracing::warn!(client = %display_peer(peer), path = %request.uri().path(), "{message}");
        return Err((status, Json(json!({ "error": message }))).into_response());
    }
    if state.auth.management_by_loopback() {
        let public_url = state.settings.public_url.as_deref();
        if let Some(message) = rebinding_refusal(host.as_deref(), public_url) {
            crate::metrics::record_auth_failure("rest", "rebinding");
            tracing::warn!(client = %display_peer(peer), path = %request.uri().path(), "{message}");
            return Err((StatusCode::FORBIDDEN, Json(json!({ "error": message }))).into_response());
        }
    }
    Ok((access, token, peer))
}

/// The host a request is for: its URI's authority where it has one (HTTP/2's
/// `:authority`, an HTTP/1 request in absolute form), which wins over a `Host`
/// header as RFC 9113 §8.3.1 and RFC 9112 §3.2.2 say (a local `host` beside a
/// foreign `:authority` hid the foreign name from these checks); else HTTP/1's
/// `Host`. One that is not text is kept as what it can be read as, to be refused,
/// not skipped.
fn request_host(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    match (uri.authority(), headers.get(header::HOST)) {
        (Some(a), _) => Some(a.as_str().to_string()),
        (None, Some(h)) => Some(String::from_utf8_lossy(h.as_bytes()).into_owned()),
        (None, None) => None,
    }
}

/// Whether the caller of a route open to inference (the models' status, the
/// console's fragments) may also see who did what: the token names and client
/// addresses of the audit trail, which `/v1/models/{m}/history` keeps to
/// management. It may when a management route would let it in.
pub(crate) fn sees_callers(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    peer: Option<SocketAddr>,
) -> bool {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if state
        .auth
        .check(Access::Management, authorization, peer)
        .is_err()
    {
        return false;
    }
    let host = request_host(headers, uri);
    !state.auth.management_by_loopback()
        || rebinding_refusal(host.as_deref(), state.settings.public_url.as_deref()).is_none()
}

pub(super) fn denied_response(denied: &Denied) -> Response {
    let status = if denied.is_unauthenticated() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::FORBIDDEN
    };
    let mut response = (status, Json(json!({ "error": denied.to_string() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"ferroserve\""),
        );
    }
    response
}

/// The bodies a management route reads, by its path: what [`cross_site_refusal`]
/// lets through to it, and what its 415 names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManagementBodies {
    /// JSON (or no body): every management route but the ones below.
    Json,
    /// JSON, or a multipart spec with its files: the job routes
    /// (`super::job_uploads::JobBody`, [`super::takes_multipart`]).
    JsonOrMultipart,
    /// Files, never JSON: a model upload (`super::upload`).
    Multipart,
}

impl ManagementBodies {
    /// What the management route at `path` reads.
    pub fn of_route(path: &str) -> ManagementBodies {
        if path.trim_end_matches('/') == "/upload_model" {
            ManagementBodies::Multipart
        } else if super::takes_multipart(path) {
            ManagementBodies::JsonOrMultipart
        } else {
            ManagementBodies::Json
        }
    }

    /// Whether a body whose type is `essence` (lowercase, no parameters) is one.
    fn take(self, essence: &str) -> bool {
        let json = essence == "application/json";
        let multipart = essence == "multipart/form-data";
        match self {
            ManagementBodies::Json => json,
            ManagementBodies::JsonOrMultipart => json || multipart,
            ManagementBodies::Multipart => multipart,
        }
    }

    /// The 415 for a body these are not: `essence` is its type, `None` where the
    /// request says none.
    pub fn refusal(self, essence: Option<&str>) -> (StatusCode, String) {
        let takes = match self {
            ManagementBodies::Json => {
                "application/json (multipart/form-data only for uploads: a model's, or a \
                 job's files)"
            }
            ManagementBodies::JsonOrMultipart => "application/json or multipart/form-data",
            ManagementBodies::Multipart => "multipart/form-data (a model file and its fields)",
        };
        let given = match essence {
            Some(essence) => format!("{essence:?}"),
            None => "a body with no Content-Type".to_string(),
        };
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("this management request takes {takes}, not {given}"),
        )
    }
}

/// Why a management request looks like a browser's cross-site request, if it
/// does: its headers name a page on another site (`browser_refusal_for_host`),
/// or its body's type is one a page on any site may send. A form or a no-cors `fetch` can only send `text/plain`,
/// `application/x-www-form-urlencoded` or `multipart/form-data`, so JSON bodies
/// must say `application/json` (which needs a CORS preflight this server never
/// grants) and a multipart upload must come from the same origin or from a
/// non-browser client. Only the routes that take files (`bodies`:
/// [`ManagementBodies::of_route`]) take `multipart/form-data`: anywhere else such a
/// body would be read as the JSON it holds, with no preflight. A model upload takes
/// nothing else: JSON there is refused here too, with the same 415 as any other
/// type, not read as a multipart body with no boundary. `host` is the
/// request's `Host` header, or its HTTP/2 authority.
pub fn cross_site_refusal(
    headers: &HeaderMap,
    host: Option<&str>,
    bodies: ManagementBodies,
) -> Option<(StatusCode, String)> {
    if let Some(message) = browser_refusal_for_host(headers, host) {
        return Some((StatusCode::FORBIDDEN, message));
    }
    if let Some(essence) = content_type_essence(headers) {
        if !bodies.take(&essence) {
            return Some(bodies.refusal(Some(&essence)));
        }
    }
    None
}

/// A request's `Content-Type` without its parameters, lowercase
/// (`multipart/form-data` of `multipart/form-data; boundary=x`); `None` where it
/// has none. One that is not text is read as empty.
pub(super) fn content_type_essence(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(header::CONTENT_TYPE)?;
    Some(
        content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Why a management request (REST) or call (gRPC) was made by a browser page on
/// another site, if its headers say so, whatever its body. The REST access layer
/// asks it through [`cross_site_refusal`]; the gRPC one asks it directly, and
/// checks the body's type its own way.
/// `Sec-Fetch-Site` says so outright (modern browsers send it on every request);
/// `Origin` (on every POST, and every `fetch` that is not a GET) and `Referer` (on
/// what an older browser fetches for an `<img>`, a link or a form, where it sends
/// neither of the others) name the page's site, which must be this server: the
/// request's `Host`, or its HTTP/2 authority (`uri`). A client that is not a
/// browser sends none of them, or names this server.
pub(crate) fn browser_refusal(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    browser_refusal_for_host(headers, request_host(headers, uri).as_deref())
}

/// [`browser_refusal`], with the request's host (`Host`, or the HTTP/2 authority)
/// already read.
fn browser_refusal_for_host(headers: &HeaderMap, host: Option<&str>) -> Option<String> {
    let refused = |what: String| Some(format!("cross-site management request refused: {what}"));
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return refused(format!("Sec-Fetch-Site is {site}"));
        }
    }
    let host = host.unwrap_or("");
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !same_origin(origin, host) {
            return refused(format!("Origin {origin:?} is not this server ({host:?})"));
        }
    }
    if let Some(referer) = headers.get(header::REFERER) {
        // Only the page's origin is quoted (and logged): its path and query
        // string are the page's business.
        let origin = origin_of_url(referer.to_str().unwrap_or(""));
        if !same_origin(origin, host) {
            return refused(format!(
                "Referer {origin:?} (a page's address) is not this server ({host:?})"
            ));
        }
    }
    None
}

/// The `scheme://authority` a URL begins with (what a browser's `Origin` for
/// its page would be); what is not such a URL, whole.
fn origin_of_url(url: &str) -> &str {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url;
    };
    let authority = rest.find(['/', '?', '#']).map_or(rest, |end| &rest[..end]);
    &url[..scheme.len() + "://".len() + authority.len()]
}

/// Why a management request that only its loopback client lets in may come from
/// a browser page whose DNS name was rebound to this machine, if it may: its
/// `Host` (`host`: the header, or HTTP/2's authority) names neither an IP address,
/// nor `localhost`, nor this machine's host name, nor a name `/etc/hosts` gives a
/// loopback address (Debian's `127.0.1.1 host.example host`), nor the host of
/// `public_url`. (Names from DNS are what an attacker controls; these are not.)
/// Such a page is same-origin with what it reaches, so [`cross_site_refusal`]
/// cannot see it; a name the attacker's DNS answers can only be its own.
/// Requests without a host (no browser sends one) pass.
pub fn rebinding_refusal(host: Option<&str>, public_url: Option<&str>) -> Option<String> {
    let authority = host?.trim();
    let name = if let Some(rest) = authority.strip_prefix('[') {
        // An IPv6 literal, `[::1]:8501`.
        rest.split_once(']').map_or(rest, |(ip, _)| ip)
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => authority,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let public = public_url
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        });
    let allowed = name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || public.as_deref() == Some(name.as_str())
        || crate::store::hostname().is_some_and(|h| h.eq_ignore_ascii_case(&name))
        || std::fs::read_to_string("/etc/hosts")
            .is_ok_and(|hosts| loopback_names(&hosts).any(|h| h.eq_ignore_ascii_case(&name)));
    (!allowed).then(|| {
        format!(
            "management request refused: its Host {authority:?} is not a name of this \
             machine (use localhost or an IP address, set --public-url to the name \
             clients use, or configure --auth-tokens)"
        )
    })
}

/// The names a hosts file (`/etc/hosts`) gives loopback addresses.
fn loopback_names(hosts: &str) -> impl Iterator<Item = &str> {
    hosts.lines().flat_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let loopback = fields
            .next()
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback());
        fields.filter(move |_| loopback)
    })
}

/// Whether `Origin: scheme://authority` names the server the `Host` header names.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null" and anything malformed
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let normalise = |a: &str| {
        let a = a.trim_end_matches('/').to_ascii_lowercase();
        a.strip_suffix(default_port)
            .map(str::to_string)
            .unwrap_or(a)
    };
    !host.is_empty() && normalise(authority) == normalise(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The URI's authority wins over a `Host` header: an HTTP/2 request with a
    /// foreign `:authority` and a local `host`, or an HTTP/1 one in absolute form,
    /// is checked by the foreign name.
    #[test]
    fn the_authority_wins_over_the_host_header() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8501"));
        let foreign: Uri = "http://evil.example/reload_model".parse().unwrap();
        assert_eq!(request_host(&h, &foreign).as_deref(), Some("evil.example"));
        let origin_form: Uri = "/reload_model".parse().unwrap();
        assert_eq!(
            request_host(&h, &origin_form).as_deref(),
            Some("127.0.0.1:8501")
        );
        assert_eq!(request_host(&HeaderMap::new(), &origin_form), None);
        assert!(rebinding_refusal(request_host(&h, &foreign).as_deref(), None).is_some());
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn loopback_management_through_a_foreign_host_name_is_refused() {
        let public = Some("https://models.example.com/");
        for ok in [
            None,
            Some("127.0.0.1:8501"),
            Some("127.0.0.2"),
            Some("[::1]:8501"),
            Some("10.1.2.3:8501"),
            Some("localhost:8501"),
            Some("LOCALHOST."),
            Some("app.localhost:8501"),
            Some("models.example.com"),
            Some("models.example.com:443"),
        ] {
            assert_eq!(rebinding_refusal(ok, public), None, "{ok:?}");
        }
        if let Some(me) = crate::store::hostname() {
            assert_eq!(rebinding_refusal(Some(&format!("{me}:8501")), None), None);
        }
        let hosts = "127.0.0.1 localhost\n127.0.1.1 box.corp.example box # me\n\
                     10.0.0.5 db.corp.example\n::1 ip6-localhost\n# 127.0.0.1 commented\n";
        let names: Vec<&str> = loopback_names(hosts).collect();
        assert_eq!(
            names,
            ["localhost", "box.corp.example", "box", "ip6-localhost"]
        );
        for bad in [
            "evil\u{fffd}.com",
            "attacker.example:8501",
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.attacker.example:8501",
            "models.example.com.evil",
        ] {
            let refused = rebinding_refusal(Some(bad), public).expect(bad);
            assert!(refused.contains("not a name of this machine"), "{refused}");
        }
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let host = ("host", "127.0.0.1:8501");
        let multipart = ("content-type", "multipart/form-data; boundary=x");
        let json = ("content-type", "application/json");
        const JSON: ManagementBodies = ManagementBodies::Json;
        const JOBS: ManagementBodies = ManagementBodies::JsonOrMultipart;
        const UPLOAD: ManagementBodies = ManagementBodies::Multipart;
        // (headers, what the route takes)
        for (ok, bodies) in [
            (vec![host], JSON),
            (
                vec![host, ("content-type", "application/json; charset=utf-8")],
                JSON,
            ),
            (
                vec![host, ("content-type", "application/json; charset=utf-8")],
                JOBS,
            ),
            (vec![host, multipart], JOBS),
            (vec![host, multipart], UPLOAD),
            (vec![host], UPLOAD),
            (vec![host, ("origin", "http://127.0.0.1:8501")], JSON),
            (
                vec![
                    ("host", "models.local"),
                    ("origin", "http://models.local:80"),
                ],
                JSON,
            ),
            (vec![host, ("sec-fetch-site", "same-origin")], JSON),
            (vec![host, ("sec-fetch-site", "none")], JSON),
            (
                vec![host, ("referer", "http://127.0.0.1:8501/console")],
                JSON,
            ),
            (vec![host, ("referer", "http://127.0.0.1:8501?q=1#x")], JSON),
        ] {
            let h = headers(&ok);
            let host = h.get("host").map(|v| v.to_str().unwrap());
            assert_eq!(cross_site_refusal(&h, host, bodies), None, "{ok:?}");
        }
        // HTTP/2 (a browser over TLS) sends no Host: its authority is the host.
        let h2 = headers(&[("origin", "https://localhost:8443")]);
        assert_eq!(cross_site_refusal(&h2, Some("localhost:8443"), JSON), None);
        assert!(cross_site_refusal(&h2, Some("evil.example:8443"), JSON).is_some());
        for (bad, bodies, status) in [
            (vec![host, ("origin", "http://evil.example")], JSON, 403),
            (
                vec![host, ("origin", "http://evil.example"), multipart],
                JOBS,
                403,
            ),
            (vec![host, ("origin", "null")], JSON, 403),
            (vec![host, ("sec-fetch-site", "cross-site")], JSON, 403),
            (vec![host, ("sec-fetch-site", "same-site")], JSON, 403),
            // An older browser's `<img src>` sends only a Referer.
            (
                vec![host, ("referer", "http://evil.example/page")],
                JSON,
                403,
            ),
            (
                vec![host, ("referer", "http://127.0.0.1:8501.evil/")],
                JSON,
                403,
            ),
            (vec![host, ("referer", "http://127.0.0.1:9999/")], JSON, 403),
            (vec![host, ("referer", "not a url")], JSON, 403),
            (vec![host, ("content-type", "text/plain")], JSON, 415),
            (vec![host, ("content-type", "text/plain")], JOBS, 415),
            (
                vec![host, ("content-type", "application/x-www-form-urlencoded")],
                JOBS,
                415,
            ),
            // A safelisted type no preflight guards, read as JSON by a JSON route.
            (vec![host, multipart], JSON, 415),
            // A model upload takes files only: JSON is as foreign to it as text.
            (vec![host, json], UPLOAD, 415),
            (vec![host, ("content-type", "text/plain")], UPLOAD, 415),
        ] {
            let h = headers(&bad);
            let host = h.get("host").map(|v| v.to_str().unwrap());
            let refused = cross_site_refusal(&h, host, bodies);
            assert_eq!(refused.map(|r| r.0.as_u16()), Some(status), "{bad:?}");
        }
    }

    #[test]
    fn each_refusal_names_what_its_route_takes() {
        let message = |bodies: ManagementBodies, essence| bodies.refusal(essence).1;
        let upload = message(ManagementBodies::Multipart, Some("application/json"));
        assert_eq!(
            upload,
            "this management request takes multipart/form-data (a model file and its \
             fields), not \"application/json\""
        );
        let none = message(ManagementBodies::Multipart, None);
        assert!(none.ends_with("not a body with no Content-Type"), "{none}");
        let jobs = message(ManagementBodies::JsonOrMultipart, Some("text/plain"));
        assert!(
            jobs.contains("takes application/json or multipart/form-data"),
            "{jobs}"
        );
        let json = message(ManagementBodies::Json, Some("text/plain"));
        assert!(json.contains("takes application/json (multipart"), "{json}");
        for (path, bodies) in [
            ("/upload_model", ManagementBodies::Multipart),
            ("/upload_model/", ManagementBodies::Multipart),
            ("/v1/jobs", ManagementBodies::JsonOrMultipart),
            ("/predictall", ManagementBodies::JsonOrMultipart),
            ("/train", ManagementBodies::JsonOrMultipart),
            ("/deploy", ManagementBodies::Json),
            ("/reload_model", ManagementBodies::Json),
            ("/v1/jobs/j1/cancel", ManagementBodies::Json),
        ] {
            assert_eq!(ManagementBodies::of_route(path), bodies, "{path}");
        }
    }
}
