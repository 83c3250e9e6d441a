//! The CLI client (issue 17): `ferroserve models …`, `upload`, `predict`, `status`
//! against a real server on 127.0.0.1:0, each exit code, `--token`; and
//! `serve --pid-file` with `stop --pid-file`.

#[path = "../common/mod.rs"]
mod common;

mod commands;
mod messages;
mod predict;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::child::{free_port, run_to_end, ChildServer};
use common::{install_model, root_path, test_settings, TestServer};
use ferroserve::settings::Settings;
use serde_json::Value;

const FEATURES: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

fn cli(server: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    c.args(args).args(["--server", server]);
    c
}

/// Runs the command off the async workers (the server answers on them).
async fn run(c: Command) -> (i32, String) {
    tokio::task::spawn_blocking(move || run_to_end(c))
        .await
        .unwrap()
}

/// The fixture's rows and scikit-learn's answers for them.
fn iris_expected() -> (Vec<Vec<f64>>, Vec<String>) {
    let e: Value = serde_json::from_str(
        &std::fs::read_to_string(root_path("examples/models/iris_sklearn/1/expected.json"))
            .unwrap(),
    )
    .unwrap();
    let rows = e["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    let labels = e["sklearn_predict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (rows, labels)
}

fn repo(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("models");
    install_model(
        &repo,
        "iris",
        1,
        &root_path("examples/models/iris_sklearn/1/model.joblib"),
    );
    std::fs::write(
        repo.join("iris/config.toml"),
        format!("feature_names = {FEATURES:?}\n"),
    )
    .unwrap();
    // A version that cannot load: requests to it are the server's failure (503).
    std::fs::create_dir_all(repo.join("broken/1")).unwrap();
    std::fs::write(repo.join("broken/1/model.onnx"), b"not an onnx file").unwrap();
    repo
}
