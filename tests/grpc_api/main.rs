//! Black-box tests of the gRPC APIs (TF Serving PredictionService / ModelService,
//! KServe V2 GRPCInferenceService, grpc.health.v1) over a real socket with the
//! generated clients, compared with onnxruntime-Python's outputs (`expected.json`)
//! and with the REST answer for the same input.
//!
//! `tf_serving`: TF Serving's PredictionService and ModelService; `kserve`: KServe V2's
//! GRPCInferenceService; `health`: grpc.health.v1 and the model status calls;
//! `across`: what every protocol must agree on (scalars, message sizes, deadlines).

#[path = "../common/mod.rs"]
mod common;

mod across;
mod health;
mod kserve;
mod tf_serving;

use std::collections::HashMap;
use std::time::Duration;

use common::{assert_close, install_model, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use ferroserve_proto::inference::{self as v2, InferTensorContents};
use ferroserve_proto::prost::Message;
use ferroserve_proto::tensorflow::serving::model_service_client::ModelServiceClient;
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec, SIGNATURE_DEF_MAP_TYPE_URL};
use ferroserve_proto::tensorflow::{
    self as tf, tensor_shape_proto, DataType as Dt, TensorProto, TensorShapeProto,
};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn expected(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root_path(rel)).unwrap()).unwrap()
}

/// The example models and the test fixtures; iris_lr also gets version 2 and labels.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in ["iris_lr", "iris_dt"] {
        install_model(
            dir.path(),
            m,
            1,
            &root_path(&format!("examples/models/{m}/1/model.onnx")),
        );
    }
    install_model(
        dir.path(),
        "iris_lr",
        2,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    std::fs::write(
        dir.path().join("iris_lr/config.toml"),
        "version_policy = \"all\"\nfeature_names = [\"sl\", \"sw\", \"pl\", \"pw\"]\n[labels]\nstable = 1\ncanary = 2\n",
    )
    .unwrap();
    for m in ["iris_str", "diabetes_f64", "multi_io"] {
        install_model(
            dir.path(),
            m,
            1,
            &root_path(&format!("tests/fixtures/onnx/{m}/model.onnx")),
        );
    }
    dir
}

fn expected_rows(exp: &Value) -> Vec<Vec<f32>> {
    exp["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
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

fn float_tensor(rows: &[Vec<f32>]) -> TensorProto {
    TensorProto {
        dtype: Dt::DtFloat as i32,
        tensor_shape: shape(&[rows.len() as i64, rows[0].len() as i64]),
        float_val: rows.concat(),
        ..Default::default()
    }
}

fn spec(name: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: name.into(),
        ..Default::default()
    })
}

fn predict_request(spec: Option<ModelSpec>, input: TensorProto) -> tfs::PredictRequest {
    tfs::PredictRequest {
        model_spec: spec,
        inputs: HashMap::from([("input".to_string(), input)]),
        output_filter: vec![],
    }
}

fn v2_input(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: InferTensorContents,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: HashMap::new(),
        contents: Some(contents),
    }
}

fn infer_request(model: &str, inputs: Vec<InferInputTensor>) -> v2::ModelInferRequest {
    v2::ModelInferRequest {
        model_name: model.into(),
        inputs,
        ..Default::default()
    }
}

fn f32_contents(rows: &[Vec<f32>]) -> InferTensorContents {
    InferTensorContents {
        fp32_contents: rows.concat(),
        ..Default::default()
    }
}
