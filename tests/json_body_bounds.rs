//! A JSON predict body is refused for its rows while it is read, before the server
//! builds the rest of it as a tree of values (many times the body's size): the rows
//! of TF Serving's `instances` and columnar `inputs`, the simple API's `features`,
//! and a V2 input's declared `shape`; a row wider than the model's inputs, and V2
//! data past its shape's element count, are refused as soon as they are. And each TF
//! Serving REST path answers a method it does not take with 405 and its `Allow`.
//!
//! The tests of this file run one at a time ([`SERIAL`]): one measures the peak
//! memory of the process, which a server starting beside it would disturb.

mod common;

use std::time::{Duration, Instant};

use common::{install_model, peak_rss, reset_peak_rss, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use serde_json::{json, Value};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// iris_lr (inputs `[-1, 4]`) under a server row limit of 1000.
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

fn settings(repo: &std::path::Path) -> Settings {
    Settings {
        max_request_rows: 1000,
        ..test_settings(repo)
    }
}

fn error_text(body: &Value) -> String {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {body}"))
        .to_string()
}

/// `rows` rows of four zeros, as a JSON list's elements (10 bytes a row).
fn zero_rows(rows: usize) -> String {
    let mut text = String::with_capacity(rows * 10);
    for i in 0..rows {
        if i > 0 {
            text.push(',');
        }
        text.push_str("[0,0,0,0]");
    }
    text
}

/// The probe's bodies, 2 M rows (20 MB) each: refused for their rows (413, naming the
/// limit) while they are read. Parsed whole first, each took the server about 400 MB
/// (a `Value` per number, an allocation per row) before the row check refused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_past_the_limit_are_refused_while_the_body_is_read() {
    let _serial = SERIAL.lock().await;
    let repo = repo();
    let server = TestServer::start_with(settings(repo.path())).await;
    const ROWS: usize = 2_000_000;
    let cases = [
        ("/v1/models/iris_lr:predict", "{\"instances\":[", "]}", "\"instances\""),
        ("/v1/models/iris_lr:predict", "{\"inputs\":[", "]}", "\"inputs\""),
        (
            "/v1/models/iris_lr:predict",
            "{\"inputs\":{\"input\":[",
            "]}}",
            "input \"input\"",
        ),
        ("/predict/iris_lr", "{\"features\":[", "]}", "\"features\""),
        (
            "/predict",
            "{\"features\":[",
            "],\"model_id\":\"iris_lr\"}",
            "\"features\"",
        ),
        (
            "/v2/models/iris_lr/infer",
            "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[2000000,4],\"data\":[",
            "]}]}",
            "input \"input\" has 2000000 rows",
        ),
    ];
    for (path, head, tail, what) in cases {
        let body = format!("{head}{}{tail}", zero_rows(ROWS)).into_bytes();
        reset_peak_rss();
        let before = peak_rss();
        let started = Instant::now();
        let (status, answer) = server.post_raw(path, body).await;
        let grown = peak_rss().saturating_sub(before);
        eprintln!(
            "{path} {head}: {status} after {:?}, peak memory +{} MB",
            started.elapsed(),
            grown / (1024 * 1024)
        );
        assert_eq!(status, 413, "{path} {head}: {answer}");
        let message = error_text(&answer);
        assert!(
            message.contains(what)
                && message.contains("1000")
                && message.contains("max_request_rows"),
            "{path} {head}: {message}"
        );
        // The 20 MB body once in the client and once in the server; the rows read
        // before the refusal are a few hundred KB.
        assert!(
            grown < 120 * 1024 * 1024,
            "{path} {head}: refusing 2 M rows took {} MB more memory",
            grown / (1024 * 1024)
        );
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    // The TF `:classify` examples are rows too.
    let body = format!("{{\"examples\":[{}]}}", vec!["{}"; ROWS].join(",")).into_bytes();
    let (status, answer) = server.post_raw("/v1/models/iris_lr:classify", body).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        error_text(&answer).contains("\"examples\" has at least 1001 rows"),
        "{answer}"
    );

    // At the limit, every format still answers.
    let rows = || vec![[5.1, 3.5, 1.4, 0.2]; 1000];
    for (path, body) in [
        ("/v1/models/iris_lr:predict", json!({ "instances": rows() })),
        (
            "/v1/models/iris_lr:predict",
            json!({ "inputs": { "input": rows() } }),
        ),
        ("/predict/iris_lr", json!({ "features": rows() })),
        (
            "/predict",
            json!({ "features": rows(), "model_id": "iris_lr" }),
        ),
        (
            "/v2/models/iris_lr/infer",
            json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1000, 4], "data": rows()}]}),
        ),
    ] {
        let (status, answer) = server.post_json(path, &body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    server.stop().await;
}

/// A row far wider than the model's inputs (`[-1, 4]`) is refused once the body holds
/// more values than 1000 rows of the model's shape could, not decoded whole first.
/// V2 data is refused as soon as it holds more than its shape's elements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_past_what_the_model_takes_are_refused_while_the_body_is_read() {
    let _serial = SERIAL.lock().await;
    let repo = repo();
    let server = TestServer::start_with(settings(repo.path())).await;
    let wide = vec!["0"; 1_000_000].join(",");
    for (path, body) in [
        ("/v1/models/iris_lr:predict", format!("{{\"instances\":[[{wide}]]}}")),
        ("/v1/models/iris_lr:predict", format!("{{\"inputs\":[[{wide}]]}}")),
        ("/predict/iris_lr", format!("{{\"features\":[{wide}]}}")),
        (
            "/v2/models/iris_lr/infer",
            format!("{{\"inputs\":[{{\"name\":\"input\",\"datatype\":\"FP32\",\"data\":[{wide}],\"shape\":[1,1000000]}}]}}"),
        ),
        (
            "/v2/models/iris_lr/infer",
            format!("{{\"inputs\":[{{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1000000],\"data\":[{wide}]}}]}}"),
        ),
    ] {
        let (status, answer) = server.post_raw(path, body.into_bytes()).await;
        assert_eq!(status, 413, "{path}: {answer}");
        let message = error_text(&answer);
        assert!(
            message.contains("more values than model \"iris_lr\" takes in one request")
                && message.contains("1000 rows (max_request_rows)"),
            "{path}: {message}"
        );
    }
    // Data past a shape that fits the model: refused at its fifth element.
    let body = format!(
        "{{\"inputs\":[{{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,4],\"data\":[{}]}}]}}",
        vec!["0"; 5000].join(",")
    );
    let (status, answer) = server
        .post_raw("/v2/models/iris_lr/infer", body.into_bytes())
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        error_text(&answer)
            .contains("input \"input\": shape [1, 4] needs 4 elements, but data has more"),
        "{answer}"
    );
    // Given after its data, the shape is checked as before.
    let (status, answer) = server
        .post_json(
            "/v2/models/iris_lr/infer",
            &json!({"inputs": [{"name": "input", "datatype": "FP32", "data": [1, 2, 3, 4, 5], "shape": [1, 4]}]}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        error_text(&answer).contains("needs 4 elements, but data has 5"),
        "{answer}"
    );
    server.stop().await;
}

/// Each TF Serving REST path answers a method it does not take with 405 and the
/// methods it does take in `Allow` (a GET of `:predict` was a 404 "no such
/// endpoint", and every path advertised POST).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_paths_answer_a_wrong_method_with_405_and_their_allow() {
    let _serial = SERIAL.lock().await;
    let repo = repo();
    let server = TestServer::start_with(settings(repo.path())).await;
    let cases = [
        ("GET", "/v1/models/iris_lr:predict", "POST"),
        ("HEAD", "/v1/models/iris_lr:predict", "POST"),
        ("DELETE", "/v1/models/iris_lr:predict", "POST"),
        ("GET", "/v1/models/iris_lr/versions/1:classify", "POST"),
        ("GET", "/v1/models/iris_lr/labels/stable:regress", "POST"),
        ("POST", "/v1/models/iris_lr", "GET,HEAD"),
        ("PUT", "/v1/models/iris_lr", "GET,HEAD"),
        ("POST", "/v1/models/iris_lr/versions/1", "GET,HEAD"),
        ("POST", "/v1/models/iris_lr/metadata", "GET,HEAD"),
        (
            "PATCH",
            "/v1/models/iris_lr/versions/1/metadata",
            "GET,HEAD",
        ),
    ];
    for (method, path, allow) in cases {
        let response = server
            .client
            .request(method.parse().unwrap(), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        if method != "HEAD" {
            let body: Value = response.json().await.unwrap();
            assert!(
                error_text(&body).contains(&format!("method {method} is not allowed")),
                "{method} {path}: {body}"
            );
        }
    }
    // Paths that name no endpoint stay 404 whatever the method; the right methods
    // still answer.
    for (method, path) in [
        ("GET", "/v1/models/iris_lr:explain"),
        ("POST", "/v1/models/iris_lr:explain"),
        ("PUT", "/v1/models/iris_lr/other"),
    ] {
        let response = server
            .client
            .request(method.parse().unwrap(), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method} {path}");
        assert!(response.headers().get("allow").is_none(), "{method} {path}");
    }
    let (status, answer) = server.get("/v1/models/iris_lr").await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = server.get("/v1/models/iris_lr/metadata").await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = server
        .post_json(
            "/v1/models/iris_lr:predict",
            &json!({ "instances": [[5.1, 3.5, 1.4, 0.2]] }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await;
}
