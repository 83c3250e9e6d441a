//! Triton's model configuration and statistics extensions over V2 REST
//! (`/v2/models/{m}/config`, `/v2/models/{m}/stats`, `/v2/models/stats`), and bare
//! NaN / ±Infinity in a V2 REST infer body (what Python's `json.dumps`, and so
//! tritonclient.http with `binary_data=False`, writes), over a real socket.

mod common;

use common::{install_model, root_path, TestServer};
use serde_json::{json, Value};

/// iris_lr (ONNX) batching up to 8 rows, version 1 and 2 (policy `all`); iris_dt
/// (ONNX) not batching; iris_sklearn (scikit-learn).
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (m, v, from) in [
        ("iris_lr", 1, "examples/models/iris_lr/1/model.onnx"),
        ("iris_lr", 2, "examples/models/iris_lr/1/model.onnx"),
        ("iris_dt", 1, "examples/models/iris_dt/1/model.onnx"),
        (
            "iris_sklearn",
            1,
            "examples/models/iris_sklearn/1/model.joblib",
        ),
    ] {
        install_model(dir.path(), m, v, &root_path(from));
    }
    std::fs::write(
        dir.path().join("iris_lr/config.toml"),
        "version_policy = \"all\"\n[batching]\nenabled = true\nmax_batch_size = 8\n",
    )
    .unwrap();
    dir
}

fn iris_body(data: &str) -> Vec<u8> {
    format!(r#"{{"inputs":[{{"name":"input","shape":[1,4],"datatype":"FP32","data":{data}}}]}}"#)
        .into_bytes()
}

/// `/config` answered 404 "no such endpoint": tritonclient's `get_model_config`
/// (max_batch_size, inputs and outputs) failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_config_is_answered_as_triton_answers_it() {
    let dir = repo();
    let server = TestServer::start(dir.path()).await;

    // Batching: max_batch_size is the [batching] maximum, and the batch dimension
    // is left out of dims.
    let (status, config) = server.get("/v2/models/iris_lr/config").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["name"], "iris_lr");
    assert_eq!(config["platform"], "onnxruntime_onnx");
    assert_eq!(config["backend"], "onnxruntime");
    assert_eq!(config["max_batch_size"], 8);
    assert_eq!(config["version_policy"], json!({"all": {}}));
    assert_eq!(
        config["input"],
        json!([{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}])
    );
    let outputs = config["output"].as_array().unwrap();
    assert!(!outputs.is_empty(), "{config}");
    for o in outputs {
        assert!(o["data_type"].as_str().unwrap().starts_with("TYPE_"), "{o}");
    }

    // Not batching: max_batch_size 0, every dimension listed (-1 for any size).
    let (status, config) = server.get("/v2/models/iris_dt/versions/1/config").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["max_batch_size"], 0);
    assert_eq!(
        config["version_policy"],
        json!({"latest": {"num_versions": 1}})
    );
    assert_eq!(
        config["input"],
        json!([{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}])
    );

    let (status, config) = server.get("/v2/models/iris_sklearn/config").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["platform"], "sklearn");
    assert_eq!(config["backend"], "sklearn");

    let (status, body) = server.get("/v2/models/nope/config").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.get("/v2/models/iris_lr/versions/9/config").await;
    assert_eq!(status, 404, "{body}");
}

fn version_stats<'a>(stats: &'a Value, model: &str, version: &str) -> &'a Value {
    stats["model_stats"]
        .as_array()
        .unwrap_or_else(|| panic!("no model_stats in {stats}"))
        .iter()
        .find(|s| s["name"] == model && s["version"] == version)
        .unwrap_or_else(|| panic!("no {model} {version} in {stats}"))
}

/// `/stats` answered 404 "no such endpoint": tritonclient's
/// `get_inference_statistics` failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_what_the_metrics_count() {
    let dir = repo();
    let server = TestServer::start(dir.path()).await;

    for _ in 0..3 {
        let (status, body) = server
            .post_raw(
                "/v2/models/iris_lr/versions/1/infer",
                iris_body("[5.1,3.5,1.4,0.2]"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // One refused by the model (a width it does not take), counted as a failure.
    let (status, _) = server
        .post_raw(
            "/v2/models/iris_lr/versions/1/infer",
            br#"{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#
                .to_vec(),
        )
        .await;
    assert_eq!(status, 400);

    let (status, stats) = server.get("/v2/models/iris_lr/versions/1/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["model_stats"].as_array().unwrap().len(), 1, "{stats}");
    let v1 = version_stats(&stats, "iris_lr", "1");
    let inference = &v1["inference_stats"];
    assert_eq!(inference["success"]["count"], 3, "{stats}");
    assert!(inference["success"]["ns"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(inference["fail"]["count"], 1, "{stats}");
    assert_eq!(inference["queue"]["count"], 3, "{stats}");
    let compute = &inference["compute_infer"];
    assert!(compute["count"].as_u64().unwrap() >= 1, "{stats}");
    assert!(compute["ns"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(v1["inference_count"], 3, "{stats}");
    // What ferroserve does not measure is 0.
    assert_eq!(inference["compute_input"], json!({"count": 0, "ns": 0}));
    assert_eq!(inference["compute_output"], json!({"count": 0, "ns": 0}));

    // Every serving version of the model, and every model.
    let (status, stats) = server.get("/v2/models/iris_lr/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["model_stats"].as_array().unwrap().len(), 2, "{stats}");
    let v2 = version_stats(&stats, "iris_lr", "2");
    assert_eq!(v2["inference_stats"]["success"]["count"], 0, "{stats}");
    // Times are the version's own: version 2 answered nothing, so none is its
    // (it showed the model's time over every version); version 1's failure took some.
    assert_eq!(v2["inference_stats"]["success"]["ns"], 0, "{stats}");
    assert_eq!(v2["inference_stats"]["fail"]["ns"], 0, "{stats}");
    assert!(inference["fail"]["ns"].as_u64().unwrap() > 0, "{stats}");
    let (status, stats) = server.get("/v2/models/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        version_stats(&stats, "iris_lr", "1")["inference_stats"]["success"]["count"],
        3
    );
    version_stats(&stats, "iris_dt", "1");
    version_stats(&stats, "iris_sklearn", "1");

    let (status, body) = server.get("/v2/models/nope/stats").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.get("/v2/models/iris_lr/versions/7/stats").await;
    assert_eq!(status, 404, "{body}");
}

/// Bare NaN and Infinity (Python's `json.dumps`) answered "400 malformed JSON body:
/// expected value at line 1 column 68"; the TF Serving routes took them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_nonfinite_literals_are_numbers_in_v2_data() {
    let dir = repo();
    let server = TestServer::start(dir.path()).await;

    let bare = server
        .post_raw(
            "/v2/models/iris_dt/infer",
            iris_body("[NaN,Infinity,1,-Infinity]"),
        )
        .await;
    assert_eq!(bare.0, 200, "{}", bare.1);
    // The same answer as the names in quotes, which were already taken.
    let quoted = server
        .post_raw(
            "/v2/models/iris_dt/infer",
            iris_body(r#"["NaN","Infinity",1,"-Infinity"]"#),
        )
        .await;
    assert_eq!(quoted.0, 200, "{}", quoted.1);
    assert_eq!(bare.1["outputs"], quoted.1["outputs"]);

    // Not where an integer or text is declared.
    let (status, body) = server
        .post_raw(
            "/v2/models/iris_dt/infer",
            br#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"INT64","data":[NaN,1,2,3]}]}"#
                .to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("NaN, unquoted"),
        "{body}"
    );
    // Not outside the data: the body's own parse error stands.
    let (status, body) = server
        .post_raw(
            "/v2/models/iris_dt/infer",
            br#"{"id":NaN,"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#
                .to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON body"),
        "{body}"
    );
    // A malformed body that is not about these literals keeps its message.
    let (status, body) = server
        .post_raw("/v2/models/iris_dt/infer", iris_body("[1,2,3,4"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON body"),
        "{body}"
    );
}

// --- The gRPC half: `ModelConfig`, `ModelStatistics`, `ModelStreamInfer` ---

use ferroserve_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::InferInputTensor, model_version_policy::PolicyChoice,
};

async fn grpc_client(server: &TestServer) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    let channel = server.grpc_channel().await;
    GrpcInferenceServiceClient::new(channel)
}

/// [`repo`] with iris_dt also as `model`: the version series are the process's,
/// so each test that counts requests counts them on a model of its own.
fn repo_with(model: &str) -> tempfile::TempDir {
    let dir = repo();
    install_model(
        dir.path(),
        model,
        1,
        &root_path("examples/models/iris_dt/1/model.onnx"),
    );
    dir
}

/// An iris request of one row, in typed contents.
fn iris_request(model: &str, id: &str, row: Vec<f32>) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.to_string(),
        id: id.to_string(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, row.len() as i64],
            contents: Some(pb::InferTensorContents {
                fp32_contents: row,
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The REST config answer's content, read from the gRPC message as tritonclient
/// writes it in JSON (`data_type` by name).
fn config_as_json(c: &pb::ModelConfig) -> Value {
    let policy = match c
        .version_policy
        .as_ref()
        .and_then(|p| p.policy_choice.as_ref())
    {
        Some(PolicyChoice::Latest(l)) => json!({"latest": {"num_versions": l.num_versions}}),
        Some(PolicyChoice::All(_)) => json!({"all": {}}),
        Some(PolicyChoice::Specific(s)) => json!({"specific": {"versions": s.versions}}),
        None => Value::Null,
    };
    let tensor = |name: &str, dtype: i32, dims: &[i64]| {
        let dtype = pb::DataType::try_from(dtype).unwrap().as_str_name();
        json!({"name": name, "data_type": dtype, "dims": dims})
    };
    json!({
        "name": c.name,
        "platform": c.platform,
        "backend": c.backend,
        "version_policy": policy,
        "max_batch_size": c.max_batch_size,
        "input": c.input.iter().map(|t| tensor(&t.name, t.data_type, &t.dims)).collect::<Vec<_>>(),
        "output": c.output.iter().map(|t| tensor(&t.name, t.data_type, &t.dims)).collect::<Vec<_>>(),
    })
}

/// `ModelConfig` answered UNIMPLEMENTED (tritonclient.grpc's `get_model_config`
/// failed): now the REST answer's content, as Triton's protobuf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_model_config_is_the_rest_answer() {
    let dir = repo();
    let server = TestServer::start(dir.path()).await;
    let mut client = grpc_client(&server).await;

    for (model, version, rest) in [
        ("iris_lr", "", "/v2/models/iris_lr/config"),
        ("iris_lr", "2", "/v2/models/iris_lr/versions/2/config"),
        ("iris_dt", "1", "/v2/models/iris_dt/versions/1/config"),
        ("iris_sklearn", "", "/v2/models/iris_sklearn/config"),
    ] {
        let (status, expected) = server.get(rest).await;
        assert_eq!(status, 200, "{expected}");
        let config = client
            .model_config(pb::ModelConfigRequest {
                name: model.into(),
                version: version.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("{model} {version}: {s:?}"))
            .into_inner()
            .config
            .unwrap();
        assert_eq!(config_as_json(&config), expected, "{model} {version}");
    }

    for (model, version) in [("nope", ""), ("iris_lr", "9")] {
        let status = client
            .model_config(pb::ModelConfigRequest {
                name: model.into(),
                version: version.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    }
}

/// `ModelStatistics` answered UNIMPLEMENTED (tritonclient.grpc's
/// `get_inference_statistics` failed): now the REST answer's counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_model_statistics_count_requests() {
    let dir = repo_with("grpc_stats_dt");
    let server = TestServer::start(dir.path()).await;
    let mut client = grpc_client(&server).await;

    for i in 0..2 {
        client
            .model_infer(iris_request(
                "grpc_stats_dt",
                &i.to_string(),
                vec![5.1, 3.5, 1.4, 0.2],
            ))
            .await
            .unwrap();
    }
    client
        .model_infer(iris_request("grpc_stats_dt", "bad", vec![1.0, 2.0, 3.0]))
        .await
        .unwrap_err();

    let stats = |name: &str, version: &str| pb::ModelStatisticsRequest {
        name: name.into(),
        version: version.into(),
    };
    let answer = client
        .model_statistics(stats("grpc_stats_dt", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.model_stats.len(), 1, "{answer:?}");
    let v1 = &answer.model_stats[0];
    assert_eq!(
        (v1.name.as_str(), v1.version.as_str()),
        ("grpc_stats_dt", "1")
    );
    let inference = v1.inference_stats.as_ref().unwrap();
    assert_eq!(inference.success.as_ref().unwrap().count, 2, "{answer:?}");
    assert!(inference.success.as_ref().unwrap().ns > 0, "{answer:?}");
    assert_eq!(inference.fail.as_ref().unwrap().count, 1, "{answer:?}");
    assert_eq!(v1.inference_count, 2, "{answer:?}");
    assert_eq!(
        inference.compute_input,
        Some(pb::StatisticDuration::default())
    );

    // The same counts as the REST answer.
    let (_, rest) = server
        .get("/v2/models/grpc_stats_dt/versions/1/stats")
        .await;
    let rest = version_stats(&rest, "grpc_stats_dt", "1");
    assert_eq!(rest["inference_stats"]["success"]["count"], 2);
    assert_eq!(rest["inference_count"], v1.inference_count);
    assert_eq!(rest["execution_count"], v1.execution_count);

    // Every model with no name; one version; an unknown model or version.
    let all = client
        .model_statistics(stats("", ""))
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<_> = all
        .model_stats
        .iter()
        .map(|s| format!("{}/{}", s.name, s.version))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc_stats_dt/1",
            "iris_dt/1",
            "iris_lr/1",
            "iris_lr/2",
            "iris_sklearn/1"
        ]
    );
    let one = client
        .model_statistics(stats("iris_lr", "2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.model_stats.len(), 1);
    assert_eq!(one.model_stats[0].version, "2");
    for (name, version) in [("nope", ""), ("iris_lr", "7")] {
        let status = client
            .model_statistics(stats(name, version))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    }
}

/// `ModelStreamInfer` answered UNIMPLEMENTED (tritonclient.grpc's
/// `start_stream` / `async_stream_infer` got nothing): now each request is answered
/// in order, a bad one with its `error_message`, and the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_stream_answers_each_request_in_order() {
    let dir = repo_with("grpc_stream_dt");
    let server = TestServer::start(dir.path()).await;
    let mut client = grpc_client(&server).await;

    let requests = vec![
        iris_request("grpc_stream_dt", "first", vec![5.1, 3.5, 1.4, 0.2]),
        iris_request("grpc_stream_dt", "bad", vec![1.0, 2.0, 3.0]),
        iris_request("grpc_stream_dt", "third", vec![6.7, 3.0, 5.2, 2.3]),
    ];
    let mut answers = client
        .model_stream_infer(futures::stream::iter(requests.clone()))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        got.push(answer);
    }
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(!got[1].error_message.is_empty(), "{got:?}");
    assert!(got[1].infer_response.is_none(), "{got:?}");
    // The same answers as ModelInfer gives.
    for i in [0, 2] {
        assert_eq!(got[i].error_message, "", "{got:?}");
        let streamed = got[i].infer_response.as_ref().unwrap();
        assert_eq!(streamed.id, requests[i].id);
        let unary = client
            .model_infer(requests[i].clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(streamed.outputs, unary.outputs, "{i}");
        assert!(!streamed.outputs.is_empty());
    }
    let unary_error = client.model_infer(requests[1].clone()).await.unwrap_err();
    assert_eq!(got[1].error_message, unary_error.message());

    // Counted as ModelInfer calls are: 2 answered, 1 failed, on the stream.
    let (_, stats) = server
        .get("/v2/models/grpc_stream_dt/versions/1/stats")
        .await;
    let v1 = version_stats(&stats, "grpc_stream_dt", "1");
    assert_eq!(v1["inference_stats"]["success"]["count"], 4, "{stats}");
    assert_eq!(v1["inference_stats"]["fail"]["count"], 2, "{stats}");

    // An unknown model fails its request, not the stream.
    let mut answers = client
        .model_stream_infer(futures::stream::iter(vec![
            iris_request("nope", "x", vec![1.0, 2.0, 3.0, 4.0]),
            iris_request("grpc_stream_dt", "y", vec![5.1, 3.5, 1.4, 0.2]),
        ]))
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().unwrap();
    assert!(first.error_message.contains("nope"), "{first:?}");
    let second = answers.message().await.unwrap().unwrap();
    assert_eq!(second.error_message, "", "{second:?}");
    assert!(answers.message().await.unwrap().is_none());
}
