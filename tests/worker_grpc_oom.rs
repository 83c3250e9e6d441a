//! A deployed model's worker killed past its memory limit while answering a gRPC
//! call: the main server's answer says so as its REST answer does (UNAVAILABLE,
//! the REST 503's message: "out of memory: …", naming the limit), over KServe
//! `ModelInfer` and `ModelStreamInfer` and TF Serving `Predict`, whether the
//! kernel's OOM killer (a memory cgroup) or the worker's RSS watchdog ended it. It
//! was "the model's worker did not answer: transport error".

mod common;

use std::time::Duration;

use common::workers::*;
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::InferInputTensor;
use ferroserve_proto::inference::{InferTensorContents, ModelInferRequest};
use ferroserve_proto::tensorflow as tf;
use ferroserve_proto::tensorflow::serving as tfs;
use serde_json::{json, Value};
use tfs::prediction_service_client::PredictionServiceClient;

fn infer_request(mib: i64) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "hog".into(),
        inputs: vec![InferInputTensor {
            name: "mib".into(),
            datatype: "INT64".into(),
            shape: vec![1],
            contents: Some(InferTensorContents {
                int64_contents: vec![mib],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn predict_request(mib: i64) -> tfs::PredictRequest {
    tfs::PredictRequest {
        model_spec: Some(tfs::ModelSpec {
            name: "hog".into(),
            ..Default::default()
        }),
        inputs: std::collections::HashMap::from([(
            "mib".to_string(),
            tf::TensorProto {
                dtype: tf::DataType::DtInt64 as i32,
                tensor_shape: Some(tf::TensorShapeProto {
                    dim: vec![tf::tensor_shape_proto::Dim {
                        size: 1,
                        name: String::new(),
                    }],
                    unknown_rank: false,
                }),
                int64_val: vec![mib],
                ..Default::default()
            },
        )]),
        output_filter: vec![],
    }
}

/// Waits for the hog's worker to be ready again after its `restarts`-th restart.
async fn wait_restarted(server: &common::child::ChildServer, restarts: u64) -> Value {
    wait_registry(server, "hog", Duration::from_secs(20), |e| {
        e["state"] == "ready" && e["restarts"].as_u64().is_some_and(|r| r >= restarts)
    })
    .await
}

fn assert_out_of_memory(what: &str, code: tonic::Code, message: &str, how: &str) {
    assert_eq!(code, tonic::Code::Unavailable, "{what}: {code:?} {message}");
    assert!(
        message.starts_with(
            "out of memory: model \"hog\"'s worker ended while answering this request"
        ) && message.contains(how),
        "{what}: {message}"
    );
}

/// A hog deployed with `memory_limit` in a server started with `extra`, its gRPC
/// port, and the deploy's answer.
async fn deployed_hog(
    repo: &std::path::Path,
    memory_limit: &str,
    extra: &[&str],
) -> (common::child::ChildServer, String, Value) {
    install(repo, "hog", "tests/fixtures/onnx/memory_hog/model.onnx");
    let (server, grpc_port) = start_server_with_grpc(repo, port_range(20), extra).await;
    let (code, hog) = deploy(
        &server,
        json!({"model_id": "hog", "resources": {"memory_limit": memory_limit}}),
    )
    .await;
    assert_eq!(code, 200, "{hog}\n{}", server.log());
    (server, format!("http://127.0.0.1:{grpc_port}"), hog)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_past_its_memory_limit_is_out_of_memory_over_grpc() {
    let repo = tempfile::tempdir().unwrap();
    let (server, url, hog) = deployed_hog(repo.path(), "128Mi", &[]).await;
    assert_eq!(hog["enforced"]["memory_limit"], true, "{hog}");
    let how = "killed by the kernel's OOM killer past its memory limit (128Mi)";
    let mut v2 = GrpcInferenceServiceClient::connect(url.clone())
        .await
        .unwrap();
    let small = v2.model_infer(infer_request(2)).await;
    assert!(small.is_ok(), "{small:?}\n{}", server.log());

    // KServe ModelInfer.
    let status = v2.model_infer(infer_request(1024)).await.unwrap_err();
    assert_out_of_memory("ModelInfer", status.code(), status.message(), how);
    wait_restarted(&server, 1).await;

    // TF Serving Predict.
    let mut tf_client = PredictionServiceClient::connect(url).await.unwrap();
    let status = tf_client.predict(predict_request(1024)).await.unwrap_err();
    assert_out_of_memory("Predict", status.code(), status.message(), how);
    wait_restarted(&server, 2).await;

    // KServe ModelStreamInfer: that request's error, and the stream goes on.
    let mut answers = v2
        .model_stream_infer(futures::stream::iter(vec![
            infer_request(1024),
            infer_request(1),
        ]))
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().unwrap();
    assert_out_of_memory(
        "ModelStreamInfer",
        tonic::Code::Unavailable,
        &first.error_message,
        how,
    );
    wait_restarted(&server, 3).await;
    drop(answers);

    // And the hog serves again.
    let small = v2.model_infer(infer_request(1)).await;
    assert!(small.is_ok(), "{small:?}\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_its_rss_watchdog_stopped_is_out_of_memory_over_grpc() {
    let repo = tempfile::tempdir().unwrap();
    let (server, url, hog) =
        deployed_hog(repo.path(), "256Mi", &["--worker-cgroups", "false"]).await;
    assert_eq!(
        hog["enforcement"]["memory_limit"], "rlimit_and_watchdog",
        "{hog}"
    );
    let mut v2 = GrpcInferenceServiceClient::connect(url).await.unwrap();
    let status = v2.model_infer(infer_request(1024)).await.unwrap_err();
    assert_out_of_memory(
        "ModelInfer",
        status.code(),
        status.message(),
        "RSS watchdog stopped it past its memory limit (256Mi)",
    );
    drop(server);
}
