//! Management calls racing on one model, as schemathesis sends them: several clients
//! at once upload, delete, reload, stop, deploy, load and unload through the V2
//! repository API, predict and read the status of the same model, on a server that
//! deploys in-process and on one that deploys into worker processes. Every answer is
//! one its route documents (never a 500: an upload whose model a delete took away
//! answered 500 until it was fixed), the server keeps answering, and what is left on
//! disk is whole: no staging or trash directory, each version directory one complete
//! model file.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::child::{free_port, ChildServer};
use common::{example_onnx, install_model, root_path, test_settings, tree, TestServer};
use ferroserve::settings::Settings;
use serde_json::{json, Value};

const MODEL: &str = "m";
const CLIENTS: u64 = 4;
const CALLS_PER_CLIENT: usize = 40;

/// Where the server under test answers: `http://127.0.0.1:PORT`.
struct Server {
    base: String,
    client: reqwest::Client,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn upload(&self, file: &str) -> reqwest::Response {
        let form = reqwest::multipart::Form::new()
            .text("model_id", MODEL)
            .part(
                "file",
                reqwest::multipart::Part::bytes(example_onnx(file)).file_name("m.onnx"),
            );
        let r = self.client.post(self.url("/upload_model")).multipart(form);
        r.send().await.unwrap()
    }
}

/// One management or predict call on [`MODEL`]: its name, status and error message
/// (empty when it succeeded).
async fn call(server: &Server, which: u32, rng: &mut fastrand::Rng) -> (&'static str, u16, String) {
    use reqwest::Method;
    let send = |method: Method, path: &str, body: Option<Value>| {
        let mut r = server.client.request(method, server.url(path));
        if let Some(body) = body {
            r = r.json(&body);
        }
        r.send()
    };
    let response = match which {
        0 | 1 => {
            let file = if rng.bool() { "iris_lr" } else { "iris_dt" };
            Ok(server.upload(file).await)
        }
        2 => send(Method::DELETE, "/delete_model/m", None).await,
        3 => send(Method::POST, "/reload_model?modelname=m", None).await,
        4 => send(Method::POST, "/stop_deployment/m", None).await,
        5 => {
            let body = json!({"model_id": MODEL, "resources": {"timeout": 5}});
            send(Method::POST, "/deploy", Some(body)).await
        }
        6 => send(Method::POST, "/v2/repository/models/m/load", None).await,
        7 => send(Method::POST, "/v2/repository/models/m/unload", None).await,
        8 => {
            let body = json!({"model_id": MODEL, "features": [5.1, 3.5, 1.4, 0.2]});
            send(Method::POST, "/predict", Some(body)).await
        }
        _ => send(Method::GET, "/models/status", None).await,
    }
    .unwrap();
    let name = [
        "upload", "upload", "delete", "reload", "stop", "deploy", "load", "unload", "predict",
        "status",
    ][which as usize];
    let code = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{name}: {code} answered with a body that is not JSON: {text}"));
    assert_json_error(code, &body, name);
    (name, code, error_of(&body))
}

fn error_of(body: &Value) -> String {
    body["error"].as_str().unwrap_or_default().to_string()
}

/// An error answer is JSON with a message.
fn assert_json_error(code: u16, body: &Value, name: &str) {
    if code >= 400 {
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{name}: {code} without an error message: {body}"
        );
    }
}

/// Sends the calls from [`CLIENTS`] clients at once, then checks every answer against
/// what its route documents (`extra` adds statuses a setup may answer) and the
/// repository on disk; the model serves again after.
async fn race(server: &Server, repo: &Path, extra: &[(&str, u16)]) {
    let clients = (0..CLIENTS).map(|seed| async move {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut seen = Vec::new();
        for _ in 0..CALLS_PER_CLIENT {
            let which = rng.u32(0..10);
            seen.push(call(server, which, &mut rng).await);
        }
        seen
    });
    // How often each call answered each status, and one error message of each.
    let mut answers: BTreeMap<(&str, u16), (usize, String)> = BTreeMap::new();
    for seen in futures::future::join_all(clients).await {
        for (name, code, error) in seen {
            // A deploy answers 404 only for a model that was not in the repository
            // when it ran; its answer is read under the model's lock, so a delete
            // right after a deployment cannot make that deployment a 404.
            if name == "deploy" && code == 404 {
                assert!(
                    error.contains("in the model repository"),
                    "deploy 404: {error}"
                );
            }
            let entry = answers.entry((name, code)).or_default();
            entry.0 += 1;
            entry.1 = error;
        }
    }
    // What each route documents for a well-formed call on a model that may or may
    // not exist, be stopped or be loading at that moment.
    let documented: &[(&str, &[u16])] = &[
        ("upload", &[200, 409]),
        ("delete", &[200, 404, 409]),
        ("reload", &[200, 404]),
        ("stop", &[200, 404, 409]),
        ("deploy", &[200, 404, 409, 503]),
        ("load", &[200, 404, 409, 503]),
        ("unload", &[200, 404, 409]),
        ("predict", &[200, 404, 503]),
        ("status", &[200]),
    ];
    for (&(name, code), (count, error)) in &answers {
        let allowed = documented.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(
            allowed.contains(&code) || extra.contains(&(name, code)),
            "{name} answered {code} ({count} times, {error:?}); all answers: {answers:?}"
        );
    }
    // Both kinds of call happened, or the race tested little.
    assert!(answers.contains_key(&("upload", 200)), "{answers:?}");
    assert!(answers.contains_key(&("delete", 200)), "{answers:?}");

    // Whole on disk: no staging or trash left, each version one complete model.
    let lr = example_onnx("iris_lr");
    let dt = example_onnx("iris_dt");
    for path in tree(repo) {
        assert!(!path.contains(".tmp"), "left behind: {path}");
        if let Some(file) = path.strip_suffix("model.onnx") {
            let stored = std::fs::read(repo.join(&path)).unwrap();
            assert!(stored == lr || stored == dt, "{file} holds a partial model");
        }
    }
    // And the model can be made to serve again: reload (it may be stopped) or upload.
    let r = server.client.post(server.url("/reload_model?modelname=m"));
    r.send().await.unwrap();
    let r = server.upload("iris_lr").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let row = json!({"model_id": MODEL, "features": [5.1, 3.5, 1.4, 0.2]});
    let r = server.client.post(server.url("/predict")).json(&row);
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_management_calls_on_one_model_answer_as_documented_and_leave_it_whole() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        MODEL,
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let server = TestServer::start_with(Settings {
        // The watcher on, polling often: it races with the calls too.
        file_system_poll_wait: Duration::from_millis(20),
        // Deployments in-process here; into worker processes in the test below.
        worker_ports: None,
        ..test_settings(repo.path())
    })
    .await;
    let target = Server {
        base: server.base.clone(),
        client: server.client.clone(),
    };
    race(&target, repo.path(), &[]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_management_calls_with_worker_deployments_answer_as_documented() {
    let repo = tempfile::tempdir().unwrap();
    install_model(
        repo.path(),
        MODEL,
        1,
        &root_path("examples/models/iris_lr/1/model.onnx"),
    );
    let rest: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (first_worker_port, _) = common::child::worker_ports(8);
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferroserve"));
    command
        .arg("serve")
        .arg("--model-repository")
        .arg(repo.path())
        .arg("--rest-addr")
        .arg(rest.to_string())
        .arg("--grpc-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--worker-ports")
        .arg(format!("{first_worker_port}-{}", first_worker_port + 7))
        .arg("--file-system-poll-wait-seconds")
        .arg("0.02")
        .arg("--inference-threads")
        .arg("1");
    let mut server = ChildServer::start(command, rest).await;
    let target = Server {
        base: format!("http://{rest}"),
        client: reqwest::Client::new(),
    };
    race(&target, repo.path(), &[]).await;
    server.terminate();
    assert_eq!(
        server.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        server.log()
    );
}
