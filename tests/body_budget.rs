//! The server-wide budget of request-body bytes held at once
//! (`--max-inflight-body-bytes`): bodies that each fit their own limit cannot
//! together hold more. Past the budget a large body is refused (REST 503, gRPC
//! RESOURCE_EXHAUSTED) while small requests are still served, and every charge,
//! a refused body's included, is given back when its request ends.
//!
//! One test: the budget is the process's, and this binary's only user.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{install_model, metric_value, root_path, test_settings, TestServer};
use ferroserve::connections::BodyBudget;
use ferroserve::settings::Settings;
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::InferInputTensor;
use ferroserve_proto::inference::{self as v2, InferTensorContents};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic::Code;

const MAX_BODY: usize = 2_000_000;
const BUDGET: u64 = 3_000_000;
const HALF_SENT: usize = 1_500_000;

/// Bytes held by request bodies now (this process's budget).
fn held() -> u64 {
    BodyBudget::process_wide(0).held()
}

/// Waits until the bodies hold `bytes`.
async fn held_becomes(bytes: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while held() != bytes {
        assert!(
            Instant::now() < deadline,
            "{what}: {} bytes held, not {bytes}",
            held()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that sends `HALF_SENT` bytes of a `MAX_BODY`-byte predict body over
/// HTTP/1.1 and pauses; dropping it closes its connection.
async fn half_sent_body(server: &TestServer) -> TcpStream {
    let mut stream = TcpStream::connect(server.rest_addr).await.unwrap();
    let head = format!(
        "POST /v1/models/iris_lr:predict HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: {MAX_BODY}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; HALF_SENT]).await.unwrap();
    stream
}

/// A one-row predict padded with spaces to `MAX_BODY` bytes.
fn large_predict_body() -> Vec<u8> {
    let mut body = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]})
        .to_string()
        .into_bytes();
    body.resize(MAX_BODY, b' ');
    body
}

/// POSTs a large predict over HTTP/2 (the server answers a refused stream while
/// its body is still being sent, which HTTP/2 hands to the client intact).
async fn large_rest_predict(server: &TestServer) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .post(server.url("/v1/models/iris_lr:predict"))
        .header("content-type", "application/json")
        .body(large_predict_body())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn infer(rows: usize, padding: usize) -> v2::ModelInferRequest {
    v2::ModelInferRequest {
        model_name: "iris_lr".into(),
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
        // Bytes the model ignores, that make the message large.
        id: "x".repeat(padding),
        ..Default::default()
    }
}

async fn grpc_client(server: &TestServer) -> GrpcInferenceServiceClient<Channel> {
    let channel = server.grpc_channel().await;
    GrpcInferenceServiceClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

fn assert_refused_for_budget(status: u16, body: &Value) {
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("too many large request bodies at once")
            && message.contains("limit 3000000 set by --max-inflight-body-bytes"),
        "{message}"
    );
}

fn assert_grpc_refused_for_budget(
    result: Result<tonic::Response<v2::ModelInferResponse>, tonic::Status>,
) {
    let status = result.expect_err("a large message past the budget was taken");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("limit 3000000 set by --max-inflight-body-bytes"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_past_the_budget_are_refused_and_their_charges_given_back() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "iris_lr",
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start_with(Settings {
        max_request_bytes: MAX_BODY,
        grpc_max_receive_bytes: MAX_BODY,
        max_inflight_body_bytes: BUDGET,
        ..test_settings(repo.path())
    })
    .await;
    let mut grpc = grpc_client(&server).await;
    let grpc_padding = MAX_BODY - 100_000;

    // Two bodies half sent hold the whole budget.
    let first = half_sent_body(&server).await;
    let second = half_sent_body(&server).await;
    held_becomes(2 * HALF_SENT as u64, "two half-sent bodies").await;

    // A third large body does not fit, on either listener...
    let (status, body) = large_rest_predict(&server).await;
    assert_refused_for_budget(status, &body);
    assert_grpc_refused_for_budget(grpc.model_infer(infer(1, grpc_padding)).await);
    // ...while small requests are served.
    let (status, body) = server
        .post_json(
            "/v1/models/iris_lr:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    grpc.model_infer(infer(1, 0)).await.unwrap();
    held_becomes(2 * HALF_SENT as u64, "after the refusals").await;

    // With one of them gone, a large body is refused mid-way, and what it had
    // brought is given back with its answer.
    drop(first);
    held_becomes(HALF_SENT as u64, "after the first client left").await;
    let (status, body) = large_rest_predict(&server).await;
    assert_refused_for_budget(status, &body);
    held_becomes(HALF_SENT as u64, "after a REST body refused mid-way").await;
    assert_grpc_refused_for_budget(grpc.model_infer(infer(1, grpc_padding)).await);
    held_becomes(HALF_SENT as u64, "after a gRPC message refused mid-way").await;

    // With both gone, nothing is held, and large bodies are taken again.
    drop(second);
    held_becomes(0, "after both clients left").await;
    let (status, body) = large_rest_predict(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"].as_array().unwrap().len(), 1, "{body}");
    let answer = grpc.model_infer(infer(1, grpc_padding)).await.unwrap();
    assert_eq!(answer.into_inner().id.len(), grpc_padding);
    held_becomes(0, "after the large requests").await;

    // The refusals are counted as the server's unavailability.
    let metrics = server.scrape().await;
    let refused = metric_value(
        &metrics,
        "ferroserve_requests_total",
        &[("outcome", "unavailable")],
    );
    assert!(refused >= 2.0, "{refused}");
}
