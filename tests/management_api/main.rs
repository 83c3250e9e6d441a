//! The management REST API (upload, reload, status, deploy, stop, delete), the simple
//! `/predict` API, the KServe V2 repository extension and `/description`, black-box
//! over a real socket.
//!
//! `uploads`: uploads and what they race with; `lifecycle`: reload, status, stop,
//! deploy and delete; `simple`: the simple `/predict` API and `/description`.

#[path = "../common/mod.rs"]
mod common;

mod lifecycle;
mod simple;
mod uploads;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    example_onnx, install_model, root_path, test_settings, tree, unwatched_settings, TestServer,
};
use ferroserve::settings::Settings;
use serde_json::{json, Value};

const ROW: [f64; 4] = [5.1, 3.5, 1.4, 0.2];

async fn status_of(server: &TestServer, model: &str) -> Option<Value> {
    let (code, body) = server.get("/models/status").await;
    assert_eq!(code, 200, "{body}");
    body["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_id"] == model)
        .cloned()
}

async fn predict_version(server: &TestServer, model: &str) -> (u16, Value) {
    let (code, body) = server
        .post_json("/predict", &json!({"model_id": model, "features": ROW}))
        .await;
    (code, body)
}

fn error_text(body: &Value) -> String {
    body["error"].as_str().unwrap_or_default().to_string()
}
