//! TLS on the REST and gRPC ports (issue 10), with CAs and certificates made here by
//! rcgen: predictions over HTTPS (HTTP/1.1 and HTTP/2 by ALPN) and gRPC over TLS,
//! plain clients and untrusting clients refused, certificates reloaded when their
//! files change (and a bad new pair refused), client certificates (mTLS) and their CA
//! reloaded, a stalled handshake that holds up no one else, silent connections at
//! the connection limit or past the cap on handshakes that lock no one out, and bad
//! files refused at start.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use ferroserve::tls::{Protocol, ServerListener, Tls, TlsFiles};
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::InferInputTensor;
use ferroserve_proto::inference::{self as v2, InferTensorContents};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A certificate authority made for one test.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Leaf {
    /// Certificate then key, as reqwest's `Identity::from_pem` wants them.
    fn identity_pem(&self) -> String {
        format!("{}{}", self.cert, self.key)
    }
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Leaf {
        self.leaf_for(&["localhost", "127.0.0.1"], name, usage)
    }

    /// A certificate for the host names (or addresses) `hosts` alone.
    fn leaf_for(&self, hosts: &[&str], name: &str, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let hosts = hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(hosts).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap().pem();
        Leaf {
            cert,
            key: key.serialize_pem(),
        }
    }

    fn server(&self) -> Leaf {
        self.leaf(
            "ferroserve test server",
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self) -> Leaf {
        self.leaf(
            "ferroserve test client",
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

/// The PEM files a server reads, in a temporary directory.
struct TlsDir {
    dir: tempfile::TempDir,
}

impl TlsDir {
    fn new(server: &Leaf, client_ca: Option<&Ca>) -> TlsDir {
        let dir = TlsDir {
            dir: tempfile::tempdir().unwrap(),
        };
        dir.write(server);
        if let Some(ca) = client_ca {
            std::fs::write(dir.path("client-ca.pem"), &ca.pem).unwrap();
        }
        dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the certificate and key the way an operator's tool would: each file
    /// written whole and renamed into place.
    fn write(&self, server: &Leaf) {
        for (name, text) in [("server.pem", &server.cert), ("server.key", &server.key)] {
            let tmp = self.path(&format!(".{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.path(name)).unwrap();
        }
    }

    fn files(&self) -> TlsFiles {
        let ca = self.path("client-ca.pem");
        TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: ca.is_file().then_some(ca),
        }
    }

    fn settings(&self, repo: &Path) -> Settings {
        let files = self.files();
        Settings {
            tls_cert: Some(files.cert),
            tls_key: Some(files.key),
            tls_client_ca: files.client_ca,
            ..test_settings(repo)
        }
    }
}

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    install_model(
        dir.path(),
        "iris_lr",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    dir
}

/// An HTTPS client that trusts only `ca`, optionally with a client certificate.
/// A new client per call, so every request makes a new connection (and handshake).
fn https_client(ca: &Ca, identity: Option<&Leaf>) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some(leaf) = identity {
        builder =
            builder.identity(reqwest::Identity::from_pem(leaf.identity_pem().as_bytes()).unwrap());
    }
    builder
}

async fn start(tls: &TlsDir, repo: &Path, ca: &Ca, identity: Option<&Leaf>) -> TestServer {
    let client = https_client(ca, identity).build().unwrap();
    TestServer::start_with_client(tls.settings(repo), "https", client).await
}

async fn grpc_channel(
    addr: SocketAddr,
    ca: &Ca,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        config = config.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(config)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// ModelInfer of one iris row over `channel`; the label class as the server gave it.
async fn grpc_infer(channel: Channel) -> Result<v2::ModelInferResponse, tonic::Status> {
    let mut client = GrpcInferenceServiceClient::new(channel);
    let request = v2::ModelInferRequest {
        model_name: "iris_lr".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            contents: Some(InferTensorContents {
                fp32_contents: vec![5.1, 3.5, 1.4, 0.2],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    client.model_infer(request).await.map(|r| r.into_inner())
}

async fn predict(
    client: &reqwest::Client,
    server: &TestServer,
) -> reqwest::Result<(u16, reqwest::Version, serde_json::Value)> {
    let response = client
        .post(server.url("/v1/models/iris_lr:predict"))
        .json(&json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}))
        .send()
        .await?;
    let status = response.status().as_u16();
    let version = response.version();
    Ok((status, version, response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_grpc_serve_tls_only() {
    let ca = Ca::new("test CA");
    let tls = TlsDir::new(&ca.server(), None);
    let repo = repo();
    let server = start(&tls, repo.path(), &ca, None).await;

    // HTTPS, HTTP/2 chosen by ALPN and HTTP/1.1: both answer the prediction.
    let (status, version, body) = predict(&server.client, &server).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(version, reqwest::Version::HTTP_2, "ALPN offers h2");
    assert_eq!(body["predictions"][0]["label"], 0, "{body}");
    let http1 = https_client(&ca, None).http1_only().build().unwrap();
    let (status, version, _) = predict(&http1, &server).await.unwrap();
    assert_eq!((status, version), (200, reqwest::Version::HTTP_11));

    // Plain HTTP to the TLS port gets no answer; nor does a client that does not
    // trust the server's CA.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/v2/health/live", server.rest_addr))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let other_ca = Ca::new("another CA");
    let untrusting = https_client(&other_ca, None).build().unwrap();
    let refused = untrusting.get(server.url("/v2/health/live")).send().await;
    assert!(refused.is_err(), "an untrusted certificate was accepted");

    // gRPC over TLS: liveness and an inference.
    let grpc_addr = server.grpc_addr.unwrap();
    let channel = grpc_channel(grpc_addr, &ca, None).await.unwrap();
    let live = GrpcInferenceServiceClient::new(channel.clone())
        .server_live(v2::ServerLiveRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(live.live);
    let answer = grpc_infer(channel).await.unwrap();
    assert_eq!(answer.model_name, "iris_lr");
    assert!(!answer.outputs.is_empty());

    // Plain gRPC to the TLS port fails.
    let plain = async {
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        grpc_infer(channel).await.map_err(|e| e.to_string())
    };
    let plain = tokio::time::timeout(Duration::from_secs(20), plain)
        .await
        .expect("plain gRPC neither failed nor answered");
    assert!(plain.is_err(), "plain gRPC answered: {plain:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_when_the_files_change() {
    let first_ca = Ca::new("first CA");
    let second_ca = Ca::new("second CA");
    let tls = TlsDir::new(&first_ca.server(), None);
    let repo = repo();
    let server = start(&tls, repo.path(), &first_ca, None).await;
    let trusts_second = || https_client(&second_ca, None).build().unwrap();
    assert!(trusts_second()
        .get(server.url("/v2/health/live"))
        .send()
        .await
        .is_err());

    tls.write(&second_ca.server());
    // The server polls the files (every 2 s); new connections then get the new
    // certificate. A fresh client per try, so each try is a new handshake.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match trusts_second()
            .get(server.url("/v2/health/live"))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "the new certificate was not served within 30 s: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let trusts_first = https_client(&first_ca, None).build().unwrap();
    assert!(
        trusts_first
            .get(server.url("/v2/health/live"))
            .send()
            .await
            .is_err(),
        "the old certificate is still served"
    );
    // gRPC shares the reloaded certificate.
    let channel = grpc_channel(server.grpc_addr.unwrap(), &second_ca, None)
        .await
        .unwrap();
    grpc_infer(channel).await.unwrap();
    server.stop().await;
}

/// A bad new set (a key that is not the certificate's, a file that is not PEM) is
/// refused and the certificate served before stays. Driven through the public TLS
/// types with a one-route server, so each reload happens exactly when the test says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_new_pair_keeps_the_old_certificate() {
    let first_ca = Ca::new("first CA");
    let second_ca = Ca::new("second CA");
    let tls_dir = TlsDir::new(&first_ca.server(), None);
    let tls = Tls::load(tls_dir.files()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = ServerListener::new(tcp, Some((tls.clone(), Protocol::Rest)));
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let url = format!("https://{addr}/");
    let answers = |ca: &Ca| {
        let client = https_client(ca, None).build().unwrap();
        let url = url.clone();
        async move { client.get(url).send().await.is_ok() }
    };
    assert!(answers(&first_ca).await);
    assert!(!tls.reload_if_changed().unwrap(), "nothing changed");

    // Half of a rotation: the new certificate beside the old key.
    let new = second_ca.server();
    let old_key = std::fs::read_to_string(tls_dir.path("server.key")).unwrap();
    std::fs::write(tls_dir.path("server.pem"), &new.cert).unwrap();
    let error = tls.reload_if_changed().unwrap_err().to_string();
    assert!(error.contains("does not fit"), "{error}");
    assert!(answers(&first_ca).await, "the old pair must stay");
    assert!(!answers(&second_ca).await);

    // Not PEM at all.
    std::fs::write(tls_dir.path("server.pem"), "not a certificate").unwrap();
    let error = tls.reload_if_changed().unwrap_err().to_string();
    assert!(error.contains("server.pem"), "{error}");
    assert!(answers(&first_ca).await, "the old pair must stay");
    assert_eq!(
        old_key,
        std::fs::read_to_string(tls_dir.path("server.key")).unwrap()
    );

    // The rotation completes: the new pair is served.
    tls_dir.write(&new);
    assert!(tls.reload_if_changed().unwrap());
    assert!(answers(&second_ca).await);
    assert!(!answers(&first_ca).await);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_with_a_client_ca() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let stranger_ca = Ca::new("stranger CA");
    let tls = TlsDir::new(&server_ca.server(), Some(&client_ca));
    let repo = repo();
    let member = client_ca.client();
    let server = start(&tls, repo.path(), &server_ca, Some(&member)).await;

    let (status, _, _) = predict(&server.client, &server).await.unwrap();
    assert_eq!(
        status, 200,
        "a client with a certificate from the client CA"
    );
    let anonymous = https_client(&server_ca, None).build().unwrap();
    assert!(
        predict(&anonymous, &server).await.is_err(),
        "a client without a certificate was served"
    );
    let stranger = stranger_ca.client();
    let outsider = https_client(&server_ca, Some(&stranger)).build().unwrap();
    assert!(
        predict(&outsider, &server).await.is_err(),
        "a certificate from another CA was accepted"
    );

    // The same over gRPC.
    let grpc_addr = server.grpc_addr.unwrap();
    let channel = grpc_channel(grpc_addr, &server_ca, Some(&member))
        .await
        .unwrap();
    grpc_infer(channel).await.unwrap();
    // Under TLS 1.3 the server checks the client's certificate after the client
    // thinks the handshake is done, so the refusal may come at connect or at the call.
    let refused = match grpc_channel(grpc_addr, &server_ca, None).await {
        Err(_) => true,
        Ok(channel) => grpc_infer(channel).await.is_err(),
    };
    assert!(refused, "gRPC without a client certificate was served");

    // The CLI shows its certificate with --client-cert/--client-key; without one it
    // is refused (exit 4), as `cli_says_which_certificate_the_handshake_failed_on`
    // tells in full.
    std::fs::write(tls.path("ca.pem"), &server_ca.pem).unwrap();
    std::fs::write(tls.path("client.pem"), &member.cert).unwrap();
    std::fs::write(tls.path("client.key"), &member.key).unwrap();
    let cli = |ca: PathBuf, extra: Vec<PathBuf>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"));
        c.args(["status", "--server", &server.url("")])
            .arg("--ca-cert")
            .arg(ca)
            .args(extra);
        async move {
            tokio::task::spawn_blocking(move || common::child::run_to_end(c))
                .await
                .unwrap()
        }
    };
    let with_cert = vec![
        PathBuf::from("--client-cert"),
        tls.path("client.pem"),
        PathBuf::from("--client-key"),
        tls.path("client.key"),
    ];
    let (code, out) = cli(tls.path("ca.pem"), with_cert).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(tls.path("ca.pem"), Vec::new()).await;
    assert_eq!(code, 4, "{out}");
    // A CA file with no certificate in it is said to be so (exit 1).
    let (code, out) = cli(tls.path("client.key"), Vec::new()).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("holds no PEM certificate"), "{out}");
    server.stop().await;
}

/// A handshake the CLI fails says which certificate failed and what to give: a
/// server that requires a client certificate (TLS alert 116, which the CLI used
/// to report as "cannot reach the server: connection closed", exit 3), one that
/// refuses the certificate given, a server certificate no --ca-cert CA signed, and
/// one for another host name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_says_which_certificate_the_handshake_failed_on() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let stranger_ca = Ca::new("stranger CA");
    // For 127.0.0.1 alone: `localhost` is another name.
    let server_leaf = server_ca.leaf_for(
        &["127.0.0.1"],
        "ferroserve test server",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let tls = TlsDir::new(&server_leaf, Some(&client_ca));
    let repo = repo();
    let member = client_ca.client();
    let server = start(&tls, repo.path(), &server_ca, Some(&member)).await;
    let stranger = stranger_ca.client();
    for (name, text) in [
        ("ca.pem", &server_ca.pem),
        ("stranger-ca.pem", &stranger_ca.pem),
        ("client.pem", &member.cert),
        ("client.key", &member.key),
        ("stranger.pem", &stranger.cert),
        ("stranger.key", &stranger.key),
    ] {
        std::fs::write(tls.path(name), text).unwrap();
    }
    let port = server.rest_addr.port();
    let by_address = format!("https://127.0.0.1:{port}");
    let by_name = format!("https://localhost:{port}");
    let cli = |url: &str, ca: &str, identity: Option<(&str, &str)>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"));
        c.args(["status", "--server", url])
            .arg("--ca-cert")
            .arg(tls.path(ca));
        if let Some((cert, key)) = identity {
            c.arg("--client-cert")
                .arg(tls.path(cert))
                .arg("--client-key")
                .arg(tls.path(key));
        }
        async move {
            tokio::task::spawn_blocking(move || common::child::run_to_end(c))
                .await
                .unwrap()
        }
    };
    let member_identity = Some(("client.pem", "client.key"));
    let (code, out) = cli(&by_address, "ca.pem", member_identity).await;
    assert_eq!(code, 0, "{out}");

    // (what, exit code, words the message must hold)
    for (what, (code, out), want_code, words) in [
        (
            "no client certificate",
            cli(&by_address, "ca.pem", None).await,
            4,
            &[
                "requires a client certificate",
                "--client-cert",
                "--client-key",
            ][..],
        ),
        (
            "a client certificate from another CA",
            cli(
                &by_address,
                "ca.pem",
                Some(("stranger.pem", "stranger.key")),
            )
            .await,
            4,
            &["refused the client certificate", "--client-cert"][..],
        ),
        (
            "a server certificate from another CA",
            cli(&by_address, "stranger-ca.pem", member_identity).await,
            5,
            &["not signed by a CA", "--ca-cert"][..],
        ),
        (
            "a server certificate for another name",
            cli(&by_name, "ca.pem", member_identity).await,
            5,
            &["not for \"localhost\""][..],
        ),
    ] {
        assert_eq!(code, want_code, "{what}: {out}");
        for word in words {
            assert!(out.contains(word), "{what}: {out}");
        }
        assert!(!out.contains("cannot reach"), "{what}: {out}");
    }
    server.stop().await;
}

/// Handshakes happen off the accept loop: a client that connects and never sends its
/// ClientHello holds up no other client, and is disconnected after the handshake
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_blocks_no_one() {
    let ca = Ca::new("test CA");
    let tls = TlsDir::new(&ca.server(), None);
    let repo = repo();
    let server = start(&tls, repo.path(), &ca, None).await;
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(
            tokio::net::TcpStream::connect(server.rest_addr)
                .await
                .unwrap(),
        );
    }
    let started = Instant::now();
    let (status, _, _) = predict(&https_client(&ca, None).build().unwrap(), &server)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < ferroserve::tls::HANDSHAKE_TIMEOUT,
        "a stalled handshake held up another client"
    );
    let limit = ferroserve::tls::HANDSHAKE_TIMEOUT + Duration::from_secs(10);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(limit, stalled[0].read(&mut buf))
        .await
        .expect("a stalled handshake was never cut off");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    server.stop().await;
}

/// Opens `n` TCP connections to `addr` that never send anything.
async fn silent_connections(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut silent = Vec::with_capacity(n);
    for _ in 0..n {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    silent
}

/// At the connection limit, with twice the limit of clients that connect and send
/// nothing, a real client is answered promptly on either port: TLS handshakes that
/// have not finished within `EVICT_HANDSHAKE_AFTER` are closed to make room like
/// idle connections, rather than hold their places for the whole handshake timeout
/// (which kept such a client out for 20 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_at_the_limit_do_not_lock_out_tls_clients() {
    let ca = Ca::new("test CA");
    let tls = TlsDir::new(&ca.server(), None);
    let repo = repo();
    let settings = Settings {
        max_connections: Some(20),
        ..tls.settings(repo.path())
    };
    let client = https_client(&ca, None).build().unwrap();
    let server = TestServer::start_with_client(settings, "https", client).await;
    let within = Duration::from_secs(4);

    let _silent = silent_connections(server.rest_addr, 40).await;
    let started = Instant::now();
    let answer = tokio::time::timeout(
        within,
        predict(&https_client(&ca, None).build().unwrap(), &server),
    )
    .await;
    let elapsed = started.elapsed();
    let (status, _, body) = answer
        .unwrap_or_else(|_| panic!("no HTTPS answer within {within:?}"))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(elapsed < within, "{elapsed:?}");

    let grpc_addr = server.grpc_addr.unwrap();
    let _silent = silent_connections(grpc_addr, 40).await;
    let started = Instant::now();
    let call = async {
        let channel = grpc_channel(grpc_addr, &ca, None).await.unwrap();
        grpc_infer(channel).await.unwrap()
    };
    let answer = tokio::time::timeout(within, call)
        .await
        .unwrap_or_else(|_| panic!("no gRPC answer within {within:?}"));
    assert_eq!(answer.model_name, "iris_lr");
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
    server.stop().await;
}

/// Past `MAX_HANDSHAKES` silent connections (with no connection limit), the listener
/// keeps accepting: it closes the oldest handshake that has taken too long to make
/// room, rather than stop until handshakes time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_past_the_cap_do_not_stop_the_listener() {
    let ca = Ca::new("test CA");
    let tls_dir = TlsDir::new(&ca.server(), None);
    let tls = Tls::load(tls_dir.files()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = ServerListener::new(tcp, Some((tls, Protocol::Rest)));
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    // Both ends of every connection are in this process.
    let needed = 2 * (ferroserve::tls::MAX_HANDSHAKES as u64 + 100) + 256;
    let fd_limit = ferroserve::connections::raise_fd_limit();
    assert!(
        fd_limit >= needed,
        "this test needs {needed} open files; the limit is {fd_limit}"
    );

    let _silent = silent_connections(addr, ferroserve::tls::MAX_HANDSHAKES + 50).await;
    let within = Duration::from_secs(4);
    let client = https_client(&ca, None).build().unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(within, client.get(format!("https://{addr}/")).send())
        .await
        .unwrap_or_else(|_| panic!("no answer within {within:?}"))
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
    server.abort();
}

/// Files that are missing or do not belong together stop the server at start, with
/// the file named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_stop_the_start() {
    let ca = Ca::new("test CA");
    let tls = TlsDir::new(&ca.server(), None);
    let repo = repo();
    let start_error = |settings: Settings| async move {
        let listeners = ferroserve::server::Listeners {
            rest: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            grpc: None,
        };
        let run = ferroserve::server::run(settings, listeners, std::future::pending());
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("the server started")
            .expect_err("the server started")
    };
    let missing = Settings {
        tls_key: Some(tls.path("no-such.key")),
        ..tls.settings(repo.path())
    };
    let error = format!("{:#}", start_error(missing).await);
    assert!(error.contains("no-such.key"), "{error}");
    let other = ca.server();
    std::fs::write(tls.path("other.key"), &other.key).unwrap();
    let mismatched = Settings {
        tls_key: Some(tls.path("other.key")),
        ..tls.settings(repo.path())
    };
    let error = format!("{:#}", start_error(mismatched).await);
    assert!(error.contains("does not fit"), "{error}");
    // A key behind a passphrase is named as such (it read "no items found").
    std::fs::write(
        tls.path("encrypted.key"),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let encrypted = Settings {
        tls_key: Some(tls.path("encrypted.key")),
        ..tls.settings(repo.path())
    };
    let error = format!("{:#}", start_error(encrypted).await);
    assert!(error.contains("the key is encrypted"), "{error}");
    // A key of a kind ring cannot sign with is named by its kind, not as another
    // pair's key (it read "does not fit the certificate ...: failed to parse private
    // key as RSA, ECDSA, or EdDSA"). A P-521 key made by `openssl genpkey`.
    std::fs::write(tls.path("p521.key"), P521_KEY).unwrap();
    let p521 = Settings {
        tls_key: Some(tls.path("p521.key")),
        ..tls.settings(repo.path())
    };
    let error = format!("{:#}", start_error(p521).await);
    for says in [
        "p521.key cannot be used: it is an ECDSA key on P-521 (secp521r1)",
        "ECDSA on P-256 or P-384",
    ] {
        assert!(error.contains(says), "{error}");
    }
    assert!(!error.contains("does not fit"), "{error}");
}

/// A P-521 key (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521`),
/// made for the tests only.
const P521_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIHuAgEAMBAGByqGSM49AgEGBSuBBAAjBIHWMIHTAgEBBEIB1fUwwoN6Oc1YJROt
3wpyMlgSmT/IrcqJFACHJ3VsEm9dWqeP9fe6z8BFcgtbKMyBnN1Z95sr9Y+BPRfL
VNlwe+ChgYkDgYYABAEZxYTx9ginKiIiq2J/Vz/d351cD6XtOcVIRE4zDIYDz1BN
H3BNqV/BXReeKmyCvVKRLrFuEg7Y/HJTzKPwZqyScQDEoGoKeyf1n4IvXLCqdAn2
PZYEPMFDRPk6lEjPuT2KMS2rqAm1CTcBkZ7qgG6w8Gsp5fAQ84qDDNsL3FWPD74L
lw==
-----END PRIVATE KEY-----
";

/// The client CA file is reloaded like the certificate: after it names another CA,
/// that CA's clients are let in and the old CA's are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ca_is_reloaded_too() {
    let server_ca = Ca::new("server CA");
    let (old_ca, new_ca) = (Ca::new("old client CA"), Ca::new("new client CA"));
    let tls_dir = TlsDir::new(&server_ca.server(), Some(&old_ca));
    let tls = Tls::load(tls_dir.files()).unwrap();
    assert!(tls.mutual());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/", tcp.local_addr().unwrap());
    let listener = ServerListener::new(tcp, Some((tls.clone(), Protocol::Rest)));
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let (old_client, new_client) = (old_ca.client(), new_ca.client());
    let answers = |leaf: &Leaf| {
        let client = https_client(&server_ca, Some(leaf)).build().unwrap();
        let url = url.clone();
        async move { client.get(url).send().await.is_ok() }
    };
    assert!(answers(&old_client).await);
    assert!(!answers(&new_client).await);
    std::fs::write(tls_dir.path("client-ca.pem"), &new_ca.pem).unwrap();
    assert!(tls.reload_if_changed().unwrap());
    assert!(answers(&new_client).await);
    assert!(!answers(&old_client).await);
    server.abort();
}

/// The registry's own port (`--registry-addr`) speaks TLS too when the server
/// does: its answers come over HTTPS, and plain HTTP gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_port_serves_tls_too() {
    let ca = Ca::new("test CA");
    let tls = TlsDir::new(&ca.server(), None);
    let repo = repo();
    let registry: SocketAddr = format!("127.0.0.1:{}", common::child::free_port())
        .parse()
        .unwrap();
    let settings = Settings {
        registry_addr: Some(registry),
        ..tls.settings(repo.path())
    };
    let client = https_client(&ca, None).build().unwrap();
    let server = TestServer::start_with_client(settings, "https", client.clone()).await;
    // This server runs no workers: the registry says so, in JSON, over HTTPS.
    let url = format!("https://localhost:{}/registry/services", registry.port());
    let answer = client.get(&url).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 404);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("runs no workers"),
        "{body}"
    );
    let plain = reqwest::Client::new()
        .get(format!("http://{registry}/registry/services"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // The URLs answers give for the models are HTTPS ones (no --public-url).
    let status: serde_json::Value = client
        .get(server.url("/models/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoints = &status["models"][0]["endpoints"];
    let want = format!("https://127.0.0.1:{}/", server.rest_addr.port());
    for url in endpoints.as_object().expect("endpoints").values() {
        assert!(url.as_str().unwrap().starts_with(&want), "{status}");
    }
    server.stop().await;
}
