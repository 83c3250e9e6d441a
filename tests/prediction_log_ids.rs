//! The prediction log's request id is the client's: a KServe V2 request's own `id`
//! (REST body, gRPC `ModelInferRequest.id`), else its `x-request-id` header or gRPC
//! metadata, is the id its row is stored under, and the answer of a logged request
//! tells it (`x-request-id` header / initial metadata). A request without one, or
//! with one the log cannot keep (empty, over 64 bytes, not visible ASCII), is logged
//! under a generated id of 32 hex digits, which its answer tells instead: the log
//! never fails a prediction. A model that does not log answers no `x-request-id`.

mod common;

use std::time::{Duration, Instant};

use common::{install_model, root_path, store_settings, TestServer};
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::InferInputTensor;
use ferroserve_proto::inference::{self as v2};
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use ferroserve_proto::tensorflow::{
    tensor_shape_proto, DataType as Dt, TensorProto, TensorShapeProto,
};
use serde_json::{json, Value};

const IRIS_LR: &str = "examples/models/iris_lr/1/model.onnx";
/// Logs every request.
const LOGGED: &str = "logged_lr";
/// Has no `[log]`.
const UNLOGGED: &str = "unlogged_lr";

/// A server with iris_lr as [`LOGGED`] (`sample_rate = 1.0`) and as [`UNLOGGED`].
async fn server() -> (tempfile::TempDir, TestServer) {
    let repo = tempfile::tempdir().unwrap();
    for model in [LOGGED, UNLOGGED] {
        install_model(repo.path(), model, 1, &root_path(IRIS_LR));
    }
    std::fs::write(
        repo.path().join(LOGGED).join("config.toml"),
        "[log]\nsample_rate = 1.0\n",
    )
    .unwrap();
    let server = TestServer::start_with(store_settings(repo.path(), None)).await;
    (repo, server)
}

/// A REST POST of `body` to `path` with the headers `headers`: the status, the
/// answer's `x-request-id` header, and the body.
async fn post(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Option<String>, Value) {
    let mut request = server.client.post(server.url(path)).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.json().await.unwrap();
    (status, id, body)
}

/// A one-row request's input, its first feature `first` (so that its row can be
/// told from the others).
fn row(first: f32) -> [f32; 4] {
    [first, 3.5, 1.4, 0.2]
}

fn tfs_body(first: f32) -> Value {
    json!({ "instances": [row(first)] })
}

fn v2_body(first: f32) -> Value {
    json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row(first)}]})
}

/// The row logged for `model` whose input's first feature is `first`, polled for
/// up to 10 s (the log is written in batches by a background task).
async fn logged_row(server: &TestServer, model: &str, first: f32) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = server
            .client
            .get(server.url(&format!(
                "/v1/models/{model}/predictions?format=jsonl&limit=1000"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let found = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|r| {
                let input = r["inputs"].as_object().unwrap().values().next().unwrap();
                input[0][0].as_f64() == Some(first as f64)
            });
        if let Some(found) = found {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no row with first feature {first} logged for {model} within 10 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn tf_predict_request(model: &str, first: f32) -> tfs::PredictRequest {
    tfs::PredictRequest {
        model_spec: Some(ModelSpec {
            name: model.into(),
            ..Default::default()
        }),
        inputs: [(
            "input".to_string(),
            TensorProto {
                dtype: Dt::DtFloat as i32,
                tensor_shape: Some(TensorShapeProto {
                    dim: [1, 4]
                        .iter()
                        .map(|&size| tensor_shape_proto::Dim {
                            size,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                float_val: row(first).to_vec(),
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    }
}

fn v2_infer_request(model: &str, id: &str, first: f32) -> v2::ModelInferRequest {
    v2::ModelInferRequest {
        model_name: model.into(),
        id: id.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![row(first).iter().flat_map(|x| x.to_le_bytes()).collect()],
        ..Default::default()
    }
}

fn grpc_request_id<T>(r: &tonic::Response<T>) -> Option<String> {
    r.metadata()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_request_is_stored_under_the_clients_id_and_told_it() {
    let (_repo, server) = server().await;

    // KServe V2 REST: the body's `id`, echoed in the body and in the header; the
    // body's id goes before the header's.
    let mut body = v2_body(1.0);
    body["id"] = json!("v2-body-id");
    let (status, id, answer) = post(
        &server,
        &format!("/v2/models/{LOGGED}/infer"),
        &[("x-request-id", "not-this-one")],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], "v2-body-id");
    assert_eq!(id.as_deref(), Some("v2-body-id"));
    assert_eq!(
        logged_row(&server, LOGGED, 1.0).await["request_id"],
        "v2-body-id"
    );

    // KServe V2 REST without a body id: the header's.
    let (status, id, answer) = post(
        &server,
        &format!("/v2/models/{LOGGED}/versions/1/infer"),
        &[("x-request-id", "v2-header-id")],
        &v2_body(2.0),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(id.as_deref(), Some("v2-header-id"));
    assert_eq!(
        logged_row(&server, LOGGED, 2.0).await["request_id"],
        "v2-header-id"
    );

    // TF Serving REST with x-request-id (a UUID, as proxies and meshes set it).
    let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let (status, id, answer) = post(
        &server,
        &format!("/v1/models/{LOGGED}:predict"),
        &[("x-request-id", uuid)],
        &tfs_body(3.0),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(id.as_deref(), Some(uuid));
    assert_eq!(logged_row(&server, LOGGED, 3.0).await["request_id"], uuid);

    // The simple API with x-request-id.
    let (status, id, answer) = post(
        &server,
        "/predict",
        &[("x-request-id", "simple-id")],
        &json!({"model_id": LOGGED, "features": row(4.0)}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(id.as_deref(), Some("simple-id"));
    assert_eq!(
        logged_row(&server, LOGGED, 4.0).await["request_id"],
        "simple-id"
    );

    // KServe gRPC: ModelInferRequest.id, before the metadata's.
    let mut kserve = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let mut request = tonic::Request::new(v2_infer_request(LOGGED, "grpc-v2-id", 5.0));
    request
        .metadata_mut()
        .insert("x-request-id", "not-this-one".parse().unwrap());
    let answer = kserve.model_infer(request).await.unwrap();
    assert_eq!(grpc_request_id(&answer).as_deref(), Some("grpc-v2-id"));
    assert_eq!(answer.get_ref().id, "grpc-v2-id");
    assert_eq!(
        logged_row(&server, LOGGED, 5.0).await["request_id"],
        "grpc-v2-id"
    );
    // KServe gRPC without an id: the metadata's.
    let mut request = tonic::Request::new(v2_infer_request(LOGGED, "", 6.0));
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-v2-metadata-id".parse().unwrap());
    let answer = kserve.model_infer(request).await.unwrap();
    assert_eq!(
        grpc_request_id(&answer).as_deref(),
        Some("grpc-v2-metadata-id")
    );
    assert_eq!(
        logged_row(&server, LOGGED, 6.0).await["request_id"],
        "grpc-v2-metadata-id"
    );

    // TF Serving gRPC with x-request-id metadata.
    let mut tf = PredictionServiceClient::new(server.grpc_channel().await);
    let mut request = tonic::Request::new(tf_predict_request(LOGGED, 7.0));
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-tfs-id".parse().unwrap());
    let answer = tf.predict(request).await.unwrap();
    assert_eq!(grpc_request_id(&answer).as_deref(), Some("grpc-tfs-id"));
    assert_eq!(
        logged_row(&server, LOGGED, 7.0).await["request_id"],
        "grpc-tfs-id"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_id_the_generated_one_is_told_and_a_model_that_does_not_log_tells_none() {
    let (_repo, server) = server().await;

    // REST, no id: the generated id, in the header and in the row.
    let (status, id, answer) = post(
        &server,
        &format!("/v1/models/{LOGGED}:predict"),
        &[],
        &tfs_body(1.0),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let id = id.expect("a logged request's answer has x-request-id");
    assert!(is_generated(&id), "{id}");
    assert_eq!(logged_row(&server, LOGGED, 1.0).await["request_id"], id);

    // gRPC, no id: the generated id in the initial metadata.
    let mut tf = PredictionServiceClient::new(server.grpc_channel().await);
    let answer = tf.predict(tf_predict_request(LOGGED, 2.0)).await.unwrap();
    let id = grpc_request_id(&answer).expect("a logged request's answer has x-request-id");
    assert!(is_generated(&id), "{id}");
    assert_eq!(logged_row(&server, LOGGED, 2.0).await["request_id"], id);

    // A model without [log]: no x-request-id, whether or not the client gave one.
    for headers in [&[][..], &[("x-request-id", "ignored")][..]] {
        let (status, id, answer) = post(
            &server,
            &format!("/v1/models/{UNLOGGED}:predict"),
            headers,
            &tfs_body(1.0),
        )
        .await;
        assert_eq!((status, id), (200, None), "{answer}");
        let mut body = v2_body(1.0);
        body["id"] = json!("kept-in-the-body");
        let (status, id, answer) = post(
            &server,
            &format!("/v2/models/{UNLOGGED}/infer"),
            headers,
            &body,
        )
        .await;
        assert_eq!((status, id), (200, None), "{answer}");
        assert_eq!(answer["id"], "kept-in-the-body");
    }
    let mut kserve = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let answer = kserve
        .model_infer(v2_infer_request(UNLOGGED, "g", 1.0))
        .await
        .unwrap();
    assert_eq!(grpc_request_id(&answer), None);
    assert_eq!(answer.get_ref().id, "g");

    server.stop().await;
}

/// An id the log cannot keep (over 64 bytes, the column's size; not visible
/// ASCII; empty) does not fail the prediction: it is logged under a generated
/// id, which the answer tells (so the client sees that its own was not used).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_the_log_cannot_keep_is_replaced_by_a_generated_one() {
    let (_repo, server) = server().await;
    let longest = "x".repeat(64);
    let (status, id, answer) = post(
        &server,
        &format!("/v1/models/{LOGGED}:predict"),
        &[("x-request-id", &longest)],
        &tfs_body(1.0),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(id.as_deref(), Some(longest.as_str()), "64 bytes are kept");
    assert_eq!(
        logged_row(&server, LOGGED, 1.0).await["request_id"],
        longest
    );

    let too_long = "y".repeat(65);
    for (first, header) in [(2.0, too_long.as_str()), (3.0, "with space"), (4.0, "")] {
        let (status, id, answer) = post(
            &server,
            &format!("/v1/models/{LOGGED}:predict"),
            &[("x-request-id", header)],
            &tfs_body(first),
        )
        .await;
        assert_eq!(status, 200, "{header:?}: {answer}");
        let id = id.expect("a logged request's answer has x-request-id");
        assert!(is_generated(&id), "{header:?}: {id}");
        assert_eq!(logged_row(&server, LOGGED, first).await["request_id"], id);
    }

    // A V2 body id that is not ASCII: the body echoes it; the log and the header
    // have the header's id, or a generated one without it.
    let mut body = v2_body(5.0);
    body["id"] = json!("café");
    let (status, id, answer) = post(
        &server,
        &format!("/v2/models/{LOGGED}/infer"),
        &[("x-request-id", "fallback-id")],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], "café");
    assert_eq!(id.as_deref(), Some("fallback-id"));
    assert_eq!(
        logged_row(&server, LOGGED, 5.0).await["request_id"],
        "fallback-id"
    );
    let mut body = v2_body(6.0);
    body["id"] = json!("z".repeat(65));
    let (status, id, answer) =
        post(&server, &format!("/v2/models/{LOGGED}/infer"), &[], &body).await;
    assert_eq!(status, 200, "{answer}");
    let id = id.expect("a logged request's answer has x-request-id");
    assert!(is_generated(&id), "{id}");
    assert_eq!(logged_row(&server, LOGGED, 6.0).await["request_id"], id);

    server.stop().await;
}

/// One tf.Example holding the whole row under the model's input name (iris_lr has
/// no feature names).
fn example(first: f32) -> ferroserve_proto::tensorflow::Example {
    use ferroserve_proto::tensorflow::{feature, Feature, Features, FloatList};
    ferroserve_proto::tensorflow::Example {
        features: Some(Features {
            feature: [(
                "input".to_string(),
                Feature {
                    kind: Some(feature::Kind::FloatList(FloatList {
                        value: row(first).to_vec(),
                    })),
                },
            )]
            .into(),
        }),
    }
}

fn examples_input(first: f32) -> Option<tfs::Input> {
    Some(tfs::Input {
        kind: Some(tfs::input::Kind::ExampleList(tfs::ExampleList {
            examples: vec![example(first)],
        })),
    })
}

/// Issue: TF Serving's classify (REST and gRPC, MultiInference too) was logged
/// under a generated id the client never learnt, whatever id it gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_is_logged_under_the_clients_id_and_told_it() {
    let (_repo, server) = server().await;
    let spec = || {
        Some(ModelSpec {
            name: LOGGED.into(),
            ..Default::default()
        })
    };

    // REST :classify, with and without x-request-id.
    let body = |first: f32| json!({"examples": [{"input": row(first)}]});
    let path = format!("/v1/models/{LOGGED}:classify");
    let (status, id, answer) = post(
        &server,
        &path,
        &[("x-request-id", "rest-classify")],
        &body(21.0),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(id.as_deref(), Some("rest-classify"));
    assert_eq!(
        logged_row(&server, LOGGED, 21.0).await["request_id"],
        "rest-classify"
    );
    let (status, id, answer) = post(&server, &path, &[], &body(22.0)).await;
    assert_eq!(status, 200, "{answer}");
    let id = id.expect("a logged classify's answer has x-request-id");
    assert!(is_generated(&id), "{id}");
    assert_eq!(logged_row(&server, LOGGED, 22.0).await["request_id"], id);

    // gRPC Classify with x-request-id metadata.
    let mut tf = PredictionServiceClient::new(server.grpc_channel().await);
    let mut request = tonic::Request::new(tfs::ClassificationRequest {
        model_spec: spec(),
        input: examples_input(23.0),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-classify".parse().unwrap());
    let answer = tf.classify(request).await.unwrap();
    assert_eq!(grpc_request_id(&answer).as_deref(), Some("grpc-classify"));
    assert_eq!(
        logged_row(&server, LOGGED, 23.0).await["request_id"],
        "grpc-classify"
    );

    // MultiInference without an id: its tasks' rows share the one id it tells.
    let task = |signature: &str| tfs::InferenceTask {
        model_spec: Some(ModelSpec {
            name: LOGGED.into(),
            signature_name: signature.into(),
            ..Default::default()
        }),
        method_name: "tensorflow/serving/classify".into(),
    };
    let answer = tf
        .multi_inference(tfs::MultiInferenceRequest {
            tasks: vec![task("")],
            input: examples_input(24.0),
        })
        .await
        .unwrap();
    let id = grpc_request_id(&answer).expect("a logged MultiInference has x-request-id");
    assert!(is_generated(&id), "{id}");
    assert_eq!(logged_row(&server, LOGGED, 24.0).await["request_id"], id);

    server.stop().await;
}
