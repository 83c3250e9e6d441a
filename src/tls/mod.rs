//! TLS for the REST and gRPC listeners (issue 10): rustls with the ring provider,
//! certificates re-read when their files change, optional client certificates (mTLS).
//!
//! * [`Tls`] holds the current `rustls::ServerConfig` of each protocol in an
//!   `ArcSwap`: a handshake takes the config current when it starts, and [`Tls::watch`]
//!   swaps in new ones when the certificate, key or client CA files change.
//! * [`ServerListener`] (`listener.rs`) is what both servers accept connections from,
//!   plain TCP or TLS; it runs the handshakes off the accept loop and bounds them.
//!
//! Invariant: a new certificate is served only when the whole set (chain, key, client
//! CA) parses and the key matches the certificate; otherwise the old set stays and the
//! error is logged once per change of the files.

mod listener;

pub use listener::{ServerListener, ServerStream, TlsListener};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to finish its TLS handshake before it is disconnected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes in progress at once per listener, so a flood of stalled
/// handshakes costs bounded memory. At the cap the oldest handshake is closed to make
/// room for the next connection once it has taken
/// [`EVICT_HANDSHAKE_AFTER`](crate::connections::EVICT_HANDSHAKE_AFTER); until then
/// the listener stops accepting.
pub const MAX_HANDSHAKES: usize = 1024;

/// How often [`Tls::watch`] re-reads the certificate files.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// The files TLS is configured from (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub key: PathBuf,
    /// PEM CA certificates; when given, every client must present a certificate
    /// signed by one of them.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid PEM with a {what}: {reason}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("the key {key} does not fit the certificate {cert}: {reason}")]
    Key {
        cert: PathBuf,
        key: PathBuf,
        reason: rustls::Error,
    },
    #[error(
        "the key {key} cannot be used: {reason}; keys may be RSA (2048 to 8192 bits), \
         ECDSA on P-256 or P-384, or Ed25519"
    )]
    UnusableKey { key: PathBuf, reason: String },
    #[error("client CA {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Which server a listener belongs to; decides the ALPN protocols offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/2 or HTTP/1.1 (both served by hyper's auto builder).
    Rest,
    /// gRPC: HTTP/2 only. gRPC clients (grpcio's C core) refuse a server that does
    /// not select `h2`.
    Grpc,
}

/// The ServerConfig of each protocol, built from one read of the files.
struct Configs {
    rest: Arc<ServerConfig>,
    grpc: Arc<ServerConfig>,
}

/// The file contents `configs` was last built from (or last refused), so a poll
/// that finds the same bytes does nothing and a bad set is logged once.
#[derive(PartialEq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// TLS state shared by both listeners and the reload task.
pub struct Tls {
    files: TlsFiles,
    /// Read on every handshake, written on reload: an `ArcSwap` so that handshakes
    /// take no lock and a reload never waits for them.
    configs: ArcSwap<Configs>,
    /// Only the reload task touches it; a `Mutex` because `watch` runs in
    /// `spawn_blocking` through an `Arc`.
    last_read: Mutex<Contents>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads and checks the files; an error here stops the server from starting.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let contents = read_contents(&files)?;
        let configs = build_configs(&files, &contents)?;
        Ok(Arc::new(Tls {
            files,
            configs: ArcSwap::from_pointee(configs),
            last_read: Mutex::new(contents),
        }))
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// "tls" or "mutual tls", for the start-up log lines.
    pub fn describe(&self) -> &'static str {
        if self.mutual() {
            "mutual tls (client certificates required)"
        } else {
            "tls"
        }
    }

    /// An acceptor with the configuration current now.
    fn acceptor(&self, protocol: Protocol) -> TlsAcceptor {
        let configs = self.configs.load();
        TlsAcceptor::from(match protocol {
            Protocol::Rest => configs.rest.clone(),
            Protocol::Grpc => configs.grpc.clone(),
        })
    }

    /// Re-reads the files; when they changed and the new set is good, serves it to
    /// new connections. `Ok(true)` when a new set was swapped in.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let contents = read_contents(&self.files)?;
        let mut last = self.last_read.lock();
        if *last == contents {
            return Ok(false);
        }
        let built = build_configs(&self.files, &contents);
        // Remember the bytes even when they are refused, so a bad set is reported
        // once, not at every poll; the next change of any file is tried again.
        *last = contents;
        self.configs.store(Arc::new(built?));
        Ok(true)
    }

    /// Polls the files every `every` until `stop` turns true. A file that cannot be
    /// read or a set that does not parse keeps the certificate served now.
    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(every) => {}
            }
            let tls = self.clone();
            let result = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
            match result {
                Ok(Ok(true)) => {
                    last_error = None;
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                }
                Ok(Ok(false)) => last_error = None,
                Ok(Err(e)) => {
                    // A file being rewritten can fail to read for a moment; say it
                    // once per distinct error.
                    let message = e.to_string();
                    if last_error.as_deref() != Some(message.as_str()) {
                        tracing::warn!("TLS files changed but were not reloaded; still serving the previous certificate: {message}");
                        last_error = Some(message);
                    }
                }
                Err(e) => tracing::error!("TLS reload task failed: {e}"),
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_contents(files: &TlsFiles) -> Result<Contents, TlsError> {
    Ok(Contents {
        cert: read(&files.cert)?,
        key: read(&files.key)?,
        client_ca: files.client_ca.as_deref().map(read).transpose()?,
    })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        what: "certificate",
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE section found".into()));
    }
    Ok(certs)
}

/// A PEM key protected by a passphrase: PKCS#8's `ENCRYPTED PRIVATE KEY`, or the
/// traditional form's `Proc-Type: 4,ENCRYPTED` header.
fn is_encrypted_key(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
}

/// What a private key is, when it is of a kind this server cannot use: ring signs
/// with RSA, ECDSA on P-256 and P-384, and Ed25519 only. `None` for those kinds (a
/// key of them that still fails, an RSA key of 1024 bits say, is told by rustls'
/// words) and for DER that is not a key at all.
fn unsupported_key_kind(key: &PrivateKeyDer<'_>) -> Option<String> {
    use x509_parser::asn1_rs::{Any, Class, FromDer, Oid, Tag};

    /// The items of a SEQUENCE whose contents are `data`.
    fn items(data: &[u8]) -> Option<Vec<Any<'_>>> {
        let mut rest = data;
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (after, item) = Any::from_der(rest).ok()?;
            out.push(item);
            rest = after;
        }
        Some(out)
    }
    /// The items of the DER SEQUENCE `der`.
    fn sequence(der: &[u8]) -> Option<Vec<Any<'_>>> {
        let (_, sequence) = Any::from_der(der).ok()?;
        if sequence.header.tag() != Tag::Sequence {
            return None;
        }
        items(sequence.data)
    }
    let (algorithm, curve) = match key {
        PrivateKeyDer::Pkcs1(_) => return None,
        // ECPrivateKey: version, privateKey, [0] parameters (the curve), [1] publicKey.
        PrivateKeyDer::Sec1(k) => {
            let fields = sequence(k.secret_sec1_der())?;
            let parameters = fields
                .iter()
                .find(|i| i.header.class() == Class::ContextSpecific && i.header.tag() == Tag(0))?;
            let (_, curve) = Oid::from_der(parameters.data).ok()?;
            ("1.2.840.10045.2.1".to_string(), Some(curve.to_id_string()))
        }
        // PrivateKeyInfo: version, AlgorithmIdentifier { algorithm, parameters }, ...
        PrivateKeyDer::Pkcs8(k) => {
            let fields = sequence(k.secret_pkcs8_der())?;
            let identifier = fields.get(1).filter(|i| i.header.tag() == Tag::Sequence)?;
            let parts = items(identifier.data)?;
            let algorithm = parts.first()?.as_oid().ok()?.to_id_string();
            let curve = parts
                .get(1)
                .and_then(|p| p.as_oid().ok())
                .map(|c| c.to_id_string());
            (algorithm, curve)
        }
        _ => return None,
    };
    let kind = match (algorithm.as_str(), curve.as_deref()) {
        // rsaEncryption, Ed25519.
        ("1.2.840.113549.1.1.1" | "1.3.101.112", _) => return None,
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7" | "1.3.132.0.34")) => return None,
        ("1.2.840.10045.2.1", Some(curve)) => {
            let name = match curve {
                "1.3.132.0.35" => "P-521 (secp521r1)".to_string(),
                "1.3.132.0.10" => "secp256k1".to_string(),
                "1.2.840.10045.3.1.1" => "P-192 (prime192v1)".to_string(),
                "1.3.132.0.33" => "P-224 (secp224r1)".to_string(),
                "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1".to_string(),
                "1.3.36.3.3.2.8.1.1.11" => "brainpoolP384r1".to_string(),
                "1.3.36.3.3.2.8.1.1.13" => "brainpoolP512r1".to_string(),
                other => format!("the curve of OID {other}"),
            };
            format!("an ECDSA key on {name}")
        }
        ("1.2.840.10045.2.1", None) => "an EC key that names no curve".to_string(),
        ("1.3.101.113", _) => "an Ed448 key".to_string(),
        ("1.3.101.110" | "1.3.101.111", _) => {
            "an X25519 or X448 key (for key agreement, it cannot sign)".to_string()
        }
        ("1.2.840.113549.1.1.10", _) => "an RSA-PSS key (id-RSASSA-PSS)".to_string(),
        ("1.2.840.10040.4.1", _) => "a DSA key".to_string(),
        (other, _) => format!("a key of the algorithm of OID {other}"),
    };
    Some(kind)
}

/// Why `cert` is not valid at `now` (expired, or not yet valid), if it is not.
fn validity_problem(cert: &CertificateDer<'_>, now: std::time::SystemTime) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let validity = parsed.validity();
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())?;
    if now > validity.not_after.timestamp() {
        Some(format!("the certificate expired at {}", validity.not_after))
    } else if now < validity.not_before.timestamp() {
        Some(format!(
            "the certificate is not valid before {}",
            validity.not_before
        ))
    } else {
        None
    }
}

fn build_configs(files: &TlsFiles, contents: &Contents) -> Result<Configs, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert, &contents.cert)?;
    if let Some(problem) = validity_problem(&chain[0], std::time::SystemTime::now()) {
        // Served anyway (a renewed file is picked up when it changes), but said.
        tracing::warn!(cert = %files.cert.display(), "{problem}: clients will refuse it");
    }
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|e| TlsError::Pem {
        path: files.key.clone(),
        what: "private key",
        reason: if is_encrypted_key(&contents.key) {
            "the key is encrypted (it needs a passphrase), and only unencrypted keys are \
             read: decrypt it first (openssl pkey -in KEY -out PLAIN) and keep that file \
             readable by this server alone"
                .to_string()
        } else {
            e.to_string()
        },
    })?;
    // A key ring cannot sign with is told by its kind (rustls says only that it
    // failed to parse it "as RSA, ECDSA, or EdDSA"), not as a key of another pair.
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::UnusableKey {
            key: files.key.clone(),
            reason: match unsupported_key_kind(&key) {
                Some(kind) => format!("it is {kind}, which is not supported"),
                None => e.to_string(),
            },
        })?;
    // The key must be the certificate's, so a half-written pair (new certificate,
    // old key) is refused rather than served (as `CertifiedKey::from_der` checks).
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(reason) => {
            return Err(TlsError::Key {
                cert: files.cert.clone(),
                key: files.key.clone(),
                reason,
            })
        }
    }
    let verifier = match (&files.client_ca, &contents.client_ca) {
        (Some(path), Some(pem)) => {
            let ca_error = |reason: String| TlsError::ClientCa {
                path: path.clone(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for cert in certificates(path, pem)? {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
            Some(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| ca_error(e.to_string()))?,
            )
        }
        _ => None,
    };
    let config = |alpn: &[&[u8]]| -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    };
    Ok(Configs {
        rest: config(&[b"h2", b"http/1.1"])?,
        grpc: config(&[b"h2"])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_valid(from: (i32, u8, u8), until: (i32, u8, u8)) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    // Keys ring cannot sign with, made by `openssl genpkey` (PKCS#8) and
    // `openssl pkey -traditional` (SEC1) for this test only.
    const P521_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIHuAgEAMBAGByqGSM49AgEGBSuBBAAjBIHWMIHTAgEBBEIB1fUwwoN6Oc1YJROt
3wpyMlgSmT/IrcqJFACHJ3VsEm9dWqeP9fe6z8BFcgtbKMyBnN1Z95sr9Y+BPRfL
VNlwe+ChgYkDgYYABAEZxYTx9ginKiIiq2J/Vz/d351cD6XtOcVIRE4zDIYDz1BN
H3BNqV/BXReeKmyCvVKRLrFuEg7Y/HJTzKPwZqyScQDEoGoKeyf1n4IvXLCqdAn2
PZYEPMFDRPk6lEjPuT2KMS2rqAm1CTcBkZ7qgG6w8Gsp5fAQ84qDDNsL3FWPD74L
lw==
-----END PRIVATE KEY-----
";
    const P521_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MIHcAgEBBEIB1fUwwoN6Oc1YJROt3wpyMlgSmT/IrcqJFACHJ3VsEm9dWqeP9fe6
z8BFcgtbKMyBnN1Z95sr9Y+BPRfLVNlwe+CgBwYFK4EEACOhgYkDgYYABAEZxYTx
9ginKiIiq2J/Vz/d351cD6XtOcVIRE4zDIYDz1BNH3BNqV/BXReeKmyCvVKRLrFu
Eg7Y/HJTzKPwZqyScQDEoGoKeyf1n4IvXLCqdAn2PZYEPMFDRPk6lEjPuT2KMS2r
qAm1CTcBkZ7qgG6w8Gsp5fAQ84qDDNsL3FWPD74Llw==
-----END EC PRIVATE KEY-----
";
    const SECP256K1_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHQCAQEEINPy2Sph4qXkKpHC1rvyO2GEVflpwfviATlFLBoOBqFuoAcGBSuBBAAK
oUQDQgAE8n5HUE5fl4WzGTeV/f6GTwE1pg45BFmozKy3LryVmonAXORchaQJ9uKl
ALRQmMGQm7sdoSkyNlFMDHGuQbeh4A==
-----END EC PRIVATE KEY-----
";
    const ED448_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MEcCAQAwBQYDK2VxBDsEOQX/BrLLXjKr5CDiZjQ/6cbd+nyL+JSQp3ils5T8dUYo
g92f76o4Z+Wl4g1XI8Q44n6R1GqX24q4Xw==
-----END PRIVATE KEY-----
";

    #[test]
    fn a_key_of_a_kind_ring_cannot_use_is_named() {
        let kind = |pem: &str| {
            unsupported_key_kind(&PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap())
        };
        for (pem, says) in [
            (P521_PKCS8, "an ECDSA key on P-521 (secp521r1)"),
            (P521_SEC1, "an ECDSA key on P-521 (secp521r1)"),
            (SECP256K1_SEC1, "an ECDSA key on secp256k1"),
            (ED448_PKCS8, "an Ed448 key"),
        ] {
            assert_eq!(kind(pem).as_deref(), Some(says), "{pem}");
        }
        // The kinds ring signs with.
        for algorithm in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
            assert_eq!(kind(&key.serialize_pem()), None, "{algorithm:?}");
        }
        // Not a key at all: nothing to say.
        let junk = PrivateKeyDer::Pkcs8(vec![0x30, 0x03, 0x02, 0x01, 0x00].into());
        assert_eq!(unsupported_key_kind(&junk), None);
    }

    #[test]
    fn an_expired_or_future_certificate_is_named() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let expired = cert_valid((2019, 1, 1), (2020, 1, 1));
        let problem = validity_problem(&expired, now).unwrap();
        assert!(problem.contains("expired"), "{problem}");
        let future = cert_valid((2040, 1, 1), (2041, 1, 1));
        let problem = validity_problem(&future, now).unwrap();
        assert!(problem.contains("not valid before"), "{problem}");
        let current = cert_valid((2020, 1, 1), (2040, 1, 1));
        assert_eq!(validity_problem(&current, now), None);
    }
}
