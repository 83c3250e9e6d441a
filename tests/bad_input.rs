//! Every kind of bad request gets its exact status and a clear message, never a
//! panic or a dropped connection.

mod common;

use std::time::Duration;

use common::{install_model, root_path, test_settings, TestServer};
use serde_json::{json, Value};

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    install_model(
        dir.path(),
        "iris_lr",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    install_model(
        dir.path(),
        "multi_io",
        1,
        &root_path("tests/fixtures/onnx/multi_io/model.onnx"),
    );
    // A model whose every request times out: a 1 ns deadline has always passed
    // by the time the request reaches an inference thread.
    install_model(
        dir.path(),
        "impatient",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    std::fs::write(
        dir.path().join("impatient/config.toml"),
        "timeout_secs = 1e-9\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("iris_lr/config.toml"),
        "[labels]\nstable = 1\n",
    )
    .unwrap();
    dir
}

fn error_text(body: &Value) -> String {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {body}"))
        .to_string()
}

async fn expect(server: &TestServer, path: &str, body: Value, status: u16, needle: &str) {
    let (got, resp) = server.post_json(path, &body).await;
    assert_eq!(got, status, "{path} {body} -> {resp}");
    let msg = error_text(&resp);
    assert!(
        msg.contains(needle),
        "{path}: message {msg:?} should mention {needle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_bad_requests() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let p = "/v1/models/iris_lr:predict";
    let (status, body) = server.post_raw(p, b"{\"instances\": [1, 2".to_vec()).await;
    assert_eq!(status, 400);
    assert!(error_text(&body).contains("malformed JSON"));
    expect(
        &server,
        p,
        json!({"instances": [[1.0, 2.0, 3.0]]}),
        400,
        "shape [1, 3]",
    )
    .await;
    expect(
        &server,
        p,
        json!({"instances": [["a", "b", "c", "d"]]}),
        400,
        "must be FP32",
    )
    .await;
    expect(
        &server,
        p,
        json!({"instances": [[1, 2], [3]]}),
        400,
        "rectangular",
    )
    .await;
    expect(
        &server,
        p,
        json!({"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}),
        400,
        "not both",
    )
    .await;
    expect(
        &server,
        p,
        json!({"signature_name": "serving_default"}),
        400,
        "missing \"instances\"",
    )
    .await;
    expect(&server, p, json!({"instances": []}), 400, "empty").await;
    expect(
        &server,
        p,
        json!({"instances": [[1, 2, 3, 4]], "signature_name": "other"}),
        400,
        "signature",
    )
    .await;
    expect(
        &server,
        p,
        json!({"inputs": {"nope": [[1, 2, 3, 4]]}}),
        400,
        "no input \"nope\"",
    )
    .await;
    expect(
        &server,
        "/v1/models/nope:predict",
        json!({"instances": [[1, 2, 3, 4]]}),
        404,
        "model \"nope\" not found",
    )
    .await;
    expect(
        &server,
        "/v1/models/iris_lr/versions/9:predict",
        json!({"instances": [[1, 2, 3, 4]]}),
        404,
        "no version 9",
    )
    .await;
    expect(
        &server,
        "/v1/models/iris_lr/labels/canary:predict",
        json!({"instances": [[1, 2, 3, 4]]}),
        404,
        "no label \"canary\"",
    )
    .await;
    let (status, body) = server
        .post_json(
            "/v1/models/iris_lr/labels/stable:predict",
            &json!({"instances": [[1, 2, 3, 4]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    expect(
        &server,
        "/v1/models/multi_io:predict",
        json!({"instances": [1.0]}),
        400,
        "several inputs",
    )
    .await;
    // A NUL in an ONNX string (ort's "Attempted to pass invalid string to C") and a
    // list where a value belongs ("expected a value elements") are told plainly.
    let multi = |text: Value| {
        json!({"inputs": {"f32": [[1.0, 2.0]], "f64": [1.0], "i32": [1], "i64": [1],
                          "flag": [true], "text": text}})
    };
    expect(
        &server,
        "/v1/models/multi_io:predict",
        multi(json!(["a\u{0}b"])),
        400,
        "input \"text\" element 0 holds a NUL byte",
    )
    .await;
    expect(
        &server,
        "/v1/models/multi_io:predict",
        json!({"instances": [[1.0, 2.0], [3.0, [4.0]]]}),
        400,
        "a list where a value was expected at depth 2",
    )
    .await;
    expect(
        &server,
        "/v1/models/iris_lr/versions/x:predict",
        json!({}),
        400,
        "invalid version",
    )
    .await;
    assert_eq!(server.get("/v1/models/nope").await.0, 404);
    assert_eq!(server.get("/v1/models/iris_lr/versions/3").await.0, 404);
    assert_eq!(server.get("/v1/models/iris_lr/labels/zzz").await.0, 404);
    assert_eq!(server.get("/v1/models/iris_lr/labels/stable").await.0, 200);
    assert_eq!(server.get("/v1/models/nope/metadata").await.0, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_bad_requests() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let p = "/v2/models/iris_lr/infer";
    let input = |shape: Value, dt: &str, data: Value| json!({"inputs": [{"name": "input", "shape": shape, "datatype": dt, "data": data}]});
    expect(
        &server,
        p,
        input(json!([1, 4]), "FP32", json!([1, 2, 3])),
        400,
        "needs 4 elements",
    )
    .await;
    expect(
        &server,
        p,
        input(json!([1, 3]), "FP32", json!([1, 2, 3])),
        400,
        "shape [1, 3]",
    )
    .await;
    expect(
        &server,
        p,
        input(json!([1, 4]), "FP99", json!([1, 2, 3, 4])),
        400,
        "unknown datatype",
    )
    .await;
    // The shared-memory extension is refused by name (an output's region was
    // ignored and its data sent in JSON; an input's said "no data").
    expect(
        &server,
        p,
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                           "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 16}}]}),
        400,
        "shared-memory extension is not supported",
    )
    .await;
    expect(
        &server,
        p,
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
               "outputs": [{"name": "label", "parameters": {"shared_memory_region": "out"}}]}),
        400,
        "output \"label\": parameter \"shared_memory_region\"",
    )
    .await;
    expect(
        &server,
        p,
        input(json!([1, 4]), "BYTES", json!(["a", "b", "c", "d"])),
        400,
        "must be FP32",
    )
    .await;
    expect(
        &server,
        p,
        input(json!([1, 4]), "INT64", json!([1.5, 2, 3, 4])),
        400,
        "not a valid INT64",
    )
    .await;
    expect(
        &server,
        p,
        input(json!([1, -4]), "FP32", json!([1, 2, 3, 4])),
        400,
        "negative",
    )
    .await;
    expect(
        &server,
        p,
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32"}]}),
        400,
        "no \"data\"",
    )
    .await;
    expect(&server, p, json!({"inputs": []}), 400, "no inputs").await;
    expect(
        &server,
        p,
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "outputs": [{"name": "nope"}]}),
        400,
        "no output \"nope\"",
    )
    .await;
    expect(
        &server,
        "/v2/models/nope/infer",
        input(json!([1, 4]), "FP32", json!([1, 2, 3, 4])),
        404,
        "not found",
    )
    .await;
    expect(
        &server,
        "/v2/models/iris_lr/versions/4/infer",
        input(json!([1, 4]), "FP32", json!([1, 2, 3, 4])),
        404,
        "no version 4",
    )
    .await;

    // Binary header longer than the body.
    let r = server
        .client
        .post(server.url(p))
        .header("Inference-Header-Content-Length", "5000")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(error_text(&body).contains("only 2 bytes"));

    // binary_data_size larger than what follows the header.
    let header = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}).to_string();
    let mut bytes = header.clone().into_bytes();
    bytes.extend_from_slice(&[0u8; 8]);
    let r = server
        .client
        .post(server.url(p))
        .header("Inference-Header-Content-Length", header.len())
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_api_feature_texts_out_of_range_are_400() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    // A number too large for a double, quoted, was read as infinity (200 with NaN
    // probabilities); unquoted it is malformed JSON, as before.
    for big in ["1e400", "-1e400", " 1E999 "] {
        let body = json!({"model_id": "iris_lr", "features": [big, 3.5, 1.4, 0.2]});
        expect(&server, "/predict", body, 400, "out of range").await;
    }
    let r = server
        .client
        .post(server.url("/predict"))
        .form(&[
            ("model_id", "iris_lr"),
            ("features", "1e400"),
            ("features", "3.5"),
            ("features", "1.4"),
            ("features", "0.2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(error_text(&body).contains("out of range"), "{body}");
    // A field given twice is refused (the last one answered), as a
    // form's or multipart's is.
    for body in [
        r#"{"model_id":"iris_lr","model_id":"impatient","features":[5.1,3.5,1.4,0.2]}"#,
        r#"{"model_id":"iris_lr","features":[1,2,3,4],"features":[5.1,3.5,1.4,0.2]}"#,
        // At any depth: named features, and a list of rows of them.
        r#"{"model_id":"iris_lr","features":{"a":1,"a":2,"b":3}}"#,
        r#"{"model_id":"iris_lr","features":[{"a":1},{"b":2,"\u0062":3}]}"#,
    ] {
        let r = server
            .client
            .post(server.url("/predict"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert!(error_text(&answer).contains("is given twice"), "{answer}");
    }
    // So is a multipart field given twice (the last model_id answered).
    for field in ["model_id", "version", "top_k"] {
        let form = reqwest::multipart::Form::new()
            .text(field, "1")
            .text(field, "2")
            .part(
                "image",
                reqwest::multipart::Part::bytes(b"not an image".to_vec()).file_name("x.png"),
            );
        let (status, answer) = server.post_multipart("/predict", form).await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert!(error_text(&answer).contains("is given twice"), "{answer}");
    }
    // Infinity by name stays a value one may send.
    for named in ["Infinity", "-inf", "+INF"] {
        let body = json!({"model_id": "iris_lr", "features": [named, 3.5, 1.4, 0.2]});
        let (status, answer) = server.post_json("/predict", &body).await;
        assert_eq!(status, 200, "{named}: {answer}");
    }
    server.stop().await;
}

/// `curl -d '{…}'` (the README's examples) sends its JSON labelled as a form; it
/// was read as one form field named by the whole JSON text (400 "model_id is
/// required").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_api_takes_json_that_curl_labels_a_form() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let form = "application/x-www-form-urlencoded";
    for (path, body) in [
        (
            "/predict",
            r#"{"model_id":"iris_lr","features":[5.1,3.5,1.4,0.2]}"#,
        ),
        ("/predict", " \n[{\"model_id\":\"iris_lr\"}]"),
        ("/predict/iris_lr", r#"{"features":[5.1,3.5,1.4,0.2]}"#),
    ] {
        let r = server
            .client
            .post(server.url(path))
            .header("content-type", form)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap();
        if body.trim_start().starts_with('[') {
            // A list is no simple-API body: refused as JSON, not as a form.
            assert_eq!(status, 400, "{answer}");
            assert!(
                !error_text(&answer).contains("model_id is given"),
                "{answer}"
            );
            continue;
        }
        assert_eq!(status, 200, "{path} {body}: {answer}");
        assert_eq!(answer["prediction"], 0, "{answer}");
    }
    // A real form still reads as one.
    let r = server
        .client
        .post(server.url("/predict/iris_lr"))
        .header("content-type", form)
        .body("features=5.1&features=3.5&features=1.4&features=0.2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413_and_timeouts_are_504() {
    let repo = repo();
    let mut settings = test_settings(repo.path());
    settings.max_request_bytes = 1024;
    let server = TestServer::start_with(settings).await;
    let big = json!({"instances": vec![[5.1, 3.5, 1.4, 0.2]; 200]});
    let (status, body) = server.post_json("/v1/models/iris_lr:predict", &big).await;
    assert_eq!(status, 413, "{body}");
    assert!(error_text(&body).contains("limit of 1024 bytes"));
    let (status, _) = server.post_json("/v2/models/iris_lr/infer", &big).await;
    assert_eq!(status, 413);

    let small = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]});
    for path in ["/v1/models/impatient:predict"] {
        let (status, body) = server.post_json(path, &small).await;
        assert_eq!(status, 504, "{body}");
        assert!(error_text(&body).contains("timeout"));
    }
    let (status, body) = server
        .post_json(
            "/v2/models/impatient/infer",
            &json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
        )
        .await;
    assert_eq!(status, 504, "{body}");
    // Triton's `timeout` parameter (microseconds) bounds a V2 REST request as it does
    // over gRPC (it was ignored): 1 µs has passed before the request can run.
    let v2 = |parameters: Value| {
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
               "parameters": parameters})
    };
    let (status, body) = server
        .post_json("/v2/models/iris_lr/infer", &v2(json!({"timeout": 1})))
        .await;
    assert_eq!(status, 504, "{body}");
    let (status, body) = server
        .post_json("/v2/models/iris_lr/infer", &v2(json!({"timeout": "1s"})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("microseconds"), "{body}");
    let (status, body) = server
        .post_json(
            "/v2/models/iris_lr/infer",
            &v2(json!({"timeout": 60_000_000})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The server is still healthy afterwards.
    assert_eq!(
        server
            .post_json("/v1/models/iris_lr:predict", &small)
            .await
            .0,
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_outcome() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let ok = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]});
    assert_eq!(
        server.post_json("/v1/models/iris_lr:predict", &ok).await.0,
        200
    );
    assert_eq!(
        server
            .post_json("/v1/models/iris_lr:predict", &json!({"instances": [[1]]}))
            .await
            .0,
        400
    );
    let text = server.scrape().await;
    for needle in [
        "ferroserve_requests_total{model=\"iris_lr\",version=\"1\",protocol=\"tfs_rest\",outcome=\"ok\"}",
        "outcome=\"invalid_argument\"",
        "ferroserve_request_duration_seconds_bucket",
        "ferroserve_inference_duration_seconds_bucket",
        "ferroserve_model_versions{state=\"AVAILABLE\"}",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let client = server.client.clone();
    let url = server.url("/v1/models/iris_lr:predict");
    let body = json!({"instances": vec![[5.1, 3.5, 1.4, 0.2]; 2000]}).to_string();
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    server.stop().await;
    // Either the request finished before the stop, or it was in flight and finished;
    // it must never be cut off with a connection error once accepted.
    if let Ok(status) = in_flight.await.unwrap() {
        assert_eq!(status, 200);
    }
}

/// A value of `/proc/PID/status` in kB (`VmSize`, `VmRSS`).
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Issue: a request asking an ONNX model for more memory than there is (a
/// terabyte) was answered 503 out of memory, but ONNX Runtime's arena then made
/// the model's next run, of any size, reserve about 25 GB of address space and
/// touch 750 MB, for good: the server could no longer fork a worker process, and
/// a worker under a memory limit was killed by the next small request. The
/// session is now built anew after such a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_out_of_memory_leaves_the_model_as_it_was() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "hog",
        1,
        &root_path("tests/fixtures/onnx/memory_hog/model.onnx"),
    );
    let rest: std::net::SocketAddr = format!("127.0.0.1:{}", common::child::free_port())
        .parse()
        .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    command
        .arg("serve")
        .arg("--model-repository")
        .arg(repo.path())
        .args(["--rest-addr", &rest.to_string()])
        .args([
            "--grpc-addr",
            &format!("127.0.0.1:{}", common::child::free_port()),
        ])
        .args(["--worker-ports", "off"]);
    let server = common::child::ChildServer::start(command, rest).await;
    let client = reqwest::Client::new();
    let hog = |mib: i64| {
        let body =
            json!({"inputs": [{"name": "mib", "datatype": "INT64", "shape": [1], "data": [mib]}]});
        let request = client.post(server.url("/v2/models/hog/infer")).json(&body);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // Measured before the session's first run: a session whose first run failed
    // so was the one left reserving tens of gigabytes.
    let (size, rss) = (
        proc_status_kb(server.pid(), "VmSize"),
        proc_status_kb(server.pid(), "VmRSS"),
    );
    // A terabyte: refused by the allocator, answered.
    let (status, body) = hog(1_000_000).await;
    assert_eq!(status, 503, "{body}");
    assert!(error_text(&body).contains("out of memory"), "{body}");
    // The next small runs are as small as before.
    for _ in 0..3 {
        let (status, body) = hog(2).await;
        assert_eq!(status, 200, "{body}");
    }
    let (size_after, rss_after) = (
        proc_status_kb(server.pid(), "VmSize"),
        proc_status_kb(server.pid(), "VmRSS"),
    );
    assert!(
        size_after < size + (4 << 20),
        "address space {size} kB before, {size_after} kB after\n{}",
        server.log()
    );
    assert!(
        rss_after < rss + (200 << 10),
        "resident {rss} kB before, {rss_after} kB after"
    );
}

/// Was: a body of a few hundred bytes whose first elements nest 50 deep, two at
/// each level, named 2^50 values, which were allocated before the array was found
/// ragged: the process aborted. Now it is a 400 over every JSON protocol, for a
/// model the server has and for one it has not, and the server answers on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_ragged_array_is_400_and_the_server_lives() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut deep = json!(0.5);
    for _ in 0..50 {
        deep = json!([deep, 0]);
    }
    for model in ["iris_lr", "nosuch"] {
        let (status, body) = server
            .post_json(
                &format!("/v1/models/{model}:predict"),
                &json!({"instances": deep}),
            )
            .await;
        if model == "nosuch" {
            assert_eq!(status, 404, "{model}: {body}");
        } else {
            assert_eq!(status, 400, "{model}: {body}");
            assert!(
                error_text(&body).contains("not a rectangular array"),
                "{body}"
            );
        }
        let (status, body) = server
            .post_json(
                &format!("/v2/models/{model}/infer"),
                &json!({"inputs": [{"name": "input", "data": deep, "datatype": "FP32",
                                    "shape": [1, 4]}]}),
            )
            .await;
        // V2 reads the body before it looks the model up.
        assert_eq!(status, 400, "{model}: {body}");
        assert!(
            error_text(&body).contains("not a rectangular array"),
            "{body}"
        );
    }
    expect(
        &server,
        "/v1/models/iris_lr:predict",
        json!({"instances": [[1.0, 2.0]]}),
        400,
        "",
    )
    .await;
    let (status, body) = server
        .post_json(
            "/v1/models/iris_lr:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}
