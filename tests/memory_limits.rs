//! One request must not take gigabytes (issue 10): the server runs as a child
//! process under an address-space limit (`prlimit --as`), and requests that used to
//! multiply their size into gigabytes (one output named thousands of times, millions
//! of rows, a broadcast `float_val`) must be refused with a clear error, never abort
//! the process. After each, an ordinary prediction still answers.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::child::free_port;
use common::{install_model, root_path};
use ferroserve_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use ferroserve_proto::tensorflow::serving::{self as tfs, ModelSpec};
use ferroserve_proto::tensorflow::{
    tensor_shape_proto, DataType as Dt, TensorProto, TensorShapeProto,
};
use serde_json::{json, Value};

/// 3 GiB of address space: the server idles at about 0.8 GiB of it (thread stacks,
/// allocator arenas, ONNX Runtime), and each attack below needs well over 3 GiB when
/// it is not bounded.
const ADDRESS_SPACE_LIMIT: u64 = 3 << 30;

struct LimitedServer {
    child: Child,
    rest: String,
    grpc: String,
    client: reqwest::Client,
    _repo: tempfile::TempDir,
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        // Only the process this test started, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LimitedServer {
    async fn start() -> LimitedServer {
        let repo = tempfile::tempdir().unwrap();
        install_model(
            repo.path(),
            "iris_lr",
            1,
            &root_path("examples/models/iris_lr/1/model.onnx"),
        );
        let (rest_port, grpc_port) = (free_port(), free_port());
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--as={ADDRESS_SPACE_LIMIT}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_ferroserve"))
            .args(["serve", "--model-repository"])
            .arg(repo.path())
            .args(["--rest-addr", &format!("127.0.0.1:{rest_port}")])
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(["--inference-threads", "2"])
            .env("FERROSERVE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(ort) = common::onnxruntime_path() {
            command.env("ORT_DYLIB_PATH", ort);
        }
        let child = command
            .spawn()
            .expect("prlimit (util-linux) runs the server");
        let server = LimitedServer {
            child,
            rest: format!("http://127.0.0.1:{rest_port}"),
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            _repo: repo,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = server
                .client
                .get(format!("{}/v2/health/ready", server.rest))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false);
            if ready {
                return server;
            }
            assert!(Instant::now() < deadline, "server not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server is still running and answers an ordinary prediction.
    async fn assert_alive(&mut self, after: &str) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the server died after {after}"
        );
        let r = self
            .client
            .post(format!("{}/v1/models/iris_lr:predict", self.rest))
            .json(&json!({ "instances": [[5.1, 3.5, 1.4, 0.2]] }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("no answer after {after}: {e}"));
        assert_eq!(r.status(), 200, "after {after}");
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.rest))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

fn rows_json(rows: usize) -> String {
    let mut s = String::with_capacity(rows * 22);
    for i in 0..rows {
        if i > 0 {
            s.push(',');
        }
        s.push_str("[5.1,3.5,1.4,0.2]");
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_multiply_their_size_are_refused_under_a_memory_limit() {
    let mut server = LimitedServer::start().await;
    server.assert_alive("start").await;

    // V2 REST: 2,000 rows and one output named 20,000 times would answer 40 million
    // copies of the probabilities (gigabytes of JSON).
    let mut body = format!(
        r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[2000,4],"data":[{}]}}],"outputs":["#,
        rows_json(2000)
    );
    for i in 0..20_000 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r#"{"name":"probabilities"}"#);
    }
    body.push_str("]}");
    let (status, answer) = server
        .post("/v2/models/iris_lr/infer", body.into_bytes())
        .await;
    assert_eq!(status, 400, "duplicate outputs: {answer}");
    server.assert_alive("duplicate V2 outputs").await;

    // TF Serving REST: 1.9 million rows (42 MB, under the body limit).
    let body = format!(r#"{{"instances":[{}]}}"#, rows_json(1_900_000));
    let started = Instant::now();
    let (status, answer) = server
        .post("/v1/models/iris_lr:predict", body.into_bytes())
        .await;
    assert!(
        status == 413 || status == 400,
        "1.9 M rows: {status} {answer}"
    );
    eprintln!("1.9 M rows refused in {:?}: {answer}", started.elapsed());
    server.assert_alive("1.9 M rows").await;

    // gRPC TF Predict: one float_val broadcast to [100_000_000, 4] (1.6 GB of f32
    // from a 50-byte message).
    let mut client = PredictionServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let broadcast = TensorProto {
        dtype: Dt::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: [100_000_000i64, 4]
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        float_val: vec![1.0],
        ..Default::default()
    };
    let status = client
        .predict(tfs::PredictRequest {
            model_spec: Some(ModelSpec {
                name: "iris_lr".into(),
                ..Default::default()
            }),
            inputs: HashMap::from([("input".to_string(), broadcast)]),
            output_filter: vec![],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
        ),
        "broadcast: {status:?}"
    );
    server.assert_alive("a broadcast float_val").await;

    // TF output_filter naming one output many times.
    let status = client
        .predict(tfs::PredictRequest {
            model_spec: Some(ModelSpec {
                name: "iris_lr".into(),
                ..Default::default()
            }),
            inputs: HashMap::from([(
                "input".to_string(),
                TensorProto {
                    dtype: Dt::DtFloat as i32,
                    tensor_shape: Some(TensorShapeProto {
                        dim: [2000i64, 4]
                            .iter()
                            .map(|&size| tensor_shape_proto::Dim {
                                size,
                                name: String::new(),
                            })
                            .collect(),
                        unknown_rank: false,
                    }),
                    float_val: [5.1f32, 3.5, 1.4, 0.2].repeat(2000),
                    ..Default::default()
                },
            )]),
            output_filter: vec!["probabilities".to_string(); 20_000],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    server.assert_alive("a repeated output_filter").await;
}
