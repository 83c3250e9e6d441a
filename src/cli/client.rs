//! What every client command shares: where the server is (`--server`, `--token`,
//! `--ca-cert`, `--client-cert`/`--client-key`), a REST client whose failures fall into classes, and the exit code
//! of each class.
//!
//! Exit codes: 0 done; 1 the operation failed (a job that failed, a file that
//! cannot be read); 2 usage (clap's own); 3 the server cannot be reached; 4 the
//! server refused the request (a 4xx: bad input, unknown model, missing token; a
//! client certificate missing or refused), or has no model of the name asked for;
//! 5 the server failed (a 5xx, or an answer that is not what it should be: a 200
//! that is not JSON, from a server that is not ferroserve, say; a server
//! certificate not signed by `--ca-cert`'s CA or for another host name). A
//! closed standard output (`| head -1`) ends a command quietly with 0
//! ([`StdoutClosed`]): what commands print goes through [`print_line`] and
//! [`note`], never `println!`, which panics on it.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// Where the server is.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The server's REST address
    #[arg(
        long = "server",
        alias = "url",
        env = "FERROSERVE_URL",
        default_value = "http://127.0.0.1:8501",
        value_name = "URL"
    )]
    pub url: String,
    /// Bearer token (the scope the command needs: management for changes, inference
    /// for predictions)
    #[arg(long, env = "FERROSERVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate (https URLs)
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// PEM certificate this client shows a server started with --tls-client-ca
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert (unencrypted)
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

/// `--server`: an http or https URL of a server (a usage error otherwise, exit 2).
/// Checks `--server` (`FERROSERVE_URL`) when the client is made, not as clap's value
/// parser: clap's error repeats the value given, password and all. Messages name it
/// without its password; a value with no user part and no query holds none, and is
/// shown as given.
///
/// A query or a fragment is refused: requests are made by appending their path to
/// the URL, so `http://host:8501?x=1` sent every one to `/?x=1/models/status`.
fn server_url(text: &str) -> Result<(), String> {
    let shown = if text.contains('@') || text.contains('?') {
        crate::store::pool::redact(text)
    } else {
        text.to_string()
    };
    // `127.0.0.1:8501`, `localhost:8501`: the scheme left out.
    let say = if !text.contains("://") && !text.contains('@') {
        format!("http://{text}")
    } else {
        "http://HOST:PORT".to_string()
    };
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            let part = match (u.query(), u.fragment()) {
                (Some(_), _) => "a query (?…)",
                (None, Some(_)) => "a fragment (#…)",
                (None, None) => return Ok(()),
            };
            Err(format!(
                "--server {shown:?} has {part}: give the server's address alone \
                 (http://HOST:PORT, and a path for a server behind a proxy)"
            ))
        }
        Ok(u) => Err(format!(
            "--server {shown:?} is no http:// or https:// URL of a server (scheme {:?}; say \
             {say})",
            u.scheme()
        )),
        Err(e) => Err(format!("--server {shown:?} is no URL: {e} (say {say})")),
    }
}

/// The rustls setup reqwest makes of `--ca-cert` and `--client-cert`/`--client-key`
/// (PEM), for [`Client::ask_handshake`]; `None` where rustls takes none of it
/// (reqwest has refused it already).
fn handshake_config(
    ca_pem: Option<&[u8]>,
    identity_pem: Option<&(Vec<u8>, Vec<u8>)>,
) -> Option<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in ca_pem.map_or_else(Vec::new, |pem| {
        CertificateDer::pem_slice_iter(pem).flatten().collect()
    }) {
        roots.add(cert).ok()?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots);
    let config = match identity_pem {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert).flatten().collect();
            let key = PrivateKeyDer::from_pem_slice(key).ok()?;
            builder.with_client_auth_cert(certs, key).ok()?
        }
        None => builder.with_no_client_auth(),
    };
    Some(Arc::new(config))
}

/// How a client command failed, for its exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Something answered, but not in HTTP/1.1 (a gRPC port, an HTTP/2-only or
    /// TLS port given as http://): reached, but not a ferroserve REST port.
    #[error(
        "{url} answered in another protocol than HTTP ({reason}): is --server the REST \
         port (not the gRPC one), with https:// for a TLS port?"
    )]
    Protocol { url: String, reason: String },
    /// Something answered an https:// request, but not in TLS: a plain-HTTP port
    /// given as https:// (the reverse of [`ClientError::Protocol`]'s mistake).
    #[error(
        "{url} answered, but not in TLS ({reason}): is it a plain-HTTP port? Then say \
         http:// in --server"
    )]
    NotTls { url: String, reason: String },
    /// The TLS handshake failed on this client's certificate: the server wants
    /// one and none was given, or refused the one given (`--client-cert`).
    #[error("{0}")]
    ClientCertificate(String),
    /// The TLS handshake failed on the server's certificate: no `--ca-cert` CA
    /// signed it, or it is for another host name. Reached, but not the server
    /// `--server` should name, as this client can tell.
    #[error("{0}")]
    ServerCertificate(String),
    #[error("the server refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("the server failed ({status}): {message}")]
    Server { status: u16, message: String },
    /// The server answered, but not as ferroserve answers (a 200 that is not JSON):
    /// `--server` names another kind of server, or a proxy's page.
    #[error("unexpected answer from {url} ({status}): {message}")]
    Unexpected {
        url: String,
        status: u16,
        message: String,
    },
    /// What the command looked for is not on the server (`models status NAME` of a
    /// model the server does not list): found by the client in a good answer.
    #[error("{0}")]
    NotFound(String),
    /// An argument no request can carry (a token with a line break, a batch size
    /// of 0, `..` for a model name): found before anything is sent.
    #[error("{0}")]
    Usage(String),
}

pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_UNREACHABLE: i32 = 3;
pub const EXIT_REJECTED: i32 = 4;
pub const EXIT_SERVER: i32 = 5;

/// The exit code for an error a client command returned.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Unreachable { .. }) => EXIT_UNREACHABLE,
        Some(ClientError::Protocol { .. }) => EXIT_SERVER,
        Some(ClientError::NotTls { .. }) => EXIT_SERVER,
        Some(ClientError::ClientCertificate(_)) => EXIT_REJECTED,
        Some(ClientError::ServerCertificate(_)) => EXIT_SERVER,
        Some(ClientError::Rejected { .. }) => EXIT_REJECTED,
        Some(ClientError::Server { .. }) => EXIT_SERVER,
        Some(ClientError::Unexpected { .. }) => EXIT_SERVER,
        Some(ClientError::NotFound(_)) => EXIT_REJECTED,
        Some(ClientError::Usage(_)) => EXIT_USAGE,
        None => EXIT_FAILED,
    }
}

/// The standard output was closed under a command: `ferroserve jobs list | head -1`
/// once `head` has read its line and exited. Not a failure: the command ends
/// quietly, with 0, as other command-line tools do (`stdout_closed`).
#[derive(Debug, thiserror::Error)]
#[error("the standard output is closed")]
pub struct StdoutClosed;

/// The standard output, as a writer whose broken pipe is [`StdoutClosed`]. What
/// a client command prints goes through it: `println!` panics on a closed pipe.
pub struct Stdout;

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stdout().write(buf).map_err(closed_pipe)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush().map_err(closed_pipe)
    }
}

fn closed_pipe(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(e.kind(), StdoutClosed)
    } else {
        e
    }
}

/// Prints `line` and a newline to the standard output ([`Stdout`]).
pub fn print_line(line: impl std::fmt::Display) -> std::io::Result<()> {
    writeln!(Stdout, "{line}")
}

/// Prints `line` and a newline to the standard error, for people: a closed
/// standard error (`2>&1 | head -1`) loses it, where `eprintln!` would panic.
pub fn note(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether a command ended because the standard output was closed
/// ([`StdoutClosed`], also inside the `std::io::Error` a [`Stdout`] answered).
pub fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.is::<StdoutClosed>()
            || cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    token: Option<String>,
    /// Whether the client shows a certificate (`--client-cert`): a server's alert
    /// about a bad certificate is then about this one.
    shows_certificate: bool,
    /// The TLS setup of `http` (its CA, its certificate) for a handshake of the
    /// client's own ([`Client::ask_handshake`]); `None` for an http:// server.
    handshake: Option<Arc<rustls::ClientConfig>>,
}

impl Client {
    /// A client whose requests time out after `timeout`.
    pub fn new(c: &Connection, timeout: Duration) -> anyhow::Result<Client> {
        server_url(&c.url).map_err(ClientError::Usage)?;
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10));
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut ca_pem = None;
        let mut identity_pem = None;
        if let Some(path) = &c.ca_cert {
            let pem = read(path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
            if certs.is_empty() {
                anyhow::bail!("{} holds no PEM certificate", path.display());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
            ca_pem = Some(pem);
        }
        if let (Some(cert), Some(key)) = (&c.client_cert, &c.client_key) {
            let (cert_pem, key_pem) = (read(cert)?, read(key)?);
            let mut pem = cert_pem.clone();
            pem.push(b'\n');
            pem.extend(&key_pem);
            identity_pem = Some((cert_pem, key_pem));
            let identity = reqwest::Identity::from_pem(&pem).with_context(|| {
                format!(
                    "{} and {} are no PEM certificate and unencrypted private key",
                    cert.display(),
                    key.display()
                )
            })?;
            builder = builder.identity(identity);
        }
        // A token no header can carry was sent as none, and the request failed as
        // "cannot reach the server".
        if let Some(t) = &c.token {
            if reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                return Err(ClientError::Usage(
                    "--token holds a character no HTTP header can carry (a line break?)".into(),
                )
                .into());
            }
        }
        Ok(Client {
            http: builder.build().context("cannot build the HTTP client")?,
            base: c.url.trim_end_matches('/').to_string(),
            token: c.token.clone(),
            shows_certificate: c.client_cert.is_some(),
            handshake: match c.url.get(..8) {
                Some(scheme) if scheme.eq_ignore_ascii_case("https://") => {
                    handshake_config(ca_pem.as_deref(), identity_pem.as_ref())
                }
                _ => None,
            },
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The server's URL for messages: without a password given in `--server`
    /// (`http://user:***@host`).
    pub fn server_name(&self) -> String {
        crate::store::pool::redact(&self.base)
    }

    /// What the server says to a TLS handshake of this client's own, with the
    /// client's CA and certificate, where it refuses it: the handshake's error, or
    /// the alert it sends once the handshake is done. `None` for an http://
    /// server, one that takes the handshake, or no answer within 5 seconds.
    async fn ask_handshake(&self) -> Option<rustls::Error> {
        let config = self.handshake.clone()?;
        let url = url::Url::parse(&self.base).ok()?;
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = url.port_or_known_default()?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).ok()?;
        let tls_error = |e: std::io::Error| {
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .cloned()
        };
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect((host, port)).await.ok()?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let mut stream = match connector.connect(name, tcp).await {
                Ok(stream) => stream,
                Err(e) => return tls_error(e),
            };
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read(&mut stream, &mut byte)
                .await
                .err()
                .and_then(tls_error)
        };
        tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .ok()
            .flatten()
    }

    /// What a TLS error says about a certificate, for the user: which one failed
    /// and what to give instead; `None` for one about no certificate.
    fn certificate_failure(&self, error: &rustls::Error) -> Option<ClientError> {
        use rustls::{AlertDescription as Alert, CertificateError, Error};
        let url = self.server_name();
        let failure = match error {
            Error::AlertReceived(Alert::CertificateRequired) => {
                ClientError::ClientCertificate(format!(
                    "the server at {url} requires a client certificate: give --client-cert \
                     and --client-key (a certificate signed by a CA of its --tls-client-ca, \
                     and its unencrypted key)"
                ))
            }
            Error::AlertReceived(
                Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::AccessDenied
                | Alert::DecryptError,
            ) if self.shows_certificate => ClientError::ClientCertificate(format!(
                "the server at {url} refused the client certificate (--client-cert): {error}; \
                 give one signed by a CA of its --tls-client-ca"
            )),
            Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                ClientError::ServerCertificate(format!(
                    "the certificate of the server at {url} is not signed by a CA this client \
                     trusts ({error}): give --ca-cert the PEM file of the CA that signed it"
                ))
            }
            Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => {
                let host = url::Url::parse(&self.base)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_default();
                ClientError::ServerCertificate(format!(
                    "the certificate of the server at {url} is not for {host:?} ({error}): \
                     give --server a name or address the certificate names"
                ))
            }
            Error::InvalidCertificate(_) => ClientError::ServerCertificate(format!(
                "the certificate of the server at {url} is not valid: {error}"
            )),
            _ => return None,
        };
        Some(failure)
    }

    /// A model name or job id sent in a body or a form (not a path): refused
    /// before anything is sent when it can name none (empty, `.`, `..`), as
    /// [`Client::segment`] refuses it in a path.
    pub fn name(text: &str) -> anyhow::Result<&str> {
        if text.is_empty() || text == "." || text == ".." {
            return Err(ClientError::Usage(format!("{text:?} is no model name or job id")).into());
        }
        Ok(text)
    }

    /// A model name or job id as one path segment: percent-encoded, so that a
    /// `/`, `?` or `#` in it names that text, never another route or model. `.`
    /// and `..` alone are refused: URLs read them as path steps even encoded.
    pub fn segment(text: &str) -> anyhow::Result<String> {
        const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'_')
            .remove(b'~')
            .remove(b'.');
        let text = Self::name(text)?;
        Ok(percent_encoding::utf8_percent_encode(text, KEEP).to_string())
    }

    /// Sends a request (the token added); a JSON answer, or the error's class.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        self.send_accepting(request, &[]).await
    }

    /// [`Client::send`], where a JSON answer (no `error` field) with a status in
    /// `also` is read as a success's is: `/healthz`'s 503 says, in its body, that
    /// the server is live and not ready yet.
    pub async fn send_accepting(
        &self,
        request: reqwest::RequestBuilder,
        also: &[u16],
    ) -> Result<Value, ClientError> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().await.map_err(|e| {
            // The innermost cause says what happened (refused, unknown host).
            let mut source: &dyn std::error::Error = &e;
            // Connected, and then what came back was no HTTP/1.1 (hyper could not
            // parse it, or it came unasked: an HTTP/2 server's SETTINGS frame). A
            // failure of the connection itself (an I/O error under hyper's: a broken
            // pipe as a TLS server refuses the client's certificate) is not one.
            let mut parse = false;
            // A TLS handshake answered in plain text (an HTTP server's "HTTP/1.1
            // 400" read as a TLS record): rustls says "corrupt message", inside an
            // io::Error, whose source() skips it.
            let mut not_tls = false;
            // A handshake that failed on a certificate: the server's alert (it
            // wants one from this client, or refused the one given), or this
            // client's refusal of the server's.
            let mut certificate = None;
            loop {
                let mut inner: Option<&(dyn std::error::Error + 'static)> = Some(source);
                while let Some(s) = inner {
                    let tls = s.downcast_ref::<rustls::Error>();
                    not_tls |= matches!(tls, Some(rustls::Error::InvalidMessage(_)));
                    certificate =
                        certificate.or_else(|| tls.and_then(|t| self.certificate_failure(t)));
                    inner = s
                        .downcast_ref::<std::io::Error>()
                        .and_then(std::io::Error::get_ref)
                        .map(|e| e as &(dyn std::error::Error + 'static));
                }
                parse |= !e.is_connect()
                    && source.downcast_ref::<hyper::Error>().is_some_and(|h| {
                        let io =
                            std::error::Error::source(h).is_some_and(|s| s.is::<std::io::Error>());
                        h.is_parse()
                            || !(io
                                || h.is_closed()
                                || h.is_incomplete_message()
                                || h.is_canceled()
                                || h.is_timeout()
                                || h.is_user())
                    });
                match source.source() {
                    Some(s) => source = s,
                    None => break,
                }
            }
            // `--server http://user:pw@host`: the message shows no password.
            let url = self.server_name();
            if let Some(failure) = certificate {
                failure
            } else if e.is_timeout() {
                ClientError::Unreachable {
                    url,
                    reason: "timed out".to_string(),
                }
            } else if not_tls {
                ClientError::NotTls {
                    url,
                    reason: source.to_string(),
                }
            } else if parse {
                ClientError::Protocol {
                    url,
                    reason: source.to_string(),
                }
            } else {
                ClientError::Unreachable {
                    url,
                    reason: source.to_string(),
                }
            }
        });
        let response = match response {
            Ok(response) => response,
            // Under TLS 1.3 a server checks the client's certificate after the
            // client has finished its handshake, and its alert (a certificate
            // required, or refused) ends the connection under the request, which
            // then only says "connection closed". A handshake of the client's own
            // reads the alert.
            Err(ClientError::Unreachable { url, reason }) if reason != "timed out" => {
                let said = self.ask_handshake().await;
                return Err(said
                    .and_then(|e| self.certificate_failure(&e))
                    .unwrap_or(ClientError::Unreachable { url, reason }));
            }
            Err(e) => return Err(e),
        };
        let status = response.status();
        let html = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("html"));
        // The answer broke off (the connection ended, or the timeout passed, while
        // its body was read): no answer, as a connection that failed is none; an
        // empty body would read as the server's own (a 200 "not JSON", 5).
        let text = response.text().await.map_err(|e| {
            let mut source: &dyn std::error::Error = &e;
            while let Some(s) = source.source() {
                source = s;
            }
            ClientError::Unreachable {
                url: self.server_name(),
                reason: if e.is_timeout() {
                    "timed out while the answer was read".to_string()
                } else {
                    format!("the answer broke off: {source}")
                },
            }
        })?;
        let parsed = serde_json::from_str::<Value>(&text);
        // An accepted status counts only with the JSON answer it is accepted for: a
        // proxy's error page, or an `{"error": …}` body, is the error it says.
        let accepted = also.contains(&status.as_u16())
            && matches!(&parsed, Ok(body) if body.get("error").is_none());
        if status.is_success() || accepted {
            return match parsed {
                Ok(body) => Ok(body),
                Err(_) if status == reqwest::StatusCode::NO_CONTENT => Ok(Value::Null),
                // Another server's page (a 200 "not json", an HTML index): no
                // ferroserve answer, and no empty table printed as if it were one.
                Err(_) => Err(ClientError::Unexpected {
                    url: self.server_name(),
                    status: status.as_u16(),
                    message: format!(
                        "the answer is not JSON: is --server a ferroserve server? ({})",
                        excerpt(&text, html)
                    ),
                }),
            };
        }
        let message = match parsed {
            Ok(body) => body
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| match &body {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
            // A proxy's or another server's error page: its gist, not the page.
            Err(_) => excerpt(&text, html),
        };
        let status = status.as_u16();
        Err(if status < 500 {
            ClientError::Rejected { status, message }
        } else {
            ClientError::Server { status, message }
        })
    }

    /// `answer[key]` where it is what `is` says it must be (an array, a string):
    /// else the answer is none ferroserve gives (5), from another kind of server
    /// answering JSON, as a 200 that is not JSON is.
    pub fn field<'a>(
        &self,
        answer: &'a Value,
        key: &str,
        is: fn(&Value) -> bool,
    ) -> Result<&'a Value, ClientError> {
        match answer.get(key) {
            Some(v) if is(v) => Ok(v),
            _ => Err(ClientError::Unexpected {
                url: self.server_name(),
                status: 200,
                message: format!(
                    "the server answered what ferroserve does not ({:?} is missing or not of \
                     its kind in {}): is --server a ferroserve server?",
                    key,
                    excerpt(&answer.to_string(), false)
                ),
            }),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.get(self.url(path))).await
    }

    /// [`Client::get`], reading an answer with a status in `also` as a success.
    pub async fn get_accepting(&self, path: &str, also: &[u16]) -> Result<Value, ClientError> {
        self.send_accepting(self.http.get(self.url(path)), also)
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.delete(self.url(path))).await
    }
}

/// The gist of an answer that is not JSON, for a message: an HTML page's title
/// (or its text without tags), whitespace collapsed, at most 200 characters.
pub fn excerpt(text: &str, html: bool) -> String {
    let html = html || text.trim_start().starts_with('<');
    let mut gist = text.to_string();
    if html {
        let lower = text.to_ascii_lowercase();
        let title = lower.find("<title>").and_then(|start| {
            let start = start + "<title>".len();
            let end = start + lower[start..].find("</title>")?;
            text.get(start..end)
        });
        gist = match title {
            Some(t) if !t.trim().is_empty() => t.to_string(),
            _ => {
                // The text between tags.
                let mut out = String::new();
                let mut in_tag = false;
                for c in text.chars() {
                    match c {
                        '<' => {
                            in_tag = true;
                            out.push(' ');
                        }
                        '>' => in_tag = false,
                        c if !in_tag => out.push(c),
                        _ => {}
                    }
                }
                out
            }
        };
    }
    let gist = gist.split_whitespace().collect::<Vec<_>>().join(" ");
    if gist.is_empty() {
        return "an empty body".into();
    }
    const MAX: usize = 200;
    match gist.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &gist[..cut]),
        None => gist,
    }
}

/// How a listing is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Columns for people
    #[default]
    Table,
    /// The server's JSON, for scripts
    Json,
}

/// Prints rows as aligned columns under a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        print_line(out.trim_end())
    };
    line(header.iter().map(|h| h.to_string()).collect())?;
    for row in rows {
        line(row.clone())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `--server` that is no URL is told without its password (clap's own error,
    /// when this was its value parser, repeated the value whole).
    #[test]
    fn a_bad_server_url_is_told_without_its_password() {
        for bad in [
            "htp://user:s3cretPW@127.0.0.1:8501",
            "http://user:s3cretPW@[::1",
            "ftp://user:s3cretPW@host",
        ] {
            let e = server_url(bad).unwrap_err();
            assert!(!e.contains("s3cretPW"), "{e}");
            assert!(e.contains("--server"), "{e}");
        }
        assert!(server_url("http://user:pw@127.0.0.1:8501").is_ok());
    }

    #[test]
    fn excerpts_give_the_gist_of_a_page() {
        let page = format!(
            "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>{}</body></html>",
            "x".repeat(5000)
        );
        assert_eq!(excerpt(&page, true), "502 Bad Gateway");
        assert_eq!(
            excerpt("<html><body><h1>Not\n  Found</h1></body></html>", false),
            "Not Found"
        );
        let long = excerpt(&"word ".repeat(1000), false);
        assert!(long.chars().count() <= 201 && long.ends_with('…'), "{long}");
        assert_eq!(excerpt("not json\n", false), "not json");
        assert_eq!(excerpt("  ", false), "an empty body");
    }

    #[test]
    fn names_that_name_nothing_are_usage_errors() {
        for bad in ["", ".", ".."] {
            assert_eq!(exit_code(&Client::name(bad).unwrap_err()), EXIT_USAGE);
            assert_eq!(exit_code(&Client::segment(bad).unwrap_err()), EXIT_USAGE);
        }
        assert_eq!(Client::name("iris").unwrap(), "iris");
    }
}
