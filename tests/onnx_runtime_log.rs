//! ONNX Runtime's own log lines go through the server's log: with
//! `--log-format json` every line of the server's output is a JSON object (ONNX
//! Runtime's default logger wrote coloured text to stderr, an error line for every
//! run the server ended at its deadline).

mod common;

use common::{install_model, root_path};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_lines_are_json_lines_too() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        "slow",
        1,
        &root_path("tests/fixtures/onnx/slow_loop/model.onnx"),
    );
    std::fs::write(repo.path().join("slow/config.toml"), "timeout_secs = 1\n").unwrap();
    let rest: std::net::SocketAddr = format!("127.0.0.1:{}", common::child::free_port())
        .parse()
        .unwrap();
    // Through `env`, so that the log level holds over the one the test helper sets:
    // ONNX Runtime's lines (target `onnxruntime`) down to debug.
    let mut command = std::process::Command::new("env");
    command
        .arg("FERROSERVE_LOG=info,onnxruntime=debug")
        .arg(env!("CARGO_BIN_EXE_ferroserve"))
        .arg("serve")
        .arg("--model-repository")
        .arg(repo.path())
        .args(["--rest-addr", &rest.to_string()])
        .args([
            "--grpc-addr",
            &format!("127.0.0.1:{}", common::child::free_port()),
        ])
        .args(["--worker-ports", "off", "--log-format", "json"]);
    let mut server = common::child::ChildServer::start(command, rest).await;
    // A loop far longer than the model's 1 s: the run is ended at its deadline.
    let body = json!({"inputs": [{"name": "n", "datatype": "INT64", "shape": [], "data": [2_000_000_000i64]}]});
    let r = reqwest::Client::new()
        .post(server.url("/v2/models/slow/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504, "{}", r.text().await.unwrap());
    server.terminate();
    assert_eq!(
        server.wait_exit(std::time::Duration::from_secs(30)),
        Some(0)
    );
    let log = server.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => v,
            _ => panic!("not a JSON object: {line:?}\n{log}"),
        })
        .collect();
    // The run ended at its deadline is ONNX Runtime's error, the server's doing and
    // answered as a timeout: a debug line of the target `onnxruntime`.
    let ended = lines
        .iter()
        .find(|l| l.to_string().contains("terminate flag"))
        .unwrap_or_else(|| panic!("no line of the run ended: {log}"));
    assert_eq!(ended["target"], "onnxruntime", "{ended}");
    assert_eq!(ended["level"], "DEBUG", "{ended}");
}
