//! TensorFlow SavedModels (issue 16) over every API, against the outputs TensorFlow
//! itself gave for the same inputs (`tests/fixtures/tensorflow/<model>/expected.json`,
//! written by `python/make_tf_models.py`).
//!
//! The TensorFlow libraries come from `FERROSERVE_TENSORFLOW_PATH`, else from the
//! `.venv-tf` environment `scripts/setup.sh` makes.

#[path = "../common/mod.rs"]
mod common;

mod apis;
mod classify;
mod loading;
mod runs;
mod warmup;

// Helpers one module writes and others use too.
use apis::{check_rest, from_proto, proto_shape};
use classify::spec;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    assert_close, copy_dir, data_of, nest, root_path, shape_of, tensorflow_dir, test_settings,
    TestServer,
};
use ferroserve::settings::Settings;
use ferroserve_proto::prost::Message;
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use ferroserve_proto::tensorflow::{
    tensor_shape_proto, DataType as Dt, TensorProto, TensorShapeProto,
};
use serde_json::{json, Value};

const FIXTURES: [&str; 4] = ["mlp", "cnn", "multi", "text"];

/// A repository with the fixture SavedModels as version 1 of models of their names.
fn repo(models: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in models {
        copy_dir(
            &root_path(&format!("tests/fixtures/tensorflow/{m}/1")),
            &dir.path().join(m).join("1"),
        );
    }
    dir
}

fn settings(repo: &Path) -> Settings {
    Settings {
        tensorflow_path: Some(tensorflow_dir()),
        ..test_settings(repo)
    }
}

fn expected(model: &str) -> Value {
    let text = std::fs::read_to_string(root_path(&format!(
        "tests/fixtures/tensorflow/{model}/expected.json"
    )))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn flatten(v: &Value, into: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, into)),
        other => into.push(other.clone()),
    }
}

/// Asserts flat values equal TensorFlow's: floats within 1e-6 relative or, near 0,
/// 1e-6 absolute (numpy's `rtol=1e-6, atol=1e-6`, as the Python package's tests
/// check the same fixtures), the rest exactly. TensorFlow's oneDNN kernels sum a
/// convolution in an order that depends on the CPU, so a small logit made of
/// terms near 0.5 moves by a few of their float32 steps: the cnn's first logit
/// is -0.012931883 on an AMD EPYC against the -0.0129318638 recorded (on an Intel
/// Xeon), 1.5e-6 relative, 2e-8 absolute.
fn assert_values(actual: &[Value], want: &Value, what: &str) {
    let data = data_of(want);
    assert_eq!(actual.len(), data.len(), "{what}: {actual:?} vs {data:?}");
    let float = want["dtype"].as_str().unwrap().starts_with("float");
    for (i, (a, e)) in actual.iter().zip(data).enumerate() {
        if float {
            let (a, e) = (a.as_f64().unwrap(), e.as_f64().unwrap());
            if (a - e).abs() > 1e-6 {
                assert_close(a, e, 1e-6, &format!("{what}[{i}]"));
            }
        } else {
            assert_eq!(a, e, "{what}[{i}]");
        }
    }
}

fn assert_nested(actual: &Value, want: &Value, what: &str) {
    let mut flat = Vec::new();
    flatten(actual, &mut flat);
    assert_values(&flat, want, what);
}

fn object<'a>(v: &'a Value, what: &str) -> &'a serde_json::Map<String, Value> {
    v.as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {v}"))
}

/// Polls a model's version status until it leaves loading, with a deadline.
async fn settled_status(server: &TestServer, model: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server.get(&format!("/v1/models/{model}")).await;
        if status == 200 {
            let v = &body["model_version_status"][0];
            if matches!(v["state"].as_str(), Some("AVAILABLE" | "ERROR" | "END")) {
                return v.clone();
            }
        }
        assert!(Instant::now() < deadline, "{model} did not settle: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The versions of `model` the server serves now.
async fn served_versions(server: &TestServer, model: &str) -> Vec<u64> {
    let (_, body) = server.get(&format!("/v1/models/{model}")).await;
    let mut versions: Vec<u64> = body["model_version_status"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|v| v["state"] == "AVAILABLE")
                .map(|v| v["version"].as_str().unwrap().parse().unwrap())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
}

/// A ferroserve process (the real binary: `main` decides TensorFlow's environment)
/// serving `repo`, with `TF_ENABLE_ONEDNN_OPTS` left as the user would leave it.
async fn child_server(repo: &Path) -> common::child::ChildServer {
    use common::child::{free_port, ChildServer};
    let rest: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    command
        .arg("serve")
        .arg("--model-repository")
        .arg(repo)
        .args(["--rest-addr", &rest.to_string()])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .env("FERROSERVE_TENSORFLOW_PATH", tensorflow_dir())
        .env_remove("TF_ENABLE_ONEDNN_OPTS");
    ChildServer::start(command, rest).await
}
