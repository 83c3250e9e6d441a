//! What a browser page on another site can make this server do, over real
//! sockets: gRPC management calls refused as REST's management requests are
//! (a browser reaches the gRPC port over TLS, HTTP/2 by ALPN, with a no-cors
//! `fetch`), the `Referer` of an older browser's `<img>` to `GET /reload_model`,
//! and the early 413 of an upload naming the upload limit that was set.

mod common;

use std::time::Duration;

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::{self as v2};
use serde_json::{json, Value};

/// A repository with iris_lr and iris_dt (ONNX).
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in ["iris_lr", "iris_dt"] {
        install_model(
            dir.path(),
            m,
            1,
            &root_path(&format!("examples/models/{m}/1/model.onnx")),
        );
    }
    dir
}

fn infer(model: &str) -> v2::ModelInferRequest {
    v2::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![v2::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            contents: Some(v2::InferTensorContents {
                fp32_contents: vec![5.1, 3.5, 1.4, 0.2],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Whether `model` answers a gRPC prediction.
async fn served(server: &TestServer, model: &str) -> bool {
    GrpcInferenceServiceClient::new(server.grpc_channel().await)
        .model_infer(infer(model))
        .await
        .is_ok()
}

/// One gRPC message, framed, sent as raw HTTP/2 (prior knowledge) with exactly
/// `headers`: the `grpc-status` and `grpc-message` of the (trailers-only) answer.
async fn raw_call(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    message: &[u8],
) -> (Option<String>, String) {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut request = client
        .post(format!("http://{}{path}", server.grpc_addr.unwrap()))
        .body(framed);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let message = header("grpc-message").unwrap_or_default();
    let message = percent_encoding::percent_decode_str(&message)
        .decode_utf8_lossy()
        .into_owned();
    (header("grpc-status"), message)
}

/// Without tokens a loopback client may manage the server, but a browser page on
/// another site may not, over gRPC as over REST. Before, a no-cors `fetch` to
/// RepositoryModelUnload (no content type, or text/plain, a foreign Origin)
/// unloaded the model: the gRPC access layer checked only tokens and the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_management_from_another_site_is_refused() {
    let dir = repo();
    let server = TestServer::start(dir.path()).await;
    let grpc = server.grpc_addr.unwrap().to_string();
    let same_origin = format!("http://{grpc}");
    // RepositoryModelUnloadRequest { model_name: "iris_dt" }, and the load.
    let unload = b"\x12\x07iris_dt";
    let calls = [
        "/inference.GRPCInferenceService/RepositoryModelUnload",
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
    ];
    let grpc_type = ("content-type", "application/grpc");
    for headers in [
        // The probe's request: what a no-cors fetch of a Blob with no type sends.
        vec![
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        vec![("content-type", "text/plain")],
        vec![("content-type", "application/x-www-form-urlencoded")],
        vec![("content-type", "multipart/form-data; boundary=x")],
        vec![grpc_type, ("origin", "https://evil.example")],
        vec![grpc_type, ("origin", "null")],
        vec![grpc_type, ("sec-fetch-site", "same-site")],
        vec![grpc_type, ("referer", "https://evil.example/page")],
    ] {
        for path in calls {
            let (status, message) = raw_call(&server, path, &headers, unload).await;
            assert_eq!(
                status.as_deref(),
                Some("7"),
                "{path} {headers:?}: PERMISSION_DENIED expected: {message}"
            );
            assert!(
                message.starts_with("cross-site management request refused"),
                "{path} {headers:?}: {message}"
            );
        }
    }
    let (_, message) = raw_call(&server, calls[0], &[("content-type", "text/plain")], unload).await;
    assert!(
        message.contains("application/grpc") && message.contains("\"text/plain\""),
        "{message}"
    );
    assert!(served(&server, "iris_dt").await, "iris_dt was unloaded");
    // A page of this very server (same origin) is no page on another site; its
    // body type is then gRPC's, as every gRPC client sends. (Trailers-only would
    // carry a refusal; a unary answer's status is in the trailers.)
    let (status, message) = raw_call(
        &server,
        calls[0],
        &[grpc_type, ("origin", &same_origin), ("te", "trailers")],
        unload,
    )
    .await;
    assert_eq!(status, None, "{message}");
    assert!(!served(&server, "iris_dt").await, "iris_dt still served");
    // A real gRPC client (tonic: application/grpc, no Origin) manages as before,
    // and a call that is not management is not checked at all.
    let mut client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    client
        .repository_model_load(v2::RepositoryModelLoadRequest {
            model_name: "iris_dt".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(served(&server, "iris_dt").await);
    client
        .repository_model_unload(v2::RepositoryModelUnloadRequest {
            model_name: "iris_lr".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!served(&server, "iris_lr").await);
    let (status, message) = raw_call(
        &server,
        "/inference.GRPCInferenceService/ServerLive",
        &[
            ("content-type", "application/grpc+proto"),
            ("te", "trailers"),
        ],
        b"",
    )
    .await;
    assert_eq!(status, None, "{message}");
    server.stop().await;
}

async fn predicts(server: &TestServer, model: &str) -> bool {
    let (status, _) = server
        .post_json(
            &format!("/v1/models/{model}:predict"),
            &json!({ "instances": [[5.1, 3.5, 1.4, 0.2]] }),
        )
        .await;
    status == 200
}

async fn get_reload(server: &TestServer, referer: Option<String>) -> (u16, Value) {
    let mut request = server
        .client
        .get(server.url("/reload_model?modelname=iris_dt"));
    if let Some(referer) = referer {
        request = request.header("referer", referer);
    }
    common::status_and_body(request.send().await.unwrap()).await
}

async fn stop_iris_dt(server: &TestServer) {
    let (status, answer) = server
        .post_json("/v2/repository/models/iris_dt/unload", &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(!predicts(server, "iris_dt").await);
}

/// `GET /reload_model` (kept for old clients) brings a stopped model back. An
/// older browser's `<img src>` on another site sends neither `Origin` nor
/// `Sec-Fetch-Site`, only a `Referer` naming that site: before, it went through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reload_model_from_another_site_is_refused() {
    let dir = repo();
    let server = TestServer::start(dir.path()).await;
    let host = server.rest_addr.to_string();
    stop_iris_dt(&server).await;
    for referer in [
        "http://evil.example/cats.html".to_string(),
        format!("http://{host}.evil.example/"),
        "http://127.0.0.1:1/".to_string(),
    ] {
        let (status, answer) = get_reload(&server, Some(referer.clone())).await;
        assert_eq!(status, 403, "{referer}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("cross-site management request refused") && error.contains("Referer"),
            "{error}"
        );
        // Only the page's origin is quoted, not its path.
        assert!(!error.contains("cats"), "{error}");
    }
    assert!(!predicts(&server, "iris_dt").await, "iris_dt was reloaded");
    // A page of this server, and a client that sends no Referer, may.
    let (status, answer) = get_reload(&server, Some(format!("http://{host}/console"))).await;
    assert_eq!(status, 200, "{answer}");
    assert!(predicts(&server, "iris_dt").await);
    stop_iris_dt(&server).await;
    let (status, answer) = get_reload(&server, None).await;
    assert_eq!(status, 200, "{answer}");
    assert!(predicts(&server, "iris_dt").await);
    server.stop().await;
}

/// One HTTP/1.1 request head over a new connection, its body announced with
/// `Expect: 100-continue` and never sent: the status and body of the answer.
async fn announce_body(addr: std::net::SocketAddr, path: &str, length: u64) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {length}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("an answer before the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// An upload refused before it is sent names the upload limit that was set, as
/// one refused as its file streams in does. Before, it named that limit plus the
/// 1 MiB allowed for the multipart framing (2048576 bytes for 1000000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_too_large_to_send_names_the_upload_limit() {
    let dir = repo();
    let server = TestServer::start_with(Settings {
        max_upload_bytes: 1_000_000,
        ..test_settings(dir.path())
    })
    .await;
    let (status, body) = announce_body(server.rest_addr, "/upload_model", 30_000_297).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("larger than the upload limit of 1000000 bytes"),
        "{body}"
    );
    assert!(body.contains("30000297"), "{body}");
    // The late refusal, of a file sent, says the same.
    let (status, answer) = server
        .upload(&[("model_id", "big")], "model.onnx", vec![0u8; 1_500_000])
        .await;
    assert_eq!(status, 413, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("larger than the upload limit of 1000000 bytes"),
        "{error}"
    );
    // A job request's names the two settings its limit is the sum of.
    let (status, body) = announce_body(server.rest_addr, "/v1/jobs", 1 << 40).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("--max-upload-bytes (1000000) for its files"),
        "{body}"
    );
    // Other routes keep naming their own limit.
    let (status, body) =
        announce_body(server.rest_addr, "/v1/models/iris_lr:predict", 1 << 40).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("is larger than the limit of"), "{body}");
    server.stop().await;
}
