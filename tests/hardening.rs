//! What a careless or hostile client sees at the edges: error bodies in the client's
//! terms (no server paths, process ids or runtime source locations), models with
//! the longest names, strict version numbers, values that overflow FP32, malformed
//! protobuf over gRPC, a forged `Host` header, heads that read two ways (two
//! `Host`s, a transfer coding, encoded bodies), uploads of too many assets or
//! names that are not UTF-8, and a head that begins the HTTP/2 preface but never
//! finishes it. Black-box over real sockets.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    example_onnx, install_model, raw_grpc, raw_grpc_body, root_path, test_settings,
    unwatched_settings, TestServer,
};
use ferroserve::settings::Settings;
use serde_json::{json, Value};

/// A model whose IR version no ONNX Runtime supports: ONNX Runtime's message for it
/// carries the C++ source location that raised it.
const IR_99_MODEL: &[u8] = b"\x08\x63\x3a\x03\x12\x01\x67\x42\x02\x10\x0d";

/// Asserts a message a client sees carries nothing of the server's file system.
fn assert_no_server_paths(what: &str, text: &str, repo: &Path) {
    let repo = repo.to_string_lossy();
    for leak in [
        repo.as_ref(),
        ".tmp-upload",
        &format!("-{}-", std::process::id()),
        "onnxruntime_src",
        ".cc:",
    ] {
        assert!(!text.contains(leak), "{what} shows {leak:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_name_no_server_paths() {
    let repo = tempfile::tempdir().unwrap();
    // A version whose file is not a model, one without a file, and a model whose
    // config.toml does not parse.
    std::fs::create_dir_all(repo.path().join("broken/1")).unwrap();
    std::fs::write(repo.path().join("broken/1/model.onnx"), b"not a model").unwrap();
    std::fs::create_dir_all(repo.path().join("broken/2")).unwrap();
    let lr = root_path("examples/models/iris_lr/1/model.onnx");
    install_model(repo.path(), "misconfigured", 1, &lr);
    std::fs::write(repo.path().join("misconfigured/config.toml"), "timeout = [").unwrap();
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;

    // Uploads of files that do not load: 400, in terms of the file the client sent.
    for (file_name, bytes, expected) in [
        ("model.onnx", b"not a model".to_vec(), "model.onnx"),
        (
            "model.onnx",
            IR_99_MODEL.to_vec(),
            "Unsupported model IR version",
        ),
        ("model.pkl", b"not a pickle".to_vec(), "model.pkl"),
    ] {
        let (code, body) = server
            .upload(&[("model_id", "bad")], file_name, bytes)
            .await;
        assert_eq!(code, 400, "{body}");
        let text = body["error"].as_str().unwrap();
        assert!(text.contains(expected), "{text}");
        assert_no_server_paths("an upload's error", text, repo.path());
    }

    // Status of versions that failed, and of a config that does not parse.
    let (code, status) = server.get("/models/status").await;
    assert_eq!(code, 200);
    let models = status["models"].as_array().unwrap();
    let broken = models.iter().find(|m| m["model_id"] == "broken").unwrap();
    let errors: Vec<&str> = broken["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["error"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(errors.len(), 2, "{broken}");
    for error in errors {
        assert!(!error.is_empty(), "{broken}");
        assert_no_server_paths("a version's error", error, repo.path());
    }
    let misconfigured = models
        .iter()
        .find(|m| m["model_id"] == "misconfigured")
        .unwrap();
    let config_error = misconfigured["config_error"].as_str().unwrap();
    assert!(config_error.contains("config.toml"), "{config_error}");
    assert_no_server_paths("a config error", config_error, repo.path());

    // Requests to the failed model say why it is unavailable, in the same terms.
    let (code, body) = server
        .post_json(
            "/v1/models/broken/versions/1:predict",
            &json!({"instances": [[1.0, 2.0, 3.0, 4.0]]}),
        )
        .await;
    assert!(code == 503 || code == 404, "{code} {body}");
    assert_no_server_paths("a predict error", &body.to_string(), repo.path());

    // Reloading a model that has no directory.
    let (code, body) = server
        .request(reqwest::Method::POST, "/reload_model?modelname=ghost")
        .await;
    assert_eq!(code, 404, "{body}");
    assert_no_server_paths("a reload error", &body.to_string(), repo.path());
    server.stop().await;
}

/// A request deadline no clock holds (`timeout_secs = 1e300`) is a config error
/// that names the setting. Before, it passed the check (finite and positive),
/// panicked when the version loaded, and left the version LOADING for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_past_any_clock_is_a_config_error() {
    let repo = tempfile::tempdir().unwrap();
    let lr = root_path("examples/models/iris_lr/1/model.onnx");
    install_model(repo.path(), "eternal", 1, &lr);
    std::fs::write(
        repo.path().join("eternal/config.toml"),
        "timeout_secs = 1e300\n",
    )
    .unwrap();
    install_model(repo.path(), "iris", 1, &lr);
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    let (code, status) = server.get("/models/status").await;
    assert_eq!(code, 200);
    let eternal = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == "eternal")
        .unwrap()
        .clone();
    let error = eternal["config_error"].as_str().unwrap_or_default();
    assert!(error.contains("timeout_secs"), "{eternal}");
    let (code, body) = server
        .post_json(
            "/v1/models/iris:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_the_longest_name_can_be_deleted() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    for len in [224, 250, 255] {
        let name = "m".repeat(len);
        let (code, body) = server
            .upload(
                &[("model_id", &name)],
                "model.onnx",
                example_onnx("iris_lr"),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = server
            .request(reqwest::Method::DELETE, &format!("/delete_model/{name}"))
            .await;
        assert_eq!(code, 200, "{len} characters: {body}");
        assert!(!repo.path().join(&name).exists());
    }
    // Nothing is left in the repository, hidden or not, but the server's own state
    // directory (the metadata store).
    let left: Vec<_> = std::fs::read_dir(repo.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != ".ferroserve")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_versions_are_plain_decimal_up_to_the_maximum() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    for bad in [
        "18446744073709551615",
        "9007199254740992",
        "+5",
        " 7 ",
        "7 ",
        "-1",
        "0",
        "07",
        "1e3",
        "\u{0667}",
    ] {
        let (code, body) = server
            .upload(
                &[("model_id", "numbered"), ("version", bad)],
                "model.onnx",
                example_onnx("iris_lr"),
            )
            .await;
        assert_eq!(code, 400, "version {bad:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("9007199254740991"),
            "{body}"
        );
    }
    // None of them was stored, so automatic numbering starts at 1.
    let (code, body) = server
        .upload(
            &[("model_id", "numbered")],
            "model.onnx",
            example_onnx("iris_lr"),
        )
        .await;
    assert_eq!((code, body["version"].clone()), (200, json!(1)), "{body}");
    // The maximum itself is a version; after it, there is no next one to give.
    let (code, body) = server
        .upload(
            &[("model_id", "numbered"), ("version", "9007199254740991")],
            "model.onnx",
            example_onnx("iris_dt"),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], json!(9007199254740991u64));
    let (code, body) = server
        .upload(
            &[("model_id", "numbered")],
            "model.onnx",
            example_onnx("iris_lr"),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_past_fp32_range_are_refused_over_rest() {
    let repo = tempfile::tempdir().unwrap();
    let lr = root_path("examples/models/iris_lr/1/model.onnx");
    install_model(repo.path(), "iris_lr", 1, &lr);
    let server = TestServer::start(repo.path()).await;
    let row = |first: Value| json!([first, 3.5, 1.4, 0.2]);
    let v2 = |first: Value| json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row(first)}]});
    for first in [json!(1e39), json!(-3.5e38)] {
        // TF Serving REST: inferred as FP64, then cast to the model's FP32.
        for (path, body) in [
            (
                "/v1/models/iris_lr:predict",
                json!({"instances": [row(first.clone())]}),
            ),
            (
                "/v1/models/iris_lr:predict",
                json!({"inputs": [row(first.clone())]}),
            ),
            ("/v2/models/iris_lr/infer", v2(first.clone())),
        ] {
            let (code, answer) = server.post_json(path, &body).await;
            assert_eq!(code, 400, "{path} {first}: {answer}");
            assert!(
                answer["error"].as_str().unwrap().contains("FP32"),
                "{answer}"
            );
        }
    }
    // The largest FP32 is still a value.
    let (code, answer) = server
        .post_json("/v2/models/iris_lr/infer", &v2(json!(3.4e38)))
        .await;
    assert_eq!(code, 200, "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_invalid_argument() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start(repo.path()).await;
    let invalid_argument = Some("3".to_string());
    for path in [
        "/inference.GRPCInferenceService/ModelInfer",
        "/tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
    ] {
        for message in [
            &[0x0a, 0x05, 0x61][..],       // a string field claiming 5 bytes, holding 1
            &[0x08, 0xff, 0xff, 0xff][..], // a varint that never ends
            &[0x07][..],                   // field number 0
        ] {
            let (status, text) = raw_grpc(&server, path, message).await;
            assert_eq!(status, invalid_argument, "{path} {message:?}: {text}");
        }
    }
    // A body that is no gRPC message: none, cut short, an unknown flag. tonic says
    // INTERNAL; it is the client's error. (A message flagged compressed with no
    // encoding stays INTERNAL, as the gRPC compression spec says.)
    let infer = "/inference.GRPCInferenceService/ModelInfer";
    for body in [
        vec![],
        vec![0, 0, 0, 0, 10, 0x0a, 0x01],
        vec![0, 0],
        vec![2, 0, 0, 0, 3, 0x0a, 0x01, b'x'],
    ] {
        let (status, text) = raw_grpc_body(&server, infer, body.clone()).await;
        assert_eq!(status, invalid_argument, "{body:?}: {text}");
    }
    let compressed = vec![1, 0, 0, 0, 3, 0x0a, 0x01, b'x'];
    let (status, text) = raw_grpc_body(&server, infer, compressed).await;
    assert_eq!(status.as_deref(), Some("13"), "{text}");
    // A well-formed request still gets its own code (here: no such model).
    let (status, text) = raw_grpc(&server, infer, &[0x0a, 0x01, b'x']).await;
    assert_eq!(status.as_deref(), Some("5"), "{text}");
    // Its message stays short when the name it echoes is not: clients refuse
    // headers past 8 KiB and would see RESOURCE_EXHAUSTED instead.
    let mut long = vec![0x0a, 0xa8, 0x46]; // field 1, 9000 bytes
    long.extend(std::iter::repeat_n(b'n', 9000));
    let (status, text) = raw_grpc(&server, infer, &long).await;
    assert_eq!(status.as_deref(), Some("5"), "{text}");
    assert!(text.len() < 1200 && text.contains("cut"), "{}", text.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_in_answers_come_from_settings_not_the_host_header() {
    let repo = tempfile::tempdir().unwrap();
    let lr = root_path("examples/models/iris_lr/1/model.onnx");
    install_model(repo.path(), "iris_lr", 1, &lr);
    let deploy = |server: &TestServer| {
        server
            .client
            .post(server.url("/deploy"))
            .header("host", "evil.example")
            .header("content-type", "application/json")
            .body(json!({"model_id": "iris_lr"}).to_string())
            .send()
    };
    let status = |server: &TestServer| {
        server
            .client
            .get(server.url("/models/status"))
            .header("host", "evil.example:666")
            .send()
    };

    // Without tokens, a loopback client's management request with a foreign Host
    // is refused outright (it may be a rebound DNS name); allowed from anywhere,
    // it is served, and the answer's URLs still ignore its Host.
    let server = TestServer::start(repo.path()).await;
    assert_eq!(deploy(&server).await.unwrap().status(), 403);
    server.stop().await;
    let open = |settings: Settings| Settings {
        allow_unauthenticated_management: true,
        ..settings
    };

    // Without public_url: the REST listener's own address.
    let server = TestServer::start_with(open(test_settings(repo.path()))).await;
    let answer: Value = deploy(&server).await.unwrap().json().await.unwrap();
    assert_eq!(
        answer["service_url"],
        json!(format!("{}/predict/iris_lr", server.base)),
        "{answer}"
    );
    assert_eq!(answer["port"], json!(server.rest_addr.port()));
    let text = status(&server).await.unwrap().text().await.unwrap();
    assert!(!text.contains("evil.example"), "{text}");
    assert!(
        text.contains(&format!("{}/v2/models/iris_lr", server.base)),
        "{text}"
    );
    server.stop().await;

    // With public_url: that URL.
    let server = TestServer::start_with(open(Settings {
        public_url: Some("https://models.example/ml".into()),
        ..test_settings(repo.path())
    }))
    .await;
    let answer: Value = deploy(&server).await.unwrap().json().await.unwrap();
    assert_eq!(
        (answer["service_url"].clone(), answer["port"].clone()),
        (
            json!("https://models.example/ml/predict/iris_lr"),
            json!(443)
        ),
        "{answer}"
    );
    let text = status(&server).await.unwrap().text().await.unwrap();
    assert!(!text.contains("evil.example"), "{text}");
    assert!(
        text.contains("https://models.example/ml/v1/models/iris_lr"),
        "{text}"
    );
    server.stop().await;
}

/// One HTTP/1.1 request written as given over a new connection: the status and
/// the body of the answer.
async fn raw_request(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
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

/// An HTTP/2 request (prior knowledge) whose body, if any, is sent without a
/// `content-length`; the status.
async fn h2_status(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> u16 {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(()).unwrap();
    let (answer, mut send) = client.send_request(request, body.is_none()).unwrap();
    if let Some(body) = body {
        send.send_data(bytes::Bytes::from(body.to_string()), true)
            .unwrap();
    }
    let status = answer.await.unwrap().status().as_u16();
    driver.abort();
    status
}

/// RFC 9112's refusals of a head that can be read more than one way: more than
/// one `Host` is a 400 (before the access layer decides by either), a transfer
/// coding other than `chunked` a 501 (hyper decodes the chunks and would leave
/// the gzip unread); and a body with a `Content-Encoding` is a 415 whichever of
/// its `Content-Encoding` lines says so, and over HTTP/2 with no `content-length`.
/// On the predict routes (which a small HTTP/1.1 predict takes without the
/// router) as on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_that_read_two_ways_and_encoded_bodies_are_refused() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris_lr",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start(repo.path()).await;
    let addr = server.rest_addr;
    let body = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}).to_string();
    let predict = "/v1/models/iris_lr:predict";
    let post = |path: &str, headers: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Connection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // The same request with one Host is answered.
    let (status, answer) = raw_request(addr, &post(predict, "", &body)).await;
    assert_eq!(status, 200, "{answer}");

    // Two Host headers: 400, on a predict route, a management route and any other.
    let two_hosts = "Host: evil.example\r\n";
    let (status, answer) = raw_request(addr, &post(predict, two_hosts, &body)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("more than one Host header"), "{answer}");
    let (status, answer) = raw_request(addr, &post("/reload_model", two_hosts, "{}")).await;
    assert_eq!(status, 400, "{answer}");
    let get =
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let (status, answer) = raw_request(addr, get).await;
    assert_eq!(status, 400, "{answer}");

    // A gzip (or any) coding before the chunks: 501.
    let chunked = format!(
        "POST {predict} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Connection: close\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let (status, answer) = raw_request(addr, &chunked).await;
    assert_eq!(status, 501, "{answer}");
    assert!(answer.contains(r#"transfer coding \"gzip\""#), "{answer}");
    let plain_chunks = chunked.replace("gzip, chunked", "chunked");
    let (status, answer) = raw_request(addr, &plain_chunks).await;
    assert_eq!(status, 200, "{answer}");

    // Content-Encoding on a second line: 415 all the same.
    let two_lines = "Content-Encoding: identity\r\nContent-Encoding: gzip\r\n";
    let (status, answer) = raw_request(addr, &post(predict, two_lines, &body)).await;
    assert_eq!(status, 415, "{answer}");
    let identity = "Content-Encoding: identity\r\nContent-Encoding: identity\r\n";
    let (status, answer) = raw_request(addr, &post(predict, identity, &body)).await;
    assert_eq!(status, 200, "{answer}");

    // HTTP/2: a body with no content-length is a body.
    let json_type = ("content-type", "application/json");
    let gzip = ("content-encoding", "gzip");
    for path in [predict, "/v2/models/iris_lr/infer", "/predict/iris_lr"] {
        let status = h2_status(addr, "POST", path, &[json_type, gzip], Some(&body)).await;
        assert_eq!(status, 415, "{path}");
    }
    assert_eq!(
        h2_status(addr, "POST", predict, &[json_type], Some(&body)).await,
        200
    );
    // A request with no body is not refused for its Content-Encoding.
    assert_eq!(
        h2_status(addr, "GET", "/v1/models/iris_lr", &[gzip], None).await,
        200
    );
    server.stop().await;
}

/// A multipart upload body: model `file`, then `assets` empty asset parts named
/// `a0.txt`, `a1.txt`…, then the closing boundary.
fn upload_body(boundary: &str, model: &str, assets: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let part = |body: &mut Vec<u8>, name: &str, file: &[u8], content: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(b"Content-Disposition: form-data; name=\"");
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\"; filename=\"");
        body.extend_from_slice(file);
        body.extend_from_slice(b"\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    };
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\n{model}\r\n"
        )
        .as_bytes(),
    );
    part(&mut body, "file", b"model.onnx", &example_onnx("iris_lr"));
    for i in 0..assets {
        part(&mut body, "asset", format!("a{i}.txt").as_bytes(), b"");
    }
    body
}

async fn post_upload(server: &TestServer, boundary: &str, mut body: Vec<u8>) -> (u16, Value) {
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let r = server
        .client
        .post(server.url("/upload_model"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    common::status_and_body(r).await
}

/// An upload carries at most 1000 asset files (each one a file created on disk):
/// one more is a 413 that says so, and leaves nothing behind; and an asset whose
/// file name is not UTF-8 is told so, not that it has no name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_carry_at_most_1000_assets_with_utf8_names() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    let boundary = "ferroserve-test-boundary";

    let (code, answer) = post_upload(&server, boundary, upload_body(boundary, "many", 1001)).await;
    common::assert_error(code, &answer, 413, "at most 1000 asset files");
    assert!(
        !repo.path().join("many").exists(),
        "{:?}",
        common::tree(repo.path())
    );

    let (code, answer) =
        post_upload(&server, boundary, upload_body(boundary, "enough", 1000)).await;
    assert_eq!(code, 200, "{answer}");
    let stored = std::fs::read_dir(repo.path().join("enough/1"))
        .unwrap()
        .count();
    assert_eq!(stored, 1001, "the model and its 1000 assets");

    let mut body = upload_body(boundary, "latin1", 0);
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"asset\"; filename=\"")
            .as_bytes(),
    );
    // The name in Latin-1: the byte 0xE9, no UTF-8 sequence.
    body.extend_from_slice(b"caf\xe9.txt\"\r\n\r\nx\r\n");
    let (code, answer) = post_upload(&server, boundary, body).await;
    common::assert_error(code, &answer, 400, "is not valid UTF-8");
    assert!(
        !repo.path().join("latin1").exists(),
        "{:?}",
        common::tree(repo.path())
    );
    // A part with no file name at all is told that.
    let mut body = upload_body(boundary, "nameless", 0);
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"asset\"\r\n\r\nx\r\n")
            .as_bytes(),
    );
    let (code, answer) = post_upload(&server, boundary, body).await;
    common::assert_error(code, &answer, 400, "an asset part needs a file name");
    server.stop().await;
}

/// Reads until the server closes `stream`, trickling `trickle` a byte every 300 ms
/// meanwhile (nothing when it is empty); how long that took. Fails past `within`.
/// What the server sends meanwhile is ignored.
async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    trickle: &[u8],
    within: Duration,
) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let mut trickle = trickle.iter();
    let mut buf = [0u8; 256];
    loop {
        let left = within.saturating_sub(started.elapsed());
        assert!(!left.is_zero(), "still open after {within:?}");
        let read =
            tokio::time::timeout(left.min(Duration::from_millis(300)), stream.read(&mut buf));
        match read.await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            // The gRPC port sends its HTTP/2 SETTINGS at once.
            Ok(Ok(_)) => {}
            Err(_) => {
                if let Some(byte) = trickle.next() {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return started.elapsed();
                    }
                }
            }
        }
    }
}

/// A connection is HTTP/2 (and given the idle timeout, 60 s on REST, 300 s on gRPC)
/// only once the whole 24-byte preface has come: part of it, or a head that begins
/// `PRI` and goes on as HTTP/1, is closed by the header read timeout like any head
/// that does not arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_http2_preface_is_held_to_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let repo = tempfile::tempdir().unwrap();
    let settings = Settings {
        header_read_timeout: Duration::from_secs(1),
        ..unwatched_settings(repo.path())
    };
    let server = TestServer::start_with(settings).await;
    let within = Duration::from_secs(5);
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for addr in [server.rest_addr, server.grpc_addr.unwrap()] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(&preface[..10]).await.unwrap();
        let took = closed_within(&mut stream, b"", within).await;
        assert!(took >= Duration::from_millis(800), "{addr}: {took:?}");
    }
    // A head that starts like the preface, then trickles a byte every 300 ms.
    let mut stream = tokio::net::TcpStream::connect(server.rest_addr)
        .await
        .unwrap();
    stream
        .write_all(b"PRI /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_within(&mut stream, b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa", within).await;

    // The whole preface: HTTP/2, still open past the header read timeout.
    let mut stream = tokio::net::TcpStream::connect(server.rest_addr)
        .await
        .unwrap();
    stream.write_all(preface).await.unwrap();
    // An empty SETTINGS frame, as a client sends after the preface.
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // What the server sent (its SETTINGS), and no end.
    let mut buf = [0u8; 1024];
    let mut frames = 0;
    while let Ok(read) =
        tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await
    {
        match read {
            Ok(0) | Err(_) => panic!("an HTTP/2 connection closed by the header read timeout"),
            Ok(n) => frames += n,
        }
    }
    assert!(frames > 0, "the server sent no SETTINGS");
    // Closed by the client: the server's drain waits for open connections.
    drop(stream);
    server.stop().await;
}

/// An upload refused on a field before its file (a version that is no version
/// number, one that exists, an unknown field) drains the file the client is still
/// sending before answering: the client reads the answer, never a broken pipe or a
/// reset connection (the CLI said "cannot reach the server" now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_file_is_read_reach_the_client() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    // A valid model, padded past what the sockets' buffers hold.
    let (code, answer) = server
        .upload(
            &[("model_id", "iris")],
            "model.onnx",
            example_onnx("iris_lr"),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    // More than the loopback sockets' buffers hold (about 10 MiB), so that an
    // undrained refusal cannot hide in them.
    let big = vec![b'x'; 12 << 20];
    type Fields<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Fields, u16, &str); 3] = [
        (
            &[("model_id", "iris"), ("version", "05")],
            400,
            "not a version number",
        ),
        (
            &[("model_id", "iris"), ("version", "1")],
            409,
            "already has a version 1",
        ),
        (
            &[("model_id", "iris"), ("colour", "red")],
            400,
            "unknown field",
        ),
    ];
    for _ in 0..3 {
        for (fields, want, words) in cases {
            let (code, answer) = server.upload(fields, "model.onnx", big.clone()).await;
            common::assert_error(code, &answer, want, words);
        }
    }
    server.stop().await;
}

/// Sends, over a connection of its own, an upload refused on its version ("05")
/// before a file of `file_bytes` bytes, and answers the head of the answer,
/// lower-cased.
async fn refused_upload_head(server: &TestServer, file_bytes: usize) -> String {
    let boundary = "ferroserve-test-boundary";
    let part = |name: &str, value: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
    };
    let mut body = format!(
        "{}{}--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
         filename=\"model.onnx\"\r\nContent-Type: application/octet-stream\r\n\r\n",
        part("model_id", "iris"),
        part("version", "05"),
    )
    .into_bytes();
    body.resize(body.len() + file_bytes, b'x');
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    common::post_answer_head(
        server.rest_addr,
        "/upload_model",
        &format!("multipart/form-data; boundary={boundary}"),
        body,
        common::Sending::WhileReading,
    )
    .await
}

/// A refused upload drains what the client still sends up to 16 MiB; past that the
/// answer says `Connection: close` (the server closes the connection then), so a
/// keep-alive client does not send its next request on it. Within it, the
/// connection stays open for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_past_its_drain_says_the_connection_closes() {
    let repo = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(unwatched_settings(repo.path())).await;
    let drained = refused_upload_head(&server, 1 << 20).await;
    assert!(drained.starts_with("http/1.1 400"), "{drained}");
    assert!(!drained.contains("connection: close"), "{drained}");
    let undrained = refused_upload_head(&server, 40 << 20).await;
    assert!(undrained.starts_with("http/1.1 400"), "{undrained}");
    assert!(undrained.contains("connection: close"), "{undrained}");
    server.stop().await;
}
