//! Bearer tokens and their scopes over REST, the registry port and gRPC, and the
//! tokens file: edited while serving, refused at start when it does not parse.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_tokens_and_scopes() {
    use reqwest::Method;
    let dir = repo();
    let server = TestServer::start_with(settings_with_tokens(dir.path())).await;
    let predict = "/v1/models/iris_lr:predict";

    // Health stays open.
    for path in [
        "/healthz",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/iris_lr/ready",
    ] {
        let (status, _, _) = call(&server, Method::GET, path, None, None).await;
        assert_eq!(status, 200, "{path}");
    }
    // Inference needs a token with the inference scope.
    let (status, body, headers) =
        call(&server, Method::POST, predict, None, Some(predict_body())).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing bearer token"),
        "{body}"
    );
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let (status, body, _) = call(
        &server,
        Method::POST,
        predict,
        Some("fst_wrong"),
        Some(predict_body()),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        !body.to_string().contains("fst_wrong"),
        "the token is never echoed: {body}"
    );
    for token in [READER, CI] {
        let (status, body, _) = call(
            &server,
            Method::POST,
            predict,
            Some(token),
            Some(predict_body()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, _) = call(
        &server,
        Method::POST,
        predict,
        Some(PROM),
        Some(predict_body()),
    )
    .await;
    assert_eq!(status, 403, "a metrics-only token cannot predict");
    // Unknown routes do not tell an anonymous client what exists.
    let (status, _, _) = call(&server, Method::GET, "/no/such/route", None, None).await;
    assert_eq!(status, 401);

    // Management needs the management scope: the reader is refused (403) and
    // nothing happens; ci may.
    let management: [(Method, &str, Option<Value>); 5] = [
        (Method::POST, "/reload_model?modelname=iris_dt", None),
        (Method::POST, "/stop_deployment/iris_dt", None),
        (Method::POST, "/v2/repository/models/iris_dt/unload", None),
        (
            Method::POST,
            "/deploy",
            Some(json!({ "model_id": "iris_dt" })),
        ),
        (Method::DELETE, "/delete_model/iris_dt", None),
    ];
    for (method, path, body) in &management {
        let (status, answer, _) = call(&server, method.clone(), path, None, body.clone()).await;
        assert_eq!(status, 401, "{path}: {answer}");
        let (status, answer, _) =
            call(&server, method.clone(), path, Some(READER), body.clone()).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("lacks the \"management\" scope"),
            "{answer}"
        );
    }
    assert!(
        dir.path().join("models/iris_dt/1").is_dir(),
        "refused delete did nothing"
    );
    let (status, _, _) = call(
        &server,
        Method::POST,
        "/v1/models/iris_dt:predict",
        Some(READER),
        Some(predict_body()),
    )
    .await;
    assert_eq!(status, 200, "refused stop did nothing");
    // An upload without the scope is refused before its body is stored.
    let form = reqwest::multipart::Form::new()
        .text("model_id", "sneaky")
        .part(
            "file",
            reqwest::multipart::Part::bytes(
                std::fs::read(root_path("examples/models/iris_lr/1/model.onnx")).unwrap(),
            )
            .file_name("model.onnx"),
        );
    let r = server
        .client
        .post(server.url("/upload_model"))
        .bearer_auth(READER)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(!dir.path().join("models/sneaky").exists());

    let (status, body, _) = call(
        &server,
        Method::POST,
        "/reload_model?modelname=iris_dt",
        Some(CI),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = call(
        &server,
        Method::POST,
        "/stop_deployment/iris_dt",
        Some(CI),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Who did it (token name, client address) is audit data: the models' status
    // shows it to a caller with the management scope only; the store's views are
    // management routes, however the path is spelled.
    let events_of = |status: &Value| -> Vec<Value> {
        status["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["model_id"] == "iris_dt")
            .flat_map(|m| m["recent_events"].as_array().unwrap().clone())
            .collect()
    };
    let mut by_ci = Vec::new();
    for _ in 0..100 {
        let (_, status, _) = call(&server, Method::GET, "/models/status", Some(CI), None).await;
        by_ci = events_of(&status)
            .into_iter()
            .filter(|e| e["actor"] == "ci")
            .collect();
        if !by_ci.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        !by_ci.is_empty(),
        "ci's reload and stop are in the recent events"
    );
    assert!(by_ci.iter().all(|e| e["client"].is_string()), "{by_ci:?}");
    let (status, as_reader, _) =
        call(&server, Method::GET, "/models/status", Some(READER), None).await;
    assert_eq!(status, 200);
    let events = events_of(&as_reader);
    assert!(events.len() >= by_ci.len(), "{as_reader}");
    assert!(
        events
            .iter()
            .all(|e| e["actor"].is_null() && e["client"].is_null()),
        "{as_reader}"
    );
    for path in [
        "/v1/models/iris_dt/history",
        "/v1/models/iris_dt/predictions",
        // Percent-encoded, as the route decodes it.
        "/v1/models/iris_dt/%68istory",
        "/v1/models/iris_dt%2Fhistory",
        "/v1/models/iris_dt/%70redictions",
    ] {
        let (status, body, _) = call(&server, Method::GET, path, Some(READER), None).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    for path in [
        "/v1/models/iris_dt:history",
        "/v1/models/iris_dt:predictions",
    ] {
        let (status, body, _) = call(&server, Method::GET, path, Some(READER), None).await;
        assert_eq!(status, 404, "{path}: {body}");
    }

    // /metrics is closed by metrics_require_token: only the metrics scope opens it,
    // and it counts the refusals above.
    let (status, _, _) = call(&server, Method::GET, "/metrics", None, None).await;
    assert_eq!(status, 401);
    let (status, _, _) = call(&server, Method::GET, "/metrics", Some(CI), None).await;
    assert_eq!(status, 403);
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(PROM)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in ["missing_token", "invalid_token", "missing_scope"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ferroserve_auth_failures_total")
                    && l.contains("protocol=\"rest\"")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "{reason} not counted"
        );
    }
    server.stop().await;
}

/// The registry's own port (`--registry-addr`) answers as the main port does:
/// the same token rules for each token, and errors in JSON, unknown paths too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_port_asks_for_the_same_tokens() {
    let dir = repo();
    let registry: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = TestServer::start_with(Settings {
        registry_addr: Some(registry),
        ..settings_with_tokens(dir.path())
    })
    .await;
    // The registry's listener is bound after the main port answers: wait for it
    // (the first request to it failed once, with other tests of this file running).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(registry).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the registry port never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let client = reqwest::Client::new();
    let get = |base: String, path: &'static str, token: Option<&'static str>| {
        let mut r = client.get(format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let challenge = r.headers().contains_key("www-authenticate");
            let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
            (status, challenge, body)
        }
    };
    let own = format!("http://{registry}");
    for path in [
        "/registry/services",
        "/registry/services/iris_lr",
        "/v1/scoring-plans/iris_lr",
    ] {
        for token in [None, Some("fst_nobody"), Some(READER), Some(PROM), Some(CI)] {
            let main = get(server.base.clone(), path, token).await;
            let there = get(own.clone(), path, token).await;
            assert_eq!(
                (there.0, there.1),
                (main.0, main.1),
                "{path} with {token:?}: {there:?} against the main port's {main:?}"
            );
            assert!(
                there.2["error"].is_string() || there.0 == 200,
                "{path}: {there:?}"
            );
        }
        let refused = get(own.clone(), path, None).await;
        assert_eq!((refused.0, refused.1), (401, true), "{path}: {refused:?}");
    }
    // Unknown paths and methods are JSON errors too.
    let (status, _, body) = get(own.clone(), "/nothing/here", Some(CI)).await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string(), "{body}");
    let wrong = client
        .post(format!("{own}/registry/services"))
        .bearer_auth(CI)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 405);
    let body: Value = wrong.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_file_edited_while_serving() {
    let dir = repo();
    let server = TestServer::start_with(settings_with_tokens(dir.path())).await;
    let status_of = |token: &'static str| {
        let client = server.client.clone();
        let url = server.url("/v1/models/iris_lr:predict");
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&predict_body())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    const NEW: &str = "fst_a-token-added-while-serving";
    assert_eq!(status_of(NEW).await, 401);
    assert_eq!(status_of(READER).await, 200);
    // Add a token and revoke the reader: both take effect without a restart.
    std::fs::write(
        dir.path().join("tokens.toml"),
        entry("ci", CI, "\"inference\", \"management\"") + &entry("new", NEW, "\"inference\""),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while status_of(NEW).await != 200 {
        assert!(
            Instant::now() < deadline,
            "the new token was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_of(READER).await, 401, "revoked with the same edit");
    // A broken edit keeps the tokens in force.
    std::fs::write(dir.path().join("tokens.toml"), "[[token]\nbroken").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status_of(NEW).await, 200);
    server.stop().await;
}

/// A tokens file that does not parse is told by line and column, never with its
/// text: the likeliest mistake pastes a token where its hash belongs, and toml's
/// message quoted the line, token and all (on stderr at start, in the server's
/// log on a reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_file_that_does_not_parse_is_told_without_its_text() {
    const SECRET: &str = "fst_MySecretToken123";
    let dir = repo();
    let bad = dir.path().join("bad.toml");
    let serve = |tokens: &Path, rest: SocketAddr| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"));
        command
            .arg("serve")
            .arg("--model-repository")
            .arg(dir.path().join("models"))
            .arg("--rest-addr")
            .arg(rest.to_string())
            .args(["--grpc-addr", "127.0.0.1:0", "--auth-tokens"])
            .arg(tokens);
        command
    };
    // (the file, where it goes wrong)
    for (text, at) in [
        (
            format!("[[token]]\nname = \"ci\"\ntoken = \"{SECRET}\"\nscopes = [\"inference\"]\n"),
            "line 3, column 1: unknown key",
        ),
        (
            format!("[[token]]\nname = \"ci\"\nsha256 = {SECRET}\nscopes = [\"inference\"]\n"),
            "line 3, column 10 (sha256): invalid string",
        ),
        (
            format!("[[token]]\nname = \"ci\"\nsha256 = \"0\"\nscopes = \"{SECRET}\"\n"),
            "line 4, column 10 (scopes): invalid type: string, expected a sequence",
        ),
        (format!("{SECRET} = 1\n"), "line 1, column 1: unknown key"),
        (
            format!("[[token]]\nname = \"ci\"\n\"{SECRET}\" = 1\n"),
            "line 3, column 1: unknown key",
        ),
        // A file that parses but holds a token where a scope or a name belongs: the
        // entry and the scope are told by their place.
        (
            format!(
                "[[token]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"inference\", \"{SECRET}\"]\n",
                "0".repeat(64)
            ),
            "token 1 \"ci\" (line 2): unknown scope: scope 2 is not one of inference, \
             management, metrics",
        ),
        (
            format!(
                "[[token]]\nname = \"{SECRET}\"\nsha256 = \"{}\"\nscopes = [\"inference\"]\n",
                "0".repeat(64)
            ),
            "token 1 (line 2): the token name is not valid",
        ),
    ] {
        std::fs::write(&bad, &text).unwrap();
        let command = serve(&bad, "127.0.0.1:0".parse().unwrap());
        let (code, output) = tokio::task::spawn_blocking(move || run_to_end(command))
            .await
            .unwrap();
        assert_eq!(code, 1, "{text}: {output}");
        assert!(
            output.contains(&format!("is not valid: {at}")),
            "{text}: {output}"
        );
        assert!(!output.contains(SECRET), "{text}: {output}");
    }
    // An edit while serving: logged, and the tokens in force stay.
    let rest = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let tokens = dir.path().join("tokens.toml");
    let server = ChildServer::start(serve(&tokens, rest), rest).await;
    std::fs::write(&tokens, tokens_text() + &format!("sha256 = {SECRET}\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log().contains("is not valid") {
        assert!(Instant::now() < deadline, "never logged: {}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = server.log();
    assert!(log.contains("is not valid: line 13, column 10"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
    let status = reqwest::Client::new()
        .post(server.url("/v1/models/iris_lr:predict"))
        .bearer_auth(READER)
        .json(&predict_body())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

/// `--allow-unauthenticated-management` with `--auth-tokens` asked for two things at
/// once; management needed a token all the same and nothing said so. Refused at
/// start however each is given (flag, environment, config file), as
/// `--metrics-require-token` without tokens is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_management_with_tokens_is_refused_at_start() {
    let dir = repo();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, tokens_text()).unwrap();
    let config = dir.path().join("ferroserve.toml");
    std::fs::write(&config, "allow_unauthenticated_management = true\n").unwrap();
    let serve = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"));
        command
            .env_remove("FERROSERVE_ALLOW_UNAUTHENTICATED_MANAGEMENT")
            .arg("serve")
            .arg("--model-repository")
            .arg(dir.path().join("models"))
            .args(["--rest-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .arg("--auth-tokens")
            .arg(&tokens);
        command
    };
    let mut flag = serve();
    flag.arg("--allow-unauthenticated-management");
    let mut env = serve();
    env.env("FERROSERVE_ALLOW_UNAUTHENTICATED_MANAGEMENT", "true");
    let mut file = serve();
    file.arg("--config").arg(&config);
    for (how, command) in [("flag", flag), ("environment", env), ("config file", file)] {
        // A server that starts instead is killed when the wait gives up.
        let mut command = tokio::process::Command::from(command);
        command
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        let out = tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .unwrap_or_else(|_| panic!("{how}: the server started"))
            .unwrap();
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{how}: {output}");
        assert!(
            output.contains(
                "allow_unauthenticated_management: cannot be on together with auth_tokens"
            ),
            "{how}: {output}"
        );
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_tokens_and_scopes() {
    let dir = repo();
    let server = TestServer::start_with(settings_with_tokens(dir.path())).await;
    let mut v2_client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let mut models = ModelServiceClient::new(server.grpc_channel().await);
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(server.grpc_channel().await);

    let infer = || v2::ModelInferRequest {
        model_name: "iris_lr".into(),
        inputs: vec![v2::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            contents: Some(v2::InferTensorContents {
                fp32_contents: IRIS_ROW.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    // Health is open.
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    v2_client
        .server_live(v2::ServerLiveRequest {})
        .await
        .unwrap();
    // Inference: no token, a wrong one, a metrics-only one, then allowed ones.
    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some("fst_wrong"), Code::Unauthenticated),
        (Some(PROM), Code::PermissionDenied),
    ] {
        let status = v2_client
            .model_infer(with_token(infer(), token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{token:?}: {status:?}");
    }
    for token in [READER, CI] {
        v2_client
            .model_infer(with_token(infer(), Some(token)))
            .await
            .unwrap();
    }
    // Management: HandleReloadConfigRequest and V2 repository unload need the
    // management scope; a refused one changes nothing.
    let reload = || tfs::ReloadConfigRequest {
        config: Some(tfs::ModelServerConfig {
            config: Some(tfs::model_server_config::Config::ModelConfigList(
                tfs::ModelConfigList {
                    config: vec![tfs::ModelConfig {
                        name: "iris_lr".into(),
                        model_platform: "onnx".into(),
                        ..Default::default()
                    }],
                },
            )),
        }),
    };
    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some(READER), Code::PermissionDenied),
    ] {
        let status = models
            .handle_reload_config_request(with_token(reload(), token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        let status = v2_client
            .repository_model_unload(with_token(
                v2::RepositoryModelUnloadRequest {
                    model_name: "iris_dt".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
    let mut dt = infer();
    dt.model_name = "iris_dt".into();
    v2_client
        .model_infer(with_token(dt.clone(), Some(READER)))
        .await
        .expect("iris_dt still served after refused calls");
    models
        .handle_reload_config_request(with_token(reload(), Some(CI)))
        .await
        .unwrap();
    let status = v2_client
        .model_infer(with_token(dt, Some(READER)))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "ci's reload applied: {status:?}"
    );
    server.stop().await;
}
