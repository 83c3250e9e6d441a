//! Issue 12, the response cache: per-model `[cache]` in config.toml, an in-process
//! tier and a Redis tier (a real `redis-server`, started per test). Black-box over
//! real sockets: REST (TF Serving, KServe V2, simple API) and gRPC (TF Serving,
//! KServe V2).

#[path = "../common/mod.rs"]
mod common;

mod bounds;
mod hits;
mod invalidation;
mod redis;

use common::eventually;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::{install_model, metric_value, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use ferroserve::tensor::{DataType, Tensor, TensorData};
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::InferInputTensor;
use ferroserve_proto::inference::{self as v2};
use ferroserve_proto::prost::Message;
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use ferroserve_proto::tensorflow::{
    tensor_shape_proto, DataType as Dt, TensorProto, TensorShapeProto,
};
use serde_json::{json, Value};

const IRIS_LR: &str = "examples/models/iris_lr/1/model.onnx";
const IRIS_DT: &str = "examples/models/iris_dt/1/model.onnx";
const ROW: [f32; 4] = [5.1, 3.5, 1.4, 0.2];
const CACHE_ON: &str = "[cache]\nenabled = true\n";
const FEATURES: &str =
    "feature_names = [\"sepal_length\", \"sepal_width\", \"petal_length\", \"petal_width\"]\n";

/// One REST answer: status, the `x-ferroserve-cache` header, the body's bytes.
#[derive(Debug)]
struct Answer {
    status: u16,
    cache: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn post(server: &TestServer, path: &str, body: &Value) -> Answer {
    let r = server
        .client
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    answer(r).await
}

async fn get(server: &TestServer, path: &str) -> Answer {
    answer(server.client.get(server.url(path)).send().await.unwrap()).await
}

async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-ferroserve-cache")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.bytes().await.unwrap().to_vec();
    Answer {
        status,
        cache,
        body,
    }
}

fn tfs_body(row: [f32; 4]) -> Value {
    json!({ "instances": [row] })
}

fn v2_body(row: [f32; 4]) -> Value {
    json!({ "id": "r1", "inputs": [{ "name": "input", "shape": [1, 4], "datatype": "FP32", "data": row }] })
}

async fn tfs_predict(server: &TestServer, model: &str, row: [f32; 4]) -> Answer {
    post(
        server,
        &format!("/v1/models/{model}:predict"),
        &tfs_body(row),
    )
    .await
}

async fn v2_infer(server: &TestServer, model: &str, row: [f32; 4]) -> Answer {
    post(server, &format!("/v2/models/{model}/infer"), &v2_body(row)).await
}

fn write_config(repo: &Path, model: &str, text: &str) {
    std::fs::write(repo.join(model).join("config.toml"), text).unwrap();
}

fn settings(repo: &Path) -> Settings {
    Settings {
        file_system_poll_wait: Duration::from_millis(100),
        ..test_settings(repo)
    }
}

/// The sum of the samples of metric `name` whose labels include all of `labels`.
async fn metric(server: &TestServer, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = server.scrape().await;
    metric_value(&text, name, labels)
}

/// Model runs of `model` version `version`: each run records one batch size.
async fn model_runs(server: &TestServer, model: &str, version: u64) -> f64 {
    metric(
        server,
        "ferroserve_batch_size_count",
        &[("model", model), ("version", &version.to_string())],
    )
    .await
}

fn tf_row(row: [f32; 4]) -> TensorProto {
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
        float_val: row.to_vec(),
        ..Default::default()
    }
}

fn tf_predict_request(model: &str, row: [f32; 4]) -> tfs::PredictRequest {
    tfs::PredictRequest {
        model_spec: Some(ModelSpec {
            name: model.into(),
            ..Default::default()
        }),
        inputs: [("input".to_string(), tf_row(row))].into(),
        ..Default::default()
    }
}

fn v2_raw_request(model: &str, row: [f32; 4]) -> v2::ModelInferRequest {
    v2::ModelInferRequest {
        model_name: model.into(),
        id: "g1".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![row.iter().flat_map(|x| x.to_le_bytes()).collect()],
        ..Default::default()
    }
}

fn grpc_cache<T>(r: &tonic::Response<T>) -> Option<String> {
    r.metadata()
        .get("x-ferroserve-cache")
        .map(|v| v.to_str().unwrap().to_string())
}
