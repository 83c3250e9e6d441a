//! Access control (issue 10) over real sockets: bearer tokens with scopes on REST
//! and gRPC, the tokens file edited while serving, the loopback-only default for
//! management, cross-site browser requests, `/metrics` behind a token, and model
//! base paths outside the allowed roots.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use common::child::{free_port, run_to_end, ChildServer};
use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::auth::{to_hex, token_sha256};
use ferroserve::settings::Settings;
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::{self as v2};
use ferroserve_proto::tensorflow::serving::model_service_client::ModelServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;
use tower::ServiceExt;

const CI: &str = "fst_ci-token-with-inference-and-management";
const READER: &str = "fst_reader-token-with-inference-only";
const PROM: &str = "fst_prometheus-token-with-metrics-only";

fn entry(name: &str, token: &str, scopes: &str) -> String {
    format!(
        "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{scopes}]\n",
        to_hex(&token_sha256(token))
    )
}

fn tokens_text() -> String {
    entry("ci", CI, "\"inference\", \"management\"")
        + &entry("reader", READER, "\"inference\"")
        + &entry("prom", PROM, "\"metrics\"")
}

/// A repository with iris_lr and iris_dt (ONNX), plus a tokens file beside it.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for m in ["iris_lr", "iris_dt"] {
        install_model(
            &models,
            m,
            1,
            &root_path(&format!("examples/models/{m}/1/model.onnx")),
        );
    }
    std::fs::write(dir.path().join("tokens.toml"), tokens_text()).unwrap();
    dir
}

fn settings_with_tokens(dir: &Path) -> Settings {
    Settings {
        auth_tokens: Some(dir.join("tokens.toml")),
        metrics_require_token: true,
        ..test_settings(&dir.join("models"))
    }
}

const IRIS_ROW: [f32; 4] = [5.1, 3.5, 1.4, 0.2];

/// Sends a request with an optional bearer token; answers status and JSON body.
async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = server.client.request(method, server.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

fn predict_body() -> Value {
    json!({ "instances": [IRIS_ROW] })
}

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
