//! A deployed model keeps the main server's request bounds and reads bodies as an
//! in-process one.

use super::*;

/// The main server's bounds on one request hold for a deployed model as for an
/// in-process one, through the main server and on the worker's port: too many
/// rows, too large a body (declared, or chunked with no length), too large an
/// answer. The worker got none of them, so it took what the main server refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_keeps_the_main_servers_request_bounds() {
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(repo.path(), "local", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(
        repo.path(),
        port_range(20),
        &[
            "--max-request-rows",
            "10",
            "--max-request-bytes",
            "4000",
            "--max-response-bytes",
            "600",
        ],
    )
    .await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let port = answer["port"].as_u64().unwrap();
    let main: std::net::SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let worker: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rows = |n: usize| json!({"instances": vec![ROW; n]}).to_string();
    let padded = format!(
        r#"{{"instances": [{:?}], "pad": "{}"}}"#,
        ROW,
        "x".repeat(5000)
    );
    // (what, body, chunked, status, words)
    let cases = [
        ("one row", rows(1), false, 200, ""),
        ("11 rows", rows(11), false, 413, "rows"),
        (
            "a 5 kB body",
            padded.clone(),
            false,
            413,
            "larger than the limit of 4000 bytes",
        ),
        (
            "a chunked 5 kB body",
            padded,
            true,
            413,
            "larger than the limit of 4000 bytes",
        ),
        ("a 10-row answer", rows(10), false, 413, ""),
    ];
    for (what, body, chunked, status, words) in cases {
        let (in_process, _, local_body) =
            raw_post(main, "/v1/models/local:predict", &body, chunked).await;
        assert_eq!(in_process, status, "in-process, {what}: {local_body}");
        for (addr, via) in [(main, "the main server"), (worker, "the worker's port")] {
            let (code, _, text) = raw_post(addr, "/v1/models/iris:predict", &body, chunked).await;
            assert_eq!(code, status, "deployed, {what}, via {via}: {text}");
            assert!(text.contains(words), "deployed, {what}, via {via}: {text}");
            if status != 200 {
                // The same words as the in-process model's answer.
                assert_eq!(
                    text.replace("iris", "local"),
                    local_body,
                    "deployed, {what}, via {via}"
                );
            }
        }
    }
}

/// A deployed model reads a request body as an in-process one does: a JSON body
/// labelled a form (what `curl -d '{…}'` sends) reaches its worker (it was 404,
/// the forwarding layer read the body as a form), and a body that stops arriving
/// is the client's 408, not a 503 that blames (and names as restarting) the worker,
/// which keeps serving, unrestarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_model_reads_request_bodies_as_an_in_process_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let repo = tempfile::tempdir().unwrap();
    install(repo.path(), "iris", "examples/models/iris_lr/1/model.onnx");
    install(repo.path(), "local", "examples/models/iris_lr/1/model.onnx");
    let server = start_server(
        repo.path(),
        port_range(20),
        &["--body-read-timeout-secs", "1"],
    )
    .await;
    let (code, answer) = deploy(&server, json!({"model_id": "iris"})).await;
    assert_eq!(code, 200, "{answer}");
    let pid = pid_of(&answer);
    let client = reqwest::Client::new();
    for model in ["local", "iris"] {
        let (code, body) = send(
            client
                .post(server.url("/predict"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(json!({"model_id": model, "features": ROW}).to_string()),
        )
        .await;
        assert_eq!(code, 200, "{model}: {body}");
        assert_eq!(body["model_id"], model, "{body}");
    }

    let main: std::net::SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let stalled = |path: String| async move {
        let mut stream = tokio::net::TcpStream::connect(main).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {main}\r\nContent-Type: application/json\r\n\
             Content-Length: 200\r\nConnection: close\r\n\r\n{{\"instances\": ["
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
            .await
            .expect("no answer to a stalled body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status: u16 = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    };
    let (code, local) = stalled("/v1/models/local:predict".into()).await;
    assert_eq!(code, 408, "{local}");
    for path in ["/v1/models/iris:predict", "/v2/models/iris/infer"] {
        let (code, body) = stalled(path.into()).await;
        assert_eq!(code, 408, "{path}: {body}");
        assert!(body.contains("stopped arriving for 1s"), "{path}: {body}");
    }
    // The worker was never blamed: it serves on, the same process, no restarts.
    let entry = registry(&server, "iris").await;
    assert_eq!(pid_of(&entry), pid, "{entry}");
    assert_eq!(entry["restarts"], 0, "{entry}");
    assert_eq!(entry["state"], "ready", "{entry}");
    let (code, body) = post(
        server.url("/predict"),
        &json!({"model_id": "iris", "features": ROW}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}
