//! What the client says when the server is not the one it expects: accurate
//! messages against a foreign server, URL mistakes, HTTPS to a plain port, answers
//! without their fields.

use super::*;

/// A server that answers every request with `response` (a whole HTTP/1.1
/// answer): another kind of server than ferroserve, or a proxy's error page.
async fn foreign_server(response: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// Messages name the server without the password of --server; names that name
/// nothing (`..`) are usage errors found before anything is sent, in every
/// command; a model the server does not list is said so, not "refused"; another
/// kind of server's 200 is no empty table, and its error pages are cut short;
/// predict's errors name the file's lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_messages_are_accurate() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let server = TestServer::start_with(test_settings(&repo)).await;
    let with_password = server.base.replace("http://", "http://user:secretpw@");
    let (code, out) = run(cli(&with_password, &["status"])).await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("secretpw"), "{out}");
    assert!(out.contains("user:***@"), "{out}");

    // Usage errors (2) even with no server to ask (that would be 3).
    let model = root_path("examples/models/iris_lr/1/model.onnx")
        .display()
        .to_string();
    let rows = dir.path().join("rows.jsonl");
    std::fs::write(&rows, "[5.1, 3.5, 1.4, 0.2]\n").unwrap();
    let rows = rows.display().to_string();
    for args in [
        &["models", "status", ".."][..],
        &["models", "load", ".."],
        &["predict", "..", "--input", &rows],
        &["upload", &model, "--model", ".."],
        &["jobs", "status", ".."],
    ] {
        let (code, out) = run(cli("http://127.0.0.1:1", args)).await;
        assert_eq!(code, 2, "{args:?}: {out}");
    }
    // The gRPC port given as --server answers, in HTTP/2: a server that failed
    // to answer as ferroserve does (5), not one that cannot be reached (3).
    if let Some(grpc) = server.grpc_addr {
        let (code, out) = run(cli(&format!("http://{grpc}"), &["status"])).await;
        assert_eq!(code, 5, "{out}");
        assert!(out.contains("not the gRPC one"), "{out}");
    } else {
        panic!("the test server has no gRPC port");
    }
    let (code, out) = run(cli(&server.base, &["models", "status", "nosuch"])).await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("has no model \"nosuch\""), "{out}");
    assert!(!out.contains("refused"), "{out}");

    // Row numbers of the file, not of the request.
    let big = dir.path().join("big.jsonl");
    let text: String = (0..300)
        .map(|i| {
            if i == 290 {
                "[1, 2, 3]\n"
            } else {
                "[5.1, 3.5, 1.4, 0.2]\n"
            }
        })
        .collect();
    std::fs::write(&big, text).unwrap();
    let (code, out) = run(cli(
        &server.base,
        &["predict", "iris", "--input", &big.display().to_string()],
    ))
    .await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("line 291 of"), "{out}");
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        format!("{}\n5.1,3.5,1.4,0.2\n5.1,abc,1.4,0.2\n", FEATURES.join(",")),
    )
    .unwrap();
    let (code, out) = run(cli(
        &server.base,
        &["predict", "iris", "--input", &csv.display().to_string()],
    ))
    .await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("line 3 of"), "{out}");
    // A line that is no JSON is named with its file, as the server's refusals are.
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(&broken, "[5.1, 3.5, 1.4, 0.2]\n{\"sepal_length\": \n").unwrap();
    let (code, out) = run(cli(
        &server.base,
        &["predict", "iris", "--input", &broken.display().to_string()],
    ))
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("line 2 of ") && out.contains("broken.jsonl is not JSON"),
        "{out}"
    );
    server.stop().await;

    // Not ferroserve: a 200 that is not JSON is an unexpected answer (5).
    let url = foreign_server(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot json\n",
    )
    .await;
    let (code, out) = run(cli(&url, &["models", "list"])).await;
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("not JSON"), "{out}");
    assert!(!out.contains("MODEL"), "{out}");
    let page: &'static str = Box::leak(
        format!(
            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n\
             <html><head><title>502 Bad Gateway</title></head><body>{}</body></html>",
            "<p>filler</p>".repeat(500)
        )
        .into_boxed_str(),
    );
    let url = foreign_server(page).await;
    let (code, out) = run(cli(&url, &["models", "list"])).await;
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("502 Bad Gateway"), "{out}");
    assert!(!out.contains("<html>") && out.len() < 1000, "{out}");
}

/// `--server` mistakes, told as such: a URL with a query or fragment (every
/// request went to `/?x=1…`) and one without a scheme are usage errors (2) that
/// show the value (nothing secret in it); https:// to a plain-HTTP port reached
/// the server (5, "use http://"), as the reverse mistake does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_url_mistakes_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(test_settings(&repo(dir.path()))).await;
    let base = server.base.clone();
    for (url, says) in [
        (format!("{base}?x=1"), "query"),
        (format!("{base}/#frag"), "fragment"),
    ] {
        let (code, out) = run(cli(&url, &["status"])).await;
        assert_eq!(code, 2, "{url}: {out}");
        assert!(out.contains(says), "{url}: {out}");
    }
    let bare = base.trim_start_matches("http://").to_string();
    let (code, out) = run(cli(&bare, &["status"])).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("\"{bare}\"")), "{out}");
    assert!(out.contains(&format!("http://{bare}")), "{out}");
    server.stop().await;
}

/// https:// to a plain-HTTP port reached the server: 5 with "use http://", as the
/// reverse mistake is told (it was 3, "cannot reach the server").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_plain_http_port_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(test_settings(&repo(dir.path()))).await;
    let bare = server.base.trim_start_matches("http://").to_string();
    let (code, out) = run(cli(&format!("https://{bare}"), &["status"])).await;
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("http://"), "{out}");
    assert!(!out.contains("cannot reach"), "{out}");
    server.stop().await;
}

/// A 200 JSON answer without the fields a command reads is no ferroserve answer
/// (5): `200 {}` printed "model iris_lr loaded", "null job(s) in all" and "live
/// null, ready null", each with 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_without_their_fields_are_unexpected() {
    let url = foreign_server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    for args in [
        &["status"][..],
        &["models", "list"],
        &["models", "status", "iris_lr"],
        &["models", "load", "iris_lr"],
        &["models", "unload", "iris_lr"],
        &["jobs", "list"],
        &["jobs", "status", "abc"],
    ] {
        let (code, out) = run(cli(&url, args)).await;
        assert_eq!(code, 5, "{args:?}: {out}");
        assert!(
            out.contains("answered what ferroserve does not"),
            "{args:?}: {out}"
        );
    }
}

/// An answer that breaks off (the connection ends before its body's length) is
/// no answer: 3, as a connection that failed is, not the 5 of a server that
/// answered "not JSON" (the read error was taken for an empty body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_breaks_off_is_no_answer() {
    let url = foreign_server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"models\": [",
    )
    .await;
    for args in [&["status"][..], &["models", "list"], &["jobs", "list"]] {
        let (code, out) = run(cli(&url, args)).await;
        assert_eq!(code, 3, "{args:?}: {out}");
        assert!(out.contains("the answer broke off"), "{args:?}: {out}");
        assert!(!out.contains("not JSON"), "{args:?}: {out}");
    }
}
