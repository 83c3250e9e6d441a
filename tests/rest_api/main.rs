//! Black-box tests of the TF Serving and KServe V2 REST APIs over a real socket,
//! compared with what scikit-learn and onnxruntime-Python gave for the same rows
//! (the `expected.json` files written by `python/make_onnx_models.py`).

#[path = "../common/mod.rs"]
mod common;

mod examples;
mod tf_serving;
mod v2;

use common::{
    assert_close, assert_error, install_model, raw_post, root_path, timeless, TestServer,
};
use serde_json::{json, Value};

fn expected(rel: &str) -> Value {
    let text = std::fs::read_to_string(root_path(rel)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A repository with the two example models and the test fixtures.
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

fn f64s(v: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            other => out.push(other.as_f64().unwrap()),
        }
    }
    walk(v, &mut out);
    out
}

/// POSTs a V2 infer body in the binary tensor data extension: `header`'s JSON,
/// then `blobs` in order.
async fn post_v2_binary(
    server: &TestServer,
    path: &str,
    header: &Value,
    blobs: &[&[u8]],
) -> reqwest::Response {
    let header = header.to_string();
    let mut body = header.clone().into_bytes();
    for blob in blobs {
        body.extend_from_slice(blob);
    }
    server
        .client
        .post(server.url(path))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A binary V2 answer: its JSON part, and the bytes after it.
async fn binary_answer(r: reqwest::Response) -> (Value, Vec<u8>) {
    let json_len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let doc: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    (doc, bytes[json_len..].to_vec())
}
