//! ONNX tensors declared without a shape (unknown rank), which ONNX Runtime runs with
//! any shape, over KServe V2 REST, TF Serving REST and both metadata APIs; and real
//! scalars (a shape with no dimensions), which stay scalars. Expected outputs are
//! onnxruntime-Python's (`tests/fixtures/onnx/{any_rank,scalar}/expected.json`, written
//! by `python/make_onnx_models.py --only any_rank,scalar`).
//!
//! ONNX Runtime reports an unknown rank as no dimensions, like a scalar's: such a
//! tensor was taken for a scalar, and every request of another shape was refused
//! ("has shape [1, 2, 1], but the model takes []").

mod common;

use std::sync::Arc;

use common::{data_of, install_model, nest, root_path, shape_of, TestServer};
use serde_json::{json, Value};

fn expected(model: &str) -> Value {
    let path = root_path(&format!("tests/fixtures/onnx/{model}/expected.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A repository with the fixture `model` as version 1, and `config` as its
/// `config.toml` when given.
fn repo(model: &str, config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    install_model(
        dir.path(),
        model,
        1,
        &root_path(&format!("tests/fixtures/onnx/{model}/model.onnx")),
    );
    if let Some(config) = config {
        std::fs::write(dir.path().join(model).join("config.toml"), config).unwrap();
    }
    dir
}

/// A tensor of `expected.json` as nested JSON, as TF Serving REST writes it.
fn nested(t: &Value) -> Value {
    nest(data_of(t), &shape_of(t))
}

/// One case over V2 REST: its shape and values in, each output's shape and values
/// (onnxruntime's, exactly: they are small floats) out.
async fn check_v2(server: &TestServer, model: &str, case: &Value) {
    let inputs: Vec<Value> = case["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, t)| json!({"name": name, "datatype": "FP32", "shape": t["shape"], "data": t["data"]}))
        .collect();
    let (status, body) = server
        .post_json(
            &format!("/v2/models/{model}/infer"),
            &json!({ "inputs": inputs }),
        )
        .await;
    assert_eq!(status, 200, "{model} V2 {case}: {body}");
    let outputs = body["outputs"].as_array().unwrap();
    for (name, want) in case["outputs"].as_object().unwrap() {
        let got = outputs
            .iter()
            .find(|o| o["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{model} V2: no output {name}: {body}"));
        assert_eq!(got["shape"], want["shape"], "{model} V2 {name}: {body}");
        assert_eq!(got["data"], want["data"], "{model} V2 {name}: {body}");
    }
}

/// One case over TF Serving REST, columnar: each output nested as onnxruntime's.
async fn check_columnar(server: &TestServer, model: &str, case: &Value) {
    let inputs: serde_json::Map<String, Value> = case["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, t)| (name.clone(), nested(t)))
        .collect();
    let (status, body) = server
        .post_json(
            &format!("/v1/models/{model}:predict"),
            &json!({ "inputs": inputs }),
        )
        .await;
    assert_eq!(status, 200, "{model} columnar {case}: {body}");
    let outputs = case["outputs"].as_object().unwrap();
    for (name, want) in outputs {
        let got = if outputs.len() == 1 {
            &body["outputs"]
        } else {
            &body["outputs"][name]
        };
        assert_eq!(got, &nested(want), "{model} columnar {name}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onnx_tensor_of_unknown_rank_takes_every_shape() {
    let repo = repo("any_rank", None);
    let server = TestServer::start(repo.path()).await;
    let exp = expected("any_rank");
    let cases = exp["cases"].as_array().unwrap();
    let ranks: Vec<usize> = cases
        .iter()
        .map(|c| shape_of(&c["inputs"]["x"]).len())
        .collect();
    assert_eq!(ranks, [0, 1, 3, 2]);
    for case in cases {
        check_v2(&server, "any_rank", case).await;
        check_columnar(&server, "any_rank", case).await;
    }

    // The row format: each instance one row of x. [3.0, 4.0] is x of shape [2].
    let (status, body) = server
        .post_json(
            "/v1/models/any_rank:predict",
            &json!({"instances": [3.0, 4.0]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["predictions"],
        json!([{"y": 6.0, "squeezed": 3.0}, {"y": 8.0, "squeezed": 4.0}]),
        "{body}"
    );

    // A rank far past any model's still reaches ONNX Runtime, and the server goes on.
    let request =
        json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": vec![1; 40], "data": [2.5]}]});
    let (status, body) = server
        .post_json("/v2/models/any_rank/infer", &request)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!(vec![1; 40]), "{body}");

    // TF Serving metadata: no dimensions, unknown_rank, on the input and both outputs.
    let (status, body) = server.get("/v1/models/any_rank/metadata").await;
    assert_eq!(status, 200, "{body}");
    let def = &body["metadata"]["signature_def"]["signature_def"]["serving_default"];
    let unknown = json!({"dim": [], "unknown_rank": true});
    assert_eq!(def["inputs"]["x"]["tensor_shape"], unknown, "{def}");
    for output in ["y", "squeezed"] {
        assert_eq!(def["outputs"][output]["tensor_shape"], unknown, "{def}");
    }
    // V2 has no unknown rank: one dimension of any size, as for TensorFlow's.
    let (status, v2) = server.get("/v2/models/any_rank").await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["inputs"][0]["shape"], json!([-1]), "{v2}");
    for output in v2["outputs"].as_array().unwrap() {
        assert_eq!(output["shape"], json!([-1]), "{v2}");
    }
    server.stop().await;
}

/// With batching on, requests of unknown rank are not merged (nothing says their
/// first dimension is the batch): each gets its own answer, of its own shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnx_requests_of_unknown_rank_are_not_batched_together() {
    let repo = repo(
        "any_rank",
        Some("[batching]\nenabled = true\nmax_batch_size = 8\nmax_queue_delay_micros = 200000\n"),
    );
    let server = Arc::new(TestServer::start(repo.path()).await);
    let exp = expected("any_rank");
    let cases: Vec<Value> = exp["cases"].as_array().unwrap().clone();
    let tasks: Vec<_> = cases
        .into_iter()
        .map(|case| {
            let server = server.clone();
            tokio::spawn(async move { check_v2(&server, "any_rank", &case).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    Arc::into_inner(server).unwrap().stop().await;
}

/// A tensor declared with a shape of no dimensions is a scalar, and stays one: a
/// scalar is taken, anything else is refused before ONNX Runtime sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onnx_scalar_stays_a_scalar() {
    let repo = repo("scalar", None);
    let server = TestServer::start(repo.path()).await;
    let exp = expected("scalar");
    for case in exp["cases"].as_array().unwrap() {
        assert!(shape_of(&case["inputs"]["s"]).is_empty(), "{case}");
        check_v2(&server, "scalar", case).await;
        check_columnar(&server, "scalar", case).await;
    }
    let request =
        json!({"inputs": [{"name": "s", "datatype": "FP32", "shape": [1], "data": [1.0]}]});
    let (status, body) = server.post_json("/v2/models/scalar/infer", &request).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("the model takes []"), "{message}");
    let (status, body) = server
        .post_json(
            "/v1/models/scalar:predict",
            &json!({"instances": [1.0, 2.0]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = server.get("/v1/models/scalar/metadata").await;
    assert_eq!(status, 200, "{body}");
    let def = &body["metadata"]["signature_def"]["signature_def"]["serving_default"];
    let scalar = json!({"dim": [], "unknown_rank": false});
    assert_eq!(def["inputs"]["s"]["tensor_shape"], scalar, "{def}");
    assert_eq!(def["outputs"]["doubled"]["tensor_shape"], scalar, "{def}");
    let (status, v2) = server.get("/v2/models/scalar").await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["inputs"][0]["shape"], json!([]), "{v2}");
    assert_eq!(v2["outputs"][0]["shape"], json!([]), "{v2}");
    server.stop().await;
}
