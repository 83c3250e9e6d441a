//! `/metrics` over a real socket: a version's series leave with the version, the
//! model's own series stay; every inference request is counted once, whatever
//! refused it; a request that left the queue leaves its length.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::InferInputTensor;
use ferroserve_proto::inference::{self as v2, InferTensorContents};
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use ferroserve_proto::tensorflow::{
    tensor_shape_proto, DataType as Dt, TensorProto, TensorShapeProto,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_versions_series_leave_metrics() {
    // Named for this test alone: the recorder is global to the test binary.
    let model = "metrics_swapped";
    let lr = root_path("examples/models/iris_lr/1/model.onnx");
    let dt = root_path("examples/models/iris_dt/1/model.onnx");
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), model, 1, &lr);
    let server = TestServer::start_with(Settings {
        file_system_poll_wait: Duration::ZERO,
        ..test_settings(repo.path())
    })
    .await;
    let row = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]});
    let path = format!("/v1/models/{model}:predict");
    assert_eq!(server.post_json(&path, &row).await.0, 200);
    let v1 = format!("model=\"{model}\",version=\"1\"");
    let text = server.scrape().await;
    assert!(text.contains(&v1), "{text}");

    // Version 2 replaces version 1 (the default policy serves the latest).
    install_model(repo.path(), model, 2, &dt);
    let (code, body) = server
        .get(&format!("/reload_model?modelname={model}"))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(server.post_json(&path, &row).await.0, 200);

    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = server.scrape().await;
        if !text.contains(&v1) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "version 1's series are still there:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        text.contains(&format!(
            "ferroserve_requests_total{{model=\"{model}\",version=\"2\",protocol=\"tfs_rest\",outcome=\"ok\"}} 1"
        )),
        "{text}"
    );
    // The model's per-protocol latency (and request count) outlives its versions.
    assert!(
        text.contains(&format!(
            "ferroserve_request_duration_seconds_count{{model=\"{model}\",protocol=\"tfs_rest\"}} 2"
        )),
        "{text}"
    );
    server.stop().await;
}

/// The samples of `ferroserve_requests_total` for `model` and `protocol`, by outcome,
/// and the `_count` of `ferroserve_request_duration_seconds` for them.
fn outcomes(text: &str, model: &str, protocol: &str) -> (BTreeMap<String, f64>, f64) {
    let mut by_outcome = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(labels) = line.strip_prefix("ferroserve_requests_total{") else {
            continue;
        };
        let (labels, value) = labels.rsplit_once("} ").unwrap();
        let has = |k: &str, v: &str| labels.split(',').any(|l| l == format!("{k}=\"{v}\""));
        if !(has("model", model) && has("protocol", protocol)) {
            continue;
        }
        let outcome = labels
            .split(',')
            .find_map(|l| l.strip_prefix("outcome=\""))
            .unwrap()
            .trim_end_matches('"');
        *by_outcome.entry(outcome.to_string()).or_insert(0.0) += value.parse::<f64>().unwrap();
    }
    let count = common::metric_value(
        text,
        "ferroserve_request_duration_seconds_count",
        &[("model", model), ("protocol", protocol)],
    );
    (by_outcome, count)
}

/// What `after` counts for `model` and `protocol` that `before` did not.
fn counted_since(
    before: &str,
    after: &str,
    model: &str,
    protocol: &str,
) -> (BTreeMap<String, f64>, f64) {
    let (was, was_count) = outcomes(before, model, protocol);
    let (mut now, count) = outcomes(after, model, protocol);
    for (outcome, n) in was {
        *now.entry(outcome).or_insert(0.0) -= n;
    }
    now.retain(|_, n| *n != 0.0);
    (now, count - was_count)
}

fn expect(pairs: &[(&str, f64)]) -> (BTreeMap<String, f64>, f64) {
    let map: BTreeMap<String, f64> = pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let total = map.values().sum();
    (map, total)
}

/// One HTTP/1.1 request written as given over a new connection; the status.
async fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {answer:?}"))
}

/// A POST with `body` sent chunked (so that it takes the router, not the predict
/// fast path); the status.
async fn chunked_post(addr: std::net::SocketAddr, path: &str, body: &str) -> u16 {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    raw_status(addr, request.as_bytes()).await
}

/// Every inference request is counted once in `ferroserve_requests_total` and
/// `ferroserve_request_duration_seconds`, whatever refused it, on every protocol:
/// the adapters' own refusals (malformed JSON, no `instances`, an unknown V2
/// datatype, a bad version in the path, feature errors, a message that is no
/// protobuf), the body checks (over the limit, encoded, stopped arriving), on the
/// predict fast path and through the router alike, and the requests
/// `api::predict` answers, none of them twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_inference_request_is_counted_once_whatever_refused_it() {
    // Named for this test alone: the recorder is global to the test binary.
    let m = "counted_lr";
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        m,
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start_with(Settings {
        max_request_bytes: 64 * 1024,
        body_read_timeout: Duration::from_secs(1),
        ..test_settings(repo.path())
    })
    .await;
    let addr = server.rest_addr;
    let row = [5.1, 3.5, 1.4, 0.2];
    let big = format!("{{\"instances\": [[{}]]}}", "1.0,".repeat(30_000));
    let post_with = |path: &str, body: String, header: Option<(&str, &str)>| {
        let mut request = server
            .client
            .post(server.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some((k, v)) = header {
            request = request.header(k, v);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let before = server.scrape().await;

    // TF Serving REST.
    let tfs = format!("/v1/models/{m}:predict");
    for _ in 0..3 {
        let body = json!({"instances": [row]});
        assert_eq!(server.post_json(&tfs, &body).await.0, 200);
    }
    let good = json!({"instances": [row]}).to_string();
    assert_eq!(chunked_post(addr, &tfs, &good).await, 200);
    let both = json!({"instances": [row], "inputs": [row]}).to_string();
    for (body, path) in [
        ("{bad".to_string(), tfs.clone()),
        ("{}".to_string(), tfs.clone()),
        (both, tfs.clone()),
        (good.clone(), format!("/v1/models/{m}/versions/abc:predict")),
    ] {
        assert_eq!(post_with(&path, body, None).await, 400, "{path}");
    }
    assert_eq!(chunked_post(addr, &tfs, "{bad").await, 400);
    assert_eq!(post_with(&tfs, big.clone(), None).await, 413);
    let gzip = Some(("content-encoding", "gzip"));
    assert_eq!(post_with(&tfs, good.clone(), gzip).await, 415);
    // A body that stops arriving: 408 after the body read timeout.
    let stalled = format!(
        "POST {tfs} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"instances\""
    );
    assert_eq!(raw_status(addr, stalled.as_bytes()).await, 408);
    // Unknown models are counted under model="".
    let nowhere = "/v1/models/no_such_counted:predict";
    assert_eq!(post_with(nowhere, good.clone(), None).await, 404);
    assert_eq!(post_with(nowhere, "{bad".into(), None).await, 400);

    // KServe V2 REST.
    let v2 = format!("/v2/models/{m}/infer");
    let v2_body = |datatype: &str, data: &[f64]| {
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": datatype, "data": data}]})
            .to_string()
    };
    for _ in 0..2 {
        assert_eq!(post_with(&v2, v2_body("FP32", &row), None).await, 200);
    }
    for (path, body) in [
        (v2.clone(), v2_body("FP99", &row)),
        (v2.clone(), v2_body("FP32", &row[..3])),
        (v2.clone(), "{bad".to_string()),
        (
            format!("/v2/models/{m}/versions/abc/infer"),
            v2_body("FP32", &row),
        ),
    ] {
        assert_eq!(post_with(&path, body, None).await, 400, "{path}");
    }
    assert_eq!(post_with(&v2, v2_body("FP32", &row), gzip).await, 415);

    // The simple API; `POST /predict` names its model in the body.
    let simple = json!({"model_id": m, "features": row}).to_string();
    assert_eq!(post_with("/predict", simple.clone(), None).await, 200);
    assert_eq!(post_with(&format!("/predict/{m}"), simple, None).await, 200);
    let (code, answer) = server.get(&format!("/predict/{m}?petal=1")).await;
    assert_eq!(code, 400, "{answer}");
    let bad_features = json!({"model_id": m, "features": "nope"}).to_string();
    assert_eq!(post_with("/predict", bad_features, None).await, 400);
    assert_eq!(
        post_with(&format!("/predict/{m}"), "{bad".into(), None).await,
        400
    );
    // No model can be read from these: model="".
    assert_eq!(post_with("/predict", "{bad".into(), None).await, 400);
    assert_eq!(post_with("/predict", big.clone(), None).await, 413);

    // TF Serving gRPC.
    let channel = server.grpc_channel().await;
    let mut tf_client = PredictionServiceClient::new(channel.clone());
    let tensor = |values: &[f32]| TensorProto {
        dtype: Dt::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: [1, 4]
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        float_val: values.to_vec(),
        ..Default::default()
    };
    let tf_request = |name: &str, values: &[f32]| tfs::PredictRequest {
        model_spec: Some(ModelSpec {
            name: name.into(),
            ..Default::default()
        }),
        inputs: HashMap::from([("input".to_string(), tensor(values))]),
        output_filter: vec![],
    };
    let rowf = [5.1f32, 3.5, 1.4, 0.2];
    for _ in 0..2 {
        tf_client.predict(tf_request(m, &rowf)).await.unwrap();
    }
    // A tensor of unknown rank: refused by the adapter.
    let mut unknown_rank = tf_request(m, &rowf);
    let input = unknown_rank.inputs.get_mut("input").unwrap();
    input.tensor_shape.as_mut().unwrap().unknown_rank = true;
    let status = tf_client.predict(unknown_rank).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let mut unknown_input = tf_request(m, &rowf);
    unknown_input.inputs = HashMap::from([("x".to_string(), tensor(&rowf))]);
    let status = tf_client.predict(unknown_input).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let not_protobuf = [0x08, 0xff, 0xff, 0xff];
    let path = "/tensorflow.serving.PredictionService/Predict";
    assert_eq!(
        common::raw_grpc(&server, path, &not_protobuf)
            .await
            .0
            .as_deref(),
        Some("3")
    );

    // KServe V2 gRPC.
    let mut v2_client = GrpcInferenceServiceClient::new(channel);
    let v2_request = |datatype: &str| v2::ModelInferRequest {
        model_name: m.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: datatype.into(),
            shape: vec![1, 4],
            contents: Some(InferTensorContents {
                fp32_contents: rowf.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    v2_client.model_infer(v2_request("FP32")).await.unwrap();
    let status = v2_client.model_infer(v2_request("FP99")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let path = "/inference.GRPCInferenceService/ModelInfer";
    assert_eq!(
        common::raw_grpc(&server, path, &not_protobuf)
            .await
            .0
            .as_deref(),
        Some("3")
    );

    let after = server.scrape().await;
    let cases = [
        (
            m,
            "tfs_rest",
            expect(&[
                ("ok", 4.0),
                ("invalid_argument", 5.0),
                ("payload_too_large", 1.0),
                ("unsupported_media_type", 1.0),
                ("request_timeout", 1.0),
            ]),
        ),
        (
            "",
            "tfs_rest",
            expect(&[("not_found", 1.0), ("invalid_argument", 1.0)]),
        ),
        (
            m,
            "v2_rest",
            expect(&[
                ("ok", 2.0),
                ("invalid_argument", 4.0),
                ("unsupported_media_type", 1.0),
            ]),
        ),
        (
            m,
            "simple_rest",
            expect(&[("ok", 2.0), ("invalid_argument", 3.0)]),
        ),
        (
            "",
            "simple_rest",
            expect(&[("invalid_argument", 1.0), ("payload_too_large", 1.0)]),
        ),
        (
            m,
            "tfs_grpc",
            expect(&[("ok", 2.0), ("invalid_argument", 2.0)]),
        ),
        ("", "tfs_grpc", expect(&[("invalid_argument", 1.0)])),
        (
            m,
            "v2_grpc",
            expect(&[("ok", 1.0), ("invalid_argument", 1.0)]),
        ),
        ("", "v2_grpc", expect(&[("invalid_argument", 1.0)])),
    ];
    for (model, protocol, want) in cases {
        assert_eq!(
            counted_since(&before, &after, model, protocol),
            want,
            "model={model:?} protocol={protocol}"
        );
    }
    server.stop().await;
}

/// A request that leaves the queue before its batch closes leaves
/// `ferroserve_queue_length` at once, not when its batch would have closed; and a
/// request waiting for company runs by half the time its deadline gives it
/// (`crate::batching`), so a deadline shorter than the queue's delay is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_left_leaves_the_queue_length() {
    let model = "metrics_queued";
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        model,
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    std::fs::write(
        repo.path().join(model).join("config.toml"),
        "[batching]\nenabled = true\nmax_queue_delay_micros = 3000000\nmax_queue_length = 2\n",
    )
    .unwrap();
    let server = TestServer::start(repo.path()).await;
    let url = server.url(&format!("/v2/models/{model}/infer"));
    let body = |timeout_us: Option<u64>| {
        let mut body = json!({
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}],
        });
        if let Some(us) = timeout_us {
            body["parameters"] = json!({"timeout": us});
        }
        body
    };
    let series = |n: u32| format!("ferroserve_queue_length{{model=\"{model}\",version=\"1\"}} {n}");

    // Its client gives up after 300 ms; the batch would close after 3 s.
    let started = Instant::now();
    let left = server
        .client
        .post(&url)
        .json(&body(None))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(left.is_err(), "{left:?}");
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let text = server.scrape().await;
        if text.contains(&series(0)) {
            break;
        }
        assert!(Instant::now() < deadline, "still queued: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A deadline of 200 ms, shorter than the 3 s delay: it runs alone, in time.
    let started = Instant::now();
    let (code, answer) = server
        .post_json(&format!("/v2/models/{model}/infer"), &body(Some(200_000)))
        .await;
    assert_eq!(code, 200, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(server.scrape().await.contains(&series(0)));
    server.stop().await;
}

/// A version's error series (`outcome` other than `ok`) leave `/metrics` with the
/// version, as its `ok` series do, whether an upload replaces it or an unload ends
/// it: a model swapped many times keeps a small exposition. Meanwhile the console's
/// totals for the model stay those of the duration histogram, which outlives its
/// versions: every request, and every error, since the server started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_versions_errors_leave_with_it_and_the_console_keeps_the_totals() {
    // Named for this test alone: the recorder is global to the test binary.
    let model = "metrics_errors_swapped";
    let onnx = root_path("examples/models/iris_lr/1/model.onnx");
    let repo = tempfile::tempdir().unwrap();
    install_model(repo.path(), model, 1, &onnx);
    let server = TestServer::start_with(Settings {
        file_system_poll_wait: Duration::ZERO,
        ..test_settings(repo.path())
    })
    .await;
    let path = format!("/v1/models/{model}:predict");
    let good = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]});
    // Two features for a model of four: invalid_argument, once a version is chosen.
    let bad = json!({"instances": [[1, 2]]});
    let version_series = |v: u64| format!("model=\"{model}\",version=\"{v}\"");
    let error_series = |v: u64| {
        format!(
            "ferroserve_requests_total{{model=\"{model}\",version=\"{v}\",protocol=\"tfs_rest\",\
             outcome=\"invalid_argument\"}} 1"
        )
    };
    let gone = |v: u64| {
        let series = version_series(v);
        let server = &server;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = server.scrape().await;
                if !text.contains(&series) {
                    return text;
                }
                assert!(
                    Instant::now() < deadline,
                    "the series of {series} are still there:\n{text}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let console = || async {
        let (code, figures) = server
            .get(&format!("/console/api/models/{model}/metrics"))
            .await;
        assert_eq!(code, 200, "{figures}");
        figures
    };

    let (mut sent, mut errors) = (0.0, 0.0);
    for version in 1..=4u64 {
        if version > 1 {
            let (code, body) = server
                .upload(
                    &[("model_id", model), ("version", &version.to_string())],
                    "model.onnx",
                    std::fs::read(&onnx).unwrap(),
                )
                .await;
            assert_eq!(code, 200, "{body}");
        }
        let (code, answer) = server.post_json(&path, &good).await;
        assert_eq!(
            (code, answer["predictions"].is_array()),
            (200, true),
            "{answer}"
        );
        let (code, answer) = server.post_json(&path, &bad).await;
        assert_eq!(code, 400, "{answer}");
        sent += 2.0;
        errors += 1.0;
        // While the version lives, its error is counted with it, once.
        let text = server.scrape().await;
        assert!(text.contains(&error_series(version)), "{text}");
        if version > 1 {
            let text = gone(version - 1).await;
            assert!(!text.contains(&error_series(version - 1)), "{text}");
        }
        let figures = console().await;
        assert_eq!(
            figures["requests_total"], figures["latency_seconds"]["count"],
            "version {version}: {figures}"
        );
        assert_eq!(
            figures["requests_total"], sent,
            "version {version}: {figures}"
        );
        assert_eq!(
            figures["errors_total"], errors,
            "version {version}: {figures}"
        );
    }

    // An unload ends the last version: its series, errors included, leave too.
    let (code, body) = server
        .post_json(&format!("/v2/repository/models/{model}/unload"), &json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    let text = gone(4).await;
    assert!(!text.contains(&error_series(4)), "{text}");
    // Only the series without a version stay.
    assert_eq!(
        common::metric_value(
            &text,
            "ferroserve_request_duration_seconds_count",
            &[("model", model), ("protocol", "tfs_rest")]
        ),
        sent,
        "{text}"
    );
    server.stop().await;
}

/// A request for a version (or label) that a served model lacks is counted under
/// that model, with `version=""`, on every protocol; only a model that is not
/// served here gets `model=""`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_version_of_a_served_model_is_counted_under_the_model() {
    // Named for this test alone: the recorder is global to the test binary.
    let m = "metrics_no_such_version";
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        m,
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start(repo.path()).await;
    let row = [5.1, 3.5, 1.4, 0.2];
    let before = server.scrape().await;

    for path in [
        format!("/v1/models/{m}/versions/99:predict"),
        format!("/v1/models/{m}/labels/nowhere:predict"),
    ] {
        let (code, answer) = server.post_json(&path, &json!({"instances": [row]})).await;
        assert_eq!(code, 404, "{path}: {answer}");
    }
    let v2_body =
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]});
    let (code, answer) = server
        .post_json(&format!("/v2/models/{m}/versions/99/infer"), &v2_body)
        .await;
    assert_eq!(code, 404, "{answer}");
    let simple = json!({"model_id": m, "features": row, "version": 99});
    let (code, answer) = server.post_json("/predict", &simple).await;
    assert_eq!(code, 404, "{answer}");

    let channel = server.grpc_channel().await;
    let rowf = [5.1f32, 3.5, 1.4, 0.2];
    let tf_request = tfs::PredictRequest {
        model_spec: Some(ModelSpec {
            name: m.into(),
            version: Some(99),
            ..Default::default()
        }),
        inputs: HashMap::from([(
            "input".to_string(),
            TensorProto {
                dtype: Dt::DtFloat as i32,
                tensor_shape: Some(TensorShapeProto {
                    dim: [1, 4]
                        .iter()
                        .map(|&size| tensor_shape_proto::Dim {
                            size,
                            name: String::new(),
                        })
                        .collect(),
                    unknown_rank: false,
                }),
                float_val: rowf.to_vec(),
                ..Default::default()
            },
        )]),
        output_filter: vec![],
    };
    let status = PredictionServiceClient::new(channel.clone())
        .predict(tf_request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let v2_request = v2::ModelInferRequest {
        model_name: m.into(),
        model_version: "99".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            contents: Some(InferTensorContents {
                fp32_contents: rowf.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let status = GrpcInferenceServiceClient::new(channel)
        .model_infer(v2_request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let after = server.scrape().await;
    for (protocol, n) in [
        ("tfs_rest", 2.0),
        ("v2_rest", 1.0),
        ("simple_rest", 1.0),
        ("tfs_grpc", 1.0),
        ("v2_grpc", 1.0),
    ] {
        assert_eq!(
            counted_since(&before, &after, m, protocol),
            expect(&[("not_found", n)]),
            "protocol={protocol}\n{after}"
        );
        let series = format!(
            "ferroserve_requests_total{{model=\"{m}\",version=\"\",protocol=\"{protocol}\",outcome=\"not_found\"}} {n}"
        );
        assert!(after.contains(&series), "{series}\n{after}");
    }
    server.stop().await;
}
