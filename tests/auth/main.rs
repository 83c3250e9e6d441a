//! Access control (issue 10) over real sockets: bearer tokens with scopes on REST
//! and gRPC, the tokens file edited while serving, the loopback-only default for
//! management, cross-site browser requests, `/metrics` behind a token, and model
//! base paths outside the allowed roots.

#[path = "../common/mod.rs"]
mod common;

mod refusals;
mod tokens;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use common::child::{free_port, run_to_end, ChildServer};
use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::auth::{to_hex, token_sha256};
use ferroserve::settings::Settings;
use ferroserve_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use ferroserve_proto::inference::{self as v2};
use ferroserve_proto::tensorflow::serving::model_service_client::ModelServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;
use tower::ServiceExt;

const CI: &str = "fst_ci-token-with-inference-and-management";
const READER: &str = "fst_reader-token-with-inference-only";
const PROM: &str = "fst_prometheus-token-with-metrics-only";

fn entry(name: &str, token: &str, scopes: &str) -> String {
    format!(
        "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{scopes}]\n",
        to_hex(&token_sha256(token))
    )
}

fn tokens_text() -> String {
    entry("ci", CI, "\"inference\", \"management\"")
        + &entry("reader", READER, "\"inference\"")
        + &entry("prom", PROM, "\"metrics\"")
}

/// A repository with iris_lr and iris_dt (ONNX), plus a tokens file beside it.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for m in ["iris_lr", "iris_dt"] {
        install_model(
            &models,
            m,
            1,
            &root_path(&format!("examples/models/{m}/1/model.onnx")),
        );
    }
    std::fs::write(dir.path().join("tokens.toml"), tokens_text()).unwrap();
    dir
}

fn settings_with_tokens(dir: &Path) -> Settings {
    Settings {
        auth_tokens: Some(dir.join("tokens.toml")),
        metrics_require_token: true,
        ..test_settings(&dir.join("models"))
    }
}

const IRIS_ROW: [f32; 4] = [5.1, 3.5, 1.4, 0.2];

/// Sends a request with an optional bearer token; answers status and JSON body.
async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = server.client.request(method, server.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

fn predict_body() -> Value {
    json!({ "instances": [IRIS_ROW] })
}
