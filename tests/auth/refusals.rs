//! Without tokens: management from loopback only, cross-site browser requests
//! refused, multipart bodies only where files are taken, large uploads refused
//! where the client reads it, and model base paths outside the allowed roots.

use super::*;

/// Without tokens: inference is open to all; management only from loopback.
/// Remote clients are simulated by giving the router another peer address, then
/// (where this host has a non-loopback address) over a real socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_management_is_loopback_only() {
    let dir = repo();
    let settings = test_settings(&dir.path().join("models"));
    let manager = Arc::new(ferroserve::manager::Manager::new(
        ferroserve::server::backend_options(&settings),
    ));
    let state = Arc::new(ferroserve::api::ServerState::new(settings, manager));
    let router = ferroserve::http::router(state);
    let send = |peer: &str, method: &str, path: &str| {
        let router = router.clone();
        let peer: SocketAddr = peer.parse().unwrap();
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .extension(ConnectInfo(peer))
            .body(axum::body::Body::empty())
            .unwrap();
        async move { router.oneshot(request).await.unwrap().status().as_u16() }
    };
    // The status API is read-only: open to anyone. Reload from another host: 403.
    assert_eq!(send("10.1.2.3:4444", "GET", "/models/status").await, 200);
    for (method, path) in [
        ("POST", "/reload_model"),
        ("POST", "/stop_deployment/iris_lr"),
        ("DELETE", "/delete_model/iris_lr"),
        ("POST", "/v2/repository/models/iris_lr/unload"),
    ] {
        assert_eq!(send("10.1.2.3:4444", method, path).await, 403, "{path}");
        assert_eq!(
            send("[2001:db8::1]:4444", method, path).await,
            403,
            "{path}"
        );
    }
    assert!(dir.path().join("models/iris_lr/1").is_dir());
    assert_eq!(send("127.0.0.1:4444", "POST", "/reload_model").await, 200);
    assert_eq!(
        send("[::ffff:127.0.0.1]:4444", "POST", "/reload_model").await,
        200
    );

    // Over real sockets: a server on every address, reached through this host's
    // own non-loopback address, refuses management and answers inference.
    let Some(own_ip) = non_loopback_address() else {
        eprintln!("no non-loopback address on this host; the socket half is skipped");
        return;
    };
    let server = TestServer::start_with(Settings {
        rest_addr: "0.0.0.0:0".parse().unwrap(),
        grpc_addr: "0.0.0.0:0".parse().unwrap(),
        ..test_settings(&dir.path().join("models"))
    })
    .await;
    let remote = format!("http://{own_ip}:{}", server.rest_addr.port());
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{remote}/reload_model"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("--auth-tokens"),
        "{body}"
    );
    let r = client
        .post(format!("{remote}/v1/models/iris_lr:predict"))
        .json(&predict_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // gRPC management from the remote address: PERMISSION_DENIED.
    let channel = Channel::from_shared(format!(
        "http://{own_ip}:{}",
        server.grpc_addr.unwrap().port()
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let status = GrpcInferenceServiceClient::new(channel)
        .repository_model_unload(v2::RepositoryModelUnloadRequest {
            model_name: "iris_lr".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // The same calls from loopback work.
    let (status, _) = server.post_json("/reload_model", &json!({})).await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// This host's address on its default route, if it has one.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?; // TEST-NET-1: nothing is sent
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Browsers must not be able to manage the server from another site, even from
/// the server's own host where management needs no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_management_is_refused() {
    let dir = repo();
    let server = TestServer::start(&dir.path().join("models")).await;
    let host = server.rest_addr.to_string();
    let send = |headers: Vec<(&'static str, String)>, path: &'static str, body: &'static str| {
        let mut r = server.client.post(server.url(path)).body(body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let deploy = r#"{"model_id": "iris_dt"}"#;
    // text/plain JSON (a form or no-cors fetch) to /deploy.
    assert_eq!(
        send(
            vec![("content-type", "text/plain".into())],
            "/deploy",
            deploy
        )
        .await,
        415
    );
    // A body-less POST from another site.
    assert_eq!(
        send(
            vec![("origin", "http://evil.example".into())],
            "/stop_deployment/iris_dt",
            ""
        )
        .await,
        403
    );
    assert_eq!(
        send(
            vec![("sec-fetch-site", "cross-site".into())],
            "/reload_model",
            ""
        )
        .await,
        403
    );
    // Still served: nothing was stopped.
    let (status, _) = server
        .post_json("/v1/models/iris_dt:predict", &predict_body())
        .await;
    assert_eq!(status, 200);
    // The same origin, and clients that are not browsers, may.
    assert_eq!(
        send(
            vec![
                ("origin", format!("http://{host}")),
                ("content-type", "application/json".into())
            ],
            "/deploy",
            deploy
        )
        .await,
        200
    );
    assert_eq!(send(vec![], "/reload_model", "").await, 200);
    // A page whose DNS name was rebound to 127.0.0.1 is same-origin with what it
    // reaches: its Host tells it apart. Before, it could delete models.
    let rebound = format!("attacker.example:{}", server.rest_addr.port());
    let (status, error) = {
        let r = server
            .client
            .delete(server.url("/delete_model/iris_dt"))
            .header("host", &rebound)
            .header("origin", format!("http://{rebound}"))
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(status, 403, "{error}");
    assert!(error.contains("not a name of this machine"), "{error}");
    let localhost = format!("localhost:{}", server.rest_addr.port());
    assert_eq!(
        send(vec![("host", localhost)], "/reload_model", "").await,
        200
    );
    // Over HTTP/2 (as browsers speak over TLS) there is no Host header: the
    // authority is the host, so a same-origin request passes (it was a 403 for
    // every console action over HTTPS).
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let status = h2
        .post(server.url("/reload_model"))
        .header("origin", format!("http://{host}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    let status = h2
        .post(server.url("/reload_model"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 403);
    let (status, _) = server
        .post_json("/v1/models/iris_dt:predict", &predict_body())
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// `multipart/form-data` is a type a cross-site form or a no-cors `fetch` sends
/// with no preflight, so only the routes that take files (uploads, jobs with their
/// files) take it. Every other management route read such a body as the JSON it
/// held: a page could deploy, stop or delete models of a server that trusts
/// loopback clients, with only the Origin check in the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_bodies_only_reach_the_routes_that_take_files() {
    use reqwest::Method;
    let dir = repo();
    let server = TestServer::start(&dir.path().join("models")).await;
    let multipart = "multipart/form-data; boundary=x";
    for (method, path, body) in [
        (Method::POST, "/deploy", r#"{"model_id": "iris_dt"}"#),
        (Method::POST, "/reload_model?modelname=iris_dt", "{}"),
        (Method::POST, "/stop_deployment/iris_dt", "{}"),
        (Method::DELETE, "/delete_model/iris_dt", "{}"),
        (Method::POST, "/v2/repository/models/iris_dt/load", "{}"),
        (Method::POST, "/v2/repository/models/iris_dt/unload", "{}"),
        (Method::POST, "/v1/jobs/nosuch/cancel", "{}"),
    ] {
        let r = server
            .client
            .request(method.clone(), server.url(path))
            .header("content-type", multipart)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 415, "{method} {path}: {text}");
        assert!(
            text.contains("multipart/form-data only for uploads"),
            "{text}"
        );
    }
    // Nothing was deployed, stopped or deleted.
    let (status, models) = server.get("/models/status").await;
    assert_eq!(status, 200);
    let iris_dt = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == "iris_dt")
        .unwrap_or_else(|| panic!("iris_dt is gone: {models}"));
    assert_eq!(iris_dt["deployment"], Value::Null, "{models}");
    assert_eq!(iris_dt["stopped"], false, "{models}");
    let (status, _) = server
        .post_json("/v1/models/iris_dt:predict", &predict_body())
        .await;
    assert_eq!(status, 200);
    // The routes that take files still do: an upload, and jobs with their files
    // (here without a spec part: the job's own refusal, not the content type's).
    let onnx = std::fs::read(root_path("examples/models/iris_lr/1/model.onnx")).unwrap();
    let (status, answer) = server
        .upload(&[("model_id", "uploaded")], "model.onnx", onnx)
        .await;
    assert_eq!(status, 200, "{answer}");
    for path in ["/v1/jobs", "/predictall", "/train"] {
        let form = reqwest::multipart::Form::new().text("nothing", "here");
        let (status, answer) = server.post_multipart(path, form).await;
        assert_ne!(status, 415, "{path}: {answer}");
        assert_eq!(status, 400, "{path}: {answer}");
    }
    server.stop().await;
}

/// Base paths of the model config file must lie under the allowed roots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_base_paths_outside_roots_are_refused() {
    let dir = repo();
    let config = dir.path().join("conf/models.config");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        "model_config_list { config { name: \"procs\" base_path: \"/proc\" } }",
    )
    .unwrap();
    let settings = Settings {
        model_config_file: Some(config.clone()),
        ..test_settings(&dir.path().join("models"))
    };
    let rest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = ferroserve::server::run(
        settings.clone(),
        ferroserve::server::Listeners { rest, grpc: None },
        std::future::pending::<()>(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("outside the allowed model roots"),
        "{error:#}"
    );
    // Under the repository it starts; --allowed-model-roots widens the roots.
    let outside = tempfile::tempdir().unwrap();
    install_model(
        outside.path(),
        "extra",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    std::fs::write(
        &config,
        format!(
            "model_config_list {{ config {{ name: \"extra\" base_path: \"{}\" }} }}",
            outside.path().join("extra").display()
        ),
    )
    .unwrap();
    let rest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    assert!(ferroserve::server::run(
        settings.clone(),
        ferroserve::server::Listeners { rest, grpc: None },
        std::future::pending::<()>(),
    )
    .await
    .is_err());
    let server = TestServer::start_with(Settings {
        allowed_model_roots: vec![outside.path().to_path_buf()],
        ..settings
    })
    .await;
    let (status, body) = server
        .post_json("/v1/models/extra:predict", &predict_body())
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

/// A refusal for want of a token, or of the right scope, drains the body the
/// client is still sending: a 12 MiB upload with a wrong token reads its 401 (and
/// one with an inference token its 403), never a broken pipe (the CLI said
/// "cannot reach the server").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_a_large_upload_reach_the_client() {
    let dir = repo();
    let server = TestServer::start_with(settings_with_tokens(dir.path())).await;
    // More than the loopback sockets' buffers hold (about 10 MiB), so that an
    // undrained refusal cannot hide in them.
    let big = vec![b'x'; 12 << 20];
    for _ in 0..3 {
        for (token, want, words) in [
            (Some("fst_wrong"), 401, "token"),
            (None, 401, "token"),
            (Some(READER), 403, "management"),
        ] {
            let form = reqwest::multipart::Form::new().part(
                "file",
                reqwest::multipart::Part::bytes(big.clone()).file_name("model.onnx"),
            );
            let mut r = server
                .client
                .post(server.url("/upload_model"))
                .multipart(form);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r
                .send()
                .await
                .unwrap_or_else(|e| panic!("token {token:?}: {e:?}"));
            let (code, answer) = common::status_and_body(r).await;
            common::assert_error(code, &answer, want, words);
        }
    }
    server.stop().await;
}
