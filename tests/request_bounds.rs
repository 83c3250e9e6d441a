//! No request can make the server allocate more than its bounds: outputs named many
//! times, too many rows, answers over `max_response_bytes`, TF Serving padding that
//! would expand a few bytes into gigabytes, and multipart fields that never end are
//! refused quickly with their status, and the server keeps serving.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{install_model, peak_rss, reset_peak_rss, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use ferroserve_proto::inference::{self as v2, InferTensorContents};
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use ferroserve_proto::tensorflow::{
    tensor_shape_proto, DataType as Dt, TensorProto, TensorShapeProto,
};
use serde_json::{json, Value};
use tonic::Code;

/// iris_lr with the server's row limit, and `small` (the same model) whose
/// config.toml lowers it to 5 rows.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for model in ["iris_lr", "small"] {
        install_model(
            dir.path(),
            model,
            1,
            &root_path("examples/models/iris_lr/1/model.onnx"),
        );
    }
    std::fs::write(
        dir.path().join("small/config.toml"),
        "max_request_rows = 5\n",
    )
    .unwrap();
    dir
}

fn settings(repo: &std::path::Path) -> Settings {
    Settings {
        max_request_rows: 1000,
        ..test_settings(repo)
    }
}

fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| tensor_shape_proto::Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    })
}

fn tf_request(model: &str, input: TensorProto, outputs: Vec<String>) -> tfs::PredictRequest {
    tfs::PredictRequest {
        model_spec: Some(ModelSpec {
            name: model.into(),
            ..Default::default()
        }),
        inputs: HashMap::from([("input".to_string(), input)]),
        output_filter: outputs,
    }
}

fn floats(rows: usize) -> TensorProto {
    TensorProto {
        dtype: Dt::DtFloat as i32,
        tensor_shape: shape(&[rows as i64, 4]),
        float_val: [5.1, 3.5, 1.4, 0.2].repeat(rows),
        ..Default::default()
    }
}

fn v2_request(model: &str, rows: usize, outputs: &[&str]) -> v2::ModelInferRequest {
    v2::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 4],
            parameters: HashMap::new(),
            contents: Some(InferTensorContents {
                fp32_contents: [5.1, 3.5, 1.4, 0.2].repeat(rows),
                ..Default::default()
            }),
        }],
        outputs: outputs
            .iter()
            .map(|name| InferRequestedOutputTensor {
                name: name.to_string(),
                parameters: HashMap::new(),
            })
            .collect(),
        ..Default::default()
    }
}

fn v2_body(rows: usize, outputs: Value) -> Value {
    json!({
        "inputs": [{
            "name": "input", "datatype": "FP32", "shape": [rows, 4],
            "data": vec![[5.1, 3.5, 1.4, 0.2]; rows],
        }],
        "outputs": outputs,
    })
}

fn error_text(body: &Value) -> String {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {body}"))
        .to_string()
}

/// The server still answers a plain prediction.
async fn still_serves(server: &TestServer) {
    let (status, body) = server
        .post_json(
            "/v1/models/iris_lr:predict",
            &json!({ "instances": [[5.1, 3.5, 1.4, 0.2]] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_named_twice_is_refused_over_every_protocol() {
    let repo = repo();
    let server = TestServer::start_with(settings(repo.path())).await;

    // The finding: 20,000 copies of one name multiplied the answer 20,000 times.
    let many = vec![json!({ "name": "probabilities" }); 20_000];
    let (status, body) = server
        .post_json("/v2/models/iris_lr/infer", &v2_body(1, Value::Array(many)))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("\"probabilities\" is requested more than once"));

    let mut v2_client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let status = v2_client
        .model_infer(v2_request(
            "iris_lr",
            1,
            &["probabilities", "label", "probabilities"],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("more than once"), "{status:?}");

    let mut tf_client = PredictionServiceClient::new(server.grpc_channel().await);
    let status = tf_client
        .predict(tf_request(
            "iris_lr",
            floats(1),
            vec!["label".into(), "label".into()],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("more than once"), "{status:?}");

    // Each output once is still fine, in the order asked.
    let (status, body) = server
        .post_json(
            "/v2/models/iris_lr/infer",
            &v2_body(1, json!([{ "name": "probabilities" }, { "name": "label" }])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"].as_array().unwrap().len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_per_request_are_bounded_per_model() {
    let repo = repo();
    let server = TestServer::start_with(settings(repo.path())).await;
    let instances = |rows: usize| json!({ "instances": vec![[5.1, 3.5, 1.4, 0.2]; rows] });

    // The server's limit (1000 here) and the model's own (5 in its config.toml).
    let (status, _) = server
        .post_json("/v1/models/iris_lr:predict", &instances(1000))
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .post_json("/v1/models/iris_lr:predict", &instances(1001))
        .await;
    assert_eq!(status, 413, "{body}");
    let message = error_text(&body);
    assert!(
        message.contains("1001 rows")
            && message.contains("1000")
            && message.contains("max_request_rows"),
        "{message}"
    );
    let (status, _) = server
        .post_json("/v1/models/small:predict", &instances(5))
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .post_json("/v1/models/small:predict", &instances(6))
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        error_text(&body).contains("5 that model \"small\""),
        "{body}"
    );

    let mut v2_client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let status = v2_client
        .model_infer(v2_request("small", 6, &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_request_rows"), "{status:?}");
    still_serves(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_over_max_response_bytes_are_refused_before_encoding() {
    let repo = repo();
    let server = TestServer::start_with(Settings {
        max_response_bytes: 16 * 1024,
        ..settings(repo.path())
    })
    .await;
    // 10 rows answer in well under 16 KiB; 1000 rows of label + 3 probabilities
    // would not, in JSON or in protobuf.
    let (status, body) = server
        .post_json("/v2/models/iris_lr/infer", &v2_body(10, json!([])))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post_json("/v2/models/iris_lr/infer", &v2_body(1000, json!([])))
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(error_text(&body).contains("max_response_bytes"), "{body}");
    let (status, body) = server
        .post_json(
            "/v1/models/iris_lr:predict",
            &json!({ "instances": vec![[5.1, 3.5, 1.4, 0.2]; 1000] }),
        )
        .await;
    assert_eq!(status, 413, "{body}");

    let mut tf_client = PredictionServiceClient::new(server.grpc_channel().await);
    let status = tf_client
        .predict(tf_request("iris_lr", floats(1000), vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("max_response_bytes"),
        "{status:?}"
    );
    let ok = tf_client
        .predict(tf_request("iris_lr", floats(10), vec![]))
        .await
        .unwrap();
    assert_eq!(ok.into_inner().outputs["label"].int64_val.len(), 10);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_padding_is_bounded_and_tensor_content_conflicts_are_refused() {
    let repo = repo();
    let server = TestServer::start_with(settings(repo.path())).await;
    let mut tf_client = PredictionServiceClient::new(server.grpc_channel().await);

    // The finding: 50 bytes asking for [16777216, 4] floats (256 MiB).
    let broadcast = TensorProto {
        dtype: Dt::DtFloat as i32,
        tensor_shape: shape(&[16_777_216, 4]),
        float_val: vec![1.0],
        ..Default::default()
    };
    let started = Instant::now();
    let status = tf_client
        .predict(tf_request("iris_lr", broadcast, vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_request_rows"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // The same within the row limit but past the message size limit.
    let wide = TensorProto {
        dtype: Dt::DtFloat as i32,
        tensor_shape: shape(&[2, 1 << 24]),
        float_val: vec![1.0],
        ..Default::default()
    };
    let status = tf_client
        .predict(tf_request("iris_lr", wide, vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("request size limit"),
        "{status:?}"
    );

    // Tensors each within the limit share it: 600 bytes once asked for a
    // gigabyte, 62 MiB for each of 16 inputs.
    let big = TensorProto {
        dtype: Dt::DtDouble as i32,
        tensor_shape: shape(&[1000, 4, 2048]),
        double_val: vec![1.0],
        ..Default::default()
    };
    let mut many = tf_request("iris_lr", big.clone(), vec![]);
    for k in 0..16 {
        many.inputs.insert(format!("in{k}"), big.clone());
    }
    let status = tf_client.predict(many).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("may still take"), "{status:?}");

    // The model's own row limit bounds padding too.
    let status = tf_client
        .predict(tf_request(
            "small",
            TensorProto {
                dtype: Dt::DtFloat as i32,
                tensor_shape: shape(&[6, 4]),
                float_val: vec![1.0],
                ..Default::default()
            },
            vec![],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let both = TensorProto {
        dtype: Dt::DtFloat as i32,
        tensor_shape: shape(&[1, 4]),
        tensor_content: [5.1f32, 3.5, 1.4, 0.2]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        float_val: vec![1.0, 2.0, 3.0, 4.0],
        ..Default::default()
    };
    let status = tf_client
        .predict(tf_request("iris_lr", both, vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("tensor_content and float_val"),
        "{status:?}"
    );
    still_serves(&server).await;
    server.stop().await;
}

/// A client that asks before sending its body (`Expect: 100-continue`) and
/// declares one past the route's limit is answered 413 at once, never told to
/// send it; within the limit it is told to, and answered. Before, the server
/// asked for the whole body and refused it only past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_too_large_is_refused_before_it_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let repo = repo();
    let server = TestServer::start_with(Settings {
        max_request_bytes: 1 << 20,
        max_upload_bytes: 2 << 20,
        ..settings(repo.path())
    })
    .await;
    let head_as = |path: &str, content_type: &str, length: u64| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n",
            server.rest_addr
        )
    };
    let head = |path: &str, length: u64| head_as(path, "application/json", length);
    let first_answer = |request: String| async move {
        let mut tcp = tokio::net::TcpStream::connect(server.rest_addr)
            .await
            .unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer))
            .await
            .expect("an answer before the body")
            .unwrap();
        (tcp, String::from_utf8_lossy(&answer[..n]).into_owned())
    };
    // Each names the limit the user set: the route's, the upload limit, or the two
    // settings a job request's with files is the sum of. A job request in JSON is
    // held to --max-request-bytes, as its handler reads it (it was told to send a
    // body up to the multipart limit, then refused).
    let multipart = "multipart/form-data; boundary=x";
    for (path, content_type, length, says) in [
        (
            "/v1/models/iris_lr:predict",
            "application/json",
            (1 << 20) + 1,
            "larger than the limit of 1048576 bytes (--max-request-bytes)",
        ),
        (
            "/upload_model",
            multipart,
            4 << 20,
            "larger than the upload limit",
        ),
        (
            "/v1/jobs",
            multipart,
            1 << 40,
            "larger than a job request may be",
        ),
        (
            "/v1/jobs",
            "application/json",
            3 << 19,
            "(--max-request-bytes)",
        ),
        (
            "/predictall",
            "application/json",
            3 << 19,
            "(--max-request-bytes)",
        ),
    ] {
        let (_, answer) = first_answer(head_as(path, content_type, length)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(answer.contains(says), "{path}: {answer}");
    }
    // Within the limit: told to continue, then answered.
    let body = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}).to_string();
    let (mut tcp, answer) =
        first_answer(head("/v1/models/iris_lr:predict", body.len() as u64)).await;
    assert!(answer.starts_with("HTTP/1.1 100 Continue"), "{answer}");
    tcp.write_all(body.as_bytes()).await.unwrap();
    let mut rest = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let rest = String::from_utf8_lossy(&rest[..n]);
    assert!(rest.contains("HTTP/1.1 200"), "{answer}{rest}");
    server.stop().await;
}

/// A body sent compressed is a 415 naming the encoding: the server does not
/// decompress, and it read the bytes as they came (a gzip header as JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_body_is_refused() {
    let repo = repo();
    let server = TestServer::start_with(settings(repo.path())).await;
    let body = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}).to_string();
    for (path, encoding) in [
        ("/v1/models/iris_lr:predict", "gzip"),
        ("/v2/models/iris_lr/infer", "deflate"),
        ("/predict/iris_lr", "br"),
    ] {
        let response = server
            .client
            .post(server.url(path))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 415, "{path}");
        let text = response.text().await.unwrap();
        assert!(
            text.contains(encoding) && text.contains("not decompressed"),
            "{text}"
        );
    }
    let response = server
        .client
        .post(server.url("/v1/models/iris_lr:predict"))
        .header("content-encoding", "identity, identity")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Without a body there is nothing to decode.
    let response = server
        .client
        .get(server.url("/v1/models/iris_lr"))
        .header("content-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_multipart_text_field_is_refused_while_reading() {
    let repo = repo();
    let server = TestServer::start_with(settings(repo.path())).await;
    // 200 MB of model_id, made as it is sent so the client holds none of it; the
    // server used to collect the whole field before checking its 256 bytes.
    const FIELD: usize = 200 * 1024 * 1024;
    const CHUNK: usize = 1024 * 1024;
    let chunks = futures::stream::iter(
        (0..FIELD / CHUNK).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a'; CHUNK]))),
    );
    let form = reqwest::multipart::Form::new()
        .part(
            "model_id",
            reqwest::multipart::Part::stream_with_length(
                reqwest::Body::wrap_stream(chunks),
                FIELD as u64,
            ),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"unused".to_vec()).file_name("m.onnx"),
        );
    reset_peak_rss();
    let before = peak_rss();
    let started = Instant::now();
    let response = server
        .client
        .post(server.url("/upload_model"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        error_text(&body).contains("model_id is too long: at most 256 bytes"),
        "{body}"
    );
    let grown = peak_rss().saturating_sub(before);
    assert!(
        grown < 64 * 1024 * 1024,
        "reading a 200 MB field took {grown} bytes more memory"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        std::fs::read_dir(repo.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != ".ferroserve")
            .count()
            == 2,
        "nothing staged"
    );
    still_serves(&server).await;
    server.stop().await;
}

/// A raw HTTP/2 connection to the gRPC port, whose client takes what arrives but
/// never opens its flow-control window (what a stalled reader looks like to the
/// server), and the stream limit the server announced.
async fn raw_h2(
    server: &TestServer,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::sync::watch::Receiver<usize>,
) {
    let tcp = tokio::net::TcpStream::connect(server.grpc_addr.unwrap())
        .await
        .unwrap();
    let (send, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let (limit_tx, limit_rx) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        futures::future::poll_fn(|cx| {
            let polled = std::future::Future::poll(std::pin::Pin::new(&mut connection), cx);
            let _ = limit_tx.send(connection.max_concurrent_send_streams());
            polled
        })
        .await
    });
    (send, limit_rx)
}

/// A V2 ModelInfer call as gRPC frames it: uncompressed, length-prefixed.
fn grpc_model_infer(rows: usize) -> (http::Request<()>, bytes::Bytes) {
    use ferroserve_proto::prost::Message;
    let message = v2_request("iris_lr", rows, &[]).encode_to_vec();
    let mut body = vec![0u8];
    body.extend((message.len() as u32).to_be_bytes());
    body.extend(message);
    let request = http::Request::post("/inference.GRPCInferenceService/ModelInfer")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    (request, body.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_per_connection_and_unread_answers_are_bounded() {
    let repo = repo();
    let server = TestServer::start_with(Settings {
        grpc_max_concurrent_streams: 4,
        grpc_send_timeout: Duration::from_millis(500),
        max_request_rows: 65_536,
        ..settings(repo.path())
    })
    .await;
    let (send, mut limit) = raw_h2(&server).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while *limit.borrow() != 4 {
        assert!(Instant::now() < deadline, "no stream limit announced");
        let _ = tokio::time::timeout(Duration::from_millis(100), limit.changed()).await;
    }

    // Four calls whose answers (20,000 rows, about 300 KB each) are never read past
    // the client's first 64 KiB window: each is reset once it has waited 500 ms,
    // rather than held in memory for as long as the connection lives.
    let mut answers = Vec::new();
    for _ in 0..4 {
        let mut send = send.clone().ready().await.unwrap();
        let (request, body) = grpc_model_infer(20_000);
        let (response, mut stream) = send.send_request(request, false).unwrap();
        stream.send_data(body, true).unwrap();
        answers.push(response);
    }
    let started = Instant::now();
    for response in answers {
        let response = tokio::time::timeout(Duration::from_secs(30), response)
            .await
            .expect("headers")
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = 0;
        let outcome = loop {
            match tokio::time::timeout(Duration::from_secs(10), body.data()).await {
                Err(_) => panic!("the stalled answer was neither finished nor reset"),
                Ok(None) => break Ok(received),
                Ok(Some(Ok(chunk))) => received += chunk.len(),
                Ok(Some(Err(e))) => break Err(e),
            }
        };
        let error = outcome.expect_err("the answer fits no 64 KiB window");
        assert_eq!(error.reason(), Some(h2::Reason::CANCEL), "{error}");
        assert!(received <= 65_535, "{received}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    // A client that reads gets its whole answer, on the same server.
    let mut client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let answer = client
        .model_infer(v2_request("iris_lr", 20_000, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.outputs[0].shape, vec![20_000]);
    server.stop().await;
}
