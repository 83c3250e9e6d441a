//! How a request's values meet the model's input dtype, on every protocol, over real
//! sockets: text among numbers for a numeric input is named as the value that is not
//! a number, wherever it stands (TF Serving REST carries no dtype, so the tensor's
//! type was once taken from its first value and the numbers were blamed), and a
//! tensor the client declared BOOL is refused for a numeric input (V2 REST, V2 gRPC,
//! TF Serving gRPC), as Triton and TF Serving refuse it, while JSON true and false,
//! which carry no dtype, stay 1 and 0.

mod common;

use std::collections::HashMap;

use common::{assert_error, install_model, root_path, TestServer};
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::model_infer_request::InferInputTensor;
use ferroserve_proto::inference::{self as v2, InferTensorContents};
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use ferroserve_proto::tensorflow::{
    tensor_shape_proto, DataType as Dt, TensorProto, TensorShapeProto,
};
use serde_json::json;
use tonic::Code;

/// iris_lr (one FP32 input `[-1, 4]`) and multi_io (FP32, FP64, INT32, INT64, BOOL
/// and BYTES inputs).
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
    dir
}

/// TF Serving REST: a string (or `{"b64": ...}`) among numbers for an FP32 input is
/// the value named as no FP32 value, first or last, in the row and the columnar
/// format and at any depth; where no input's dtype is known a mix is a mix,
/// whichever comes first. Numbers, NaN by name and true/false still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_rest_names_the_string_among_numbers() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let predict = "/v1/models/iris_lr:predict";
    let not_fp32 = |value: &str| {
        format!("{value} is not a valid FP32 value (the input \"input\" takes numbers)")
    };
    let cases = [
        (
            json!({"instances": [["5.1", 3.5, 1.4, 0.2]]}),
            "instances: ",
            not_fp32("\"5.1\""),
        ),
        (
            json!({"instances": [[1, 2, 3, "4"]]}),
            "instances: ",
            not_fp32("\"4\""),
        ),
        (
            json!({"instances": [[5.1, 3.5, 1.4, 0.2], [{"b64": "AAAA"}, 3.5, 1.4, 0.2]]}),
            "instances: ",
            not_fp32("{\"b64\":\"AAAA\"}"),
        ),
        (
            json!({"instances": [[{"b64": "AAAA"}, 3.5, 1.4, 0.2]]}),
            "instances: ",
            not_fp32("{\"b64\":\"AAAA\"}"),
        ),
        (
            json!({"inputs": {"input": [["5.1", 3.5, 1.4, 0.2]]}}),
            "input \"input\": ",
            not_fp32("\"5.1\""),
        ),
        (
            json!({"inputs": [["5.1", 3.5, 1.4, 0.2]]}),
            "inputs: ",
            not_fp32("\"5.1\""),
        ),
        (
            json!({"instances": [{"input": ["5.1", 3.5, 1.4, 0.2]}]}),
            "input \"input\": ",
            not_fp32("\"5.1\""),
        ),
        // Nested deeper than the model takes: the value is named all the same.
        (
            json!({"instances": [[[5.1, 3.5], ["1.4", 0.2]]]}),
            "instances: ",
            not_fp32("\"1.4\""),
        ),
    ];
    for (body, what, words) in cases {
        let (status, answer) = server.post_json(predict, &body).await;
        assert_error(status, &answer, 400, &format!("{what}{words}"));
    }
    // An input the model does not have: its dtype is not known, so a mix of numbers
    // and text is said as such, whichever comes first.
    for body in [
        json!({"inputs": {"input": [[5.1, 3.5, 1.4, 0.2]], "extra": ["a", 1]}}),
        json!({"inputs": {"input": [[5.1, 3.5, 1.4, 0.2]], "extra": [1, "a"]}}),
    ] {
        let (status, answer) = server.post_json(predict, &body).await;
        assert_error(
            status,
            &answer,
            400,
            "input \"extra\": mixes numbers with a string",
        );
    }
    // A model that is not served is still a 404 before its body's values are read.
    let (status, answer) = server
        .post_json(
            "/v1/models/nope:predict",
            &json!({"instances": [["5.1", 3.5]]}),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    for body in [
        json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        json!({"instances": [[5.1, "NaN", 1.4, 0.2]]}),
        json!({"instances": [[true, false, true, false]]}),
        json!({"inputs": {"input": [[1, 0, 1, 0]]}}),
    ] {
        let (status, answer) = server.post_json(predict, &body).await;
        assert_eq!(status, 200, "{body}: {answer}");
    }
    server.stop().await;
}

fn v2_rest_bool(data: serde_json::Value) -> serde_json::Value {
    json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BOOL", "data": data}]})
}

fn v2_input(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: Option<InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: HashMap::new(),
        contents,
    }
}

fn tf_shape(dims: &[i64]) -> Option<TensorShapeProto> {
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

/// multi_io's six inputs, one row each, with `i64` given as `i64`.
fn multi_io_tf_inputs(i64: TensorProto) -> HashMap<String, TensorProto> {
    let tensor = |dtype: Dt, dims: &[i64], fill: fn(&mut TensorProto)| {
        let mut t = TensorProto {
            dtype: dtype as i32,
            tensor_shape: tf_shape(dims),
            ..Default::default()
        };
        fill(&mut t);
        t
    };
    HashMap::from([
        (
            "f32".to_string(),
            tensor(Dt::DtFloat, &[1, 2], |t| t.float_val = vec![1.5, 2.0]),
        ),
        (
            "f64".to_string(),
            tensor(Dt::DtDouble, &[1], |t| t.double_val = vec![0.1]),
        ),
        (
            "i32".to_string(),
            tensor(Dt::DtInt32, &[1], |t| t.int_val = vec![-3]),
        ),
        ("i64".to_string(), i64),
        (
            "flag".to_string(),
            tensor(Dt::DtBool, &[1], |t| t.bool_val = vec![true]),
        ),
        (
            "text".to_string(),
            tensor(Dt::DtString, &[1], |t| {
                t.string_val = vec![b"setosa".to_vec()]
            }),
        ),
    ])
}

/// What a BOOL tensor for iris_lr's FP32 input is told: the input, BOOL and FP32.
const BOOL_FOR_FP32: &str =
    "input \"input\": the input takes FP32, and BOOL values are not numbers";

/// KServe V2 REST: `"datatype": "BOOL"` for an FP32 input is a 400 naming the input
/// and both dtypes (it was converted to 1 and 0); FP32 numbers pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v2_rest_refuses_a_bool_tensor_for_a_numeric_input() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    for data in [
        json!([[true, false, true, false]]),
        json!([true, false, true, false]),
    ] {
        let (status, answer) = server
            .post_json("/v2/models/iris_lr/infer", &v2_rest_bool(data))
            .await;
        assert_error(status, &answer, 400, BOOL_FOR_FP32);
    }
    let fp32 = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 0, 1, 0]}]});
    let (status, answer) = server.post_json("/v2/models/iris_lr/infer", &fp32).await;
    assert_eq!(status, 200, "{answer}");
    // The binary tensor data extension types its tensors too (tritonclient's
    // binary_data=True): four BOOL bytes.
    let header = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BOOL",
        "parameters": {"binary_data_size": 4}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&[1, 0, 1, 0]);
    let answer = reqwest::Client::new()
        .post(server.url("/v2/models/iris_lr/infer"))
        .header("inference-header-content-length", header.len().to_string())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_error(status, &answer, 400, BOOL_FOR_FP32);
    server.stop().await;
}

/// KServe V2 gRPC: a BOOL tensor, typed or raw, for an FP32 input is
/// INVALID_ARGUMENT naming the input and both dtypes; FP32 passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v2_grpc_refuses_a_bool_tensor_for_a_numeric_input() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut v2_client = GrpcInferenceServiceClient::new(server.grpc_channel().await);
    let typed = v2::ModelInferRequest {
        model_name: "iris_lr".into(),
        inputs: vec![v2_input(
            "input",
            "BOOL",
            &[1, 4],
            Some(InferTensorContents {
                bool_contents: vec![true, false, true, false],
                ..Default::default()
            }),
        )],
        ..Default::default()
    };
    let raw = v2::ModelInferRequest {
        inputs: vec![v2_input("input", "BOOL", &[1, 4], None)],
        raw_input_contents: vec![vec![1u8, 0, 1, 0].into()],
        ..typed.clone()
    };
    for (what, request) in [("typed", typed), ("raw", raw)] {
        let status = v2_client.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains(BOOL_FOR_FP32),
            "{what}: {status:?}"
        );
    }
    // The same numbers as FP32 pass.
    let ok = v2::ModelInferRequest {
        model_name: "iris_lr".into(),
        inputs: vec![v2_input(
            "input",
            "FP32",
            &[1, 4],
            Some(InferTensorContents {
                fp32_contents: vec![1.0, 0.0, 1.0, 0.0],
                ..Default::default()
            }),
        )],
        ..Default::default()
    };
    v2_client.model_infer(ok).await.unwrap();
    server.stop().await;
}

/// TF Serving gRPC: DT_BOOL for multi_io's INT64 input is INVALID_ARGUMENT naming
/// the input and both dtypes, as TF Serving refuses it; DT_INT64 passes, and an
/// INT64 tensor for iris_lr's FP32 input stays converted (README says so of V2 and
/// TF Serving gRPC alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tf_serving_grpc_refuses_a_bool_tensor_for_a_numeric_input() {
    let repo = repo();
    let server = TestServer::start(repo.path()).await;
    let mut tf_client = PredictionServiceClient::new(server.grpc_channel().await);
    let predict = |i64: TensorProto| tfs::PredictRequest {
        model_spec: Some(ModelSpec {
            name: "multi_io".into(),
            ..Default::default()
        }),
        inputs: multi_io_tf_inputs(i64),
        output_filter: vec![],
    };
    let bools = TensorProto {
        dtype: Dt::DtBool as i32,
        tensor_shape: tf_shape(&[1]),
        bool_val: vec![true],
        ..Default::default()
    };
    let status = tf_client.predict(predict(bools)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("input \"i64\": the input takes INT64, and BOOL values are not numbers"),
        "{status:?}"
    );
    let int64 = TensorProto {
        dtype: Dt::DtInt64 as i32,
        tensor_shape: tf_shape(&[1]),
        int64_val: vec![7],
        ..Default::default()
    };
    tf_client.predict(predict(int64)).await.unwrap();
    // An INT64 tensor for a float input is converted, as README says of V2.
    let ints_for_floats = tfs::PredictRequest {
        model_spec: Some(ModelSpec {
            name: "iris_lr".into(),
            ..Default::default()
        }),
        inputs: HashMap::from([(
            "input".to_string(),
            TensorProto {
                dtype: Dt::DtInt64 as i32,
                tensor_shape: tf_shape(&[1, 4]),
                int64_val: vec![5, 3, 1, 0],
                ..Default::default()
            },
        )]),
        output_filter: vec![],
    };
    tf_client.predict(ints_for_floats).await.unwrap();
    server.stop().await;
}
